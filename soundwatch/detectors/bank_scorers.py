"""Memory-bank scoring backends and bank helpers: LDN-kNN, PCA residual, greedy coreset.

The two scorers register in :data:`~soundwatch.detectors.scorers.SCORERS` beside
``knn`` and ``mahalanobis``, so they share that module's state format and model-file
plumbing. :func:`greedy_coreset` picks a bounded, well-spread subset of a feature bank
(PatchCore's k-center greedy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from soundwatch.detectors.scorers import (
    _CHUNK,
    Scorer,
    _check_metric,
    _sq_euclidean,
    _unit_rows,
    register_scorer,
)
from soundwatch.errors import ConfigError

# Greedy coreset distances are computed in a random projection of at most this many
# dimensions (PatchCore's trick): the selection only needs distances roughly right.
_PROJECTION_DIM = 128


def pairwise_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances of shape (len(a), len(b)); rows must be unit-normalised for cosine."""
    if metric == "cosine":
        return np.maximum(1.0 - a @ b.T, 0.0)
    return np.sqrt(_sq_euclidean(a, b))


def greedy_coreset(x: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a k-center greedy coreset of the rows of ``x``.

    Each step adds the row farthest from the rows chosen so far, so the coreset covers
    the bank's extent, rare normal states included, at a fraction of its size.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    size : int
        Rows to keep; all rows (in order) when ``size >= n``.
    seed : int
        Seed of the first row and of the random projection.

    Returns
    -------
    indices : ndarray of shape (min(size, n),), int64, in selection order
    """
    n = len(x)
    if size >= n:
        return np.arange(n)
    if size < 1:
        raise ConfigError(f"coreset size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    z = np.asarray(x, dtype=np.float64)
    if z.shape[1] > _PROJECTION_DIM:
        z = z @ rng.normal(size=(z.shape[1], _PROJECTION_DIM)) / np.sqrt(_PROJECTION_DIM)
    # float32 halves the memory traffic of the n x d pass each step makes.
    z = np.ascontiguousarray(z, dtype=np.float32)
    squared_norms = (z * z).sum(1)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = rng.integers(n)
    nearest = np.full(n, np.inf, dtype=np.float32)
    for step in range(1, size):
        last = z[chosen[step - 1]]
        dist = squared_norms - 2.0 * (z @ last) + last @ last
        np.minimum(nearest, dist, out=nearest)
        chosen[step] = int(np.argmax(nearest))
    return chosen


def knn_distances(query: np.ndarray, bank: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Sorted distances to the ``k`` nearest bank rows, shape (len(query), k), chunked."""
    k = min(k, len(bank))
    out = np.empty((len(query), k))
    for start in range(0, len(query), _CHUNK):
        dist = pairwise_distances(query[start : start + _CHUNK], bank, metric)
        nearest = np.partition(dist, k - 1, axis=1)[:, :k]
        out[start : start + len(dist)] = np.sort(nearest, axis=1)
    return out


@register_scorer
class LDNKNNScorer(Scorer):
    """Locally density-normalised kNN: distance to the nearest training vectors,
    divided by how far those vectors lie from their own neighbours.

    A query's score is the mean over its ``k`` nearest training vectors ``n_i`` of
    ``d(q, n_i) / r(n_i)``, where ``r(n_i)`` is the mean distance of ``n_i`` to its own
    ``k`` nearest training vectors. A query in a sparse but normal region (a rare
    operating state) then scores like one in a dense region.

    Parameters
    ----------
    k : int, default=5
    metric : {"euclidean", "cosine"}, default="euclidean"

    Attributes
    ----------
    train_ : ndarray of shape (n_train, d)
    radius_ : ndarray of shape (n_train,)
    """

    name = "ldn-knn"

    def __init__(self, standardize: bool = False, k: int = 5, metric: str = "euclidean") -> None:
        super().__init__(standardize)
        if int(k) < 1:
            raise ConfigError(f"ldn-knn k must be >= 1, got {k}")
        self.k = int(k)
        self.metric = _check_metric(metric)

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "metric": self.metric}

    def _prepare(self, z: np.ndarray) -> np.ndarray:
        return _unit_rows(z) if self.metric == "cosine" else z

    def _fit(self, Z: np.ndarray) -> None:
        self.train_ = self._prepare(Z)
        # k + 1 neighbours: the nearest is the vector itself, at distance 0.
        own = knn_distances(self.train_, self.train_, self.k + 1, self.metric)[:, 1:]
        radius = own.mean(axis=1)
        floor = max(float(np.median(radius)) * 1e-3, 1e-12)
        self.radius_ = np.maximum(radius, floor)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        query = self._prepare(Z)
        k = min(self.k, len(self.train_))
        scores = np.empty(len(query))
        for start in range(0, len(query), _CHUNK):
            dist = pairwise_distances(query[start : start + _CHUNK], self.train_, self.metric)
            index = np.argpartition(dist, k - 1, axis=1)[:, :k]
            nearest = np.take_along_axis(dist, index, axis=1)
            scores[start : start + len(dist)] = (nearest / self.radius_[index]).mean(axis=1)
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"train": self.train_, "radius": self.radius_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.train_ = arrays["train"].astype(np.float64)
        self.radius_ = arrays["radius"].astype(np.float64)


@register_scorer
class PCAResidualScorer(Scorer):
    """Squared distance to the principal subspace of the training vectors.

    The subspace keeps the fewest principal components that explain ``variance`` of
    the training variance (at most n_train - 1); what a vector has outside it is what
    the normals never varied in.

    Parameters
    ----------
    variance : float, default=0.95
        Fraction of the training variance the subspace explains, in (0, 1).

    Attributes
    ----------
    centre_ : ndarray of shape (d,)
    components_ : ndarray of shape (n_components, d)
    """

    name = "pca-residual"

    def __init__(self, standardize: bool = False, variance: float = 0.95) -> None:
        super().__init__(standardize)
        if not 0.0 < float(variance) < 1.0:
            raise ConfigError(f"pca-residual variance must be in (0, 1), got {variance}")
        self.variance = float(variance)

    def get_params(self) -> dict[str, Any]:
        return {"variance": self.variance}

    def _fit(self, Z: np.ndarray) -> None:
        self.centre_ = Z.mean(axis=0)
        _, singular, vt = np.linalg.svd(Z - self.centre_, full_matrices=False)
        explained = np.cumsum(singular**2) / max(float((singular**2).sum()), 1e-300)
        n_keep = int(np.searchsorted(explained, self.variance) + 1)
        self.components_ = vt[: min(n_keep, len(Z) - 1, vt.shape[0])]

    def _score(self, Z: np.ndarray) -> np.ndarray:
        centred = Z - self.centre_
        projected = centred @ self.components_.T
        return np.maximum((centred * centred).sum(1) - (projected * projected).sum(1), 0.0)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"centre": self.centre_, "components": self.components_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.centre_ = arrays["centre"].astype(np.float64)
        self.components_ = arrays["components"].astype(np.float64).reshape(-1, len(self.centre_))


__all__ = ["LDNKNNScorer", "PCAResidualScorer", "greedy_coreset", "knn_distances"]
