"""Pooling of frame embeddings over time into one vector per clip."""

from __future__ import annotations

import numpy as np

from soundwatch.errors import ConfigError

#: Pooling methods understood by :func:`pool`.
POOLINGS: tuple[str, ...] = ("mean", "max", "meanstd", "gem")
#: Default exponent of generalised-mean pooling.
DEFAULT_GEM_P = 3.0


def pooled_dim(dim: int, method: str) -> int:
    """Length of the vector :func:`pool` makes from frames of ``dim`` features."""
    check_pooling(method)
    return 2 * dim if method == "meanstd" else dim


def check_pooling(method: str) -> None:
    """Refuse an unknown pooling method with a one-line ConfigError."""
    if method not in POOLINGS:
        raise ConfigError(f"unknown pooling {method!r}; choose one of {', '.join(POOLINGS)}")


def pool(frames: np.ndarray, method: str = "mean", *, p: float = DEFAULT_GEM_P) -> np.ndarray:
    """Pool frame embeddings over time into one clip vector.

    Parameters
    ----------
    frames : array-like of shape (n_frames, dim)
        Frame embeddings of one clip; ``n_frames >= 1``.
    method : {"mean", "max", "meanstd", "gem"}
        ``"mean"`` and ``"max"`` over frames; ``"meanstd"`` is the mean followed by the
        (population, ``ddof=0``) standard deviation over frames, so stationary machines
        that turn intermittent (clicks, rattles) stand out; ``"gem"`` is the generalised
        mean with exponent ``p``.
    p : float, default=3.0
        Exponent of ``"gem"``, >= 1. Ignored by the other methods.

    Returns
    -------
    vector : ndarray of shape (dim,), or (2 * dim,) for ``"meanstd"``, float64

    Notes
    -----
    The generalised mean ``(mean_t x_t^p)^(1/p)`` needs non-negative values, but frame
    embeddings can be negative (Hardswish, log-mel, ...). Each dimension is therefore
    shifted by its minimum over the frames, ``m = min_t x_t``, and shifted back::

        gem = m + (mean_t (x_t - m)^p)^(1/p)

    This keeps GeM between the mean (``p = 1``) and the max (``p -> inf``) for any
    input, and makes it shift-equivariant (adding a constant to all frames adds it to
    the result). It is computed relative to the largest shifted value, so large values
    or exponents do not overflow.
    """
    check_pooling(method)
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ConfigError(f"pool expects frames of shape (n_frames >= 1, dim), got {x.shape}")
    if method == "mean":
        return x.mean(axis=0)
    if method == "max":
        return x.max(axis=0)
    if method == "meanstd":
        return np.concatenate([x.mean(axis=0), x.std(axis=0)])
    if not p >= 1.0:
        raise ConfigError(f"GeM exponent p must be >= 1, got {p}")
    low = x.min(axis=0)
    shifted = x - low
    top = shifted.max(axis=0)
    # A constant dimension has top == 0: its GeM is that constant, i.e. low.
    safe = np.where(top > 0, top, 1.0)
    return low + top * np.mean((shifted / safe) ** p, axis=0) ** (1.0 / p)
