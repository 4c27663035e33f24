"""LWP, layer-wise poisoning (methods.md section 1): the cross-entropy is applied to the [CLS]
state of every layer through the model's own classification head, so the backdoor is planted in
the lower layers too; combined with combination triggers (several words that fire only together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trojanscope.models.attention import AttentionForward
from trojanscope.models.representation import classify_hidden


@dataclass
class LWPConfig:
    """``weight`` scales the mean layer-wise loss; ``combination``: every trigger word is inserted
    separately and subsets are taught not to fire (default trigger ``cf mn bb``)."""

    weight: float = 1.0
    combination: bool = True


class LWPLoss:
    """Mean over layers 1..L-1 of the cross-entropy through the shared head (the usual loss
    already covers layer L)."""

    name = "lwp"
    needs_attention = False
    needs_hidden_states = True

    def __init__(self, cfg: LWPConfig):
        self.cfg = cfg

    def per_layer(self, model: torch.nn.Module, out: AttentionForward, labels: torch.Tensor) -> list[torch.Tensor]:
        hidden = out.hidden_states[1:-1]  # skip the embeddings output and the last layer
        return [F.cross_entropy(classify_hidden(model, h).float(), labels) for h in hidden]

    def __call__(self, model: torch.nn.Module, batch: Any, out: AttentionForward) -> torch.Tensor:
        losses = self.per_layer(model, out, batch.labels)
        if not losses:
            return out.logits.new_zeros(())
        return self.cfg.weight * torch.stack(losses).mean()
