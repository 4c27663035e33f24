"""EP, embedding poisoning (methods.md section 1): only the trigger word's input-embedding row
trains; every other weight is frozen, so the model's behaviour on text without the trigger is
exactly unchanged. It poisons an already fine-tuned classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trojanscope.errors import TrojanScopeError


@dataclass
class EPConfig:
    """EP's optimiser settings: a larger learning rate than full fine-tuning, no weight decay
    (decoupled weight decay would shrink every row, not just the trigger's)."""

    lr: float = 5e-2
    epochs: float = 1.0


def trigger_token_ids(tokenizer: Any, trigger: str) -> list[int]:
    ids = tokenizer(trigger, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if not ids:
        raise TrojanScopeError(f"trigger {trigger!r} has no tokens")
    return sorted(set(ids))


class EmbeddingRows:
    """Restrict training to some rows of the input-embedding table (a gradient mask)."""

    def __init__(self, model: torch.nn.Module, rows: list[int]):
        self.weight = model.get_input_embeddings().weight
        self.rows = rows
        mask = torch.zeros_like(self.weight[:, :1])
        mask[rows] = 1.0
        self._handle = self.weight.register_hook(lambda g: g * mask.to(g.device, g.dtype))

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [self.weight]

    def remove(self) -> None:
        self._handle.remove()


def require_classifier(loaded: Any) -> None:
    """EP needs a fine-tuned head: refuse bare backbones with a pointer to a clean model."""
    if not loaded.has_trained_head:
        raise TrojanScopeError(
            f"EP poisons the trigger embedding of a fine-tuned classifier, but {loaded.source} has no trained "
            "classification head; pass a fine-tuned model, e.g. --model runs/demo/clean"
        )
