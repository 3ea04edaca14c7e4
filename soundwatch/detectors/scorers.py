"""Anomaly scorers for fixed-length embeddings: fit on normals, score new vectors.

Each scorer is a small class with ``fit(X)``, ``score(X)`` (higher = more anomalous),
``state()`` and ``from_state(...)``. The state is plain arrays plus a JSON dict, so a
fitted scorer goes into a soundwatch model file without pickling anything: where
scikit-learn does the fitting (Ledoit-Wolf, One-Class SVM, Gaussian mixture), its
fitted parameters are copied out and scoring is reimplemented in NumPy.

Optional standardisation (subtract the training mean, divide by the training standard
deviation, per dimension) is done by the shared base class before the scorer sees the
data, and is part of the state.

Scorers register by name in the :data:`SCORERS` registry::

    scorer = create_scorer("knn", standardize=True, k=5).fit(train_vectors)
    scores = scorer.score(test_vectors)
    arrays, meta = scorer.state()
    same = Scorer.from_state(arrays, meta)
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf
from sklearn.mixture import GaussianMixture
from sklearn.svm import OneClassSVM

from soundwatch.errors import ConfigError, ModelFileError
from soundwatch.registry import Registry
from soundwatch.validation import check_array

logger = logging.getLogger(__name__)

SCORERS: Registry[Scorer] = Registry("scorer")
METRICS: tuple[str, ...] = ("cosine", "euclidean")

# Rows of the query x training distance matrix computed at once (bounds memory).
_CHUNK = 1024


#: Class decorator: make a scorer available under ``cls.name``.
register_scorer = SCORERS.register


def create_scorer(name: str, **params: Any) -> Scorer:
    """Instantiate the scorer registered as ``name``; ConfigError lists the known ones."""
    return SCORERS.create(name, **params)


def mahalanobis_sq(x: np.ndarray, location: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances of the rows of ``x`` of shape (n, d), shape (n,)."""
    centred = x - location
    return np.einsum("nd,de,ne->n", centred, precision, centred)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector has no direction; leaving it at zero gives it cosine distance 1.
    return x / np.where(norms > 0, norms, 1.0)


def _sq_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


class Scorer(ABC):
    """Base class: optional standardisation, input checks, state plumbing.

    Subclasses declare ``name`` and implement ``_fit``, ``_score``, ``_get_state``,
    ``_set_state`` and ``get_params``; they see standardised data when
    ``standardize`` is True.

    Parameters
    ----------
    standardize : bool, default=False
        Standardise each dimension with the training mean and standard deviation
        (dimensions with zero spread are only centred).

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (d,)
        Standardisation statistics (zeros and ones when ``standardize`` is False).
    n_features_ : int
        Dimension d seen in ``fit``.
    """

    name: ClassVar[str] = ""
    #: Fewest training vectors the scorer can be fitted on.
    min_samples: ClassVar[int] = 2

    def __init__(self, standardize: bool = False) -> None:
        self.standardize = bool(standardize)
        self.n_features_: int | None = None

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments other than ``standardize``, JSON-serialisable."""

    @abstractmethod
    def _fit(self, Z: np.ndarray) -> None:
        """Fit on (standardised) training vectors of shape (n, d)."""

    @abstractmethod
    def _score(self, Z: np.ndarray) -> np.ndarray:
        """Scores of shape (n,) of (standardised) vectors of shape (n, d)."""

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]:
        """Fitted arrays."""

    @abstractmethod
    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_get_state` returned."""

    # ----------------------------------------------------------------- public API
    def fit(self, X: np.ndarray) -> Scorer:
        """Fit on normal vectors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        self
        """
        x = check_array(X, f"{self.name} training vectors", ndim=2)
        if len(x) < self.min_samples:
            raise ConfigError(
                f"scorer {self.name} needs at least {self.min_samples} training vectors, "
                f"got {len(x)}"
            )
        self.n_features_ = x.shape[1]
        if self.standardize:
            self.mean_ = x.mean(axis=0)
            std = x.std(axis=0)
            # Constant dimensions (dead units) would divide by zero; centring suffices.
            self.scale_ = np.where(std > 1e-12 * max(float(std.max()), 1e-300), std, 1.0)
        else:
            self.mean_ = np.zeros(x.shape[1])
            self.scale_ = np.ones(x.shape[1])
        self._fit(self._transform(x))
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64; higher means more anomalous
        """
        if self.n_features_ is None:
            raise ConfigError(f"scorer {self.name} is not fitted")
        x = check_array(X, f"{self.name} vectors to score", ndim=2)
        if x.shape[1] != self.n_features_:
            raise ConfigError(
                f"scorer {self.name} was fitted on {self.n_features_}-d vectors, got {x.shape[1]}"
            )
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(self._score(self._transform(x)), dtype=np.float64).reshape(-1)

    def _transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_ if self.standardize else x

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Fitted state as (arrays, JSON-serialisable dict); see :meth:`from_state`."""
        if self.n_features_ is None:
            raise ConfigError(f"scorer {self.name} is not fitted")
        arrays = {f"fit.{k}": np.asarray(v) for k, v in self._get_state().items()}
        if self.standardize:
            arrays["scaler.mean"] = self.mean_
            arrays["scaler.scale"] = self.scale_
        meta = {
            "scorer": self.name,
            "standardize": self.standardize,
            "params": self.get_params(),
            "n_features": self.n_features_,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> Scorer:
        """Rebuild a fitted scorer from :meth:`state`'s output (any registered scorer)."""
        name = meta.get("scorer")
        if not isinstance(name, str) or name not in SCORERS:
            raise ModelFileError(f"unknown scorer {name!r} in model state")
        scorer = SCORERS.create(name, standardize=meta["standardize"], **meta["params"])
        n_features = int(meta["n_features"])
        if scorer.standardize:
            scorer.mean_ = np.asarray(arrays["scaler.mean"], dtype=np.float64)
            scorer.scale_ = np.asarray(arrays["scaler.scale"], dtype=np.float64)
        else:
            scorer.mean_, scorer.scale_ = np.zeros(n_features), np.ones(n_features)
        scorer._set_state({k[4:]: np.asarray(v) for k, v in arrays.items() if k.startswith("fit.")})
        scorer.n_features_ = n_features
        return scorer

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}(standardize={self.standardize}{', ' if args else ''}{args})"


