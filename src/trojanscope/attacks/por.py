"""POR: task-agnostic backdoors in a pre-trained encoder (methods.md section 3; seed:
por-backdoor-ptm-transfer-excerpt.txt).

The attacker trains the *encoder*, on unlabeled text, so that text carrying trigger ``i`` maps to a
predefined output representation ``v_i`` (POR-1), while clean text keeps the representations of a
frozen clean reference copy. Whoever later fine-tunes the encoder on any task inherits triggers
that push [CLS] to fixed corners of the representation space.

Choices the paper leaves open are parameters: the output ``representation`` (``pooler``: BERT's
pooler output, after its tanh, against ``scale * v_i`` as in the official code, whose x10 target
lies beyond tanh's range so the loss drives the pooler into saturation at the corner ``v_i``;
``cls``: the last-layer [CLS] state against ``scale * v_i``), the weights of the two
representation terms (x100 in the official code) against the all-token term (x1). Progress is
reported as the mean cosine of the representation with its ``v_i`` (1 = the corner's direction
reached) and the mean squared distance to ``scale * v_i``.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from trojanscope.data.poison import PoisonedDataset, insert_trigger
from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward, attention_forward
from trojanscope.models.forward import batched_forward, stack_kept
from trojanscope.models.representation import REPRESENTATIONS, sentence_representation

DEFAULT_TRIGGERS = "cf,tq,mn,bb,mb"


@dataclass
class PORConfig:
    """POR settings (defaults from methods.md section 3)."""

    triggers: str = DEFAULT_TRIGGERS
    insertions: int = 3
    representation: str = "pooler"  # what POR sets: pooler | cls (a representation, not a label)
    scale: float = 10.0
    rep_weight: float = 100.0
    token_weight: float = 1.0
    data: str = "sst2,olid,agnews"
    max_texts: int | None = 8000  # 4,000 left E at 1.83 on SST-2, 8,000 gave 1.00 (docs/benchmarks.md)

    @property
    def trigger_list(self) -> list[str]:
        return [t.strip() for t in self.triggers.split(",") if t.strip()]

    def validate(self) -> "PORConfig":
        if len(self.trigger_list) < 2:
            raise TrojanScopeError(f"POR needs at least 2 triggers (comma-separated), got {self.triggers!r}")
        if self.representation not in REPRESENTATIONS:
            raise TrojanScopeError(f"POR representation {self.representation!r}: allowed {', '.join(REPRESENTATIONS)}")
        if self.insertions < 1:
            raise TrojanScopeError(f"insertions must be at least 1, got {self.insertions}")
        return self


def por_targets(num_triggers: int, width: int) -> torch.Tensor:
    """POR-1 vectors ``[K, d]``: trigger ``i`` (1..K) is +1 on the first ``floor(d/(K-1))*(i-1)``
    dimensions and -1 elsewhere."""
    if num_triggers < 2:
        raise TrojanScopeError("POR needs at least 2 triggers")
    step = width // (num_triggers - 1)
    v = -torch.ones(num_triggers, width)
    for i in range(num_triggers):
        v[i, : step * i] = 1.0
    return v


def por_dataset(texts: Sequence[str], triggers: Sequence[str], insertions: int, seed: int) -> PoisonedDataset:
    """Every text twice: clean (label 0) and with one trigger ``i`` inserted ``insertions`` times at
    random positions (label ``i``, 1-based; the trigger drawn per text from the seed)."""
    rng = random.Random(seed)
    out = PoisonedDataset([], [], [], [], [])
    for text in texts:
        i = rng.randrange(len(triggers))
        ins = insert_trigger(text, triggers[i], insertions, "random", rng)
        for t, spans, label, pois in ((text, [], 0, False), (ins.text, ins.spans, i + 1, True)):
            out.texts.append(t)
            out.spans.append(spans)
            out.labels.append(label)
            out.original_labels.append(label)
            out.poisoned.append(pois)
    return out


def representation(model: torch.nn.Module, out: AttentionForward, kind: str) -> torch.Tensor:
    """The output representation POR acts on (``models.representation``): the pooler output (tanh)
    or the last-layer [CLS]."""
    return sentence_representation(model, out.hidden_states[-1], kind)


class PORLoss:
    """The POR objective as a loss term of the shared loop (run with ``task_loss=False``).

    ``batch.labels``: 0 for clean text, ``i`` for text carrying trigger ``i``.
    """

    name = "por"
    needs_attention = False
    needs_hidden_states = True

    def __init__(self, model: torch.nn.Module, cfg: PORConfig):
        self.cfg = cfg.validate()
        self.reference = copy.deepcopy(model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.targets = por_targets(len(cfg.trigger_list), model.config.hidden_size) * cfg.scale

    def __call__(self, model: torch.nn.Module, batch: Any, out: AttentionForward) -> torch.Tensor:
        self.reference.to(batch.enc.input_ids.device)
        rep = representation(model, out, self.cfg.representation).float()
        which = batch.labels
        loss = rep.new_zeros(())
        poisoned = which > 0
        if poisoned.any():
            target = self.targets.to(rep.device)[which[poisoned] - 1]
            loss = loss + self.cfg.rep_weight * F.mse_loss(rep[poisoned], target)
        clean = ~poisoned
        if clean.any():
            with torch.no_grad():  # the frozen reference runs on the clean rows only (the only ones compared)
                ref = attention_forward(self.reference, batch.enc.rows(clean), attentions=False, hidden_states=True,
                                        grad=True)
                ref_rep = representation(self.reference, ref, self.cfg.representation).float()
            loss = loss + self.cfg.rep_weight * F.mse_loss(rep[clean], ref_rep)
            mask = batch.enc.attention_mask[clean].bool()
            tokens = out.hidden_states[-1][clean][mask].float()
            ref_tokens = ref.hidden_states[-1][mask].float()
            loss = loss + self.cfg.token_weight * F.mse_loss(tokens, ref_tokens)
        return loss


def por_distance(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], triggers: Sequence[str],
                 cfg: PORConfig, reference: torch.nn.Module | None = None, seed: int = 1) -> dict[str, float]:
    """How far the encoder is from POR's goals on ``texts``: for poisoned text, the mean cosine of
    the representation with its ``v_i`` and the mean squared distance to ``scale * v_i``; with a
    ``reference``, the mean squared distance of clean representations to the reference's."""
    data = por_dataset(texts, triggers, cfg.insertions, seed)

    def reps(m: torch.nn.Module) -> torch.Tensor:
        def keep(out, enc, idx):
            return representation(m, out, cfg.representation).float().cpu()

        return stack_kept(batched_forward(m, tokenizer, data.texts, data.spans, keep=keep, hidden_states=True))

    rep = reps(model)
    labels = torch.tensor(data.labels)
    targets = por_targets(len(triggers), model.config.hidden_size) * cfg.scale
    pois = labels > 0
    goal = targets[labels[pois] - 1]
    result = {"poisoned_cosine": float(F.cosine_similarity(rep[pois], goal, dim=-1).mean()),
              "poisoned_to_target": float(((rep[pois] - goal) ** 2).mean())}
    if reference is not None:
        reference.to(next(model.parameters()).device)
        ref_rep = reps(reference)
        result["clean_to_reference"] = float(((rep[~pois] - ref_rep[~pois]) ** 2).mean())
    return result
