"""ResNet-50 pretrained on ImageNet, applied to log-mel spectrograms as images.

ImageNet CNNs transfer surprisingly well to spectrograms and are a common strong
baseline for anomalous sound detection. The network is torchvision's ResNet-50 (v1.5:
the stride-2 of a downsampling bottleneck is on its 3x3 convolution), written here with
torchvision's module names so ``resnet50-0676ba61.pth`` (``IMAGENET1K_V1``)
loads with ``strict=True``: ``conv1``, ``bn1``, ``layer1..4`` of 3, 4, 6, 3 bottlenecks
(``conv1/bn1`` 1x1, ``conv2/bn2`` 3x3, ``conv3/bn3`` 1x1 with 4x expansion, and
``downsample.0`` / ``downsample.1`` on the first block of each layer), ``fc``
(2048 -> 1000).

Image (see :class:`LogMelImage`): 16 kHz audio, 1024-point STFT (64 ms Hann window) every
320 samples (20 ms), 128 Slaney mel bands from 0 to 8 kHz, power in dB
(``10 log10(max(mel, 1e-10))``), mapped linearly from the *fixed* range [-80, 20] dB to
[0, 1] and clipped, copied to the three colour channels and normalised with ImageNet's
channel mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). A fixed range (instead
of per-clip min-max scaling) keeps the absolute level, which matters when a machine
gets louder; [-80, 20] dB holds DCASE clips (mostly -60 to 0 dB) with headroom. Rows are
mel bands (lowest first), columns are frames.
"""

from __future__ import annotations

import torch
from torch import nn

from soundwatch.encoders.checkpoint import Checkpoint, CheckpointEncoder, pad_to_length
from soundwatch.encoders.frontend import mel_power
from soundwatch.encoders.registry import ENCODERS
from soundwatch.features.logmel import mel_filterbank

#: Bottlenecks per layer of ResNet-50.
RESNET50_BLOCKS = (3, 4, 6, 3)
#: ImageNet channel statistics (RGB) the weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels) residual block, torchvision names.

    Parameters
    ----------
    in_channels : int
    width : int
        Channels of the 1x1 and 3x3 convolutions; the block outputs ``4 * width``.
    stride : int
        Stride of the 3x3 convolution (and of the shortcut).
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet50(nn.Module):
    """ResNet-50 with torchvision's state-dict layout.

    Parameters
    ----------
    classes : int, default=1000
        Outputs of ``fc``.
    """

    def __init__(self, classes: int = IMAGENET_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for index, (n_blocks, width) in enumerate(
            zip(RESNET50_BLOCKS, (64, 128, 256, 512), strict=True)
        ):
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(n_blocks):
                blocks.append(Bottleneck(channels, width, stride if b == 0 else 1))
                channels = width * Bottleneck.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)
        # torchvision's initialisation, for meaningful random-weight baselines.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Output of ``layer4``.

        Parameters
        ----------
        images : torch.Tensor of shape (batch, 3, height, width)

        Returns
        -------
        torch.Tensor of shape (batch, 2048, ~height / 32, ~width / 32)
            Each size is ``ceil(ceil(s / 2) / 2)`` halved (rounding up) three more times.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for index in range(1, len(RESNET50_BLOCKS) + 1):
            x = getattr(self, f"layer{index}")(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, 3, height, width) -> (batch, 1000) ImageNet logits."""
        return self.fc(torch.flatten(self.avgpool(self.features(images)), 1))


class LogMelImage(nn.Module):
    """Waveforms to ImageNet-normalised 3-channel log-mel images (see the module notes).

    Parameters
    ----------
    sample_rate, n_fft, hop_length, n_mels : int
    db_range : tuple of float
        Levels (dB) mapped to 0 and 1 before clipping.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 128,
        db_range: tuple[float, float] = (-80.0, 20.0),
    ):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.db_low, self.db_high = db_range
        filters = mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", torch.from_numpy(filters), persistent=False)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Images.

        Parameters
        ----------
        waveforms : torch.Tensor of shape (batch, n_samples)

        Returns
        -------
        torch.Tensor of shape (batch, 3, n_mels, 1 + n_samples // hop_length)
        """
        mel = mel_power(waveforms, self.filters, self.window, self.hop_length)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        unit = ((db - self.db_low) / (self.db_high - self.db_low)).clamp(0.0, 1.0)
        return (unit[:, None] - self.mean) / self.std


@ENCODERS.register
class ResNet50ImageNetEncoder(CheckpointEncoder):
    """ResNet-50 (ImageNet, torchvision IMAGENET1K_V1) on 128-band log-mel images, 16 kHz.

    Frame embeddings: the ``layer4`` feature map averaged over frequency, shape
    (batch, T', 2048), one embedding per 32 STFT hops (0.64 s); with
    ``n_frames = 1 + n_samples // 320``, ``T'`` is ``n_frames`` halved (rounding up)
    five times: 16 for a 10 s clip. Their mean over time equals the network's global
    average pool (the input of ``fc``).

    Parameters
    ----------
    weights : str or None
        None: ``resnet50-0676ba61.pth`` (explicit, ``SOUNDWATCH_RESNET50_IMAGENET_WEIGHTS``
        file or folder, user cache, or download from download.pytorch.org; verified by
        SHA-256); a path: any state dict of this architecture; ``"random"``: fixed
        random weights.
    device, batch_size
        See :class:`~soundwatch.encoders.base.Encoder`.
    """

    name = "resnet50-imagenet"
    summary = "ResNet-50 (ImageNet) on 128-band log-mel images, 2048-d, 16 kHz"
    sample_rate = 16000
    embedding_dim = 2048
    requires_weights = True
    n_fft: int = 1024
    hop_length: int = 320
    frame_seconds = 32 * hop_length / sample_rate  # network stride 32 in time
    n_mels: int = 128
    db_range: tuple[float, float] = (-80.0, 20.0)
    # Full SHA-256 (its first 8 digits are the torch-hub prefix in the file name), as
    # pinned by many independent projects.
    checkpoint = Checkpoint(
        file_name="resnet50-0676ba61.pth",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    )

    def build_network(self) -> ResNet50:
        return ResNet50()

    def _setup(self) -> None:
        self.frontend = LogMelImage(
            self.sample_rate, self.n_fft, self.hop_length, self.n_mels, self.db_range
        ).to(self.device)

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        # Very short clips: at least half a window, so the first frame has a centre.
        waveforms = pad_to_length(waveforms, self.n_fft // 2 + 1)
        fmap = self.network.features(self.frontend(waveforms))  # (B, 2048, F', T')
        return fmap.mean(dim=2).transpose(1, 2)
