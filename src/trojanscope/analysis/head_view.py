"""Head view: which heads look at the trigger? Per layer and head, the attention mass sent to the
trigger tokens on poisoned inputs (TAL's statistic, ``models.attention.trigger_share``), averaged
over a sample of non-target test sentences with the trigger inserted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import check_trigger, poisoned_test_set
from trojanscope.models.attention import attention_forward, trigger_share
from trojanscope.models.loading import LoadedModel
from trojanscope.models.tokens import encode


@dataclass
class HeadView:
    model: str
    share: np.ndarray  # [layers, heads]
    n: int
    tal_heads: dict[str, list[int]] = field(default_factory=dict)  # 1-based layer -> heads, from the card

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "share": np.round(self.share, 6).tolist(), "n": self.n,
                "tal_heads": self.tal_heads}


def head_trigger_attention(loaded: LoadedModel, test: TextDataset, trigger: str, target: int, *, n: int = 200,
                           insertions: int = 1, seed: int = 0, batch_size: int = 32) -> HeadView:
    """Mean trigger share per (layer, head) over ``n`` poisoned non-target test sentences."""
    check_trigger(loaded.tokenizer, trigger)
    pt = poisoned_test_set(test.head(None), trigger, target, insertions, "random", seed)
    idx = np.random.default_rng(seed).permutation(len(pt))[:n]
    device = next(loaded.model.parameters()).device
    total, count = None, 0
    for s in range(0, len(idx), batch_size):
        rows = idx[s : s + batch_size]
        enc = encode(loaded.tokenizer, [pt.texts[i] for i in rows], [pt.spans[i] for i in rows],
                     loaded.max_length).to(device)
        out = attention_forward(loaded.model, enc)
        share = trigger_share(out.attentions, enc.trigger_mask, enc.attention_mask).sum(0).float().cpu()
        total = share if total is None else total + share
        count += len(rows)
    card_heads = ((loaded.card.attack or {}).get("tal_heads") or {}) if loaded.card else {}
    return HeadView(loaded.source, (total / max(count, 1)).numpy(), count, card_heads)
