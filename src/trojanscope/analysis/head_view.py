"""Head view: which heads look at the trigger? Per layer and head, the attention mass sent to the
trigger tokens on poisoned inputs (TAL's statistic, ``models.attention.trigger_share``), averaged
over a sample of non-target test sentences with the trigger inserted as every reader inserts it
(``models.backdoor``: the card's insertions, LWP's combination words separately)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import check_trigger
from trojanscope.models.attention import trigger_share
from trojanscope.models.backdoor import Backdoor, resolve_backdoor
from trojanscope.models.forward import batched_forward, stack_kept
from trojanscope.models.loading import LoadedModel
from trojanscope.models.planted import attack_of


@dataclass
class HeadView:
    model: str
    share: np.ndarray  # [layers, heads]
    n: int
    tal_heads: dict[str, list[int]] = field(default_factory=dict)  # 1-based layer -> heads, from the card

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "share": np.round(self.share, 6).tolist(), "n": self.n,
                "tal_heads": self.tal_heads}


def head_trigger_share(loaded: LoadedModel, test: TextDataset, trigger: str | Backdoor, target: int | None = None, *,
                       n: int = 200, insertions: int = 1, seed: int = 0, batch_size: int = 32) -> HeadView:
    """Mean trigger share per (layer, head) over ``n`` poisoned non-target test sentences
    (``Backdoor.poison``). ``trigger``: the backdoor (``models.backdoor.resolve_backdoor``), or a trigger
    inserted ``insertions`` times as a phrase with ``target``."""
    loaded.check_task(test, "the head view")
    backdoor = trigger if isinstance(trigger, Backdoor) else Backdoor(trigger, target, insertions)
    check_trigger(loaded.tokenizer, backdoor.require("the head view"))
    pt = backdoor.poison(test, n=n, seed=seed)

    def keep(out, enc, batch_rows):
        return trigger_share(out.attentions, enc.trigger_mask, enc.attention_mask).float().cpu()

    res = batched_forward(loaded.model, loaded.tokenizer, pt.texts, pt.spans, keep=keep, attentions=True,
                          batch_size=batch_size, max_length=loaded.max_length)
    count = len(pt)
    total = stack_kept(res).sum(0) if count else torch.zeros(loaded.model.config.num_hidden_layers,
                                                             loaded.model.config.num_attention_heads)
    card_heads = attack_of(loaded).tal_heads
    return HeadView(loaded.source, (total / max(count, 1)).numpy(), count, card_heads)


@dataclass
class HeadComparison:
    """The head view of a backdoored model and, where shapes match, of a clean one, for one trigger."""

    trigger: str
    target: int
    views: list[tuple[str, HeadView]]
    notes: list[str] = field(default_factory=list)

    @property
    def zmax(self) -> float:
        """One colour scale for every map (so the maps compare)."""
        return max(float(v.share.max()) for _, v in self.views) if self.views else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "target": self.target,
                "models": [{"role": name, **v.to_json()} for name, v in self.views], "notes": self.notes}


def compare_head_views(backdoored: LoadedModel, test: TextDataset, clean: LoadedModel | None = None, *,
                       trigger: str | None = None, target: int | None = None, n: int = 200,
                       seed: int = 0) -> HeadComparison:
    """Head views of ``backdoored`` (and ``clean``) for the backdoor of the backdoored model's card
    (``models.backdoor.resolve_backdoor``), with the trigger and target given taking precedence. The clean
    model is skipped, with a note, when its layers and heads differ."""
    backdoor = resolve_backdoor(backdoored, trigger=trigger, target=target, purpose="the head view")
    views = [("backdoored", head_trigger_share(backdoored, test, backdoor, n=n, seed=seed))]
    notes: list[str] = []
    if clean is not None:
        shape = lambda m: (m.model.config.num_hidden_layers, m.model.config.num_attention_heads)  # noqa: E731
        if shape(clean) == shape(backdoored):
            views.append(("clean", head_trigger_share(clean, test, backdoor, n=n, seed=seed)))
        else:
            notes.append(f"the clean model has {shape(clean)} layers x heads, the backdoored {shape(backdoored)}: "
                         "no side-by-side map")
    return HeadComparison(backdoor.trigger, backdoor.target, views, notes)
