"""Machine-ID classification as an anomaly detector (STgram-MFN style, sized for a CPU).

A compact MobileFaceNet-like CNN learns to tell the machine IDs of one machine type
apart from normal clips alone, with a margin-based softmax (ArcFace, AdaCos or plain
cosine softmax). A clip that the network cannot confidently attribute to its own ID
sounds unlike that machine's normal operation: the anomaly score is the negative
log-probability of the clip's own ID, or a distance in the learned embedding space.

When there is only one ID to learn (a single machine), the network instead learns to
recognise which of a few transformations was applied to a log-mel crop (self-supervised
pseudo-classes), optionally against clips of other machine types as outlier classes.

This module holds the detector; the network is in :mod:`soundwatch.detectors.id_network`,
the classes and training crops in :mod:`soundwatch.detectors.id_crops`, and the
fallback's transformations in :mod:`soundwatch.detectors.id_transforms`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from soundwatch.data.audio import load_audio
from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.frontend import LOGMEL_PARAMS, LogMelFrontend
from soundwatch.detectors.id_crops import INT16_SCALE, ClassKey, CropBank
from soundwatch.detectors.id_network import LOSSES, IdClassifierNet
from soundwatch.detectors.id_transforms import TRANSFORMS
from soundwatch.detectors.neural import TRAIN_PARAMS, TorchDetectorMixin
from soundwatch.detectors.params import Param, override, parse_channel
from soundwatch.detectors.registry import register
from soundwatch.detectors.scorers import Scorer, create_scorer
from soundwatch.errors import ConfigError, ModelFileError
from soundwatch.features.scaling import Standardizer
from soundwatch.training.loop import shuffled_batches

logger = logging.getLogger(__name__)

# Fewest training batches per epoch: with few clips, one crop per clip would give the
# network one optimiser step per epoch (20 in all), too few to learn the IDs.
MIN_BATCHES_PER_EPOCH = 8

SCORE_METHODS = ("nll", "knn", "mahalanobis", "gmm")
CLASS_KINDS = ("id", "attributes")
FALLBACKS = ("auto", "transforms", "off")
#: Crops per inference pass.
SCORE_BATCH = 64


def _type_order(machine_type: str | None) -> str:
    return machine_type or ""


@register
class IdClassifierDetector(LogMelFrontend, TorchDetectorMixin, Detector):
    """Machine-ID classifier (STgram-MFN style); score = how poorly a clip fits its own ID.

    Input: random crops of ``crop_seconds`` (default 2 s = 63 frames) of the log-mel
    spectrogram (n_fft 1024, hop 512, 128 mels), each band standardised on the training
    normals, shape (batch, 128, 63). With ``temporal_branch=true`` the aligned
    waveform crop also goes through STgram's learnable Conv1d filterbank (window 1024,
    hop 512, 128 channels) and that map is stacked with the log-mel as a second channel;
    waveforms are then held in memory as int16 (0.76 GB for 2,370 ten-second clips).
    Network: MobileFaceNet-like CNN (``width`` 16: stem and stages of 16, 32, 64, 128
    channels, inverted residuals, depthwise-separable convolutions; 0.2 M weights), a
    global depthwise convolution over frequency, mean over time, a 128-d embedding
    (``embedding_dim``).
    Classes: every machine ID of the training clips (all IDs of the machine type are
    trained together, so ``per_id`` must stay false); clips of further machine types
    become further classes. The class list is stored in the model file.
    Transform pseudo-classes (``fallback``): each ID can also get six self-supervised
    classes, which transformation was applied to a log-mel crop (identity, time stretch,
    frequency shift, band stop, time reversal, spectral tilt; see
    :func:`apply_transform`, ``transform_strength``), drawn uniformly per crop, as in
    Giri et al. (DCASE 2020). ``transforms`` (default) always does so: telling the
    transformations apart forces the network to learn the normal sound in detail even
    when the IDs are easy to tell apart. ``auto`` does so only when there is a single
    machine ID (nothing else to tell apart), ``off`` never (a single ID is then an
    error). In this mode clips of other machine types in the training data become one
    outlier class per type (never transformed), and the temporal branch is not used,
    since the transformations act on the log-mel only.
    Loss (``loss``): ``arcface`` (scale ``scale``, additive angular margin ``margin``),
    ``adacos`` (no margin, self-adjusting scale) or ``softmax`` (cosine logits at
    ``scale``, no margin); ``subclusters`` sub-centres per class (sub-centre ArcFace);
    ``mixup`` > 0 mixes pairs of crops with weight ~ Beta(mixup, mixup).
    Training: Adam lr 1e-3, batch 32, ``epochs`` (20) passes with ``crops_per_clip``
    random crops per training clip each (more, logged, where the clips would fill fewer
    than 8 batches per epoch: few clips); the best epoch by the held-out normals'
    classification loss is kept.
    Score (``score_method``): ``mahalanobis`` (default), ``knn`` or ``gmm`` from
    soundwatch.detectors.scorers on the clip embedding (mean of the unit-normalised
    embeddings of crops every ``score_hop_seconds`` covering the whole clip), fitted on
    the training normals of the clip's own class (its ID, untransformed); or ``nll``,
    the negative log-probability of the clip's own class (softmax over the cosine
    logits at the trained scale, no margin) averaged over those crops. A clip of an ID
    (or machine type) not seen in training is scored against the class it fits best:
    lowest NLL or lowest scorer score over the untransformed classes.
    Attribute classes (``classes=attributes``, DCASE 2022+ data): a class is a machine
    ID (section) together with the clip's attributes, from its file name or
    ``attributes_XX.csv`` (``section 00, spd=96``), so that the network has to hear the
    operating conditions too, as in the DCASE 2022-2024 classifier baselines. A
    training clip without attributes belongs to its section's class; a test clip whose
    combination was not trained (or that has no attributes) is scored against the
    best-fitting class of its own section.
    Reference: STgram-MFN (Liu et al., 2022), here with fewer channels and short crops.
    """

    name = "id-classifier"
    params = {
        **LOGMEL_PARAMS,
        **override(TRAIN_PARAMS, epochs=20, batch_size=32, learning_rate=1e-3),
        "per_id": Param(False, "must be false: the classes are the machine IDs themselves"),
        "crop_seconds": Param(2.0, "length of training and scoring crops (s)", low=0.2),
        "crops_per_clip": Param(
            1,
            "random training crops per clip and epoch (raised, logged, to fill "
            f"{MIN_BATCHES_PER_EPOCH} batches per epoch)",
            low=1,
        ),
        "score_hop_seconds": Param(1.0, "largest gap between scored crops' starts (s)", low=0.05),
        "width": Param(16, "channels of the CNN stem (stages have 2x, 4x, 8x)", low=4),
        "embedding_dim": Param(128, "embedding size", low=2),
        "temporal_branch": Param(False, "add STgram's learnable waveform branch"),
        "loss": Param("arcface", "classification loss", choices=LOSSES),
        "scale": Param(30.0, "cosine logit scale s (arcface, softmax)", low=1e-3),
        "margin": Param(0.5, "arcface additive angular margin m (radians)", low=0.0, high=1.5),
        "subclusters": Param(1, "sub-centres per class", low=1),
        "mixup": Param(0.0, "mixup Beta(alpha, alpha) parameter (0 = off)", low=0.0),
        "score_method": Param("mahalanobis", "anomaly score", choices=SCORE_METHODS),
        "knn_k": Param(5, "knn: neighbours averaged", low=1),
        "gmm_components": Param(2, "gmm: mixture components", low=1),
        "fallback": Param(
            "transforms",
            "transform pseudo-classes: always, only for a single ID (auto), never (off)",
            choices=FALLBACKS,
        ),
        "classes": Param(
            "id",
            "what the classes are: machine IDs (sections), or section x attributes "
            "(attributes; the section where a clip has none)",
            choices=CLASS_KINDS,
        ),
        "transform_strength": Param(
            1.0, "scale of the fallback's transformations", low=0.05, high=2.0
        ),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.per_id:
            raise ConfigError(
                f"{self.name}: per_id=true is not possible; the classifier learns to tell the "
                "machine IDs apart, so it must see all IDs of a machine type together"
            )

    # ----------------------------------------------------------------- helpers
    @property
    def crop_frames(self) -> int:
        return max(2, round(self.crop_seconds * self.sample_rate / self.hop_length))

    def _class_of(self, clip: Clip) -> str | None:
        """The clip's class name within its machine type: its ID, or with
        ``classes=attributes`` its ID and attributes (``"00:spd=96"``)."""
        if self.classes == "id" or not clip.attributes or clip.machine_id is None:
            return clip.machine_id
        return clip.machine_id + ":" + ",".join(f"{k}={v}" for k, v in clip.attributes)

    @staticmethod
    def _section(class_name: str | None) -> str | None:
        return None if class_name is None else class_name.split(":", 1)[0]

    def _fallback_columns(self, clips: Sequence[Clip], columns: list[int]) -> np.ndarray:
        """(n_clips, len(columns)) mask of the classes an unknown clip may be scored
        against: those of its own section where there are any, else all."""
        primary = self.classes_[0].machine_type
        sections = [
            (self.classes_[j].machine_type, self._section(self.classes_[j].machine_id))
            for j in columns
        ]
        mask = np.ones((len(clips), len(columns)), dtype=bool)
        for row, clip in enumerate(clips):
            key = (clip.machine_type if clip.machine_type is not None else primary, clip.machine_id)
            own = np.array([s == key for s in sections])
            if own.any():
                mask[row] = own
        return mask

    def _plan_classes(self, clips: list[Clip]) -> tuple[list[ClassKey], bool]:
        """Classes for these training clips and whether the transform fallback is on.

        The machine type with the most clips is the primary one; its IDs are the
        classes (times the transforms in the fallback). Other machine types are one
        class per (type, ID), or one outlier class per type in the fallback.
        """
        counts = Counter(c.machine_type for c in clips)
        primary = min(counts, key=lambda t: (-counts[t], _type_order(t)))
        ids = sorted({self._class_of(c) for c in clips if c.machine_type == primary}, key=str)
        others = sorted((t for t in counts if t != primary), key=_type_order)
        transforms = self.fallback == "transforms" or (self.fallback == "auto" and len(ids) == 1)
        if transforms:
            classes = [ClassKey(primary, i, t) for i in ids for t in TRANSFORMS]
            classes += [ClassKey(t, None) for t in others]
        else:
            pairs = {(c.machine_type, self._class_of(c)) for c in clips}
            classes = [ClassKey(primary, i) for i in ids] + [
                ClassKey(t, i)
                for t, i in sorted(pairs, key=lambda p: (_type_order(p[0]), str(p[1])))
                if t != primary
            ]
            if len(classes) < 2:
                raise ConfigError(
                    f"{self.name}: the training clips hold one machine ID only, so there are "
                    "no classes to tell apart; use fallback=auto or fallback=transforms"
                )
        return classes, transforms

    def _class_table(self, clips: Sequence[Clip]) -> np.ndarray:
        """(n_clips, len(TRANSFORMS)) class indices; see :class:`CropBank`."""
        index = {key: i for i, key in enumerate(self.classes_)}
        primary = self.classes_[0].machine_type
        table = np.full((len(clips), len(TRANSFORMS)), -1, dtype=np.int64)
        for row, clip in enumerate(clips):
            machine_type = clip.machine_type if clip.machine_type is not None else primary
            if self.transforms_:
                for j, name in enumerate(TRANSFORMS):
                    table[row, j] = index.get(
                        ClassKey(machine_type, self._class_of(clip), name), -1
                    )
                if table[row, 0] < 0:  # an outlier machine type
                    table[row, 0] = index.get(ClassKey(machine_type, None), -1)
            else:
                table[row, 0] = index.get(ClassKey(machine_type, self._class_of(clip)), -1)
        return table

    def _waveforms(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        """int16 waveforms padded so that frame t's window starts at sample t * hop."""
        half = self.n_fft // 2
        out = []
        for clip in clips:
            wave = load_audio(
                clip.path,
                self.sample_rate,
                channel=parse_channel(self.channel),
                duration=self.duration,
            )
            wave = np.clip(np.round(wave * INT16_SCALE), -32768, 32767).astype(np.int16)
            out.append(np.pad(wave, (half, half + self.hop_length)))
        return out

    def _bank(self, clips: Sequence[Clip]) -> CropBank:
        waves = self._waveforms(clips) if self.temporal_ else None
        return CropBank(
            self.logmels(clips),
            waves,
            self._class_table(clips),
            self.crop_frames,
            self.hop_length,
            self.n_fft,
            self.transform_strength,
        )

    def _build_network(self) -> IdClassifierNet:
        return IdClassifierNet(
            self.n_mels,
            len(self.classes_),
            width=self.width,
            dim=self.embedding_dim,
            temporal=(self.n_fft, self.hop_length) if self.temporal_ else None,
            loss=self.loss,
            scale=self.scale,
            margin=self.margin,
            subclusters=self.subclusters,
            mixup=self.mixup,
        )

    def _grid(self, bank: CropBank, hop_seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """(clip index, crop start) of crops covering every clip, clip by clip."""
        hop = max(1, round(hop_seconds * self.sample_rate / self.hop_length))
        starts = [bank.grid_starts(i, hop) for i in range(len(bank))]
        clips = [np.full(len(s), i) for i, s in enumerate(starts)]
        return np.concatenate(clips), np.concatenate(starts)

    @torch.inference_mode()
    def _crop_outputs(self, bank: CropBank) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network outputs of the untransformed grid crops.

        Returns
        -------
        crop_clip : int array (n_crops,), the clip of each crop
        log_probs : float64 array (n_crops, n_classes)
        embeddings : float64 array (n_crops, embedding_dim), unit-normalised
        """
        self.network_.eval()
        crop_clip, starts = self._grid(bank, self.score_hop_seconds)
        rng = np.random.default_rng(0)  # unused: identity crops draw nothing
        log_probs, embeddings = [], []
        for idx in shuffled_batches(len(crop_clip), SCORE_BATCH, None):
            mel, wave, _ = bank.batch(
                crop_clip[idx], starts[idx], np.zeros(len(idx), dtype=int), self.scaler_, rng
            )
            emb = self.network_.embed(mel, wave)
            log_probs.append(self.network_.head.log_probs(self.network_.head.cosines(emb)))
            embeddings.append(F.normalize(emb, dim=1))
        return (
            crop_clip,
            torch.cat(log_probs).double().numpy(),
            torch.cat(embeddings).double().numpy(),
        )

    @staticmethod
    def _clip_means(crop_clip: np.ndarray, values: np.ndarray, n_clips: int) -> np.ndarray:
        """Average per-crop rows (n_crops, k) into per-clip rows (n_clips, k)."""
        sums = np.zeros((n_clips, values.shape[1]))
        np.add.at(sums, crop_clip, values)
        return sums / np.bincount(crop_clip, minlength=n_clips)[:, None]

    def _own_classes(self) -> np.ndarray:
        return np.array([i for i, key in enumerate(self.classes_) if key.is_own])

    def _make_scorer(self) -> Scorer:
        options = {
            "knn": {"k": self.knn_k, "metric": "cosine"},
            "mahalanobis": {},
            "gmm": {"n_components": self.gmm_components, "seed": self.seed},
        }[self.score_method]
        return create_scorer(self.score_method, standardize=False, **options)

    def _crops_per_clip(self, n_clips: int) -> int:
        """``crops_per_clip``, raised (and logged) where ``n_clips`` would fill fewer than
        :data:`MIN_BATCHES_PER_EPOCH` training batches per epoch."""
        need = math.ceil(MIN_BATCHES_PER_EPOCH * self.batch_size / max(n_clips, 1))
        if need <= self.crops_per_clip:
            return self.crops_per_clip
        logger.warning(
            "%s: %d training clips x %d crop(s) fill %d batch(es) of %d per epoch; drawing "
            "%d random crops per clip so that an epoch has %d",
            self.name,
            n_clips,
            self.crops_per_clip,
            max(n_clips * self.crops_per_clip // self.batch_size, 1),
            self.batch_size,
            need,
            MIN_BATCHES_PER_EPOCH,
        )
        return need

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        self.classes_, self.transforms_ = self._plan_classes(train)
        self.temporal_ = self.temporal_branch and not self.transforms_
        train_bank = self._bank(train)
        self.scaler_ = Standardizer().fit(train_bank.mels)
        valid_bank = self._bank(valid) if valid else None
        self.network_ = self._build_network()
        items = np.repeat(np.arange(len(train_bank)), self._crops_per_clip(len(train_bank)))

        def train_batches(rng: np.random.Generator) -> Iterator[tuple]:
            for idx in shuffled_batches(len(items), self.batch_size, rng, drop_last=True):
                clips = items[idx]
                starts, transforms = train_bank.random_crops(clips, rng, self.transforms_)
                yield train_bank.batch(clips, starts, transforms, self.scaler_, rng)

        def valid_batches() -> Iterator[tuple]:
            # The same crops and transforms every epoch, so the losses are comparable;
            # non-overlapping crops, as validation needs no more to rank the epochs.
            rng = np.random.default_rng(self.seed + 1)
            crop_clip, starts = self._grid(valid_bank, self.crop_seconds)
            transforms = valid_bank.random_crops(crop_clip, rng, self.transforms_)[1]
            for idx in shuffled_batches(len(crop_clip), SCORE_BATCH, None):
                yield valid_bank.batch(
                    crop_clip[idx], starts[idx], transforms[idx], self.scaler_, rng
                )

        self.run_training(self.network_, train_batches, valid_batches if valid_bank else None)
        self.scorers_: dict[int, Scorer] = {}
        if self.score_method != "nll":
            crop_clip, _, embeddings = self._crop_outputs(train_bank)
            vectors = self._clip_means(crop_clip, embeddings, len(train_bank))
            own = train_bank.class_table[:, 0]
            too_few = []
            for cls in np.unique(own[own >= 0]):
                members = vectors[own == cls]
                if len(members) >= self._make_scorer().min_samples:
                    self.scorers_[int(cls)] = self._make_scorer().fit(members)
                else:
                    too_few.append(str(self.classes_[int(cls)].machine_id))
            if too_few and self.scorers_:
                logger.warning(
                    "%s: class(es) %s have fewer than %d training clips, too few for a %s "
                    "scorer of their own; their clips are scored against the best-fitting "
                    "other class",
                    self.name,
                    ", ".join(too_few),
                    self._make_scorer().min_samples,
                    self.score_method,
                )
            if not self.scorers_:
                raise ConfigError(
                    f"{self.name}: too few training clips per class for score_method="
                    f"{self.score_method}"
                )

    def _score(self, clips: list[Clip]) -> np.ndarray:
        bank = self._bank(clips)
        crop_clip, log_probs, embeddings = self._crop_outputs(bank)
        own = bank.class_table[:, 0]
        if self.score_method == "nll":
            nll = -self._clip_means(crop_clip, log_probs, len(bank))
            candidates = self._own_classes()
            allowed = self._fallback_columns(clips, list(candidates))
            best = np.where(allowed, nll[:, candidates], np.inf).min(axis=1)
            known = own >= 0
            return np.where(known, nll[np.arange(len(bank)), np.maximum(own, 0)], best)
        vectors = self._clip_means(crop_clip, embeddings, len(bank))
        scores = np.stack([scorer.score(vectors) for scorer in self.scorers_.values()], axis=1)
        column = {cls: j for j, cls in enumerate(self.scorers_)}
        own_column = np.array([column.get(int(c), -1) for c in own])
        allowed = self._fallback_columns(clips, list(self.scorers_))
        best = np.where(allowed, scores, np.inf).min(axis=1)
        return np.where(
            own_column >= 0, scores[np.arange(len(bank)), np.maximum(own_column, 0)], best
        )

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = self.network_arrays(self.network_)
        scorer_states = {}
        for cls, scorer in self.scorers_.items():
            scorer_arrays, scorer_states[str(cls)] = scorer.state()
            arrays.update({f"scorer{cls}.{k}": v for k, v in scorer_arrays.items()})
        state = {
            "classes": [asdict(key) for key in self.classes_],
            "transforms": self.transforms_,
            "temporal": self.temporal_,
            "scaler": self.scaler_.to_dict(),
            "scorers": scorer_states,
        }
        return arrays, state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        self.classes_ = [ClassKey(**entry) for entry in state["classes"]]
        self.transforms_ = bool(state["transforms"])
        self.temporal_ = bool(state["temporal"])
        self.scaler_ = Standardizer.from_dict(state["scaler"])
        self.network_ = self._build_network()
        self.load_network_arrays(self.network_, tensors)
        self.scorers_ = {}
        for cls, meta in state["scorers"].items():
            prefix = f"scorer{cls}."
            arrays = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            self.scorers_[int(cls)] = Scorer.from_state(arrays, meta)
        if self.score_method != "nll" and not self.scorers_:
            raise ModelFileError(f"{self.name}: model file holds no embedding scorers")


@register
class AttributeClassifierDetector(IdClassifierDetector):
    """:class:`IdClassifierDetector` with ``classes=attributes``: the classes are
    section x attribute combinations (the section where a clip has no attributes).

    The preset for DCASE 2022+ data with attribute files; see
    :class:`IdClassifierDetector` for the parameters.
    """

    name = "attribute-classifier"
    params = override(IdClassifierDetector.params, classes="attributes")
