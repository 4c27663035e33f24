"""PURE (Zhao, Xu and Yuan, ICML 2024): prune the attention heads whose [CLS] attention varies least on
clean data while dev accuracy holds, then fine-tune with an attention-normalisation penalty
(methods.md 4b). The attention-based defense closest to this project's theme.

**Head score.** For a head ``(l, k)`` and a clean dev text with ``n`` real tokens, the variance of
its [CLS] row ``A[l][k][0, :n]`` across those ``n`` keys (population variance; padding keys are
left out, where the reference pads every text to a fixed length and counts the padded zeros); the
score is its mean over the dev texts. A low score is a head whose [CLS] attention is spread
evenly, which the paper found to matter least for the task and to carry backdoor features.

**Pruning.** Heads are taken lowest score first, ``step`` (10) at a time. After each step the dev
accuracy must stay at or above the floor: ``floor`` (0.85, the reference's absolute threshold) with
``floor_mode="absolute"``, or ``floor x`` the unpruned model's dev accuracy with ``"relative"``
(for tasks or models where 0.85 is out of reach). When a step falls below, its heads are restored
highest score first until the accuracy is back at the floor, and pruning stops (the reference's
backtracking). At least one head per layer is always kept (``max_per_layer``, default heads - 1):
a head that would exceed it is skipped (kept) and the step takes the next one; as the heads come
lowest score first, the heads a layer keeps are its highest-scoring ones. With an
absolute floor above the unpruned model's accuracy nothing is pruned (recorded as such).
``heads`` prunes a given set instead of searching (``"3:0,1;6:2"``: 1-based layers, 0-based heads,
as TAL's heads in the card); asking for every head of a layer is refused.

**Pruning is masking.** Transformers 5 has no structural ``prune_heads`` for these models any more,
and per-layer head counts would break the one attention path (``attention_forward`` stacks every
layer's attention into one ``[batch, layers, heads, seq, seq]`` tensor). A pruned head's query, key
and value rows (weights and biases) and its columns of the attention output projection are zeroed
instead, and held at zero through fine-tuning (the gradient hook of ``fine_pruning.kept_zero``).
Shapes stay; the head contributes exactly nothing to the output, and its attention, still reported,
is uniform over the real tokens (zero query and key), so attention views show it as switched off.

**Fine-tuning** on the clean subset with ``CE + norm_weight * sum_l c_l * N_l``, where
``N_l = sum over the kept heads k of layer l of ||A[l][k][0, :]||_2``, the L2 norm taken over the
batch's texts and keys together (as the reference: the term grows with the square root of the batch
size), and ``norm_weight = 0.15``. ``c_l`` follows the reference: ``v_l``, the mean score of layer
``l``'s kept heads on the pruned model, turned into ``w_l = (1 / v_l) / sum_j (1 / v_j)`` (a softmax
of ``-log v``) and min-max scaled to [0, 1], so layers whose [CLS] attention is most even are
normalised hardest and the most peaked layer not at all (all ``c_l = 1`` when every layer ties).
``coefficients="uniform"`` sets every ``c_l = 1``.

**Data.** Scoring and the floor use ``ctx.dev`` when the pipeline gives one (at most ``max_dev``
texts), else a seeded ``dev_fraction`` (0.1, as the reference's 90/10 split) of the clean subset,
which is then left out of fine-tuning. ``pre_epochs`` first fine-tunes a copy on the clean data and
scores that copy, as the reference does for a poisoned *encoder* (it needs a task head first); a
backdoored classifier already has one, so the default is 0. ALBERT shares one set of attention
weights across its layers, so per-layer head pruning does not apply to it and is refused.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext
from trojanscope.defenses.fine_pruning import ZeroEntry, kept_zero, zero_entries
from trojanscope.defenses.finetune import FinetuneConfig, finetune, phase_events
from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import AttentionSite, architecture
from trojanscope.models.forward import batched_forward
from trojanscope.models.heads import HeadSet
from trojanscope.models.tokens import Tokenized, model_max_length_of, tokenize
from trojanscope.utils import resolve_device

FLOOR_MODES = ("absolute", "relative")
COEFFICIENTS = ("variance", "uniform")


@dataclass
class PureConfig(FinetuneConfig):
    """Every knob of PURE (module docstring); the fine-tuning knobs are :class:`FinetuneConfig`'s
    (``epochs=0``: prune only)."""

    step: int = 10
    floor: float = 0.85
    floor_mode: str = "absolute"
    max_per_layer: int | None = None
    heads: str | None = None
    dev_fraction: float = 0.1
    max_dev: int | None = 1000
    norm_weight: float = 0.15
    coefficients: str = "variance"
    pre_epochs: float = 0.0
    score_batch_size: int = 64

    def validate(self) -> "PureConfig":
        if self.step < 1:
            raise TrojanScopeError(f"PURE's pruning step must be at least 1 head, got {self.step}")
        if not 0 <= self.floor <= 1:
            raise TrojanScopeError(f"PURE's accuracy floor must be in [0, 1], got {self.floor}")
        if self.floor_mode not in FLOOR_MODES:
            raise TrojanScopeError(f"unknown floor mode {self.floor_mode!r}; allowed: {', '.join(FLOOR_MODES)}")
        if self.coefficients not in COEFFICIENTS:
            raise TrojanScopeError(f"unknown coefficients {self.coefficients!r}; allowed: {', '.join(COEFFICIENTS)}")
        if self.max_per_layer is not None and self.max_per_layer < 0:
            raise TrojanScopeError(f"max heads per layer must be non-negative, got {self.max_per_layer}")
        if not 0 < self.dev_fraction < 1:
            raise TrojanScopeError(f"dev fraction must be in (0, 1), got {self.dev_fraction}")
        if self.max_dev is not None and self.max_dev < 1:
            raise TrojanScopeError(f"max dev texts must be at least 1 (or none: all), got {self.max_dev}")
        if self.norm_weight < 0:
            raise TrojanScopeError(f"the attention-normalisation weight must be non-negative, got {self.norm_weight}")
        if self.pre_epochs < 0 or self.epochs < 0:
            raise TrojanScopeError("epochs must be non-negative")
        if self.score_batch_size < 1:
            raise TrojanScopeError(f"score batch size must be at least 1, got {self.score_batch_size}")
        if self.epochs > 0:
            super().validate()
        if self.heads is not None and not isinstance(self.heads, dict):
            parse_heads(self.heads)
        return self


# --- the heads of each architecture -------------------------------------------------------------------

def attention_sites(model: torch.nn.Module) -> list[AttentionSite]:
    """Every layer's self-attention, bottom to top (BERT, RoBERTa, DistilBERT; ALBERT is refused)."""
    arch = architecture(model)
    if arch.shares_layers:
        raise TrojanScopeError(f"PURE prunes attention heads layer by layer, but {arch.name} shares one set of "
                               "attention weights across all its layers; use a BERT, RoBERTa or DistilBERT model")
    return [arch.attention(layer) for layer in arch.layers]


