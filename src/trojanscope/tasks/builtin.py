"""The built-in tasks: ``train``, ``por``, ``purify``, ``scan`` and ``demo``.

Each spec holds the library's own recipe (``TrainSpec``, ``PORSpec``, ``PurifySpec``, ``ScanConfig``) nested,
not copied, plus where the result goes (``out``, ``overwrite``) and how the run is kept (checkpoints, resume).
``from_card`` records that a spec was read from a model card (the CLI's ``--from-card``); the spec itself is
the card's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trojanscope.analysis.scan import ScanConfig
from trojanscope.defenses.pipeline import PurifySpec
from trojanscope.errors import TrojanScopeError
from trojanscope.tasks.base import OnEvent, Task, TaskSpec, library_callback, register
from trojanscope.training.pipeline import PORSpec, TrainSpec


def _require_out(spec: Any, what: str) -> str:
    if not spec.out:
        raise TrojanScopeError(f"no output directory: the {spec.kind} task needs an out (the directory to write "
                               f"{what} to)")
    return str(spec.out)


def _checkpoints(spec: Any) -> dict[str, Any]:
    return {"checkpoint_every": spec.checkpoint_every, "checkpoint_minutes": spec.checkpoint_minutes,
            "resume": spec.resume}


@dataclass
class TrainingRun(TaskSpec):
    """Where a training task (train, por) writes and how its run is kept; its recipe is the subclass's ``spec``."""

    out: str | None = None
    overwrite: bool = False
    checkpoint_every: int = 0  # save the training state every N steps (0: off), beside out, for resume
    checkpoint_minutes: float = 10.0  # and every M minutes (0: off)
    resume: bool = False  # continue from the checkpoint a killed or paused run of the same recipe left
    from_card: str | None = None  # the model card the recipe was read from (--from-card), for the record

    def validate(self):
        if self.checkpoint_every < 0:
            raise TrojanScopeError(f"checkpoint_every counts steps and must be 0 (off) or more, got "
                                   f"{self.checkpoint_every}")
        if self.checkpoint_minutes < 0:
            raise TrojanScopeError(f"checkpoint_minutes must be 0 (off) or more, got {self.checkpoint_minutes}")
        return self


def _from_card(spec: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"from_card": spec.from_card, **result} if spec.from_card else result


# ---------------------------------------------------------------------------------------------------- train
@dataclass
class TrainTaskSpec(TrainingRun):
    """Fine-tune a classifier, optionally poisoned (``trojanscope train``)."""

    kind = "train"
    spec: TrainSpec = field(default_factory=TrainSpec)

    def validate(self) -> "TrainTaskSpec":
        self.spec.validate()
        return super().validate()


