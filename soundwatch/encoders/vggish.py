"""VGGish (Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
ICASSP 2017), the AudioSet embedding network, with the weights of the PyTorch port
``harritaylor/torchvggish`` (converted from Google's TensorFlow checkpoint).

Front end (``research/audioset/vggish`` parameters): 16 kHz audio, 25 ms frames (400
samples) every 10 ms (160) without padding, periodic Hann window, magnitude of a 512-point
FFT, 64 mel bands from 125 to 7500 Hz on the HTK mel scale (triangles in the mel domain,
DC bin zeroed), ``log(mel + 0.01)``, then non-overlapping examples of 96 frames x 64
bands (0.96 s). The network maps each example to one 128-d embedding.

Weights: ``vggish-10086976.pth`` from the torchvggish v0.1 release, a bare state dict
with the keys ``features.{0,3,6,8,11,13}.{weight,bias}`` (the six 3x3 convolutions; the
other indices are ReLU and max-pool layers) and ``embeddings.{0,2,4}.{weight,bias}``
(12288 -> 4096 -> 4096 -> 128). The ``10086976`` in the name is torch hub's convention:
the first hex digits of the file's SHA-256.

Differences from torchvggish, on purpose:

- the embedding is the *pre-activation* output of the last layer, as in the TensorFlow
  definition (``vggish_slim.py``: "pre-activation values of a 128-D embedding layer");
  torchvggish applies a ReLU there, which zeroes about half of the dimensions;
- no PCA / 8-bit quantisation post-processing (``vggish_pca_params-970ea276.pth``): it
  only makes the embeddings match the released AudioSet features, it is an invertible
  affine map plus rounding, and the scorers standardise (or whiten) embeddings anyway;
- no resampling inside the encoder: clips arrive at 16 kHz from the data pipeline.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from soundwatch.encoders.checkpoint import Checkpoint, CheckpointEncoder, pad_to_length
from soundwatch.encoders.registry import ENCODERS

SAMPLE_RATE = 16000
WINDOW_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
FFT_LENGTH = 512  # next power of two of the window
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s examples, hop 0.96 s
EMBEDDING_SIZE = 128

#: VGG layer plan: channels of 3x3 convolutions, "M" for 2x2 max pooling.
VGGISH_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


def hertz_to_mel_htk(frequencies: np.ndarray) -> np.ndarray:
    """HTK mel scale, ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(frequencies, dtype=np.float64) / 700.0)


