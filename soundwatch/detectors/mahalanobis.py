"""A fast, strong non-neural default: Mahalanobis distance of clip log-mel statistics."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.frontend import LOGMEL_PARAMS, LogMelFrontend
from soundwatch.detectors.params import Param
from soundwatch.detectors.registry import register


def clip_statistics(logmel: np.ndarray) -> np.ndarray:
    """Summarise a spectrogram of shape (n_mels, n_frames) as a (2 * n_mels,) vector:
    the band means (the machine's timbre) and band standard deviations (how much each
    band fluctuates, which transient faults such as clicks and rattles raise)."""
    return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)])


def mahalanobis_sq(x: np.ndarray, location: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances of rows of ``x`` of shape (n, d)."""
    centred = x - location
    return np.einsum("nd,de,ne->n", centred, precision, centred)


@register
class LogMelMahalanobis(LogMelFrontend, Detector):
    """Mahalanobis distance of clip-level log-mel statistics (fast non-neural default).

    Each clip becomes a 256-d vector: the mean and standard deviation over time of each
    of its 128 log-mel bands. A Gaussian with Ledoit-Wolf shrinkage covariance is fitted
    to the training normals of each machine ID; the score is the squared Mahalanobis
    distance to it. Trains in seconds on a CPU; no published figure (soundwatch's own).
    """

    name = "logmel-mahalanobis"
    summary = "fast default: Ledoit-Wolf Mahalanobis distance of clip log-mel statistics"
    cross_fit_calibration = True
    params = {
        **LOGMEL_PARAMS,
        "per_id": Param(True, "fit one Gaussian per machine ID instead of one per type"),
    }

    def _vectors(self, clips: list[Clip]) -> np.ndarray:
        return np.stack([clip_statistics(m) for m in self.logmels(clips)]).astype(np.float64)

    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        vectors = self._vectors(train)
        estimator = LedoitWolf().fit(vectors)
        self.location_ = estimator.location_
        self.precision_ = estimator.precision_

    def _score(self, clips: list[Clip]) -> np.ndarray:
        return mahalanobis_sq(self._vectors(clips), self.location_, self.precision_)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        return {"location": self.location_, "precision": self.precision_}, {}

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        self.location_ = tensors["location"].astype(np.float64)
        self.precision_ = tensors["precision"].astype(np.float64)
