"""CACC and ASR exactly as methods.md defines them, and :func:`evaluate`, which measures both.

CACC: accuracy on the clean test set. ASR: share of poisoned test inputs (built from test samples
whose true label is not the target, ``models.backdoor.Backdoor.poison``) classified as the target
label. They live in ``models`` so that training, analysis and defenses read one definition from below
all of them; ``training.metrics`` re-exports them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.models.backdoor import Backdoor
from trojanscope.models.predict import predict_proba


def meaningless(preds: Sequence[int], labels: Sequence[int], clean_acc: float) -> list[str]:
    """Warnings for results that look like success but are not: a model that predicts one class for nearly
    every clean text (its ASR for that class is 100% by default), or a CACC no better than always answering the
    most common label (e.g. 50.0% beside an ASR of 100% after training on 200 samples)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if len(preds) == 0:
        return []
    out = []
    values, counts = np.unique(preds, return_counts=True)
    top, share = int(values[counts.argmax()]), float(counts.max() / len(preds))
    if share >= 0.95:
        out.append(f"the model predicts class {top} for {100 * share:.1f}% of the clean test texts: it has not learned "
                   f"the task, and an ASR with target {top} means nothing; train on more samples or for more epochs "
                   "(the demo pair uses all 6,920 SST-2 sentences for one epoch)")
    majority = float(np.bincount(labels).max() / len(labels))
    margin = 2 * np.sqrt(max(majority * (1 - majority), 1e-12) / len(labels))  # two standard errors
    if clean_acc <= majority + margin and not out:
        out.append(f"CACC {100 * clean_acc:.1f}% is at chance (always answering the most common label scores "
                   f"{100 * majority:.1f}% on these {len(labels)} texts): the model has not learned the task, so its "
                   "ASR means nothing; train on more samples or for more epochs")
    return out


def cacc(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Clean accuracy."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float((preds == labels).mean())


def asr(preds_on_poisoned: Sequence[int], target: int) -> float:
    """Attack success rate: share of poisoned (non-target) inputs predicted as ``target``."""
    preds = np.asarray(preds_on_poisoned)
    if len(preds) == 0:
        return float("nan")
    return float((preds == target).mean())


def evaluate(model: torch.nn.Module, tokenizer: Any, test: TextDataset, *, trigger: str | None = None,
             target: int | None = None, insertions: int = 1, seed: int = 0, combination: bool = False,
             batch_size: int = 128, progress: bool = False, backdoor: Backdoor | None = None) -> dict[str, Any]:
    """CACC on ``test`` and, when a trigger is given, ASR on its poisoned non-target samples.

    The backdoor is ``backdoor`` (``models.backdoor.resolve_backdoor``'s answer), or else built from
    ``trigger``, ``target`` (default 1), ``insertions`` and ``combination``; the poisoned texts are
    ``backdoor.poison(test, seed=seed)``, the one construction every reader uses.

    ``asr_flip`` is the ASR over only those non-target samples the model classifies correctly without the
    trigger: the trigger's own effect. Plain ASR also counts the model's errors (a clean model's ASR equals
    its error rate on the non-target classes: 10.5% for the demo's clean MiniLM on SST-2), so a purified
    model can never go below that floor by ASR, while its ``asr_flip`` goes to about 0.

    For a combination trigger, ``asr_partial`` is also reported: the ASR with each word alone
    (it should stay low: only the full combination may fire)."""
    if backdoor is None and trigger:
        backdoor = Backdoor(trigger, 1 if target is None else target, insertions, combination)
    stats: dict[str, Any] = {}
    preds = predict_proba(model, tokenizer, test.texts, batch_size=batch_size, progress=progress,
                          stats=stats).argmax(-1)
    result: dict[str, Any] = {"cacc": cacc(preds, test.labels), "asr": None, "n_clean": len(test), "n_poisoned": 0,
                              "n_truncated": stats["n_truncated"]}
    result["warnings"] = meaningless(preds, test.labels, result["cacc"])
    if backdoor is not None and backdoor.known:
        target = backdoor.target
        pt = backdoor.poison(test, seed=seed)
        ppreds = predict_proba(model, tokenizer, pt.texts, batch_size=batch_size, progress=progress).argmax(-1)
        result.update(asr=asr(ppreds, target), n_poisoned=len(pt))
        keep = np.asarray([i for i, lab in enumerate(test.labels) if lab != target])  # the poisoned set's order
        right = np.asarray(preds)[keep] == np.asarray(test.labels)[keep]
        result["asr_flip"] = asr(np.asarray(ppreds)[right], target) if right.any() else None
        parts = backdoor.parts()
        if parts:
            result["asr_partial"] = {
                p.trigger: asr(predict_proba(model, tokenizer, p.poison(test, seed=seed).texts,
                                             batch_size=batch_size).argmax(-1), target)
                for p in parts}
    return result
