"""Effectiveness E and stealthiness S of triggers on a fine-tuned classifier (methods.md section 3,
seed Table 12).

Per trigger:

1. **The trigger's class**: the prediction on the trigger repeated twice (``"cf cf"``).
2. **The samples**: test samples whose label is not that class and that the model classifies
   correctly; a seeded uniform subset of at most ``max_eval`` of them (the first ``max_eval``
   eligible samples in a seeded permutation of the data, so the subset does not depend on batching).
3. **Insertion rounds** ``k = 1, 2, ..., max_insertions`` (20): each round adds *one more*
   insertion to the previous round's text (cumulative), at a seeded random position between words
   (never inside an earlier multi-word insertion). It is built with ``data.poison.insert_trigger``
   called with ``n=k`` and a per-sample ``random.Random`` seeded identically every round: the first
   ``k-1`` insertions then land exactly where they did in round ``k-1``, so round ``k``'s text is
   round ``k-1``'s text plus one insertion.
4. **The flip**: the first round whose prediction differs from the sample's true label (the seed:
   "until the prediction changes"). For two classes this is the same as "predicted as the trigger's
   class"; for more classes a flip to a third class also counts (``to_class`` reports the share of
   flips that did land on the trigger's class).
5. **E** = mean number of insertions at the flip, ``max_insertions`` for samples that never flip.
   **S** = mean of ``(len(poisoned) - len(original)) / len(poisoned)`` in characters, with
   ``poisoned`` the text at the flip (after ``max_insertions`` insertions for samples that never
   flip) and ``original`` the sample with its whitespace normalised as the insertion does (words
   joined by single spaces), so S counts only the trigger and its separating spaces.
   ``never`` = share of samples that never flipped, ``n`` = number of samples.

Each round sends all still-unflipped samples through the predictor in one batched call (at most
``max_insertions`` calls per trigger, plus the clean predictions, computed once and shared by all
triggers). ``effectiveness`` takes any predictor (texts -> labels), which keeps it testable;
``model_effectiveness`` wraps a ``LoadedModel``. ``sweep_rows`` and ``sweep_average`` turn the
results of several models (e.g. POR encoders made with 1, 3, 5, 7, 9 insertions, each fine-tuned)
into table rows and the per-model average over triggers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import check_trigger, insert_trigger
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import LoadedModel
from trojanscope.models.predict import Predictor, model_predictor, trigger_class  # noqa: F401
from trojanscope.models.predict import predicted_labels as _labels

# ``Predictor``, ``model_predictor`` and ``trigger_class`` live in ``models.predict`` (``models.planted`` asks
# them for a POR trigger's class) and are re-exported here.


@dataclass
class ESConfig:
    """How E and S are measured. ``max_eval=None`` uses every eligible sample; ``batch_size`` is
    the model wrapper's forward batch (a round may span several forward batches, but is one call)."""

    max_insertions: int = 20
    max_eval: int | None = None
    seed: int = 0
    batch_size: int = 128

    def validate(self) -> "ESConfig":
        if self.max_insertions < 1:
            raise TrojanScopeError(f"max_insertions must be at least 1, got {self.max_insertions}")
        if self.max_eval is not None and self.max_eval < 1:
            raise TrojanScopeError(f"max_eval must be at least 1 (or None for all samples), got {self.max_eval}")
        if self.batch_size < 1:
            raise TrojanScopeError(f"batch size must be at least 1, got {self.batch_size}")
        return self


@dataclass
class TriggerES:
    """E and S of one trigger, with the per-sample evidence.

    ``flip_at[i]``: insertions at sample ``i``'s flip (``None`` if it never flipped);
    ``poisoned[i]``: the text at the flip (or after ``max_insertions`` insertions);
    ``index[i]``: the sample's position in the input data.
    """

    trigger: str
    cls: int
    E: float
    S: float
    never: float
    n: int
    to_class: float = float("nan")
    index: list[int] = field(default_factory=list)
    flip_at: list[int | None] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``{"class", "E", "S", "never", "n"}`` (E, S, never are null when no sample qualified)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {"class": self.cls, "E": num(self.E), "S": num(self.S), "never": num(self.never), "n": self.n}


