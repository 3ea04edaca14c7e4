"""The encoder base for networks whose weights are one checkpoint file.

:class:`CheckpointEncoder` finds, verifies and loads its file through
:mod:`soundwatch.encoders.download`. Besides a path, it accepts ``weights="random"``: the
architecture with fixed random weights (seeded, so the same in every process), for tests
and as a non-pretrained baseline; it never touches a file.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from soundwatch.encoders.base import Encoder
from soundwatch.encoders.digests import file_digests
from soundwatch.encoders.download import (
    RANDOM_SEED,
    RANDOM_WEIGHTS,
    find_local_checkpoint,
    hub_hash_prefix,
    load_checkpoint,
    resolve_checkpoint,
    weights_env_var,
)


@dataclass(frozen=True)
class Checkpoint:
    """Where an official checkpoint comes from and how to verify it.

    Attributes
    ----------
    file_name : str
        Release file name (in the cache, and looked for in an env-var folder).
    url : str
        Official download URL.
    sha256 : str or None
        Full SHA-256, or a prefix; None falls back to a torch-hub prefix in the name.
    md5 : str or None
        Full MD5.
    key : str or None
        Key of the state dict inside the file's top-level dict, if it is wrapped.
    """

    file_name: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    key: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the release file can be verified: a digest, or a torch-hub file name."""
        return bool(self.sha256 or self.md5 or hub_hash_prefix(self.file_name))


class CheckpointEncoder(Encoder):
    """An encoder whose network weights are one checkpoint file (see the module notes).

    Subclasses set :attr:`checkpoint`, implement :meth:`build_network` (the architecture
    with its own random initialisation) and :meth:`_frames` (which uses
    ``self.network``); they may override :meth:`_setup` to build a front end.

    Parameters
    ----------
    weights : str or None
        Checkpoint file; None: the official one (explicit, ``SOUNDWATCH_<NAME>_WEIGHTS``,
        cache or download, verified); ``"random"``: fixed random weights, no file.
    device, batch_size
        See :class:`~soundwatch.encoders.base.Encoder`.
    """

    checkpoint: ClassVar[Checkpoint]

    @classmethod
    def env_var(cls) -> str:
        """This encoder's weights environment variable, ``SOUNDWATCH_<NAME>_WEIGHTS``.

        A family of encoders whose release files have distinct names may share one
        variable naming a folder (EfficientAT does).
        """
        return weights_env_var(cls.name)

    @abstractmethod
    def build_network(self) -> nn.Module:
        """A fresh network with the checkpoint's architecture and random weights."""

    def _setup(self) -> None:
        """Build what the network does not hold (front end, constants) on ``self.device``."""

    def resolve(self) -> Path:
        """Path of the checkpoint ``self.weights`` stands for (see :func:`resolve_checkpoint`)."""
        spec = self.checkpoint
        return resolve_checkpoint(
            self.name,
            spec.file_name,
            spec.url,
            spec.sha256,
            self.weights,
            self.env_var(),
            md5=spec.md5,
        )

    def _load(self) -> None:
        if self.weights == RANDOM_WEIGHTS:
            # A private RNG state: the weights are the same in every process, and the
            # caller's random stream is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                network = self.build_network()
        else:
            path = self.resolve()
            network = load_checkpoint(
                self.build_network(), path, self.name, key=self.checkpoint.key
            )
        self.network = network.to(self.device).eval()
        self._setup()

    @classmethod
    def local_weights(cls) -> Path | None:
        return find_local_checkpoint(cls.checkpoint.file_name, cls.env_var())

    @classmethod
    def weights_available(cls, weights: str | os.PathLike | None = None) -> bool:
        if weights is not None and str(weights) == RANDOM_WEIGHTS:
            return True
        return super().weights_available(weights)

    def weights_identity(self) -> str | None:
        # Random weights are identified by their seed; an explicit file by its SHA-256
        # (base class); the official file by "default" where a checksum pins it. Any
        # other default file is identified by content, so its embeddings are cached
        # apart: a file of another name from the environment variable (not verified),
        # or the release file of a checkpoint without a known checksum (found or
        # downloaded here, as loading would).
        if self.weights == RANDOM_WEIGHTS:
            return f"{RANDOM_WEIGHTS}-{RANDOM_SEED}"
        if self.weights is None:
            spec = self.checkpoint
            if not spec.pinned:
                return file_digests(self.resolve())[0]
            local = self.local_weights()
            if local is not None and local.name != spec.file_name:
                return file_digests(local)[0]
        return super().weights_identity()


def pad_to_length(waveforms: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Zero-pad ``(batch, samples)`` at the end to at least ``n_samples`` samples."""
    short = n_samples - waveforms.shape[-1]
    return torch.nn.functional.pad(waveforms, (0, short)) if short > 0 else waveforms
