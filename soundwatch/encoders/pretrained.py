"""EfficientAT encoders (Schmid, Koutini and Widmer, ICASSP 2023) and their checkpoints.

Every model of :data:`~soundwatch.encoders.efficientat.EFFICIENTAT_MODELS` is registered
as ``efficientat-<model>`` (``efficientat-mn04``, ``efficientat-mn10``, ...). EfficientAT
is the fully offline pretrained encoder: the mn04 checkpoint ships with the shared test
data, and every other member loads once its checkpoint is on disk or downloadable.

Checkpoints are handled by :mod:`soundwatch.encoders.download`, which looks for a model's
checkpoint in this order:

1. an explicit path (``weights=`` in Python, ``--param weights=PATH`` on the command line);
2. the environment variable ``SOUNDWATCH_EFFICIENTAT_WEIGHTS``, shared by the whole
   family: a checkpoint file, or a folder holding checkpoints under their release names;
3. the user cache, ``$XDG_CACHE_HOME/soundwatch/weights/<file>`` (``~/.cache`` when
   ``XDG_CACHE_HOME`` is unset);
4. a download from the official EfficientAT release into that cache; offline, a one-line
   :class:`~soundwatch.errors.ModelFileError` names the URL and where to put the file.

A file under its release name (``mn04_as_mAP_432.pt``, ...) is verified against the
release's SHA-256 where one is known (mn04; the others are used with a warning), and a
mismatching download is deleted. A file under another name is the user's own checkpoint:
it is loaded with ``strict=True`` and identified in cache keys by its SHA-256.

For the bare network rather than an encoder::

    model = load_efficientat("mn04")  # MobileNetV3Audio, eval mode, CPU
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from soundwatch.encoders.checkpoint import Checkpoint, CheckpointEncoder
from soundwatch.encoders.download import load_checkpoint, resolve_checkpoint
from soundwatch.encoders.efficientat import (
    EFFICIENTAT_MODELS,
    SAMPLE_RATE,
    EfficientATFrontend,
    MobileNetV3Audio,
    make_divisible,
    model_config,
)
from soundwatch.encoders.registry import ENCODERS

#: Environment variable naming a checkpoint file or a folder of checkpoints.
WEIGHTS_ENV = "SOUNDWATCH_EFFICIENTAT_WEIGHTS"

_LAST_BLOCK_CHANNELS = 160  # MobileNetV3-Large's last block, before the width multiplier


def efficientat_checkpoint(model: str) -> Checkpoint:
    """The official checkpoint of ``model`` (``"mn04"``, ...); ConfigError when unknown."""
    config = model_config(model)
    return Checkpoint(file_name=config["file"], url=config["url"], sha256=config["sha256"])


def resolve_weights(
    model: str,
    weights: str | os.PathLike | None = None,
    *,
    url: str | None = None,
) -> Path:
    """Path of a checkpoint for ``model``: explicit, from the environment, cached or downloaded.

    Parameters
    ----------
    model : str
        Key of ``EFFICIENTAT_MODELS``, e.g. ``"mn04"``.
    weights : str or path-like, optional
        Explicit checkpoint file; takes precedence over everything else.
    url : str, optional
        Download source used only when no local file is found (default: the official
        release; any URL urllib opens, ``file://`` included, for mirrors and tests).

    Returns
    -------
    Path
        An existing file, verified if it carries the release file name.

    Raises
    ------
    ConfigError
        Unknown model.
    ModelFileError
        See :func:`~soundwatch.encoders.download.resolve_checkpoint`.
    """
    spec = efficientat_checkpoint(model)
    return resolve_checkpoint(
        f"efficientat-{model}", spec.file_name, url or spec.url, spec.sha256, weights, WEIGHTS_ENV
    )


def load_efficientat(
    model: str = "mn04",
    weights: str | os.PathLike | None = None,
    *,
    url: str | None = None,
) -> MobileNetV3Audio:
    """A pretrained EfficientAT network in eval mode, on the CPU.

    Parameters
    ----------
    model : str
        Key of ``EFFICIENTAT_MODELS`` (``"mn04"``, ``"mn10"``, ...).
    weights : str or path-like, optional
        Checkpoint file; default: found or downloaded by :func:`resolve_weights`.
    url : str, optional
        Download source override, passed to :func:`resolve_weights`.

    Returns
    -------
    MobileNetV3Audio
        Weights loaded with ``strict=True``; call ``.to(device)`` as needed.

    Raises
    ------
    ModelFileError
        The file cannot be found, read, or does not fit the architecture.
    """
    path = resolve_weights(model, weights, url=url)
    network = MobileNetV3Audio(width_mult=model_config(model)["width_mult"])
    return load_checkpoint(network, path, f"efficientat-{model}").eval()


class EfficientATEncoder(CheckpointEncoder):
    """EfficientAT MobileNetV3 pretrained on AudioSet, 32 kHz input.

    Frame embeddings are the last feature map averaged over frequency: shape
    (batch, ~n_samples / 10240, 6 x last-block channels), one per 32 front-end hops of
    10 ms (0.32 s); a 10 s clip gives 32 frames. Their mean over time is exactly the
    network's global-average-pooled embedding.

    Parameters
    ----------
    weights : str or None
        None: the official checkpoint (``SOUNDWATCH_EFFICIENTAT_WEIGHTS`` file or folder,
        user cache, or download from the EfficientAT release; verified by SHA-256 where
        one is known); a path: any checkpoint of this architecture; ``"random"``: fixed
        random weights (tests, baselines).
    device, batch_size
        See :class:`~soundwatch.encoders.base.Encoder`.
    """

    model: str = "mn04"
    sample_rate = SAMPLE_RATE
    # Front-end hop 320 samples, network stride 32 in time.
    frame_seconds = 320 * 32 / SAMPLE_RATE
    requires_weights = True
    checkpoint = efficientat_checkpoint(model)

    @classmethod
    def env_var(cls) -> str:
        return WEIGHTS_ENV

    def build_network(self) -> MobileNetV3Audio:
        return MobileNetV3Audio(width_mult=model_config(self.model)["width_mult"])

    def _setup(self) -> None:
        self.frontend = EfficientATFrontend().to(self.device)

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        feature_map = self.network.features(self.frontend(waveforms))
        return feature_map.mean(dim=2).transpose(1, 2)


def _register_family() -> None:
    for model, config in EFFICIENTAT_MODELS.items():
        width = config["width_mult"]
        dim = 6 * make_divisible(_LAST_BLOCK_CHANNELS * width, 8)
        cls = type(
            f"EfficientAT{model.upper()}Encoder",
            (EfficientATEncoder,),
            {
                "__doc__": EfficientATEncoder.__doc__,
                "name": f"efficientat-{model}",
                "summary": f"EfficientAT {model} (MobileNetV3 x{width}, AudioSet), {dim}-d, 32 kHz",
                "model": model,
                "embedding_dim": dim,
                "checkpoint": efficientat_checkpoint(model),
            },
        )
        ENCODERS.register(cls)


_register_family()
