"""Purify-and-save: a backdoored classifier + a seeded clean subset -> a purifier from ``DEFENSES``
-> CACC/ASR before and after -> a new model directory with its card.

A :class:`PurifySpec` is the whole recipe (stored in the card's ``training.spec``, so a run can be
repeated). The source model is only read; the output appears only when everything succeeded
(``utils.atomic_directory``), so a job killed half-way leaves neither a changed source nor a
half-written output. A purifier may register ``extra={"preflight": fn}``: ``fn(loaded, cfg)`` runs
right after the model loads, before any measuring or training, to refuse bad input early (MBTSAD: a
given teacher of another architecture).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from trojanscope import specs
from trojanscope.errors import TrojanScopeError

MIN_CLEAN = 32  # a clean subset smaller than this is refused


@dataclass
class PurifySpec:
    """Everything that defines a purification run. ``config``: the method's knobs, validated against
    its config dataclass (unknown keys are refused; missing keys take the dataclass defaults)."""

    model: str
    data: str = "sst2"
    method: str = "mbtsad"
    config: dict[str, Any] = field(default_factory=dict)
    clean_fraction: float = 0.2
    seed: int = 0
    trigger: str | None = None
    target: int | None = None
    device: str = "auto"
    max_eval: int | None = None
    eval_split: str = "test"
    allow_pickle: bool = False

    def defense(self):
        from trojanscope.defenses import get_defense

        d = get_defense(self.method)
        if d.kind != "purify":
            from trojanscope.defenses import purifiers

            raise TrojanScopeError(f"{self.method} detects poisoned inputs, it does not purify a model; purifiers: "
                                   f"{', '.join(purifiers())}")
        return d

    def method_config(self) -> Any:
        """The method's config dataclass built from ``config`` (values coerced to the fields' types), validated."""
        cls = self.defense().config
        cfg = cls(**coerce_config(cls, self.config, where=f"the {self.method} config"))
        validate = getattr(cfg, "validate", None)
        if callable(validate):
            validate()
        return cfg

    def validate(self) -> "PurifySpec":
        if not isinstance(self.clean_fraction, (int, float)) or not 0 < self.clean_fraction <= 1:
            raise TrojanScopeError(f"the clean fraction is a share of the training set in (0, 1], got "
                                   f"{self.clean_fraction}")
        if self.max_eval is not None and self.max_eval < 1:
            raise TrojanScopeError(f"max_eval must be at least 1, got {self.max_eval}")
        self.method_config()
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PurifySpec":
        from trojanscope.training.pipeline import spec_from_dict

        return spec_from_dict(cls, d, {}, where="purify spec")


# one converter for every dict that becomes a config (cards, --set, job specs): trojanscope.specs
config_fields = specs.field_types
_coerce = specs.coerce


def coerce_config(cls: type, values: dict[str, Any], where: str = "the config") -> dict[str, Any]:
    """Check ``values`` against config dataclass ``cls``: unknown keys are refused (naming what is allowed)
    and each value is coerced to its field's type (strings from ``--set key=value`` included)."""
    specs.check_keys(cls, values, where.removeprefix("the "))
    known = specs.field_types(cls)
    return {k: specs.coerce(v, known[k], k, where) for k, v in values.items()}


def clean_subset(train, fraction: float, seed: int):
    """The seeded ``fraction`` share of ``train`` (refused when it leaves fewer than :data:`MIN_CLEAN` texts)."""
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise TrojanScopeError(f"the clean fraction is a share of the training set in (0, 1], got {fraction}")
    n = int(round(fraction * len(train)))
    if n < MIN_CLEAN:
        need = min(1.0, MIN_CLEAN / max(len(train), 1))
        hint = (f"raise --clean-fraction to at least {need:.3g}" if len(train) >= MIN_CLEAN
                else "use a larger data set")
        raise TrojanScopeError(f"a clean fraction of {fraction} of {len(train)} training texts leaves {n} texts; "
                               f"purification needs at least {MIN_CLEAN} ({hint})")
    return train.head(n, seed)