def vggish_mel_matrix() -> np.ndarray:
    """VGGish's mel weight matrix.

    Triangles are evaluated on the mel value of each FFT bin's frequency, with peaks at
    66 mel-spaced centres between 125 and 7500 Hz; the DC bin gets no weight.

    Returns
    -------
    ndarray of shape (FFT_LENGTH // 2 + 1, NUM_BANDS) = (257, 64), float32
        Right-multiplies a (frames, 257) magnitude spectrogram.
    """
    bins_mel = hertz_to_mel_htk(np.linspace(0.0, SAMPLE_RATE / 2, FFT_LENGTH // 2 + 1))
    edges = np.linspace(hertz_to_mel_htk(MEL_MIN_HZ), hertz_to_mel_htk(MEL_MAX_HZ), NUM_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin would otherwise leak into the lowest band
    return weights.astype(np.float32)


def min_samples() -> int:
    """Samples in one 96-frame example: 400 + 95 * 160 = 15,600 (0.975 s)."""
    return WINDOW_LENGTH + (EXAMPLE_FRAMES - 1) * HOP_LENGTH


class VGGishFrontend(nn.Module):
    """Waveforms to VGGish log-mel examples (constants are non-persistent buffers).

    Notes
    -----
    The 400-sample window sits at the start of the 512-point FFT frame, zero-padded at
    the end, as ``numpy.fft.rfft(frame * window, 512)`` does.
    """

    def __init__(self) -> None:
        super().__init__()
        n = torch.arange(WINDOW_LENGTH, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / WINDOW_LENGTH)  # periodic Hann
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel", torch.from_numpy(vggish_mel_matrix()), persistent=False)

    @staticmethod
    def n_examples(n_samples: int) -> int:
        """Examples in a clip of ``n_samples`` (after padding short clips to one)."""
        n_frames = 1 + (max(n_samples, min_samples()) - WINDOW_LENGTH) // HOP_LENGTH
        return 1 + (n_frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Log-mel examples.

        Parameters
        ----------
        waveforms : torch.Tensor of shape (batch, n_samples)
            16 kHz; shorter than one example (15,600 samples) is zero-padded to one.

        Returns
        -------
        torch.Tensor of shape (batch, n_examples, 96, 64)
            Frames (10 ms) by mel bands; incomplete trailing examples are dropped.
        """
        x = pad_to_length(waveforms, min_samples())
        frames = x.unfold(-1, WINDOW_LENGTH, HOP_LENGTH) * self.window  # (B, T, 400)
        magnitude = torch.fft.rfft(frames, n=FFT_LENGTH).abs()  # (B, T, 257)
        logmel = torch.log(magnitude @ self.mel + LOG_OFFSET)  # (B, T, 64)
        examples = logmel.unfold(1, EXAMPLE_FRAMES, EXAMPLE_FRAMES)  # (B, E, 64, 96)
        return examples.transpose(2, 3)


class VGGish(nn.Module):
    """The VGGish network, in torchvggish's module layout.

    ``features``: 3x3 convolutions (padding 1) with ReLU and 2x2 max pooling per
    :data:`VGGISH_LAYERS`; ``embeddings``: Linear(512 * 6 * 4 -> 4096), ReLU,
    Linear(4096 -> 4096), ReLU, Linear(4096 -> 128).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for item in VGGISH_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        flat = channels * (EXAMPLE_FRAMES // 16) * (NUM_BANDS // 16)  # 512 * 6 * 4
        self.embeddings = nn.Sequential(
            nn.Linear(flat, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, EMBEDDING_SIZE),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """(n, 1, 96, 64) log-mel examples -> (n, 128) pre-activation embeddings."""
        x = self.features(examples)  # (n, 512, 6, 4)
        # TensorFlow flattens channels-last (height, width, channel): the first Linear's
        # weights expect that order.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.embeddings(x)


@ENCODERS.register
class VGGishEncoder(CheckpointEncoder):
    """VGGish (AudioSet/YouTube, TensorFlow weights via torchvggish), 16 kHz.

    Frame embeddings: one 128-d pre-activation embedding per 0.96 s example, shape
    (batch, n_examples, 128) with ``n_examples = 1 + (n_frames - 96) // 96`` and
    ``n_frames = 1 + (n_samples - 400) // 160``; a 10 s clip gives 10. Clips shorter
    than one example are zero-padded to one. No PCA post-processing (see the module
    notes).

    Parameters
    ----------
    weights : str or None
        None: ``vggish-10086976.pth`` (explicit, ``SOUNDWATCH_VGGISH_WEIGHTS`` file or
        folder, user cache, or download from the torchvggish release; verified by
        SHA-256); a path: any state dict of this architecture; ``"random"``: fixed random
        weights.
    device, batch_size
        See :class:`~soundwatch.encoders.base.Encoder`.
    """

    name = "vggish"
    summary = "VGGish (AudioSet, TF weights via torchvggish), 128-d per 0.96 s, 16 kHz"
    sample_rate = SAMPLE_RATE
    embedding_dim = EMBEDDING_SIZE
    frame_seconds = EXAMPLE_FRAMES * HOP_LENGTH / SAMPLE_RATE  # one per 0.96 s example
    requires_weights = True
    # The SHA-256 starts with the torch-hub prefix 10086976 of the file name; the full
    # digest is the one pinned by several independent projects that verify this file.
    checkpoint = Checkpoint(
        file_name="vggish-10086976.pth",
        url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        sha256="10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b",
    )

    def build_network(self) -> VGGish:
        return VGGish()

    def _setup(self) -> None:
        self.frontend = VGGishFrontend().to(self.device)

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        examples = self.frontend(waveforms)  # (B, E, 96, 64)
        batch, n_examples = examples.shape[:2]
        flat = examples.reshape(batch * n_examples, 1, EXAMPLE_FRAMES, NUM_BANDS)
        return self.network(flat).reshape(batch, n_examples, EMBEDDING_SIZE)
