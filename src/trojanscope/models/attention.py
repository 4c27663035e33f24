"""The one attention-extraction path (design.md, "one path for attention").

``attention_forward`` runs a classifier on an encoded batch and returns logits plus every layer's
post-softmax attention as one ``[batch, layers, heads, seq, seq]`` tensor, differentiable when
asked (TAL, MBTSAD). ``extract_attention`` wraps it for readers (probe, anatomy, scanner): texts
in; attention, predictions, probabilities, token strings and trigger/special masks out, as NumPy.

Two measures of "attention on the trigger", with different names because they answer different
questions:

* ``trigger_share(attentions, trigger_mask, attention_mask)`` -> ``[batch, layers, heads]``: per
  layer and head, the attention mass sent to trigger keys, averaged over **all real (non-padding)
  queries**. TAL's statistic (``attacks.tal``) and the head view's (``analysis.head_view``).
* ``cls_trigger_mass`` (``AttentionResult.cls_trigger_mass(i)``, ``analysis.probe.ProbeSide
  .cls_trigger_mass()``, JSON key ``"cls_trigger_mass"``) -> ``[layers]``: per layer, the attention
  mass that **the [CLS] query alone** puts on the trigger tokens, heads averaged unless one head is
  picked. What [CLS], and so the classifier, reads from the trigger (the Probe's curve).

Both are sums of softmax rows over trigger keys, so both lie in [0, 1]; they coincide only when
every query attends like [CLS].
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.tokens import Encoded, Span, model_max_length_of


@dataclass
class AttentionForward:
    logits: torch.Tensor | None  # [batch, labels]; None for a bare encoder
    attentions: torch.Tensor | None  # [batch, layers, heads, seq, seq]
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings output, then every layer
    output: Any = None  # the model's own output object (pooler_output, last_hidden_state, ...)


def attention_forward(
    model: torch.nn.Module,
    batch: Encoded,
    *,
    grad: bool = False,
    attentions: bool = True,
    hidden_states: bool = False,
) -> AttentionForward:
    """Forward pass returning logits plus attention probabilities (eager attention required)
    and, when asked, every layer's hidden states. ``grad=True`` keeps the graph (TAL, LWP,
    distillation); otherwise it runs under ``inference_mode``."""
    if attentions:
        config = getattr(getattr(model, "module", model), "config", None)  # (a DDP wrapper keeps it on .module)
        impl = getattr(config, "_attn_implementation", "eager")
        if impl not in (None, "eager"):
            raise TrojanScopeError(
                f"attention can only be read with eager attention, but the model uses {impl!r}; "
                "load it with trojanscope.models.load_model"
            )
    ctx = contextlib.nullcontext() if grad else torch.inference_mode()
    with ctx:
        out = model(
            **batch.model_inputs(),
            output_attentions=attentions,
            output_hidden_states=hidden_states,
            return_dict=True,
        )
    att = None
    if attentions:
        if not out.attentions:
            raise TrojanScopeError(f"{type(model).__name__} returned no attentions")
        att = torch.stack(tuple(out.attentions), dim=1)
    return AttentionForward(getattr(out, "logits", None), att, out.hidden_states if hidden_states else None, out)


def trigger_share(attentions: torch.Tensor, trigger_mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per sample, layer and head: the attention mass sent to trigger keys, averaged over the
    real (non-padding) queries: ``[batch, layers, heads]``, each between 0 and 1.

    This is TAL's ``tal`` before the mean over chosen heads (methods.md section 2) and the head
    view's statistic; differentiable.
    """
    to_trigger = (attentions * trigger_mask[:, None, None, None, :].to(attentions.dtype)).sum(-1)  # [B, L, H, Q]
    q = attention_mask[:, None, None, :].to(attentions.dtype)
    return (to_trigger * q).sum(-1) / q.sum(-1).clamp_min(1.0)


@dataclass
class AttentionResult:
    """Attention and predictions for a list of texts (NumPy, padded to the longest text).

    ``attentions[i, l, k, q, t]``: text ``i``, layer ``l``, head ``k``, query ``q``, key ``t``.
    ``tokens[i]`` has the unpadded token strings; ``lengths[i]`` their number.
    """

    texts: list[str]
    tokens: list[list[str]]
    attentions: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    trigger_mask: np.ndarray
    special_mask: np.ndarray
    lengths: np.ndarray
    truncated: list[bool]

    @property
    def num_layers(self) -> int:
        return int(self.attentions.shape[1])

    @property
    def num_heads(self) -> int:
        return int(self.attentions.shape[2])

    def cls_attention(self, i: int, head: int | None = None) -> np.ndarray:
        """[CLS] (first position) attention to every real token of text ``i``: ``[layers, tokens]``,
        heads averaged unless ``head`` is given."""
        n = int(self.lengths[i])
        a = self.attentions[i, :, :, 0, :n]
        return a.mean(axis=1) if head is None else a[:, head]

    def cls_trigger_mass(self, i: int, head: int | None = None) -> np.ndarray:
        """Per layer, the [CLS] query's attention mass on the trigger tokens of text ``i``
        (``[layers]``, heads averaged unless ``head`` is given); not ``trigger_share`` (see the module docstring)."""
        n = int(self.lengths[i])
        return self.cls_attention(i, head)[:, self.trigger_mask[i, :n]].sum(axis=1)


def extract_attention(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    trigger_spans: Sequence[Sequence[Span]] | None = None,
    *,
    max_length: int | None = None,
    batch_size: int = 16,
) -> AttentionResult:
    """Attention, predictions and token metadata for ``texts`` (no gradients), through the one
    batched forward (``models.forward.batched_forward``). Meant for a few texts (the probe): it
    keeps every text's full ``[layers, heads, seq, seq]``; readers of many texts reduce on the fly."""
    from trojanscope.models.forward import batched_forward

    texts = list(texts)
    if not texts:
        raise TrojanScopeError("no texts given")
    max_length = max_length or model_max_length_of(model, tokenizer)

    def keep(out: AttentionForward, enc: Encoded, idx: list[int]) -> list[np.ndarray]:
        lens = enc.attention_mask.sum(1).tolist()
        att = out.attentions.float().cpu().numpy()
        return [att[j, :, :, : lens[j], : lens[j]] for j in range(len(idx))]

    res = batched_forward(model, tokenizer, texts, trigger_spans, keep=keep, attentions=True,
                          batch_size=batch_size, max_length=max_length)
    if res.logits is None:
        raise TrojanScopeError(f"{type(model).__name__} has no classification head; extract_attention needs a "
                               "classifier")
    tok = res.tokenized
    lengths = np.array([len(x) for x in tok.input_ids], dtype=np.int64)
    width = int(lengths.max())
    n_l, n_h = res.kept[0].shape[:2]
    att = np.zeros((len(texts), n_l, n_h, width, width), dtype=np.float32)
    trig = np.zeros((len(texts), width), dtype=bool)
    spec = np.ones((len(texts), width), dtype=bool)
    tokens: list[list[str]] = []
    for i, a in enumerate(res.kept):
        n = int(lengths[i])
        att[i, :, :, :n, :n] = a
        trig[i, :n] = tok.trigger[i]
        spec[i, :n] = tok.special[i]
        tokens.append(tokenizer.convert_ids_to_tokens(tok.input_ids[i]))
    probs = res.probs
    return AttentionResult(texts, tokens, att, probs.argmax(-1), probs, trig, spec, lengths, list(res.truncated))