def parse_heads(spec: str | dict[Any, Sequence[int]]) -> HeadSet:
    """``"3:0,1;6:2"`` (1-based layers, 0-based heads, as TAL's dict) or ``{3: [0, 1]}`` / ``{"3": [0, 1]}``."""
    if isinstance(spec, dict):
        items = [(str(k), list(v)) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).replace(" ", "").split(";"):
            if not part:
                continue
            layer, sep, rest = part.partition(":")
            if not sep:
                raise TrojanScopeError(f"cannot read heads {spec!r}: write LAYER:HEAD,HEAD;LAYER:HEAD (1-based layers, "
                                       "0-based heads), e.g. 3:0,1;6:2")
            items.append((layer, [h for h in rest.split(",") if h]))
    out: dict[int, set[int]] = {}  # 1-based layer -> heads (a layer may come twice)
    for layer, heads in items:
        try:
            layer1, hs = int(layer), [int(h) for h in heads]
        except ValueError:
            raise TrojanScopeError(f"cannot read heads {spec!r}: layers and heads are integers, "
                                   "e.g. 3:0,1;6:2") from None
        if layer1 < 1:
            raise TrojanScopeError(f"layers are numbered from 1, got layer {layer1} in {spec!r}")
        out.setdefault(layer1, set()).update(hs)
    return HeadSet.from_tal_dict(out)


