"""Training-free memory-bank detectors: score a clip against a bank of normal features.

Nothing is trained by gradient descent. The training normals of a machine ID become a
*memory bank* of feature vectors, one per clip (``level=clip``) or one per log-mel
patch or encoder frame (``level=frame``). A test clip is scored by how far its
vectors lie from the bank under one or more *backends* (kNN, locally
density-normalised kNN, Mahalanobis, PCA residual), frame scores are aggregated per
clip, and several backends or frequency sub-bands are fused after standardising each
on its own leave-one-out scores of the training clips. This is the recipe of GenRep
(kNN on pretrained embeddings), BEAM (one match per frequency sub-band) and PatchCore
(patch-level banks, greedy coreset, max-over-patches).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.detectors.bank_features import impulse_stats, modulation_spectrum
from soundwatch.detectors.bank_scorers import greedy_coreset
from soundwatch.detectors.base import Detector, notice
from soundwatch.detectors.frontend import LOGMEL_PARAMS, LogMelFrontend
from soundwatch.detectors.params import Param, override, parse_channel
from soundwatch.detectors.registry import register
from soundwatch.detectors.scorers import METRICS, Scorer, create_scorer
from soundwatch.errors import ConfigError, ModelFileError

logger = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = (
    "logmel-stats",
    "logmel-patch",
    "logmel-impulse",
    "logmel-modulation",
    "efficientat",
)
# Views that are one vector per clip, whatever ``level`` says about the others.
CLIP_VIEWS: tuple[str, ...] = ("logmel-stats", "logmel-impulse", "logmel-modulation")
# Views matched per frequency sub-band: their columns are [means, stds] per mel band.
BAND_VIEWS: tuple[str, ...] = ("logmel-stats", "logmel-patch")
LEVELS: tuple[str, ...] = ("clip", "frame")
BACKENDS: tuple[str, ...] = ("knn", "ldn-knn", "mahalanobis", "pca-residual")
AGGREGATES: tuple[str, ...] = ("max", "topk", "mean")
FUSIONS: tuple[str, ...] = ("mean", "min")
AUGMENT_OPS: tuple[str, ...] = ("mixup", "pitch", "time")
# Backends that keep the bank itself (and so its coreset) rather than a fitted density.
_BANK_BACKENDS = {"knn", "ldn-knn"}
# Density backends are fitted on at most this many random bank rows per sub-band.
_DENSITY_ROWS = 20000
# Candidate rows considered by the coreset, per coreset row (bounds its time).
_CANDIDATES_PER_ROW = 16


def _split(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        raise ConfigError(
            f"memory-bank: {what} must be a comma-separated list of {', '.join(allowed)}; "
            f"got {text!r}"
        )
    return items


def aggregate_scores(
    scores: np.ndarray, owners: np.ndarray, n_clips: int, how: str, topk: int
) -> np.ndarray:
    """Per-clip aggregate of item scores of shape (n_items,) owned by clip ``owners``.

    Returns
    -------
    ndarray of shape (n_clips,): max, mean of the ``topk`` largest, or mean.
    """
    out = np.empty(n_clips)
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(n_clips + 1))
    for i in range(n_clips):
        values = scores[order[bounds[i] : bounds[i + 1]]]
        if how == "max":
            out[i] = values.max()
        elif how == "mean":
            out[i] = values.mean()
        else:
            count = min(topk, len(values))
            out[i] = np.partition(values, len(values) - count)[-count:].mean()
    return out


def augment_arrays(
    arrays: list[np.ndarray],
    copies: int,
    ops: list[str],
    *,
    max_pitch: int,
    max_time: int,
    rng: np.random.Generator,
    time_axis: int = 1,
    pitch_axis: int | None = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Few-shot bank augmentation: ``copies`` altered copies of each array.

    Each copy applies one operation drawn from ``ops``: ``mixup`` (a convex mix,
    weight 0.5-1 on the source, with another array cropped to the same length),
    ``pitch`` (a roll of 1..max_pitch mel bins, the vacated edge filled with the edge
    row) or ``time`` (a circular roll of up to ``max_time`` frames). ``pitch`` is
    skipped for arrays without a frequency axis (``pitch_axis=None``).

    Returns
    -------
    augmented : list of arrays, ``copies * len(arrays)`` of them
    sources : ndarray of int, index of the array each copy was made from
    """
    usable = [op for op in ops if op != "pitch" or pitch_axis is not None]
    if not usable or copies <= 0:
        return [], np.zeros(0, dtype=np.int64)
    out: list[np.ndarray] = []
    sources: list[int] = []
    for index, array in enumerate(arrays):
        for _ in range(copies):
            op = usable[rng.integers(len(usable))]
            if op == "mixup" and len(arrays) > 1:
                other = arrays[(index + 1 + rng.integers(len(arrays) - 1)) % len(arrays)]
                n = min(array.shape[time_axis], other.shape[time_axis])
                a = np.take(array, np.arange(n), axis=time_axis)
                b = np.take(other, np.arange(n), axis=time_axis)
                weight = rng.uniform(0.5, 1.0)
                new = weight * a + (1.0 - weight) * b
            elif op == "pitch" and max_pitch > 0:
                shift = int(rng.integers(1, max_pitch + 1)) * (1 if rng.random() < 0.5 else -1)
                new = np.roll(array, shift, axis=pitch_axis)
                edge = [slice(None)] * array.ndim
                fill = [slice(None)] * array.ndim
                if shift > 0:
                    edge[pitch_axis], fill[pitch_axis] = slice(0, shift), slice(shift, shift + 1)
                else:
                    edge[pitch_axis] = slice(shift, None)
                    fill[pitch_axis] = slice(shift - 1, shift)
                new[tuple(edge)] = new[tuple(fill)]
            elif op == "time" and max_time > 0:
                new = np.roll(array, int(rng.integers(-max_time, max_time + 1)), axis=time_axis)
            else:
                new = array.copy()
            out.append(np.asarray(new, dtype=np.float32))
            sources.append(index)
    return out, np.asarray(sources, dtype=np.int64)


