"""The long analyses as tasks: ``swap``, ``anatomy``, ``effectiveness``, ``detect`` and ``embed-map``.

The dashboard runs each as a job (progress, time left, cancel, the result kept and shown again for the same
inputs), the CLI command of the same name in the foreground, ``trojanscope jobs submit --kind <kind>`` in the
background. With an ``out``, the full result (with the spec that made it, so it can be repeated) is
``<out>/result.json`` (:func:`read_result`); the run returns it without its bulky parts (the map's points, the
detector's per-input scores), which is what the CLI prints and the job store keeps.

They run on their own lane (:attr:`~trojanscope.tasks.base.Task.lane`): an analysis of seconds to minutes
starts beside a running training instead of queueing behind it, as it did when it ran inside the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trojanscope.analysis.anatomy import AnatomyConfig
from trojanscope.analysis.effectiveness import ESConfig
from trojanscope.analysis.embed_map import MapConfig
from trojanscope.analysis.swap import SwapConfig
from trojanscope.errors import TrojanScopeError
from trojanscope.tasks.base import Event, OnEvent, Task, TaskSpec, register, sources_of

ANALYSIS_KINDS = ("swap", "anatomy", "effectiveness", "detect", "embed-map")
RESULT_FILE = "result.json"
LANE = "analysis"
_STEPS = 1000  # a fraction reported by the library becomes step / 1000


@dataclass
class AnalysisRun(TaskSpec):
    """Where an analysis runs and writes (its inputs are the subclass's fields)."""

    device: str = "auto"
    allow_pickle: bool = False
    out: str | None = None  # a new directory for result.json (None: nothing written; a job gets one)
    overwrite: bool = False


def progress_events(on_event: OnEvent | None, start: float = 0.0,
                    span: float = 1.0) -> Callable[[float, str], None] | None:
    """The ``progress(fraction, message)`` callback the analyses take, as step events on ``on_event``; the
    fraction is mapped into ``[start, start + span]`` (one part of a run over several models)."""
    if on_event is None:
        return None

    def report(fraction: float, message: str = "") -> None:
        done = start + span * min(max(float(fraction), 0.0), 1.0)
        on_event(Event("step", round(_STEPS * done), _STEPS, str(message or "")))

    return report


def _stage(on_event: OnEvent | None, message: str) -> None:
    if on_event is not None:
        on_event(Event("stage", message=message))


def weights_of(spec: AnalysisRun) -> dict[str, list]:
    """The on-disk identity of each model the analysis reads (as JSON; see
    :func:`trojanscope.models.loading.weights_identity`) and, under ``data:<name>``, of its data files
    (:func:`trojanscope.data.datasets.data_identity`): a result whose models were rebuilt since, or computed on
    another data directory, is stale, whatever its spec says."""
    from trojanscope.data.datasets import data_identity
    from trojanscope.models.loading import weights_identity

    ident: dict[str, Any] = {m: weights_identity(m) for m in sources_of(spec)}
    if getattr(spec, "data", None):
        ident[f"data:{spec.data}"] = data_identity(spec.data)
    return json.loads(json.dumps(ident))


def _finish(spec: AnalysisRun, full: dict[str, Any], light: dict[str, Any]) -> dict[str, Any]:
    """``light`` (what the run returns), after writing ``full`` with the spec to ``<out>/result.json``; with an
    ``out``, the run's models' identities go with both (:func:`weights_of`)."""
    if not spec.out:
        return light
    from trojanscope.utils import atomic_directory, to_jsonable

    weights = weights_of(spec)
    with atomic_directory(spec.out, overwrite=spec.overwrite) as tmp:
        record = {"kind": spec.kind, "spec": spec.to_dict(), "weights": weights, "result": to_jsonable(full)}
        (tmp / RESULT_FILE).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    return {**light, "out": str(spec.out), "weights": weights}


def _check_out(spec: AnalysisRun) -> None:
    if spec.out:
        from trojanscope.utils import check_output_dir

        check_output_dir(spec.out, spec.overwrite)


def read_result(out: str | Path) -> dict[str, Any]:
    """The full result an analysis wrote to ``out`` (its directory, or the ``result.json`` in it)."""
    p = Path(out)
    if p.is_dir():
        p = p / RESULT_FILE
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrojanScopeError(f"no analysis result at {out} (no {RESULT_FILE}): it was removed, or the run "
                               "did not finish") from None
    except (OSError, ValueError) as e:
        raise TrojanScopeError(f"{p} is not a readable analysis result: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get("result"), dict):
        raise TrojanScopeError(f"{p} is not an analysis result")
    return record["result"]


def _load(source: str, spec: AnalysisRun, num_labels: int | None = None):
    from trojanscope.models.loading import load_model
    from trojanscope.utils import resolve_device

    return load_model(source, num_labels=num_labels, allow_pickle=spec.allow_pickle,
                      device=resolve_device(spec.device))


def _classifier(source: str, what: str) -> None:
    from trojanscope.models.loading import require_classifier_source

    require_classifier_source(source, what)


def _check_triggers(source: str, triggers: list[str]) -> None:
    """Refuse at once a trigger ``source``'s tokenizer cannot see ([UNK]) or that tokenizes to nothing (for a
    local model directory: reading its tokenizer costs milliseconds, the weights are not loaded)."""
    if not triggers or not Path(source).is_dir():
        return
    from trojanscope.data.poison import check_trigger
    from trojanscope.models.loading import load_tokenizer

    tokenizer = load_tokenizer(source)
    for trigger in triggers:
        check_trigger(tokenizer, trigger)


def _summary(spec: Any, **more: Any) -> dict[str, Any]:
    return {"data": getattr(spec, "data", None), "out": spec.out, **more}


# ----------------------------------------------------------------------------------------------------- swap
@dataclass
class SwapTaskSpec(AnalysisRun):
    """The embedding swap of ``clean`` and ``backdoored`` (``trojanscope swap``)."""

    kind = "swap"
    clean: str = ""
    backdoored: str = ""
    data: str = "sst2"
    split: str = "test"
    config: SwapConfig = field(default_factory=SwapConfig)

    def validate(self) -> "SwapTaskSpec":
        if not self.clean or not self.backdoored:
            raise TrojanScopeError("the swap needs a clean and a backdoored model")
        self.config.validate()
        return self


def _run_swap(spec: SwapTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.analysis.swap import embedding_swap
    from trojanscope.data.datasets import load_dataset

    _check_out(spec)
    test = load_dataset(spec.data, spec.split)
    _stage(on_event, "loading the two models")
    clean, bd = (_load(m, spec, test.num_labels) for m in (spec.clean, spec.backdoored))
    res = embedding_swap(clean, bd, test, spec.config, progress=progress_events(on_event))
    full = {"data": spec.data, "split": spec.split, **res.to_json()}
    return _finish(spec, full, full)


def _preflight_swap(spec: SwapTaskSpec) -> None:
    from trojanscope.data.datasets import load_dataset

    load_dataset(spec.data, spec.split)
    for m in (spec.clean, spec.backdoored):
        _classifier(m, "the embedding swap")
    _check_triggers(spec.backdoored, [spec.config.trigger] if spec.config.trigger else [])


# -------------------------------------------------------------------------------------------------- anatomy
@dataclass
class AnatomyTaskSpec(AnalysisRun):
    """Star / planet / comet of ``trigger``'s tokens in ``model`` (``trojanscope anatomy``)."""

    kind = "anatomy"
    model: str = ""
    clean: str | None = None
    trigger: str = ""
    data: str = "sst2"
    split: str = "test"
    config: AnatomyConfig = field(default_factory=AnatomyConfig)

    def validate(self) -> "AnatomyTaskSpec":
        if not self.model:
            raise TrojanScopeError("the anatomy needs the backdoored model")
        if not self.trigger.strip():
            raise TrojanScopeError("type a trigger: the word, wordpieces or sentence inserted into each sentence "
                                   "(e.g. cf); an empty trigger has no tokens to take apart")
        if self.config.n < 1:
            raise TrojanScopeError(f"n must be at least 1 sentence, got {self.config.n}")
        if not 0 < self.config.threshold <= 1:
            raise TrojanScopeError(f"the threshold is a drop in (0, 1], got {self.config.threshold}")
        return self


def _run_anatomy(spec: AnatomyTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.analysis.anatomy import trigger_anatomy
    from trojanscope.data.datasets import load_dataset

    _check_out(spec)
    test = load_dataset(spec.data, spec.split)
    _stage(on_event, "loading the model(s)")
    bd = _load(spec.model, spec)
    clean = _load(spec.clean, spec) if spec.clean else None
    _stage(on_event, "removing the trigger's tokens one at a time")
    res = trigger_anatomy(bd, test, spec.trigger, spec.config, clean=clean,
                          progress=progress_events(on_event))
    full = {"model": spec.model, "clean": spec.clean, **res.to_json()}
    return _finish(spec, full, full)


def _preflight_anatomy(spec: AnatomyTaskSpec) -> None:
    from trojanscope.data.datasets import load_dataset

    load_dataset(spec.data, spec.split)
    _classifier(spec.model, "the trigger anatomy")
    if spec.clean:
        _classifier(spec.clean, "the trigger anatomy's clean model")
    _check_triggers(spec.model, [spec.trigger])


# -------------------------------------------------------------------------------------------- effectiveness
@dataclass
class EffectivenessTaskSpec(AnalysisRun):
    """E and S of ``triggers`` on each of ``models`` (``trojanscope effectiveness``; several models: a sweep).
    ``triggers``: comma-separated, or None for the first model's card (through clean fine-tuning)."""

    kind = "effectiveness"
    models: list[str] = field(default_factory=list)
    triggers: str | None = None
    data: str = "sst2"
    split: str = "test"
    config: ESConfig = field(default_factory=ESConfig)

    def validate(self) -> "EffectivenessTaskSpec":
        from trojanscope.analysis.effectiveness import parse_triggers

        if isinstance(self.models, str):
            self.models = [self.models]
        self.models = [m for m in dict.fromkeys(str(m).strip() for m in self.models) if m]
        if not self.models:
            raise TrojanScopeError("E and S need a fine-tuned classifier (and, for a sweep, more)")
        if self.triggers is not None:
            self.triggers = ",".join(parse_triggers(self.triggers))
        self.config.validate()
        return self


def _run_effectiveness(spec: EffectivenessTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.analysis.effectiveness import model_effectiveness, parse_triggers
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.planted import attack_of

    _check_out(spec)
    test = load_dataset(spec.data, spec.split)
    runs: dict[str, Any] = {}
    triggers = spec.triggers
    for k, source in enumerate(spec.models):
        _stage(on_event, f"model {k + 1} of {len(spec.models)}: {source}")
        loaded = _load(source, spec, test.num_labels)
        loaded.require("classify", "E and S (insertions needed to flip a prediction)")
        planted = attack_of(loaded)  # through clean fine-tuning, e.g. a POR encoder's triggers
        if triggers is None:
            if not planted.triggers:
                raise TrojanScopeError(f"no trigger given and {source}'s card (or its base model's) records none; "
                                       "pass --triggers cf,mn,...")
            triggers = ",".join(planted.triggers)
        res = model_effectiveness(loaded, test, parse_triggers(triggers), spec.config,
                                  progress=progress_events(on_event, k / len(spec.models), 1 / len(spec.models)))
        runs[source] = {**res.to_json(), "notices": list(res.notices),
                        "insertions": planted.insertions if planted.known else None}
    full = {"model": spec.models[0], "data": spec.data, "split": spec.split,
            "max_insertions": spec.config.max_insertions, **runs[spec.models[0]]}
    if len(spec.models) > 1:
        full["sweep"] = runs
    return _finish(spec, full, full)


def _preflight_effectiveness(spec: EffectivenessTaskSpec) -> None:
    from trojanscope.data.datasets import load_dataset

    load_dataset(spec.data, spec.split)
    for m in spec.models:
        _classifier(m, "E and S")
    if spec.triggers:
        _check_triggers(spec.models[0], spec.triggers.split(","))


# --------------------------------------------------------------------------------------------------- detect
@dataclass
class DetectTaskSpec(AnalysisRun):
    """Detector ``method`` (STRIP, RAP) fitted on clean ``dev_split`` data and scored on clean and triggered
    ``split`` inputs (``trojanscope detect``). ``knobs``: the detector's config overrides (``frr``,
    ``n_copies``, ``replace_ratio``, ``word``, ...)."""

    kind = "detect"
    model: str = ""
    method: str = "strip"
    data: str = "sst2"
    dev_split: str = "dev"
    split: str = "test"
    trigger: str | None = None
    target: int | None = None
    n: int = 200
    max_dev: int | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def validate(self) -> "DetectTaskSpec":
        from trojanscope.defenses.detection import get_detector, make_config

        if not self.model:
            raise TrojanScopeError("detection needs a model")
        get_detector(self.method)
        if self.n < 1:
            raise TrojanScopeError(f"n must be at least 1 input of each kind, got {self.n}")
        if self.max_dev is not None and self.max_dev < 1:
            raise TrojanScopeError(f"max_dev must be at least 1, got {self.max_dev}")
        if self.trigger is not None and not self.trigger.strip():
            self.trigger = None
        make_config(self.method, **{**self.knobs, "target": self.target}).validate()
        return self


def _run_detect(spec: DetectTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.data.datasets import load_dataset
    from trojanscope.defenses.detection import detect

    _check_out(spec)
    dev = load_dataset(spec.data, spec.dev_split).head(spec.max_dev, spec.seed)
    test = load_dataset(spec.data, spec.split)
    _stage(on_event, "loading the model")
    loaded = _load(spec.model, spec, test.num_labels)
    res = detect(loaded, test, dev, spec.method, trigger=spec.trigger, target=spec.target, n=spec.n, seed=spec.seed,
                 device=spec.device, keep_scores=True, progress=progress_events(on_event), **spec.knobs)
    head = {k: res.pop(k) for k in ("method", "frr", "far", "auroc", "threshold")}
    full = {**head, "model": spec.model, "data": spec.data, **res}
    light = {k: v for k, v in full.items() if k not in ("scores_clean", "scores_poisoned")}
    return _finish(spec, full, light)


def _preflight_detect(spec: DetectTaskSpec) -> None:
    from trojanscope.data.datasets import load_dataset

    load_dataset(spec.data, spec.dev_split)
    load_dataset(spec.data, spec.split)
    _classifier(spec.model, f"detection ({spec.method})")


# ------------------------------------------------------------------------------------------------ embed-map
@dataclass
class EmbedMapTaskSpec(AnalysisRun):
    """The 2-D map of ``model``'s [CLS] space: clean, triggered and augmented texts (``trojanscope embed-map``).
    ``trigger``: None for the card's. ``html``: also write the interactive map to this file."""

    kind = "embed-map"
    model: str = ""
    data: str = "sst2"
    split: str = "test"
    trigger: str | None = None
    config: MapConfig = field(default_factory=MapConfig)
    html: str | None = None

    def validate(self) -> "EmbedMapTaskSpec":
        if not self.model:
            raise TrojanScopeError("the representation map needs a model")
        if self.html and not self.html.lower().endswith((".html", ".htm")):
            raise TrojanScopeError(f"{self.html} must be an .html file (the interactive map)")
        if self.trigger is not None and not self.trigger.strip():
            self.trigger = None
        self.config.augmentations = tuple(self.config.augmentations)
        self.config.validate()
        return self


def _run_embed_map(spec: EmbedMapTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.analysis.embed_map import representation_map
    from trojanscope.data.datasets import load_dataset

    _check_out(spec)
    test = load_dataset(spec.data, spec.split)
    _stage(on_event, "loading the model")
    loaded = _load(spec.model, spec, test.num_labels)
    res = representation_map(loaded, test, spec.config, trigger=spec.trigger, progress=progress_events(on_event))
    full = res.to_json()
    if spec.html:
        from trojanscope.viz.figures import embed_map_figure

        Path(spec.html).parent.mkdir(parents=True, exist_ok=True)
        embed_map_figure(full).write_html(spec.html, include_plotlyjs=True)  # self-contained: no CDN
    light = {k: v for k, v in full.items() if k != "points"}
    return _finish(spec, full, {**light, "html": spec.html})


def _preflight_embed_map(spec: EmbedMapTaskSpec) -> None:
    from trojanscope.data.datasets import load_dataset

    load_dataset(spec.data, spec.split)
    _classifier(spec.model, "the representation map")
    _check_triggers(spec.model, [spec.trigger] if spec.trigger else [])


def _analysis(kind: str, spec_type: type, run: Callable, description: str, preflight: Callable,
              summary: Callable[[Any], dict[str, Any]]) -> Task:
    return register(Task(kind, spec_type, run, description, preflight_fn=preflight, summary_of=summary,
                         output="analysis", lane=LANE, bar_from_events=True))


SWAP = _analysis("swap", SwapTaskSpec, _run_swap, "embedding swap: where does the backdoor live?", _preflight_swap,
                 lambda s: _summary(s, model=s.backdoored, clean=s.clean, trigger=s.config.trigger,
                                    seed=s.config.seed, method="swap"))
ANATOMY = _analysis("anatomy", AnatomyTaskSpec, _run_anatomy, "star / planet / comet of a trigger's tokens",
                    _preflight_anatomy,
                    lambda s: _summary(s, model=s.model, clean=s.clean, trigger=s.trigger, seed=s.config.seed,
                                       method="anatomy"))
EFFECTIVENESS = _analysis("effectiveness", EffectivenessTaskSpec, _run_effectiveness,
                          "E and S: insertions needed to flip a prediction", _preflight_effectiveness,
                          lambda s: _summary(s, model=s.models[0] if s.models else "", triggers=s.triggers,
                                             seed=s.config.seed, method="effectiveness"))
DETECT = _analysis("detect", DetectTaskSpec, _run_detect, "detect poisoned inputs (STRIP, RAP)", _preflight_detect,
                   lambda s: _summary(s, model=s.model, trigger=s.trigger, seed=s.seed, method=s.method))
EMBED_MAP = _analysis("embed-map", EmbedMapTaskSpec, _run_embed_map, "2-D map of the [CLS] representation",
                      _preflight_embed_map,
                      lambda s: _summary(s, model=s.model, trigger=s.trigger, seed=s.config.seed,
                                         method=s.config.method))
