"""The model file: tensors in safetensors, metadata as JSON in the safetensors header.

One file holds everything needed to score with a trained detector. Loading never
unpickles anything: safetensors stores raw little-endian arrays, and the metadata is a
JSON string under the ``soundwatch`` key of the header. The header also holds a digest
of each metadata field (``integrity``), so that a hand-edited field is refused by name
on loading instead of failing later with a confusing message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from soundwatch import __version__
from soundwatch.errors import ModelFileError
from soundwatch.fileio import atomic_path

MODEL_FORMAT = "soundwatch-model"
# Bump when a model file written by this version cannot be read the same way by an older
# reader, or an older file can no longer be read by this one.
MODEL_FORMAT_VERSION = 1
MODEL_SUFFIX = ".safetensors"
# Top-level metadata fields whose items are digested one by one (so an error can name
# e.g. ``params.n_mels``); other fields are digested whole.
_ITEMIZED_FIELDS = ("params", "state", "threshold", "fit_info")


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def metadata_digests(metadata: dict) -> dict[str, str]:
    """Digest of every metadata field, e.g. ``{"detector": ..., "params.n_mels": ...}``."""
    digests = {}
    for key, value in metadata.items():
        if key == "integrity":
            continue
        if key in _ITEMIZED_FIELDS and isinstance(value, dict):
            digests.update({f"{key}.{k}": _digest(v) for k, v in value.items()})
        digests[key] = _digest(value)
    return digests


def edited_fields(metadata: dict) -> list[str]:
    """Fields whose digest no longer matches the one written with the file, most
    specific first; empty for an untouched file or one written without digests."""
    stored = metadata.get("integrity")
    if not isinstance(stored, dict):
        return []
    current = metadata_digests(metadata)
    changed = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
    specific = [k for k in changed if "." in k]
    covered = {k.split(".", 1)[0] for k in specific}
    return specific + [k for k in changed if "." not in k and k not in covered]


def write_model_file(path: Path, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    """Write tensors and metadata atomically to ``path``."""
    header = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "soundwatch_version": __version__,
        **metadata,
    }
    header["integrity"] = metadata_digests(header)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"soundwatch": json.dumps(header)})


def read_model_file(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read ``(tensors, metadata)``, refusing files of another format version."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="np") as handle:
            raw = (handle.metadata() or {}).get("soundwatch")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a soundwatch model file ({exc})") from None
    if raw is None:
        raise ModelFileError(f"{path} is a safetensors file but not a soundwatch model")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        raise ModelFileError(f"{path} has corrupt soundwatch metadata") from None
    if metadata.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a soundwatch model file")
    version = metadata.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by soundwatch {metadata.get('soundwatch_version', '?')} in "
            f"model format {version}; this soundwatch {__version__} reads format "
            f"{MODEL_FORMAT_VERSION}: retrain the model with this version"
        )
    edited = edited_fields(metadata)
    if edited:
        raise ModelFileError(
            f"{path}: metadata field {edited[0]} was changed after the model was written "
            "(its digest does not match); restore the file or retrain the model"
        )
    return tensors, metadata
