"""Convolutional detectors on log-mel patches: autoencoder, Deep SVDD and beta-VAE.

All three read the same input: patches of ``frames`` consecutive log-mel frames, shaped
(batch, 1, n_mels, frames) like one-channel images, gathered per batch from a
:class:`~soundwatch.features.frames.FrameStore` (one float32 copy of the spectrograms;
patches are never materialised). Training draws ``train_patches`` random patches per clip
per epoch from the patch grid at ``train_stride``; scoring uses every patch at
``score_stride`` and a clip's score is the mean over its patches.

The shared pieces live here once: :func:`conv_block` and :func:`up_block`,
:class:`ConvEncoder` and :class:`ConvDecoder`, and the patch sampling of
:class:`ConvPatchDetector`, a :class:`~soundwatch.detectors.windows.FrameStoreDetector`
on image batches (scaling, batching and state are the base's). CPU cost is dominated by
the full-resolution first encoder block and last decoder block, so channel counts that
the study reports do not fix are kept small.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from soundwatch.data.clips import Clip
from soundwatch.detectors.frontend import LOGMEL_PARAMS
from soundwatch.detectors.neural import TRAIN_PARAMS
from soundwatch.detectors.params import Param, override, parse_list
from soundwatch.detectors.registry import register
from soundwatch.detectors.windows import FrameStoreDetector
from soundwatch.errors import ConfigError
from soundwatch.features.frames import FrameStore
from soundwatch.features.scaling import MinMaxScaler
from soundwatch.training.loop import TrainConfig, seed_everything, shuffled_batches

PATCH_PARAMS: dict[str, Param] = {
    **LOGMEL_PARAMS,
    **override(TRAIN_PARAMS, epochs=30, batch_size=64, lr_patience=3, early_stopping_patience=6),
    "frames": Param(32, "consecutive log-mel frames per input patch", low=1),
    "train_stride": Param(8, "frames between candidate training patch starts", low=1),
    "train_patches": Param(
        4, "random patches per clip per epoch from the training grid (0 = all)", low=0
    ),
    "score_stride": Param(16, "frames between patch starts when scoring and validating", low=1),
    "channels": Param(
        "8,16,32",
        "filters of the encoder blocks, comma-separated (one block each; the decoder mirrors them)",
    ),
}


# ----------------------------------------------------------------------------- helpers
def sample_patches(store: FrameStore, per_clip: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_clip`` distinct random windows of every clip (all if fewer; all
    windows if ``per_clip`` is 0), shuffled."""
    if per_clip <= 0:
        return rng.permutation(store.n_windows)
    counts = np.bincount(store.window_clip, minlength=store.n_clips)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keys = rng.random((store.n_clips, int(counts.max())))
    keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = np.inf
    ranks = np.argsort(keys, axis=1)[:, :per_clip]
    chosen = ranks < counts[:, None]
    return rng.permutation((firsts[:, None] + ranks)[chosen])