def pretrained_of(loaded) -> str | None:
    """The pre-trained model the source was fine-tuned from: the end of its cards' ``base_model`` chain
    (``minilm``, a hub id, or a directory without a card); ``None`` for a foreign model."""
    from trojanscope.models.loading import read_card

    card, seen = loaded.card, set()
    while card is not None and card.base_model and card.base_model not in seen:
        base = card.base_model
        seen.add(base)
        try:
            nxt = read_card(base) if Path(base).is_dir() else None
        except TrojanScopeError:
            nxt = None
        if nxt is None:
            return base
        card = nxt
    return None


def _scores(r: dict[str, Any]) -> dict[str, Any]:
    return {"cacc": r["cacc"], "asr": r["asr"], "asr_flip": r.get("asr_flip"), "n_clean": r["n_clean"],
            "n_poisoned": r["n_poisoned"]}


def run_purify(spec: PurifySpec, out: str | os.PathLike, *, overwrite: bool = False,
               on_event: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """Purify ``spec.model`` with ``spec.method`` and save the result to ``out``.

    Returns ``{"method", "before": {"cacc", "asr"}, "after": {"cacc", "asr"}, "seconds", "out", ...}``
    (``asr`` is ``None`` when no trigger is known: neither recorded in the card chain nor given).
    """
    from trojanscope.data.datasets import load_dataset
    from trojanscope.defenses import PurifyContext
    from trojanscope.models.backdoor import resolve_backdoor
    from trojanscope.models.loading import ModelCard, load_model, resolve_source
    from trojanscope.models.metrics import evaluate
    from trojanscope.utils import atomic_directory, check_output_dir, resolve_device, same_or_nested, set_seed

    t_start = time.perf_counter()
    spec.validate()
    defense = spec.defense()
    cfg = spec.method_config()
    spec = dataclasses.replace(spec, config=asdict(cfg))  # the card records every knob, defaults included
    out = Path(out)
    kind, ref = resolve_source(spec.model)
    if kind == "local" and same_or_nested(out, ref):
        raise TrojanScopeError(f"--out {out} is the source model's directory or inside/around it; purification never "
                               "writes over its source: choose another --out")
    check_output_dir(out, overwrite)  # before any work
    train_ds = load_dataset(spec.data, "train")
    clean = clean_subset(train_ds, spec.clean_fraction, spec.seed)
    clean.require_classes(2, "the clean subset")
    test = load_dataset(spec.data, spec.eval_split).head(spec.max_eval, spec.seed)
    try:
        dev = load_dataset(spec.data, "dev")
    except TrojanScopeError:
        dev = None
    device = resolve_device(spec.device)
    loaded = load_model(spec.model, allow_pickle=spec.allow_pickle, device=device)
    loaded.require("classify", "purification")
    preflight = defense.extra.get("preflight")  # a method's own checks, before any measuring or training
    if callable(preflight):
        preflight(loaded, cfg)
    if train_ds.num_labels > loaded.num_labels:
        raise TrojanScopeError(f"{spec.data} has {train_ds.num_labels} labels but {spec.model} predicts "
                               f"{loaded.num_labels}: purify it with the data of its own task")
    # the one answer eval, detect, the swap and the head view use (LWP's combination only for the card's trigger)
    backdoor = resolve_backdoor(loaded, trigger=spec.trigger, target=spec.target)
    trigger, target = backdoor.trigger, backdoor.target

    def stage(message: str) -> None:
        if on_event:
            on_event({"event": "stage", "message": message})
        if progress:
            print(message, file=sys.stderr)

    def measure(model) -> dict[str, Any]:
        return evaluate(model, loaded.tokenizer, test, backdoor=backdoor, seed=spec.seed)

    stage(f"measuring the source model on {len(test)} {spec.eval_split} texts")
    before = measure(loaded.model)
    stage(f"purifying with {spec.method} on {len(clean)} clean texts ({spec.clean_fraction:g} of {len(train_ds)})")
    ctx = PurifyContext(seed=spec.seed, device=spec.device, dev=dev, pretrained=pretrained_of(loaded),
                        on_event=on_event, progress=progress)
    set_seed(spec.seed)
    t0 = time.perf_counter()
    method_result = defense.run(loaded, clean, cfg, ctx) or {}
    seconds = time.perf_counter() - t0
    loaded.model.to(device).eval()
    stage("measuring the purified model")
    after = measure(loaded.model)

    source_card = loaded.card
    attack_section = None
    if source_card is not None and source_card.attack and source_card.attack.get("name") not in (None, "none"):
        attack_section = {**source_card.attack, "purified": True}
    purification = {"method": spec.method, "config": spec.config, "clean_fraction": spec.clean_fraction,
                    "clean_seed": spec.seed, "n_clean": len(clean), "source": spec.model,
                    "trigger": trigger, "target": target, "before": _scores(before), "seconds": round(seconds, 2)}
    metrics = {**after, "before": _scores(before), "purify_seconds": round(seconds, 2)}
    card = ModelCard(
        base_model=spec.model,
        num_labels=loaded.num_labels,
        data={"name": spec.data, "clean": clean.describe(), "eval": test.describe(),
              "label_names": list(train_ds.label_names)},
        attack=attack_section,
        seed=spec.seed,
        metrics=metrics,
        training={"spec": asdict(spec), "purify": method_result, "history": method_result.get("history", []),
                  "total_seconds": round(time.perf_counter() - t_start, 2)},
        extra={"purification": purification},
    )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_model(loaded.model, loaded.tokenizer, tmp, card)
    return {
        "method": spec.method,
        "before": {"cacc": before["cacc"], "asr": before["asr"], "asr_flip": before.get("asr_flip")},
        "after": {"cacc": after["cacc"], "asr": after["asr"], "asr_flip": after.get("asr_flip")},
        **purification_verdict(before, after),  # verdict (removed | reduced | still there | unknown), cacc_cost
        "seconds": round(seconds, 2),
        "out": str(out),
        "warnings": after.get("warnings", []),
        "cacc": after["cacc"], "asr": after["asr"],  # the job runner and the Runs page read these
        "trigger": trigger, "target": target,
        "clean_fraction": spec.clean_fraction, "n_clean": len(clean), "clean_seed": spec.seed,
        "n_eval": len(test), "source": spec.model, "config": spec.config,
        "result": {k: v for k, v in method_result.items() if k not in ("history", "teacher_history")},
        "total_seconds": round(time.perf_counter() - t_start, 2),
    }


REMOVED_AT = 0.10  # flip-ASR at or below this after purification: the backdoor is removed
REDUCED_BY = 0.25  # at least this share of the flip-ASR gone (and not removed): reduced


def purification_verdict(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a purification did to the backdoor, from flip-ASR with the known trigger: ``removed`` (at most 10%
    after), ``reduced`` (a quarter or more of it gone), ``still there``, or ``unknown`` (no trigger to test);
    with the CACC cost (points lost, negative: gained) and one plain sentence."""
    b, a = before.get("asr_flip"), after.get("asr_flip")
    cost = (before["cacc"] - after["cacc"]) * 100
    if b is None or a is None:
        return {"verdict": "unknown", "cacc_cost": round(cost, 2),
                "summary": "no trigger known (none on the card, none typed): the backdoor's fate was not measured"}
    if a <= REMOVED_AT:
        verdict = "removed"
    elif a <= b * (1 - REDUCED_BY):
        verdict = "reduced"
    else:
        verdict = "still there"
    summary = {"removed": f"removed: the trigger flips {100 * a:.1f}% (was {100 * b:.1f}%)",
               "reduced": f"reduced, not removed: the trigger still flips {100 * a:.1f}% (was {100 * b:.1f}%)",
               "still there": f"the backdoor survived: the trigger still flips {100 * a:.1f}% (was {100 * b:.1f}%)"}
    return {"verdict": verdict, "cacc_cost": round(cost, 2),
            "summary": f"{summary[verdict]}, at a CACC cost of {cost:+.2f} points".replace("+-", "-")}


def save_model(model, tokenizer, out, card):  # indirection so tests can interrupt a save
    from trojanscope.models.loading import save_model as _save

    return _save(model, tokenizer, out, card)