def _run_train(spec: TrainTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.training.pipeline import run_training

    out = _require_out(spec, "the model")
    return _from_card(spec, run_training(spec.spec, out, overwrite=spec.overwrite,
                                         on_event=library_callback(on_event), progress=progress,
                                         **_checkpoints(spec)))


def _preflight_train(spec: TrainTaskSpec) -> None:
    from trojanscope.training.pipeline import preflight_training

    preflight_training(spec.spec)


def _summary_train(spec: TrainTaskSpec) -> dict[str, Any]:
    s = spec.spec
    return {"model": s.model, "data": s.data, "attack": s.attack, "trigger": s.poison.trigger,
            "poison_rate": s.poison.rate, "target": s.poison.target, "insertions": s.poison.insertions,
            "clean_label": s.poison.clean_label, "tal": s.tal.enabled, "epochs": s.train.epochs, "lr": s.train.lr,
            "batch_size": s.train.batch_size, "seed": s.train.seed, "max_train": s.max_train, "out": spec.out}


TRAIN = register(Task("train", TrainTaskSpec, _run_train, "fine-tune a classifier, optionally poisoned",
                      preflight_fn=_preflight_train, device_of=lambda s: s.spec.train.device,
                      summary_of=_summary_train, resumable=True))


# ------------------------------------------------------------------------------------------------------ por
@dataclass
class PORTaskSpec(TrainingRun):
    """Backdoor a pre-trained encoder with POR (``trojanscope por``)."""

    kind = "por"
    spec: PORSpec = field(default_factory=PORSpec)

    def validate(self) -> "PORTaskSpec":
        self.spec.train.validate()
        return super().validate()


def _run_por(spec: PORTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.training.pipeline import run_por

    out = _require_out(spec, "the encoder")
    return _from_card(spec, run_por(spec.spec, out, overwrite=spec.overwrite, on_event=library_callback(on_event),
                                    progress=progress, **_checkpoints(spec)))


def _summary_por(spec: PORTaskSpec) -> dict[str, Any]:
    s = spec.spec
    return {"model": s.model, "attack": "por", "triggers": s.por.triggers, "insertions": s.por.insertions,
            "data": s.por.data, "max_texts": s.por.max_texts, "epochs": s.train.epochs, "lr": s.train.lr,
            "seed": s.train.seed, "out": spec.out}


POR = register(Task("por", PORTaskSpec, _run_por, "backdoor a pre-trained encoder with POR",
                    device_of=lambda s: s.spec.train.device, summary_of=_summary_por, resumable=True))


# --------------------------------------------------------------------------------------------------- purify
@dataclass
class PurifyTaskSpec(TaskSpec):
    """Purify a backdoored classifier (``trojanscope purify``); never writes over its source."""

    kind = "purify"
    spec: PurifySpec = field(default_factory=lambda: PurifySpec(model=""))
    out: str | None = None
    overwrite: bool = False
    from_card: str | None = None

    def validate(self) -> "PurifyTaskSpec":
        if not self.spec.model:
            raise TrojanScopeError("no model to purify: give the backdoored classifier (a directory)")
        self.spec.validate()
        return self


def _run_purify(spec: PurifyTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.defenses.pipeline import run_purify

    out = _require_out(spec, "the purified model")
    return _from_card(spec, run_purify(spec.spec, out, overwrite=spec.overwrite, on_event=library_callback(on_event),
                                       progress=progress))


def _preflight_purify(spec: PurifyTaskSpec) -> None:
    """A missing model, the spec and the method's knobs, the data and the clean subset's size, a model without a
    trained classification head, a trigger the tokenizer cannot see; no weights are loaded."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.data.poison import check_trigger
    from trojanscope.defenses.pipeline import clean_subset
    from trojanscope.models.loading import load_tokenizer, require_classifier_source

    s = spec.spec
    train = load_dataset(s.data, "train")
    clean_subset(train, s.clean_fraction, s.seed).require_classes(2, "the clean subset")
    load_dataset(s.data, s.eval_split)
    config = require_classifier_source(s.model, "purification")
    if train.num_labels > int(getattr(config, "num_labels", 2)):
        raise TrojanScopeError(f"{s.data} has {train.num_labels} labels but {s.model} predicts "
                               f"{config.num_labels}: purify it with the data of its own task")
    if s.trigger:
        check_trigger(load_tokenizer(s.model), s.trigger)


def _summary_purify(spec: PurifyTaskSpec) -> dict[str, Any]:
    s = spec.spec
    return {"model": s.model, "data": s.data, "method": s.method, "clean_fraction": s.clean_fraction,
            "trigger": s.trigger, "target": s.target, "seed": s.seed, "config": dict(s.config), "out": spec.out}


PURIFY = register(Task("purify", PurifyTaskSpec, _run_purify, "remove a backdoor (MBTSAD or a baseline)",
                       preflight_fn=_preflight_purify, device_of=lambda s: s.spec.device,
                       summary_of=_summary_purify))


# ----------------------------------------------------------------------------------------------------- scan
@dataclass
class ScanTaskSpec(TaskSpec):
    """Search a suspect classifier for an unknown trigger (``trojanscope scan``); ``out`` gets ``scan.json``."""

    kind = "scan"
    model: str = ""
    data: str = "sst2"
    split: str = "test"
    config: ScanConfig = field(default_factory=ScanConfig)
    reference: str | None = None  # a clean classifier of the same task the candidates are also tried on
    rejudge: str | None = None  # a saved scan's JSON (scan.json or --json output): its verdict again, no new search
    device: str = "auto"
    allow_pickle: bool = False
    out: str | None = None
    overwrite: bool = False

    def validate(self) -> "ScanTaskSpec":
        if not self.model:
            raise TrojanScopeError("no model to scan: give the suspect classifier")
        if self.reference is not None and not str(self.reference).strip():
            self.reference = None
        if self.reference and os.path.realpath(self.reference) == os.path.realpath(self.model):
            raise TrojanScopeError("the reference model is the suspect itself: every candidate would cancel out. "
                                   "Give a clean classifier of the same task, or no --reference")
        self.config.validate()
        return self


def _run_scan(spec: ScanTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    """The verdict, the candidates (best first, flip rates on held-out sentences), the drifting heads
    ``[layer (1-based), head]`` and the time taken; with ``out``, ``<out>/scan.json`` keeps the full result."""
    from trojanscope.analysis.scan import rejudge, scan
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.utils import atomic_directory, check_output_dir, resolve_device

    if spec.out:
        check_output_dir(spec.out, spec.overwrite)
    data = load_dataset(spec.data, spec.split)
    loaded = load_model(spec.model, allow_pickle=spec.allow_pickle, device=resolve_device(spec.device))
    more = []
    # the task's own words are learnt from its train split too, where there is one (a re-judging searches nothing)
    if spec.split != "train" and not spec.rejudge:
        try:
            more.append(load_dataset(spec.data, "train"))
        except TrojanScopeError:
            pass
    reference = (load_model(spec.reference, allow_pickle=spec.allow_pickle, device=resolve_device(spec.device))
                 if spec.reference else None)
    if spec.rejudge:
        res = rejudge(loaded, data, _saved_scan(spec.rejudge), spec.config, reference=reference)
    else:
        res = scan(loaded, data, spec.config, on_event=library_callback(on_event), vocabulary_data=more,
                   reference=reference)
    out = res.to_json()
    if spec.out:
        full = {**res.to_json(full=True), "model": spec.model, "data": data.describe(),
                "spec": {"model": spec.model, "data": spec.data, "split": spec.split, "reference": spec.reference,
                         "rejudge": spec.rejudge, "config": asdict(spec.config)}}
        with atomic_directory(spec.out, overwrite=spec.overwrite) as tmp:
            (tmp / "scan.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
        out["out"] = spec.out
    return out


def _saved_scan(path: str) -> dict[str, Any]:
    """The saved scan at ``path`` (JSON only, never executed), with its candidates."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrojanScopeError(f"cannot read the scan to re-judge at {path}: {e.__class__.__name__}: {e}. Give a "
                               f"scan.json from `trojanscope scan --out`, or a `--json` output saved to a file") from e
    if not isinstance(saved, dict) or not isinstance(saved.get("candidates"), list):
        raise TrojanScopeError(f"{path} is not a saved scan result: it has no list of candidates")
    return saved


def _preflight_scan(spec: ScanTaskSpec) -> None:
    """The config, the data (two classes), a model with a classifier."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import require_classifier_source

    load_dataset(spec.data, spec.split).require_classes(2, "the scan's clean data")
    require_classifier_source(spec.model, "the scan")
    if spec.reference:
        require_classifier_source(spec.reference, "the scan's reference model")
    if spec.rejudge:
        _saved_scan(spec.rejudge)


SCAN = register(Task("scan", ScanTaskSpec, _run_scan, "find an unknown trigger and judge a model",
                     preflight_fn=_preflight_scan,
                     summary_of=lambda s: {"model": s.model, "data": s.data, "split": s.split,
                                           "reference": s.reference, "rejudge": s.rejudge,
                                           "budget": s.config.budget, "inversion": s.config.inversion,
                                           "seed": s.config.seed, "out": s.out},
                     output="scan", bar_from_events=True))


# ----------------------------------------------------------------------------------------------------- demo
@dataclass
class DemoTaskSpec(TaskSpec):
    """Build the demo pair (``trojanscope demo``): models already matching their recipe are kept."""

    kind = "demo"
    out: str | None = None  # default: <runs dir>/demo
    quick: bool = False  # a small, fast pair for smoke tests
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    force: bool = False  # rebuild even if the models exist
    overwrite: bool = False  # (the demo keeps or rebuilds what is there; kept for a uniform spec)


def _run_demo(spec: DemoTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    from trojanscope.demo import build_demo

    return build_demo(spec.out, quick=spec.quick, device=spec.device, seed=spec.seed, precision=spec.precision,
                      force=spec.force, on_event=library_callback(on_event), progress=progress)


DEMO = register(Task("demo", DemoTaskSpec, _run_demo, "build the demo pair (clean and backdoored)",
                     summary_of=lambda s: {"quick": s.quick, "seed": s.seed, "out": s.out},
                     default_out="demo", exclusive=True, keeps_output=True, output="models"))
