"""The sentence representation and each architecture's classification head, written once.

``sentence_representation`` is what POR sets, what the embedding swap compares and what a scanner
or a defense reads: the last layer's first-position state (``cls``) or the pooler output
(``pooler``: BERT's ``tanh(W h_cls)``, ALBERT's ``pooler_activation(pooler(h_cls))``, a bare
RoBERTa's pooler). ``classify_hidden`` applies a classifier's own head to any layer's hidden
states (LWP's shared head at every layer), mirroring the ``*ForSequenceClassification`` heads of
transformers for BERT, RoBERTa, DistilBERT and ALBERT (each described in ``models.arch``); tests
check both against the models' own ``pooler_output`` and ``logits``.
"""

from __future__ import annotations

import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import architecture

REPRESENTATIONS = ("cls", "pooler")


def has_pooler(model: torch.nn.Module) -> bool:
    """Whether the (base) model carries a pooler: BERT and ALBERT classifiers, bare BERT/RoBERTa/ALBERT."""
    return architecture(model).pooler is not None


def pool(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The pooler output of ``hidden`` (``[batch, seq, width]``, usually the last layer)."""
    return architecture(model).pool(hidden)


def sentence_representation(model: torch.nn.Module, hidden: torch.Tensor, kind: str = "cls") -> torch.Tensor:
    """``[batch, width]``: the first-position state (``cls``) or the pooler output (``pooler``) of
    ``hidden`` (the last layer's hidden states, or any layer's)."""
    if kind == "cls":
        return hidden[:, 0]
    if kind == "pooler":
        return pool(model, hidden)
    raise TrojanScopeError(f"unknown representation {kind!r}; allowed: {', '.join(REPRESENTATIONS)}")


def check_representation(model: torch.nn.Module, kind: str) -> None:
    """Fail early (before any forward) when ``model`` cannot give the ``kind`` representation."""
    if kind not in REPRESENTATIONS:
        raise TrojanScopeError(f"unknown representation {kind!r}; allowed: {', '.join(REPRESENTATIONS)}")
    if kind == "pooler" and not has_pooler(model):
        raise TrojanScopeError(f"a {model.config.model_type!r} {type(model).__name__} has no pooler; use the "
                               "representation 'cls' (the last layer's first-position state)")


def classify_hidden(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from hidden states ``[batch, seq, width]`` through ``model``'s classification head."""
    return architecture(model).classify(hidden)
