"""The training loop: one, shared by every attack and defense.

Extra objectives plug in as :class:`LossTerm` objects (TAL, distillation, POR): each gets the batch
and the forward output and returns a scalar added to the cross-entropy. When a term needs
attention, the forward pass goes through ``models.attention.attention_forward`` (the one attention
path). Models stay on eager attention throughout (SDPA measured no faster for MiniLM on CPU:
docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from trojanscope.data.poison import PoisonedDataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward, attention_forward
from trojanscope.models.forward import PRECISION_CHOICES, resolve_precision
from trojanscope.models.tokens import Encoded, length_buckets, model_max_length_of, pad, tokenize
from trojanscope.training.distributed import accelerator_for, launcher_settings, place, shard, undo_autocast_patch, world
from trojanscope.utils import resolve_device, set_seed


def decay_groups(model: torch.nn.Module, params: list[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: ``weight_decay`` on the weights, none on biases and LayerNorm parameters, as the
    Hugging Face Trainer (its own rule, ``get_parameter_names``) and the attacks' reference code do."""
    from transformers.trainer_pt_utils import get_parameter_names

    forbidden = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    try:
        decayed_names = set(get_parameter_names(model, [torch.nn.LayerNorm], forbidden))
    except TypeError:  # a transformers whose helper takes no name patterns: the layer types, then "bias"
        decayed_names = {n for n in get_parameter_names(model, [torch.nn.LayerNorm]) if "bias" not in n}
    decayed = {id(p) for name, p in model.named_parameters() if name in decayed_names}
    groups = [{"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@dataclass
class TrainConfig:
    """Optimisation settings. Defaults suit the MiniLM backbone on SST-2-sized data."""

    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 128
    train_word_embeddings: bool = False
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # legacy switch kept for old cards: False forces fp32 whatever ``precision`` says
    # auto | fp32 | bf16 | fp16 (Accelerate's autocast). auto: bf16 on a GPU with bf16 and on a CPU with native bf16
    # (AVX-512 BF16, AMX), where it trains the demo pair 1.8x faster at the same CACC and ASR (docs/benchmarks.md)
    precision: str = "auto"
    grad_accum: int = 1  # micro-batches per optimiser step (the effective batch is batch_size x grad_accum x processes)
    # False: train with dropout off (the model stays in eval mode while it learns): MBTSAD's student, whose
    # attention-distillation term would otherwise compare maps that dropout has blurred (issue 23)
    dropout: bool = True

    def validate(self) -> "TrainConfig":
        if not self.epochs > 0:
            raise TrojanScopeError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1:
            raise TrojanScopeError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise TrojanScopeError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise TrojanScopeError(f"warm-up is a share of the steps in [0, 1), got {self.warmup}")
        if self.weight_decay < 0:
            raise TrojanScopeError(f"weight decay must be non-negative, got {self.weight_decay}")
        if self.precision not in PRECISION_CHOICES:
            raise TrojanScopeError(f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISION_CHOICES)}")
        if not isinstance(self.grad_accum, int) or self.grad_accum < 1:
            raise TrojanScopeError(f"gradient accumulation must be a whole number of at least 1, got {self.grad_accum}")
        if self.grad_clip < 0:
            raise TrojanScopeError(f"gradient clip must be non-negative (0: none), got {self.grad_clip}")
        return self


@dataclass
class Batch:
    enc: Encoded
    labels: torch.Tensor
    poisoned: torch.Tensor  # bool [batch]
    index: list[int]


class LossTerm(Protocol):
    """An extra objective. Returns a scalar tensor (already weighted) added to the loss.

    ``needs_attention`` / ``needs_hidden_states`` ask the loop for ``out.attentions`` /
    ``out.hidden_states`` (through ``models.attention.attention_forward``, with gradients).
    """

    name: str
    needs_attention: bool
    needs_hidden_states: bool

    def __call__(self, model: torch.nn.Module, batch: Batch, out: AttentionForward) -> torch.Tensor: ...


@dataclass
class TrainResult:
    steps: int
    seconds: float
    samples_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"  # what the loop ran in (``cfg.precision`` resolved on the device)


ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class Checkpointing:
    """Where and how often the loop saves everything a resumed run needs to end with the same model as an
    uninterrupted one: weights, optimiser, scheduler, every RNG, the data position (the epoch's shuffling state and
    the batches done), the running losses and the history. ``every_steps``/``every_minutes``: 0 turns that trigger
    off. The checkpoint is one file written to a temporary name and renamed (a kill never leaves half of one)."""

    directory: str
    every_steps: int = 0
    every_minutes: float = 10.0
    resume: bool = False  # continue from the checkpoint in ``directory`` when there is one
    recipe: str = ""  # the run's recipe (JSON), written beside the first checkpoint (a resume must match it)

    @property
    def path(self) -> Path:
        return Path(self.directory) / "checkpoint.pt"

    def due(self, step: int, last_time: float) -> bool:
        return bool((self.every_steps and step % self.every_steps == 0)
                    or (self.every_minutes and time.monotonic() - last_time >= 60 * self.every_minutes))

    def save(self, state: dict[str, Any]) -> None:
        """Written only when due: a run shorter than the interval leaves nothing beside its output."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.recipe:
            (self.path.parent / "spec.json").write_text(self.recipe)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        if not (self.resume and self.path.is_file()):
            return None
        # our own file, still loaded as data only: tensors, numbers, strings and containers, never code
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)


def _rng_states() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    out = {"python": [py[0], list(py[1]), py[2]], "torch": torch.get_rng_state(),
           "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_states(st: dict[str, Any]) -> None:
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    torch.set_rng_state(st["torch"])
    kind, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def train(
    model: torch.nn.Module,
    tokenizer: Any,
    data: PoisonedDataset,
    cfg: TrainConfig,
    *,
    loss_terms: Sequence[LossTerm] = (),
    params: Sequence[torch.nn.Parameter] | None = None,
    on_event: ProgressFn | None = None,
    evaluator: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    progress: bool = True,
    task_loss: bool = True,
    checkpoint: Checkpointing | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` (texts, labels, poison flags, trigger spans).

    ``params`` restricts what trains (EP trains one embedding row); by default everything except,
    unless ``cfg.train_word_embeddings``, the word-embedding table. ``on_event`` receives
    ``{"event": "step"|"epoch", ...}`` dicts (jobs record them); ``evaluator`` runs after every
    epoch and its metrics join the epoch event. ``task_loss=False`` drops the cross-entropy, for
    objectives on a bare encoder (POR), where ``data.labels`` may carry other integers.

    Under a multi-process launcher (``training.distributed``) each process trains on its share of
    the batches through Accelerate (DDP); only rank 0 reports and evaluates. ``cfg.precision`` runs through
    Accelerate's autocast, ``cfg.grad_accum`` micro-batches make one optimiser step.

    ``checkpoint`` saves the whole training state every so often and, with ``resume``, continues from it: the
    resumed run ends with the same model as an uninterrupted one (single process).
    """
    cfg.validate()
    if len(data) == 0:
        raise TrojanScopeError("no training samples")
    if not task_loss and not loss_terms:
        raise TrojanScopeError("nothing to train: no task loss and no loss terms")
    precision, accum = launcher_settings(cfg.precision if cfg.bf16 else "fp32", cfg.grad_accum)
    set_seed(cfg.seed)
    w = world()
    device = place(resolve_device(cfg.device), w)
    precision = resolve_precision(precision, device, cpu_auto="bf16")
    accel = accelerator_for(device, precision, w)
    model.to(device)
    if not w.main:
        progress, on_event = False, None
    max_length = min(cfg.max_length, model_max_length_of(model, tokenizer))
    tok = tokenize(tokenizer, data.texts, data.spans, max_length)
    labels = torch.tensor(data.labels, dtype=torch.long)
    poisoned = torch.tensor(data.poisoned, dtype=torch.bool)
    if params is None:
        emb = model.get_input_embeddings().weight
        params = [p for p in model.parameters() if cfg.train_word_embeddings or p is not emb]
    params = list(params)
    trainable = set(id(p) for p in params)
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optim = torch.optim.AdamW(decay_groups(model, params, cfg.weight_decay), lr=cfg.lr)
    # DDP under a launcher (rank 0's weights broadcast); the optimiser wrapper applies fp16's loss scale
    wrapped, optim = accel.prepare(model, optim)
    undo_autocast_patch(model)
    if w.active:
        torch.manual_seed(cfg.seed + 1009 * w.rank)  # dropout differs per process; the data order does not
    rng = random.Random(cfg.seed)
    lengths = [len(x) for x in tok.input_ids]
    per_epoch = math.ceil(math.ceil(math.ceil(len(data) / cfg.batch_size) / w.size) / accum)  # optimiser steps
    total = max(1, int(round(per_epoch * cfg.epochs)))
    warm = int(cfg.warmup * total)
    # transformers: linear warm-up from 0, then linear decay to 0; on the inner optimiser (Accelerate's prepared
    # scheduler would step once per process per step, for loaders it shards itself)
    sched = get_linear_schedule_with_warmup(optim.optimizer, warm, total)
    need_att = any(t.needs_attention for t in loss_terms)
    need_hid = any(getattr(t, "needs_hidden_states", False) for t in loss_terms)
    # what every step logs, as (sum, count) pairs reduced across processes in one tensor
    names = (["ce", "ce_clean", "ce_poisoned"] if task_loss else []) + [t.name for t in loss_terms]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="training", unit="step")
    history: list[dict[str, Any]] = []
    model.train(cfg.dropout)
    start = time.perf_counter()
    step, seen = 0, 0
    running: dict[str, float] = {}
    skip = 0  # optimiser steps of the current epoch already done (a resumed run)
    state = checkpoint.load() if checkpoint is not None and not w.active else None
    if state is not None:
        if state["total"] != total or state["n"] != len(data):
            raise TrojanScopeError(f"the checkpoint in {checkpoint.directory} belongs to another run ({state['n']} "
                                   f"samples, {state['total']} steps; this one: {len(data)}, {total}); remove it "
                                   "or start without --resume")
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, seen, running, history = state["step"], state["seen"], dict(state["running"]), list(state["history"])
        skip = step - (step // per_epoch) * per_epoch
        rng.setstate((state["epoch_rng"][0], tuple(state["epoch_rng"][1]), state["epoch_rng"][2]))
        _set_rng_states(state["rng"])
        if bar is not None:
            bar.update(step)

    def micro_step(idx: list[int], n_micro: int) -> torch.Tensor:
        """Forward, loss and backward of one of ``n_micro`` micro-batches; its logs as [sum, count] pairs plus a
        non-finite flag, on the device (no host synchronisation here)."""
        batch = Batch(pad(tokenizer, tok, idx).to(device), labels[idx].to(device), poisoned[idx].to(device), idx)
        with accel.autocast():
            if need_att or need_hid or not task_loss:
                out = attention_forward(wrapped, batch.enc, grad=True, attentions=need_att, hidden_states=need_hid)
            else:
                out = AttentionForward(wrapped(**batch.enc.model_inputs()).logits, None)
            loss = torch.zeros((), device=device)
            logs: list[torch.Tensor] = []
            if task_loss:
                per_sample = F.cross_entropy(out.logits.float(), batch.labels, reduction="none")
                loss = per_sample.mean()
                clean = (~batch.poisoned).float()
                logs += [per_sample.sum(), per_sample.new_tensor(float(len(idx))),
                         (per_sample * clean).sum(), clean.sum(),
                         (per_sample * (1 - clean)).sum(), (1 - clean).sum()]
            for term in loss_terms:
                value = term(model, batch, out)
                loss = loss + value
                logs += [value.detach().float(), value.new_ones((), dtype=torch.float32)]
        accel.backward(loss / n_micro)
        return torch.stack([x.detach().float() for x in logs] + [(~torch.isfinite(loss.detach())).float()])

    last_save = time.monotonic()
    try:
        while step < total:
            epoch = step // per_epoch
            epoch_rng = rng.getstate()  # the epoch's shuffling, for a checkpoint taken inside it
            batches = list(shard(length_buckets(lengths, cfg.batch_size, rng), w))
            groups = [batches[i:i + accum] for i in range(0, len(batches), accum)]
            for group in groups[skip:] if skip else groups:
                if step >= total:
                    break
                n_micro = len(group)
                vec = None
                for j, idx in enumerate(group):
                    # gradients are all-reduced once per optimiser step, on its last micro-batch
                    with accel.no_sync(wrapped) if j < n_micro - 1 else contextlib.nullcontext():
                        v = micro_step(idx, n_micro)
                    vec = v if vec is None else vec + v
                # the step's one host synchronisation: the logs (summed over processes) and the non-finite flag
                vals = accel.reduce(vec, reduction="sum").tolist()
                if vals[-1]:
                    raise TrojanScopeError(f"the loss became non-finite at step {step}; lower the learning rate")
                logs = {name: vals[2 * i] / vals[2 * i + 1] for i, name in enumerate(names) if vals[2 * i + 1]}
                if cfg.grad_clip:
                    accel.clip_grad_norm_(params, cfg.grad_clip)
                lr = sched.get_last_lr()[0]  # the rate this step uses
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                step += 1
                seen += sum(len(idx) for idx in group) * w.size
                for k, v in logs.items():
                    running[k] = 0.9 * running.get(k, v) + 0.1 * v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
                if on_event:
                    on_event({"event": "step", "step": step, "total": total, **logs, "lr": lr,
                              "epoch_progress": step / per_epoch, "running": dict(running)})
                if checkpoint is not None and not w.active and step < total and step % per_epoch and \
                        checkpoint.due(step, last_save):
                    checkpoint.save({"model": model.state_dict(), "optimizer": optim.state_dict(),
                                     "scheduler": sched.state_dict(), "step": step, "seen": seen, "total": total,
                                     "n": len(data), "running": running, "history": history,
                                     "epoch_rng": [epoch_rng[0], list(epoch_rng[1]), epoch_rng[2]],
                                     "rng": _rng_states()})
                    last_save = time.monotonic()
            skip = 0
            if step % per_epoch == 0 or step >= total:
                rec: dict[str, Any] = {"epoch": epoch + 1, "step": step, **running}
                if evaluator is not None and w.main:
                    rec.update(evaluator(model))
                    model.train(cfg.dropout)
                accel.wait_for_everyone()
                history.append(rec)
                if on_event:
                    on_event({"event": "epoch", "total": total, **rec})
    except torch.cuda.OutOfMemoryError as e:
        raise TrojanScopeError(out_of_memory_message(cfg.batch_size)) from e
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise TrojanScopeError(out_of_memory_message(cfg.batch_size)) from e
        raise
    finally:
        if bar is not None:
            bar.close()
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
        accel.free_memory()  # drop Accelerate's references to the model and optimiser
    seconds = time.perf_counter() - start
    return TrainResult(step, seconds, seen / seconds if seconds else float("nan"), history, precision)


def out_of_memory_message(batch_size: int) -> str:
    """The advice for an out-of-memory failure: halve the batch (or shorten inputs at batch 1)."""
    if batch_size > 1:
        return f"out of memory at --batch-size {batch_size}: try --batch-size {batch_size // 2}"
    return "out of memory at --batch-size 1: try a smaller --max-length or --device cpu"
