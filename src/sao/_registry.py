"""A tiny name → object registry: ``REG.register("name", obj)``, ``REG.get(name)``, ``REG.unregister(name)``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders. Unknown names raise ``ValueError`` listing the known ones.

    Args:
        kind: what is registered, used in messages (e.g. ``"sparsify method"``).
        path: where the registry lives, for the hint on how to add to it.
        of: if given, every registered object must be an instance of it (``TypeError`` otherwise).
    """

    def __init__(self, kind: str, path: str, of: type | None = None) -> None:
        self.kind, self.path, self.of = kind, path, of
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name`` (or use as a decorator); re-registering warns."""
        def add(item: T) -> T:
            if self.of is not None and not isinstance(item, self.of):
                raise TypeError(f"a {self.kind} must be an instance of {self.of.__name__}, got {item!r}")
            if name in self._items:
                warnings.warn(f"{self.kind} {name!r} was already registered; overwriting it", stacklevel=3)
            self._items[name] = item
            return item
        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            ValueError: if nothing is registered as ``name`` (the message lists the known names).
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered under it (e.g. to undo a registration in a test).

        Raises:
            ValueError: if nothing is registered as ``name`` (the message lists the known names).
        """
        try:
            return self._items.pop(name)
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def _unknown(self, name: object) -> ValueError:
        return ValueError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())} "
                          f"(add one with {self.path}.register)")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