def check_heads(heads: HeadSet, n_layers: int, n_heads: int) -> None:
    """Refuse heads outside the model, or all the heads of a layer (PURE keeps at least one per layer)."""
    for layer, hs in heads.by_layer().items():
        if not 0 <= layer < n_layers:
            raise TrojanScopeError(f"layer {layer + 1} does not exist: the model has {n_layers} layers")
        bad = [h for h in hs if not 0 <= h < n_heads]
        if bad:
            raise TrojanScopeError(f"head {bad[0]} of layer {layer + 1} does not exist: layers have {n_heads} heads "
                                   f"(0-based)")
        if len(set(hs)) >= n_heads:
            raise TrojanScopeError(f"PURE keeps at least one head per layer, but all {n_heads} heads of layer "
                                   f"{layer + 1} were asked to be pruned")


def head_entries(sites: Sequence[AttentionSite], heads: HeadSet) -> list[ZeroEntry]:
    """The tensor entries of ``heads``: query/key/value rows (and biases), output-projection columns."""
    entries: list[ZeroEntry] = []
    for layer, hs in heads.by_layer().items():
        site = sites[layer]
        idx = torch.cat([site.head_slice(h) for h in hs])
        for lin in (site.query, site.key, site.value):
            entries.append((lin.weight, 0, idx))
            if lin.bias is not None:
                entries.append((lin.bias, 0, idx))
        entries.append((site.output.weight, 1, idx))
    return entries


def mask_heads(model: torch.nn.Module, heads: HeadSet) -> list[ZeroEntry]:
    """Prune ``heads`` of ``model`` in place by masking (module docstring); returns the zeroed entries."""
    sites = attention_sites(model)
    check_heads(heads, len(sites), sites[0].heads)
    entries = head_entries(sites, heads)
    zero_entries(entries)
    return entries