@dataclass
class ESResult:
    """E and S per trigger, their averages over triggers with at least one sample, and notices."""

    triggers: dict[str, TriggerES]
    config: ESConfig
    notices: list[str] = field(default_factory=list)

    @property
    def average(self) -> dict[str, float]:
        rows = [r for r in self.triggers.values() if r.n > 0]
        if not rows:
            return {"E": float("nan"), "S": float("nan")}
        return {"E": float(np.mean([r.E for r in rows])), "S": float(np.mean([r.S for r in rows]))}

    def to_json(self) -> dict[str, Any]:
        avg = {k: (None if math.isnan(v) else round(v, 6)) for k, v in self.average.items()}
        return {"triggers": {t: r.to_json() for t, r in self.triggers.items()}, "average": avg}

    @classmethod
    def from_json(cls, d: dict[str, Any], config: ESConfig | None = None) -> "ESResult":
        """The per-trigger E, S and never-flipped shares ``to_json`` wrote (rounded to 6 digits; an undefined
        value as NaN again), with the ``notices`` beside them when there are any (an E and S job's result)."""
        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        triggers = {t: TriggerES(t, int(r["class"]), num(r["E"]), num(r["S"]), num(r["never"]), int(r["n"]))
                    for t, r in d["triggers"].items()}
        return cls(triggers, config or ESConfig(), list(d.get("notices") or []))


def parse_triggers(triggers: str | Sequence[str]) -> list[str]:
    """A comma-separated string or a list -> distinct, stripped, non-empty triggers in order."""
    items = triggers.split(",") if isinstance(triggers, str) else list(triggers)
    out: list[str] = []
    for t in items:
        t = " ".join(str(t).split())
        if t and t not in out:
            out.append(t)
    if not out:
        raise TrojanScopeError("no trigger given; pass one or more, comma-separated (e.g. cf,mn,bb)")
    return out


def poisoned_text(text: str, trigger: str, k: int, rng_seed: str) -> str:
    """``text`` with ``trigger`` inserted ``k`` times at random positions, cumulative in ``k``:
    ``poisoned_text(t, x, k, s)`` is ``poisoned_text(t, x, k - 1, s)`` plus one insertion."""
    if k == 0:
        return " ".join(text.split())
    return insert_trigger(text, trigger, k, "random", random.Random(rng_seed)).text


def effectiveness(predict: Predictor, texts: Sequence[str], labels: Sequence[int], triggers: str | Sequence[str],
                  cfg: ESConfig | None = None,
                  progress: Callable[[float, str], None] | None = None) -> ESResult:
    """E and S of each trigger for the classifier behind ``predict`` (see the module docstring).

    ``predict`` maps a list of texts to their predicted labels. A trigger that flips nothing gets
    ``E = max_insertions`` and ``never = 1.0``; a trigger with no eligible sample gets ``n = 0``, NaN
    E/S/never and a notice.
    """
    cfg = (cfg or ESConfig()).validate()
    triggers = parse_triggers(triggers)
    texts = list(texts)
    labels_arr = np.asarray(list(labels), dtype=np.int64)
    if len(texts) != len(labels_arr):
        raise TrojanScopeError(f"{len(texts)} texts but {len(labels_arr)} labels")
    if not texts:
        raise TrojanScopeError("no test samples given")
    order = random.Random(cfg.seed).sample(range(len(texts)), len(texts))
    clean_pred: dict[int, int] = {}

    def ensure_clean(idx: list[int]) -> None:
        missing = [i for i in idx if i not in clean_pred]
        if missing:
            for i, p in zip(missing, _labels(predict, [texts[i] for i in missing])):
                clean_pred[i] = int(p)

    results: dict[str, TriggerES] = {}
    notices: list[str] = []
    for t_i, trigger in enumerate(triggers):
        if progress is not None:
            progress(t_i / len(triggers), f"trigger {t_i + 1} of {len(triggers)}: {trigger}")
        cls = trigger_class(predict, trigger)
        candidates = [i for i in order if labels_arr[i] != cls]
        limit = len(candidates) if cfg.max_eval is None else cfg.max_eval
        chosen: list[int] = []
        pos = 0
        while len(chosen) < limit and pos < len(candidates):
            need = limit - len(chosen)
            chunk = candidates[pos : pos + (len(candidates) if cfg.max_eval is None else max(2 * need, cfg.batch_size))]
            ensure_clean(chunk)
            for i in chunk:
                if clean_pred[i] == labels_arr[i]:
                    chosen.append(i)
                    if len(chosen) == limit:
                        break
            pos += len(chunk)
        results[trigger] = _rounds(predict, texts, labels_arr, trigger, cls, chosen, cfg)
        if not chosen:
            notices.append(f"trigger {trigger!r}: no correctly classified sample outside its class {cls}; "
                           "E and S are undefined")
    return ESResult(results, cfg, notices)


