"""Score fusion of several registered detectors, calibrated on held-out normals only."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector, holdout_split
from soundwatch.detectors.params import Param
from soundwatch.detectors.registry import get, register
from soundwatch.errors import ConfigError, ModelFileError, SoundwatchError
from soundwatch.thresholds import MIN_CLIPS_PER_ID, POOLED

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("zscore", "rank")
# Member parameters the ensemble sets itself: a member must split the training clips
# exactly as the ensemble does, or its training clips would leak into the held-out
# normals that calibrate the fusion. A cross-fitting member would train on all clips.
SHARED_PARAMS = ("seed", "validation_fraction", "calibration")


def parse_members(text: str) -> list[str]:
    """Comma-separated registered detector names, each at most once, not ``ensemble``."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError("ensemble: parameter members is empty")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"ensemble: member(s) listed twice: {', '.join(duplicates)}")
    if EnsembleDetector.name in names:
        raise ConfigError("ensemble: an ensemble cannot be a member of an ensemble")
    for name in names:
        get(name)  # ConfigError naming the known detectors
    return names


def parse_weights(text: str, n_members: int) -> np.ndarray:
    """Fusion weights of shape (n_members,): comma-separated non-negative numbers with a
    positive sum, or equal weights for an empty string."""
    if not str(text).strip():
        return np.full(n_members, 1.0 / n_members)
    try:
        weights = np.array([float(w) for w in str(text).split(",")])
    except ValueError:
        raise ConfigError(
            f"ensemble: weights expects comma-separated numbers, got {text!r}"
        ) from None
    if len(weights) != n_members:
        raise ConfigError(f"ensemble: {len(weights)} weights given for {n_members} members")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError(
            f"ensemble: weights must be finite, non-negative and not all zero, got {text!r}"
        )
    return weights / weights.sum()


def parse_member_params(text: str, members: list[str]) -> dict[str, dict[str, str]]:
    """Route ``"det.key=value;det.key=value"`` to the members, as strings per member."""
    routed: dict[str, dict[str, str]] = {name: {} for name in members}
    for item in str(text).split(";"):
        if not item.strip():
            continue
        target, sep, value = item.partition("=")
        name, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"ensemble: member_params expects det.key=value, got {item!r}")
        if name not in routed:
            raise ConfigError(
                f"ensemble: member_params names {name!r}, which is not among the members "
                f"({', '.join(members)})"
            )
        if key in SHARED_PARAMS:
            where = "" if key == "calibration" else "; set it on the ensemble"
            raise ConfigError(
                f"ensemble: {key} cannot be set per member{where}, so that every member "
                "holds out the same training normals"
            )
        routed[name][key] = value.strip()
    return routed


