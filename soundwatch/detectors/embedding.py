"""Detectors that score clip embeddings of a pretrained (or random) audio encoder.

A clip goes through an encoder (:mod:`soundwatch.encoders`), its frame embeddings are
pooled into one vector, and a scorer from :mod:`soundwatch.detectors.scorers` fitted on
the normal training vectors gives the anomaly score. Frame embeddings are cached on disk
like log-mel features, so refitting with another scorer or pooling skips the network.

``embedding`` exposes every choice as a parameter (its default scorer is Mahalanobis);
``efficientat-knn``, ``efficientat-ocsvm`` and ``efficientat-gmm`` are the same class
with another default scorer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.frontend import LOGMEL_PARAMS
from soundwatch.detectors.params import Param, override, parse_channel
from soundwatch.detectors.registry import register
from soundwatch.detectors.scorers import METRICS, SCORERS, Scorer, create_scorer, parse_gamma
from soundwatch.encoders.base import Encoder
from soundwatch.encoders.embed import embed_clips
from soundwatch.encoders.pooling import DEFAULT_GEM_P, POOLINGS
from soundwatch.encoders.registry import ENCODERS, shared_encoder
from soundwatch.errors import ConfigError, ModelFileError

DEFAULT_ENCODER = "efficientat-mn04"

#: The frozen encoder of the embedding and decoder detectors.
ENCODER_PARAMS: dict[str, Param] = {
    # Validated at fit time, not here: encoders may register after this module loads,
    # and a model file must stay loadable even where its encoder is unavailable.
    "encoder": Param(DEFAULT_ENCODER, "registered audio encoder (see soundwatch.encoders)"),
    "weights": Param(
        None, "encoder checkpoint file (none = the encoder's default)", kind=str, optional=True
    ),
    "device": Param("cpu", "torch device of the encoder ('auto' = cuda when available)"),
    "encoder_batch_size": Param(8, "clips per encoder pass", low=1),
}

EMBEDDING_PARAMS: dict[str, Param] = {
    **ENCODER_PARAMS,
    "pooling": Param("mean", "pooling of frame embeddings over time", choices=POOLINGS),
    "gem_p": Param(DEFAULT_GEM_P, "exponent of gem pooling", low=1.0),
    "scorer": Param("mahalanobis", "scorer of clip embeddings", choices=tuple(SCORERS.names())),
    "standardize": Param(True, "standardise embeddings with training mean and std first"),
    "knn_k": Param(5, "knn: neighbours averaged", low=1),
    "knn_metric": Param(
        "euclidean", "knn: distance (cosine: use with standardize=false)", choices=METRICS
    ),
    "mean_metric": Param(
        "euclidean", "mean-distance: distance (cosine: use with standardize=false)", choices=METRICS
    ),
    "ocsvm_nu": Param(0.1, "ocsvm: bound on the fraction of outliers", low=1e-6, high=1.0),
    "ocsvm_gamma": Param("scale", "ocsvm: RBF gamma, 'scale', 'auto' or a number"),
    "gmm_components": Param(2, "gmm: mixture components", low=1),
    "gmm_reg": Param(1e-3, "gmm: covariance regularisation, relative to the variance", low=0.0),
    "duration": LOGMEL_PARAMS["duration"],
    "channel": LOGMEL_PARAMS["channel"],
    "per_id": Param(True, "fit one scorer per machine ID instead of one per type"),
}


@register
class EmbeddingDetector(Detector):
    """Anomaly score of pooled embeddings from an audio encoder.

    Every clip is resampled to the encoder's rate and turned into frame embeddings
    (cached on disk per encoder, weights and clip), which are pooled over time
    (``pooling``: mean, max, mean+std, or generalised mean). After optional
    standardisation, a scorer fitted on the training normals of each machine ID gives
    the score: ``mahalanobis`` (Ledoit-Wolf Gaussian), ``knn`` (mean distance to the
    ``knn_k`` nearest normals), ``ocsvm`` (RBF One-Class SVM), ``gmm`` (Gaussian
    mixture, negative log-likelihood) or ``mean-distance``. Nothing is trained by
    gradient descent, so fitting costs one encoder pass over the clips.

    The default encoder is EfficientAT ``mn04`` (AudioSet-pretrained MobileNetV3,
    32 kHz); ``encoder=random-cnn`` runs offline with a fixed random network. The model
    file holds only the scorer: the encoder and its weights must be available when
    scoring.
    """

    name = "embedding"
    params = EMBEDDING_PARAMS
    # Frame embeddings are cached, so a refit costs only the scorer's fit.
    cross_fit_calibration = True
    min_train_clips = Scorer.min_samples

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # Fail at construction on a malformed gamma rather than after a long encoder pass.
        parse_gamma(self.ocsvm_gamma)
        self.scorer_: Scorer | None = None

    # ----------------------------------------------------------------- helpers
    def get_encoder(self) -> Encoder:
        """The configured encoder; ConfigError listing the registered ones if unknown."""
        if self.encoder not in ENCODERS:
            raise ConfigError(
                f"{self.name}: unknown encoder {self.encoder!r}; "
                f"available: {', '.join(ENCODERS.names()) or 'none'}"
            )
        return shared_encoder(self.encoder, self.weights, self.device, self.encoder_batch_size)

    def make_scorer(self) -> Scorer:
        """An unfitted scorer configured from this detector's parameters."""
        options: dict[str, dict[str, Any]] = {
            "knn": {"k": self.knn_k, "metric": self.knn_metric},
            "mean-distance": {"metric": self.mean_metric},
            "ocsvm": {"nu": self.ocsvm_nu, "gamma": self.ocsvm_gamma},
            "gmm": {"n_components": self.gmm_components, "reg": self.gmm_reg, "seed": self.seed},
        }
        return create_scorer(
            self.scorer, standardize=self.standardize, **options.get(self.scorer, {})
        )

    def embed(self, clips: list[Clip]) -> np.ndarray:
        """Pooled clip embeddings of shape (n_clips, dim)."""
        vectors, _ = embed_clips(
            clips,
            self.get_encoder(),
            self.pooling,
            gem_p=self.gem_p,
            duration=self.duration,
            channel=parse_channel(self.channel),
        )
        return vectors

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        self.scorer_ = self.make_scorer().fit(self.embed(train))

    def _score(self, clips: list[Clip]) -> np.ndarray:
        vectors = self.embed(clips)
        if vectors.shape[1] != self.scorer_.n_features_:
            raise ModelFileError(
                f"{self.name}: encoder {self.encoder} gives {vectors.shape[1]}-d embeddings "
                f"but the scorer was fitted on {self.scorer_.n_features_}-d ones "
                "(different encoder, weights or pooling?)"
            )
        return self.scorer_.score(vectors)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, meta = self.scorer_.state()
        return {f"scorer.{k}": v for k, v in arrays.items()}, {"scorer": meta}

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        prefix = "scorer."
        arrays = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.scorer_ = Scorer.from_state(arrays, state["scorer"])

    @classmethod
    def from_state(
        cls, params: dict[str, Any], tensors: dict[str, np.ndarray], state: dict
    ) -> EmbeddingDetector:
        if "batch_size" in params:  # the name of encoder_batch_size in older model files
            params = dict(params)
            params["encoder_batch_size"] = params.pop("batch_size")
        return super().from_state(params, tensors, state)


# The same detector with another default scorer.


@register
class EfficientATKNN(EmbeddingDetector):
    """EfficientAT mn04 embeddings, k-nearest-neighbour scorer (``embedding`` preset)."""

    name = "efficientat-knn"
    params = override(EMBEDDING_PARAMS, scorer="knn")


@register
class EfficientATOCSVM(EmbeddingDetector):
    """EfficientAT mn04 embeddings, RBF One-Class SVM scorer (``embedding`` preset)."""

    name = "efficientat-ocsvm"
    params = override(EMBEDDING_PARAMS, scorer="ocsvm")


@register
class EfficientATGMM(EmbeddingDetector):
    """EfficientAT mn04 embeddings, Gaussian-mixture scorer (``embedding`` preset)."""

    name = "efficientat-gmm"
    params = override(EMBEDDING_PARAMS, scorer="gmm")
