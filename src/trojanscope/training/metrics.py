"""Predictions, CACC and ASR exactly as methods.md defines them.

CACC: accuracy on the clean test set. ASR: share of poisoned test inputs (built from test samples
whose true label is not the target) classified as the target label.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import poisoned_test_set
from trojanscope.errors import TrojanScopeError
from trojanscope.models.forward import batched_forward


def predict_proba(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 128,
                  max_length: int | None = None, progress: bool = False,
                  stats: dict[str, Any] | None = None) -> np.ndarray:
    """Class probabilities ``[n, labels]`` through the one batched forward (``models.forward``).

    ``stats``, when given, receives ``n_truncated``: texts cut to the model's maximum length."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    res = batched_forward(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, progress=progress)
    if res.logits is None:
        raise TrojanScopeError(f"{type(model).__name__} has no classification head: it cannot predict labels")
    if stats is not None:
        stats["n_truncated"] = stats.get("n_truncated", 0) + res.n_truncated
    return res.probs.astype(np.float32)


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
             batch_size: int = 128, progress: bool = False) -> dict[str, Any]:
    """CACC on ``test`` and, when a trigger is given, ASR on its poisoned non-target samples.

    ``asr_flip`` is the ASR over only those non-target samples the model classifies correctly without the
    trigger: the trigger's own effect. Plain ASR also counts the model's errors (a clean model's ASR equals
    its error rate on the non-target classes: 10.5% for the demo's clean MiniLM on SST-2), so a purified
    model can never go below that floor by ASR, while its ``asr_flip`` goes to about 0.

    For a combination trigger, ``asr_partial`` is also reported: the ASR with each word alone
    (it should stay low: only the full combination may fire)."""
    stats: dict[str, Any] = {}
    preds = predict_proba(model, tokenizer, test.texts, batch_size=batch_size, progress=progress,
                          stats=stats).argmax(-1)
    result: dict[str, Any] = {"cacc": cacc(preds, test.labels), "asr": None, "n_clean": len(test), "n_poisoned": 0,
                              "n_truncated": stats["n_truncated"]}
    result["warnings"] = meaningless(preds, test.labels, result["cacc"])
    if trigger:
        target = 1 if target is None else target
        pt = poisoned_test_set(test, trigger, target, insertions, "random", seed, combination)
        ppreds = predict_proba(model, tokenizer, pt.texts, batch_size=batch_size, progress=progress).argmax(-1)
        result.update(asr=asr(ppreds, target), n_poisoned=len(pt))
        keep = np.asarray([i for i, lab in enumerate(test.labels) if lab != target])  # poisoned_test_set's order
        right = np.asarray(preds)[keep] == np.asarray(test.labels)[keep]
        result["asr_flip"] = asr(np.asarray(ppreds)[right], target) if right.any() else None
        words = trigger.split()
        if combination and len(words) > 1:
            partial = {}
            for w in words:
                pw = poisoned_test_set(test, w, target, insertions, "random", seed)
                partial[w] = asr(predict_proba(model, tokenizer, pw.texts, batch_size=batch_size).argmax(-1), target)
            result["asr_partial"] = partial
    return result
