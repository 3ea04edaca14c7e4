"""The detector contract: configure in ``__init__``, then ``fit``, ``score``, ``save``, ``load``.

A subclass declares ``name``, ``params`` and (unless it is a built-in, whose summary is
in :data:`soundwatch.detectors.registry.BUILTIN`) ``summary``, and implements four hooks:
``_fit(train, valid)``, ``_score(clips)``, ``_get_state()`` and ``_set_state(...)``.
The base class does everything common to all detectors: parameter validation, the
held-out split of training normals, one model per machine ID on request, the decision
threshold, timing, and the model file. A detector may also implement
``_anomaly_map(clip)`` to show where in time and frequency a clip looks anomalous.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from soundwatch.data.clips import ANOMALY, Clip, summarize
from soundwatch.data.inputs import as_clips, audio_summary, machine_type_of
from soundwatch.detectors.calibration import group_folds, recording_groups
from soundwatch.detectors.modelfile import read_model_file, write_model_file
from soundwatch.detectors.params import Param
from soundwatch.errors import ConfigError, ModelFileError, SoundwatchError
from soundwatch.thresholds import (
    MIN_CLIPS_PER_ID,
    POOLED,
    ThresholdMethod,
    describe_threshold,
    domain_key,
    fit_thresholds,
    lookup_threshold,
    parse_threshold_method,
)

logger = logging.getLogger(__name__)

# Keys of the notices already given within the current top-level ``Detector.fit``.
_NOTICES: ContextVar[set[str] | None] = ContextVar("soundwatch_fit_notices", default=None)


@contextlib.contextmanager
def notice_scope() -> Iterator[None]:
    """Within the outermost ``fit`` (with its per-ID and cross-fitting fold models),
    :func:`notice` gives each notice once."""
    if _NOTICES.get() is not None:
        yield
        return
    token = _NOTICES.set(set())
    try:
        yield
    finally:
        _NOTICES.reset(token)


def notice(log: logging.Logger, key: str, message: str, *args: Any) -> None:
    """Warn with ``message`` unless a notice of ``key`` was given in this fit already:
    one line for what every per-ID or fold model of a fit would otherwise repeat."""
    seen = _NOTICES.get()
    if seen is not None:
        if key in seen:
            return
        seen.add(key)
    log.warning(message, *args)


#: Key of clips without a machine ID wherever clips are grouped by ID (splits, models).
NO_ID = ""
# Fewest training clips for cross-fitted calibration; fewer fall back to the held-out split.
MIN_CLIPS_CROSS_FIT = 4
# Fewest held-out clips per model whose loss may choose the training epoch (restore_best,
# early stopping, lr_patience); as for a threshold of an ID's own, fewer are too noisy.
MIN_VALIDATION_CLIPS = MIN_CLIPS_PER_ID

COMMON_PARAMS: dict[str, Param] = {
    "seed": Param(0, "random seed for splits, initialisation and shuffling"),
    "validation_fraction": Param(
        0.1,
        "fraction of training normals held out for validation and the threshold",
        low=0.0,
        high=0.5,
    ),
    "threshold": Param(
        "gamma",
        "decision threshold fitted on held-out normal scores: gamma:Q (quantile of a "
        "fitted gamma), percentile:P (empirical percentile) or meanstd:K (mean + K std); "
        "a bare gamma uses threshold_quantile",
    ),
    "threshold_quantile": Param(0.9, "quantile of a bare threshold=gamma", low=0.5, high=0.9999),
    "per_id": Param(False, "fit one model per machine ID instead of one per machine type"),
    "calibration": Param(
        "auto",
        "normal scores the threshold is fitted on: cross-fit (out-of-fold scores of every "
        "training normal, folds by recording group), held-out (validation_fraction of the "
        "training normals) or auto (cross-fit where the detector refits cheaply)",
        choices=("auto", "cross-fit", "held-out"),
    ),
    "calibration_folds": Param(5, "folds of cross-fitted calibration", low=2),
    "group_by": Param(
        "auto",
        "recording groups kept within one cross-fit fold: auto (a sessionNN tag in the "
        "file names, else folders), session, folder, clip (each clip its own group), or a "
        "regular expression whose first group names the group in a file name",
    ),
}


def id_key(clip: Clip) -> str:
    """The machine ID a clip is grouped under (:data:`NO_ID` when it has none)."""
    return clip.machine_id or NO_ID


def holdout_split(
    clips: Sequence[Clip], fraction: float, seed: int
) -> tuple[list[Clip], list[Clip]]:
    """Split clips into (train, held-out), stratified by machine ID, deterministically."""
    rng = np.random.default_rng(seed)
    train: list[Clip] = []
    held_out: list[Clip] = []
    for machine_id in sorted({id_key(c) for c in clips}):
        group = sorted((c for c in clips if id_key(c) == machine_id), key=lambda c: str(c.path))
        n_held = round(fraction * len(group)) if len(group) >= 4 else 0
        if fraction > 0 and len(group) >= 4:
            n_held = max(n_held, 1)
        order = rng.permutation(len(group))
        held_out += [group[i] for i in sorted(order[:n_held])]
        train += [group[i] for i in sorted(order[n_held:])]
    return train, held_out


def check_calibration_clips(name: str, clips: Sequence[Clip]) -> list[Clip]:
    """The calibration clips as a list; refuses none or anomalous ones."""
    clips = list(clips)
    if not clips:
        raise ConfigError(f"{name}: no calibration clips")
    anomalous = [c for c in clips if c.label == ANOMALY]
    if anomalous:
        raise ConfigError(
            f"{name}: calibration clips must be normal, got {len(anomalous)} anomalous "
            f"clips, e.g. {Path(anomalous[0].path).name}"
        )
    return clips


def calibration_description(
    source: str | None,
    n_clips: int,
    *,
    folds: int | None = None,
    group_by: str | None = None,
    n_groups: int | None = None,
    reason: str = "validation_fraction=0",
) -> str:
    """What the threshold was fitted on, to follow "threshold fitted on"."""
    if source == "cross-fit":
        split = "split by clip" if group_by == "clip" else f"split by {group_by}, {n_groups} groups"
        return (
            f"cross-fitted out-of-fold scores of all {n_clips} training normals ({folds} "
            f"folds {split}); the model itself is fitted on all of them"
        )
    if source == "held-out":
        return (
            f"scores of {n_clips} training normals held out at random, from the same "
            "recordings as the rest (not cross-fitted: costly to refit, or "
            "calibration=held-out); --calibrate-on DIR fits it on separate recordings"
        )
    if source == "training":
        return (
            f"training scores ({reason}): the scores of the {n_clips} clips "
            "the model was trained on, which are lower than those of new recordings; "
            "expect many false alarms"
        )
    return f"scores of {n_clips} separately recorded normal clips ({source})"


class Detector(ABC):
    """Base class of all anomaly detectors.

    Subclasses set the class attributes below and implement the hooks. Parameters are
    set as attributes of the same name after validation, as in scikit-learn.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"dcase2020-ae"``.
    summary : str
        One-line description for ``soundwatch detectors`` (set by the registry for
        built-in detectors).
    params : dict of str to Param
        Hyperparameters in addition to :data:`COMMON_PARAMS` (which they may override).
    thresholds_ : dict of str to float
        Decision thresholds after ``fit``: per machine ID, per section and domain
        (``"00/target"``, for clips with a domain) and ``"all"`` (pooled); read them
        through :meth:`threshold_for`.
    history_ : dict
        Training curves of neural detectors (empty for others).
    calibration_scores_ : dict of str to ndarray
        Scores of the held-out normals (or of the training clips when nothing is held
        out) per machine ID (per section and domain, ``"00/source"``, for clips with a
        domain), clips without ID under ``"all"``; the thresholds are fitted
        to them, and :meth:`refit_threshold` refits from them.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    #: Whether refitting is cheap enough that ``calibration=auto`` cross-fits.
    cross_fit_calibration: ClassVar[bool] = False
    #: Fewest training clips one model (one per machine ID with ``per_id``) is fitted
    #: on; :meth:`fit` refuses fewer before any work, one more when cross-fitting.
    min_train_clips: ClassVar[int] = 1
    #: With fewer training clips per model than this, :meth:`fit` warns that the
    #: detector scored near chance in the few-shot regime (0: never).
    near_chance_below: ClassVar[int] = 0

    def __init__(self, **params: Any) -> None:
        spec = self.param_spec()
        unknown = sorted(set(params) - set(spec))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(unknown)} for detector {self.name}; "
                f"valid: {', '.join(spec)}"
            )
        for key, param in spec.items():
            setattr(self, key, param.coerce(key, params[key]) if key in params else param.default)
        # Validate the threshold spec now, not after a long training run.
        self.threshold = str(self.threshold).strip().lower()
        parse_threshold_method(self.threshold, self.threshold_quantile)
        self.thresholds_: dict[str, float] | None = None
        self.calibration_scores_: dict[str, np.ndarray] = {}
        self.calibration_source_: str | None = None
        self.calibration_info_: dict = {}
        self.history_: dict = {}
        self.fit_info_: dict = {}
        self._members: dict[str, Detector] | None = None
        self._fitted = False

    # ----------------------------------------------------------------- parameters
    @classmethod
    def param_spec(cls) -> dict[str, Param]:
        """All parameters of this detector, common ones first."""
        return {**COMMON_PARAMS, **cls.params}

    def get_params(self) -> dict[str, Any]:
        """Current parameter values, JSON-serialisable."""
        return {key: getattr(self, key) for key in self.param_spec()}

    @property
    def threshold_method(self) -> ThresholdMethod:
        """The parsed ``threshold`` parameter (a bare ``gamma`` takes
        ``threshold_quantile``); raises ConfigError for an invalid spec."""
        return parse_threshold_method(self.threshold, self.threshold_quantile)

    @classmethod
    def describe(cls) -> str:
        """Docstring text for ``soundwatch detectors --verbose``."""
        return (cls.__doc__ or cls.summary).strip()

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        """Fit on training normals; ``valid`` is a held-out split (maybe empty)."""

    @abstractmethod
    def _score(self, clips: list[Clip]) -> np.ndarray:
        """Anomaly scores of shape (n_clips,), higher means more anomalous."""

    @abstractmethod
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Fitted state as (arrays, JSON-serialisable dict)."""

    @abstractmethod
    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        """Restore what :meth:`_get_state` returned."""

    def _anomaly_map(self, clip: Clip) -> np.ndarray | None:
        """Per time-frequency anomaly of one clip, shape (n_mels, n_frames), or None
        when the detector cannot localise its score (the default)."""
        return None

    # ----------------------------------------------------------------- contract
    def fit(
        self, clips: Sequence[Clip], calibration_clips: Sequence[Clip] | None = None
    ) -> Detector:
        """Fit on normal training clips.

        Parameters
        ----------
        clips : sequence of Clip, length n_clips
            Normal (or unlabelled) recordings. Unless ``calibration_clips`` are given,
            the threshold is fitted on cross-fitted out-of-fold scores of all of them
            (``calibration`` ``cross-fit``, or ``auto`` for detectors that refit
            cheaply; the model is then fitted on all clips), or on a held-out
            ``validation_fraction`` of them per machine ID.
        calibration_clips : sequence of Clip, optional
            Separately recorded normal clips that only set the threshold.

        Returns
        -------
        self

        Raises
        ------
        ConfigError
            No clips, anomalous clips, or fewer than ``min_train_clips`` per model.
        """
        with notice_scope():
            return self._fit_checked(list(clips), calibration_clips)

    def _fit_checked(self, clips: list[Clip], calibration_clips: Sequence[Clip] | None) -> Detector:
        if not clips:
            raise ConfigError(f"{self.name}: no training clips")
        n_anomalous = sum(c.label == ANOMALY for c in clips)
        if n_anomalous:
            raise ConfigError(
                f"{self.name}: training clips must be normal, got {n_anomalous} anomalous clips"
            )
        if calibration_clips is not None:
            check_calibration_clips(self.name, calibration_clips)
        start = time.perf_counter()
        # Every fold model needs clips to fit; a handful of clips calibrate as before.
        cross_fit = (
            calibration_clips is None and self.uses_cross_fit and len(clips) >= MIN_CLIPS_CROSS_FIT
        )
        self._check_enough_clips(clips, cross_fit)
        self._warn_near_chance(clips)
        if cross_fit:
            out_of_fold = self._cross_fit_scores(clips)
            train, valid = clips, []
        elif self.uses_cross_fit:  # calibration clips: nothing to hold out
            train, valid = clips, []
        else:
            train, valid = holdout_split(clips, self.validation_fraction, self.seed)
        self._fit_models(train, self._validation_for_training(valid))
        if calibration_clips is not None:
            self.calibrate(calibration_clips)
        elif cross_fit:
            self._set_calibration(clips, out_of_fold)
            self.calibration_source_ = "cross-fit"
            self.thresholds_ = self._fit_thresholds()
        else:
            calibration = valid or train
            self._set_calibration(calibration, self.score(calibration))
            self.calibration_source_ = "held-out" if valid else "training"
            self.calibration_info_ = {
                "source": self.calibration_source_,
                "n_clips": len(calibration),
                "description": calibration_description(
                    self.calibration_source_,
                    len(calibration),
                    reason="validation_fraction=0"
                    if self.validation_fraction == 0
                    else "too few clips to hold any out",
                ),
            }
            self.thresholds_ = self._fit_thresholds()
        self.fit_info_ = {
            "fit_seconds": time.perf_counter() - start,
            "n_train": len(train),
            "n_validation": len(valid),
            "training_data": summarize(clips),
            "calibration": self.calibration_info_,
            # What scoring checks new clips against (soundwatch.runtime).
            "machine_type": machine_type_of(clips),
            "audio": audio_summary(clips),
        }
        return self

    def _clips_per_model(self, clips: list[Clip]) -> dict[str, int]:
        """Training clips of each model: per machine ID with ``per_id``, else pooled."""
        if not self.per_id:
            return {POOLED: len(clips)}
        counts: dict[str, int] = {}
        for clip in clips:
            counts[id_key(clip)] = counts.get(id_key(clip), 0) + 1
        return counts

    def _warn_near_chance(self, clips: list[Clip]) -> None:
        """One line when the models get fewer clips than :attr:`near_chance_below`."""
        fewest = min(self._clips_per_model(clips).values())
        if fewest < self.near_chance_below:
            notice(
                logger,
                "near chance",
                "%s: %d training clips per model; with fewer than %d this detector scored "
                "near chance (mean AUC below 0.65) in the 10-clips-per-ID regime of the "
                "synthetic benchmarks (README: Few normal clips); memory-bank is built for "
                "few clips",
                self.name,
                fewest,
                self.near_chance_below,
            )

    def _check_enough_clips(self, clips: list[Clip], cross_fit: bool) -> None:
        """ConfigError unless every model gets ``min_train_clips`` training clips (one
        more when cross-fitting, whose fold models leave clips out)."""
        need = self.min_train_clips + int(cross_fit)
        if need <= 1:
            return
        how = " when cross-fitting the calibration" if cross_fit else ""
        if self.per_id:
            counts = self._clips_per_model(clips)
            fewest = min(sorted(counts), key=counts.__getitem__)
            if counts[fewest] < need:
                where = f"machine ID {fewest}" if fewest else "the clips without an ID"
                raise ConfigError(
                    f"{self.name}: needs at least {need} training clips per machine ID{how} "
                    f"(per_id=true), {where} has {counts[fewest]}"
                )
        elif len(clips) < need:
            raise ConfigError(
                f"{self.name}: needs at least {need} training clips{how}, got {len(clips)}"
            )

    def _validation_for_training(self, valid: list[Clip]) -> list[Clip]:
        """The held-out clips whose loss may choose the training epoch: none (logged) when
        a model would see fewer than :data:`MIN_VALIDATION_CLIPS`; they still set the
        threshold."""
        chooses_epoch = "restore_best" in self.param_spec() and (
            self.restore_best or self.early_stopping_patience or self.lr_patience
        )
        if not valid or not chooses_epoch:
            return valid
        fewest = min(self._clips_per_model(valid).values())
        if fewest >= MIN_VALIDATION_CLIPS:
            return valid
        per_model = " per machine ID" if self.per_id else ""
        logger.warning(
            "%s: %d held-out clip(s)%s are too few to choose the training epoch (fewer than "
            "%d); the training loss chooses it, and the held-out clips only set the threshold",
            self.name,
            fewest,
            per_model,
            MIN_VALIDATION_CLIPS,
        )
        return []

    @property
    def uses_cross_fit(self) -> bool:
        """Whether :meth:`fit` cross-fits the threshold's calibration scores."""
        if self.calibration == "auto":
            return self.cross_fit_calibration
        return self.calibration == "cross-fit"

    def _fit_models(self, train: list[Clip], valid: list[Clip]) -> None:
        """Fit the model (one per machine ID with ``per_id``); thresholds untouched."""
        # Imported here: the training loop imports torch, which loading and scoring a
        # non-neural detector never need.
        from soundwatch.training.loop import seed_everything

        seed_everything(self.seed)
        if self.per_id:
            self._members = {}
            for machine_id in sorted({id_key(c) for c in train}):
                member = type(self)(**{**self.get_params(), "per_id": False})
                seed_everything(self.seed)
                member._fit(
                    [c for c in train if id_key(c) == machine_id],
                    [c for c in valid if id_key(c) == machine_id],
                )
                self._members[machine_id] = member
        else:
            self._fit(train, valid)
        self._fitted = True

    def _cross_fit_scores(self, clips: list[Clip]) -> np.ndarray:
        """Out-of-fold score of every clip from a model fitted without its recording group;
        records how in ``calibration_info_``."""
        groups, how = recording_groups(clips, self.group_by)
        folds, n_folds = group_folds(clips, groups, self.calibration_folds, self.seed)
        scores = np.empty(len(clips))
        for fold in range(n_folds):
            held = [i for i in range(len(clips)) if folds[i] == fold]
            if not held:
                continue
            model = type(self)(**self.get_params())
            model._fit_models([c for i, c in enumerate(clips) if folds[i] != fold], [])
            scores[held] = model.score([clips[i] for i in held])
        n_groups = len(set(groups))
        self.calibration_info_ = {
            "source": "cross-fit",
            "n_clips": len(clips),
            "folds": n_folds,
            "group_by": how,
            "n_groups": n_groups,
            "description": calibration_description(
                "cross-fit", len(clips), folds=n_folds, group_by=how, n_groups=n_groups
            ),
        }
        return scores

    def calibrate(self, clips: Sequence[Clip], source: str = "calibrate-on") -> Detector:
        """Refit the thresholds on scores of separately recorded normal clips.

        Parameters
        ----------
        clips : sequence of Clip
            Normal recordings not used for training (e.g. ``--calibrate-on DIR``).
        source : str
            How they are named in the model file and the report.

        Returns
        -------
        self
        """
        if not self._fitted:
            raise ConfigError(f"{self.name}: detector is not fitted; call fit() first")
        clips = check_calibration_clips(self.name, clips)
        self._set_calibration(clips, self.score(clips))
        self.calibration_source_ = source
        self.calibration_info_ = {
            "source": source,
            "n_clips": len(clips),
            "description": calibration_description(source, len(clips)),
        }
        self.thresholds_ = self._fit_thresholds()
        if self.fit_info_:
            self.fit_info_["calibration"] = self.calibration_info_
        return self

    def score(self, clips: Sequence[Clip] | str | Path) -> np.ndarray:
        """Anomaly scores.

        Parameters
        ----------
        clips : sequence of Clip, paths or folders, or one path or folder
            Folders are searched recursively (see
            :func:`~soundwatch.data.datasets.collect_audio`); n_clips is the number of
            clips found.

        Returns
        -------
        scores : ndarray of shape (n_clips,), float64; higher means more anomalous
        """
        clips = as_clips(clips)
        if not self._fitted:
            raise ConfigError(f"{self.name}: detector is not fitted; call fit() first")
        if not clips:
            return np.zeros(0)
        scores = self._score_members(clips) if self._members else self._score(clips)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape != (len(clips),):
            raise SoundwatchError(f"{self.name}: returned {scores.shape} scores for {len(clips)}")
        if not np.isfinite(scores).all():
            raise SoundwatchError(
                f"{self.name}: produced non-finite scores; the model may have diverged"
            )
        return scores

    def score_waveform(self, y: np.ndarray, sr: int) -> float:
        """Anomaly score of one waveform held in memory.

        Parameters
        ----------
        y : ndarray of shape (n_samples,) or (n_samples, n_channels)
            The signal, values nominally in [-1, 1].
        sr : int
            Its sample rate in Hz; it is resampled like a file would be.

        Returns
        -------
        score : float
        """
        from soundwatch.data.inputs import waveform_clip

        with waveform_clip(y, sr) as clip:
            return float(self.score([clip])[0])

    def _score_members(self, clips: list[Clip]) -> np.ndarray:
        """Route clips to their machine ID's model; clips of an unseen ID get the lowest
        score over all ID models, i.e. they are judged by the ID they resemble most."""
        scores = np.empty(len(clips))
        by_id: dict[str | None, list[int]] = {}
        for i, clip in enumerate(clips):
            key = id_key(clip) if id_key(clip) in self._members else None
            by_id.setdefault(key, []).append(i)
        for key, indices in by_id.items():
            subset = [clips[i] for i in indices]
            if key is None:
                all_scores = np.stack([m._score(subset) for m in self._members.values()])
                scores[indices] = all_scores.min(axis=0)
            else:
                scores[indices] = self._members[key]._score(subset)
        return scores

    def anomaly_map(self, clip: Clip) -> np.ndarray | None:
        """Where in time and frequency a clip looks anomalous.

        Parameters
        ----------
        clip : Clip

        Returns
        -------
        anomaly_map : ndarray of shape (n_mels, n_frames), float64, or None
            Per time-frequency contribution to the score (e.g. a squared reconstruction
            error), on the frames of the detector's log-mel spectrogram; NaN where the
            detector makes no claim (e.g. frames no window covers). None when the
            detector cannot localise its score (non-neural and embedding detectors).
        """
        if not self._fitted:
            raise ConfigError(f"{self.name}: detector is not fitted; call fit() first")
        owner: Detector = self
        if self._members:
            key = id_key(clip)
            if key in self._members:
                owner = self._members[key]
            else:  # as in scoring: judged by the ID model that finds it most normal
                owner = min(self._members.values(), key=lambda m: float(m._score([clip])[0]))
        values = owner._anomaly_map(clip)
        if values is None:
            return None
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2:
            raise SoundwatchError(f"{self.name}: anomaly map has shape {values.shape}, not 2-D")
        return values

    def _set_calibration(self, clips: list[Clip], scores: np.ndarray) -> None:
        groups: dict[str, list[float]] = {}
        for clip, value in zip(clips, scores, strict=True):
            # Clips with a domain (DCASE 2021+) are kept per section and domain, so that
            # each domain can get a threshold of its own; the section's pools them.
            key = domain_key(clip.machine_id, clip.domain) or clip.machine_id or POOLED
            groups.setdefault(key, []).append(float(value))
        self.calibration_scores_ = {k: np.asarray(groups[k]) for k in sorted(groups)}

    def _fit_thresholds(self) -> dict[str, float]:
        return fit_thresholds(
            self.calibration_scores_,
            self.threshold_method,
            min_clips=MIN_CLIPS_PER_ID,
            pooled_key=POOLED,
        )

    def refit_threshold(self, method: str) -> Detector:
        """Refit the decision thresholds with another method, without retraining.

        Uses the held-out normal scores stored at fit time (and in the model file).

        Parameters
        ----------
        method : str
            Threshold method spec: ``gamma:Q``, ``percentile:P`` or ``meanstd:K``.

        Returns
        -------
        self

        Raises
        ------
        ConfigError
            Invalid spec, unfitted detector, or a model file from before held-out
            scores were stored.
        """
        if not self._fitted:
            raise ConfigError(f"{self.name}: detector is not fitted; call fit() first")
        parse_threshold_method(method, self.threshold_quantile)  # fail before changing
        if not self.calibration_scores_:
            raise ConfigError(
                f"{self.name}: the model holds no held-out normal scores (written by an "
                "older soundwatch); retrain it to change the threshold method"
            )
        self.threshold = str(method).strip().lower()
        self.thresholds_ = self._fit_thresholds()
        return self

    def threshold_for(self, machine_id: str | None, domain: str | None = None) -> float:
        """Decision threshold for a clip: its section's domain, its machine ID's, else
        the pooled one (see :func:`soundwatch.thresholds.lookup_threshold`)."""
        if self.thresholds_ is None:
            raise ConfigError(f"{self.name}: detector is not fitted")
        _, value = lookup_threshold(self.thresholds_, machine_id, domain)
        if value is None:
            raise ConfigError(f"{self.name}: the model holds no pooled threshold")
        return value

    def threshold_source(self, machine_id: str | None, domain: str | None = None) -> str:
        """Which threshold :meth:`threshold_for` uses, in words: ``section 00, target
        domain``, ``machine ID 00``, ``pooled`` (clip without ID) or ``pooled (no
        threshold for ID 06)``."""
        if self.thresholds_ is None:
            raise ConfigError(f"{self.name}: detector is not fitted")
        return describe_threshold(self.thresholds_, machine_id, domain)

    def decide(self, clips: Sequence[Clip] | str | Path, scores: np.ndarray) -> np.ndarray:
        """Decisions (1 = anomalous) of shape (n_clips,) at the fitted thresholds."""
        clips = as_clips(clips)
        limits = np.array([self.threshold_for(c.machine_id, c.domain) for c in clips])
        return (np.asarray(scores) > limits).astype(int)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted detector to one model file (safetensors + JSON metadata)."""
        path = Path(path)
        if self.thresholds_ is None:
            raise ConfigError(f"{self.name}: fit the detector before saving it")
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} already exists; choose another name or overwrite it")
        tensors, state = self.state()
        metadata = {
            "detector": self.name,
            "params": self.get_params(),
            "state": state,
            "threshold": self._threshold_metadata(),
            "history": self.history_,
            "fit_info": self.fit_info_,
        }
        write_model_file(path, tensors, metadata)
        return path

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The fitted model as (arrays, JSON-serialisable dict), without the threshold.

        With ``per_id``, each machine ID's model is stored under ``id<ID>/``.
        """
        if not self._members:
            return self._get_state()
        tensors: dict[str, np.ndarray] = {}
        states = {}
        for machine_id, member in self._members.items():
            arrays, states[machine_id] = member._get_state()
            tensors.update({f"id{machine_id}/{k}": v for k, v in arrays.items()})
        return tensors, {"members": states}

    @classmethod
    def from_state(
        cls, params: dict[str, Any], tensors: dict[str, np.ndarray], state: dict
    ) -> Detector:
        """Rebuild a fitted detector from :meth:`state`'s output (thresholds not set)."""
        detector = cls(**params)
        if "members" in state and detector.per_id:
            detector._members = {}
            for machine_id, member_state in state["members"].items():
                prefix = f"id{machine_id}/"
                member = cls(**{**params, "per_id": False})
                member._set_state(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                    member_state,
                )
                detector._members[machine_id] = member
        else:
            detector._set_state(tensors, state)
        detector._fitted = True
        return detector

    def _threshold_metadata(self) -> dict:
        method = self.threshold_method
        meta: dict[str, Any] = {"method": method.name}
        if method.name == "gamma":  # the key readers of older model files expect
            meta["quantile"] = method.value
        meta["spec"] = method.spec
        meta["values"] = self.thresholds_
        meta["calibration"] = {
            "source": self.calibration_source_,
            **{k: v for k, v in self.calibration_info_.items() if k != "source"},
            "min_clips_per_id": MIN_CLIPS_PER_ID,
            "scores": {k: v.tolist() for k, v in self.calibration_scores_.items()},
        }
        return meta

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Read a model file written by :meth:`save`; returns the registered detector class."""
        from soundwatch.detectors.registry import DETECTORS

        tensors, metadata = read_model_file(Path(path))
        name = metadata.get("detector")
        if not isinstance(name, str) or name not in DETECTORS:
            raise ModelFileError(f"{path} holds unknown detector {name!r}")
        detector_cls = DETECTORS.get(name)  # imports only that detector's module
        if cls is not Detector and not issubclass(detector_cls, cls):
            raise ModelFileError(f"{path} holds a {name} model, not {cls.name}")
        try:
            detector = detector_cls.from_state(metadata["params"], tensors, metadata["state"])
            threshold = metadata["threshold"]
            detector.thresholds_ = {k: float(v) for k, v in threshold["values"].items()}
            calibration = threshold.get("calibration") or {}
            detector.calibration_scores_ = {
                k: np.asarray(v, dtype=np.float64)
                for k, v in (calibration.get("scores") or {}).items()
            }
            detector.calibration_source_ = calibration.get("source")
            detector.calibration_info_ = {
                k: v for k, v in calibration.items() if k not in ("scores", "min_clips_per_id")
            }
            detector.history_ = metadata.get("history", {})
            detector.fit_info_ = metadata.get("fit_info", {})
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: model state does not match {name} ({exc})") from None
        return detector

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != self.param_spec()[k].default}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"
