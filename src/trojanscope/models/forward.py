"""The one batched forward: texts in, per-text results out, in the caller's order.

Every reader that runs a model over many texts without gradients (CACC/ASR, E and S, the probe,
the head view, the anatomy, the swap, POR's distances, purification and scanning) goes through
:func:`batched_forward`. It decides, once for all of them:

- eval mode (restored afterwards) and ``inference_mode``;
- length-sorted batches (less padding), results returned in the input order;
- numerical precision (``precision``: ``fp32`` by default everywhere, so two pages cannot report
  two CACCs for one model; ``bf16`` autocast where asked);
- what is kept of each batch: logits always (for a classifier), and whatever the ``keep`` reducer
  returns per text from the forward output. Attention is reduced batch by batch, so a caller that
  needs only [CLS] rows or a per-head statistic never holds ``[n, layers, heads, seq, seq]``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward, attention_forward
from trojanscope.models.tokens import Encoded, Span, Tokenized, length_buckets, model_max_length_of, pad, tokenize

PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_CHOICES = ("auto",) + PRECISIONS

# keep(out, enc, idx) -> one item per row of the batch (tensor rows, arrays, objects); ``idx`` holds
# the rows' positions in the input
Keep = Callable[[AttentionForward, Encoded, list[int]], Sequence[Any]]


@dataclass
class ForwardResult:
    """Per-text outputs in input order. ``logits``/``probs``/``preds`` are ``None`` for a bare encoder
    (no classification head); ``kept[i]`` is what ``keep`` returned for text ``i``."""

    logits: np.ndarray | None
    kept: list[Any]
    truncated: list[bool]
    tokenized: Tokenized
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def probs(self) -> np.ndarray | None:
        if self.logits is None:
            return None
        z = self.logits - self.logits.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)

    @property
    def preds(self) -> np.ndarray | None:
        return None if self.logits is None else self.logits.argmax(-1)

    @property
    def n_truncated(self) -> int:
        return int(sum(self.truncated))


CPU_BF16_ENV = "TROJANSCOPE_CPU_BF16"  # 0: resolve ``auto`` as on a CPU without native bf16; 1: as on one with it


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo.

    ``TROJANSCOPE_CPU_BF16=0`` answers False whatever the CPU (``auto`` then resolves as on an AVX2-only
    machine: the tests pin it so, and ``.ci/run`` runs them under both); ``1`` answers True (bf16 is then
    emulated where the CPU lacks it: slow, for tests only). Unset, empty or ``auto``: read the CPU."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced not in ("", "auto"):
        raise TrojanScopeError(f"{CPU_BF16_ENV}={forced!r} is not understood; allowed: 0, 1 or auto")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device, *, cpu_auto: str = "fp32") -> str:
    """``auto|fp32|bf16|fp16`` -> ``fp32``, ``bf16`` or ``fp16`` on ``device``.

    ``auto`` picks bf16 on a CUDA GPU that supports it, and ``cpu_auto`` on a CPU (``fp32`` unless a caller
    has measured bf16 to cost nothing there; bf16 only on a CPU with native bf16). What the device lacks is
    refused rather than emulated slowly or forced: bf16 on a GPU without it, fp16 anywhere but a CUDA GPU.
    """
    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise TrojanScopeError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_auto == "bf16" and cpu_has_fast_bf16() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrojanScopeError("--precision bf16 was asked for but this GPU has no bf16 support; use fp16, fp32 or auto")
    if precision == "fp16" and device.type != "cuda":
        raise TrojanScopeError(f"--precision fp16 needs a CUDA GPU (this run is on {device.type}); "
                               f"use bf16{' (this CPU has it)' if cpu_has_fast_bf16() else ''} or fp32")
    return precision


def precision_context(device: torch.device, precision: str = "fp32"):
    """Autocast for ``precision`` on ``device`` (``fp32``: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type if device.type in ("cuda", "cpu") else "cpu", dtype=dtype)
    raise TrojanScopeError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")


def batched_forward(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str] | None = None,
    spans: Sequence[Sequence[Span]] | None = None,
    *,
    tokenized: Tokenized | None = None,
    keep: Keep | None = None,
    attentions: bool = False,
    hidden_states: bool = False,
    batch_size: int = 64,
    max_length: int | None = None,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | bool = False,
) -> ForwardResult:
    """Run ``model`` over ``texts`` (with trigger ``spans``) or pre-``tokenized`` input.

    ``attentions``/``hidden_states`` ask the forward for them (only useful with ``keep``, which
    receives each batch's :class:`AttentionForward`, padded :class:`Encoded` and the rows' input
    positions, and returns one item per row). ``progress``: ``True`` for a tqdm bar, or a callback ``(batches_done, batches_total)``.
    """
    if batch_size < 1:
        raise TrojanScopeError(f"batch size must be at least 1, got {batch_size}")
    if tokenized is None:
        if texts is None:
            raise TrojanScopeError("no texts given")
        texts = list(texts)
        max_length = max_length or model_max_length_of(model, tokenizer)
        tokenized = tokenize(tokenizer, texts, spans, max_length)
    n = len(tokenized.input_ids)
    logits: np.ndarray | None = None  # allocated at the first batch that returns logits
    kept: list[Any] = [None] * n
    if n == 0:
        return ForwardResult(logits, kept, [], tokenized)
    device = next(model.parameters()).device
    batches = length_buckets([len(x) for x in tokenized.input_ids], batch_size)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batches), desc="forward", unit="batch", leave=False)
    was_training = model.training
    model.eval()
    try:
        for b, idx in enumerate(batches):
            enc = pad(tokenizer, tokenized, idx).to(device)
            with precision_context(device, precision):
                out = attention_forward(model, enc, attentions=attentions, hidden_states=hidden_states)
            if out.logits is not None:
                if logits is None:
                    logits = np.zeros((n, out.logits.shape[-1]), dtype=np.float32)
                logits[idx] = out.logits.float().cpu().numpy()
            if keep is not None:
                with torch.inference_mode():
                    rows = keep(out, enc, idx)
                if len(rows) != len(idx):
                    raise RuntimeError(f"keep returned {len(rows)} items for a batch of {len(idx)}")
                for i, item in zip(idx, rows):
                    kept[i] = item
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(b + 1, len(batches))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return ForwardResult(logits, kept, list(tokenized.truncated), tokenized)


def stack_kept(result: ForwardResult) -> torch.Tensor:
    """The kept items (tensors of one shape) as one ``[n, ...]`` float32 CPU tensor."""
    return torch.stack([torch.as_tensor(k).float().cpu() for k in result.kept])