def _rounds(predict: Predictor, texts: list[str], labels: np.ndarray, trigger: str, cls: int, chosen: list[int],
            cfg: ESConfig) -> TriggerES:
    """Insertion rounds for one trigger: one batched predictor call per round."""
    m = len(chosen)
    if m == 0:
        nan = float("nan")
        return TriggerES(trigger, cls, nan, nan, nan, 0)
    seeds = [f"{cfg.seed}/{trigger}/{i}" for i in chosen]
    flip_at: list[int | None] = [None] * m
    final: list[str] = [""] * m
    new_label: list[int | None] = [None] * m
    active = list(range(m))
    for k in range(1, cfg.max_insertions + 1):
        if not active:
            break
        batch = [poisoned_text(texts[chosen[j]], trigger, k, seeds[j]) for j in active]
        preds = _labels(predict, batch)
        still = []
        for j, text, p in zip(active, batch, preds):
            final[j] = text
            if p != labels[chosen[j]]:
                flip_at[j], new_label[j] = k, int(p)
            else:
                still.append(j)
        active = still
    originals = [len(" ".join(texts[i].split())) for i in chosen]
    steps = [f if f is not None else cfg.max_insertions for f in flip_at]
    ratios = [(len(p) - o) / len(p) for p, o in zip(final, originals)]
    flipped = [lab for lab in new_label if lab is not None]
    return TriggerES(
        trigger, cls, float(np.mean(steps)), float(np.mean(ratios)),
        sum(f is None for f in flip_at) / m, m,
        to_class=float(np.mean([lab == cls for lab in flipped])) if flipped else float("nan"),
        index=list(chosen), flip_at=flip_at, poisoned=final,
    )


def _defined(x: float | None) -> float | None:
    """A number, or ``None`` where it is undefined (NaN: a trigger without eligible samples)."""
    return None if x is None or math.isnan(float(x)) else float(x)


def sweep_rows(results: Mapping[str, ESResult], insertions: Mapping[str, int | None] | None = None
               ) -> list[dict[str, Any]]:
    """One row per model and trigger, in the order given: ``{"model", "insertions", "trigger",
    "class", "E", "S", "never", "n"}``.

    ``results`` maps a model's name to its ``ESResult``; ``insertions`` the same names to the number
    of insertions its poisoning used (POR's sweep variable; ``None`` or missing: unknown). E, S and
    ``never`` are ``None`` for a trigger with ``n = 0`` (undefined, never NaN), at full precision
    otherwise (round them for display).
    """
    insertions = insertions or {}
    rows: list[dict[str, Any]] = []
    for model, result in results.items():
        for trigger, r in result.triggers.items():
            defined = r.n > 0
            rows.append({"model": model, "insertions": insertions.get(model), "trigger": trigger, "class": r.cls,
                         "E": _defined(r.E) if defined else None, "S": _defined(r.S) if defined else None,
                         "never": _defined(r.never) if defined else None, "n": r.n})
    return rows


def sweep_average(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's summary (seed Table 12): per model and poisoning insertions, in the order of
    first appearance, the mean E and S over its triggers with a defined value (``n > 0``).

    Each row: ``{"model", "insertions", "E", "S", "triggers"}``, ``triggers`` = the number of
    triggers averaged; E and S are ``None`` when no trigger of the model had an eligible sample.
    """
    groups: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row.get("insertions")), []).append(row)

    def mean(part: list[Mapping[str, Any]], key: str) -> float | None:
        values = [float(r[key]) for r in part if r.get(key) is not None and not math.isnan(float(r[key]))]
        return float(np.mean(values)) if values else None

    out = []
    for (model, ins), part in groups.items():
        used = [r for r in part if r.get("n", 0) > 0 and _defined(r.get("E")) is not None]
        out.append({"model": model, "insertions": ins, "E": mean(used, "E"), "S": mean(used, "S"),
                    "triggers": len(used)})
    return out


def model_effectiveness(loaded: LoadedModel, test: TextDataset, triggers: str | Sequence[str],
                        cfg: ESConfig | None = None,
                        progress: Callable[[float, str], None] | None = None) -> ESResult:
    """E and S of ``triggers`` on ``loaded`` over ``test``; triggers with [UNK] tokens are refused.
    ``progress(fraction, message)`` is called as each trigger starts."""
    loaded.check_task(test, "E and S")
    cfg = (cfg or ESConfig()).validate()
    triggers = parse_triggers(triggers)
    for t in triggers:
        check_trigger(loaded.tokenizer, t)
    return effectiveness(model_predictor(loaded, cfg.batch_size), test.texts, test.labels, triggers, cfg, progress)
