"""The network of the ``id-classifier`` detector: a compact MobileFaceNet-like CNN with
an optional STgram waveform branch and a margin-based softmax head (ArcFace, AdaCos or
cosine softmax), sized for a CPU."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("arcface", "adacos", "softmax")


def conv_bn(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding) + BatchNorm2d (+ PReLU, as in MobileFaceNet)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.PReLU(c_out))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, 3x3 depthwise (maybe strided), linear 1x1
    project; residual connection when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.body = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, c_out, 1, act=False),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileFaceNetLite(nn.Module):
    """Small MobileFaceNet: input (batch, in_channels, n_mels, n_frames) -> (batch, dim).

    A strided stem and three strided stages of inverted residuals (widths 2w, 4w, 8w for
    ``width`` w) divide both axes by 16. The global depthwise convolution (GDC) of
    MobileFaceNet spans the remaining frequency rows only, so every frequency region
    keeps its own learned weight (which ID a sound belongs to depends on *where* its
    tones are), while time is averaged: any number of frames is accepted.
    """

    def __init__(self, in_channels: int, n_mels: int, width: int, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            conv_bn(in_channels, width, 3, 2),
            conv_bn(width, width, 3, groups=width),
        ]
        channels = width
        rows = (n_mels + 1) // 2
        for c_out in (2 * width, 4 * width, 8 * width):
            layers += [
                InvertedResidual(channels, c_out, 2, 2),
                InvertedResidual(c_out, c_out, 1, 2),
            ]
            channels = c_out
            rows = (rows + 1) // 2
        layers.append(conv_bn(channels, 2 * channels, 1))
        self.body = nn.Sequential(*layers)
        self.gdc = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, (rows, 1), groups=2 * channels, bias=False),
            nn.BatchNorm2d(2 * channels),
        )
        self.project = nn.Sequential(nn.Linear(2 * channels, dim, bias=False), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.gdc(self.body(x)).mean(dim=(2, 3)))


class TemporalBranch(nn.Module):
    """STgram's learnable front end: waveform (batch, samples) -> (batch, n_mels, frames).

    A strided Conv1d with the STFT's window and hop (a learnable filterbank), then three
    BatchNorm / LeakyReLU / Conv1d(3) layers. STgram normalises over time with a
    LayerNorm of fixed length; BatchNorm is used here so any crop length works. The
    input of a crop of ``frames`` log-mel frames is ``(frames - 1) * hop + n_fft``
    samples, so the output is aligned with the log-mel frames.
    """

    def __init__(self, n_mels: int, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.filterbank = nn.Conv1d(1, n_mels, n_fft, hop_length, bias=False)
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [
                nn.BatchNorm1d(n_mels),
                nn.LeakyReLU(0.2),
                nn.Conv1d(n_mels, n_mels, 3, padding=1, bias=False),
            ]
        self.encoder = nn.Sequential(*layers)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.filterbank(wave.unsqueeze(1)))


class MarginHead(nn.Module):
    """Cosine classifier with ArcFace margin, AdaCos scale or neither.

    ``cosines(emb)`` has shape (batch, n_classes): the cosine between the normalised
    embedding and its nearest sub-centre of each class (sub-centre ArcFace, Deng et al.
    2020, with ``subclusters`` centres per class). Logits are ``scale * cos``; in
    training ArcFace replaces the target's cosine by ``cos(theta + margin)``, and AdaCos
    (Zhang et al. 2019) re-estimates the scale after each batch. The scale is a buffer,
    so the one used for scoring is saved with the model.
    """

    def __init__(
        self, dim: int, n_classes: int, subclusters: int, loss: str, scale: float, margin: float
    ) -> None:
        super().__init__()
        self.n_classes, self.subclusters, self.kind = n_classes, subclusters, loss
        self.weight = nn.Parameter(torch.empty(n_classes * subclusters, dim))
        nn.init.xavier_uniform_(self.weight)
        if loss == "adacos":
            # AdaCos' fixed-point starting value; a 1-class problem would give log(0).
            scale = math.sqrt(2.0) * math.log(max(n_classes - 1, 2))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.margin = margin if loss == "arcface" else 0.0

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T
        return cos.view(len(emb), self.n_classes, self.subclusters).amax(dim=2)

    def log_probs(self, cos: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities (batch, n_classes) at the scoring scale, no margin."""
        return F.log_softmax(self.scale * cos, dim=1)

    def training_logits(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.margin == 0.0:
            return self.scale * cos
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        m = self.margin
        shifted = cos * math.cos(m) - sin * math.sin(m)
        # Past theta = pi - m, cos(theta + m) is no longer decreasing; ArcFace then uses
        # a linear penalty instead so the target logit always stays below cos(theta).
        shifted = torch.where(cos > math.cos(math.pi - m), shifted, cos - math.sin(m) * m)
        onehot = F.one_hot(target, self.n_classes).bool()
        return self.scale * torch.where(onehot, shifted, cos)

    @torch.no_grad()
    def update_adacos_scale(self, cos: torch.Tensor, target: torch.Tensor) -> None:
        onehot = F.one_hot(target, self.n_classes).bool()
        b_avg = torch.where(onehot, 0.0, torch.exp(self.scale * cos)).sum(1).mean()
        theta = torch.acos(cos[onehot].clamp(-1 + 1e-7, 1 - 1e-7))
        theta_med = torch.clamp(theta.median(), max=math.pi / 4)
        self.scale.copy_(torch.log(b_avg.clamp_min(1e-12)) / torch.cos(theta_med))


class IdClassifierNet(nn.Module):
    """Log-mel (+ optional temporal branch) -> MobileFaceNetLite -> margin head.

    A batch is ``(mel, wave, target)``: standardised log-mel crops (batch, n_mels,
    frames), waveform crops (batch, samples) or None, class indices (batch,).
    """

    def __init__(
        self,
        n_mels: int,
        n_classes: int,
        *,
        width: int,
        dim: int,
        temporal: tuple[int, int] | None,
        loss: str,
        scale: float,
        margin: float,
        subclusters: int,
        mixup: float,
    ) -> None:
        super().__init__()
        self.temporal = TemporalBranch(n_mels, *temporal) if temporal else None
        self.backbone = MobileFaceNetLite(2 if temporal else 1, n_mels, width, dim)
        self.head = MarginHead(dim, n_classes, subclusters, loss, scale, margin)
        self.mixup = mixup

    def embed(self, mel: torch.Tensor, wave: torch.Tensor | None) -> torch.Tensor:
        """Embeddings (batch, dim)."""
        x = mel.unsqueeze(1)
        if self.temporal is not None:
            x = torch.cat([x, self.temporal(wave).unsqueeze(1)], dim=1)
        return self.backbone(x)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
        mel, wave, target = batch
        if not (self.training and self.mixup > 0):
            cos = self.head.cosines(self.embed(mel, wave))
            if self.training and self.head.kind == "adacos":
                self.head.update_adacos_scale(cos, target)
            return F.cross_entropy(self.head.training_logits(cos, target), target)
        # Mixup (Zhang et al. 2018): a convex mix of two clips counts towards both labels.
        lam = float(np.random.beta(self.mixup, self.mixup))
        perm = torch.randperm(len(target))
        mel = lam * mel + (1 - lam) * mel[perm]
        wave = None if wave is None else lam * wave + (1 - lam) * wave[perm]
        cos = self.head.cosines(self.embed(mel, wave))
        if self.head.kind == "adacos":
            self.head.update_adacos_scale(cos, target)
        loss_a = F.cross_entropy(self.head.training_logits(cos, target), target)
        loss_b = F.cross_entropy(self.head.training_logits(cos, target[perm]), target[perm])
        return lam * loss_a + (1 - lam) * loss_b
