"""ROC-AUC and partial AUC (pAUC) per machine ID, as scored in DCASE 2020 Task 2.

The official DCASE evaluator computes both numbers with scikit-learn's ``roc_auc_score``;
pAUC uses ``max_fpr=0.1`` and is therefore McClish-standardised, i.e. rescaled so that a
random detector scores 0.5 and a perfect one 1.0 (raw pAUC over ``[0, max_fpr]`` is mapped
by ``0.5 * (1 + (raw - min_area) / (max_area - min_area))`` with
``min_area = max_fpr**2 / 2`` and ``max_area = max_fpr``). We call sklearn directly so the
numbers match the official ones bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError

logger = logging.getLogger(__name__)

#: Machine ID given to every clip when no clip carries one (single-machine data sets).
DEFAULT_MACHINE_ID = "00"


@dataclass
class IdResult:
    """Scores of one machine ID.

    Attributes
    ----------
    machine_id : str
        Two-digit machine ID such as ``"00"``.
    auc : float
        ROC-AUC, in [0, 1].
    pauc : float
        McClish-standardised partial AUC over FPR in ``[0, max_fpr]``.
    n_normal : int
        Number of normal clips scored.
    n_anomaly : int
        Number of anomalous clips scored.
    """

    machine_id: str
    auc: float
    pauc: float
    n_normal: int
    n_anomaly: int


def _as_scores(scores: np.ndarray, n: int | None = None) -> np.ndarray:
    """Return ``scores`` as a finite 1-D float array, or raise ConfigError."""
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 1:
        raise ConfigError(f"anomaly scores must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ConfigError(f"got {arr.shape[0]} anomaly scores for {n} clips")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ConfigError(
            f"anomaly scores contain {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {int(np.flatnonzero(bad)[0])})"
        )
    return arr


def auc_pauc(
    is_anomaly: np.ndarray, scores: np.ndarray, max_fpr: float = 0.1
) -> tuple[float, float]:
    """ROC-AUC and McClish-standardised pAUC, as the DCASE evaluator computes them.

    Parameters
    ----------
    is_anomaly : array-like of shape (n_clips,)
        True (or 1) for anomalous clips, False (or 0) for normal ones.
    scores : array-like of shape (n_clips,)
        Anomaly scores; higher means more anomalous.
    max_fpr : float, default=0.1
        Upper end of the false-positive-rate range of the partial AUC, in (0, 1].

    Returns
    -------
    auc : float
        ``roc_auc_score(is_anomaly, scores)``.
    pauc : float
        ``roc_auc_score(is_anomaly, scores, max_fpr=max_fpr)``.

    Raises
    ------
    ConfigError
        If the arrays differ in length, labels are not binary, only one class is
        present, scores contain NaN or infinity, or ``max_fpr`` is out of range.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ConfigError(f"max_fpr must be in (0, 1], got {max_fpr}")
    y = np.asarray(is_anomaly)
    if y.ndim != 1:
        raise ConfigError(f"is_anomaly must be a 1-D array, got shape {y.shape}")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ConfigError("is_anomaly must hold only True/False or 1/0")
        y = y.astype(bool)
    s = _as_scores(scores, n=y.shape[0])
    n_anomaly = int(y.sum())
    n_normal = int(y.shape[0] - n_anomaly)
    if n_anomaly == 0 or n_normal == 0:
        raise ConfigError(
            "AUC needs both normal and anomalous clips, "
            f"got {n_normal} normal and {n_anomaly} anomalous"
        )
    auc = float(roc_auc_score(y, s))
    pauc = float(roc_auc_score(y, s, max_fpr=max_fpr))
    return auc, pauc


