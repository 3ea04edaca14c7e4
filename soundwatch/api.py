"""The Python API: the verbs ``import soundwatch`` exposes (imported on first use).

>>> import soundwatch                                        # doctest: +SKIP
>>> detector = soundwatch.create("logmel-mahalanobis")       # doctest: +SKIP
>>> detector.fit(soundwatch.discover("data", "slider", "train"))  # doctest: +SKIP
>>> detector.score("new_recordings/")                        # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from soundwatch.data.clips import Clip
from soundwatch.data.datasets import discover as _discover
from soundwatch.detectors.base import Detector
from soundwatch.detectors.registry import DEFAULT_DETECTOR
from soundwatch.detectors.registry import create as _create
from soundwatch.evaluation.protocol import Evaluation
from soundwatch.evaluation.protocol import evaluate as _evaluate


def create(name: str, **params: Any) -> Detector:
    """A new, unfitted detector; ``soundwatch.detectors()`` lists the names and
    ``soundwatch.detectors()[name].param_spec()`` the parameters."""
    return _create(name, **params)


def load(path: str | os.PathLike) -> Detector:
    """A trained detector from a model file written by ``save``, ``soundwatch train``
    or ``soundwatch evaluate``."""
    return Detector.load(path)


def discover(
    root: str | os.PathLike, machine: str | None = None, split: str | None = None
) -> list[Clip]:
    """The clips under a data folder, optionally of one machine type and split
    (``"train"`` or ``"test"``); see :func:`soundwatch.data.datasets.discover`."""
    return _discover(root, machine, split)


def evaluate(
    root: str | os.PathLike,
    machine: str,
    detector: str | Detector = DEFAULT_DETECTOR,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    **params: Any,
) -> Evaluation:
    """Train on ``ROOT/MACHINE/train``, score ``ROOT/MACHINE/test`` and compute the
    DCASE 2020 Task 2 metrics.

    Parameters
    ----------
    root : path-like
        Data-set root holding ``MACHINE/train`` and ``MACHINE/test``.
    machine : str
        Machine type, e.g. ``"slider"``.
    detector : str or Detector
        A registered name (created with ``params``) or an unfitted detector.
    out : path-like, optional
        Folder for the DCASE files, ``result.json`` and the model; without it they are
        written to a temporary folder that is removed afterwards.
    overwrite : bool
        Replace the results in ``out``.

    Returns
    -------
    Evaluation
        ``result`` (the ``result.json`` content: per-ID AUC and pAUC, means, ...),
        ``out_dir`` (None without ``out``) and the fitted ``detector``.
    """
    if isinstance(detector, str):
        detector = _create(detector, **params)
    elif params:
        raise TypeError("parameters go with a detector name, not a detector object")
    if out is not None:
        return _evaluate(Path(root), machine, detector, Path(out), overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="soundwatch-evaluate-") as folder:
        evaluation = _evaluate(Path(root), machine, detector, Path(folder) / "run")
    evaluation.out_dir = None
    return evaluation
