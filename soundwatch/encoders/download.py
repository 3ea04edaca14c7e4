"""Pretrained checkpoint files for any encoder: find, verify, download, load.

:func:`resolve_checkpoint` looks for a checkpoint in this order:

1. an explicit path (``--param weights=PATH`` on the command line, ``weights=`` in Python);
2. an environment variable (e.g. ``SOUNDWATCH_VGGISH_WEIGHTS``) naming the file, or a
   folder that holds it under its release file name;
3. the user cache, ``$XDG_CACHE_HOME/soundwatch/weights/<file>`` (``~/.cache`` when
   ``XDG_CACHE_HOME`` is unset);
4. a download from the official URL into that cache.

Verification
------------
A checkpoint is pinned by a SHA-256 digest, an MD5 digest (Zenodo publishes MD5s), or
both. The SHA-256 may also be a *prefix* of the digest: torch hub names its files
``<name>-<first hex digits of the SHA-256>.<ext>`` and checks only that prefix, so a
file name such as ``vggish-10086976.pth`` carries its own (short) checksum, used when no
full digest is given. Downloads and every local file that carries the release's file
name are verified; a mismatch is an error, and a mismatching download is deleted. When
nothing is known to verify against, the file is used with a :class:`UserWarning`, and
:class:`~soundwatch.encoders.checkpoint.CheckpointEncoder` identifies it by its SHA-256 in
cache keys.

A local file under *another* name is the user's own checkpoint (fine-tuned, converted,
or random weights for tests) and is used unverified: loading still checks every key and
shape against the architecture (``strict=True``), and :class:`Encoder` identifies such a
file by its SHA-256 in cache keys, so its embeddings never mix with the official ones.

Loading
-------
:func:`load_state_dict` uses ``torch.load(weights_only=True)``, which cannot run code
from the file. Some official checkpoints (PANNs ``Cnn14_16k``) also pickle NumPy arrays
(the training sampler's state) written by NumPy 1.x; the few NumPy globals needed to
rebuild plain arrays are allowed under both their NumPy 1 and NumPy 2 names.
:func:`load_checkpoint` loads a file into a network with ``strict=True``, with a one-line
error naming the missing, unexpected and mis-shaped keys when it does not fit.

The encoder base for networks whose weights are such a file is
:class:`~soundwatch.encoders.checkpoint.CheckpointEncoder`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from soundwatch.encoders.digests import file_digests
from soundwatch.errors import ModelFileError

#: Seconds to wait for the server before a download counts as failed.
DOWNLOAD_TIMEOUT = 60.0
#: The ``weights`` value that builds an encoder with fixed random weights.
RANDOM_WEIGHTS = "random"
#: Seed of those random weights.
RANDOM_SEED = 0

# torch hub's convention: "-<hex>." before the extension is a SHA-256 prefix.
_HUB_HASH = re.compile(r"-([a-f0-9]{8,64})\.")


def weights_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/soundwatch/weights``, or ``~/.cache/soundwatch/weights``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "soundwatch" / "weights"


def weights_env_var(encoder_name: str) -> str:
    """``SOUNDWATCH_<NAME>_WEIGHTS`` for an encoder name (``-`` and ``.`` become ``_``)."""
    return "SOUNDWATCH_" + re.sub(r"[^A-Za-z0-9]", "_", encoder_name).upper() + "_WEIGHTS"


def hub_hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix in a torch-hub style file name (``resnet50-0676ba61.pth``)."""
    match = _HUB_HASH.search(file_name)
    return match.group(1) if match else None


