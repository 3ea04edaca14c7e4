"""Scalers of log-mel frames fitted on training normals: per-band standardisation and
global min-max scaling.

Both fit on spectrogram-like arrays of shape (n_features, n_frames_i), scale a float32
frame matrix of shape (n_frames, n_features) in place with ``apply_`` (so a frame store
never holds a second copy), and round-trip through ``to_dict``/``from_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soundwatch.errors import ConfigError


class Standardizer:
    """Zero mean, unit variance per feature row of spectrogram-like arrays.

    Named ``"standard"`` in model files (see :func:`scaler_from_dict`).

    Statistics accumulate in float64 over one clip at a time, so no whole-dataset
    float64 array is ever built.
    """

    name = "standard"

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, arrays: Sequence[np.ndarray]) -> Standardizer:
        """Fit on arrays of shape (n_features, n_frames_i)."""
        total = 0
        sums = sq_sums = None
        for a in arrays:
            a64 = a.astype(np.float64)
            s, q = a64.sum(axis=1), np.square(a64).sum(axis=1)
            sums = s if sums is None else sums + s
            sq_sums = q if sq_sums is None else sq_sums + q
            total += a.shape[1]
        if not total:
            raise ConfigError("cannot fit a standardizer on no data")
        mean = sums / total
        var = np.maximum(sq_sums / total - mean**2, 0.0)
        self.mean_ = mean.astype(np.float32)
        # Constant features keep unit scale instead of dividing by zero.
        self.scale_ = np.where(var > 1e-12, np.sqrt(var), 1.0).astype(np.float32)
        return self

    def transform(self, array: np.ndarray) -> np.ndarray:
        """Standardise an array of shape (n_features, n_frames)."""
        if self.mean_ is None:
            raise ConfigError("standardizer is not fitted")
        return ((array - self.mean_[:, None]) / self.scale_[:, None]).astype(np.float32)

    def apply_(self, frames: np.ndarray) -> None:
        """Standardise a float32 frame matrix of shape (n_frames, n_features) in place."""
        frames -= self.mean_
        frames /= self.scale_

    def to_dict(self) -> dict:
        return {"mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> Standardizer:
        scaler = cls()
        scaler.mean_ = np.asarray(state["mean"], dtype=np.float32)
        scaler.scale_ = np.asarray(state["scale"], dtype=np.float32)
        return scaler


class MinMaxScaler:
    """Global min-max scaling to [0, 1], fitted on training normals.

    One minimum and one maximum over all bands and frames, so the spectrogram keeps its
    shape like an image; unseen clips may fall slightly outside [0, 1]. Named
    ``"minmax"`` in model files.
    """

    name = "minmax"

    def __init__(self) -> None:
        self.min_: float | None = None
        self.max_: float | None = None

    def fit(self, arrays: Sequence[np.ndarray]) -> MinMaxScaler:
        """Fit on arrays of shape (n_features, n_frames_i)."""
        if not arrays:
            raise ConfigError("cannot fit a min-max scaler on no data")
        self.min_ = float(min(a.min() for a in arrays))
        self.max_ = float(max(a.max() for a in arrays))
        return self

    def apply_(self, frames: np.ndarray) -> None:
        """Scale a float32 frame matrix of shape (n_frames, n_features) in place."""
        span = self.max_ - self.min_
        frames -= np.float32(self.min_)
        frames *= np.float32(1.0 / span if span > 0 else 1.0)

    def to_dict(self) -> dict:
        return {"min": self.min_, "max": self.max_}

    @classmethod
    def from_dict(cls, state: dict) -> MinMaxScaler:
        scaler = cls()
        scaler.min_, scaler.max_ = float(state["min"]), float(state["max"])
        return scaler


#: Scalers by the name model files record.
SCALERS: dict[str, type[Standardizer | MinMaxScaler]] = {
    Standardizer.name: Standardizer,
    MinMaxScaler.name: MinMaxScaler,
}


def scaler_from_dict(name: str, state: dict) -> Standardizer | MinMaxScaler:
    """Rebuild the scaler ``name`` (``"standard"`` or ``"minmax"``) from its ``to_dict``."""
    if name not in SCALERS:
        raise ConfigError(f"unknown scaler {name!r}; known: {', '.join(SCALERS)}")
    return SCALERS[name].from_dict(state)
