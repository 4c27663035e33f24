"""Fine-pruning: prune the FFN neurons of the last layer(s) least active on clean text, then fine-tune
(methods.md 4b; Liu et al. 2018, adapted to transformers as the seed's baseline).

* **Activity.** A neuron of a layer's feed-forward block is one unit of its intermediate layer (the
  output of the activation after the first dense layer; 1,536 per MiniLM layer). Its activity is its
  mean activation over every real (non-padding) token of the clean texts, measured through the one
  batched forward with a forward pre-hook on the FFN's *output* dense layer (whose input is exactly
  the post-activation intermediate, for every architecture).
* **Pruning.** In each of the last ``layers`` layer unit(s), the ``ratio`` share of neurons with the
  lowest mean activation are removed by zeroing their rows (weight and bias) in the intermediate
  dense layer and their columns in the output dense layer, so they neither fire nor contribute.
* **Fine-tuning.** On the clean subset, with a gradient hook on those three tensors that zeroes the
  pruned entries' gradients: AdamW then never moves them (zero gradient, zero moments, decoupled
  weight decay of zero is zero), so they stay exactly zero; they are re-zeroed at the end anyway.

Shapes never change (the model saves and loads as any other). ALBERT's one shared layer group is
pruned as a whole (its activity is averaged over all its applications).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext
from trojanscope.defenses.finetune import FinetuneConfig, finetune, train_summary
from trojanscope.defenses.reinit import last_units
from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import architecture
from trojanscope.models.forward import batched_forward
from trojanscope.models.tokens import model_max_length_of
from trojanscope.utils import resolve_device

# (parameter, dimension, indices): entries of ``parameter`` along ``dimension`` held at zero
ZeroEntry = tuple[torch.nn.Parameter, int, torch.Tensor]


@dataclass
class FinePruningConfig(FinetuneConfig):
    """Prune ``ratio`` of the FFN neurons of the last ``layers`` layer unit(s), least active first
    (activity measured on at most ``max_texts`` clean texts, a seeded sample), then fine-tune
    (``epochs=0``: prune only)."""

    layers: int = 1
    ratio: float = 0.7
    max_texts: int | None = 2000
    activity_batch_size: int = 64

    def validate(self) -> "FinePruningConfig":
        if self.layers < 1:
            raise TrojanScopeError(f"layers to prune must be at least 1, got {self.layers}")
        if not 0 < self.ratio < 1:
            raise TrojanScopeError(f"pruning ratio must be in (0, 1), got {self.ratio}")
        if self.max_texts is not None and self.max_texts < 1:
            raise TrojanScopeError(f"max texts must be at least 1 (or none: all), got {self.max_texts}")
        if self.activity_batch_size < 1:
            raise TrojanScopeError(f"activity batch size must be at least 1, got {self.activity_batch_size}")
        if self.epochs < 0:
            raise TrojanScopeError(f"epochs must be non-negative, got {self.epochs}")
        if self.epochs > 0:
            super().validate()
        return self


@dataclass
class FFNSite:
    """One feed-forward block: ``key`` (1-based layer, ``"6"``; ``"1.2"`` for an ALBERT group's second
    inner layer), its intermediate dense layer ``inner`` and its output dense layer ``outer``."""

    key: str
    inner: torch.nn.Linear
    outer: torch.nn.Linear

    @property
    def size(self) -> int:
        return int(self.inner.out_features)


def ffn_sites(model: torch.nn.Module, layers: int = 1) -> list[FFNSite]:
    """The feed-forward blocks of the last ``layers`` layer units, bottom to top."""
    arch = architecture(model)
    sites = []
    for index, unit in last_units(model, layers):
        ffns = [arch.ffn(layer) for layer in arch.unit_layers(unit)]
        for j, ffn in enumerate(ffns):
            key = str(index + 1) if len(ffns) == 1 else f"{index + 1}.{j + 1}"
            sites.append(FFNSite(key, ffn.inner, ffn.outer))
    return sites


def neuron_activity(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], sites: Sequence[FFNSite], *,
                    batch_size: int = 64, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Per site, every intermediate neuron's mean activation over the real tokens of ``texts``
    (``{key: float32 [intermediate]}``), through ``batched_forward`` with a pre-hook on each output dense."""
    if not texts:
        raise TrojanScopeError("no clean texts to measure neuron activity on")
    captured: dict[str, list[torch.Tensor]] = {s.key: [] for s in sites}
    sums = {s.key: torch.zeros(s.size, dtype=torch.float64) for s in sites}
    counts = {s.key: 0.0 for s in sites}

    def capture(key: str):
        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured[key].append(args[0].detach())
        return hook

    def keep(out: Any, enc: Any, idx: list[int]) -> list[None]:
        mask = enc.attention_mask.to(torch.float32)  # [B, T]
        for key, acts in captured.items():
            for act in acts:  # one per application (ALBERT applies a shared layer several times)
                sums[key] += torch.einsum("bti,bt->i", act.float(), mask.to(act.device)).double().cpu()
                counts[key] += float(mask.sum())
            acts.clear()
        return [None] * len(idx)

    handles = [s.outer.register_forward_pre_hook(capture(s.key)) for s in sites]
    try:
        batched_forward(model, tokenizer, list(texts), keep=keep, batch_size=batch_size, max_length=max_length)
    finally:
        for h in handles:
            h.remove()
    return {k: (sums[k] / max(counts[k], 1.0)).float() for k in sums}