MEMORY_BANK_PARAMS: dict[str, Param] = {
    "feature": Param(
        "logmel-patch",
        "comma-separated feature views, each scored and standardised on its own, then "
        "fused by view_fusion: logmel-stats (band means and stds), logmel-patch (band "
        "means and stds over short windows), logmel-impulse (per band group: high "
        "percentiles and maximum of the level over its median, and of the frame-to-frame "
        "rise), logmel-modulation (per band group: envelope power in log-spaced "
        "modulation-frequency bins), or efficientat alone (EfficientAT mn04 frame "
        "embeddings)",
    ),
    "mel_pool": Param(
        2,
        "logmel features: average this many adjacent mel bands before the statistics "
        "(fewer, steadier dimensions for the bank's covariance); must divide n_mels",
        low=1,
    ),
    "level_norm": Param(
        "few",
        "logmel features: subtract each clip's mean log-mel level first, so that a louder "
        "or quieter recording of the same sound matches: off, on, or few (only in banks "
        "of fewer than augment_below training clips, whose covariance cannot learn which "
        "level changes are normal)",
        choices=("off", "on", "few"),
    ),
    "view_groups": Param(
        32, "logmel-impulse and logmel-modulation: contiguous mel-band groups", low=1
    ),
    "modulation_bins": Param(12, "logmel-modulation: log-spaced modulation bins", low=1),
    "view_fusion": Param(
        "mean",
        "standardised scores of the feature views combined by mean or max",
        choices=("mean", "max"),
    ),
    "level": Param("clip", "bank items: one per clip or one per patch/frame", choices=LEVELS),
    "backends": Param(
        "mahalanobis", "comma-separated scoring backends: knn, ldn-knn, mahalanobis, pca-residual"
    ),
    "k": Param(5, "neighbours of knn and ldn-knn", low=1),
    "metric": Param("euclidean", "distance of knn and ldn-knn", choices=METRICS),
    "aggregate": Param(
        "max", "frame scores to a clip score: max, topk mean or mean", choices=AGGREGATES
    ),
    "topk": Param(5, "frames averaged by aggregate=topk", low=1),
    "bank_size": Param(
        2048, "coreset cap: most items a knn/ldn-knn bank keeps (greedy k-center)", low=1
    ),
    "patch_frames": Param(8, "logmel-patch: frames per patch", low=1),
    "patch_hop": Param(4, "logmel-patch: frames between patch starts", low=1),
    "frame_hop": Param(1, "efficientat: keep every n-th frame embedding", low=1),
    "subbands": Param(1, "logmel features: frequency sub-bands matched separately (BEAM)", low=1),
    "subband_fusion": Param(
        "max", "sub-band z-scores combined by max or mean", choices=("max", "mean")
    ),
    "fusion": Param("mean", "backend z-scores combined by mean or min", choices=FUSIONS),
    "loo_folds": Param(
        10, "folds of training clips for the leave-out standardisation (<= n clips: LOO)", low=2
    ),
    "standardize": Param(False, "standardise bank features with their training mean and std"),
    "pca_variance": Param(
        0.95, "pca-residual: variance the subspace explains", low=0.01, high=0.999
    ),
    "augment": Param(16, "augmented copies added to the bank per training clip", low=0),
    "augment_below": Param(
        20, "augment only banks of fewer training clips than this (0 = always)", low=0
    ),
    "augment_ops": Param("pitch", "augmentations drawn from: mixup, pitch, time"),
    "augment_pitch": Param(2, "most mel bins a pitch augmentation shifts", low=0),
    "augment_time": Param(16, "most frames a time augmentation shifts", low=0),
    **LOGMEL_PARAMS,
    "weights": Param(
        None, "efficientat: checkpoint (none = the encoder's default)", kind=str, optional=True
    ),
    "device": Param("cpu", "efficientat: torch device ('auto' = cuda when available)"),
    "batch_size": Param(8, "efficientat: encoder batch size", low=1),
    "per_id": Param(True, "fit one bank per machine ID instead of one per type"),
    "domains": Param(
        False,
        "separate source and target banks (DCASE 2021+ domains), each standardised on its "
        "own leave-out scores; score = the smaller of the two",
    ),
    "target_mixup": Param(
        0,
        "domains: copies of each target clip mixed with its nearest source clips, added "
        "to the target bank (MemMixup-style)",
        low=0,
    ),
}
# A 2048-sample STFT (128 ms at 16 kHz) resolves the tones of a machine's drive more
# finely than the shared 1024 default; chosen on the seed-1 and seed-2 tuning sets.
MEMORY_BANK_PARAMS = override(MEMORY_BANK_PARAMS, n_fft=2048)
DOMAINS: tuple[str, ...] = ("source", "target")


