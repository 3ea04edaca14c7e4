"""Shared base of neural detectors on windows of standardised log-mel frames.

:class:`LogMelWindowDetector` gathers windows lazily from one float32
:class:`~soundwatch.features.frames.FrameStore`; :mod:`soundwatch.detectors.dcase2020_ae`,
:mod:`soundwatch.detectors.mlp_ae`, :mod:`soundwatch.detectors.vae` and
:mod:`soundwatch.detectors.recurrent` build on it.
:func:`overlap_average` turns per-window element errors into a per time-frequency
anomaly map; it serves every window and patch detector.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.frontend import LogMelFrontend
from soundwatch.detectors.neural import TRAIN_PARAMS, TorchDetectorMixin
from soundwatch.detectors.params import Param
from soundwatch.errors import ConfigError
from soundwatch.features.frames import FrameStore
from soundwatch.features.scaling import Standardizer
from soundwatch.training.loop import shuffled_batches

SCORE_BATCH = 1024


def train_params(**defaults: Any) -> dict[str, Param]:
    """:data:`TRAIN_PARAMS` with some defaults changed."""
    unknown = set(defaults) - set(TRAIN_PARAMS)
    if unknown:
        raise TypeError(f"not training parameters: {', '.join(sorted(unknown))}")
    return {
        key: dataclasses.replace(param, default=defaults.get(key, param.default))
        for key, param in TRAIN_PARAMS.items()
    }


def parse_layer_sizes(name: str, text: str) -> list[int]:
    """Parse a layer-size parameter such as ``"1024,512,256"`` into positive integers."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(
            f"parameter {name} expects comma-separated positive integers such as "
            f"1024,512,256, got {text!r}"
        )
    return sizes


