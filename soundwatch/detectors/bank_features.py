"""Clip statistics of a log-mel spectrogram for memory banks: impulsiveness and modulation.

Plain functions over one log-mel array of shape (n_mels, n_frames). Both pool the mel
bands into ``n_groups`` contiguous groups first: the statistics are noisy per mel band,
and a bank of tens of clips cannot fit a covariance over hundreds of dimensions.

- :func:`impulse_stats`: how far short events rise above a band's usual level (high
  percentiles and the maximum over time of the deviation from the band median, and of
  the frame-to-frame rise). Ticks, clicks and rattles move these while barely changing
  a band's mean or standard deviation.
- :func:`modulation_spectrum`: the log power of each band group's temporal envelope in
  log-spaced modulation-frequency bins (a periodic flapping, beating or speed ripple
  shows up as a peak at its repetition rate).
"""

from __future__ import annotations

import numpy as np

# Modulation bins span this range of modulation frequency, in cycles per frame.
_MOD_LOW, _MOD_HIGH = 1.0 / 256.0, 0.5


def band_groups(logmel: np.ndarray, n_groups: int) -> np.ndarray:
    """Means of ``n_groups`` contiguous groups of mel bands, shape (n_groups, n_frames)."""
    n_mels = logmel.shape[0]
    n_groups = min(n_groups, n_mels)
    edges = np.linspace(0, n_mels, n_groups + 1).round().astype(int)
    return np.stack(
        [logmel[lo:hi].mean(axis=0) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    )


def impulse_stats(logmel: np.ndarray, n_groups: int) -> np.ndarray:
    """Impulsiveness of each band group, shape (5 * n_groups,).

    Per group: the 90th and 99th percentiles and the maximum over time of the
    deviation from the group's median level (dB-like log units), and the 99th
    percentile and maximum of the frame-to-frame rise. Levels are relative to the
    median, so a louder or quieter clip alone does not move them.
    """
    groups = band_groups(np.asarray(logmel, dtype=np.float64), n_groups)
    deviation = groups - np.median(groups, axis=1, keepdims=True)
    high = np.percentile(deviation, [90.0, 99.0], axis=1)
    if groups.shape[1] > 1:
        rise = np.diff(groups, axis=1)
        rise_high = np.stack([np.percentile(rise, 99.0, axis=1), rise.max(axis=1)])
    else:  # a one-frame clip has no rise
        rise_high = np.zeros((2, len(groups)))
    return np.concatenate([high[0], high[1], deviation.max(axis=1), rise_high[0], rise_high[1]])


def modulation_spectrum(logmel: np.ndarray, n_groups: int, n_bins: int) -> np.ndarray:
    """Log modulation power of each band group's envelope, shape (n_groups * n_bins,).

    The envelope (the group's log level over time, mean removed, Hann-windowed) is
    Fourier-transformed; its power is averaged in ``n_bins`` log-spaced bins between
    1/256 and 1/2 cycles per frame (with 32 ms frames, about 0.12 to 15.6 Hz), and the
    bins are divided by the envelope's total power so that they describe the shape of
    the modulation rather than its depth, which :func:`impulse_stats` and the band
    standard deviations already see. A bin narrower than the frequency resolution
    takes the nearest frequency's power.
    """
    groups = band_groups(np.asarray(logmel, dtype=np.float64), n_groups)
    n_frames = groups.shape[1]
    envelope = (groups - groups.mean(axis=1, keepdims=True)) * np.hanning(n_frames)
    power = np.abs(np.fft.rfft(envelope, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_frames)
    edges = np.geomspace(_MOD_LOW, _MOD_HIGH, n_bins + 1)
    binned = np.empty((len(groups), n_bins))
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (freqs >= lo) & (freqs < hi)
        if inside.any():
            binned[:, b] = power[:, inside].mean(axis=1)
        else:
            binned[:, b] = power[:, int(np.argmin(np.abs(freqs - np.sqrt(lo * hi))))]
    total = power[:, 1:].sum(axis=1, keepdims=True) + 1e-12
    return np.log(binned / total + 1e-12).ravel()


__all__ = ["band_groups", "impulse_stats", "modulation_spectrum"]
