"""Detectors by name, so the CLI, benchmarks and reports never special-case one.

Built-in detectors are registered *lazily*: :data:`BUILTIN` names the module of each and
its one-line summary, so listing them (``soundwatch detectors``) imports no detector
module and no torch, and a detector's module is imported the first time it is created
or a model of it is loaded. Further detectors register with :func:`register`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from soundwatch.registry import Registry

if TYPE_CHECKING:
    from soundwatch.detectors.base import Detector

_PACKAGE = "soundwatch.detectors"

#: The detector of ``evaluate``, ``train``, ``demo``, the Python API and fleet configs
#: when none is named; why this one: the README's "Choosing a detector".
DEFAULT_DETECTOR = "memory-bank"

#: Built-in detectors: name -> (module that registers it, one-line summary). The summary
#: lives here, not on the class, so that listing needs no import; :func:`register` copies
#: it onto the class.
BUILTIN: dict[str, tuple[str, str]] = {
    "attribute-classifier": (
        f"{_PACKAGE}.id_classifier",
        "id-classifier whose classes are section x attributes (classes=attributes)",
    ),
    "conv-ae": (
        f"{_PACKAGE}.conv",
        "convolutional autoencoder on min-max scaled log-mel patches, MSE score",
    ),
    "conv-ae-svdd": (
        f"{_PACKAGE}.conv",
        "Deep SVDD: bias-free CNN encoder, distance of patch codes to a fixed centre",
    ),
    "conv-vae": (
        f"{_PACKAGE}.conv",
        "convolutional beta-VAE on log-mel patches, reconstruction-error score",
    ),
    "dcase2020-ae": (
        f"{_PACKAGE}.dcase2020_ae",
        "DCASE 2020 baseline: dense autoencoder on 5-frame log-mel vectors",
    ),
    "dcase2023-ae": (
        f"{_PACKAGE}.dcase2023_ae",
        "DCASE 2023 baseline: dense autoencoder, MSE or selective Mahalanobis score",
    ),
    "domain-memory-bank": (
        f"{_PACKAGE}.memory_bank",
        "memory-bank with separate source and target banks; score = smaller standardised "
        "distance (domains=true)",
    ),
    "efficientat-gmm": (
        f"{_PACKAGE}.embedding",
        "EfficientAT mn04 embeddings + Gaussian mixture negative log-likelihood",
    ),
    "efficientat-knn": (
        f"{_PACKAGE}.embedding",
        "EfficientAT mn04 embeddings + mean distance to the 5 nearest normals",
    ),
    "efficientat-ocsvm": (
        f"{_PACKAGE}.embedding",
        "EfficientAT mn04 embeddings + RBF One-Class SVM",
    ),
    "embedding": (
        f"{_PACKAGE}.embedding",
        "pretrained-encoder embeddings scored by Mahalanobis, kNN, OC-SVM, GMM, ...",
    ),
    "encoder-mlp-decoder": (
        f"{_PACKAGE}.decoders",
        "frozen encoder + MLP decoding each frame embedding to its log-mel frames",
    ),
    "encoder-unet-decoder": (
        f"{_PACKAGE}.decoders",
        "frozen EfficientAT + U-Net decoder with deep skip connections, log-mel MSE",
    ),
    "ensemble": (
        f"{_PACKAGE}.ensemble",
        "weighted mean of member detectors' scores, standardised on held-out normals",
    ),
    "gru-ae": (
        f"{_PACKAGE}.recurrent",
        "2-layer GRU sequence autoencoder on 10-frame log-mel windows",
    ),
    "id-classifier": (
        f"{_PACKAGE}.id_classifier",
        "MobileFaceNet machine-ID classifier; score = Mahalanobis distance to its own ID",
    ),
    "logmel-mahalanobis": (
        f"{_PACKAGE}.mahalanobis",
        "fast baseline: Ledoit-Wolf Mahalanobis distance of clip log-mel statistics",
    ),
    "lstm-predictor": (
        f"{_PACKAGE}.recurrent",
        "2-layer LSTM predicting the next log-mel frame from 10; score = prediction MSE",
    ),
    "memory-bank": (
        f"{_PACKAGE}.memory_bank",
        "default: training-free memory bank of log-mel or EfficientAT features; kNN, "
        "LDN-kNN, Mahalanobis or PCA-residual backends, coreset, sub-bands, leave-out fusion",
    ),
    "mlp-ae": (
        f"{_PACKAGE}.mlp_ae",
        "dense autoencoder on standardised multi-frame log-mel patches",
    ),
    "mlp-encoder-distance": (
        f"{_PACKAGE}.mlp_ae",
        "distance of a clip's mean dense-autoencoder code to the training mean code",
    ),
    "vae": (
        f"{_PACKAGE}.vae",
        "dense beta-VAE on 5-frame log-mel vectors, scored by reconstruction error",
    ),
}

DETECTORS: Registry[Detector] = Registry(
    "detector", lazy={name: module for name, (module, _) in BUILTIN.items()}
)


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available under ``cls.name``.

    A built-in detector takes its summary from :data:`BUILTIN` and must not declare one.
    """
    if cls.name in BUILTIN:
        if "summary" in vars(cls):
            raise TypeError(f"{cls.__name__}: the summary of {cls.name} belongs in BUILTIN")
        cls.summary = BUILTIN[cls.name][1]
    return DETECTORS.register(cls)


def names() -> list[str]:
    """Every detector name, sorted; imports nothing."""
    return DETECTORS.names()


def summaries() -> dict[str, str]:
    """``{name: one-line summary}`` of every detector, sorted; imports no built-in module."""
    return {
        name: BUILTIN[name][1] if name in BUILTIN else DETECTORS.get(name).summary
        for name in DETECTORS.names()
    }


def available() -> dict[str, type[Detector]]:
    """Every detector class, sorted by name (imports every detector module)."""
    return DETECTORS.available()


def get(name: str) -> type[Detector]:
    """The detector class registered as ``name``; ConfigError lists the known names."""
    return DETECTORS.get(name)


def create(name: str, **params) -> Detector:
    """Instantiate a registered detector with validated parameters."""
    return DETECTORS.create(name, **params)