def machine_ids(clips: Sequence[Clip]) -> list[str]:
    """Machine ID of every clip, with the all-unknown case mapped to ``"00"``.

    A data set with no IDs at all (one machine) is treated as a single machine ``"00"``
    so that it still gets the usual ``..._id_00.csv`` files. A mix of known and unknown
    IDs is refused: silently pooling the unknown clips into some ID would distort that
    ID's metrics.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips

    Returns
    -------
    ids : list of str of length n_clips

    Raises
    ------
    ConfigError
        If some clips have a machine ID and others do not.
    """
    missing = [c for c in clips if c.machine_id is None]
    if not missing:
        return [str(c.machine_id) for c in clips]
    if len(missing) == len(clips):
        return [DEFAULT_MACHINE_ID] * len(clips)
    raise ConfigError(
        f"{len(missing)} of {len(clips)} clips have no machine ID "
        f"(first: {missing[0].path}); cannot group them by machine"
    )


def evaluate_by_id(
    clips: Sequence[Clip], scores: np.ndarray, max_fpr: float = 0.1
) -> list[IdResult]:
    """AUC and pAUC of each machine ID, from labelled clips.

    Unlabelled clips (``label is None``, e.g. evaluation data) are ignored. A machine ID
    whose labelled clips lack either normal or anomalous ones has no defined AUC and is
    skipped (logged at INFO level); it does not appear in the result.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips
        Clips in the same order as ``scores``. Machine IDs follow :func:`machine_ids`.
    scores : array-like of shape (n_clips,)
        Anomaly scores; higher means more anomalous.
    max_fpr : float, default=0.1
        Upper end of the FPR range of the partial AUC.

    Returns
    -------
    results : list of IdResult
        One per evaluable machine ID, sorted by ID.

    Raises
    ------
    ConfigError
        If lengths differ, scores of an evaluated ID are not finite, IDs are partly
        missing, or no machine ID has both normal and anomalous clips.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or s.shape[0] != len(clips):
        raise ConfigError(f"got anomaly scores of shape {s.shape} for {len(clips)} clips")
    ids = machine_ids(clips)
    groups: dict[str, list[int]] = {}
    for i, (clip, mid) in enumerate(zip(clips, ids, strict=True)):
        if clip.label is not None:
            groups.setdefault(mid, []).append(i)

    results = []
    for mid in sorted(groups):
        idx = np.asarray(groups[mid])
        y = np.array([clips[i].is_anomaly for i in idx], dtype=bool)
        n_anomaly = int(y.sum())
        n_normal = int(y.size - n_anomaly)
        if n_anomaly == 0 or n_normal == 0:
            logger.info(
                "machine id %s skipped: %d normal and %d anomalous clips",
                mid,
                n_normal,
                n_anomaly,
            )
            continue
        auc, pauc = auc_pauc(y, s[idx], max_fpr=max_fpr)
        results.append(IdResult(mid, auc, pauc, n_normal, n_anomaly))

    if not results:
        n_labelled = sum(len(v) for v in groups.values())
        raise ConfigError(
            f"nothing to evaluate: no machine ID among {n_labelled} labelled clips "
            "has both normal and anomalous clips"
        )
    return results


def _safe_hmean(values: np.ndarray) -> float:
    # The harmonic mean of values containing 0 is 0 (its limit); scipy would warn.
    if (values <= 0).any():
        return 0.0
    return float(hmean(values))


def mean_scores(results: Sequence[IdResult]) -> dict[str, float]:
    """Arithmetic and harmonic means of AUC and pAUC over machine IDs.

    DCASE 2020 ranks by the arithmetic mean; later editions use the harmonic mean, which
    punishes one badly detected machine more.

    Parameters
    ----------
    results : sequence of IdResult, non-empty

    Returns
    -------
    means : dict
        Keys ``mean_auc``, ``mean_pauc``, ``hmean_auc``, ``hmean_pauc`` (floats). A
        harmonic mean over values that include 0 is 0.0.

    Raises
    ------
    ConfigError
        If ``results`` is empty.
    """
    if not results:
        raise ConfigError("cannot average AUC over zero machine IDs")
    auc = np.array([r.auc for r in results], dtype=float)
    pauc = np.array([r.pauc for r in results], dtype=float)
    return {
        "mean_auc": float(auc.mean()),
        "mean_pauc": float(pauc.mean()),
        "hmean_auc": _safe_hmean(auc),
        "hmean_pauc": _safe_hmean(pauc),
    }


def evaluate_by_kind(
    clips: Sequence[Clip],
    scores: np.ndarray,
    kinds: Sequence[str | None],
    max_fpr: float = 0.1,
) -> dict[str, dict]:
    """Mean AUC and pAUC over machine IDs of each anomaly kind against the normal clips.

    For kind k, every machine ID's normal test clips are ranked against that ID's
    anomalies of kind k only, as :func:`evaluate_by_id` does for all anomalies, and
    the results are averaged over IDs. Which kinds a detector misses is what tells
    methods apart on a synthetic benchmark.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips
    scores : array-like of shape (n_clips,)
    kinds : sequence of str or None of length n_clips
        Anomaly kind of each anomalous clip; None where unknown (and for normal clips).

    Returns
    -------
    dict
        ``{kind: {"auc", "pauc", "n_anomaly"}}``, kinds sorted; empty when no kind is
        known.
    """
    s = np.asarray(scores, dtype=float)
    if len(kinds) != len(clips):
        raise ConfigError(f"got {len(kinds)} anomaly kinds for {len(clips)} clips")
    normal = [i for i, c in enumerate(clips) if c.label is not None and not c.is_anomaly]
    out = {}
    for kind in sorted({k for k in kinds if k is not None}):
        anomalous = [i for i, k in enumerate(kinds) if k == kind and clips[i].is_anomaly]
        idx = normal + anomalous
        try:
            means = mean_scores(evaluate_by_id([clips[i] for i in idx], s[idx], max_fpr))
        except ConfigError:  # no ID has both normals and this kind
            continue
        out[kind] = {
            "auc": means["mean_auc"],
            "pauc": means["mean_pauc"],
            "n_anomaly": len(anomalous),
        }
    return out


def _decision_counts(is_anomaly: np.ndarray, flagged: np.ndarray) -> dict:
    tp = int(np.sum(flagged & is_anomaly))
    fp = int(np.sum(flagged & ~is_anomaly))
    fn = int(np.sum(~flagged & is_anomaly))
    tn = int(np.sum(~flagged & ~is_anomaly))
    return {
        # None where undefined (nothing flagged, no anomalies, no normals): JSON null.
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def decision_metrics(
    clips: Sequence[Clip], scores: np.ndarray, thresholds: dict[str, float]
) -> dict:
    """Precision, recall and false-positive rate of the 0/1 decisions at the thresholds.

    AUC and pAUC rank scores; these say whether the decisions a user acts on are right.
    A clip's threshold is its machine ID's (as :func:`machine_ids` assigns it), else the
    pooled ``thresholds["all"]``, as in the ``decision_result_*.csv`` files.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips
        Unlabelled clips are ignored.
    scores : array-like of shape (n_clips,)
    thresholds : dict of str to float
        Per machine ID and/or ``"all"``.

    Returns
    -------
    dict
        ``{"overall": {...}, "per_id": {id: {...}}}``, each with ``precision``,
        ``recall``, ``fpr`` (float or None where undefined) and the counts ``tp``,
        ``fp``, ``tn``, ``fn``.
    """
    s = _as_scores(scores, len(clips))
    ids = machine_ids(clips)
    limits = np.array([thresholds.get(mid, thresholds.get("all", np.inf)) for mid in ids])
    labelled = np.array([c.label is not None for c in clips], dtype=bool)
    is_anomaly = np.array([bool(c.is_anomaly) for c in clips], dtype=bool)
    flagged = s > limits
    per_id = {}
    for mid in sorted(set(ids)):
        idx = np.array([i for i, m in enumerate(ids) if m == mid and labelled[i]], dtype=int)
        if idx.size:
            per_id[mid] = _decision_counts(is_anomaly[idx], flagged[idx])
    return {
        "overall": _decision_counts(is_anomaly[labelled], flagged[labelled]),
        "per_id": per_id,
    }
