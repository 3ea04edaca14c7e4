"""Anomaly detectors, registered by name.

Importing this package imports no detector module (and no torch): each built-in
detector's module is imported when that detector is first created or loaded (see
:mod:`soundwatch.detectors.registry`). :class:`Detector` itself is imported on first
access, so that listing the detectors does not import the threshold fitting (scipy).
"""

from __future__ import annotations

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
