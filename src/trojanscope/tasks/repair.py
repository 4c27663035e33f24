"""Repair as a task (``trojanscope repair``, the Scan page's "Repair this model"): scan, unlearn the trigger,
prove it gone (:mod:`trojanscope.repair`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trojanscope.errors import TrojanScopeError
from trojanscope.repair import RepairConfig
from trojanscope.tasks.base import OnEvent, Task, TaskSpec, library_callback, register


@dataclass
class RepairTaskSpec(TaskSpec):
    """Repair ``model`` (``trojanscope repair``); ``out`` gets the repaired model with the report in its card,
    and ``repair.json``.

    ``trigger``/``target``: unlearn this trigger as given (no scan before). ``use_card``: take the trigger the
    card records (as given). ``scan``: a ``scan.json`` of this model already made (the Scan page's), used
    instead of scanning again. Otherwise the repair scans first. The card's trigger, when there is one, is
    always measured before and after, whatever the repair used."""

    kind = "repair"
    model: str = ""
    data: str = "sst2"
    split: str = "test"
    trigger: str | None = None
    target: int | None = None
    use_card: bool = False
    scan: str | None = None
    config: RepairConfig = field(default_factory=RepairConfig)
    max_eval: int | None = None
    device: str = "auto"
    allow_pickle: bool = False
    out: str | None = None
    overwrite: bool = False

    def validate(self) -> "RepairTaskSpec":
        if not self.model:
            raise TrojanScopeError("no model to repair: give the suspect classifier")
        if not self.out:
            raise TrojanScopeError("the repair needs --out: a new directory for the repaired model and its report")
        if self.trigger is not None and not self.trigger.strip():
            self.trigger = None
        if self.trigger and (self.use_card or self.scan):
            raise TrojanScopeError("give one source of the trigger: --trigger, --use-card or --scan")
        if self.use_card and self.scan:
            raise TrojanScopeError("give one source of the trigger: --use-card or --scan")
        if self.max_eval is not None and self.max_eval < 1:
            raise TrojanScopeError(f"max_eval must be at least 1, got {self.max_eval}")
        self.config.validate()
        return self


def read_scan(path: str, model: str) -> dict[str, Any]:
    """A saved scan (``scan.json``, or the directory holding it) of ``model``; refused when it scanned another."""
    p = Path(path)
    if p.is_dir():
        p = p / "scan.json"
    if not p.is_file():
        raise TrojanScopeError(f"no scan result at {path}: give a scan's --out directory or its scan.json")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrojanScopeError(f"{p} is not a readable scan result: {e}") from None
    if not isinstance(d, dict):
        raise TrojanScopeError(f"{p} is not a scan result")
    scanned = d.get("model")
    if scanned and Path(str(scanned)).resolve() != Path(model).resolve():
        raise TrojanScopeError(f"{p} is a scan of {scanned}, not of {model}: scan this model first")
    return d


def _run_repair(spec: RepairTaskSpec, on_event: OnEvent | None, progress: bool) -> dict[str, Any]:
    """The report (what was found, what was unlearned, what is left) and the verdict; the repaired model and
    ``repair.json`` in ``out``."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.backdoor import resolve_backdoor
    from trojanscope.models.loading import ModelCard, load_model, save_model
    from trojanscope.repair import Findings, repair
    from trojanscope.utils import atomic_directory, check_output_dir, resolve_device, same_or_nested, write_json

    out = Path(str(spec.out))
    if Path(spec.model).exists() and same_or_nested(out, spec.model):  # purify's own rule
        raise TrojanScopeError(f"--out {out} is the model's own directory or inside it; the repair never writes "
                               "over its source: choose another --out")
    check_output_dir(out, spec.overwrite)
    findings = Findings.of(read_scan(spec.scan, spec.model)) if spec.scan else None
    train = load_dataset(spec.data, "train")
    test = load_dataset(spec.data, spec.split).head(spec.max_eval, spec.config.seed)
    loaded = load_model(spec.model, allow_pickle=spec.allow_pickle, device=resolve_device(spec.device))
    card_bd = resolve_backdoor(loaded, need_target=True) if loaded.card is not None else None
    trigger, target = spec.trigger, spec.target
    if spec.use_card:
        if card_bd is None or not card_bd.known:
            raise TrojanScopeError(f"{spec.model}'s card records no trigger: give --trigger, or let the repair scan")
        trigger, target = card_bd.trigger, card_bd.target
    res = repair(loaded, train, test, spec.config, trigger=trigger, target=target, findings=findings,
                 true_backdoor=card_bd if card_bd is not None and card_bd.known else None,
                 on_event=library_callback(on_event), progress=progress)
    report = {**res.to_json(), "model": spec.model, "data": spec.data, "split": spec.split,
              "spec": spec.to_dict()}
    with atomic_directory(out, overwrite=spec.overwrite) as tmp:
        if res.repaired:
            source = loaded.card
            attack = {**source.attack, "repaired": True} if source and source.attack else None
            card = ModelCard(base_model=spec.model, num_labels=loaded.num_labels,
                             data={"name": spec.data, "eval": test.describe(),
                                   "label_names": list(train.label_names)},
                             attack=attack, seed=spec.config.seed,
                             metrics={"cacc": report["cacc"]["after"], "before": {"cacc": report["cacc"]["before"]}},
                             training={"spec": spec.to_dict(), "repair": report.get("training")},
                             extra={"repair": {k: v for k, v in report.items() if k not in ("attention", "spec")}})
            save_model(loaded.model, loaded.tokenizer, tmp, card)
        write_json(tmp / "repair.json", report)
    short = {k: report[k] for k in ("repaired", "verdict", "summary") if k in report}
    return {**short, "unlearned": report.get("unlearned", []), "pieces": report.get("pieces", []),
            "cacc": report.get("cacc"),
            "rescan": report.get("rescan"), "true_trigger": report.get("true_trigger"),
            "left": report.get("left", []), "offered": report.get("offered"),
            "found": report.get("found"), "seconds": report.get("seconds"), "out": str(out)}


def _preflight_repair(spec: RepairTaskSpec) -> None:
    """The data (two classes), a model with a classifier, a readable scan of this model when one is given."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import require_classifier_source

    load_dataset(spec.data, spec.split).require_classes(2, "the repair's test data")
    load_dataset(spec.data, "train").require_classes(2, "the repair's clean data")
    require_classifier_source(spec.model, "the repair")
    if spec.scan:
        read_scan(spec.scan, spec.model)


REPAIR = register(Task("repair", RepairTaskSpec, _run_repair, "find the trigger, unlearn it, prove it is gone",
                       preflight_fn=_preflight_repair,
                       summary_of=lambda s: {"model": s.model, "data": s.data, "method": "repair",
                                             "trigger": s.trigger, "seed": s.config.seed, "out": s.out},
                       output="model"))

