"""One generic name registry for detectors, encoders and scorers.

A registry maps a name to a class. Built-in entries can be declared *lazily* as
``name -> "module.path"``: listing the names imports nothing, and the module is imported
the first time that name is looked up (so ``soundwatch detectors`` need not import
torch). Classes register themselves with the :meth:`Registry.register` decorator when
their module is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from soundwatch.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to classes, with optional lazy imports of built-in modules.

    Parameters
    ----------
    kind : str
        What the entries are, for messages: ``"detector"``, ``"encoder"``, ``"scorer"``.
    lazy : mapping of str to str, optional
        Built-in names and the module that registers each of them on import.
    """

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._lazy: dict[str, str] = dict(lazy or {})
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available under ``cls.name``."""
        name = getattr(cls, "name", None)
        if not name:
            raise TypeError(f"{cls.__name__} has no name")
        if name in self._classes and self._classes[name] is not cls:
            raise TypeError(f"{self.kind} name {name!r} is already registered")
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget a class registered at run time (tests do); lazy built-in names stay."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        """Every known name, sorted; imports nothing."""
        return sorted({*self._lazy, *self._classes})

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._classes

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; imports its module on first use.

        Raises
        ------
        ConfigError
            No entry has that name; the message lists the known ones.
        """
        if name not in self._classes and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._classes:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._classes[name]

    def create(self, name: str, **params) -> T:
        """Instantiate the class registered as ``name`` with ``params``."""
        return self.get(name)(**params)

    def available(self) -> dict[str, type[T]]:
        """Every entry as ``{name: class}``, sorted by name (imports lazy modules)."""
        return {name: self.get(name) for name in self.names()}

    def where(self, predicate: Callable[[type[T]], bool]) -> dict[str, type[T]]:
        """The entries whose class satisfies ``predicate``."""
        return {name: cls for name, cls in self.available().items() if predicate(cls)}
