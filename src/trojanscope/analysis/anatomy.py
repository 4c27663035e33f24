"""Trigger anatomy: star, planet, comet (methods.md 3b; seed section 7.2, Fig. 7 and 8).

Over a sample of sentences, each with the trigger inserted once at a random position:

- per trigger token, the mean [CLS] attention per layer (heads averaged), backdoored vs clean;
- **star**: the trigger token with the largest mean [CLS] attention over the upper half of the layers;
- for every other trigger token, remove it (token level) and measure the drop in flip rate
  (absolute) and in [CLS]-to-star attention over the upper layers (relative to the full trigger);
  **planet** when either drop reaches ``threshold`` (default 0.2), **comet** otherwise;
- the star alone: its flip rate and [CLS]-to-star attention;
- token-to-token attention inside the trigger: mean of the lower half of the layers and of the
  second-to-last layer (queries and keys both trigger tokens).

A *flip* is the backdoored model's prediction on the triggered sentence differing from its
prediction on the same sentence without the trigger.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import check_trigger, insert_trigger
from trojanscope.errors import TrojanScopeError
from trojanscope.models.forward import batched_forward
from trojanscope.models.loading import LoadedModel
from trojanscope.models.tokens import Tokenized, tokenize


@dataclass
class AnatomyConfig:
    n: int = 200
    threshold: float = 0.2
    seed: int = 0
    batch_size: int = 32


@dataclass
class TokenAnatomy:
    token: str
    index: int
    role: str  # star | planet | comet
    cls_attention: list[float]  # backdoored model, per layer
    cls_attention_clean: list[float] | None
    upper_attention: float
    flip_rate_without: float | None = None
    flip_drop: float | None = None
    star_attention_without: float | None = None
    star_attention_drop: float | None = None


@dataclass
class AnatomyResult:
    trigger: str
    tokens: list[TokenAnatomy]
    n: int
    flip_rate: float
    star_attention: float
    star_alone: dict[str, float]
    inner_attention: dict[str, list[list[float]]]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "AnatomyResult":
        """The result ``to_json`` wrote (e.g. an anatomy job's ``result.json``; keys beside it, such as the
        model's name, are left out)."""
        from dataclasses import fields

        own = {f.name for f in fields(cls)} - {"tokens"}
        return cls(**{k: v for k, v in d.items() if k in own}, tokens=[TokenAnatomy(**t) for t in d["tokens"]])


@dataclass
class _Pass:
    preds: np.ndarray  # [n]
    cls: np.ndarray  # [n, layers, positions of interest]
    inner: np.ndarray | None = None  # [n, layers, k, k]


class _Runner:
    """Forward passes on token-id sequences with chosen trigger positions, through the one batched
    forward; only the [CLS] rows (and the trigger-to-trigger block) of the attention are kept."""

    def __init__(self, loaded: LoadedModel, batch_size: int):
        self.loaded = loaded
        self.batch_size = batch_size

    def run(self, ids: list[list[int]], positions: list[list[int]], inner: bool = False) -> _Pass:
        tok = Tokenized([list(x) for x in ids], [[False] * len(x) for x in ids], [[False] * len(x) for x in ids],
                        [False] * len(ids))

        def keep(out, enc, idx):
            att = out.attentions.float().mean(2)  # heads averaged: [B, L, T, T]
            rows = []
            for b, r in enumerate(idx):
                pos = torch.tensor(positions[r], device=att.device)
                cls = att[b, :, 0, pos].cpu().numpy()
                rows.append((cls, att[b][:, pos][:, :, pos].cpu().numpy() if inner else None))
            return rows

        res = batched_forward(self.loaded.model, self.loaded.tokenizer, tokenized=tok, keep=keep, attentions=True,
                              batch_size=self.batch_size)
        return _Pass(res.preds, np.stack([k[0] for k in res.kept]),
                     np.stack([k[1] for k in res.kept]) if inner else None)


def trigger_anatomy(bd: LoadedModel, test: TextDataset, trigger: str, cfg: AnatomyConfig = AnatomyConfig(),
                    clean: LoadedModel | None = None,
                    progress: Callable[[float, str], None] | None = None) -> AnatomyResult:
    """Star / planet / comet for the tokens of ``trigger`` in the backdoored model ``bd``.
    ``progress(fraction, message)`` is called before each pass over the sentences."""
    bd.require("classify", "the trigger anatomy (flip rates)")
    bd.check_task(test, "the trigger anatomy")
    k = len(check_trigger(bd.tokenizer, trigger))
    rng = random.Random(cfg.seed)
    idx = list(range(len(test)))
    rng.shuffle(idx)
    texts = [test.texts[i] for i in idx[: cfg.n]]
    if not texts:
        raise TrojanScopeError("no sentences to analyse")
    inserted = [insert_trigger(t, trigger, 1, "random", rng) for t in texts]
    tok = tokenize(bd.tokenizer, [x.text for x in inserted], [x.spans for x in inserted], bd.max_length)
    base = tokenize(bd.tokenizer, texts, None, bd.max_length)
    # sentences where all k trigger tokens survived truncation (and tokenized as the trigger alone does)
    keep = [i for i in range(len(texts)) if sum(tok.trigger[i]) == k]
    if not keep:
        raise TrojanScopeError("the trigger's tokens were not found intact in any sentence (truncated away?)")
    ids = [tok.input_ids[i] for i in keep]
    trig_pos = [[p for p, t in enumerate(tok.trigger[i]) if t] for i in keep]
    pieces = bd.tokenizer.convert_ids_to_tokens([ids[0][p] for p in trig_pos[0]])
    runner = _Runner(bd, cfg.batch_size)
    passes = 2 + (clean is not None) + k  # base, full, clean's, one without each other token, the star alone
    done = [0]

    def tick(message: str) -> None:
        if progress is not None:
            progress(done[0] / passes, message)
        done[0] += 1

    tick("the sentences without the trigger")
    base_preds = runner.run([base.input_ids[i] for i in keep], [[0]] * len(keep)).preds
    tick("the sentences with the trigger")
    full = runner.run(ids, trig_pos, inner=True)
    n_layers = full.cls.shape[1]
    upper = slice(n_layers // 2, n_layers)
    lower = slice(0, max(1, n_layers // 2))
    mean_cls = full.cls.mean(0)  # [L, k]
    upper_att = mean_cls[upper].mean(0)  # [k]
    star = int(np.argmax(upper_att))
    flip_rate = float((full.preds != base_preds).mean())
    star_att = float(full.cls[:, upper, star].mean())
    clean_cls = None
    if clean is not None:
        tick("the clean model")
        ctok = tokenize(clean.tokenizer, [x.text for x in inserted], [x.spans for x in inserted], clean.max_length)
        cpos = [[p for p, t in enumerate(ctok.trigger[i]) if t] for i in keep]
        if all(len(p) == k for p in cpos):
            clean_cls = _Runner(clean, cfg.batch_size).run([ctok.input_ids[i] for i in keep], cpos).cls.mean(0)

    def without(drop: set[int]) -> tuple[float, float]:
        """Flip rate and upper-layer [CLS]-to-star attention with trigger tokens ``drop`` removed."""
        new_ids, star_pos = [], []
        for seq, pos in zip(ids, trig_pos):
            gone = {pos[j] for j in drop}
            new_ids.append([t for p, t in enumerate(seq) if p not in gone])
            star_pos.append([pos[star] - sum(1 for g in gone if g < pos[star])])
        res = runner.run(new_ids, star_pos)
        return float((res.preds != base_preds).mean()), float(res.cls[:, upper, 0].mean())

    tokens: list[TokenAnatomy] = []
    notes: list[str] = []
    for j in range(k):
        t = TokenAnatomy(pieces[j], j, "star" if j == star else "comet", mean_cls[:, j].round(6).tolist(),
                         None if clean_cls is None else clean_cls[:, j].round(6).tolist(), float(upper_att[j]))
        if j != star:
            tick(f"without token {j + 1} of {k} ({pieces[j]})")
            fr, sa = without({j})
            t.flip_rate_without, t.star_attention_without = fr, sa
            t.flip_drop = flip_rate - fr
            t.star_attention_drop = (star_att - sa) / star_att if star_att > 0 else 0.0
            t.role = "planet" if max(t.flip_drop, t.star_attention_drop) >= cfg.threshold else "comet"
        tokens.append(t)
    if k == 1:
        notes.append("the trigger is a single token: it is the star, and there is nothing else to classify")
        alone = {"flip_rate": flip_rate, "star_attention": star_att}
    else:
        tick("the star alone")
        fr, sa = without(set(range(k)) - {star})
        alone = {"flip_rate": fr, "star_attention": sa}
    second_to_last = max(0, n_layers - 2)
    inner = {"lower": full.inner[:, lower].mean((0, 1)).round(6).tolist(),
             "second_to_last": full.inner[:, second_to_last].mean(0).round(6).tolist()}
    return AnatomyResult(trigger, tokens, len(keep), flip_rate, star_att, alone, inner, notes)
