"""The one base of neural detectors over windows of log-mel frames.

:class:`FrameStoreDetector` keeps the scaled log-mels of a split in one float32
:class:`~soundwatch.features.frames.FrameStore` and gathers windows of consecutive
frames per batch, so memory stays one copy of the frames. Three hooks make a family:

- the scaler (:meth:`FrameStoreDetector._new_scaler`): per-band standardisation, global
  min-max scaling or none, fitted on the training normals and applied in place;
- the batch layout (``layout``): flat vectors (batch, context * n_mels), frame sequences
  (batch, context, n_mels) or one-channel images (batch, 1, n_mels, context);
- the per-window score: the network's ``window_scores(batch)``, averaged per clip.

The dense (:mod:`~soundwatch.detectors.dcase2020_ae`, :mod:`~soundwatch.detectors.mlp_ae`,
:mod:`~soundwatch.detectors.vae`), recurrent (:mod:`~soundwatch.detectors.recurrent`)
and convolutional (:mod:`~soundwatch.detectors.conv`) detectors build on it.
:func:`overlap_average` turns per-window element errors into a per time-frequency
anomaly map.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.frontend import LogMelFrontend
from soundwatch.detectors.neural import TorchDetectorMixin
from soundwatch.features.frames import FrameStore
from soundwatch.features.scaling import MinMaxScaler, Standardizer, scaler_from_dict
from soundwatch.training.loop import shuffled_batches

#: Batch layouts of :class:`FrameStoreDetector`.
LAYOUTS = ("vectors", "sequences", "images")


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


def grid_indices(store: FrameStore, step: int) -> np.ndarray:
    """Indices of the windows of a stride-1 store that start every ``step`` frames of their
    clip (the windows a ``FrameStore(..., stride=step)`` would hold)."""
    rank = store.window_starts - store.offsets[:-1][store.window_clip]
    return np.flatnonzero(rank % step == 0)


def to_batch(windows: np.ndarray, layout: str) -> torch.Tensor:
    """Windows of shape (batch, context, n_mels) as a network batch in ``layout``.

    ``vectors``: (batch, context * n_mels), frame-major; ``sequences``: unchanged;
    ``images``: (batch, 1, n_mels, context) in channels-last memory format (oneDNN's
    fast CPU path for convolutions).
    """
    if layout == "vectors":
        return torch.from_numpy(windows.reshape(len(windows), -1))
    if layout == "sequences":
        return torch.from_numpy(windows)
    images = torch.from_numpy(np.ascontiguousarray(windows.transpose(0, 2, 1))[:, None])
    return images.contiguous(memory_format=torch.channels_last)


def from_batch(values: torch.Tensor, layout: str, n_mels: int) -> np.ndarray:
    """Per-element values of a batch in ``layout`` back in the window layout
    (batch, context, n_mels); the inverse of :func:`to_batch`."""
    if layout == "images":
        return values[:, 0].permute(0, 2, 1).numpy()
    return values.reshape(len(values), -1, n_mels).numpy()


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
    """Per-element errors of a window network, shaped like ``batch``, or None.

    Uses ``network.element_errors(batch)`` when the network defines it (it may return
    None: a score such as a code distance does not decompose over elements). Otherwise
    they are derived from ``forward``: a reconstruction network (output shaped like its
    input) gives the squared reconstruction error; a next-frame predictor on sequences
    (reads ``batch[:, :-1]``, outputs one frame) gives the squared prediction error on
    the last frame and NaN on the frames it reads. The result is only returned if its
    per-window mean reproduces ``network.window_scores(batch)``, so the map always
    decomposes the score actually used, and None otherwise.
    """
    if hasattr(network, "element_errors"):
        return network.element_errors(batch)
    reference = network.window_scores(batch)
    n = batch.shape[0]

    def reconstruction() -> torch.Tensor | None:
        output = network(batch)
        return (output - batch) ** 2 if output.shape == batch.shape else None

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


class FrameStoreDetector(LogMelFrontend, TorchDetectorMixin, Detector):
    """Base of neural detectors on windows of scaled log-mel frames (not registered).

    The log-mels of the training normals fit a scaler (:meth:`_new_scaler`), every
    frame store is scaled in place with it, and windows of :meth:`_context` frames are
    gathered per batch in the class's ``layout``. Training draws the windows of each
    epoch with :meth:`_epoch_batches`; validation and scoring use the windows of stores
    built at ``_valid_stride`` and ``score_stride``, in batches of ``score_batch_size``.
    The network has ``loss(batch)`` and ``window_scores(batch) -> (batch,)``; a clip's
    score is the mean of its windows' scores.

    Subclasses implement :meth:`_context` and :meth:`_build_network`, declare
    ``score_stride`` (and the training parameters) and may override the other hooks:
    :meth:`_new_scaler`, :meth:`_epoch_batches`, ``_train_stride``/``_valid_stride``,
    :meth:`_before_training`, :meth:`_after_training` and
    ``_extra_state``/``_load_extra_state``.
    """

    layout: ClassVar[str] = "vectors"
    #: Windows per inference pass (validation, scoring, maps). Validation losses are
    #: means over batches, so the size is part of a trained model's behaviour.
    score_batch_size: ClassVar[int] = 1024
    standardize = True  # a detector may declare it as a parameter instead

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.layout not in LAYOUTS:
            raise TypeError(f"{cls.__name__}.layout must be one of {LAYOUTS}, got {cls.layout!r}")

    @abstractmethod
    def _context(self) -> int:
        """Frames per window."""

    @abstractmethod
    def _build_network(self, n_features: int) -> nn.Module:
        """A fresh network for ``n_features`` mel bands."""

    # ----------------------------------------------------------------- hooks
    def _new_scaler(self) -> Standardizer | MinMaxScaler | None:
        """An unfitted scaler of the log-mels (None: raw dB values)."""
        return Standardizer() if self.standardize else None

    @property
    def _train_stride(self) -> int:
        """Stride of the training store (1: every start frame is a candidate window)."""
        return 1

    @property
    def _valid_stride(self) -> int:
        """Frames between the validation windows of a held-out clip."""
        return self.stride

    def _epoch_batches(self, store: FrameStore, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Window index batches of one training epoch (default: a random ``1/stride``)."""
        return sampled_batches(store.n_windows, self.stride, self.batch_size, rng)

    def _before_training(self, train_store: FrameStore) -> None:
        """Prepare the fresh network on the training windows before the loop runs."""

    def _after_training(self, train_store: FrameStore) -> None:
        """Fit anything beyond the network on the training windows."""

    def _extra_state(self) -> dict:
        """JSON-serialisable state beyond the network and the scaler."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`_extra_state` returned (before the network is built)."""

    # ----------------------------------------------------------------- features
    def _fit_scaler(self, logmels: list[np.ndarray]) -> None:
        scaler = self._new_scaler()
        self.scaler_ = scaler.fit(logmels) if scaler is not None else None

    def _make_store(self, logmels: list[np.ndarray], stride: int) -> FrameStore:
        store = FrameStore(logmels, self._context(), stride)
        if self.scaler_ is not None:  # in place: no second copy of the frames
            self.scaler_.apply_(store.frames)
        return store

    def _store(self, clips: list[Clip], stride: int) -> FrameStore:
        return self._make_store(self.logmels(clips), stride)

    def _batch(self, store: FrameStore, idx: np.ndarray) -> torch.Tensor:
        return to_batch(store.windows(idx, flatten=False), self.layout)

    def _new_network(self, n_features: int) -> nn.Module:
        network = self._build_network(n_features)
        if self.layout == "images":  # channels-last, like the image batches
            network = network.to(memory_format=torch.channels_last)
        return network

    def _train_batches(
        self, store: FrameStore
    ) -> Callable[[np.random.Generator], Iterator[torch.Tensor]]:
        def batches(rng: np.random.Generator) -> Iterator[torch.Tensor]:
            for idx in self._epoch_batches(store, rng):
                yield self._batch(store, idx)

        return batches

    def _valid_batches(
        self, store: FrameStore | None
    ) -> Callable[[], Iterator[torch.Tensor]] | None:
        if store is None:
            return None

        def batches() -> Iterator[torch.Tensor]:
            for idx in shuffled_batches(store.n_windows, self.score_batch_size, None):
                yield self._batch(store, idx)

        return batches

    @torch.inference_mode()
    def _map_windows(
        self,
        store: FrameStore,
        fn: Callable[[torch.Tensor], torch.Tensor],
        indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """Apply ``fn`` to windows (all, or ``indices``) in batches; rows in window order,
        float64."""
        indices = np.arange(store.n_windows) if indices is None else indices
        parts = [
            fn(self._batch(store, indices[idx])).numpy()
            for idx in shuffled_batches(len(indices), self.score_batch_size, None)
        ]
        return np.concatenate(parts).astype(np.float64)

    # ----------------------------------------------------------------- detector hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        logmels = self.logmels(train)
        self._fit_scaler(logmels)
        self.n_features_ = logmels[0].shape[0]
        train_store = self._make_store(logmels, self._train_stride)
        del logmels
        valid_store = self._store(valid, self._valid_stride) if valid else None
        self.network_ = self._new_network(self.n_features_)
        self._before_training(train_store)
        self.run_training(
            self.network_, self._train_batches(train_store), self._valid_batches(valid_store)
        )
        self._after_training(train_store)

    def _score(self, clips: list[Clip]) -> np.ndarray:
        store = self._store(clips, self.score_stride)
        return store.clip_means(self._map_windows(store, self.network_.window_scores))

    @torch.inference_mode()
    def _anomaly_map(self, clip: Clip) -> np.ndarray | None:
        """Mean per-element error over the windows (every start frame) covering each
        time-frequency cell, in scaled units; None when the score does not decompose
        over elements (a code distance, or a score other than the clip mean of the
        window scores)."""
        if type(self)._score is not FrameStoreDetector._score:
            return None
        store = self._store([clip], 1)
        parts = []
        for idx in shuffled_batches(store.n_windows, self.score_batch_size, None):
            errors = element_errors(self.network_, self._batch(store, idx))
            if errors is None:
                return None
            parts.append(from_batch(errors, self.layout, store.n_features))
        n_frames = int(store.offsets[1])
        return overlap_average(np.concatenate(parts), store.window_starts, n_frames)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        state = {
            "n_features": self.n_features_,
            "scaling": self.scaler_.name if self.scaler_ is not None else None,
            "scaler": self.scaler_.to_dict() if self.scaler_ is not None else None,
            **self._extra_state(),
        }
        return self.network_arrays(self.network_), state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        # Files written before the bases merged lack "scaling" (standardised windows) or
        # "n_features" (patches, whose network is sized by the n_mels parameter).
        scaler = state["scaler"]
        self.scaler_ = (
            scaler_from_dict(state.get("scaling") or "standard", scaler) if scaler else None
        )
        self._load_extra_state(state)
        self.n_features_ = int(state.get("n_features", getattr(self, "n_mels", 0)))
        self.network_ = self._new_network(self.n_features_)
        self.load_network_arrays(self.network_, tensors)