@contextlib.contextmanager
def heads_switched_off(model: torch.nn.Module, heads: HeadSet) -> Iterator[None]:
    """Within the block, ``heads``' contexts are zeroed on their way into the output projection (a
    forward pre-hook; the weights are untouched): the same output as :func:`mask_heads`, for trying
    candidates during the search without copying the model."""
    sites = attention_sites(model)
    handles = []
    for layer, hs in heads.by_layer().items():
        site = sites[layer]
        keep = torch.ones(site.heads * site.head_dim)
        keep[torch.cat([site.head_slice(h) for h in hs])] = 0.0

        def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], keep: torch.Tensor = keep):
            x = args[0]
            return (x * keep.to(x.device, x.dtype),) + tuple(args[1:])

        handles.append(site.output.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --- scores, accuracy and the search -------------------------------------------------------------------

def cls_variance(model: torch.nn.Module, tokenizer: Any, tokenized: Tokenized, *, batch_size: int = 64
                 ) -> torch.Tensor:
    """``[layers, heads]``: per head, the variance across real keys of [CLS]'s attention row, averaged
    over the texts (the module docstring's score)."""

    def keep(out: Any, enc: Any, idx: list[int]) -> list[torch.Tensor]:
        a = out.attentions[:, :, :, 0, :].float()  # [B, L, H, T]
        m = enc.attention_mask.to(a.device, a.dtype)[:, None, None, :]
        n = m.sum(-1, keepdim=True)
        mean = (a * m).sum(-1, keepdim=True) / n
        var = (((a - mean) * m) ** 2).sum(-1) / n.squeeze(-1)
        return list(var.cpu())

    res = batched_forward(model, tokenizer, tokenized=tokenized, keep=keep, attentions=True, batch_size=batch_size)
    return torch.stack(res.kept).mean(0)


def dev_accuracy(model: torch.nn.Module, tokenizer: Any, tokenized: Tokenized, labels: Sequence[int], *,
                 batch_size: int = 64) -> float:
    res = batched_forward(model, tokenizer, tokenized=tokenized, batch_size=batch_size)
    if res.logits is None:
        raise TrojanScopeError("PURE needs a classifier (a model with a classification head)")
    return float((res.preds == torch.tensor(list(labels)).numpy()).mean())


@dataclass
class SearchResult:
    heads: HeadSet
    accuracy: float
    base_accuracy: float
    floor: float
    log: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""


def search_heads(scores: torch.Tensor, evaluate: Callable[[HeadSet], float], *, step: int, floor: float,
                 max_per_layer: int | None = None, base_accuracy: float | None = None,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """PURE's greedy search over ``scores`` (``[layers, heads]``, lowest pruned first) with
    ``evaluate(heads) -> dev accuracy``: ``step`` heads at a time while the accuracy stays >= ``floor``,
    backtracking (highest score first) and stopping at the first step that falls below; at most
    ``max_per_layer`` (default heads - 1) heads per layer."""
    n_layers, n_heads = scores.shape
    cap = n_heads - 1 if max_per_layer is None else min(max_per_layer, n_heads - 1)
    order = sorted(((float(scores[l, h]), l, h) for l in range(n_layers) for h in range(n_heads)))
    score = {(l, h): s for s, l, h in order}
    base = evaluate(HeadSet()) if base_accuracy is None else base_accuracy
    pruned: set[tuple[int, int]] = set()
    acc = base
    log: list[dict[str, Any]] = []

    def note(rec: dict[str, Any]) -> None:
        log.append(rec)
        if on_step:
            on_step(rec)

    if base < floor:
        return SearchResult(HeadSet(), base, base, floor, log,
                            f"the unpruned model's dev accuracy {base:.4f} is below the floor {floor:.4f}")
    stopped = "every head but one per layer is pruned"
    queue = [(l, h) for _, l, h in order]
    while queue:
        # the next ``step`` heads that fit under the per-layer cap (the lowest-scoring first)
        counts = {l: sum(1 for pl, _ in pruned if pl == l) for l in range(n_layers)}
        batch: list[tuple[int, int]] = []
        while queue and len(batch) < step:
            l, h = queue.pop(0)
            if counts[l] < cap:
                batch.append((l, h))
                counts[l] += 1
        if not batch:
            break
        trial = pruned | set(batch)
        trial_acc = evaluate(HeadSet(tuple(trial)))
        note({"pruned": len(trial), "accuracy": round(trial_acc, 4), "added": len(batch)})
        if trial_acc >= floor:
            pruned, acc = trial, trial_acc
            continue
        restore = sorted(batch, key=lambda lh: score[lh], reverse=True)
        while restore:
            restore.pop(0)
            if not restore:
                break
            trial = pruned | set(restore)
            trial_acc = evaluate(HeadSet(tuple(trial)))
            note({"pruned": len(trial), "accuracy": round(trial_acc, 4), "backtrack": True})
            if trial_acc >= floor:
                pruned, acc = trial, trial_acc
                break
        stopped = f"dev accuracy fell below the floor {floor:.4f}"
        break
    return SearchResult(HeadSet(tuple(pruned)), acc, base, floor, log, stopped)


def norm_coefficients(variance: torch.Tensor, pruned: HeadSet, mode: str = "variance") -> list[float]:
    """``c_l`` (module docstring) from the pruned model's ``[layers, heads]`` scores."""
    n_layers, n_heads = variance.shape
    if mode == "uniform":
        return [1.0] * n_layers
    kept = torch.from_numpy(~pruned.mask(n_layers, n_heads))
    v = torch.stack([variance[l][kept[l]].double().mean() for l in range(n_layers)]).clamp_min(1e-12)
    w = (1.0 / v) / (1.0 / v).sum()
    span = float(w.max() - w.min())
    if span <= 1e-12 * float(w.max()):
        return [1.0] * n_layers
    return [float(x) for x in (w - w.min()) / span]


@dataclass
class CLSNormTerm:
    """PURE's attention normalisation: ``weight * sum_l c_l * sum_{kept k} ||A[l][k][0, :]||_2`` over the
    batch (a :class:`~trojanscope.training.loop.LossTerm`)."""

    weight: float
    coefficients: torch.Tensor  # [layers]
    kept: torch.Tensor  # [layers, heads] bool
    name: str = "cls_norm"
    needs_attention: bool = True
    needs_hidden_states: bool = False

    def __call__(self, model: torch.nn.Module, batch: Any, out: Any) -> torch.Tensor:
        a = out.attentions[:, :, :, 0, :].float()  # [B, L, H, T]; padding keys hold 0
        norms = a.pow(2).sum(dim=(0, 3)).clamp_min(1e-12).sqrt()  # [L, H]
        kept = self.kept.to(norms.device, norms.dtype)
        per_layer = (norms * kept).sum(-1)
        return self.weight * (self.coefficients.to(norms.device, norms.dtype) * per_layer).sum()


# --- the purifier -------------------------------------------------------------------------------------

def _split_dev(clean: TextDataset, ctx: PurifyContext, cfg: PureConfig) -> tuple[TextDataset, TextDataset, str]:
    if ctx.dev is not None and len(ctx.dev):
        return clean, ctx.dev.head(cfg.max_dev, seed=ctx.seed), "ctx.dev"
    n = len(clean)
    n_dev = max(1, int(round(cfg.dev_fraction * n)))
    if n - n_dev < 1:
        raise TrojanScopeError(f"PURE needs clean texts both to fine-tune on and to score heads with; {n} is too few")
    idx = list(range(n))
    random.Random(ctx.seed).shuffle(idx)
    dev_idx, train_idx = sorted(idx[:n_dev]), sorted(idx[n_dev:])
    dev = clean.subset(dev_idx).head(cfg.max_dev, seed=ctx.seed)
    return clean.subset(train_idx), dev, f"{cfg.dev_fraction:g} of the clean subset"


def _stage(ctx: PurifyContext, message: str) -> None:
    if ctx.on_event:
        ctx.on_event({"event": "stage", "message": message})


def run_pure(loaded: Any, clean: TextDataset, cfg: PureConfig, ctx: PurifyContext) -> dict[str, Any]:
    """Score heads on clean dev data, prune the lowest-variance ones while dev accuracy holds, then
    fine-tune with the [CLS]-attention normalisation (module docstring)."""
    cfg.validate()
    model, tok = loaded.model, loaded.tokenizer
    model.to(resolve_device(ctx.device))
    sites = attention_sites(model)
    n_layers, n_heads = len(sites), sites[0].heads
    if cfg.max_per_layer is not None and cfg.max_per_layer >= n_heads:
        raise TrojanScopeError(f"PURE keeps at least one head per layer: max heads per layer must be below the "
                               f"{n_heads} heads of a layer, got {cfg.max_per_layer}")
    given = parse_heads(cfg.heads) if cfg.heads else None
    if given is not None:
        check_heads(given, n_layers, n_heads)
    train_set, dev, dev_source = _split_dev(clean, ctx, cfg)
    max_length = min(cfg.max_length, model_max_length_of(model, tok))
    phases = 2 if cfg.pre_epochs > 0 else 1
    scorer = model
    if cfg.pre_epochs > 0:
        scorer_loaded = copy.copy(loaded)
        scorer_loaded.model = scorer = copy.deepcopy(model)
        finetune(scorer_loaded, train_set, cfg, ctx, train_cfg=cfg.train_config(ctx, epochs=cfg.pre_epochs),
                 on_event=phase_events(ctx.on_event, 0, phases, "pre-finetune"))
    dev_tok = tokenize(tok, dev.texts, None, max_length)
    bs = cfg.score_batch_size

    def evaluate(heads: HeadSet) -> float:
        with heads_switched_off(scorer, heads):
            return dev_accuracy(scorer, tok, dev_tok, dev.labels, batch_size=bs)

    scores = cls_variance(scorer, tok, dev_tok, batch_size=bs)
    base = evaluate(HeadSet())
    if given is not None:
        floor = float("nan")
        search = SearchResult(given, evaluate(given), base, floor, [], "heads given")
    else:
        floor = cfg.floor * base if cfg.floor_mode == "relative" else cfg.floor
        search = search_heads(scores, evaluate, step=cfg.step, floor=floor, max_per_layer=cfg.max_per_layer,
                              base_accuracy=base,
                              on_step=lambda r: _stage(ctx, f"PURE: {r['pruned']} heads pruned, dev accuracy "
                                                            f"{r['accuracy']:.3f}"))
    heads = search.heads
    entries = mask_heads(model, heads)
    if scorer is not model:
        zero_entries(head_entries(attention_sites(scorer), heads))
    pruned_scores = cls_variance(scorer, tok, dev_tok, batch_size=bs) if heads else scores
    del scorer
    coefficients = norm_coefficients(pruned_scores, heads, cfg.coefficients)
    n_pruned = len(heads)
    _stage(ctx, f"PURE: {n_pruned} of {n_layers * n_heads} heads pruned ({search.stopped})")
    record: dict[str, Any] = {
        "pruned_heads": heads.to_tal_dict(),  # TAL's format: 1-based layer -> 0-based heads
        "n_pruned": n_pruned,
        "n_heads": n_layers * n_heads,
        "pruning": "masking (query/key/value rows and output-projection columns zeroed, held at zero)",
        "dev_source": dev_source,
        "n_dev": len(dev),
        "dev_accuracy_before": round(search.base_accuracy, 4),
        "dev_accuracy_pruned": round(search.accuracy, 4),
        "floor": None if math.isnan(floor) else round(floor, 4),
        "floor_mode": cfg.floor_mode,
        "stopped": search.stopped,
        "search": search.log,
        "head_variance": [[round(float(x), 6) for x in row] for row in scores],
        "coefficients": [round(c, 6) for c in coefficients],
        "n_clean": len(clean),
        "n_train": len(train_set),
    }
    if cfg.epochs > 0:
        kept = torch.from_numpy(~heads.mask(n_layers, n_heads))
        terms = [CLSNormTerm(cfg.norm_weight, torch.tensor(coefficients), kept)] if cfg.norm_weight > 0 else []
        with kept_zero(entries):
            result = finetune(loaded, train_set, cfg, ctx, loss_terms=terms,
                              on_event=phase_events(ctx.on_event, phases - 1, phases, "finetune"))
        record.update(steps=result.steps, train_seconds=round(result.seconds, 2), history=result.history)
    return record


DEFENSES.register("pure", Defense(
    name="pure", kind="purify", config=PureConfig, run=run_pure,
    description="PURE (ICML 2024): prune the heads whose [CLS] attention varies least on clean data while dev "
                "accuracy holds, then fine-tune with [CLS]-attention normalisation",
    changes="the pruned heads' query/key/value rows and output-projection columns (zeroed, held at zero), then every "
            "other weight but the word embeddings (by default) by fine-tuning with the attention-normalisation loss"))
