"""Fine-mixing: mix the backdoored encoder with the pre-trained one, then fine-tune on the clean subset
(Zhang et al., EMNLP 2022; methods.md 4b). Needs the pre-trained weights the backdoored model was
fine-tuned from (``PurifyContext.pretrained``; the pipeline finds them through the card chain, e.g.
``minilm``).

* **Random mixing.** For every encoder parameter (embeddings and transformer layers; the pooler only
  with ``mix_pooler``), a seeded random ``1 - keep_ratio`` share of its entries, exactly
  ``n - round(keep_ratio * n)`` of its ``n``, is reset to the pre-trained value; the other
  ``keep_ratio`` share (the paper's rho) keeps the backdoored value. The classification head
  always stays the backdoored model's: the pre-trained encoder has none. The pooler is left out by
  default because BERT's classifier reads it (it is trained as part of the head) and a backbone
  published for sentence embeddings may ship an untrained one.
* **E-PUR** (``epur``, off by default): the paper's embedding purification resets the word
  embeddings a backdoor most likely lives in. Here: the ``epur_top`` rows of the word-embedding table
  that moved most (L2 distance between the backdoored and the pre-trained row, measured before the
  mixing) are reset to their pre-trained values entirely. The paper also weighs how often a word
  occurs in clean data; this ranks by distance alone.
* **Fine-tuning** on the clean subset, as CFT (``epochs=0``: mix only).

Without pre-trained weights, or with weights of another architecture or shape, it stops with one
line saying what is missing or which parameter differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext
from trojanscope.defenses.finetune import FinetuneConfig, finetune
from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import architecture
from trojanscope.models.swap import FIELD_NAMES

# config fields that must agree beyond the parameter shapes (depth and heads do not always show in shapes)
MATCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "embedding_size",
                "num_hidden_groups")


@dataclass
class FineMixingConfig(FinetuneConfig):
    """``keep_ratio``: rho, the share of each encoder tensor's entries kept from the backdoored model
    (0.5, the value a later comparison used for Fine-mixing; the rest reset to pre-trained);
    ``mix_pooler``: mix the pooler too; ``epur``/``epur_top``: reset the ``epur_top`` word-embedding
    rows that moved most from pre-trained. Then fine-tune (``epochs=0``: mix only)."""

    keep_ratio: float = 0.5
    mix_pooler: bool = False
    epur: bool = False
    epur_top: int = 50

    def validate(self) -> "FineMixingConfig":
        if not 0 <= self.keep_ratio <= 1:
            raise TrojanScopeError(f"keep ratio must be in [0, 1], got {self.keep_ratio}")
        if self.epur_top < 1:
            raise TrojanScopeError(f"E-PUR needs at least 1 row to reset, got {self.epur_top}")
        if self.epochs < 0:
            raise TrojanScopeError(f"epochs must be non-negative, got {self.epochs}")
        if self.epochs > 0:
            super().validate()
        return self


def _module(model: Any) -> torch.nn.Module:
    return model.model if hasattr(model, "model") and hasattr(model, "tokenizer") else model


def load_pretrained(source: Any) -> torch.nn.Module:
    """The pre-trained encoder from ``ctx.pretrained``: a source for ``load_model`` (``minilm``, a
    directory, a hub id), a ``LoadedModel`` or a module."""
    if source is None or (isinstance(source, str) and not source.strip()):
        raise TrojanScopeError("Fine-mixing needs the pre-trained weights the backdoored model was fine-tuned from, "
                               "and none are known (the model's card names no pre-trained base): pass them, e.g. "
                               "--pretrained minilm")
    if isinstance(source, torch.nn.Module) or hasattr(source, "tokenizer"):
        return _module(source)
    from trojanscope.models.loading import load_model

    try:
        return load_model(source, task="encoder", device="cpu").model
    except TrojanScopeError as e:
        raise TrojanScopeError(f"Fine-mixing could not load the pre-trained weights: {e}") from e


def mixable(model: torch.nn.Module, pretrained: torch.nn.Module, *, mix_pooler: bool = False
            ) -> list[tuple[str, torch.nn.Parameter, torch.Tensor]]:
    """``(name, backdoored parameter, pre-trained tensor)`` for every encoder parameter to mix, in name
    order, refusing (one line) a pre-trained model of another architecture or with other shapes."""
    a, b = model.config, pretrained.config
    if a.model_type != b.model_type:
        raise TrojanScopeError(f"Fine-mixing needs pre-trained weights of the same architecture: the backdoored model "
                               f"is a {a.model_type!r} model, the pre-trained one a {b.model_type!r} model")
    for name in MATCH_FIELDS:
        va, vb = getattr(a, name, None), getattr(b, name, None)
        if va != vb:
            raise TrojanScopeError(f"Fine-mixing needs pre-trained weights of the same architecture: the backdoored "
                                   f"model has {FIELD_NAMES.get(name, name)} {va!r}, the pre-trained one {vb!r}")
    arch = architecture(model)
    pooler = arch.pooler
    skip = set() if mix_pooler or pooler is None else {id(p) for p in pooler.parameters()}
    theirs = dict(pretrained.base_model.named_parameters())
    out = []
    for name, param in sorted(arch.base.named_parameters(), key=lambda kv: kv[0]):
        if id(param) in skip:
            continue
        other = theirs.get(name)
        if other is None:
            raise TrojanScopeError(f"Fine-mixing needs pre-trained weights of the same architecture: the pre-trained "
                                   f"model has no parameter {name}")
        if tuple(other.shape) != tuple(param.shape):
            raise TrojanScopeError(f"Fine-mixing needs pre-trained weights of the same shapes: {name} is "
                                   f"{tuple(param.shape)} in the backdoored model but {tuple(other.shape)} in the "
                                   "pre-trained one")
        out.append((name, param, other.detach()))
    if not out:
        raise TrojanScopeError("Fine-mixing found no encoder parameters to mix")  # pragma: no cover
    return out


@torch.no_grad()
def mix_weights(model: torch.nn.Module, pretrained: torch.nn.Module, keep_ratio: float, seed: int = 0, *,
                mix_pooler: bool = False) -> dict[str, Any]:
    """Reset a seeded random ``1 - keep_ratio`` share of every mixable tensor's entries of ``model`` to
    ``pretrained``'s values, in place. Returns counts (and the reset positions, for tests: ``masks``)."""
    pairs = mixable(model, pretrained, mix_pooler=mix_pooler)
    gen = torch.Generator().manual_seed(seed)
    total = reset = 0
    masks: dict[str, torch.Tensor] = {}
    for name, param, other in pairs:
        n = param.numel()
        n_reset = n - int(round(keep_ratio * n))
        positions = torch.randperm(n, generator=gen)[:n_reset]
        flat = param.data.view(-1)
        pos = positions.to(flat.device)
        flat.index_copy_(0, pos, other.reshape(-1).to(flat.device, flat.dtype).index_select(0, pos))
        masks[name] = positions
        total += n
        reset += n_reset
    return {"mixed_parameters": len(pairs), "entries_total": total, "entries_reset": reset,
            "reset_share": reset / total if total else 0.0, "masks": masks}