def zscore(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(scores - mean) / std`` with the reference's mean and (population) std.

    A constant reference has no spread; a floor relative to its level keeps the result
    finite (scores equal to the reference then map to 0).
    """
    mean, std = float(reference.mean()), float(reference.std())
    return (scores - mean) / max(std, 1e-9 * (abs(mean) + 1.0))


def ecdf_rank(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Empirical CDF position of each score among the reference scores, in [0, 1].

    Ties count half (mid-rank), so a score equal to the only reference value maps to 0.5.
    Every score above the largest reference maps to 1: ``rank`` cannot order clips
    beyond the most anomalous-looking held-out normal.
    """
    ref = np.sort(reference)
    below = np.searchsorted(ref, scores, side="left")
    at_or_below = np.searchsorted(ref, scores, side="right")
    return (below + at_or_below) / (2.0 * len(ref))


@register
class EnsembleDetector(Detector):
    """Weighted mean of standardised scores of several registered detectors.

    Every member (``members``, comma-separated registry names; default
    ``id-classifier,logmel-mahalanobis``) is fitted on the same training clips with its
    own parameters, set per member with ``member_params`` (``"det.key=value;..."``,
    e.g. ``id-classifier.epochs=10;logmel-mahalanobis.per_id=false``). Members inherit
    the ensemble's ``seed`` and ``validation_fraction`` and use
    ``calibration=held-out``, so each holds out exactly the ensemble's held-out normals
    and never trains on them (a cross-fitting member would train on all clips).
    Member scores are then put on one scale with the held-out normals' scores only (no
    test labels): ``normalize=zscore`` subtracts their mean and divides by their
    standard deviation, ``rank`` replaces a score by its empirical CDF position among
    them (in [0, 1]; every score beyond the largest held-out normal maps to 1). The
    statistics are per machine ID when it has at least 8 held-out clips, else pooled
    over IDs (logged; 10 training clips per ID hold out one per ID). With
    ``validation_fraction=0`` there is no held-out split and the training clips' scores
    are used instead, which understates the spread of a member that fits its training
    clips closely.
    The fused score is the weighted mean of the normalised member scores; ``weights``
    (comma-separated, one per member, non-negative) default to equal weights.
    The ensemble itself is one model for the machine type (``per_id`` must stay false);
    members decide per ID for themselves (``logmel-mahalanobis`` does by default).
    The model file holds every member's state (tensors under ``member<i>/``) and
    parameters, and the held-out reference scores (under ``reference<i>/<ID>``).
    """

    name = "ensemble"
    params = {
        "members": Param("id-classifier,logmel-mahalanobis", "comma-separated detector names"),
        "member_params": Param("", "member parameters as 'det.key=value;det.key=value'"),
        "normalize": Param("zscore", "score normalisation", choices=NORMALIZATIONS),
        "weights": Param("", "comma-separated member weights (empty = equal)"),
        "per_id": Param(False, "must be false: members have their own per_id"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.per_id:
            raise ConfigError(
                "ensemble: per_id=true is not supported; set per_id on the members instead "
                "(e.g. member_params=logmel-mahalanobis.per_id=true)"
            )
        names = parse_members(self.members)
        self.weights_ = parse_weights(self.weights, len(names))
        routed = parse_member_params(self.member_params, names)
        shared = {"seed": self.seed, "validation_fraction": self.validation_fraction}
        shared["calibration"] = "held-out"
        self.members_: list[Detector] = [get(name)(**{**routed[name], **shared}) for name in names]
        self.references_: list[dict[str, np.ndarray]] = []

    # ----------------------------------------------------------------- helpers
    def _references(self, clips: list[Clip], scores: np.ndarray) -> dict[str, np.ndarray]:
        """Reference scores, pooled and per machine ID with enough clips."""
        ids = [c.machine_id or "" for c in clips]
        refs = {POOLED: np.sort(scores)}
        for machine_id in sorted(set(ids) - {""}):
            mask = np.array([i == machine_id for i in ids])
            # As for thresholds: an ID needs this many held-out normals for statistics
            # of its own, else it takes the pooled ones.
            if mask.sum() >= MIN_CLIPS_PER_ID:
                refs[machine_id] = np.sort(scores[mask])
        return refs

    def normalized_scores(self, clips: list[Clip]) -> np.ndarray:
        """Normalised member scores, shape (n_clips, n_members)."""
        transform = zscore if self.normalize == "zscore" else ecdf_rank
        keys = [c.machine_id or POOLED for c in clips]
        out = np.empty((len(clips), len(self.members_)))
        for j, (member, refs) in enumerate(zip(self.members_, self.references_, strict=True)):
            raw = member.score(clips)
            groups: dict[str, list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(key if key in refs else POOLED, []).append(i)
            for key, rows in groups.items():
                out[rows, j] = transform(raw[rows], refs[key])
        return out

    @staticmethod
    def _check_same_split(member: Detector, clips: list[Clip], valid: list[Clip]) -> None:
        # Guards the premise of _fit against a change of the split logic in the base class.
        held_out = holdout_split(clips, member.validation_fraction, member.seed)[1]
        if {c.path for c in held_out} != {c.path for c in valid}:
            raise SoundwatchError(
                f"ensemble: member {member.name} held out other clips than the ensemble"
            )

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        reference = valid or train
        self.references_ = []
        self.history_ = {}
        for i, member in enumerate(self.members_):
            # Same clips, seed and fraction: the member's own hold-out is ``valid``.
            member.fit(train + valid)
            self._check_same_split(member, train + valid, valid)
            self.references_.append(self._references(reference, member.score(reference)))
            self.history_[f"member{i}:{member.name}"] = member.history_
        pooled = sorted(
            {c.machine_id for c in reference if c.machine_id} - set(self.references_[0])
        )
        if pooled:
            logger.warning(
                "%s: machine ID(s) %s have fewer than %d held-out normals; their member scores "
                "are standardised on all %d held-out normals pooled over IDs",
                self.name,
                ", ".join(pooled),
                MIN_CLIPS_PER_ID,
                len(reference),
            )

    def _score(self, clips: list[Clip]) -> np.ndarray:
        return self.normalized_scores(clips) @ self.weights_

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors: dict[str, np.ndarray] = {}
        states = []
        for i, (member, refs) in enumerate(zip(self.members_, self.references_, strict=True)):
            arrays, state = member.state()
            tensors.update({f"member{i}/{k}": v for k, v in arrays.items()})
            tensors.update({f"reference{i}/{key}": v for key, v in refs.items()})
            states.append(
                {
                    "detector": member.name,
                    "params": member.get_params(),
                    "state": state,
                    "thresholds": member.thresholds_,
                    "reference_keys": list(refs),
                }
            )
        return tensors, {"member_states": states}

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        entries = state["member_states"]
        if [e["detector"] for e in entries] != [m.name for m in self.members_]:
            raise ModelFileError("ensemble: stored members differ from parameter members")
        self.members_, self.references_ = [], []
        for i, entry in enumerate(entries):
            prefix = f"member{i}/"
            member = get(entry["detector"]).from_state(
                entry["params"],
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                entry["state"],
            )
            member.thresholds_ = {k: float(v) for k, v in (entry["thresholds"] or {}).items()}
            self.members_.append(member)
            self.references_.append(
                {key: np.asarray(tensors[f"reference{i}/{key}"]) for key in entry["reference_keys"]}
            )
