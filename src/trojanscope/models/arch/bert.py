"""BERT (``BertModel``, ``BertForSequenceClassification``): ``encoder.layer`` of ``BertLayer`` (self-attention
``attention.self.{query,key,value}`` and ``attention.output.dense``; FFN ``intermediate.dense`` and
``output.dense``), a pooler ``tanh(W h_cls)``, and a head ``classifier(dropout(pooler_output))``."""

from __future__ import annotations

import torch

from trojanscope.models.arch.base import FFN, Arch, AttentionSite


class BertArch(Arch):
    model_type = "bert"
    name = "BERT"

    @property
    def units(self) -> torch.nn.ModuleList:
        return self.base.encoder.layer

    def attention(self, layer: torch.nn.Module) -> AttentionSite:
        att = layer.attention
        return AttentionSite.of(att.self.query, att.self.key, att.self.value, att.output.dense, self.num_heads)

    def ffn(self, layer: torch.nn.Module) -> FFN:
        return FFN(layer.intermediate.dense, layer.output.dense)

    @property
    def head(self) -> list[torch.nn.Module]:
        return [self.model.dropout, self.model.classifier] if self.has_head else []

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooler output (the [CLS] state where the pooler is missing, as transformers does)."""
        return self.pool(hidden) if self.pooler is not None else hidden[:, 0]