def dense_stack(sizes: Sequence[int], batchnorm: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``; every layer but the last
    is followed by (BatchNorm and) ReLU, the last is linear."""
    layers: list[nn.Module] = []
    for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(size_in, size_out))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(size_out))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sampled_batches(
    n_windows: int, stride: int, batch_size: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Window index batches of one training epoch.

    Each epoch draws a fresh random ``1 / stride`` of all windows (every start frame is
    a candidate), so an epoch costs as much as windows at a fixed ``stride`` while, over
    the epochs, every offset is seen. Batches are shuffled; a last partial batch is
    dropped unless it would be the only one.
    """
    n_used = -(-n_windows // stride)
    chosen = rng.permutation(n_windows)[:n_used]
    for idx in shuffled_batches(n_used, batch_size, None, drop_last=True):
        yield chosen[idx]


def overlap_average(errors: np.ndarray, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """Spread per-window element errors back onto the frames they cover and average.

    Parameters
    ----------
    errors : ndarray of shape (n_windows, context, n_mels)
        Error of every element of every window (e.g. squared reconstruction error); NaN
        where the network makes no claim (e.g. the input frames of a predictor).
    starts : ndarray of shape (n_windows,)
        First frame of each window.
    n_frames : int
        Frames of the clip.

    Returns
    -------
    anomaly_map : ndarray of shape (n_mels, n_frames), float64
        Mean over the windows covering each frame of their finite errors there; NaN
        where no window claims a frame.

    Examples
    --------
    >>> overlap_average(np.ones((2, 2, 1)), np.array([0, 1]), 4).ravel()
    array([ 1.,  1.,  1., nan])
    """
    errors = np.asarray(errors, dtype=np.float64)
    n_windows, context, n_mels = errors.shape
    rows = (np.asarray(starts)[:, None] + np.arange(context)).reshape(-1)
    flat = errors.reshape(n_windows * context, n_mels)
    finite = np.isfinite(flat)
    sums = np.zeros((n_frames, n_mels))
    counts = np.zeros((n_frames, n_mels))
    # add.at, not fancy-index +=, because windows overlap: a frame appears many times.
    np.add.at(sums, rows, np.where(finite, flat, 0.0))
    np.add.at(counts, rows, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).T  # 0 / 0 -> NaN: no window claims that cell


def element_errors(network: nn.Module, batch: torch.Tensor) -> torch.Tensor | None:
    """Per-element errors of a window network, shape (batch, context, n_mels), or None.

    Uses ``network.element_errors(batch)`` when the network defines it. Otherwise they
    are derived from ``forward``: a reconstruction network (output shaped like its
    input) gives the squared reconstruction error; a next-frame predictor (reads
    ``batch[:, :-1]``, outputs one frame) gives the squared prediction error on the
    last frame and NaN on the frames it reads. The result is only returned if its
    per-window mean reproduces ``network.window_errors(batch)``, so the map always
    decomposes the score actually used, and None otherwise.
    """
    if hasattr(network, "element_errors"):
        return network.element_errors(batch)
    reference = network.window_errors(batch)
    n = batch.shape[0]
    n_mels = int(network.n_features)

    def reconstruction() -> torch.Tensor | None:
        output = network(batch)
        return (
            ((output - batch) ** 2).reshape(n, -1, n_mels) if output.shape == batch.shape else None
        )

    def prediction() -> torch.Tensor | None:
        if batch.dim() != 3 or batch.shape[1] < 2:
            return None
        predicted = network(batch[:, :-1])
        if predicted.shape != batch[:, -1].shape:
            return None
        errors = torch.full_like(batch, float("nan"))
        errors[:, -1] = (predicted - batch[:, -1]) ** 2
        return errors

    for candidate in (reconstruction, prediction):
        errors = candidate()
        if errors is not None and torch.allclose(
            torch.nanmean(errors.reshape(n, -1), dim=1), reference, rtol=1e-4, atol=1e-6
        ):
            return errors
    return None


def grid_indices(store: FrameStore, step: int) -> np.ndarray:
    """Indices of the windows of a stride-1 store that start every ``step`` frames of their
    clip (the windows a ``FrameStore(..., stride=step)`` would hold)."""
    rank = store.window_starts - store.offsets[:-1][store.window_clip]
    return np.flatnonzero(rank % step == 0)


class LogMelWindowDetector(LogMelFrontend, TorchDetectorMixin, Detector):
    """Base of neural detectors on windows of standardised log-mel frames (not registered).

    Log-mels are standardised per mel band with a :class:`Standardizer` fitted on the
    training normals (unless the detector has ``standardize=false``) and windows of
    :meth:`_context` frames are gathered lazily from a :class:`FrameStore`, so memory stays
    one float32 copy of the frames. Training draws a random ``1/stride`` of all windows per
    epoch (:func:`sampled_batches`); validation and scoring use windows every
    ``stride`` and ``score_stride`` frames. The score is the clip mean of the network's
    per-window error.

    Subclasses declare ``stride``, ``score_stride`` (and the training parameters) and
    implement :meth:`_context` and :meth:`_build_network`; the network has
    ``loss(batch)`` and ``window_errors(batch) -> (batch,)``, where a batch has shape
    (batch, context * n_mels) if ``flatten`` else (batch, context, n_mels).
    """

    flatten: ClassVar[bool] = True
    standardize = True  # a detector may declare it as a parameter instead

    @abstractmethod
    def _context(self) -> int:
        """Frames per window."""

    @abstractmethod
    def _build_network(self, n_features: int) -> nn.Module:
        """A fresh network for ``n_features`` mel bands."""

    # ----------------------------------------------------------------- features
    def _make_store(self, logmels: list[np.ndarray], stride: int) -> FrameStore:
        store = FrameStore(logmels, self._context(), stride)
        if self.scaler_ is not None:  # in place: no second copy of the frames
            store.frames -= self.scaler_.mean_
            store.frames /= self.scaler_.scale_
        return store

    def _store(self, clips: list[Clip], stride: int) -> FrameStore:
        return self._make_store(self.logmels(clips), stride)

    def _batch(self, store: FrameStore, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(store.windows(idx, flatten=self.flatten))

    @torch.inference_mode()
    def _map_windows(
        self,
        store: FrameStore,
        fn: Callable[[torch.Tensor], torch.Tensor],
        indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """Apply ``fn`` to windows (all, or ``indices``) in batches; rows in window order."""
        indices = np.arange(store.n_windows) if indices is None else indices
        parts = [
            fn(self._batch(store, indices[idx])).numpy()
            for idx in shuffled_batches(len(indices), SCORE_BATCH, None)
        ]
        return np.concatenate(parts).astype(np.float64)

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        logmels = self.logmels(train)
        self.scaler_ = Standardizer().fit(logmels) if self.standardize else None
        n_features = logmels[0].shape[0]
        train_store = self._make_store(logmels, 1)
        del logmels
        valid_store = self._store(valid, self.stride) if valid else None
        self.network_ = self._build_network(n_features)

        def train_batches(rng: np.random.Generator) -> Iterator[torch.Tensor]:
            for idx in sampled_batches(train_store.n_windows, self.stride, self.batch_size, rng):
                yield self._batch(train_store, idx)

        def valid_batches() -> Iterator[torch.Tensor]:
            for idx in shuffled_batches(valid_store.n_windows, SCORE_BATCH, None):
                yield self._batch(valid_store, idx)

        self.run_training(self.network_, train_batches, valid_batches if valid_store else None)
        self._after_training(train_store)

    def _after_training(self, train_store: FrameStore) -> None:
        """Fit anything beyond the network on the (stride-1) training windows."""

    def _score(self, clips: list[Clip]) -> np.ndarray:
        store = self._store(clips, self.score_stride)
        return store.clip_means(self._map_windows(store, self.network_.window_errors))

    @torch.inference_mode()
    def _anomaly_map(self, clip: Clip) -> np.ndarray | None:
        """Mean per-element error over the windows (every start frame) covering each
        time-frequency cell, in standardised units; None when the detector scores
        something other than the clip mean of the window errors (e.g. code distance)."""
        if type(self)._score is not LogMelWindowDetector._score:
            return None
        store = self._store([clip], 1)
        parts = []
        for idx in shuffled_batches(store.n_windows, SCORE_BATCH, None):
            errors = element_errors(self.network_, self._batch(store, idx))
            if errors is None:
                return None
            parts.append(errors.numpy())
        n_frames = int(store.offsets[1])
        return overlap_average(np.concatenate(parts), store.window_starts, n_frames)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        state = {
            "n_features": self.n_features_,
            "scaler": self.scaler_.to_dict() if self.scaler_ is not None else None,
        }
        return self.network_arrays(self.network_), state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        self.scaler_ = Standardizer.from_dict(state["scaler"]) if state["scaler"] else None
        self.network_ = self._build_network(int(state["n_features"]))
        self.load_network_arrays(self.network_, tensors)

    @property
    def n_features_(self) -> int:
        return int(self.network_.n_features)
