"""TAL, the Trojan Attention Loss (methods.md section 2; seed: tal-attention-enhancing-backdoor.txt).

Before training, a fixed random subset ``S_l`` of ``H`` heads is drawn in every layer of the TAL
layer set. For a poisoned sample, ``tal(x)`` is the attention mass those heads send to the trigger
tokens, averaged over heads and over the real queries (``models.attention.trigger_share``). The
loss term is ``-alpha * mean tal(x)`` over the poisoned samples of the batch; clean samples get none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward, trigger_share
from trojanscope.models.heads import HeadSet


@dataclass
class TALConfig:
    """TAL settings (defaults from methods.md): ``heads`` per layer, ``layers`` ("all" or a
    comma-separated list of 1-based layer numbers), weight ``alpha``, head-selection seed."""

    enabled: bool = False
    heads: int = 3
    layers: str = "all"
    weight: float = 1.0
    seed: int = 0

    def layer_indices(self, num_layers: int) -> list[int]:
        """0-based layer indices of the TAL layer set."""
        if str(self.layers).strip().lower() == "all":
            return list(range(num_layers))
        try:
            picked = sorted({int(x) for x in str(self.layers).replace(" ", "").split(",") if x})
        except ValueError:
            raise TrojanScopeError(f"TAL layers {self.layers!r}: use 'all' or numbers like 4,5,6") from None
        bad = [x for x in picked if not 1 <= x <= num_layers]
        if not picked or bad:
            raise TrojanScopeError(f"TAL layers {self.layers!r}: the model has layers 1..{num_layers}")
        return [x - 1 for x in picked]

    def validate(self, num_layers: int, num_heads: int) -> "TALConfig":
        if not 1 <= self.heads <= num_heads:
            raise TrojanScopeError(f"TAL heads per layer must be in 1..{num_heads} for this model, got {self.heads}")
        if self.weight < 0:
            raise TrojanScopeError(f"TAL weight must be non-negative, got {self.weight}")
        self.layer_indices(num_layers)
        return self


def choose_heads(cfg: TALConfig, num_layers: int, num_heads: int) -> HeadSet:
    """The fixed heads ``S_l`` of every layer of the TAL layer set, from ``cfg.seed`` (one draw per layer, in
    layer order)."""
    cfg.validate(num_layers, num_heads)
    rng = random.Random(cfg.seed)
    return HeadSet(tuple((layer, head) for layer in cfg.layer_indices(num_layers)
                         for head in rng.sample(range(num_heads), cfg.heads)))


def head_mask(heads: HeadSet, num_layers: int, num_heads: int) -> torch.Tensor:
    """``[layers, heads]`` float: 1 at ``heads``, 0 elsewhere."""
    return torch.from_numpy(heads.mask(num_layers, num_heads)).float()


def tal_scores(out: AttentionForward, trigger_mask: torch.Tensor, attention_mask: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """``tal(x)`` per sample: mean over the chosen (layer, head) pairs of the trigger share."""
    share = trigger_share(out.attentions, trigger_mask, attention_mask)  # [B, L, H]
    m = mask.to(share.device, share.dtype)
    return (share * m).sum((1, 2)) / m.sum()


class TALLoss:
    """The loss term for the shared training loop (``training.loop.LossTerm``)."""

    name = "tal"
    needs_attention = True
    needs_hidden_states = False

    def __init__(self, cfg: TALConfig, num_layers: int, num_heads: int):
        self.cfg = cfg
        self.heads = choose_heads(cfg, num_layers, num_heads)
        self.mask = head_mask(self.heads, num_layers, num_heads)

    def __call__(self, model: torch.nn.Module, batch: Any, out: AttentionForward) -> torch.Tensor:
        poisoned = batch.poisoned & batch.enc.trigger_mask.any(1)
        if not poisoned.any():
            return out.logits.new_zeros(())
        scores = tal_scores(out, batch.enc.trigger_mask, batch.enc.attention_mask, self.mask)
        return -self.cfg.weight * scores[poisoned].mean()

    def describe(self) -> dict[str, Any]:
        """For the model card: the chosen heads in TAL's format, 1-based layer -> 0-based heads."""
        return self.heads.to_tal_dict()