@torch.no_grad()
def embedding_drift(model: torch.nn.Module, pretrained: torch.nn.Module) -> torch.Tensor:
    """Per vocabulary row, the L2 distance between the backdoored and the pre-trained word embedding."""
    mine, theirs = model.get_input_embeddings().weight, pretrained.get_input_embeddings().weight
    if mine.shape != theirs.shape:
        raise TrojanScopeError(f"E-PUR needs word embeddings of the same shape: {tuple(mine.shape)} vs "
                               f"{tuple(theirs.shape)}")
    return (mine.float().cpu() - theirs.float().cpu()).norm(dim=1)


@torch.no_grad()
def reset_rows(model: torch.nn.Module, pretrained: torch.nn.Module, rows: list[int]) -> None:
    """Copy word-embedding ``rows`` from ``pretrained`` into ``model``."""
    if not rows:
        return
    mine, theirs = model.get_input_embeddings().weight, pretrained.get_input_embeddings().weight
    idx = torch.tensor(rows, dtype=torch.long)
    mine.data.index_copy_(0, idx.to(mine.device), theirs.detach().index_select(0, idx.to(theirs.device))
                          .to(mine.device, mine.dtype))


def run_fine_mixing(loaded: Any, clean: TextDataset, cfg: FineMixingConfig, ctx: PurifyContext) -> dict[str, Any]:
    """Mix the encoder with the pre-trained one (and E-PUR, if asked), then fine-tune on ``clean``."""
    cfg.validate()
    pretrained = load_pretrained(ctx.pretrained)
    model = loaded.model
    mixable(model, pretrained, mix_pooler=cfg.mix_pooler)  # refuse before anything changes
    epur_rows: list[int] = []
    drift = None
    if cfg.epur:
        drift = embedding_drift(model, pretrained)
        top = torch.sort(drift, descending=True, stable=True).indices[:cfg.epur_top]
        epur_rows = [int(i) for i in top if float(drift[i]) > 0]
    mixed = mix_weights(model, pretrained, cfg.keep_ratio, ctx.seed, mix_pooler=cfg.mix_pooler)
    mixed.pop("masks")
    reset_rows(model, pretrained, epur_rows)
    record: dict[str, Any] = {
        "pretrained": ctx.pretrained if isinstance(ctx.pretrained, str) else getattr(ctx.pretrained, "source", None),
        "keep_ratio": cfg.keep_ratio,
        **mixed,
        "n_clean": len(clean),
    }
    if cfg.epur:
        tokens = loaded.tokenizer.convert_ids_to_tokens(epur_rows) if epur_rows else []
        record["epur"] = [{"id": i, "token": t, "drift": round(float(drift[i]), 4)} for i, t in zip(epur_rows, tokens)]
    del pretrained
    if cfg.epochs > 0:
        result = finetune(loaded, clean, cfg, ctx)
        record.update(steps=result.steps, train_seconds=round(result.seconds, 2), n_train=len(clean),
                      history=result.history)
    return record


DEFENSES.register("fine_mixing", Defense(
    name="fine_mixing", kind="purify", config=FineMixingConfig, run=run_fine_mixing, needs_pretrained=True,
    description="Fine-mixing: reset a random share of the encoder's weights to the pre-trained ones, then fine-tune "
                "(E-PUR optional)",
    changes="a random 1 - keep_ratio share of every encoder weight (embeddings and layers; the classification head "
            "and, by default, the pooler untouched) reset to pre-trained, the E-PUR rows (if asked), then every "
            "weight but the word embeddings (by default) by fine-tuning"))
