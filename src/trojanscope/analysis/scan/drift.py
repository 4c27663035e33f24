"""Attention abnormality, AttenTD's focus drift on every head (the package docstring, step 3): the focus heads on
clean text, and how often their focus moves onto a candidate vs onto control words inserted at the same places.
Attention is reduced on the fly inside the one batched forward: per text only ``[layers, heads]`` summaries."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from trojanscope.analysis.scan.sentences import _inserted
from trojanscope.data.poison import insert_trigger
from trojanscope.models.forward import batched_forward

if TYPE_CHECKING:
    from trojanscope.analysis.scan import Candidate, ScanConfig


@dataclass
class Abnormality:
    """Attention evidence for one candidate, per layer and head (layers 0-based here)."""

    trigger: str
    focus: np.ndarray  # [L, H] bool: focus heads on clean text
    drift: np.ndarray  # [L, H] share of sentences whose focus moves onto the candidate
    control_drift: np.ndarray  # [L, H] the same for random neutral words
    cls_mass: float  # mean [CLS] attention mass on the candidate (all layers and heads)
    control_cls_mass: float
    drift_share: float = 0.5  # a focus head drifts when its focus moves onto the candidate this often

    @property
    def drifting(self) -> np.ndarray:
        """Focus heads whose focus moves onto the candidate in ``drift_share`` of the sentences, more often
        than onto a control word."""
        return self.focus & (self.drift >= self.drift_share) & (self.drift > self.control_drift)

    @property
    def drift_excess(self) -> float:
        """Share of all heads that drift to the candidate, minus the share that drift to the control."""
        control = self.focus & (self.control_drift >= self.drift_share)
        return float(self.drifting.mean() - control.mean())

    @property
    def head_excess(self) -> np.ndarray:
        """[L, H]: per focus head, how much more often its focus moves onto the candidate than onto a control
        word (0 for heads that are not focus heads or drift no more than to the control)."""
        return np.clip(self.drift - self.control_drift, 0, None) * self.focus

    @property
    def cls_excess(self) -> float:
        return float(self.cls_mass - self.control_cls_mass)

    def to_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "drifting_share": float(self.drifting.mean()),
                "drift_excess": self.drift_excess, "cls_mass": self.cls_mass,
                "control_cls_mass": self.control_cls_mass, "focus_heads": int(self.focus.sum()),
                "drift": np.round(self.drift, 4).tolist(), "control_drift": np.round(self.control_drift, 4).tolist(),
                "focus": self.focus.astype(int).tolist(), "head_excess": np.round(self.head_excess, 4).tolist()}


def _focus_keep(out, enc, idx):
    """Per text: the most common argmax key over real queries per layer and head, its share of the queries,
    whether that key is a trigger token, and the [CLS] row's mass on trigger tokens (``[4, L, H]``)."""
    att = out.attentions.float()  # [B, L, H, T, T]
    rows = []
    for b in range(att.shape[0]):
        n = int(enc.attention_mask[b].sum())
        a = att[b, :, :, :n, :n]
        top = a.argmax(-1)  # [L, H, n]
        counts = torch.nn.functional.one_hot(top, n).sum(-2)  # [L, H, n]
        share, key = counts.max(-1)  # [L, H]
        trig = enc.trigger_mask[b, :n].bool()
        on_trigger = trig[key]  # [L, H]
        cls_mass = a[:, :, 0, :][:, :, trig].sum(-1) if trig.any() else torch.zeros_like(share, dtype=a.dtype)
        rows.append(torch.stack([share.float() / n, key.float(), on_trigger.float(), cls_mass.float()]))
    return rows


def _focus_summaries(loaded: Any, texts: Sequence[str], spans: Sequence[Sequence], cfg: ScanConfig) -> torch.Tensor:
    res = batched_forward(loaded.model, loaded.tokenizer, list(texts), [list(s) for s in spans], keep=_focus_keep,
                          attentions=True, batch_size=max(8, cfg.batch_size // 4),
                          max_length=min(128, loaded.max_length))
    return torch.stack(res.kept)  # [N, 4, L, H]


def attention_abnormality(loaded: Any, sentences: Sequence[str], cand: Candidate, control_words: Sequence[str],
                          cfg: ScanConfig) -> Abnormality:
    """Focus heads on ``sentences``, and how often their focus drifts onto ``cand`` vs onto control words."""
    clean = _focus_summaries(loaded, sentences, [[] for _ in sentences], cfg)
    focus = ((clean[:, 0] > cfg.focus_share).float().mean(0) >= cfg.focus_sentences).cpu().numpy()
    trig = _inserted(sentences, cand.trigger, cfg.seed, cand.combination)
    rng = random.Random(cfg.seed + 1)
    ctrl = [insert_trigger(s, rng.choice(control_words), 1, "random", rng=random.Random(cfg.seed * 7919 + j))
            for j, s in enumerate(sentences)]
    t = _focus_summaries(loaded, [x.text for x in trig], [x.spans for x in trig], cfg)
    c = _focus_summaries(loaded, [x.text for x in ctrl], [x.spans for x in ctrl], cfg)

    def drift(s: torch.Tensor) -> np.ndarray:
        return ((s[:, 2] > 0) & (s[:, 0] > cfg.focus_share)).float().mean(0).cpu().numpy()

    return Abnormality(cand.trigger, focus.astype(bool), drift(t), drift(c), float(t[:, 3].mean()),
                       float(c[:, 3].mean()), cfg.drift_share)