def verify_checkpoint(
    path: Path,
    file_name: str,
    sha256: str | None,
    *,
    md5: str | None = None,
    what: str | None = None,
) -> None:
    """Check ``path`` against the release's checksums.

    Parameters
    ----------
    path : Path
        The file to check.
    file_name : str
        Release file name, for messages and for its torch-hub hash prefix, which is used
        when ``sha256`` is None.
    sha256 : str or None
        Full hex SHA-256, or a prefix of one (at least 8 hex digits).
    md5 : str or None
        Full hex MD5.
    what : str, optional
        How to name the file in messages (default: ``path``).

    Raises
    ------
    ModelFileError
        A digest differs.

    Warns
    -----
    UserWarning
        No checksum is known, so the file is used unverified.
    """
    expected_sha = (sha256 or hub_hash_prefix(file_name) or "").lower() or None
    expected_md5 = (md5 or "").lower() or None
    if expected_sha is None and expected_md5 is None:
        warnings.warn(
            f"no checksum known for {file_name}; using {path} without verification",
            UserWarning,
            stacklevel=3,
        )
        return
    actual_sha, actual_md5 = file_digests(path)
    label = what or str(path)
    if expected_sha is not None and not actual_sha.startswith(expected_sha):
        kind = "sha256" if len(expected_sha) == 64 else "sha256 prefix"
        raise ModelFileError(
            f"{label} is not {file_name}: {kind} {actual_sha[: len(expected_sha)]} "
            f"!= expected {expected_sha} (corrupt or wrong file)"
        )
    if expected_md5 is not None and actual_md5 != expected_md5:
        raise ModelFileError(
            f"{label} is not {file_name}: md5 {actual_md5} != expected {expected_md5} "
            "(corrupt or wrong file)"
        )


def _hint(file_name: str, env_var: str | None, folder: Path) -> str:
    env = f", set {env_var} to it" if env_var else ""
    return (
        f"download {file_name} yourself and pass --param weights=PATH{env}, or put it in {folder}"
    )