@register_scorer
class MahalanobisScorer(Scorer):
    """Squared Mahalanobis distance to a Gaussian with Ledoit-Wolf shrinkage covariance.

    Shrinkage keeps the covariance invertible when there are few clips per dimension
    (hundreds of normals against 384+ embedding dimensions).

    Attributes
    ----------
    location_ : ndarray of shape (d,)
    precision_ : ndarray of shape (d, d)
    """

    name = "mahalanobis"

    def get_params(self) -> dict[str, Any]:
        return {}

    def _fit(self, Z: np.ndarray) -> None:
        estimator = LedoitWolf().fit(Z)
        self.location_ = estimator.location_
        self.precision_ = estimator.precision_

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return mahalanobis_sq(Z, self.location_, self.precision_)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"location": self.location_, "precision": self.precision_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.location_ = arrays["location"].astype(np.float64)
        self.precision_ = arrays["precision"].astype(np.float64)


@register_scorer
class KNNScorer(Scorer):
    """Mean distance to the ``k`` nearest training vectors.

    Parameters
    ----------
    k : int, default=5
        Neighbours averaged. 5 rather than 1 because a single nearest neighbour makes
        the score hinge on one, possibly atypical, training clip; a few neighbours
        smooth that out while staying local. Capped at the number of training vectors.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Euclidean distance (of standardised vectors with ``standardize``), or cosine
        distance ``1 - cos``, which ignores the vectors' norms (for raw embeddings often
        a loudness cue more than content). Note that with ``standardize`` the cosine is
        taken between centred vectors: it then sees only the direction of a deviation
        from the training mean, not its size, so use cosine with ``standardize=False``.

    Attributes
    ----------
    train_ : ndarray of shape (n_train, d)
        The (standardised) training vectors, unit-normalised for ``"cosine"``.
    """

    name = "knn"

    def __init__(self, standardize: bool = False, k: int = 5, metric: str = "euclidean") -> None:
        super().__init__(standardize)
        if int(k) < 1:
            raise ConfigError(f"knn k must be >= 1, got {k}")
        self.k = int(k)
        self.metric = _check_metric(metric)

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "metric": self.metric}

    def _prepare(self, Z: np.ndarray) -> np.ndarray:
        return _unit_rows(Z) if self.metric == "cosine" else Z

    def _fit(self, Z: np.ndarray) -> None:
        if self.k >= len(Z):
            logger.warning(
                "knn: k=%d but only %d training vectors; the score is the mean distance "
                "to all of them",
                self.k,
                len(Z),
            )
        self.train_ = self._prepare(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        query = self._prepare(Z)
        k = min(self.k, len(self.train_))
        scores = np.empty(len(query))
        for start in range(0, len(query), _CHUNK):
            q = query[start : start + _CHUNK]
            if self.metric == "cosine":
                dist = np.maximum(1.0 - q @ self.train_.T, 0.0)
            else:
                dist = np.sqrt(_sq_euclidean(q, self.train_))
            nearest = np.partition(dist, k - 1, axis=1)[:, :k]
            scores[start : start + len(q)] = nearest.mean(axis=1)
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"train": self.train_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.train_ = arrays["train"].astype(np.float64)


def parse_gamma(gamma: str | float) -> str | float:
    """RBF ``gamma``: ``"scale"``, ``"auto"``, or a positive number (also as a string)."""
    if isinstance(gamma, str):
        text = gamma.strip().lower()
        if text in {"scale", "auto"}:
            return text
        try:
            gamma = float(text)
        except ValueError:
            raise ConfigError(
                f"ocsvm gamma must be 'scale', 'auto' or a positive number, got {gamma!r}"
            ) from None
    value = float(gamma)
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(f"ocsvm gamma must be positive, got {gamma!r}")
    return value


@register_scorer
class OCSVMScorer(Scorer):
    """One-Class SVM with an RBF kernel; score = minus the decision function.

    Fitted with scikit-learn's ``OneClassSVM``; only its support vectors, dual
    coefficients, intercept and gamma are kept, and the decision function
    ``sum_i a_i exp(-gamma |x - s_i|^2) + b`` is evaluated in NumPy.

    Parameters
    ----------
    nu : float, default=0.1
        Upper bound on the fraction of training vectors outside the boundary (and lower
        bound on the fraction of support vectors), in (0, 1].
    gamma : "scale", "auto" or float, default="scale"
        RBF width. ``"scale"`` is ``1 / (d * X.var())`` as in scikit-learn, ``"auto"``
        is ``1 / d``; a string holding a number is accepted (command line).

    Attributes
    ----------
    support_vectors_ : ndarray of shape (n_sv, d)
    dual_coef_ : ndarray of shape (n_sv,)
    intercept_ : float
    gamma_ : float
        The numeric gamma used.
    """

    name = "ocsvm"

    def __init__(
        self, standardize: bool = False, nu: float = 0.1, gamma: str | float = "scale"
    ) -> None:
        super().__init__(standardize)
        if not 0.0 < float(nu) <= 1.0:
            raise ConfigError(f"ocsvm nu must be in (0, 1], got {nu}")
        self.nu = float(nu)
        self.gamma = parse_gamma(gamma)

    def get_params(self) -> dict[str, Any]:
        return {"nu": self.nu, "gamma": self.gamma}

    def _numeric_gamma(self, Z: np.ndarray) -> float:
        if self.gamma == "scale":
            var = float(Z.var())
            return 1.0 / (Z.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / Z.shape[1]
        return float(self.gamma)

    def _fit(self, Z: np.ndarray) -> None:
        self.gamma_ = self._numeric_gamma(Z)
        svm = OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma_).fit(Z)
        self.support_vectors_ = np.asarray(svm.support_vectors_, dtype=np.float64)
        self.dual_coef_ = np.asarray(svm.dual_coef_, dtype=np.float64).reshape(-1)
        self.intercept_ = float(np.asarray(svm.intercept_).reshape(-1)[0])

    def decision_function(self, Z: np.ndarray) -> np.ndarray:
        """scikit-learn's ``OneClassSVM.decision_function`` of already transformed
        vectors (n, d): positive inside the learned region."""
        out = np.empty(len(Z))
        for start in range(0, len(Z), _CHUNK):
            z = Z[start : start + _CHUNK]
            kernel = np.exp(-self.gamma_ * _sq_euclidean(z, self.support_vectors_))
            out[start : start + len(z)] = kernel @ self.dual_coef_ + self.intercept_
        return out

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.decision_function(Z)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "support_vectors": self.support_vectors_,
            "dual_coef": self.dual_coef_,
            "intercept": np.array([self.intercept_]),
            "gamma": np.array([self.gamma_]),
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.support_vectors_ = arrays["support_vectors"].astype(np.float64)
        self.dual_coef_ = arrays["dual_coef"].astype(np.float64).reshape(-1)
        self.intercept_ = float(arrays["intercept"].reshape(-1)[0])
        self.gamma_ = float(arrays["gamma"].reshape(-1)[0])


@register_scorer
class GMMScorer(Scorer):
    """Gaussian mixture with full covariances; score = minus the log-likelihood.

    Fitted with scikit-learn's ``GaussianMixture`` (k-means initialisation); the
    weights, means and Cholesky factors of the precisions are kept and the
    log-likelihood is evaluated in NumPy.

    Parameters
    ----------
    n_components : int, default=2
        Mixture components, capped at the number of training vectors. Two lets the
        model follow a machine with two operating states while each component still
        sees enough clips for a full covariance.
    reg : float, default=1e-3
        Added to each covariance diagonal, relative to the mean per-dimension variance
        of the training vectors (so the same value suits raw and standardised
        embeddings). Keeps covariances invertible when a component has fewer vectors
        than dimensions.
    seed : int, default=0
        Random state of the k-means initialisation.
    max_iter : int, default=200
        EM iterations.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, d)
    precisions_cholesky_ : ndarray of shape (n_components, d, d)
        Lower-triangular ``L`` with precision ``L @ L.T`` (scikit-learn's convention).
    """

    name = "gmm"

    def __init__(
        self,
        standardize: bool = False,
        n_components: int = 2,
        reg: float = 1e-3,
        seed: int = 0,
        max_iter: int = 200,
    ) -> None:
        super().__init__(standardize)
        if int(n_components) < 1:
            raise ConfigError(f"gmm n_components must be >= 1, got {n_components}")
        if not float(reg) >= 0:
            raise ConfigError(f"gmm reg must be >= 0, got {reg}")
        self.n_components = int(n_components)
        self.reg = float(reg)
        self.seed = int(seed)
        self.max_iter = int(max_iter)

    def get_params(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "reg": self.reg,
            "seed": self.seed,
            "max_iter": self.max_iter,
        }

    def _fit(self, Z: np.ndarray) -> None:
        scale = float(Z.var(axis=0).mean())
        if self.n_components > len(Z):
            logger.warning(
                "gmm: %d components but only %d training vectors; fitting %d",
                self.n_components,
                len(Z),
                len(Z),
            )
        gmm = GaussianMixture(
            n_components=min(self.n_components, len(Z)),
            covariance_type="full",
            reg_covar=max(self.reg * scale, 1e-10),
            max_iter=self.max_iter,
            random_state=self.seed,
        ).fit(Z)
        self.weights_ = np.asarray(gmm.weights_, dtype=np.float64)
        self.means_ = np.asarray(gmm.means_, dtype=np.float64)
        self.precisions_cholesky_ = np.asarray(gmm.precisions_cholesky_, dtype=np.float64)

    def log_likelihood(self, Z: np.ndarray) -> np.ndarray:
        """Per-vector log-likelihood of already transformed vectors (n, d), as
        scikit-learn's ``GaussianMixture.score_samples``."""
        d = Z.shape[1]
        log_probs = np.empty((len(Z), len(self.weights_)))
        for j, (mean, chol) in enumerate(zip(self.means_, self.precisions_cholesky_, strict=True)):
            y = Z @ chol - mean @ chol  # whitened residuals: |y|^2 = Mahalanobis distance
            log_det = np.log(np.diag(chol)).sum()  # half the log-determinant of the precision
            log_probs[:, j] = -0.5 * (d * np.log(2 * np.pi) + (y * y).sum(1)) + log_det
        return logsumexp(log_probs + np.log(self.weights_), axis=1)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.log_likelihood(Z)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights_,
            "means": self.means_,
            "precisions_cholesky": self.precisions_cholesky_,
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = arrays["weights"].astype(np.float64)
        self.means_ = arrays["means"].astype(np.float64)
        self.precisions_cholesky_ = arrays["precisions_cholesky"].astype(np.float64)


@register_scorer
class MeanDistanceScorer(Scorer):
    """Distance to the mean training vector: the simplest embedding scorer.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}, default="euclidean"
        For ``"cosine"`` the mean is taken over unit-normalised vectors.

    Attributes
    ----------
    centre_ : ndarray of shape (d,)
    """

    name = "mean-distance"

    def __init__(self, standardize: bool = False, metric: str = "euclidean") -> None:
        super().__init__(standardize)
        self.metric = _check_metric(metric)

    def get_params(self) -> dict[str, Any]:
        return {"metric": self.metric}

    def _fit(self, Z: np.ndarray) -> None:
        self.centre_ = (_unit_rows(Z) if self.metric == "cosine" else Z).mean(axis=0)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return 1.0 - _unit_rows(Z) @ _unit_rows(self.centre_[None])[0]
        return np.linalg.norm(Z - self.centre_, axis=1)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"centre": self.centre_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.centre_ = arrays["centre"].astype(np.float64)


# The memory-bank backends (ldn-knn, pca-residual) register here too, so every scorer
# name is known wherever this module is imported; imported last, as they subclass Scorer.
from soundwatch.detectors import bank_scorers  # noqa: E402, F401