# ----------------------------------------------------------------------------- blocks
def conv_block(
    c_in: int, c_out: int, *, bias: bool = True, affine: bool = True, dropout: float = 0.0
) -> nn.Sequential:
    """Conv2d 3x3 (same padding) + BatchNorm + ReLU + MaxPool2d(2) [+ Dropout]:
    (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias),
        nn.BatchNorm2d(c_out, affine=affine),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """Nearest Upsample x2 + Conv2d 3x3 + BatchNorm + ReLU:
    (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class ConvEncoder(nn.Module):
    """Conv blocks, then optionally a dense layer to a code vector.

    Input (B, 1, n_mels, frames); block i halves both sizes and has ``channels[i]``
    filters. With ``latent`` > 0 the last feature map is flattened and mapped to
    ``heads * latent`` values (two heads: mean and log-variance of a VAE); with
    ``latent`` 0 the code is the last feature map itself (fully convolutional).
    ``forward`` returns the code and the list of block outputs (for skip connections).
    """

    def __init__(
        self,
        input_shape: tuple[int, int],
        channels: Sequence[int],
        latent: int,
        *,
        bias: bool = True,
        affine: bool = True,
        dropout: float = 0.0,
        latent_dropout: float = 0.0,
        heads: int = 1,
    ) -> None:
        super().__init__()
        sizes = [1, *channels]
        self.blocks = nn.ModuleList(
            conv_block(c_in, c_out, bias=bias, affine=affine, dropout=dropout)
            for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        scale = 2 ** len(channels)
        self.feature_shape = (channels[-1], input_shape[0] // scale, input_shape[1] // scale)
        self.dense = None
        if latent > 0:
            self.dense = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(latent_dropout) if latent_dropout > 0 else nn.Identity(),
                nn.Linear(math.prod(self.feature_shape), heads * latent, bias=bias),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return (self.dense(x) if self.dense is not None else x), features


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: dense layer back to the last feature map (when the
    encoder had one), up blocks in reverse channel order, and a 3x3 conv to one channel,
    optionally through a sigmoid. Output (B, 1, n_mels, frames).

    With ``skip`` every up block but the first also receives the encoder block output of
    its resolution, concatenated along channels (U-Net style); the deepest feature map
    is never skipped, so the code stays the only path through the bottleneck level.
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        channels: Sequence[int],
        latent: int,
        *,
        skip: bool = False,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        self.feature_shape = feature_shape
        self.skip = skip
        self.dense = nn.Linear(latent, math.prod(feature_shape)) if latent > 0 else None
        outs = [*channels[-2::-1], channels[0]]  # block i restores level depth - 1 - i
        ins = [channels[-1], *outs[:-1]]
        self.blocks = nn.ModuleList(
            up_block(c_in + (c_out if skip and i < len(channels) - 1 else 0), c_out)
            for i, (c_in, c_out) in enumerate(zip(ins, outs, strict=True))
        )
        self.head = nn.Conv2d(channels[0], 1, 3, padding=1)
        self.sigmoid = sigmoid

    def forward(
        self, code: torch.Tensor, features: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = code
        if self.dense is not None:
            x = self.dense(code).view(-1, *self.feature_shape)
        for i, block in enumerate(self.blocks):
            if self.skip and i < len(self.blocks) - 1:
                x = block[0](x)  # upsample, then join the encoder map of that level
                x = block[1:](torch.cat([x, features[-2 - i]], dim=1))
            else:
                x = block(x)
        x = self.head(x)
        return torch.sigmoid(x) if self.sigmoid else x


def patch_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, shape (B,)."""
    return torch.mean((x - y) ** 2, dim=(1, 2, 3))


# ----------------------------------------------------------------------------- networks
class ConvAutoencoder(nn.Module):
    """Encoder + decoder with sigmoid output, MSE loss; ``window_scores`` is the MSE."""

    def __init__(self, input_shape: tuple[int, int], channels: Sequence[int], latent: int) -> None:
        super().__init__()
        self.encoder = ConvEncoder(input_shape, channels, latent)
        self.decoder = ConvDecoder(self.encoder.feature_shape, channels, latent, sigmoid=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)[0])

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(batch) - batch) ** 2)

    def window_scores(self, x: torch.Tensor) -> torch.Tensor:
        return patch_mse(self(x), x)

    def element_errors(self, x: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction error per pixel, shape (B, 1, n_mels, frames)."""
        return (self(x) - x) ** 2


class DeepSVDDNetwork(nn.Module):
    """Bias-free encoder (BatchNorm without affine parameters, as in Ruff et al. 2018)
    mapping patches to codes, the fixed centre ``center`` (a buffer, never trained),
    and optionally a decoder for a reconstruction term.

    loss = mean ||z - c||^2 + recon_weight * MSE + l2 * sum of squared conv/linear weights
    (the L2 term only in training mode, so validation losses are the plain objective).
    """

    def __init__(
        self,
        input_shape: tuple[int, int],
        channels: Sequence[int],
        latent: int,
        *,
        dropout: float,
        latent_dropout: float,
        skip: bool,
        recon_weight: float,
        l2: float,
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(
            input_shape,
            channels,
            latent,
            bias=False,
            affine=False,
            dropout=dropout,
            latent_dropout=latent_dropout,
        )
        self.decoder = (
            ConvDecoder(self.encoder.feature_shape, channels, latent, skip=skip)
            if recon_weight > 0
            else None
        )
        self.recon_weight = recon_weight
        self.l2 = l2
        self.register_buffer("center", torch.zeros(latent))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distances of the patches' codes to the centre, shape (B,)."""
        return torch.sum((self.encoder(x)[0] - self.center) ** 2, dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        code, features = self.encoder(batch)
        loss = torch.mean(torch.sum((code - self.center) ** 2, dim=1))
        if self.decoder is not None:
            loss = loss + self.recon_weight * torch.mean(
                (self.decoder(code, features) - batch) ** 2
            )
        if self.training and self.l2 > 0:
            loss = loss + self.l2 * sum(
                torch.sum(m.weight**2)
                for m in self.modules()
                if isinstance(m, nn.Conv2d | nn.Linear)
            )
        return loss

    window_scores = distances

    def element_errors(self, x: torch.Tensor) -> None:
        """None: a distance of codes does not decompose over pixels, so no anomaly map."""
        return None


class ConvVAENetwork(nn.Module):
    """Convolutional beta-VAE: the encoder's dense layer gives mean and log-variance of a
    ``latent``-d Gaussian posterior; the decoder has a linear output.

    Per patch of D pixels, loss = (||x - x_hat||^2 + beta * KL(q(z|x) || N(0, I))) / D, i.e.
    a beta-weighted negative ELBO of a Gaussian decoder with variance 1/2 (up to a
    constant), per pixel. Training samples z; in eval mode z is the posterior mean, so
    validation losses and scores are deterministic.
    """

    def __init__(
        self, input_shape: tuple[int, int], channels: Sequence[int], latent: int, beta: float
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(input_shape, channels, latent, heads=2)
        self.decoder = ConvDecoder(self.encoder.feature_shape, channels, latent)
        self.beta = beta

    def neg_elbo(
        self, x: torch.Tensor, beta: float, sample: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-patch (beta-weighted) negative ELBO per pixel, shape (B,)."""
        mean, log_var = self.encoder(x)[0].chunk(2, dim=1)
        log_var = log_var.clamp(-30.0, 20.0)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * noise
        sse = torch.sum((self.decoder(z) - x) ** 2, dim=(1, 2, 3))
        kl = 0.5 * torch.sum(mean**2 + log_var.exp() - 1.0 - log_var, dim=1)
        return (sse + beta * kl) / x[0].numel()

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean(self.neg_elbo(batch, self.beta, sample=self.training))

    def window_scores(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.encoder(x)[0].chunk(2, dim=1)[0]
        return patch_mse(self.decoder(mean), x)

    def element_errors(self, x: torch.Tensor) -> torch.Tensor:
        """Squared error of the posterior-mean reconstruction per pixel, as scored;
        shape (B, 1, n_mels, frames)."""
        mean = self.encoder(x)[0].chunk(2, dim=1)[0]
        return (self.decoder(mean) - x) ** 2


# ----------------------------------------------------------------------------- detectors
class ConvPatchDetector(FrameStoreDetector):
    """The patch detectors' part of :class:`FrameStoreDetector` (not registered): image
    batches, patch sampling per clip, and encoder depth checks.

    Subclasses build their network in ``_build_network`` from :attr:`input_shape`.
    """

    layout: ClassVar[str] = "images"
    # Convolutions over full-resolution 128 x 32 images cost far more memory per window
    # than the dense and recurrent networks' windows.
    score_batch_size: ClassVar[int] = 256

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._channels = parse_list("channels", self.channels)
        depth = len(self._channels)
        for key in ("n_mels", "frames"):
            if getattr(self, key) % 2**depth:
                raise ConfigError(
                    f"parameter {key} ({getattr(self, key)}) must be divisible by "
                    f"2**{depth} = {2**depth} for {depth} pooling blocks"
                )

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.n_mels, self.frames)

    def _context(self) -> int:
        return self.frames

    @property
    def _train_stride(self) -> int:
        return self.train_stride

    @property
    def _valid_stride(self) -> int:
        return self.score_stride

    def _epoch_batches(self, store: FrameStore, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """``train_patches`` random patches of every clip, shuffled; a last partial batch
        is dropped unless it would be the only one."""
        order = sample_patches(store, self.train_patches, rng)
        for idx in shuffled_batches(len(order), self.batch_size, None, drop_last=True):
            yield order[idx]


@register
class ConvAutoencoderDetector(ConvPatchDetector):
    """Convolutional autoencoder on log-mel patches, MSE score.

    Input: patches of ``frames`` (32) log-mel frames x ``n_mels`` (128), shape
    (B, 1, 128, 32), min-max scaled to [0, 1] with one global minimum and maximum fitted
    on the training normals (stored in the model file).
    Encoder: three blocks Conv2d 3x3 + BatchNorm + ReLU + MaxPool2d(2) with ``channels``
    (8, 16, 32) filters -> (B, 32, 16, 4), then a dense layer to a ``latent`` (64) code
    (``latent=0``: no dense layer, fully convolutional).
    Decoder: dense layer back to (B, 32, 16, 4), three blocks nearest Upsample x2 +
    Conv2d 3x3 + BatchNorm + ReLU (16, 8, 8 filters), Conv2d 3x3 to one channel, sigmoid.
    Training: Adam (lr 1e-3), MSE, batch 64, up to 25 epochs of ``train_patches`` (4)
    random patches per clip from a stride-8 grid; ReduceLROnPlateau (patience 3) and
    early stopping (patience 6) on the held-out normals' loss; best epoch kept.
    Score: mean squared reconstruction error over the clip's patches at stride 16.
    Anomaly map: squared reconstruction error per pixel of patches at every start frame,
    averaged over the patches covering each time-frequency cell.
    The channel counts and code size are not fixed by the study; they are kept small so
    the default trains on a CPU.
    """

    name = "conv-ae"
    # Near chance with 10 clips per ID on the seed-1 few-shot probe (benchmarks/results).
    near_chance_below = 100
    params = {
        **override(PATCH_PARAMS, epochs=25),
        "latent": Param(64, "dense code size (0 = fully convolutional, no dense layer)", low=0),
    }

    def _new_scaler(self) -> MinMaxScaler:
        return MinMaxScaler()

    def _build_network(self, n_features: int) -> nn.Module:
        return ConvAutoencoder(self.input_shape, self._channels, self.latent)


@register
class ConvDeepSVDDDetector(ConvPatchDetector):
    """CNN encoder trained with the Deep SVDD objective (Ruff et al., 2018).

    Input: standardised (per mel band, fitted on training normals) patches of
    ``frames`` (32) x ``n_mels`` (128) log-mel frames, shape (B, 1, 128, 32).
    Encoder: four blocks Conv2d 3x3 + BatchNorm + ReLU + MaxPool2d(2) with ``channels``
    (32, 64, 128, 256) filters and dropout ``dropout`` (0.2) after each block ->
    (B, 256, 8, 2), flatten, dropout ``latent_dropout`` (0.3), dense layer to a
    ``latent`` (40) code z. Against the hypersphere-collapse trivial solution no encoder
    layer has a bias and BatchNorm has no affine parameters.
    Centre: c = mean code of the training patches under the initial, untrained network
    (BatchNorm statistics first calibrated on those patches, then c computed in eval
    mode); coordinates with |c_j| < ``center_eps`` (0.1) are set to +-eps. c is a fixed
    buffer of the network, never trained, and saved in the model file.
    Loss: mean ||z - c||^2 + ``l2`` (0.002) * sum of the squared conv and dense weights
    (an explicit L2 term as Keras' kernel regulariser, applied in training only; Adam
    ``weight_decay`` stays 0) + ``recon_weight`` (0) * reconstruction MSE. With
    ``recon_weight`` > 0 a mirrored decoder (Upsample + conv blocks, linear output) is
    trained too, and ``skip=true`` adds U-Net skip connections from the encoder blocks
    to it; they only affect that reconstruction term.
    Training: Adam (lr 1e-3), batch 64, up to 15 epochs of ``train_patches`` (2) random
    patches per clip from a stride-8 grid, LR plateau and early stopping on held-out
    normals. The 32-64-128-256 encoder is costly on a CPU, hence fewer patches per epoch.
    Score: mean over the clip's patches (stride 16) of ||z - c||^2.
    On soundwatch's synthetic sets this score sits near chance, and the causes the
    study's description invites were ruled out on separately seeded sets: the codes do
    not collapse onto c; dropout and batch statistics in training mode (the objective
    is optimised in train mode, scored in eval mode) change little when dropout is
    removed; a centre per machine ID, or recomputed from the trained codes, does not
    help; and more epochs do not raise it above that after the first epoch. The
    Euclidean distance weighs every code direction by the normals' own spread there;
    a Ledoit-Wolf Mahalanobis distance of the clip's mean code separates fan anomalies
    far better, slider ones not. See benchmarks/results/2026-11-29-seed-systems.md.
    """

    name = "conv-ae-svdd"
    # Near chance with 10 clips per ID on the seed-1 few-shot probe (benchmarks/results).
    near_chance_below = 100
    params = {
        **override(PATCH_PARAMS, epochs=15, train_patches=2, channels="32,64,128,256"),
        "latent": Param(40, "code size (hypersphere dimension)", low=1),
        "dropout": Param(0.2, "dropout after each encoder conv block", low=0.0, high=0.9),
        "latent_dropout": Param(0.3, "dropout before the code layer", low=0.0, high=0.9),
        "l2": Param(0.002, "L2 weight regularisation strength (explicit loss term)", low=0.0),
        "center_eps": Param(0.1, "centre coordinates closer to 0 are set to +-eps", low=0.0),
        "recon_weight": Param(
            0.0, "weight of a reconstruction MSE term (0 = pure Deep SVDD, no decoder)", low=0.0
        ),
        "skip": Param(False, "encoder-decoder skip connections (needs recon_weight > 0)"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.skip and self.recon_weight <= 0:
            raise ConfigError(
                "parameter skip=true needs recon_weight > 0: skip connections "
                "only feed the decoder of the reconstruction term"
            )

    def _build_network(self, n_features: int) -> nn.Module:
        return DeepSVDDNetwork(
            self.input_shape,
            self._channels,
            self.latent,
            dropout=self.dropout,
            latent_dropout=self.latent_dropout,
            skip=self.skip,
            recon_weight=self.recon_weight,
            l2=self.l2,
        )

    @property
    def center_(self) -> np.ndarray:
        """The hypersphere centre c, shape (latent,)."""
        return self.network_.center.numpy().copy()

    @torch.no_grad()
    def _before_training(self, train_store: FrameStore) -> None:
        """Calibrate BatchNorm on the training patches, then fix the centre c."""
        network, store = self.network_, train_store
        rng = np.random.default_rng(self.seed)
        order = sample_patches(store, self.train_patches, rng)
        size = self.score_batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
        network.train()
        for idx in batches:
            network.encoder(self._batch(store, idx))
        for m in norms:
            m.momentum = 0.1
        network.eval()
        total = torch.zeros(self.latent, dtype=torch.float64)
        for idx in batches:
            total += network.encoder(self._batch(store, idx))[0].double().sum(0)
        center = (total / len(order)).float()
        eps = self.center_eps
        center[(center.abs() < eps) & (center < 0)] = -eps
        center[(center.abs() < eps) & (center >= 0)] = eps
        network.center.copy_(center)


@register
class ConvVAEDetector(ConvPatchDetector):
    """Convolutional beta-VAE on log-mel patches, reconstruction-error score.

    Input: standardised (per mel band, fitted on training normals) patches of
    ``frames`` (32) x ``n_mels`` (128) log-mel frames, shape (B, 1, 128, 32).
    Encoder: three blocks Conv2d 3x3 + BatchNorm + ReLU + MaxPool2d(2) with ``channels``
    (8, 16, 32) filters -> (B, 32, 16, 4), dense layer to mean and log-variance of a
    ``latent`` (16; the study's grid is 8, 16, 32) dimensional Gaussian.
    Decoder: dense layer, three nearest Upsample + Conv2d 3x3 + BatchNorm + ReLU blocks,
    Conv2d 3x3 to one channel, linear output.
    Loss per patch: (squared error sum + ``beta`` (0.1) * KL) / pixels, a beta-weighted
    negative ELBO (Gaussian decoder of variance 1/2); z is sampled in training and is
    the posterior mean in evaluation. Adam (lr 1e-3), batch 64, up to 30 epochs of 4
    random patches per clip from a stride-8 grid, LR plateau and early stopping on the
    held-out normals' loss.
    Score: mean squared reconstruction error of the posterior-mean reconstruction over
    the clip's patches (stride 16): deterministic, and it does not mix the KL term,
    whose scale depends on beta, into the score.
    Anomaly map: that reconstruction error per pixel, patches at every start frame,
    averaged over the patches covering each time-frequency cell.
    Grid search (``grid_search=true``): for every (latent, beta) in ``latent_grid`` x
    ``beta_grid`` a model is trained for ``grid_epochs`` (3) epochs on k-1 of
    ``cv_folds`` (3) folds of the training clips (split by clip, stratified by machine
    ID; scaling refitted per fold) and evaluated on the held-out fold by its negative
    ELBO with beta = 1 per pixel (one z sample from a fixed-seed generator): a proper,
    beta-independent likelihood bound, never labels. The lowest mean over folds wins;
    the final model is then trained on all training clips with the validation split for
    early stopping. The grid results and choice are stored in the model file's state.
    Cost: len(latent_grid) * len(beta_grid) * cv_folds * grid_epochs * (k-1)/k extra
    epochs (54 with the default 3 x 3 grid), i.e. roughly two default trainings more.
    """

    name = "conv-vae"
    params = {
        **PATCH_PARAMS,
        "latent": Param(16, "latent dimensions", low=1),
        "beta": Param(0.1, "weight of the KL term", low=0.0),
        "grid_search": Param(False, "choose latent and beta by k-fold CV on training normals"),
        "cv_folds": Param(3, "folds of the grid search", low=2),
        "grid_epochs": Param(3, "training epochs per grid point and fold", low=1),
        "latent_grid": Param("8,16,32", "latent sizes searched, comma-separated"),
        "beta_grid": Param("0.01,0.1,1.0", "beta values searched, comma-separated"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._latent_grid = parse_list("latent_grid", self.latent_grid, int, 1)
        self._beta_grid = parse_list("beta_grid", self.beta_grid, float, 0.0)
        self.latent_, self.beta_ = self.latent, self.beta
        self.grid_: dict | None = None
        self._epochs_override: int | None = None

    def train_config(self) -> TrainConfig:
        config = super().train_config()
        if self._epochs_override is not None:
            config = replace(config, epochs=self._epochs_override)
        return config

    def _build_network(self, n_features: int) -> nn.Module:
        return ConvVAENetwork(self.input_shape, self._channels, self.latent_, self.beta_)

    @staticmethod
    def cv_folds_of(clips: list[Clip], k: int, seed: int) -> np.ndarray:
        """Fold number of every clip: shuffled, and balanced within each machine ID."""
        rng = np.random.default_rng(seed)
        folds = np.empty(len(clips), dtype=int)
        ids = np.array([c.machine_id or "" for c in clips])
        for machine_id in sorted(set(ids)):
            members = rng.permutation(np.flatnonzero(ids == machine_id))
            folds[members] = (np.arange(len(members)) + rng.integers(k)) % k
        return folds

    def _grid_search(self, train: list[Clip]) -> None:
        if len(train) < self.cv_folds:
            raise ConfigError(
                f"grid search needs at least cv_folds={self.cv_folds} training "
                f"clips, got {len(train)}"
            )
        logmels = self.logmels(train)
        folds = self.cv_folds_of(train, self.cv_folds, self.seed)
        grid = [(lat, beta) for lat in self._latent_grid for beta in self._beta_grid]
        losses = np.empty((len(grid), self.cv_folds))
        try:
            self._epochs_override = self.grid_epochs
            for fold in range(self.cv_folds):
                fit_part = [m for m, f in zip(logmels, folds, strict=True) if f != fold]
                held_part = [m for m, f in zip(logmels, folds, strict=True) if f == fold]
                self._fit_scaler(fit_part)
                fit_store = self._make_store(fit_part, self.train_stride)
                held_store = self._make_store(held_part, self.score_stride)
                del fit_part, held_part
                for g, (latent, beta) in enumerate(grid):
                    self.latent_, self.beta_ = latent, beta
                    seed_everything(self.seed)
                    network = self._new_network(self.n_mels)
                    self.run_training(network, self._train_batches(fit_store), None)
                    generator = torch.Generator().manual_seed(self.seed)
                    values = self._map_windows(
                        held_store,
                        lambda x, n=network, gen=generator: n.neg_elbo(x, 1.0, True, gen),
                    )
                    losses[g, fold] = float(values.mean())
                del fit_store, held_store
        finally:
            self._epochs_override = None
        means = losses.mean(axis=1)
        best = int(np.argmin(means))
        self.latent_, self.beta_ = grid[best]
        self.grid_ = {
            "criterion": "held-out negative ELBO per pixel (beta = 1), mean over folds",
            "folds": self.cv_folds,
            "epochs": self.grid_epochs,
            "results": [
                {
                    "latent": lat,
                    "beta": beta,
                    "fold_losses": losses[g].tolist(),
                    "mean_loss": float(means[g]),
                }
                for g, (lat, beta) in enumerate(grid)
            ],
            "selected": {"latent": self.latent_, "beta": self.beta_},
        }

    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        self.latent_, self.beta_, self.grid_ = self.latent, self.beta, None
        if self.grid_search:
            self._grid_search(train)
            seed_everything(self.seed)
        super()._fit(train, valid)

    def _extra_state(self) -> dict:
        return {"latent": self.latent_, "beta": self.beta_, "grid_search": self.grid_}

    def _load_extra_state(self, state: dict) -> None:
        self.latent_, self.beta_ = int(state["latent"]), float(state["beta"])
        self.grid_ = state.get("grid_search")
