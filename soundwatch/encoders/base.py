"""The audio encoder interface: waveforms in, frame embeddings out.

An :class:`Encoder` turns waveforms into a sequence of frame embeddings. Detectors never
call a network directly: :func:`~soundwatch.encoders.embed.embed_clips` loads each clip
at the encoder's sample rate, caches its frame embeddings and pools them. Encoders
register by name in :data:`~soundwatch.encoders.registry.ENCODERS`::

    @ENCODERS.register
    class MyEncoder(Encoder):
        name = "my-encoder"
        ...

    encoder = ENCODERS.create("my-encoder", weights="path/to/file.pt")
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from soundwatch.encoders.digests import file_digests
from soundwatch.errors import ConfigError


class Encoder(ABC):
    """Base class of audio encoders: waveforms in, frame embeddings out.

    Subclasses set the class attributes and implement :meth:`_load` and :meth:`_frames`.
    The network is built on first use, so creating an encoder (e.g. to compute cache
    keys, or when every embedding is already cached) costs nothing.

    Parameters
    ----------
    weights : str or None
        Checkpoint file; None means the encoder's default (found or downloaded by the
        subclass), or no file at all for encoders that need none.
    device : str, default="cpu"
        Torch device the network runs on.
    batch_size : int, default=8
        Waveforms per network pass in :meth:`frame_embeddings`.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"efficientat-mn04"``.
    summary : str
        One-line description for a ``soundwatch encoders`` listing.
    sample_rate : int
        Sample rate (Hz) the network expects; clips are resampled to it.
    embedding_dim : int
        Size of one frame embedding.
    frame_seconds : float or None
        Seconds between the starts of consecutive frame embeddings (the network's total
        stride in time; e.g. 0.32 for EfficientAT, 0.96 for VGGish). Detectors that
        align frame embeddings with log-mel frames use it. None when unknown; an instance
        may refine it when its configuration is known (the Hugging Face encoders do).
    requires_weights : bool
        Whether the encoder needs a checkpoint (False for random or hand-made ones).
    version : int
        Bump when the embeddings change for the same name and weights, so cached
        embeddings of the old version are not reused.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    sample_rate: ClassVar[int] = 16000
    embedding_dim: ClassVar[int] = 0
    frame_seconds: ClassVar[float | None] = None
    requires_weights: ClassVar[bool] = True
    version: ClassVar[int] = 1

    def __init__(self, weights: str | None = None, device: str = "cpu", batch_size: int = 8):
        if batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.weights = None if weights is None else str(weights)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"{self.name}: invalid torch device {device!r} ({exc})") from None
        self.batch_size = int(batch_size)
        self._loaded = False

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _load(self) -> None:
        """Build the network on ``self.device`` and load its weights (called once)."""

    @abstractmethod
    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Frame embeddings of a batch.

        Parameters
        ----------
        waveforms : torch.Tensor of shape (batch, n_samples), float32
            At :attr:`sample_rate`, on :attr:`device`.

        Returns
        -------
        torch.Tensor of shape (batch, n_frames, embedding_dim)
        """

    # ----------------------------------------------------------------- public API
    def load(self) -> Encoder:
        """Build the network now rather than on first use; returns self."""
        if not self._loaded:
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError(
                    f"{self.name}: device {self.device} requested but CUDA is unavailable"
                )
            self._load()
            self._loaded = True
        return self

    def frame_embeddings(self, waveforms: np.ndarray) -> np.ndarray:
        """Frame embeddings of equally long waveforms, in batches of ``batch_size``.

        Parameters
        ----------
        waveforms : array-like of shape (batch, n_samples)
            Audio at :attr:`sample_rate`, nominally in [-1, 1].

        Returns
        -------
        frames : ndarray of shape (batch, n_frames, embedding_dim), float32
        """
        x = np.asarray(waveforms, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ConfigError(
                f"{self.name}: expected waveforms of shape (batch, n_samples), got {x.shape}"
            )
        self.load()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size]))
                out = self._frames(batch.to(self.device))
                if out.dim() != 3 or out.shape[0] != len(batch):
                    raise ConfigError(
                        f"{self.name}: _frames returned shape {tuple(out.shape)} for a batch "
                        f"of {len(batch)}; expected (batch, n_frames, dim)"
                    )
                outputs.append(out.float().cpu().numpy())
        return (
            np.concatenate(outputs) if outputs else np.zeros((0, 0, self.embedding_dim), np.float32)
        )

    @classmethod
    def local_weights(cls) -> Path | None:
        """The default checkpoint if it is on this machine (never downloads); else None.

        Subclasses that find or download a default checkpoint override this.
        """
        return None

    @classmethod
    def weights_available(cls, weights: str | os.PathLike | None = None) -> bool:
        """Whether the encoder can run without a download.

        Parameters
        ----------
        weights : str or path-like, optional
            An explicit checkpoint; default: look for the encoder's default one.

        Returns
        -------
        bool
            True for encoders that need no weights, else whether the file exists.
        """
        if not cls.requires_weights:
            return True
        if weights is not None:
            return Path(weights).expanduser().is_file()
        return cls.local_weights() is not None

    def weights_identity(self) -> str | None:
        """What identifies the weights in cache keys.

        The SHA-256 of an explicit checkpoint (so a replaced file misses the cache),
        ``"default"`` for the default checkpoint (subclasses whose default is not pinned
        by a checksum should override this), None for encoders without weights.
        """
        if not self.requires_weights:
            return None
        if self.weights is None:
            return "default"
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"{self.name}: weights file not found: {path}")
        return file_digests(path)[0]

    def cache_params(self) -> dict[str, Any]:
        """JSON-serialisable parameters that fully determine the frame embeddings."""
        return {
            "encoder": self.name,
            "version": self.version,
            "sample_rate": self.sample_rate,
            "embedding_dim": self.embedding_dim,
            "weights": self.weights_identity(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weights!r}, device={str(self.device)!r})"
