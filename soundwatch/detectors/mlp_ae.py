"""Fully connected autoencoders on standardised log-mel patches (``mlp-ae``,
``mlp-encoder-distance``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import id_key
from soundwatch.detectors.frontend import LOGMEL_PARAMS
from soundwatch.detectors.neural import TRAIN_PARAMS
from soundwatch.detectors.params import Param, override, parse_list
from soundwatch.detectors.registry import register
from soundwatch.detectors.scorers import MahalanobisScorer, Scorer
from soundwatch.detectors.windows import FrameStoreDetector, dense_stack, grid_indices
from soundwatch.errors import ConfigError
from soundwatch.features.frames import FrameStore


# --------------------------------------------------------------------- network
class MlpAutoencoder(nn.Module):
    """Symmetric dense autoencoder ``input-hidden...-latent-...hidden-input``, ReLU between
    layers, linear code and output. Input and output have shape (batch, input_dim)."""

    def __init__(self, n_features: int, context: int, hidden: Sequence[int], latent: int) -> None:
        super().__init__()
        self.n_features = n_features
        input_dim = n_features * context
        self.encoder = dense_stack([input_dim, *hidden, latent])
        self.decoder = dense_stack([latent, *reversed(hidden), input_dim])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def window_scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(x) - x) ** 2, dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(batch) - batch) ** 2)


# --------------------------------------------------------------------- detectors
@register
class MlpAutoencoderDetector(FrameStoreDetector):
    """Fully connected autoencoder on flattened, standardised log-mel patches.

    Input: patches of ``frames`` consecutive log-mel frames (n_fft 1024, hop 512, 128
    mels), each mel band standardised on the training normals, flattened frame-major to
    shape (batch, frames * 128); default 16 frames = 2048 inputs.
    Network: input-1024-512-256-64-256-512-1024-input (``hidden``, ``latent``), ReLU
    between layers, linear code and output; MSE loss. The study's deep symmetric variant
    8192-4096-2048-1024-512-256-64-...-8192 is ``frames=64
    hidden=4096,2048,1024,512,256`` (about 120 M weights: slow on a CPU).
    Training: Adam lr 1e-3, batch 256, at most 30 epochs, ReduceLROnPlateau (halve after
    3 epochs without validation improvement), early stopping after 6, best validation
    epoch kept. Each epoch draws a random 1/``stride`` (default 1/8) of all patch
    positions; validation patches start every ``stride`` frames of the held-out normals.
    Score: mean reconstruction MSE over the clip's patches, which start every
    ``score_stride`` (default 4) frames.
    """

    name = "mlp-ae"
    params = {
        **LOGMEL_PARAMS,
        **override(
            TRAIN_PARAMS, epochs=30, batch_size=256, lr_patience=3, early_stopping_patience=6
        ),
        "frames": Param(16, "consecutive log-mel frames per patch", low=1),
        "hidden": Param(
            "1024,512,256", "encoder layer widths, comma-separated (the decoder mirrors them)"
        ),
        "latent": Param(64, "width of the code layer", low=1),
        "stride": Param(
            8,
            "each training epoch uses a random 1/stride of all patch "
            "positions; validation patches start every stride frames",
            low=1,
        ),
        "score_stride": Param(4, "frames between the patches of a scored clip", low=1),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._hidden = parse_list("hidden", self.hidden)

    def _context(self) -> int:
        return self.frames

    def _build_network(self, n_features: int) -> MlpAutoencoder:
        return MlpAutoencoder(n_features, self.frames, self._hidden, self.latent)


@register
class MlpEncoderDistance(MlpAutoencoderDetector):
    """Distance of a clip's mean autoencoder code to the mean code of the training normals.

    The autoencoder, its input and its training are those of ``mlp-ae`` (same parameters
    and defaults). After training, the encoder maps every training patch on the scoring
    grid (starts every ``score_stride`` frames) to its 64-d code, shape (n_patches, 64),
    and their mean is the centre.
    Score (``distance=euclidean``, the published system): Euclidean distance between the
    mean code of the clip's patches and the centre. ``distance=mahalanobis`` instead
    fits one Ledoit-Wolf Gaussian per machine ID to the mean codes of that ID's training
    clips, shape (n_clips, 64), and scores a clip by the squared Mahalanobis distance
    under its own ID's Gaussian (the smallest over the IDs for a clip of an ID the
    model never saw). The autoencoder stays one for the machine type.
    Why the published score can sit near chance: the autoencoder learns the normals
    (its reconstruction error separates anomalies), and its codes do not collapse, but
    the Euclidean distance of a mean code weighs every code direction by how much the
    normals themselves vary along it, so normal clip-to-clip variation and the spread
    between machine IDs swamp the shift an anomaly causes. One whitened Gaussian per ID
    removes both; see benchmarks/results/2026-11-29-seed-systems.md.
    CPU cost: that of ``mlp-ae`` plus one encoder pass over the training patches.
    """

    name = "mlp-encoder-distance"
    # Near chance with 10 clips per ID on the seed-1 few-shot probe (benchmarks/results).
    near_chance_below = 100
    params = {
        **MlpAutoencoderDetector.params,
        "distance": Param(
            "euclidean",
            "euclidean (published): distance of the mean code to the training mean code; "
            "mahalanobis: Ledoit-Wolf Mahalanobis distance of the mean code to the mean "
            "codes of the training clips of the clip's machine ID",
            choices=("euclidean", "mahalanobis"),
        ),
    }

    def _clip_codes(self, store: FrameStore, indices: np.ndarray | None = None) -> np.ndarray:
        """Mean code of each clip's patches (all, or ``indices``), shape (n_clips, latent)."""
        codes = self._map_windows(store, self.network_.encode, indices)
        clips = store.window_clip if indices is None else store.window_clip[indices]
        counts = np.bincount(clips, minlength=store.n_clips)
        sums = np.stack(
            [np.bincount(clips, weights=c, minlength=store.n_clips) for c in codes.T], axis=1
        )
        return sums / counts[:, None]

    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        self._train_ids = np.array([id_key(c) for c in train])
        if self.distance == "mahalanobis":  # refused before training, not after
            ids, counts = np.unique(self._train_ids, return_counts=True)
            if counts.min() < MahalanobisScorer.min_samples:
                raise ConfigError(
                    f"distance=mahalanobis needs at least {MahalanobisScorer.min_samples} "
                    f"training clips per machine ID; ID {ids[counts.argmin()] or '(none)'} "
                    f"has {counts.min()}"
                )
        super()._fit(train, valid)

    def _after_training(self, train_store: FrameStore) -> None:
        grid = grid_indices(train_store, self.score_stride)
        self.scorers_: dict[str, Scorer] = {}
        if self.distance == "mahalanobis":
            clip_codes = self._clip_codes(train_store, grid)
            for machine_id in sorted(set(self._train_ids)):
                members = clip_codes[self._train_ids == machine_id]
                self.scorers_[machine_id] = MahalanobisScorer().fit(members)
            self.center_ = clip_codes.mean(axis=0)
            return
        codes = self._map_windows(train_store, self.network_.encode, grid)
        self.center_ = codes.mean(axis=0)

    def _score(self, clips: list[Clip]) -> np.ndarray:
        clip_codes = self._clip_codes(self._store(clips, self.score_stride))
        if not self.scorers_:
            return np.linalg.norm(clip_codes - self.center_, axis=1)
        by_id = {k: scorer.score(clip_codes) for k, scorer in self.scorers_.items()}
        nearest = np.min(np.stack(list(by_id.values())), axis=0)
        return np.array(
            [by_id[id_key(c)][i] if id_key(c) in by_id else nearest[i] for i, c in enumerate(clips)]
        )

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors, state = super()._get_state()
        tensors = {**tensors, "center": self.center_}
        if self.scorers_:
            metas = []
            for k, (machine_id, scorer) in enumerate(self.scorers_.items()):
                arrays, meta = scorer.state()
                metas.append({"machine_id": machine_id, **meta})
                tensors.update({f"scorer{k}.{name}": v for name, v in arrays.items()})
            state = {**state, "scorers": metas}
        return tensors, state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        super()._set_state(tensors, state)
        self.center_ = np.asarray(tensors["center"], dtype=np.float64)
        self.scorers_ = {}
        for k, meta in enumerate(state.get("scorers", [])):
            prefix = f"scorer{k}."
            arrays = {n[len(prefix) :]: v for n, v in tensors.items() if n.startswith(prefix)}
            self.scorers_[meta["machine_id"]] = Scorer.from_state(arrays, meta)
