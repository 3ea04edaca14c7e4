"""PANNs Cnn14 (Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for
Audio Pattern Recognition", IEEE/ACM TASLP 2020), pretrained on AudioSet.

Two registered encoders share the architecture and differ in the front end:

==================  ===========  ======  ====  ====  ==========  ==========================
name                sample rate  window  hop   mels  fmin-fmax   checkpoint (Zenodo 3987831)
==================  ===========  ======  ====  ====  ==========  ==========================
``panns-cnn14``     32 kHz       1024    320   64    50-14000    ``Cnn14_mAP=0.431.pth``
``panns-cnn14-16k`` 16 kHz       512     160   64    50-8000     ``Cnn14_16k_mAP=0.438.pth``
==================  ===========  ======  ====  ====  ==========  ==========================

The front end is part of the official state dict: the STFT is two ``Conv1d`` layers whose
kernels are the Hann-windowed real and imaginary DFT bases
(``spectrogram_extractor.stft.conv_real.weight`` / ``conv_imag.weight``, shape
``(n_fft // 2 + 1, 1, n_fft)``, stride = hop, reflect padding of ``n_fft // 2``), the mel
filterbank is ``logmel_extractor.melW`` (librosa's Slaney mel, shape
``(n_fft // 2 + 1, 64)``), and the log is ``10 log10(max(mel, 1e-10))`` (ref 1.0, no
top_db). The modules here are written to produce exactly those keys, so the official
files load with ``strict=True`` and their stored front end is the one used.

Checkpoints are ``{"model": state_dict, ...}`` pickles (the 16 kHz one also holds the
training sampler's NumPy state); :func:`~soundwatch.encoders.download.load_state_dict`
unwraps them with ``weights_only=True``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soundwatch.encoders.checkpoint import Checkpoint, CheckpointEncoder, pad_to_length
from soundwatch.encoders.registry import ENCODERS
from soundwatch.features.logmel import mel_filterbank

#: AudioSet classes of the tagging head.
AUDIOSET_CLASSES = 527
#: Channels of conv_block1..6.
CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
#: Frames pooled into one frame embedding: five 2x2 average pools halve time five times.
CNN14_TIME_STRIDE = 32

_ZENODO = "https://zenodo.org/records/3987831/files/"


# ------------------------------------------------------------------------------------------
# Front end (torchlibrosa-compatible module names)
# ------------------------------------------------------------------------------------------


class ConvSTFT(nn.Module):
    """STFT as two strided ``Conv1d`` with frozen windowed-DFT kernels.

    Parameters
    ----------
    n_fft : int
        Window and FFT length.
    hop_length : int
        Stride between frames.

    Notes
    -----
    Kernel ``k`` of ``conv_real`` is ``w[n] cos(2 pi k n / N)``, of ``conv_imag``
    ``-w[n] sin(2 pi k n / N)`` (the DFT's ``exp(-2 pi i k n / N)``), with ``w`` the
    periodic Hann window; for ``k = 0 .. N/2``.
    """

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop_length, bias=False)
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
        # Integer phase index k * n mod N keeps the angles exact for large n_fft.
        angle = 2 * np.pi * ((np.arange(bins)[:, None] * n[None, :]) % n_fft) / n_fft
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.cos(angle) * window)[:, None])
            self.conv_imag.weight.copy_(torch.from_numpy(-np.sin(angle) * window)[:, None])
        self.requires_grad_(False)

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts.

        Parameters
        ----------
        waveforms : torch.Tensor of shape (batch, n_samples)
            ``n_samples > n_fft // 2`` (reflect padding).

        Returns
        -------
        real, imag : torch.Tensor of shape (batch, 1, n_frames, n_fft // 2 + 1)
            ``n_frames = 1 + n_samples // hop_length`` (centred frames).
        """
        half = self.n_fft // 2
        x = F.pad(waveforms[:, None, :], (half, half), mode="reflect")
        real = self.conv_real(x).transpose(1, 2)[:, None]
        imag = self.conv_imag(x).transpose(1, 2)[:, None]
        return real, imag


class PowerSpectrogram(nn.Module):
    """``|STFT|^2``; the STFT lives in ``.stft`` as in torchlibrosa's ``Spectrogram``."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.stft = ConvSTFT(n_fft, hop_length)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, n_samples) -> (batch, 1, n_frames, n_fft // 2 + 1) power."""
        real, imag = self.stft(waveforms)
        return real.square() + imag.square()


class LogMelFilterBank(nn.Module):
    """Slaney mel filterbank (frozen parameter ``melW``) and ``10 log10(max(mel, 1e-10))``.

    Parameters
    ----------
    sample_rate, n_fft, n_mels : int
    fmin, fmax : float
        Band edges in Hz.
    """

    AMIN = 1e-10  # power floor before the log; with ref = 1.0 nothing is subtracted

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)  # (mels, bins)
        self.melW = nn.Parameter(torch.from_numpy(filters.T.copy()), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """(..., n_fft // 2 + 1) power -> (..., n_mels) log-mel in dB."""
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=self.AMIN))


