"""Each architecture's modules, described once: one module per model type (``bert``, ``roberta``,
``distilbert``, ``albert``), as transformers keeps one per model.

``architecture(model)`` returns the :class:`Arch` of a loaded model, picked by ``model.config.model_type``:
its units and layers (``units``, ``layers``, ``shares_layers`` for ALBERT's weights shared across depth), each
layer's self-attention (:class:`AttentionSite`: projections and head layout) and feed-forward block
(:class:`FFN`), the embeddings (and ALBERT's projection to the layers' width), the pooler, the classification
head and how a layer's hidden states reach it (``head_input``, ``classify``). Every reader of a model's
structure (the embedding swap, the representation, re-initialisation, fine-pruning, PURE, ...) asks here
instead of branching on the model type. A model type without a description is refused, by name.
"""

from __future__ import annotations

import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch.albert import AlbertArch
from trojanscope.models.arch.base import FFN, Arch, AttentionSite
from trojanscope.models.arch.bert import BertArch
from trojanscope.models.arch.distilbert import DistilBertArch
from trojanscope.models.arch.roberta import RobertaArch

ARCHS: dict[str, type[Arch]] = {a.model_type: a for a in (BertArch, RobertaArch, DistilBertArch, AlbertArch)}
SUPPORTED_TYPES = tuple(ARCHS)  # the model types TrojanScope loads and analyses


def arch_class(model_type: str) -> type[Arch]:
    """The description class of ``model_type``, refusing a type without one (the supported ones named)."""
    cls = ARCHS.get(model_type)
    if cls is None:
        raise TrojanScopeError(f"TrojanScope does not know the architecture of a {model_type!r} model; supported "
                               f"model types: {', '.join(SUPPORTED_TYPES)}")
    return cls


def architecture(model: torch.nn.Module) -> Arch:
    """The :class:`Arch` of ``model`` (a transformers model of a supported type), by ``model.config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise TrojanScopeError(f"{type(model).__name__} has no config.model_type; TrojanScope reads transformers "
                               f"models of the types {', '.join(SUPPORTED_TYPES)}")
    return arch_class(str(model_type))(model)


__all__ = ["ARCHS", "SUPPORTED_TYPES", "Arch", "AttentionSite", "FFN", "arch_class", "architecture",
           "AlbertArch", "BertArch", "DistilBertArch", "RobertaArch"]