def least_active(activity: torch.Tensor, ratio: float) -> list[int]:
    """The indices of the ``round(ratio * n)`` least active neurons (ties: lower index first), sorted."""
    k = int(round(ratio * activity.numel()))
    order = torch.sort(activity, stable=True).indices[:k]
    return sorted(int(i) for i in order)


def neuron_entries(site: FFNSite, neurons: Sequence[int]) -> list[ZeroEntry]:
    """The tensor entries that make up ``neurons`` of ``site``: intermediate rows and bias, output columns."""
    idx = torch.tensor(sorted(neurons), dtype=torch.long)
    entries: list[ZeroEntry] = [(site.inner.weight, 0, idx), (site.outer.weight, 1, idx)]
    if site.inner.bias is not None:
        entries.append((site.inner.bias, 0, idx))
    return entries


@torch.no_grad()
def zero_entries(entries: Sequence[ZeroEntry]) -> None:
    """Set every listed entry to zero, in place."""
    for param, dim, idx in entries:
        if idx.numel():
            param.index_fill_(dim, idx.to(param.device), 0.0)


@contextlib.contextmanager
def kept_zero(entries: Sequence[ZeroEntry]) -> Iterator[None]:
    """Zero ``entries`` and keep them zero while the block trains: a gradient hook on each parameter
    zeroes those entries' gradients (so AdamW, with zero moments, never moves them); on exit the
    hooks are removed and the entries re-zeroed (a no-op unless something else wrote to them)."""
    zero_entries(entries)
    grouped: dict[int, tuple[torch.nn.Parameter, list[tuple[int, torch.Tensor]]]] = {}
    for param, dim, idx in entries:
        if idx.numel():
            grouped.setdefault(id(param), (param, []))[1].append((dim, idx))
    handles = []

    def make_hook(specs: list[tuple[int, torch.Tensor]]):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            for dim, idx in specs:
                grad = grad.index_fill(dim, idx.to(grad.device), 0.0)
            return grad
        return hook

    try:
        for param, specs in grouped.values():
            if not param.requires_grad:
                param.requires_grad_(True)
            handles.append(param.register_hook(make_hook(specs)))
        yield
    finally:
        for h in handles:
            h.remove()
        zero_entries(entries)


def prune_neurons(sites: Sequence[FFNSite], neurons: dict[str, Sequence[int]]) -> list[ZeroEntry]:
    """Zero ``neurons[key]`` of every site in place; returns the zeroed entries (for :func:`kept_zero`)."""
    entries: list[ZeroEntry] = []
    for site in sites:
        entries += neuron_entries(site, neurons.get(site.key, ()))
    zero_entries(entries)
    return entries


def run_fine_pruning(loaded: Any, clean: TextDataset, cfg: FinePruningConfig, ctx: PurifyContext) -> dict[str, Any]:
    """Measure FFN activity on clean text, prune the least active neurons, fine-tune with them held at zero."""
    cfg.validate()
    model, tok = loaded.model, loaded.tokenizer
    model.to(resolve_device(ctx.device))
    sites = ffn_sites(model, cfg.layers)
    sample = clean.head(cfg.max_texts, seed=ctx.seed)
    activity = neuron_activity(model, tok, sample.texts, sites, batch_size=cfg.activity_batch_size,
                               max_length=min(cfg.max_length, model_max_length_of(model, tok)))
    pruned = {s.key: least_active(activity[s.key], cfg.ratio) for s in sites}
    entries = prune_neurons(sites, pruned)
    record: dict[str, Any] = {
        "pruned_neurons": pruned,  # 1-based layer -> 0-based intermediate neurons
        "neurons_per_layer": {s.key: s.size for s in sites},
        "ratio": cfg.ratio,
        "activity_texts": len(sample),
        "n_clean": len(clean),
    }
    if cfg.epochs > 0:
        with kept_zero(entries):
            result = finetune(loaded, clean, cfg, ctx)
        record.update(train_summary(result, len(clean)))
    return record


DEFENSES.register("fine_pruning", Defense(
    name="fine_pruning", kind="purify", config=FinePruningConfig, run=run_fine_pruning,
    description="Fine-pruning: prune the FFN neurons of the last layer(s) least active on clean text, then fine-tune",
    changes="the `ratio` least active FFN neurons of the last `layers` layer(s) (intermediate rows and output "
            "columns zeroed, held at zero), then every other weight but the word embeddings (by default) by "
            "fine-tuning"))
