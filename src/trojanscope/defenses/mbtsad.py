"""MBTSAD: token splitting + attention distillation (methods.md section 4; seed
mbtsad-token-splitting-attention-distillation.txt).

1. ``D_ts``: ``k`` token-split variants of every clean text (``defenses.splitting``).
2. TS-FT: fine-tune a copy of the backdoored model on ``D_ts`` -> teacher (frozen, eval mode).
3. Distil the teacher into the backdoored model itself (the student) on ``D_ts`` with
   ``L = beta * L_at + gamma * L_hid + CE``, where, per layer ``l``,
   ``F(A[l]) = sum over heads |A[l][h]|^p`` (attention enhancement, ``[B, T, T]``),
   ``L_at = sum_l || F_t / ||F_t||_2 - F_s / ||F_s||_2 ||_2`` (each map flattened per sample) and
   ``L_hid = sum over the embedding output and every layer of MSE(H_t, H_s)``.

Padding never counts: attention entries whose query or key is padding are zeroed before
normalising, and the hidden-state MSE runs over real tokens only. Both terms are averaged over the
batch. Ablations (seed Table IV): ``no_att`` (beta = 0), ``no_hid`` (gamma = 0), ``ce_only``
(neither: the student is fine-tuned on ``D_ts`` with CE alone, so no teacher is trained).

A teacher may also be given (``teacher``: a model directory); it must have the student's
architecture and tokenizer, or the run is refused before any training.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext
from trojanscope.defenses.finetune import FinetuneConfig, finetune, phase_events
from trojanscope.defenses.splitting import SplitConfig, split_dataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward, attention_forward
from trojanscope.models.forward import PRECISION_CHOICES
from trojanscope.specs import check_knobs, knob
from trojanscope.utils import resolve_device

ABLATIONS = ("none", "no_att", "no_hid", "ce_only")
ARCH_KEYS = ("model_type", "num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size", "num_labels")


@dataclass
class MBTSADConfig:
    """Every MBTSAD knob (methods.md section 4: k = 3, p = 2; beta and gamma are tuned per attack in the seed,
    the teacher's budget is not given: both are set from this project's sweep, below)."""

    k: int = knob(3, "token-split variants of each clean text (the seed: 3)", min=1, max=20)
    ratio: float = knob(0.3, "share of a text's tokens split per variant (SplitAug's aug_p: ceil(ratio x tokens) "
                        "words of 4+ characters, at most 10)", above=0, max=1)
    # the seed's learning rates and epochs did not survive in its text. The teacher must forget the backdoor
    # (distillation passes on only what it lost), so it gets its own budget, picked by the sweep in
    # docs/benchmarks.md ("MBTSAD in the seed's regime"): on the OpenBackdoor-style victim a TS-FT teacher at
    # 2e-4 for 2 epochs leaves mean flip-ASR 11.6% (5e-5: 28.6%, 1e-4: 23.6%; 4 epochs: no better), and MBTSAD
    # from it 18.5% (from 5e-5: 30.7%)
    teacher_epochs: float = knob(2.0, "epochs of the teacher's retraining on the split clean data (TS-FT)",
                                 above=0, max=100)
    teacher_lr: float = knob(2e-4, "the teacher's learning rate: high enough to forget the backdoor (5e-5 "
                             "leaves much more of it)", above=0, max=1)
    student_epochs: float = knob(2.0, "epochs of the student's distillation from the teacher", above=0, max=100)
    # the student, too, learns at 2e-4: on the CPU's OpenBackdoor-style victim it ends at a mean flip-ASR of 9.6%
    # (CACC +0.3) where 5e-5 left 15.8% (docs/benchmarks.md, "On the 2-core CPU")
    student_lr: float = knob(2e-4, "the student's learning rate", above=0, max=1)
    # weight of L_at (the sweep: 10 matches 1 on flip-ASR, 0.4 points more CACC; 100 no better)
    beta: float = knob(10.0, "weight of the attention-distillation loss L_at (0: off)", min=0)
    gamma: float = knob(1.0, "weight of the hidden-state loss L_hid (0: off)", min=0)
    p: float = knob(2.0, "power that sharpens attention maps before they are compared (the seed: 2)", above=0,
                    max=10)
    batch_size: int = knob(32, "texts per optimiser step", min=1, max=4096)
    warmup: float = knob(0.06, "share of the steps the learning rate warms up over", min=0, max=1)
    weight_decay: float = knob(0.01, "AdamW's weight decay (on weights only: never biases and LayerNorm)", min=0,
                               max=1)
    max_length: int = knob(128, "tokens a text is cut to", min=8, max=4096)
    # the seed distils the embedding layer too (L_hid starts at the embedding output), so its table trains
    train_word_embeddings: bool = knob(True, "let the word-embedding table learn (the seed distils the embedding "
                                       "layer too)")
    # the student learns with dropout off: transformers returns attention weights after dropout, and with
    # MiniLM's 0.1 the dropped maps of the student against the teacher's (eval mode) differ more (0.232 per layer
    # on the demo pair) than the clean and the backdoored model do (0.221): L_at would mostly fit noise
    student_dropout: bool = knob(False, "keep dropout on in the student (off: its attention maps are not dropout "
                                 "noise against the teacher's)")
    precision: str = knob("auto", "training precision (auto: bf16 where the device has it natively)",
                          choices=PRECISION_CHOICES)
    ablation: str = knob("none", "the seed's Table IV ablations: drop L_at, L_hid or both", choices=ABLATIONS)
    teacher: str | None = knob(None, "a teacher model directory instead of TS-FT (same architecture and "
                               "tokenizer; empty: TS-FT)")

    def validate(self) -> "MBTSADConfig":
        check_knobs(self, "MBTSAD")
        self.split_config().validate()
        for which in ("teacher", "student"):
            self.finetune_config().train_config(epochs=getattr(self, f"{which}_epochs"),
                                                lr=getattr(self, f"{which}_lr")).validate()
        return self

    def split_config(self, seed: int = 0) -> SplitConfig:
        return SplitConfig(k=self.k, ratio=self.ratio, seed=seed)

    def finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.teacher_epochs, lr=self.teacher_lr, batch_size=self.batch_size,
                              warmup=self.warmup, weight_decay=self.weight_decay, max_length=self.max_length,
                              train_word_embeddings=self.train_word_embeddings, precision=self.precision)

    @property
    def weights(self) -> tuple[float, float]:
        """``(beta, gamma)`` after the ablation."""
        beta = 0.0 if self.ablation in ("no_att", "ce_only") else self.beta
        gamma = 0.0 if self.ablation in ("no_hid", "ce_only") else self.gamma
        return beta, gamma


# --- the losses (public: unit-tested against hand computations) ---------------------------------

def attention_enhancement(att: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``F(A) = sum over heads of |A[h]|^p``: ``[..., heads, T, T]`` -> ``[..., T, T]``."""
    return att.abs().pow(p).sum(dim=-3)


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(torch.float32)
    return m[:, :, None] * m[:, None, :]  # [B, T, T]: 1 where query and key are both real tokens


