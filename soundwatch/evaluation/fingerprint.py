"""Fingerprints of everything that determines an evaluation's result.

``bench`` compares the fingerprint stored in a result folder with the one it would
produce now: equal means the folder can be reused, different means it must be rerun.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from soundwatch import __version__
from soundwatch.data.datasets import discover

# The parts of a fingerprint, in the order a difference is reported.
FIELDS = (
    "detector",
    "params",
    "machine_type",
    "n_train",
    "data_root",
    "data_digest",
    "soundwatch_version",
)


def data_digest(root: str | os.PathLike, machine_type: str) -> str:
    """SHA-256 (16 hex digits) of the clip list of one machine type under ``root``:
    each file's path relative to ``root``, size and modification time."""
    root = Path(os.path.abspath(root))
    digest = hashlib.sha256()
    for clip in discover(root, machine_type):
        path = Path(os.path.abspath(clip.path))
        stat = path.stat()
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        digest.update(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def fingerprint(
    root: str | os.PathLike,
    machine_type: str,
    detector: str,
    params: dict,
    n_train: int | None = None,
) -> dict:
    """The fingerprint of evaluating ``detector`` with its full ``params`` (defaults
    included, as ``Detector.get_params`` gives them) on ``machine_type`` under ``root``,
    trained on the first ``n_train`` normals per ID (None: all of them)."""
    return {
        "detector": detector,
        "params": dict(sorted(params.items())),
        "machine_type": machine_type,
        "n_train": n_train,
        "data_root": os.path.abspath(root),
        "data_digest": data_digest(root, machine_type),
        "soundwatch_version": __version__,
    }


def differences(stored: dict | None, current: dict) -> list[str]:
    """Fingerprint fields that differ, e.g. ``["params (epochs)"]``; every field when
    nothing is stored (a folder from before fingerprints)."""
    if not stored:
        return ["no fingerprint stored"]
    found = []
    for key in FIELDS:
        if stored.get(key) == current.get(key):
            continue
        if key == "params":
            old, new = stored.get(key) or {}, current.get(key) or {}
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            found.append(f"params ({', '.join(changed)})")
        else:
            found.append(key)
    return found
