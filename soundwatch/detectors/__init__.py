"""Anomaly detectors. Importing this package registers every built-in detector.

Calling the package, ``soundwatch.detectors()``, returns the registered detectors by name.
"""

import sys
import types

from soundwatch.detectors import (  # noqa: F401  (registration)
    conv,
    dcase2020_ae,
    decoders,
    embedding,
    ensemble,
    id_classifier,
    mahalanobis,
    mlp_ae,
    recurrent,
    vae,
)
from soundwatch.detectors.base import Detector
from soundwatch.detectors.registry import available, create, get, register

__all__ = ["Detector", "available", "create", "get", "register"]


class _DetectorsModule(types.ModuleType):
    """``soundwatch.detectors()`` (the Python API's listing) is this package called."""

    def __call__(self) -> dict[str, type[Detector]]:
        return available()


sys.modules[__name__].__class__ = _DetectorsModule
