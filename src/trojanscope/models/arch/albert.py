"""ALBERT (``AlbertModel``, ``AlbertForSequenceClassification``): factorised embeddings (``embedding_size``)
projected to the layers' width by ``encoder.embedding_hidden_mapping_in``, then ``num_hidden_layers``
applications of ``encoder.albert_layer_groups`` (usually one group, applied at every depth; depth ``i`` applies
group ``int(i / (num_hidden_layers / num_hidden_groups))``, each of whose ``inner_group_num`` ``AlbertLayer``s
runs in turn). The weights are shared across depth: ``units`` are the groups, ``layers`` repeat the same
``AlbertLayer`` objects, ``shares_layers`` is true. Each ``AlbertLayer`` has self-attention
``attention.{query,key,value,dense}`` and the FFN ``ffn`` and ``ffn_output``. The pooler is ``pooler`` (a
Linear on [CLS]) followed by ``pooler_activation`` (tanh); the head is ``classifier(dropout(pooled))``."""

from __future__ import annotations

import torch

from trojanscope.models.arch.base import FFN, Arch, AttentionSite


class AlbertArch(Arch):
    model_type = "albert"
    name = "ALBERT"
    unit_name = "layer group"
    shares_layers = True

    @property
    def embedding_projection(self) -> torch.nn.Module | None:
        return self.base.encoder.embedding_hidden_mapping_in

    @embedding_projection.setter
    def embedding_projection(self, module: torch.nn.Module) -> None:
        self.base.encoder.embedding_hidden_mapping_in = module

    @property
    def units(self) -> torch.nn.ModuleList:
        return self.base.encoder.albert_layer_groups

    def unit_layers(self, unit: torch.nn.Module) -> list[torch.nn.Module]:
        return list(unit.albert_layers)

    def group_of_depth(self, depth: int) -> int:
        """The group applied at ``depth`` (0-based, ``< num_hidden_layers``), as ``AlbertTransformer`` picks it."""
        n, groups = int(self.config.num_hidden_layers), int(self.config.num_hidden_groups)
        return int(depth / (n / groups))

    @property
    def layers(self) -> list[torch.nn.Module]:
        units = self.units
        return [layer for depth in range(int(self.config.num_hidden_layers))
                for layer in self.unit_layers(units[self.group_of_depth(depth)])]

    def attention(self, layer: torch.nn.Module) -> AttentionSite:
        att = layer.attention
        return AttentionSite.of(att.query, att.key, att.value, att.dense, self.num_heads)

    def ffn(self, layer: torch.nn.Module) -> FFN:
        return FFN(layer.ffn, layer.ffn_output)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        pooler = self.pooler
        if pooler is None:
            return super().pool(hidden)  # refuses
        return self.base.pooler_activation(pooler(hidden[:, 0]))

    @property
    def head(self) -> list[torch.nn.Module]:
        return [self.model.dropout, self.model.classifier] if self.has_head else []

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooler output (the [CLS] state where the pooler is missing)."""
        return self.pool(hidden) if self.pooler is not None else hidden[:, 0]