def download_checkpoint(
    name: str,
    file_name: str,
    url: str,
    sha256: str | None,
    *,
    md5: str | None = None,
    env_var: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Path:
    """Download a checkpoint into the cache and verify it.

    The file is written to a temporary file in the same folder and renamed into place
    only after it verified, so an interrupted or corrupt download never leaves a file
    under the final name.

    Parameters
    ----------
    name : str
        Model name for messages, e.g. ``"panns-cnn14"``.
    file_name : str
        Release file name; the file is saved as ``cache_dir / file_name``.
    url : str
        Source; any URL urllib opens (``file://`` too: for mirrors and tests).
    sha256, md5 : str or None
        See :func:`verify_checkpoint`.
    env_var : str, optional
        Named in the error message as a way to supply the file by hand.
    cache_dir : str or Path, optional
        Target folder; default :func:`weights_cache_dir`.
    timeout : float
        Seconds to wait for the server.

    Returns
    -------
    Path

    Raises
    ------
    ModelFileError
        The download failed (offline, HTTP error, unwritable cache) or did not verify.
    """
    folder = Path(cache_dir) if cache_dir is not None else weights_cache_dir()
    target = folder / file_name
    hint = _hint(file_name, env_var, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot create weights cache {folder} ({exc}); {hint}") from exc

    fd, tmp_name = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                shutil.copyfileobj(r, out, length=1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelFileError(
                f"cannot download {name} weights {file_name} from {url} ({reason}); {hint}"
            ) from exc
        try:
            verify_checkpoint(tmp, file_name, sha256, md5=md5, what=f"download from {url}")
        except ModelFileError as exc:
            raise ModelFileError(f"{exc}; the download is corrupt and was deleted") from None
        os.replace(tmp, target)
    finally:
        # Only still there when something failed before the rename.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def find_local_checkpoint(file_name: str, env_var: str | None = None) -> Path | None:
    """The checkpoint named by ``env_var`` or in the user cache, if present; never downloads.

    Parameters
    ----------
    file_name : str
        Release file name.
    env_var : str, optional
        Environment variable naming a checkpoint file or a folder holding ``file_name``.

    Returns
    -------
    Path or None
    """
    candidates = [weights_cache_dir() / file_name]
    env = os.environ.get(env_var) if env_var else None
    if env:
        path = Path(env).expanduser()
        candidates.insert(0, path / file_name if path.is_dir() else path)
    return next((p for p in candidates if p.is_file()), None)


def resolve_checkpoint(
    name: str,
    file_name: str,
    url: str,
    sha256: str | None,
    weights: str | os.PathLike | None = None,
    env_var: str | None = None,
    *,
    md5: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Path:
    """Path of a checkpoint: explicit, from ``env_var``, cached, or downloaded.

    Parameters
    ----------
    name : str
        Model name for messages, e.g. ``"vggish"``.
    file_name : str
        Release file name (the name in the cache and in an ``env_var`` folder).
    url : str
        Official download URL, used only when no local file is found.
    sha256 : str or None
        Full SHA-256 or a prefix of one; None falls back to the torch-hub prefix in
        ``file_name``, if any (see :func:`verify_checkpoint`).
    weights : str or path-like, optional
        Explicit checkpoint file; takes precedence over everything else.
    env_var : str, optional
        Environment variable naming a checkpoint file or a folder holding ``file_name``.
    md5 : str, optional
        Full MD5 of the release file.
    timeout : float
        Download timeout in seconds.

    Returns
    -------
    Path
        An existing file; verified if it carries ``file_name`` (see the module notes).

    Raises
    ------
    ModelFileError
        An explicit path or ``env_var`` names a missing file, a checksum mismatches, or
        the file is not local and cannot be downloaded (the message names the URL and
        where to put the file).
    """

    def checked(path: Path) -> Path:
        if path.name == file_name:
            verify_checkpoint(path, file_name, sha256, md5=md5)
        return path

    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelFileError(f"{name} weights file not found: {path}")
        return checked(path)

    env = os.environ.get(env_var) if env_var else None
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            path = path / file_name
        if not path.is_file():
            # A set but wrong variable is a mistake to report, not a reason to download.
            raise ModelFileError(
                f"{env_var}={env} does not name a {name} checkpoint "
                f"(expected a file or a folder containing {file_name})"
            )
        return checked(path)

    cached = weights_cache_dir() / file_name
    if cached.is_file():
        return checked(cached)

    return download_checkpoint(
        name, file_name, url, sha256, md5=md5, env_var=env_var, timeout=timeout
    )


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _numpy_safe_globals() -> list[Any]:
    """NumPy globals needed to unpickle plain arrays, under NumPy 1 and NumPy 2 names."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # NumPy < 1.26 has no numpy._core
        from numpy.core.multiarray import _reconstruct, scalar
    allowed: list[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(_reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    # Unpickling a dtype sets state on an instance of its concrete class (Int64DType...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n[0].isupper()
        ]
    return allowed


def load_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, Any]:
    """Read a state dict with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : str or path-like
        Checkpoint file.
    key : str, optional
        If the file holds a dict with this key whose value is a dict (PANNs: ``"model"``,
        beside ``"iteration"`` and ``"sampler"``), return that value; a bare state dict
        is accepted too.

    Returns
    -------
    dict
        Parameter and buffer names to tensors, on the CPU.

    Raises
    ------
    ModelFileError
        The file cannot be read, or holds no state dict.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise ModelFileError(f"cannot read checkpoint {path}: {first_line(exc)}") from exc
    if key is not None and isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
        state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        wrapped = f" (or a dict with a {key!r} state dict)" if key else ""
        raise ModelFileError(f"{path} is not a state dict{wrapped}")
    return dict(state)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def state_dict_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    """One-line summary of missing, unexpected and mis-shaped keys; '' when they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(getattr(found[k], 'shape', ()))} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(getattr(found[k], "shape", ())) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {items[0]})")
    return ", ".join(parts)


def load_checkpoint(
    network: nn.Module, path: str | os.PathLike, name: str, *, key: str | None = None
) -> nn.Module:
    """Load a checkpoint file into ``network`` with ``strict=True``.

    Parameters
    ----------
    network : nn.Module
        The architecture; its parameters and buffers are overwritten in place.
    path : str or path-like
        Checkpoint file (see :func:`load_state_dict`).
    name : str
        Model name for messages, e.g. ``"vggish"``.
    key : str, optional
        See :func:`load_state_dict`.

    Returns
    -------
    nn.Module
        ``network``.

    Raises
    ------
    ModelFileError
        The file cannot be read, or its keys and shapes do not fit ``network`` (one
        line naming an example of each missing, unexpected and mis-shaped key).
    """
    state = load_state_dict(path, key=key)
    problem = state_dict_mismatch(network.state_dict(), state)
    if problem:
        raise ModelFileError(f"{path} does not fit {name}: {problem}")
    network.load_state_dict(state, strict=True)
    return network
