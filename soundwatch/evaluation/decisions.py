"""Decisions at a threshold: their metrics, whether they can be trusted, and oracle
operating points that need test labels.

AUC says whether scores rank anomalies above normals; a user acts on the decisions at
the threshold. :func:`decision_summary` puts the decisions' precision, recall and
false-positive rate beside the threshold's design rate, and tests whether far more
clips were flagged than the threshold is meant to flag (recordings unlike the ones the
threshold was fitted on).

The detector's own thresholds are fitted on normal training clips only. The operating
points :func:`best_f1_threshold` and :func:`youden_threshold` are chosen *on the
labelled test clips*, so they are upper bounds for comparison, never deployable
thresholds; reports label them "oracle (uses test labels)".

Throughout, a clip is decided anomalous when ``score > threshold``, as in
:func:`soundwatch.thresholds.decide`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError
from soundwatch.evaluation.metrics import machine_ids
from soundwatch.thresholds import ThresholdMethod, clip_thresholds, design_rate, drift_check
from soundwatch.validation import check_array, check_labels_scores


@dataclass(frozen=True)
class BinaryMetrics:
    """Confusion counts and the usual ratios; the anomalous class is positive.

    A ratio whose denominator is zero (e.g. precision when nothing is flagged) is 0.0,
    as scikit-learn's ``zero_division=0``.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """True-positive rate: share of anomalous clips flagged."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def fpr(self) -> float:
        """False-positive rate: share of normal clips flagged."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    def as_dict(self) -> dict:
        """Precision, recall and FPR (None where undefined: JSON null) and the counts."""
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        return {
            "precision": self.precision if tp + fp else None,
            "recall": self.recall if tp + fn else None,
            "fpr": self.fpr if fp + tn else None,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        }

    def __add__(self, other: BinaryMetrics) -> BinaryMetrics:
        # Pooling counts over machine IDs gives micro-averaged ratios.
        return BinaryMetrics(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )


def binary_metrics(is_anomaly: np.ndarray, decisions: np.ndarray) -> BinaryMetrics:
    """Confusion counts of 0/1 decisions against labels.

    Parameters
    ----------
    is_anomaly : array-like of bool, shape (n_clips,)
    decisions : array-like of 0/1, shape (n_clips,)

    Returns
    -------
    metrics : BinaryMetrics

    Examples
    --------
    >>> binary_metrics([True, True, False, False], [1, 0, 1, 0]).f1
    0.5
    """
    y = np.asarray(is_anomaly, dtype=bool).reshape(-1)
    d = np.asarray(decisions).reshape(-1).astype(bool)
    if y.shape != d.shape:
        raise ConfigError(f"got {d.size} decisions for {y.size} labels")
    return BinaryMetrics(
        tp=int(np.sum(y & d)),
        fp=int(np.sum(~y & d)),
        tn=int(np.sum(~y & ~d)),
        fn=int(np.sum(y & ~d)),
    )


def metrics_at(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float) -> BinaryMetrics:
    """:func:`binary_metrics` of the decisions ``scores > threshold``."""
    y, s = check_labels_scores(is_anomaly, scores)
    return binary_metrics(y, s > threshold)


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every threshold that splits the scores differently, ascending.

    Midpoints between consecutive distinct scores, plus one just below the lowest
    (everything flagged) and the highest score itself (nothing flagged), so a
    threshold reads as a value between the clips it separates.
    """
    u = np.unique(np.asarray(scores, dtype=float))
    if u.size == 0:
        raise ConfigError("no scores to place a threshold between")
    return np.concatenate([[np.nextafter(u[0], -np.inf)], (u[:-1] + u[1:]) / 2, [u[-1]]])


def _sweep(is_anomaly: np.ndarray, scores: np.ndarray) -> tuple:
    """Candidate thresholds with the true- and false-positive counts above each."""
    y, s = check_labels_scores(is_anomaly, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"an oracle threshold needs normal and anomalous clips, got {n_neg} and {n_pos}"
        )
    t = candidate_thresholds(s)
    # Clips above t: total minus those at or below (searchsorted right on sorted scores).
    tp = n_pos - np.searchsorted(np.sort(s[y]), t, side="right")
    fp = n_neg - np.searchsorted(np.sort(s[~y]), t, side="right")
    return t, tp, fp, n_pos, n_neg


