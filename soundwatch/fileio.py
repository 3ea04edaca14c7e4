"""Atomic file writes: a file is either its old self or complete, never half written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files with mode 0600; finished files get the usual 0666 & ~umask.
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The parent folder is created. On error the temporary file is removed and ``path``
    is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line endings atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def check_writable(folder: str | os.PathLike, option: str = "--out") -> None:
    """Refuse, before any long work, a folder that cannot be written.

    Creates and removes a probe file in ``folder``, or, when the folder does not exist
    yet, in its nearest existing ancestor (where it would be created). Raises
    :class:`~soundwatch.errors.ConfigError` naming the folder and ``option``.
    """
    from soundwatch.errors import ConfigError

    folder = Path(os.path.abspath(folder))
    target = folder
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        if not target.is_dir():
            raise NotADirectoryError(f"{target} is not a folder")
        fd, probe = tempfile.mkstemp(dir=target, prefix=".soundwatch-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot write to {folder} ({reason}); choose another {option}") from None
