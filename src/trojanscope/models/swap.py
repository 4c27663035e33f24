"""Model surgery for the embedding-swap analysis (methods.md 3a, seed Table 13).

Two classifiers of the same architecture, width, depth and vocabulary are cut into three stages:

- the **embeddings**: the whole embeddings module (word, position and token-type embeddings and
  their LayerNorm; ``Arch.embeddings``);
- the **layer units**: the transformer layers, bottom to top (``Arch.units``). ALBERT shares one set
  of weights across its layers, so its units are its layer *groups* (usually one), and its
  embedding-to-hidden projection (``Arch.embedding_projection``) travels with the first unit;
- the **top**: everything else (pooler, classification head), which travels with the last unit.

Where each part lives in each architecture is ``trojanscope.models.arch``'s business.

Hybrids are deep copies with modules assigned from the other model; nothing is retrained. The
functions here only build models; measuring them is ``trojanscope.analysis.swap``.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import architecture
from trojanscope.models.loading import LoadedModel

# Config fields that must agree for a swap to mean anything (missing ones are skipped).
CONFIG_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                 "embedding_size", "max_position_embeddings", "type_vocab_size", "num_hidden_groups",
                 "num_labels")
FIELD_NAMES = {"model_type": "model type", "hidden_size": "hidden size", "num_hidden_layers": "number of layers",
               "num_attention_heads": "number of attention heads", "vocab_size": "vocabulary size",
               "embedding_size": "embedding size", "max_position_embeddings": "number of positions",
               "type_vocab_size": "number of token types", "num_hidden_groups": "number of ALBERT layer groups",
               "num_labels": "number of labels"}
TOKENIZER_PROBE = "Hello World, the CF movie was un-bearable: 123 émigré"


def unit_name(model: torch.nn.Module) -> str:
    """What one layer unit is: ``"layer"``, or ``"layer group"`` for ALBERT."""
    return architecture(model).unit_name


def _vocab_digest(tokenizer: Any) -> tuple[int, str]:
    vocab = tokenizer.get_vocab()
    blob = "\n".join(f"{t}\t{i}" for t, i in sorted(vocab.items(), key=lambda kv: kv[1]))
    return len(vocab), hashlib.sha256(blob.encode("utf-8")).hexdigest()


def check_compatible(clean: LoadedModel, backdoored: LoadedModel) -> None:
    """Refuse, with the mismatch named, two models whose parts cannot be swapped meaningfully.

    Checked: the config fields in ``CONFIG_FIELDS`` (model type, hidden size, layers, heads,
    vocabulary size, ...), every parameter's name and shape, and the tokenizers (same vocabulary,
    compared by size and a SHA-256 of the token->id table, and the same ids for a probe string, so
    that one tokenization serves all four models).
    """
    a, b = clean.model.config, backdoored.model.config
    for name in CONFIG_FIELDS:
        va, vb = getattr(a, name, None), getattr(b, name, None)
        if va != vb:
            raise TrojanScopeError(
                f"cannot swap embeddings: the clean model has {FIELD_NAMES[name]} {va!r} but the backdoored "
                f"model has {vb!r}. The swap needs two models of the same architecture, width, depth and "
                "vocabulary (e.g. both fine-tuned from the same backbone)"
            )
    sa = {k: tuple(v.shape) for k, v in clean.model.state_dict().items()}
    sb = {k: tuple(v.shape) for k, v in backdoored.model.state_dict().items()}
    if sa.keys() != sb.keys():
        only = sorted(sa.keys() ^ sb.keys())[:3]
        raise TrojanScopeError(f"cannot swap embeddings: the two models have different parameters (e.g. {only}); "
                               "they must have the same architecture")
    for k, shape in sa.items():
        if shape != sb[k]:
            raise TrojanScopeError(f"cannot swap embeddings: parameter {k} has shape {shape} in the clean model "
                                   f"but {sb[k]} in the backdoored model")
    na, ha = _vocab_digest(clean.tokenizer)
    nb, hb = _vocab_digest(backdoored.tokenizer)
    if (na, ha) != (nb, hb):
        extra = "" if na != nb else " (same size, different tokens or ids)"
        raise TrojanScopeError(
            f"cannot swap embeddings: the tokenizers have different vocabularies: {na} tokens (clean) vs {nb} "
            f"(backdoored){extra}. Embedding rows only correspond when the vocabularies are identical"
        )
    ia = clean.tokenizer(TOKENIZER_PROBE)["input_ids"]
    ib = backdoored.tokenizer(TOKENIZER_PROBE)["input_ids"]
    if ia != ib:
        raise TrojanScopeError("cannot swap embeddings: the two tokenizers share a vocabulary but tokenize text "
                               "differently (e.g. lower-casing or normalization); use models with the same tokenizer")


def _share(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module``'s structure (new module objects, so parts can be replaced) that shares its parameters
    and buffers instead of copying them: a hybrid costs no weight memory. Hybrids are for evaluation; training one
    would train the models it was made from."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def swap_embeddings(receiver: torch.nn.Module, donor: torch.nn.Module) -> torch.nn.Module:
    """``receiver`` with ``donor``'s embeddings module, for evaluation (weights are shared, not copied).

    ``swap_embeddings(BD, CL)`` is the seed's ``CL_emb + BD_enc``; ``swap_embeddings(CL, BD)``
    is ``BD_emb + CL_enc``. Neither input is modified.
    """
    hybrid = _share(receiver)
    architecture(hybrid).embeddings = _share(architecture(donor).embeddings)
    hybrid.eval()
    return hybrid


def depth_hybrid(bottom: torch.nn.Module, top: torch.nn.Module, k: int) -> torch.nn.Module:
    """``bottom``'s embeddings and first ``k`` layer units under ``top``'s remaining units and top (weights shared).

    ``k = 0`` is ``swap_embeddings(top, bottom)``; ``k = L`` (the number of units) is a copy of
    ``bottom`` itself, head included (the top stage travels with the last unit). For ALBERT the
    embedding-to-hidden projection comes from ``bottom`` whenever ``k >= 1``.
    """
    n = num_units(top)
    if not 0 <= k <= n:
        raise TrojanScopeError(f"depth k={k} is outside 0..{n}")
    if k == n:
        out = _share(bottom)
        out.eval()
        return out
    hybrid = swap_embeddings(top, bottom)
    arch, donor = architecture(hybrid), architecture(bottom)
    units, donor_units = arch.units, donor.units
    for i in range(k):
        units[i] = _share(donor_units[i])
    if k >= 1 and donor.embedding_projection is not None:
        arch.embedding_projection = _share(donor.embedding_projection)
    hybrid.eval()
    return hybrid


def num_units(model: torch.nn.Module) -> int:
    """The number of swappable layer units ``L`` (depth hybrids run ``k = 0..L``)."""
    return len(architecture(model).units)