def best_f1_threshold(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """Oracle: the threshold with the highest F1 on these labelled clips.

    Ties go to the lowest such threshold. Uses the labels, so it is an upper bound for
    comparison only.

    Parameters
    ----------
    is_anomaly : array-like of bool, shape (n_clips,)
    scores : array-like of shape (n_clips,)

    Returns
    -------
    threshold : float
        Decide anomalous where ``score > threshold``.

    Examples
    --------
    >>> best_f1_threshold([False, False, True, True], [0.1, 0.2, 0.3, 0.4])
    0.25
    """
    t, tp, fp, n_pos, _ = _sweep(is_anomaly, scores)
    f1 = 2 * tp / (n_pos + tp + fp)  # 2TP / (2TP + FP + FN) with FN = n_pos - TP
    return float(t[int(np.argmax(f1))])


def youden_threshold(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """Oracle: the threshold maximising Youden's J = TPR - FPR on these labelled clips.

    Ties go to the lowest such threshold. Uses the labels, so it is an upper bound for
    comparison only.

    Parameters
    ----------
    is_anomaly : array-like of bool, shape (n_clips,)
    scores : array-like of shape (n_clips,)

    Returns
    -------
    threshold : float
        Decide anomalous where ``score > threshold``.

    Examples
    --------
    >>> youden_threshold([False, False, True, False, True], [0.1, 0.2, 0.3, 0.4, 0.5])
    0.25
    """
    t, tp, fp, n_pos, n_neg = _sweep(is_anomaly, scores)
    j = tp / n_pos - fp / n_neg
    return float(t[int(np.argmax(j))])


def roc_points(is_anomaly: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of the ROC curve, each of shape (n_points,)."""
    y, s = check_labels_scores(is_anomaly, scores)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def decision_metrics(
    clips: Sequence[Clip], scores: np.ndarray, thresholds: dict[str, float]
) -> dict:
    """Precision, recall and false-positive rate of the 0/1 decisions at the thresholds.

    AUC and pAUC rank scores; these say whether the decisions a user acts on are right.
    A clip's threshold is its section's domain's, else its machine ID's (as
    :func:`machine_ids` assigns it), else the pooled ``thresholds["all"]``
    (:func:`~soundwatch.thresholds.lookup_threshold`), as in the ``decision_result_*.csv``
    files.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips
        Unlabelled clips are ignored.
    scores : array-like of shape (n_clips,)
    thresholds : dict of str to float
        Per machine ID, per section and domain and/or ``"all"``.

    Returns
    -------
    dict
        ``{"overall": {...}, "per_id": {id: {...}}}``, each with ``precision``,
        ``recall``, ``fpr`` (float or None where undefined) and the counts ``tp``,
        ``fp``, ``tn``, ``fn``.
    """
    s = check_array(scores, "anomaly scores", n=len(clips))
    ids = machine_ids(clips)
    limits = np.nan_to_num(clip_thresholds(thresholds, ids, clips), nan=np.inf)
    labelled = np.array([c.label is not None for c in clips], dtype=bool)
    is_anomaly = np.array([bool(c.is_anomaly) for c in clips], dtype=bool)
    flagged = s > limits
    per_id = {}
    for mid in sorted(set(ids)):
        idx = np.array([i for i, m in enumerate(ids) if m == mid and labelled[i]], dtype=int)
        if idx.size:
            per_id[mid] = binary_metrics(is_anomaly[idx], flagged[idx]).as_dict()
    return {
        "overall": binary_metrics(is_anomaly[labelled], flagged[labelled]).as_dict(),
        "per_id": per_id,
    }


def decision_summary(
    clips: Sequence[Clip],
    scores: np.ndarray,
    thresholds: Mapping[str, float],
    method: ThresholdMethod,
) -> dict:
    """Decision metrics and drift check of one scored batch, for ``result.json``.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips
    scores : array-like of shape (n_clips,)
    thresholds : mapping of str to float
        Per machine ID and ``"all"``.
    method : ThresholdMethod
        The thresholds' method, which sets the design rate.

    Returns
    -------
    dict
        ``design_rate`` (float), ``decisions`` (see
        :func:`decision_metrics`) and ``drift``: the
        binomial check on the normal clips when any are labelled, else on all clips,
        with ``on`` (``"normal clips"`` or ``"clips"``), ``n_flagged``, ``n_clips``,
        ``p_value``, ``drifting`` and ``message`` (the one-line warning, or None).
    """
    thresholds = dict(thresholds)
    rate = design_rate(method)
    s = np.asarray(scores, dtype=float)
    ids = machine_ids(clips)
    limits = np.nan_to_num(clip_thresholds(thresholds, ids, clips), nan=np.inf)
    normal = np.array([c.label is not None and not c.is_anomaly for c in clips], dtype=bool)
    on = "normal clips" if normal.any() else "clips"
    flagged = (s > limits)[normal] if normal.any() else s > limits
    check = drift_check(flagged, rate)
    return {
        "design_rate": rate,
        "decisions": decision_metrics(clips, s, thresholds),
        "drift": {
            "on": on,
            "n_flagged": check.n_flagged,
            "n_clips": check.n_clips,
            "p_value": check.p_value,
            "drifting": check.drifting,
            "message": check.message(on) if check.drifting else None,
        },
    }


def unusable_decisions(result: Mapping) -> str | None:
    """A sentence saying why a run's decisions cannot be trusted, or None.

    Reads the ``design_rate``, ``decisions`` and ``drift`` entries of a ``result.json``
    (absent in results of older soundwatch versions: then None).
    """
    drift = result.get("drift") or {}
    overall = (result.get("decisions") or {}).get("overall") or {}
    rate = result.get("design_rate")
    if not drift.get("drifting") or rate is None:
        return None
    fpr = overall.get("fpr")
    if drift.get("on") == "normal clips" and fpr is not None:
        what = (
            f"the threshold flags {fpr:.0%} of the normal test clips ({overall['fp']} of "
            f"{overall['fp'] + overall['tn']}), where it was meant to flag {rate:.0%}"
        )
    else:
        what = (
            f"{drift['n_flagged']} of {drift['n_clips']} clips are above the threshold, "
            f"which is meant to flag {rate:.0%} of normal clips"
        )
    return (
        f"Decisions are unusable as they stand: {what}. The test recordings differ from "
        "those the threshold was fitted on; refit it on normal clips of these conditions "
        "(--calibrate-on DIR) or set it with --threshold. The AUC, which ranks scores, "
        "is not affected."
    )
