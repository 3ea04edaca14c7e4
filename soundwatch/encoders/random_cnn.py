"""A fixed random-weight convolutional encoder: the non-pretrained baseline.

:class:`RandomConvEncoder` (``"random-cnn"``) needs no weights file, is cheap and
deterministic, and lets the whole embedding pipeline run offline.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from soundwatch.encoders.base import Encoder
from soundwatch.encoders.frontend import mel_power
from soundwatch.encoders.registry import ENCODERS
from soundwatch.errors import ConfigError
from soundwatch.features.logmel import mel_filterbank


@ENCODERS.register
class RandomConvEncoder(Encoder):
    """Fixed random-weight CNN over log-mel: a non-pretrained baseline needing no download.

    Log-mel (16 kHz, n_fft 1024, hop 512, 64 Slaney mel bands, ``dB / 20``) goes through
    three 3x3 convolutions with ReLU (1 -> 16 -> 32 -> 64 channels, strides (2, 1),
    (2, 2), (2, 2) in (frequency, time)), then an average over frequency: one 64-d
    embedding per 4 log-mel frames (128 ms), 79 frames for a 10 s clip.

    The weights are He-normal draws from ``numpy.random.default_rng(seed)``, so they are
    the same on every machine and torch version and never touch the global random state.
    Random convolutional features are a known, surprisingly strong baseline for audio
    embeddings; comparing a pretrained encoder against this one shows what pretraining
    adds.

    Parameters
    ----------
    weights : None
        Must be None: the weights come from ``seed``.
    device, batch_size
        See :class:`Encoder`.
    seed : int, default=0
        Seed of the random weights.
    """

    name = "random-cnn"
    summary = "fixed random-weight CNN over log-mel (no download; baseline and tests)"
    sample_rate = 16000
    embedding_dim = 64
    requires_weights = False

    N_FFT = 1024
    HOP = 512
    N_MELS = 64
    CHANNELS = (1, 16, 32, 64)
    STRIDES = ((2, 1), (2, 2), (2, 2))
    # One embedding per 4 hops of 512 samples (the strides in time): 0.128 s.
    frame_seconds = HOP * math.prod(time for _, time in STRIDES) / sample_rate

    def __init__(
        self, weights: str | None = None, device: str = "cpu", batch_size: int = 8, seed: int = 0
    ):
        if weights is not None:
            raise ConfigError(f"{self.name} has random weights and takes no weights file")
        super().__init__(None, device, batch_size)
        self.seed = int(seed)

    def _load(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._kernels = []
        for c_in, c_out in zip(self.CHANNELS[:-1], self.CHANNELS[1:], strict=True):
            std = np.sqrt(2.0 / (c_in * 9))  # He initialisation keeps activations O(1)
            kernel = rng.standard_normal((c_out, c_in, 3, 3)) * std
            self._kernels.append(torch.from_numpy(kernel.astype(np.float32)).to(self.device))
        self._window = torch.hann_window(self.N_FFT, dtype=torch.float32, device=self.device)
        filters = mel_filterbank(self.sample_rate, self.N_FFT, self.N_MELS)
        self._filters = torch.from_numpy(filters).to(self.device)

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        mel = mel_power(waveforms, self._filters, self._window, self.HOP)
        # dB / 20: a fixed scaling to values of order one; no data-dependent statistics.
        x = (10.0 / 20.0) * torch.log10(mel + 1e-10)
        x = x.unsqueeze(1)  # (batch, 1, mels, frames)
        for kernel, stride in zip(self._kernels, self.STRIDES, strict=True):
            x = torch.relu(torch.nn.functional.conv2d(x, kernel, stride=stride, padding=1))
        return x.mean(dim=2).transpose(1, 2)  # (batch, frames, channels)

    def cache_params(self) -> dict[str, Any]:
        return {**super().cache_params(), "seed": self.seed}
