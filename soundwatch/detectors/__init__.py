"""Anomaly detectors, registered by name.

Importing this package imports no detector module (and no torch): each built-in
detector's module is imported when that detector is first created or loaded (see
:mod:`soundwatch.detectors.registry`). :class:`Detector` itself is imported on first
access, so that listing the detectors does not import the threshold fitting (scipy).

Calling the package, ``soundwatch.detectors()``, returns the registered detectors by
name (the Python API's listing; the package and the verb share one name).
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from soundwatch.detectors.registry import available, create, get, names, register, summaries

if TYPE_CHECKING:
    from soundwatch.detectors.base import Detector

__all__ = ["Detector", "available", "create", "get", "names", "register", "summaries"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from soundwatch.detectors.base import Detector

        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """This package, callable: ``soundwatch.detectors()`` lists the detectors."""

    def __call__(self) -> dict[str, type[Detector]]:
        return available()


sys.modules[__name__].__class__ = _CallablePackage
