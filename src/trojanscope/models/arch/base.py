"""What an architecture description says: :class:`Arch`, and the pieces it hands out (:class:`AttentionSite`,
:class:`FFN`). One subclass per model type lives next to this module (``bert.py``, ``roberta.py``,
``distilbert.py``, ``albert.py``); ``trojanscope.models.arch.architecture(model)`` picks one.

Words used throughout:

- a **unit** is a block that owns weights and can be swapped, re-initialised or pruned as a whole: a
  transformer layer, or for ALBERT a shared layer *group* (``units``, bottom to top);
- a **layer** is one transformer layer as the forward pass applies it: ``layers`` lists, bottom to top, the
  layer module applied at each depth, one per hidden state after the embeddings' and one per attention map
  (as transformers 5 records them). ALBERT applies its groups again and again, so its ``layers`` repeat the
  same module objects and ``shares_layers`` is true: a change to one of its layers changes every depth that
  applies it.

An ``Arch`` is bound to one model and reads its modules when asked (properties, never cached), so it sees
modules replaced after it was made (the embedding swap's hybrids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from trojanscope.errors import TrojanScopeError


@dataclass(frozen=True)
class AttentionSite:
    """One layer's self-attention: its query/key/value projections, its output projection (whose input is the
    heads' concatenated context), and its head layout (``heads`` heads of ``head_dim`` features each)."""

    query: torch.nn.Linear
    key: torch.nn.Linear
    value: torch.nn.Linear
    output: torch.nn.Linear
    heads: int
    head_dim: int

    @classmethod
    def of(cls, query: torch.nn.Linear, key: torch.nn.Linear, value: torch.nn.Linear, output: torch.nn.Linear,
           heads: int) -> "AttentionSite":
        if query.out_features % heads:
            raise TrojanScopeError(f"cannot split {query.out_features} attention features into {heads} heads")
        return cls(query, key, value, output, heads, query.out_features // heads)

    def head_slice(self, head: int) -> torch.Tensor:
        """The features of head ``head`` (0-based) in the projections' outputs and the output's input."""
        return torch.arange(head * self.head_dim, (head + 1) * self.head_dim)


@dataclass(frozen=True)
class FFN:
    """One layer's feed-forward block: ``inner`` (hidden -> intermediate; an activation follows it) and
    ``outer`` (intermediate -> hidden), whose input is exactly the post-activation intermediate (what
    fine-pruning measures and prunes)."""

    inner: torch.nn.Linear
    outer: torch.nn.Linear

    @property
    def size(self) -> int:
        """The number of intermediate neurons."""
        return int(self.inner.out_features)


class Arch:
    """The description of one model type, bound to one loaded transformers model (``model``: a
    ``*ForSequenceClassification`` classifier or a bare encoder). Subclasses fill in the structure."""

    model_type: ClassVar[str] = ""
    name: ClassVar[str] = ""  # as people write it: "BERT"
    unit_name: ClassVar[str] = "layer"  # what one unit is ("layer group" for ALBERT)
    shares_layers: ClassVar[bool] = False  # one layer's weights applied at several depths (ALBERT)
    position_offset: ClassVar[int] = 0  # position-table rows no token can use (RoBERTa reserves padding_idx + 1)

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    # --- sizes (from the config) ----------------------------------------------------------------------

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def base(self) -> torch.nn.Module:
        """The bare encoder (``model.base_model``; the model itself when it is one)."""
        return getattr(self.model, "base_model", self.model)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    # --- the encoder ----------------------------------------------------------------------------------

    @property
    def embeddings(self) -> torch.nn.Module:
        """The input-embedding module (word, position and token-type embeddings and their LayerNorm)."""
        emb = getattr(self.base, "embeddings", None)
        if not isinstance(emb, torch.nn.Module):
            raise TrojanScopeError(f"{type(self.model).__name__} has no base_model.embeddings module")
        return emb

    @embeddings.setter
    def embeddings(self, module: torch.nn.Module) -> None:
        self.base.embeddings = module

    @property
    def embedding_projection(self) -> torch.nn.Module | None:
        """The map from the embeddings' width to the layers' (ALBERT's ``embedding_hidden_mapping_in``), or
        ``None`` where the embeddings already have the layers' width."""
        return None

    @embedding_projection.setter
    def embedding_projection(self, module: torch.nn.Module) -> None:
        raise TrojanScopeError(f"a {self.name} model has no embedding projection")

    @property
    def units(self) -> torch.nn.ModuleList:
        """The weight-owning blocks, bottom to top: the transformer layers (ALBERT: its layer groups)."""
        raise NotImplementedError

    def unit_layers(self, unit: torch.nn.Module) -> list[torch.nn.Module]:
        """The transformer layers inside ``unit`` (one, except in an ALBERT group)."""
        return [unit]

    @property
    def layers(self) -> list[torch.nn.Module]:
        """The layer applied at each depth, bottom to top (module docstring); ALBERT repeats its shared ones."""
        return [layer for unit in self.units for layer in self.unit_layers(unit)]

    @property
    def num_layers(self) -> int:
        """The depth: hidden states after the embeddings' (and attention maps) one forward pass yields."""
        return len(self.layers)

    def attention(self, layer: torch.nn.Module) -> AttentionSite:
        """The self-attention of ``layer`` (one of ``layers``)."""
        raise NotImplementedError

    def ffn(self, layer: torch.nn.Module) -> FFN:
        """The feed-forward block of ``layer`` (one of ``layers``)."""
        raise NotImplementedError

    # --- the top ----------------------------------------------------------------------------------------

    @property
    def pooler(self) -> torch.nn.Module | None:
        """The pooler (on the base model), or ``None``: DistilBERT has none, nor does a RoBERTa classifier."""
        return getattr(self.base, "pooler", None)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooler output of ``hidden`` (``[batch, seq, width]``, usually the last layer): ``[batch, width]``."""
        pooler = self.pooler
        if pooler is None:
            raise TrojanScopeError(f"a {self.model_type!r} {type(self.model).__name__} has no pooler; use the "
                                   "representation 'cls' (the last layer's first-position state)")
        return pooler(hidden)  # BERT's and RoBERTa's poolers read hidden[:, 0] themselves

    @property
    def has_head(self) -> bool:
        """Whether the model carries a classification head (a ``*ForSequenceClassification``)."""
        return isinstance(getattr(self.model, "classifier", None), torch.nn.Module)

    @property
    def head(self) -> list[torch.nn.Module]:
        """The classification head's modules on top of the base model, in the order they apply (dropouts
        included); empty for a bare encoder."""
        raise NotImplementedError

    @property
    def head_linears(self) -> list[torch.nn.Linear]:
        """The head's linear layers in order: the first receives ``hidden_size`` features, the last gives the
        logits."""
        return [m for module in self.head for m in module.modules() if isinstance(m, torch.nn.Linear)]

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the head's first module receives, from a layer's hidden states ``[batch, seq, width]``."""
        raise NotImplementedError

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from a layer's hidden states ``[batch, seq, width]`` through the model's own head."""
        self.require_head()
        out = self.head_input(hidden)
        for module in self.head:
            out = module(out)
        return out

    def require_head(self) -> None:
        if not self.has_head:
            raise TrojanScopeError(f"{type(self.model).__name__} has no classification head")