# ------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (no bias) with batch norm and ReLU, then average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # Registration order conv1, conv2, bn1, bn2 is the official state-dict order.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)  # the published initialisation

    def forward(self, x: torch.Tensor, pool: tuple[int, int] = (2, 2)) -> torch.Tensor:
        """(batch, in, time, freq) -> (batch, out, time // p0, freq // p1)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool != (1, 1) else x


class Cnn14(nn.Module):
    """PANNs Cnn14 with its waveform front end, in the official module layout.

    Parameters
    ----------
    sample_rate : int
    n_fft : int
        Window size (= FFT size).
    hop_length : int
    n_mels : int
        Mel bands; ``bn0`` normalises each band.
    fmin, fmax : float
        Mel band edges in Hz.
    classes : int, default=527
        Size of the AudioSet tagging head ``fc_audioset``.

    Notes
    -----
    Layout (time, frequency) through the network: log-mel ``(T, 64)``, then
    ``conv_block1..5`` each followed by 2x2 average pooling and ``conv_block6`` without
    pooling: ``(T // 32, 2)`` with 2048 channels. The official clip head takes the mean
    over frequency, then max + mean over time, ``relu(fc1(.))`` as the 2048-d
    "embedding" and ``sigmoid(fc_audioset(.))`` as the 527 tag probabilities (see
    :meth:`forward`). Dropout and SpecAugment are training-only and omitted.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        fmin: float,
        fmax: float,
        classes: int = AUDIOSET_CLASSES,
    ):
        super().__init__()
        self.spectrogram_extractor = PowerSpectrogram(n_fft, hop_length)
        self.logmel_extractor = LogMelFilterBank(sample_rate, n_fft, n_mels, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(n_mels)
        channels = (1, *CNN14_CHANNELS)
        for i in range(len(CNN14_CHANNELS)):
            self.add_module(f"conv_block{i + 1}", ConvBlock(channels[i], channels[i + 1]))
        self.fc1 = nn.Linear(CNN14_CHANNELS[-1], CNN14_CHANNELS[-1])
        self.fc_audioset = nn.Linear(CNN14_CHANNELS[-1], classes)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def logmel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, n_samples) -> (batch, 1, n_frames, n_mels) log-mel in dB."""
        return self.logmel_extractor(self.spectrogram_extractor(waveforms))

    def feature_map(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Output of ``conv_block6``.

        Parameters
        ----------
        waveforms : torch.Tensor of shape (batch, n_samples)
            At least ``31 * hop_length`` samples, so every pooling has a frame to pool.

        Returns
        -------
        torch.Tensor of shape (batch, 2048, n_frames // 32, n_mels // 32)
        """
        x = self.logmel(waveforms)
        # bn0 normalises mel bands: move them to the channel axis and back.
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, len(CNN14_CHANNELS)):
            x = getattr(self, f"conv_block{i}")(x)
        return getattr(self, f"conv_block{len(CNN14_CHANNELS)}")(x, pool=(1, 1))

    def forward(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official clip-level head.

        Returns
        -------
        dict
            ``"embedding"``: (batch, 2048); ``"clipwise_output"``: (batch, 527) sigmoid
            tag probabilities.
        """
        x = self.feature_map(waveforms).mean(dim=3)  # (batch, 2048, time)
        x = x.amax(dim=2) + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        return {"embedding": embedding, "clipwise_output": torch.sigmoid(self.fc_audioset(x))}


# ------------------------------------------------------------------------------------------
# Encoders
# ------------------------------------------------------------------------------------------


class PANNsCnn14Encoder(CheckpointEncoder):
    """PANNs Cnn14 pretrained on AudioSet (see the module docstring for the front ends).

    Frame embeddings are the ``conv_block6`` feature map averaged over frequency:
    shape (batch, n_frames // 32, 2048) with ``n_frames = 1 + n_samples // hop``, one
    embedding per 32 STFT hops (0.32 s); a 10 s clip gives 31. Clips shorter than
    31 hops are zero-padded to that length.

    Their mean over time is the mean-pooled clip embedding used by the detectors. The
    official clip embedding differs: ``relu(fc1(max_t + mean_t))`` of these same frames
    (``self.network(waveforms)["embedding"]`` after :meth:`load`); it is trained for
    tagging and mixes in the max, so it is not what ``_frames`` returns.

    Parameters
    ----------
    weights : str or None
        None: the official checkpoint (explicit, ``SOUNDWATCH_<NAME>_WEIGHTS`` file or
        folder, user cache, or download from Zenodo, verified by SHA-256 and MD5);
        a path: any checkpoint of this architecture (bare or ``{"model": ...}``);
        ``"random"``: fixed random weights (tests, baselines).
    device, batch_size
        See :class:`~soundwatch.encoders.base.Encoder`.
    """

    embedding_dim = CNN14_CHANNELS[-1]
    # 32 STFT hops of 10 ms in both variants (320 at 32 kHz, 160 at 16 kHz).
    frame_seconds = CNN14_TIME_STRIDE * 0.010
    requires_weights = True
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0

    def build_network(self) -> Cnn14:
        return Cnn14(
            self.sample_rate, self.n_fft, self.hop_length, self.n_mels, self.fmin, self.fmax
        )

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        # 31 hops give 32 frames, the fewest that survive five halvings of time.
        x = pad_to_length(waveforms, (CNN14_TIME_STRIDE - 1) * self.hop_length)
        return self.network.feature_map(x).mean(dim=3).transpose(1, 2)


@ENCODERS.register
class PANNsCnn14(PANNsCnn14Encoder):
    __doc__ = PANNsCnn14Encoder.__doc__
    name = "panns-cnn14"
    summary = "PANNs Cnn14 (AudioSet, mAP 0.431), 2048-d, 32 kHz"
    sample_rate = 32000
    n_fft = 1024
    hop_length = 320
    fmax = 14000.0
    # Digests: Zenodo publishes the MD5; the SHA-256 is that of the file with that MD5
    # (327,428,481 bytes), as recorded by several independent projects.
    checkpoint = Checkpoint(
        file_name="Cnn14_mAP=0.431.pth",
        url=_ZENODO + "Cnn14_mAP%3D0.431.pth?download=1",
        sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31",
        md5="541141fa2ee191a88f24a3219fff024e",
        key="model",
    )


@ENCODERS.register
class PANNsCnn14_16k(PANNsCnn14Encoder):
    __doc__ = PANNsCnn14Encoder.__doc__
    name = "panns-cnn14-16k"
    summary = "PANNs Cnn14_16k (AudioSet, mAP 0.438), 2048-d, 16 kHz"
    sample_rate = 16000
    n_fft = 512
    hop_length = 160
    fmax = 8000.0
    # As above; 358,668,570 bytes.
    checkpoint = Checkpoint(
        file_name="Cnn14_16k_mAP=0.438.pth",
        url=_ZENODO + "Cnn14_16k_mAP%3D0.438.pth?download=1",
        sha256="e2ee543a27919542c2ea03eabaa70b24dcd4e6c8e05621de6b67a94e4c5058e6",
        md5="362fc5ff18f1d6ad2f6d464b45893f2c",
        key="model",
    )
