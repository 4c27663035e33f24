"""One registry shape for everything chosen by name: attacks, defenses, scanners.

A registry maps a name to an entry; the CLI's ``choices``, the dashboard's select boxes and the
pipelines all read the same object, so a name cannot be offered in one place and unknown in
another. Unknown names are a ``TrojanScopeError`` that lists what is allowed.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from trojanscope.errors import TrojanScopeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``what`` names the kind in error messages)."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise TrojanScopeError(f"unknown {self.what} {name!r}; allowed: {', '.join(self._items)}") from None

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        return [n for n, e in self._items.items() if where is None or where(e)]

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __len__(self) -> int:
        return len(self._items)
