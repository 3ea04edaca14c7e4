"""A fast, strong non-neural default: Mahalanobis distance of clip log-mel statistics."""

from __future__ import annotations

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.frontend import LOGMEL_PARAMS, LogMelFrontend
from soundwatch.detectors.params import Param
from soundwatch.detectors.registry import register
from soundwatch.detectors.scorers import MahalanobisScorer, Scorer


def clip_statistics(logmel: np.ndarray) -> np.ndarray:
    """Summarise a spectrogram of shape (n_mels, n_frames) as a (2 * n_mels,) vector:
    the band means (the machine's timbre) and band standard deviations (how much each
    band fluctuates, which transient faults such as clicks and rattles raise)."""
    return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)])


@register
class LogMelMahalanobis(LogMelFrontend, Detector):
    """Mahalanobis distance of clip-level log-mel statistics (fast non-neural default).

    Each clip becomes a 256-d vector: the mean and standard deviation over time of each
    of its 128 log-mel bands. A :class:`~soundwatch.detectors.scorers.MahalanobisScorer`
    (Gaussian with Ledoit-Wolf shrinkage covariance) is fitted to the training normals
    of each machine ID; the score is the squared Mahalanobis distance to it. Trains in
    seconds on a CPU.
    """

    name = "logmel-mahalanobis"
    cross_fit_calibration = True
    min_train_clips = MahalanobisScorer.min_samples
    params = {
        **LOGMEL_PARAMS,
        "per_id": Param(True, "fit one Gaussian per machine ID instead of one per type"),
    }

    def _vectors(self, clips: list[Clip]) -> np.ndarray:
        return np.stack([clip_statistics(m) for m in self.logmels(clips)]).astype(np.float64)

    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        self.scorer_ = MahalanobisScorer().fit(self._vectors(train))

    def _score(self, clips: list[Clip]) -> np.ndarray:
        return self.scorer_.score(self._vectors(clips))

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, meta = self.scorer_.state()
        return {f"scorer.{k}": v for k, v in arrays.items()}, {"scorer": meta}

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        if "scorer" not in state:  # written before the detector used MahalanobisScorer
            tensors = {f"scorer.fit.{k}": v for k, v in tensors.items()}
            state = {
                "scorer": {
                    "scorer": "mahalanobis",
                    "standardize": False,
                    "params": {},
                    "n_features": int(tensors["scorer.fit.location"].shape[0]),
                }
            }
        prefix = "scorer."
        arrays = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.scorer_ = Scorer.from_state(arrays, state["scorer"])
