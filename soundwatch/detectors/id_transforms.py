"""Log-mel augmentations of the ``id-classifier`` detector's self-supervised fallback:
each transformation of a crop is a pseudo-class to recognise."""

from __future__ import annotations

import numpy as np

#: Pseudo-classes of the single-machine fallback; "identity" must stay first.
TRANSFORMS = ("identity", "time_stretch", "freq_shift", "band_stop", "reverse", "tilt")


def _resample_time(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Linearly resample the time axis of (n_mels, m) to (n_mels, n_frames)."""
    pos = np.linspace(0.0, x.shape[1] - 1, n_frames)
    i0 = np.minimum(pos.astype(int), x.shape[1] - 2)
    frac = (pos - i0).astype(np.float32)
    return x[:, i0] * (1 - frac) + x[:, i0 + 1] * frac


def apply_transform(
    source: np.ndarray,
    start: int,
    n_frames: int,
    name: str,
    rng: np.random.Generator,
    strength: float = 1.0,
) -> np.ndarray:
    """Crop ``n_frames`` frames of a raw log-mel (n_mels, total) at ``start`` and apply one
    of :data:`TRANSFORMS` (in dB, before standardisation).

    At ``strength`` 1 the amounts are random within ranges chosen to be clearly audible
    yet not trivial: time stretch by 1.2-1.45x either way (resampling the time axis, so a
    machine's rhythm changes), a shift by 2-8 mel bins either way (pitch), a 15-dB notch
    over 8-24 bins, time reversal, and a spectral tilt of 6-12 dB across the mel axis
    either way. ``strength`` scales the log stretch factor, the shift (at least one
    bin), the notch depth and the tilt: weaker transformations force the classifier to
    learn the normal sound in more detail.

    Returns
    -------
    crop : float32 array of shape (n_mels, n_frames)
    """
    total = source.shape[1]
    if name == "time_stretch":
        factor = np.exp(strength * rng.uniform(np.log(1.2), np.log(1.45)) * rng.choice((-1, 1)))
        length = int(np.clip(round(n_frames * factor), 2, total))
        begin = int(rng.integers(0, total - length + 1))
        return _resample_time(source[:, begin : begin + length], n_frames).astype(np.float32)
    crop = source[:, start : start + n_frames]
    n_mels = crop.shape[0]
    if name == "identity":
        return crop.copy()
    if name == "reverse":
        return crop[:, ::-1].copy()
    if name == "freq_shift":
        shift = max(1, round(strength * int(rng.integers(2, 9)))) * int(rng.choice((-1, 1)))
        # Edge rows are repeated rather than wrapped: wrapping would move the lowest
        # bands' energy to the top, which no real pitch change does.
        rows = np.clip(np.arange(n_mels) - shift, 0, n_mels - 1)
        return crop[rows].copy()
    if name == "band_stop":
        width = int(rng.integers(8, 25))
        low = int(rng.integers(0, max(n_mels - width, 0) + 1))
        out = crop.copy()
        out[low : low + width] -= np.float32(15.0 * strength)
        return out
    if name == "tilt":
        slope = np.float32(strength * rng.uniform(6.0, 12.0) * rng.choice((-1.0, 1.0)))
        return crop + (slope * np.linspace(-0.5, 0.5, n_mels, dtype=np.float32))[:, None]
    raise ValueError(f"unknown transform {name!r}")
