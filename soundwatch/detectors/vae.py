"""Fully connected beta-VAE on 5-frame log-mel vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from soundwatch.detectors.frontend import LOGMEL_PARAMS
from soundwatch.detectors.neural import TRAIN_PARAMS
from soundwatch.detectors.params import Param, override, parse_list
from soundwatch.detectors.registry import register
from soundwatch.detectors.windows import FrameStoreDetector, dense_stack


class BetaVAE(nn.Module):
    """Dense Gaussian VAE; input and output have shape (batch, input_dim).

    The encoder ``input-hidden...-2*latent`` gives the posterior mean and log-variance;
    the decoder ``latent-...hidden-input`` the reconstruction. The loss is the mean
    squared reconstruction error of a reparameterised sample plus ``beta`` times the
    KL divergence to N(0, I) (summed over latent units, averaged over the batch). In
    eval mode the sample is the posterior mean, so validation loss is deterministic.
    """

    def __init__(
        self,
        n_features: int,
        context: int,
        hidden: Sequence[int],
        latent: int,
        beta: float,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.beta = beta
        input_dim = n_features * context
        self.encoder = dense_stack([input_dim, *hidden, 2 * latent], batchnorm)
        self.decoder = dense_stack([latent, *reversed(hidden), input_dim], batchnorm)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean decoding: the reconstruction of the posterior mean."""
        return self.decoder(self.encode(x)[0])

    def window_scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(x) - x) ** 2, dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        mean, log_var = self.encode(batch)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if self.training else mean
        reconstruction = torch.mean((self.decoder(z) - batch) ** 2)
        kl = torch.mean(torch.sum(-0.5 * (1 + log_var - mean**2 - torch.exp(log_var)), dim=1))
        return reconstruction + self.beta * kl


@register
class BetaVAEDetector(FrameStoreDetector):
    """Fully connected beta-VAE on 5-frame log-mel vectors; score = reconstruction error.

    Input: 5 consecutive log-mel frames (n_fft 1024, hop 512, 128 mels) flattened to
    640-d vectors, shape (batch, 640), as in ``dcase2020-ae``; each mel band standardised
    on the training normals (``standardize=false`` for raw dB values).
    Network (default): encoder 640-128-128-128-128-(2x8), latent 8, decoder
    8-128-128-128-128-640, ReLU, no BatchNorm; loss = MSE + ``beta`` KL, beta 0.001.
    Training: Adam lr 1e-3, batch 512, at most 30 epochs, ReduceLROnPlateau (halve after
    3 epochs without validation improvement), early stopping after 6, best validation
    epoch kept. Each epoch draws a random 1/``stride`` of all vector positions
    (default 1: every vector, as the baseline); validation vectors start every
    ``stride`` frames of the held-out normals.
    Score: mean squared error of the mean decoding (decoder applied to the posterior mean,
    no sampling) over the clip's vectors, which start every ``score_stride`` (default 1)
    frames.
    Every vector position is a training vector each epoch; ``stride=2`` halves the cost.
    The 640-400-400-20 variant of the study reports is ``hidden=400,400 latent=20``,
    with BatchNorm after every hidden layer ``hidden=400,400 latent=20 batchnorm=true``.
    """

    name = "vae"
    params = {
        **LOGMEL_PARAMS,
        **override(TRAIN_PARAMS, epochs=30, lr_patience=3, early_stopping_patience=6),
        "context": Param(5, "consecutive frames per input vector", low=1),
        "hidden": Param(
            "128,128,128,128", "encoder layer widths, comma-separated (the decoder mirrors them)"
        ),
        "latent": Param(8, "latent dimensions", low=1),
        "beta": Param(0.001, "weight of the KL term", low=0.0),
        "batchnorm": Param(False, "BatchNorm after every hidden layer"),
        "standardize": Param(True, "standardise each mel band on training normals first"),
        "stride": Param(
            1,
            "each training epoch uses a random 1/stride of all vector "
            "positions; validation vectors start every stride frames",
            low=1,
        ),
        "score_stride": Param(1, "frames between the vectors of a scored clip", low=1),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._hidden = parse_list("hidden", self.hidden)

    def _context(self) -> int:
        return self.context

    def _build_network(self, n_features: int) -> BetaVAE:
        return BetaVAE(
            n_features, self.context, self._hidden, self.latent, self.beta, self.batchnorm
        )
