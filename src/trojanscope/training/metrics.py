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
from trojanscope.models.tokens import length_buckets, model_max_length_of, pad, tokenize


@torch.inference_mode()
def predict_proba(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 128,
                  max_length: int | None = None, progress: bool = False,
                  stats: dict[str, Any] | None = None) -> np.ndarray:
    """Class probabilities ``[n, labels]`` (length-sorted batches, original order returned).

    ``stats``, when given, receives ``n_truncated``: texts cut to the model's maximum length."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    max_length = max_length or model_max_length_of(model, tokenizer)
    device = next(model.parameters()).device
    tok = tokenize(tokenizer, texts, None, max_length)
    if stats is not None:
        stats["n_truncated"] = stats.get("n_truncated", 0) + sum(tok.truncated)
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    batches = length_buckets([len(x) for x in tok.input_ids], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    try:
        for idx in batches:
            enc = pad(tokenizer, tok, idx).to(device)
            with _autocast(device):
                logits = model(**enc.model_inputs()).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


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

    For a combination trigger, ``asr_partial`` is also reported: the ASR with each word alone
    (it should stay low: only the full combination may fire)."""
    stats: dict[str, Any] = {}
    preds = predict_proba(model, tokenizer, test.texts, batch_size=batch_size, progress=progress,
                          stats=stats).argmax(-1)
    result: dict[str, Any] = {"cacc": cacc(preds, test.labels), "asr": None, "n_clean": len(test), "n_poisoned": 0,
                              "n_truncated": stats["n_truncated"]}
    if trigger:
        target = 1 if target is None else target
        pt = poisoned_test_set(test, trigger, target, insertions, "random", seed, combination)
        ppreds = predict_proba(model, tokenizer, pt.texts, batch_size=batch_size, progress=progress).argmax(-1)
        result.update(asr=asr(ppreds, target), n_poisoned=len(pt))
        words = trigger.split()
        if combination and len(words) > 1:
            partial = {}
            for w in words:
                pw = poisoned_test_set(test, w, target, insertions, "random", seed)
                partial[w] = asr(predict_proba(model, tokenizer, pw.texts, batch_size=batch_size).argmax(-1), target)
            result["asr_partial"] = partial
    return result
