"""The official DCASE 2020 Task 2 baseline autoencoder."""

from __future__ import annotations

import torch
from torch import nn

from soundwatch.detectors.frontend import LOGMEL_PARAMS
from soundwatch.detectors.neural import TRAIN_PARAMS
from soundwatch.detectors.params import Param, override
from soundwatch.detectors.registry import register
from soundwatch.detectors.windows import FrameStoreDetector


class DenseAutoencoder(nn.Module):
    """Dense autoencoder: Linear + BatchNorm + ReLU on every layer but the output.

    Input and output have shape (batch, context * n_features). BatchNorm uses Keras' momentum and
    epsilon, since the baseline was written in Keras.
    """

    def __init__(
        self, n_features: int, context: int, hidden: int = 128, bottleneck: int = 8, depth: int = 4
    ) -> None:
        super().__init__()
        self.n_features = n_features
        input_dim = n_features * context
        sizes = [input_dim] + [hidden] * depth + [bottleneck] + [hidden] * depth
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [
                nn.Linear(size_in, size_out),
                nn.BatchNorm1d(size_out, eps=1e-3, momentum=0.01),
                nn.ReLU(),
            ]
        layers.append(nn.Linear(sizes[-1], input_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def window_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(batch) - batch) ** 2, dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(batch) - batch) ** 2)


@register
class DCASE2020Autoencoder(FrameStoreDetector):
    """DCASE 2020 Task 2 baseline (Koizumi et al., 2020): dense autoencoder.

    Input: 5 consecutive log-mel frames (n_fft 1024, hop 512, 128 mels, 10·log10 power)
    flattened to 640-d vectors, shape (batch, 640).
    Network: 640-128-128-128-128-8-128-128-128-128-640, BatchNorm and ReLU on every
    layer but the output. Adam (lr 1e-3), MSE, batch 512, 100 epochs, and the weights of
    the last epoch are kept, as in the official script, whose Keras ``validation_split``
    only reports a loss. 10 % of the training normals are held out: their loss is
    recorded per epoch and they calibrate the threshold; ``restore_best=true`` keeps the
    best validation epoch instead (the best training-loss epoch where fewer than 8
    clips are held out per model).
    Score: mean squared reconstruction error over all the clip's vectors.
    Anomaly map: each vector's squared error reshaped to (context, n_mels), spread back
    onto the frames it covers and averaged over the vectors covering each frame.
    One model per machine type with all IDs pooled (``per_id=true`` for one per ID).
    """

    name = "dcase2020-ae"
    params = {
        **LOGMEL_PARAMS,
        **override(TRAIN_PARAMS, restore_best=False),
        "context": Param(5, "consecutive frames per input vector", low=1),
        "hidden": Param(128, "width of the hidden layers", low=1),
        "bottleneck": Param(8, "width of the code layer", low=1),
        "depth": Param(4, "hidden layers on each side of the code", low=1),
        "standardize": Param(False, "standardise each mel band on training normals first"),
    }

    # The baseline trains on every window each epoch and scores every window.
    stride = 1
    score_stride = 1

    def _context(self) -> int:
        return self.context

    def _build_network(self, n_features: int) -> DenseAutoencoder:
        return DenseAutoencoder(n_features, self.context, self.hidden, self.bottleneck, self.depth)
