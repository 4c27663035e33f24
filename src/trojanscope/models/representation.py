"""Apply a classifier's own head to any layer's hidden states (LWP: the shared head at every layer).

Each architecture pools differently; this mirrors the ``*ForSequenceClassification`` heads of
transformers for BERT, RoBERTa, DistilBERT and ALBERT so the head can read a lower layer's [CLS].
"""

from __future__ import annotations

import torch

from trojanscope.errors import TrojanScopeError


def classify_hidden(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from hidden states ``[batch, seq, width]`` through ``model``'s classification head."""
    kind = model.config.model_type
    if kind == "bert":
        pooler = model.bert.pooler
        pooled = pooler(hidden) if pooler is not None else hidden[:, 0]
        return model.classifier(model.dropout(pooled))
    if kind == "roberta":
        return model.classifier(hidden)  # RobertaClassificationHead reads hidden[:, 0]
    if kind == "distilbert":
        pooled = torch.relu(model.pre_classifier(hidden[:, 0]))
        return model.classifier(model.dropout(pooled))
    if kind == "albert":
        pooled = model.albert.pooler_activation(model.albert.pooler(hidden[:, 0]))
        return model.classifier(model.dropout(pooled))
    raise TrojanScopeError(f"no layer-wise head for model type {kind!r}; supported: bert, roberta, distilbert, albert")
