"""Anomaly detectors, registered by name.

Importing this package imports no detector module (and no torch): each built-in
detector's module is imported when that detector is first created or loaded (see
:mod:`soundwatch.detectors.registry`).
"""

from soundwatch.detectors.base import Detector
from soundwatch.detectors.registry import available, create, get, names, register, summaries

__all__ = ["Detector", "available", "create", "get", "names", "register", "summaries"]
