"""One input validator for arrays of scores, labels and features (cf. scikit-learn's
``check_array``). Every message is one line, names what was checked and raises
:class:`~soundwatch.errors.ConfigError`.
"""

from __future__ import annotations

import numpy as np

from soundwatch.errors import ConfigError


def check_array(
    values: object,
    what: str,
    *,
    ndim: int = 1,
    n: int | None = None,
    finite: bool = True,
    dtype: type = float,
    items: str = "items",
) -> np.ndarray:
    """``values`` as an array of ``ndim`` dimensions, or a one-line ConfigError.

    Parameters
    ----------
    values : array-like
    what : str
        Plural noun for messages, e.g. ``"anomaly scores"``.
    ndim : int
        Required number of dimensions (1: shape (n,), 2: shape (n, d)).
    n : int, optional
        Required length of the first axis.
    finite : bool
        Refuse NaN and infinite values.
    dtype : type
        dtype of the returned array.
    items : str
        Plural noun for what ``n`` counts, for messages, e.g. ``"clips"``.

    Returns
    -------
    ndarray of shape (n,) or (n, d)
    """
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be numeric: {exc}") from None
    if arr.ndim != ndim:
        layout = "(n,)" if ndim == 1 else "(n, d)" if ndim == 2 else f"{ndim}-D"
        raise ConfigError(f"{what} must have shape {layout}, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ConfigError(f"got {arr.shape[0]} {what} for {n} {items}")
    if finite and arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape)
            index = first[0] if ndim == 1 else first
            raise ConfigError(
                f"{what} contain {int(bad.sum())} NaN or infinite value(s) (first at {index})"
            )
    return arr


def check_labels_scores(is_anomaly: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    """Boolean labels and finite scores of the same length, both shape (n,)."""
    labels = np.asarray(is_anomaly, dtype=bool).reshape(-1)
    scores = check_array(np.ravel(scores), "anomaly scores", n=labels.size, items="labels")
    return labels, scores