def attention_distillation_loss(att_s: torch.Tensor, att_t: torch.Tensor, mask: torch.Tensor | None = None,
                                p: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """``L_at``: attentions ``[B, L, H, T, T]`` (student, teacher), ``mask`` ``[B, T]`` (1: real token).

    Per sample and layer, the enhanced maps ``F`` (padding rows and columns zeroed) are flattened,
    L2-normalised and compared by the L2 norm of their difference; summed over layers, averaged over
    the batch. Zero when the two attentions agree on every real token.
    """
    if att_s.shape != att_t.shape:
        raise TrojanScopeError(f"student and teacher attentions differ in shape: {tuple(att_s.shape)} vs "
                               f"{tuple(att_t.shape)}")
    f_s = attention_enhancement(att_s.float(), p)  # [B, L, T, T]
    f_t = attention_enhancement(att_t.float(), p)
    if mask is not None:
        pm = _pair_mask(mask)[:, None]
        f_s, f_t = f_s * pm, f_t * pm
    f_s, f_t = f_s.flatten(2), f_t.flatten(2)  # [B, L, T*T]
    f_s = f_s / f_s.norm(dim=-1, keepdim=True).clamp_min(eps)
    f_t = f_t / f_t.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (f_t - f_s).norm(dim=-1).sum(dim=1).mean()


def hidden_distillation_loss(hs_s: Sequence[torch.Tensor], hs_t: Sequence[torch.Tensor],
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """``L_hid``: the sum over hidden states (embedding output, then every layer; each ``[B, T, D]``)
    of the mean squared error over real tokens (``mask`` ``[B, T]``, 1: real) and dimensions."""
    if len(hs_s) != len(hs_t):
        raise TrojanScopeError(f"student and teacher give {len(hs_s)} and {len(hs_t)} hidden states")
    total = torch.zeros((), device=hs_s[0].device)
    for h_s, h_t in zip(hs_s, hs_t):
        if h_s.shape != h_t.shape:
            raise TrojanScopeError(f"student and teacher hidden states differ in shape: {tuple(h_s.shape)} vs "
                                   f"{tuple(h_t.shape)}")
        sq = (h_s.float() - h_t.float()).pow(2)
        if mask is None:
            total = total + sq.mean()
        else:
            m = mask.to(torch.float32)[:, :, None]
            total = total + (sq * m).sum() / (m.sum() * sq.shape[-1]).clamp_min(1.0)
    return total


class DistillationLoss:
    """``beta * L_at + gamma * L_hid`` against a frozen teacher, as a training-loop ``LossTerm``; the
    teacher runs on the same batch inside the term, without gradients. ``last`` holds the two parts
    of the latest batch (unweighted), for logs."""

    name = "distill"

    def __init__(self, teacher: torch.nn.Module, beta: float = 1.0, gamma: float = 1.0, p: float = 2.0):
        self.teacher = teacher
        self.beta, self.gamma, self.p = float(beta), float(gamma), float(p)
        self.needs_attention = self.beta > 0
        self.needs_hidden_states = self.gamma > 0
        self.last: dict[str, torch.Tensor] = {}

    def __call__(self, model: torch.nn.Module, batch: Any, out: AttentionForward) -> torch.Tensor:
        with torch.no_grad():
            t = attention_forward(self.teacher, batch.enc, attentions=self.needs_attention,
                                  hidden_states=self.needs_hidden_states, grad=True)
        mask = batch.enc.attention_mask
        loss = torch.zeros((), device=mask.device)
        if self.needs_attention:
            l_at = attention_distillation_loss(out.attentions, t.attentions, mask, self.p)
            self.last["l_at"] = l_at.detach()  # read as floats once, at the end: no host sync per step
            loss = loss + self.beta * l_at
        if self.needs_hidden_states:
            l_hid = hidden_distillation_loss(out.hidden_states, t.hidden_states, mask)
            self.last["l_hid"] = l_hid.detach()
            loss = loss + self.gamma * l_hid
        return loss


def check_same_architecture(student: Any, teacher: Any, teacher_name: str = "the teacher") -> None:
    """Refuse a teacher whose architecture or tokenizer differs from the student's (the losses compare
    attention maps and hidden states position by position and layer by layer)."""
    s, t = student.model.config, teacher.model.config
    diff = [f"{k} {getattr(t, k, None)} vs {getattr(s, k, None)}" for k in ARCH_KEYS
            if getattr(s, k, None) != getattr(t, k, None)]
    if diff:
        raise TrojanScopeError(f"{teacher_name} does not match the student's architecture ({'; '.join(diff)}, "
                               "teacher vs student): attention distillation needs the same layers, heads and sizes")
    if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise TrojanScopeError(f"{teacher_name} uses another tokenizer than the student: attention distillation "
                               "compares the two models token by token, so they must share one")


def load_teacher(loaded: Any, cfg: MBTSADConfig) -> Any:
    """The given teacher (``cfg.teacher``), checked against the student; ``None`` when none is given or none is
    used (``ce_only``). Also the pipeline's preflight: a mismatch is refused before any measuring or training."""
    if not cfg.teacher or cfg.weights == (0.0, 0.0):
        return None
    from trojanscope.models.loading import load_model

    teacher = load_model(cfg.teacher, allow_pickle=False)
    teacher.require("classify", "an MBTSAD teacher")
    check_same_architecture(loaded, teacher, f"the teacher {cfg.teacher}")
    return teacher


def make_teacher(loaded: Any, d_ts: TextDataset, cfg: MBTSADConfig, ctx: PurifyContext) -> tuple[Any, dict[str, Any]]:
    """The teacher: ``cfg.teacher`` loaded (and checked), or TS-FT of a copy of the backdoored model."""
    if cfg.teacher:
        return load_teacher(loaded, cfg), {"teacher": cfg.teacher}
    teacher = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
    ft = cfg.finetune_config()
    res = finetune(teacher, d_ts, ft, ctx, train_cfg=ft.train_config(ctx, epochs=cfg.teacher_epochs, lr=cfg.teacher_lr),
                   on_event=phase_events(ctx.on_event, 0, 2, "teacher"))
    return teacher, {"teacher": "ts-ft", "teacher_steps": res.steps, "teacher_seconds": round(res.seconds, 2),
                     "teacher_history": res.history}


def run_mbtsad(loaded: Any, clean: TextDataset, cfg: MBTSADConfig, ctx: PurifyContext) -> dict[str, Any]:
    """Purify ``loaded.model`` in place with MBTSAD on the clean subset ``clean``."""
    cfg.validate()
    t0 = time.perf_counter()
    d_ts = split_dataset(clean, cfg.split_config(ctx.seed))
    beta, gamma = cfg.weights
    info: dict[str, Any] = {"n_train": len(d_ts), "ablation": cfg.ablation, "beta": beta, "gamma": gamma}
    terms = []
    teacher = None
    if beta > 0 or gamma > 0:
        teacher, about = make_teacher(loaded, d_ts, cfg, ctx)
        info.update(about)
        teacher.model.to(resolve_device(ctx.device)).eval()
        for prm in teacher.model.parameters():
            prm.requires_grad_(False)
        terms.append(DistillationLoss(teacher.model, beta, gamma, cfg.p))
    else:
        info["teacher"] = "none (ce_only: CE on the token-split data alone)"
    ft = cfg.finetune_config()
    res = finetune(loaded, d_ts, ft, ctx, loss_terms=terms,
                   train_cfg=ft.train_config(ctx, epochs=cfg.student_epochs, lr=cfg.student_lr,
                                             dropout=cfg.student_dropout),
                   on_event=phase_events(ctx.on_event, 1 if terms and not cfg.teacher else 0,
                                         2 if terms and not cfg.teacher else 1, "student"))
    if terms:
        info["last_losses"] = {k: float(v) for k, v in terms[0].last.items()}
    del teacher
    info.update(steps=res.steps, train_seconds=round(res.seconds, 2), history=res.history,
                seconds=round(time.perf_counter() - t0, 2))
    return info


DEFENSES.register("mbtsad", Defense(
    name="mbtsad", kind="purify", config=MBTSADConfig, run=run_mbtsad,
    description="MBTSAD: TS-FT a copy into a teacher, then distil its attention and hidden states into the "
                "backdoored model on token-split clean text (beta*L_at + gamma*L_hid + CE)",
    changes="every weight, the word embeddings included (by default); the teacher is discarded",
    extra={"preflight": load_teacher}))
