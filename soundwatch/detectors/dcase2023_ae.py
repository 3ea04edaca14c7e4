"""The official DCASE 2023 Task 2 baseline: dense autoencoder, MSE or selective Mahalanobis."""

from __future__ import annotations

import numpy as np
import torch

from soundwatch.data.clips import Clip
from soundwatch.detectors.dcase2020_ae import DCASE2020Autoencoder
from soundwatch.detectors.neural import TRAIN_PARAMS
from soundwatch.detectors.params import Param, override
from soundwatch.detectors.registry import register
from soundwatch.errors import ConfigError
from soundwatch.features.frames import FrameStore

DOMAINS = ("source", "target")


@register
class DCASE2023Autoencoder(DCASE2020Autoencoder):
    """DCASE 2023 Task 2 baseline (Harada et al., EUSIPCO 2023; nttcslab
    dcase2023_task2_baseline_ae, ``baseline.yaml``).

    Input and network as ``dcase2020-ae``: 5 consecutive log-mel frames (n_fft 1024,
    hop 512, 128 mels, 10·log10 power), 640-128-128-128-128-8-128-128-128-128-640 with
    BatchNorm and ReLU. Published fit settings: Adam (lr 1e-3), MSE, batch 256, 100
    epochs, 10 % of the training normals held out; the last epoch is kept.

    Score ``scoring=mse``: mean squared reconstruction error over the clip's vectors.
    Score ``scoring=mahalanobis`` (selective Mahalanobis): after training, the covariance
    of the reconstruction-error vectors x - x̂ (640-d) of the source training clips and,
    separately, of the target training clips (the source one when there is no target
    clip); a clip's distance under each is the squared Mahalanobis distance of its mean
    error vector (what the published implementation's reduction over all pairs of a
    clip's vectors amounts to), and its score the smaller of the two. Training clips
    without a domain count as source.
    """

    name = "dcase2023-ae"
    params = {
        **DCASE2020Autoencoder.params,
        **override(TRAIN_PARAMS, batch_size=256, restore_best=False),
        "scoring": Param(
            "mse",
            "mse, or mahalanobis: the smaller of the source and target distances",
            choices=("mse", "mahalanobis"),
        ),
    }

    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        self._train_domains = [c.domain if c.domain in DOMAINS else "source" for c in train]
        super()._fit(train, valid)

    def _after_training(self, train_store: FrameStore) -> None:
        self.network_.eval()
        errors = self._map_windows(train_store, self._window_errors)
        window_domain = np.asarray(self._train_domains)[train_store.window_clip]
        self.inv_cov_ = {}
        self.n_domain_clips_ = {}
        for domain in DOMAINS:
            mask = window_domain == domain
            self.n_domain_clips_[domain] = int(np.unique(train_store.window_clip[mask]).size)
            if mask.sum() < 2:
                continue
            self.inv_cov_[domain] = _inverse_covariance(errors[mask])
        if "source" not in self.inv_cov_:
            raise ConfigError("selective Mahalanobis needs at least two source training windows")
        # Without target clips the baseline uses the source covariance for both.
        self.inv_cov_.setdefault("target", self.inv_cov_["source"])

    def _window_errors(self, batch: torch.Tensor) -> torch.Tensor:
        return batch - self.network_(batch)

    def _score(self, clips: list[Clip]) -> np.ndarray:
        if self.scoring == "mse":
            return super()._score(clips)
        store = self._store(clips, self.score_stride)
        mean_errors = _clip_mean_rows(store, self._map_windows(store, self._window_errors))
        distances = [
            np.einsum("ij,jk,ik->i", mean_errors, self.inv_cov_[d], mean_errors) for d in DOMAINS
        ]
        return np.minimum(*distances)

    def _extra_state(self) -> dict:
        return {"n_domain_clips": getattr(self, "n_domain_clips_", {})}

    def _load_extra_state(self, state: dict) -> None:
        self.n_domain_clips_ = dict(state.get("n_domain_clips", {}))

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors, state = super()._get_state()
        for d in DOMAINS:
            tensors[f"inv_cov_{d}"] = self.inv_cov_[d]
        return tensors, state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        tensors = dict(tensors)
        self.inv_cov_ = {d: np.asarray(tensors.pop(f"inv_cov_{d}")) for d in DOMAINS}
        super()._set_state(tensors, state)


def _inverse_covariance(errors: np.ndarray) -> np.ndarray:
    """Inverse of the (n - 1)-normalised covariance of error rows, shape (dim, dim).

    The pseudo-inverse stands in where the covariance is singular (fewer windows than
    dimensions), where the published code's plain inverse would fail.
    """
    centred = errors - errors.mean(axis=0)
    cov = centred.T @ centred / (len(errors) - 1)
    return np.linalg.pinv(cov, hermitian=True)


def _clip_mean_rows(store: FrameStore, rows: np.ndarray) -> np.ndarray:
    """Mean of each clip's window rows, shape (n_clips, dim)."""
    sums = np.zeros((store.n_clips, rows.shape[1]))
    np.add.at(sums, store.window_clip, rows)
    counts = np.bincount(store.window_clip, minlength=store.n_clips)
    return sums / counts[:, None]
