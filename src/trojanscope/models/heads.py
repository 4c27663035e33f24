"""One type for a set of attention heads: :class:`HeadSet`, 0-based ``(layer, head)`` pairs.

Heads are written down in two formats on disk, and both stay as they are:

- **TAL's dict** (``tal_heads`` in a model card, PURE's ``pruned_heads`` in its record, PURE's ``--heads``):
  1-based layer (a string key in JSON) -> 0-based heads, ``{"3": [0, 1], "6": [2]}``;
  :meth:`HeadSet.from_tal_dict` / :meth:`HeadSet.to_tal_dict`.
- **The scan's pairs** (``heads`` in a scan result): ``[[layer (1-based), head (0-based)], ...]``;
  :meth:`HeadSet.from_pairs1` / :meth:`HeadSet.to_pairs1`.

In memory every head is a 0-based ``(layer, head)`` pair, as the attention tensors index them
(``[batch, layers, heads, seq, seq]``): iterate a :class:`HeadSet` for the pairs, :meth:`HeadSet.by_layer` for
0-based layer -> heads, :meth:`HeadSet.mask` for a ``[layers, heads]`` boolean array and
:meth:`HeadSet.from_mask` back.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from trojanscope.errors import TrojanScopeError


def _index(value: Any, what: str) -> int:
    """``value`` as an int when it is an integer (a Python or NumPy integer, or a string of digits for JSON keys)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise TrojanScopeError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, bool):
        raise TrojanScopeError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TrojanScopeError(f"{what} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class HeadSet:
    """A set of attention heads as sorted, unique 0-based ``(layer, head)`` pairs (module docstring).

    ``HeadSet([(0, 1), (2, 0)])`` holds head 1 of the first layer and head 0 of the third; equal sets compare
    equal and hash alike whatever order the pairs came in."""

    pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        out = set()
        for pair in self.pairs:
            try:
                layer, head = pair
            except (TypeError, ValueError):
                raise TrojanScopeError(f"a head is a (layer, head) pair, got {pair!r}") from None
            layer, head = _index(layer, "a layer"), _index(head, "a head")
            if layer < 0 or head < 0:
                raise TrojanScopeError(f"0-based (layer, head) pairs are non-negative, got ({layer}, {head})")
            out.add((layer, head))
        object.__setattr__(self, "pairs", tuple(sorted(out)))

    # --- the on-disk formats ---------------------------------------------------------------------------

    @classmethod
    def from_tal_dict(cls, heads: Mapping[Any, Iterable[Any]]) -> "HeadSet":
        """From TAL's dict: 1-based layer (``"3"`` or ``3``) -> 0-based heads."""
        pairs = []
        for layer, hs in heads.items():
            layer1 = _index(layer, "a layer")
            if layer1 < 1:
                raise TrojanScopeError(f"layers are numbered from 1 here, got layer {layer1} in {dict(heads)!r}")
            pairs += [(layer1 - 1, h) for h in hs]
        return cls(tuple(pairs))

    def to_tal_dict(self) -> dict[str, list[int]]:
        """TAL's dict: ``{"<1-based layer>": [0-based heads, ascending]}``, layers ascending, no empty layer."""
        return {str(layer + 1): hs for layer, hs in self.by_layer().items()}

    @classmethod
    def from_pairs1(cls, pairs: Iterable[Iterable[Any]]) -> "HeadSet":
        """From the scan's ``[[layer (1-based), head (0-based)], ...]``."""
        out = []
        for pair in pairs:
            try:
                layer1, head = pair
            except (TypeError, ValueError):
                raise TrojanScopeError(f"a head is a [layer, head] pair, got {pair!r}") from None
            layer1 = _index(layer1, "a layer")
            if layer1 < 1:
                raise TrojanScopeError(f"layers are numbered from 1 here, got layer {layer1} in {pair!r}")
            out.append((layer1 - 1, head))
        return cls(tuple(out))

    def to_pairs1(self) -> list[list[int]]:
        """The scan's ``[[layer (1-based), head (0-based)], ...]``, ascending (layer, then head)."""
        return [[layer + 1, head] for layer, head in self.pairs]

    # --- arrays ------------------------------------------------------------------------------------------

    @classmethod
    def from_mask(cls, mask: Any) -> "HeadSet":
        """The heads where a ``[layers, heads]`` array is true (non-zero)."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise TrojanScopeError(f"a head mask is [layers, heads], got shape {m.shape}")
        return cls(tuple((int(layer), int(head)) for layer, head in zip(*np.nonzero(m))))

    def mask(self, layers: int, heads: int) -> np.ndarray:
        """``[layers, heads]`` boolean array, true at the set's heads; heads outside that shape are refused."""
        out = np.zeros((layers, heads), dtype=bool)
        for layer, head in self.pairs:
            if layer >= layers or head >= heads:
                raise TrojanScopeError(f"head {head} of layer {layer + 1} is outside a model of {layers} layers and "
                                       f"{heads} heads per layer")
            out[layer, head] = True
        return out

    def by_layer(self) -> dict[int, list[int]]:
        """0-based layer -> its 0-based heads (ascending), layers ascending, no empty layer."""
        out: dict[int, list[int]] = {}
        for layer, head in self.pairs:
            out.setdefault(layer, []).append(head)
        return out

    # --- a set of pairs ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __contains__(self, pair: object) -> bool:
        try:
            layer, head = pair  # type: ignore[misc]
            return (operator.index(layer), operator.index(head)) in self.pairs
        except (TypeError, ValueError):
            return False
