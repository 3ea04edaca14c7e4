"""Log-mel spectrograms, by default exactly the DCASE 2020 Task 2 baseline's.

The baseline calls ``librosa.feature.melspectrogram`` (Hann window, ``center=True`` with
zero padding, Slaney mel scale and area normalisation) and takes ``10 * log10(mel + eps)``.
This module reimplements that in torch so a batch of clips is one STFT call, and so the
library does not depend on librosa at run time.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch

from soundwatch.errors import ConfigError

# The baseline adds the machine epsilon of float64 before the log.
LOG_EPS = sys.float_info.epsilon


@dataclass(frozen=True)
class LogMelConfig:
    """Parameters of the log-mel front end.

    ``duration`` pads or crops every clip to that many seconds; None keeps each clip's
    own length (DCASE ToyCar clips are 11 s, the rest 10 s).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    power: float = 2.0
    fmin: float = 0.0
    fmax: float | None = None
    duration: float | None = None
    channel: int | str = 0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError(f"log-mel sizes must be positive, got {self}")
        if self.power <= 0:
            raise ConfigError(f"power must be positive, got {self.power}")
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        if not 0 <= self.fmin < top <= self.sample_rate / 2:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax}"
            )
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"duration must be positive seconds or None, got {self.duration}")

    def to_dict(self) -> dict:
        return asdict(self)


def hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    f = np.asarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        f >= min_log_hz,
        min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep,
        f / f_sp,
    )


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular Slaney-normalised mel filters.

    Returns
    -------
    weights : ndarray of shape (n_mels, n_fft // 2 + 1), float32
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney area normalisation: every filter has the same energy.
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel:
    """Batched log-mel front end.

    Parameters
    ----------
    config : LogMelConfig
    """

    def __init__(self, config: LogMelConfig | None = None) -> None:
        self.config = config or LogMelConfig()
        c = self.config
        self._window = torch.hann_window(c.n_fft, periodic=True, dtype=torch.float32)
        self._filters = torch.from_numpy(
            mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
        )

    def n_frames(self, n_samples: int) -> int:
        """Number of frames for a clip of ``n_samples`` (centred STFT)."""
        return 1 + n_samples // self.config.hop_length

    @torch.inference_mode()
    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        """Compute log-mel spectrograms.

        Parameters
        ----------
        waveforms : ndarray of shape (n_samples,) or (batch, n_samples), float32

        Returns
        -------
        logmel : ndarray of shape (n_mels, n_frames) or (batch, n_mels, n_frames), float32
        """
        c = self.config
        x = torch.as_tensor(np.ascontiguousarray(waveforms, dtype=np.float32))
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.shape[-1] < c.n_fft // 2 + 1:
            raise ConfigError(f"clip of {x.shape[-1]} samples is shorter than half an FFT frame")
        spec = torch.stft(
            x,
            c.n_fft,
            hop_length=c.hop_length,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        if c.power == 2.0:  # |z|^2 without the square root of abs()
            power = spec.real.square() + spec.imag.square()
        else:
            power = spec.abs().pow(c.power)
        mel = torch.matmul(self._filters, power)
        out = (20.0 / c.power) * torch.log10(mel + LOG_EPS)
        out = out.numpy().astype(np.float32, copy=False)
        return out[0] if single else out
