"""DistilBERT (``DistilBertModel``, ``DistilBertForSequenceClassification``): ``transformer.layer`` of
``TransformerBlock`` (self-attention ``attention.{q,k,v,out}_lin``; FFN ``ffn.lin1`` and ``ffn.lin2``), no
pooler, and a head ``classifier(dropout(relu(pre_classifier(h_cls))))``."""

from __future__ import annotations

import torch

from trojanscope.models.arch.base import FFN, Arch, AttentionSite


class DistilBertArch(Arch):
    model_type = "distilbert"
    name = "DistilBERT"

    @property
    def units(self) -> torch.nn.ModuleList:
        return self.base.transformer.layer

    def attention(self, layer: torch.nn.Module) -> AttentionSite:
        att = layer.attention
        return AttentionSite.of(att.q_lin, att.k_lin, att.v_lin, att.out_lin, self.num_heads)

    def ffn(self, layer: torch.nn.Module) -> FFN:
        return FFN(layer.ffn.lin1, layer.ffn.lin2)

    @property
    def pooler(self) -> torch.nn.Module | None:
        return None

    @property
    def head(self) -> list[torch.nn.Module]:
        m = self.model
        return [m.pre_classifier, m.dropout, m.classifier] if self.has_head else []

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The [CLS] state (``pre_classifier``'s input)."""
        return hidden[:, 0]

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        self.require_head()
        m = self.model
        return m.classifier(m.dropout(torch.relu(m.pre_classifier(self.head_input(hidden)))))
