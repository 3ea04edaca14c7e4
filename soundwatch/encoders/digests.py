"""Checksums of (large) checkpoint files, computed once per file state."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# (resolved path, size, mtime_ns) -> (sha256, md5): checkpoints are hundreds of MB, and
# the same file is hashed again whenever another encoder instance (per-ID detectors ask
# once per machine ID) verifies or identifies it.
_DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {}


def file_digests(path: str | os.PathLike) -> tuple[str, str]:
    """Hex SHA-256 and MD5 of a file, in one pass of 1 MiB reads (memoised per file state)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha256.update(chunk)
                md5.update(chunk)
        _DIGESTS[key] = (sha256.hexdigest(), md5.hexdigest())
    return _DIGESTS[key]