@register
class MemoryBankDetector(LogMelFrontend, Detector):
    """Training-free memory bank of normal features, scored by kNN-style backends.

    Features (``feature``): ``logmel-stats`` (per-band mean and standard deviation of
    the clip's log-mel spectrogram; clip level only), ``logmel-patch`` (the same
    statistics over windows of ``patch_frames`` frames every ``patch_hop``) or
    ``efficientat`` (EfficientAT mn04 frame embeddings, cached on disk; the clip vector
    is their mean). ``level=frame`` keeps one bank item per patch/frame and aggregates
    the item scores of a test clip by ``aggregate`` (PatchCore uses max). Log-mel
    features first average ``mel_pool`` adjacent mel bands: half as many dimensions
    give the bank's covariance twice as many clips per dimension.

    Several clip-level log-mel views can be listed (``feature=logmel-patch,
    logmel-impulse``): ``logmel-impulse`` (per group of ``view_groups`` mel-band groups:
    high percentiles and maximum of the level over its median and of the
    frame-to-frame rise, for ticks and clicks) and ``logmel-modulation`` (log power of
    each group's envelope in ``modulation_bins`` log-spaced modulation-frequency bins).
    Each view is scored and standardised on its own and the views are fused by
    ``view_fusion``.

    Backends (``backends``, comma-separated): ``knn`` (mean distance to the ``k``
    nearest bank items), ``ldn-knn`` (the same divided by those items' own
    neighbour distances), ``mahalanobis`` (Ledoit-Wolf Gaussian) and ``pca-residual``.
    kNN banks are cut to ``bank_size`` items by greedy k-center coreset selection, so
    memory and scoring time stay bounded however many clips there are.

    Each backend and each of ``subbands`` frequency bands (BEAM-style, logmel features
    only) is one scoring unit. Its clip scores are z-normalised by the mean and standard
    deviation of its leave-out scores on the training clips (each fold of clips scored
    against a bank without them; ``loo_folds`` folds, true leave-one-out with fewer
    clips), then the backends are fused by ``fusion`` and the bands by
    ``subband_fusion``.

    With few clips (fewer than ``augment_below`` per bank), ``augment`` adds altered
    copies of each training clip to the bank, drawn from ``augment_ops``: mixup with
    another clip, small mel-bin (pitch) shifts and time shifts (efficientat frames take
    mixup and time shifts only). Copies of a clip leave the bank with it in the
    leave-out folds. With many clips the bank is left as recorded: augmentation then
    blurs it more than it fills gaps. ``level_norm=few`` (the default) also subtracts
    each clip's mean log-mel level in such small banks, and from the clips scored
    against them: a covariance of ten clips cannot learn which loudness changes are
    normal, while a large bank can (there, dropping the level costs faults that change
    it). ``level_norm=on|off`` applies it always or never.

    With ``domains=true`` (DCASE 2021+ data with source and target domains) each
    domain gets its own bank, built and standardised as above from that domain's
    training clips alone (clips without a domain count as source), and a clip's score
    is the smaller of its two standardised scores: the 10 target clips of a DCASE 2023
    section then count as much as its 990 source clips instead of drowning in them.
    ``target_mixup`` adds that many copies of each target clip to the target bank,
    each mixed (weight 0.5-1 on the target clip) with one of its nearest source clips
    in the clip-feature space, in the spirit of MemMixup.

    The defaults (clip-level bank of log-mel patch statistics over pairs of mel bands
    of a 2048-sample STFT, Mahalanobis backend, 16 pitch-shifted copies per clip and
    level normalisation below 20 clips) were chosen on separately seeded synthetic
    sets (``soundwatch synth --seed 1`` and ``--seed 2``, full and ``--n-train 10``).
    """

    name = "memory-bank"
    params = MEMORY_BANK_PARAMS
    # Fitting a bank takes seconds, so fold models are cheap: the threshold comes from
    # out-of-fold scores and the bank holds every training clip.
    cross_fit_calibration = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.backend_list = _split(self.backends, BACKENDS, "backends")
        self.augment_list = _split(self.augment_ops, AUGMENT_OPS, "augment_ops")
        self.views = _split(self.feature, FEATURES, "feature")
        if len(set(self.views)) < len(self.views):
            raise ConfigError(f"memory-bank: feature lists a view twice: {self.feature!r}")
        if len(self.views) > 1 and ("efficientat" in self.views or self.level == "frame"):
            raise ConfigError(
                "memory-bank: several feature views need level=clip and logmel views only"
            )
        if self.views[0] in CLIP_VIEWS and self.level == "frame":
            raise ConfigError(
                f"memory-bank: feature={self.feature} is one vector per clip; use level=clip "
                "or feature=logmel-patch"
            )
        if self.feature == "efficientat" and self.subbands > 1:
            raise ConfigError(
                "memory-bank: subbands need a frequency axis; use a logmel feature or subbands=1"
            )
        if self.n_mels % self.mel_pool:
            raise ConfigError(
                f"memory-bank: mel_pool={self.mel_pool} does not divide n_mels={self.n_mels}"
            )
        self.n_bands = self.n_mels // self.mel_pool
        if self.feature != "efficientat" and self.subbands > self.n_bands:
            raise ConfigError(
                f"memory-bank: subbands={self.subbands} exceeds the {self.n_bands} mel bands "
                f"(n_mels / mel_pool)"
            )

    # ----------------------------------------------------------------- features
    def _raw(self, clips: list[Clip]) -> list[np.ndarray]:
        """Per-clip arrays before featurisation: log-mels (n_mels, T) or frames (T, D)."""
        if self.feature != "efficientat":
            return [np.asarray(m, dtype=np.float32) for m in self.logmels(clips)]
        from soundwatch.encoders.embed import embed_clips
        from soundwatch.encoders.registry import shared_encoder

        encoder = shared_encoder("efficientat-mn04", self.weights, self.device, self.batch_size)
        _, frames = embed_clips(
            clips, encoder, "mean", duration=self.duration, channel=parse_channel(self.channel)
        )
        return frames

    def _items(self, raw: np.ndarray) -> np.ndarray:
        """Bank items of one clip, shape (n_items, D)."""
        if self.feature == "efficientat":
            frames = raw[:: self.frame_hop]
            return frames.mean(axis=0, keepdims=True) if self.level == "clip" else frames
        if self.mel_pool > 1:
            raw = raw.reshape(self.n_bands, self.mel_pool, -1).mean(axis=1)
        if getattr(self, "level_norm_active_", False):
            raw = raw - raw.mean()
        return np.concatenate(
            [self._view_items(view, raw) for view in self.views],
            axis=1,
        )

    def _view_items(self, view: str, raw: np.ndarray) -> np.ndarray:
        """Bank items of one log-mel view of one clip, shape (n_items, D_view)."""
        if view == "logmel-stats":
            return np.concatenate([raw.mean(axis=1), raw.std(axis=1)])[None]
        if view == "logmel-impulse":
            return impulse_stats(raw, self.view_groups)[None]
        if view == "logmel-modulation":
            return modulation_spectrum(raw, self.view_groups, self.modulation_bins)[None]
        n_frames = raw.shape[1]
        width = min(self.patch_frames, n_frames)
        starts = np.arange(0, n_frames - width + 1, self.patch_hop)
        windows = np.stack([raw[:, s : s + width] for s in starts])  # (P, n_bands, width)
        patches = np.concatenate([windows.mean(axis=2), windows.std(axis=2)], axis=1)
        return patches.mean(axis=0, keepdims=True) if self.level == "clip" else patches

    def _view_dim(self, view: str) -> int:
        groups = min(self.view_groups, self.n_bands)
        return {
            "logmel-impulse": 5 * groups,
            "logmel-modulation": groups * self.modulation_bins,
        }.get(view, 2 * self.n_bands)

    def _bands(self, dim: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Feature columns of each scoring band and the view each belongs to.

        Returns
        -------
        bands : list of int arrays
            Columns of each band: ``subbands`` frequency bands of a logmel-stats or
            logmel-patch view (its items are [means, stds] per mel), one band per
            other view.
        view_of_band : ndarray of int, shape (n_bands,)
        """
        if self.feature == "efficientat":
            return [np.arange(dim)], np.zeros(1, dtype=np.int64)
        bands, view_of_band, offset = [], [], 0
        edges = np.linspace(0, self.n_bands, self.subbands + 1).round().astype(int)
        for v, view in enumerate(self.views):
            if view in BAND_VIEWS:
                for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                    bands.append(
                        offset
                        + np.concatenate([np.arange(lo, hi), self.n_bands + np.arange(lo, hi)])
                    )
                    view_of_band.append(v)
            else:
                bands.append(offset + np.arange(self._view_dim(view)))
                view_of_band.append(v)
            offset += self._view_dim(view)
        return bands, np.asarray(view_of_band, dtype=np.int64)

    def _featurise(self, raws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        items = [self._items(r) for r in raws]
        owners = np.concatenate([np.full(len(x), i) for i, x in enumerate(items)])
        return np.concatenate(items).astype(np.float64), owners

    # ----------------------------------------------------------------- backends
    def _make_backend(self, name: str) -> Scorer:
        options: dict[str, dict[str, Any]] = {
            "knn": {"k": self.k, "metric": self.metric},
            "ldn-knn": {"k": self.k, "metric": self.metric},
            "pca-residual": {"variance": self.pca_variance},
        }
        return create_scorer(name, standardize=False, **options.get(name, {}))

    def _bank_rows(self, name: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sorted indices of the rows of ``x`` a backend is fitted on: a greedy coreset
        of at most ``bank_size`` rows for kNN banks, a random subsample of at most
        :data:`_DENSITY_ROWS` rows for density backends."""
        rows = np.arange(len(x))
        if name in _BANK_BACKENDS:
            limit = self.bank_size * _CANDIDATES_PER_ROW
            if len(rows) > limit:
                rows = np.sort(rng.choice(len(rows), limit, replace=False))
            chosen = greedy_coreset(x[rows], self.bank_size, seed=int(rng.integers(2**31)))
            return rows[np.sort(chosen)]
        if len(rows) > _DENSITY_ROWS:
            rows = np.sort(rng.choice(len(rows), _DENSITY_ROWS, replace=False))
        return rows

    def _transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_

    def _unit_scores(
        self, scorer: Scorer, x: np.ndarray, owners: np.ndarray, n_clips: int
    ) -> np.ndarray:
        return aggregate_scores(scorer.score(x), owners, n_clips, self.aggregate, self.topk)

    # ----------------------------------------------------------------- domains
    def _domain_bank(self) -> MemoryBankDetector:
        return type(self)(**{**self.get_params(), "domains": False, "per_id": False})

    def _target_mixup(
        self, source: list[np.ndarray], target: list[np.ndarray], rng: np.random.Generator
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """``target_mixup`` copies of each target array, mixed with near source arrays.

        Returns
        -------
        mixed : list of arrays
        sources : ndarray of int, the target array each copy was made from
        """
        if not source or not target or self.target_mixup == 0:
            return [], np.zeros(0, dtype=np.int64)
        time_axis = 0 if self.feature == "efficientat" else 1

        def vector(raw: np.ndarray) -> np.ndarray:
            return self._items(raw).mean(axis=0)

        source_vectors = np.stack([vector(r) for r in source])
        scale = source_vectors.std(axis=0) + 1e-9
        out, made_from = [], []
        for index, raw in enumerate(target):
            distance = np.linalg.norm((source_vectors - vector(raw)) / scale, axis=1)
            nearest = np.argsort(distance)[: self.target_mixup]
            for j in range(self.target_mixup):
                other = source[nearest[j % len(nearest)]]
                n = min(raw.shape[time_axis], other.shape[time_axis])
                a = np.take(raw, np.arange(n), axis=time_axis)
                b = np.take(other, np.arange(n), axis=time_axis)
                weight = rng.uniform(0.5, 1.0)
                out.append((weight * a + (1.0 - weight) * b).astype(np.float32))
                made_from.append(index)
        return out, np.asarray(made_from, dtype=np.int64)

    def _fit_domains(self, train: list[Clip]) -> None:
        raws = self._raw(train)
        domain_of = ["target" if c.domain == "target" else "source" for c in train]
        by_domain = {
            d: [r for r, cd in zip(raws, domain_of, strict=True) if cd == d] for d in DOMAINS
        }
        mixed, mixed_from = self._target_mixup(
            by_domain["source"], by_domain["target"], np.random.default_rng(self.seed + 1)
        )
        self.domain_banks_: dict[str, MemoryBankDetector] = {}
        for domain in DOMAINS:
            if by_domain[domain]:
                bank = self._domain_bank()
                if domain == "target":
                    bank._fit_bank(by_domain[domain], mixed, mixed_from)
                else:
                    bank._fit_bank(by_domain[domain])
                self.domain_banks_[domain] = bank
        self.n_domain_clips_ = {d: len(by_domain[d]) for d in DOMAINS}
        missing = [d for d in DOMAINS if not by_domain[d]]
        if missing:
            notice(
                logger,
                "one bank",
                "%s: no %s-domain training clips; scoring with one bank",
                self.name,
                missing[0],
            )

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        if self.domains:
            self._fit_domains(train)
        else:
            self._fit_bank(self._raw(train))

    def _fit_bank(
        self,
        raws: list[np.ndarray],
        extra: list[np.ndarray] | None = None,
        extra_from: np.ndarray | None = None,
    ) -> None:
        """Fit one bank on per-clip arrays; ``extra`` arrays (made from clip
        ``extra_from[i]``, like augmented copies) join the bank, not the scored clips."""
        rng = np.random.default_rng(self.seed)
        time_axis, pitch_axis = (0, None) if self.feature == "efficientat" else (1, 0)
        few = self.augment_below == 0 or len(raws) < self.augment_below
        self.level_norm_active_ = self.feature != "efficientat" and (
            self.level_norm == "on" or (self.level_norm == "few" and few)
        )
        if few and (self.augment or self.level_norm_active_):
            done = [f"{self.augment} altered copies of each clip"] if self.augment else []
            done += ["each clip's mean level removed"] if self.level_norm_active_ else []
            why = (
                "augment_below=0: every bank"
                if self.augment_below == 0
                else f"fewer than augment_below={self.augment_below}"
            )
            notice(
                logger,
                "few clips",
                "%s: a bank of %d clip(s) (%s) gets the few-shot design: %s",
                self.name,
                len(raws),
                why,
                " and ".join(done),
            )
        augmented, sources = augment_arrays(
            raws,
            self.augment if few else 0,
            self.augment_list,
            max_pitch=self.augment_pitch,
            max_time=self.augment_time,
            rng=rng,
            time_axis=time_axis,
            pitch_axis=pitch_axis,
        )
        if extra:
            augmented = augmented + list(extra)
            sources = np.concatenate([sources, np.asarray(extra_from, dtype=np.int64)])
        x, owners = self._featurise(raws + augmented)
        # An augmented item belongs to the clip it was made from (for the leave-out folds).
        clip_of = np.concatenate([np.arange(len(raws)), sources])[owners]
        real = owners < len(raws)
        self.mean_ = x.mean(axis=0) if self.standardize else np.zeros(x.shape[1])
        std = x.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0) if self.standardize else np.ones(x.shape[1])
        z = self._transform(x)
        self.bands_, self.view_of_band_ = self._bands(z.shape[1])
        self.units_: list[Scorer] = []
        self.loo_mean_ = np.empty(len(self.bands_) * len(self.backend_list))
        self.loo_std_ = np.empty_like(self.loo_mean_)
        n_folds = min(self.loo_folds, len(raws))
        fold_of_clip = rng.permutation(len(raws)) % n_folds
        unit = 0
        for columns in self.bands_:
            zb = z[:, columns]
            for backend in self.backend_list:
                rows = self._bank_rows(backend, zb, rng)
                self.units_.append(self._make_backend(backend).fit(zb[rows]))
                held = np.empty(len(raws))
                for fold in range(n_folds) if len(raws) > 1 else []:
                    out = fold_of_clip[clip_of] == fold
                    # The same bank without the fold's clips (and their augmented
                    # copies); the coreset is not recomputed, which keeps folds cheap.
                    fold_rows = rows[~out[rows]]
                    if len(fold_rows) < 2:  # a tiny coreset held only the fold's items
                        fold_rows = np.flatnonzero(~out)
                    fold_scorer = self._make_backend(backend).fit(zb[fold_rows])
                    query = out & real
                    clips_in_fold = np.flatnonzero(fold_of_clip == fold)
                    local = np.searchsorted(clips_in_fold, owners[query])
                    held[clips_in_fold] = self._unit_scores(
                        fold_scorer, zb[query], local, len(clips_in_fold)
                    )
                if len(raws) > 1:
                    self.loo_mean_[unit] = held.mean()
                    self.loo_std_[unit] = max(held.std(), 1e-12 * max(abs(held.mean()), 1.0))
                else:  # nothing to leave out: no standardisation
                    self.loo_mean_[unit], self.loo_std_[unit] = 0.0, 1.0
                unit += 1

    def _score(self, clips: list[Clip]) -> np.ndarray:
        if self.domains:
            raws = self._raw(clips)
            return np.min([bank._score_raws(raws) for bank in self.domain_banks_.values()], axis=0)
        return self._score_raws(self._raw(clips))

    def _score_raws(self, raws: list[np.ndarray]) -> np.ndarray:
        n_clips = len(raws)
        x, owners = self._featurise(raws)
        if x.shape[1] != len(self.mean_):
            raise ModelFileError(
                f"{self.name}: features are {x.shape[1]}-d but the bank holds "
                f"{len(self.mean_)}-d ones (different feature parameters?)"
            )
        z = self._transform(x)
        n_backends = len(self.backend_list)
        band_scores = []
        for b, columns in enumerate(self.bands_):
            zs = []
            for j in range(n_backends):
                unit = b * n_backends + j
                raw = self._unit_scores(self.units_[unit], z[:, columns], owners, n_clips)
                zs.append((raw - self.loo_mean_[unit]) / self.loo_std_[unit])
            stacked = np.stack(zs)
            band_scores.append(stacked.min(0) if self.fusion == "min" else stacked.mean(0))
        bands = np.stack(band_scores)
        views = []
        for v in np.unique(self.view_of_band_):
            of_view = bands[self.view_of_band_ == v]
            views.append(of_view.max(0) if self.subband_fusion == "max" else of_view.mean(0))
        stacked_views = np.stack(views)
        return stacked_views.max(0) if self.view_fusion == "max" else stacked_views.mean(0)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        if self.domains:
            tensors: dict[str, np.ndarray] = {}
            banks = {}
            for domain, bank in self.domain_banks_.items():
                arrays, banks[domain] = bank._get_state()
                tensors.update({f"{domain}.{k}": v for k, v in arrays.items()})
            return tensors, {"domain_banks": banks, "n_domain_clips": self.n_domain_clips_}
        tensors = {
            "mean": self.mean_,
            "scale": self.scale_,
            "loo_mean": self.loo_mean_,
            "loo_std": self.loo_std_,
        }
        metas = []
        for i, (unit, columns) in enumerate(
            zip(self.units_, [c for c in self.bands_ for _ in self.backend_list], strict=True)
        ):
            arrays, meta = unit.state()
            tensors.update({f"unit{i}.{k}": v for k, v in arrays.items()})
            tensors[f"unit{i}.columns"] = columns.astype(np.int64)
            metas.append(meta)
        return tensors, {"units": metas, "level_norm": bool(self.level_norm_active_)}

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        if self.domains:
            if not state.get("domain_banks"):
                raise ModelFileError(f"{self.name}: model file holds no domain banks")
            self.domain_banks_ = {}
            for domain, meta in state["domain_banks"].items():
                prefix = f"{domain}."
                bank = self._domain_bank()
                bank._set_state(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                    meta,
                )
                self.domain_banks_[domain] = bank
            self.n_domain_clips_ = dict(state.get("n_domain_clips", {}))
            return
        self.level_norm_active_ = bool(state.get("level_norm", False))
        self.mean_ = tensors["mean"].astype(np.float64)
        self.scale_ = tensors["scale"].astype(np.float64)
        self.loo_mean_ = tensors["loo_mean"].astype(np.float64)
        self.loo_std_ = tensors["loo_std"].astype(np.float64)
        self.units_ = []
        columns = []
        for i, meta in enumerate(state["units"]):
            prefix = f"unit{i}."
            arrays = {
                k[len(prefix) :]: v
                for k, v in tensors.items()
                if k.startswith(prefix) and k != f"{prefix}columns"
            }
            self.units_.append(Scorer.from_state(arrays, meta))
            columns.append(tensors[f"{prefix}columns"].astype(np.int64))
        self.bands_ = columns[:: len(self.backend_list)]
        self.view_of_band_ = self._bands(len(self.mean_))[1]
        if len(self.view_of_band_) != len(self.bands_):
            raise ModelFileError(
                f"{self.name}: model file holds {len(self.bands_)} bands, the feature "
                f"parameters make {len(self.view_of_band_)}"
            )


@register
class DomainMemoryBankDetector(MemoryBankDetector):
    """:class:`MemoryBankDetector` with ``domains=true``: separate source and target banks.

    The preset for DCASE 2021+ data with domain shift; see :class:`MemoryBankDetector`
    for the parameters. Its few-shot augmentation also mixes clips
    (``augment_ops=mixup,pitch,time``, four copies per clip), it keeps all 128 mel
    bands of a 1024-sample STFT, and each target clip gets four copies mixed with its
    nearest source clips (``target_mixup=4``): settings chosen on a separately seeded
    synthetic set (``soundwatch synth --domain-shift --seed 1``).
    """

    name = "domain-memory-bank"
    params = override(
        MEMORY_BANK_PARAMS,
        domains=True,
        augment_ops="mixup,pitch,time",
        target_mixup=4,
        mel_pool=1,
        augment=4,
        n_fft=1024,
        level_norm="off",
    )
