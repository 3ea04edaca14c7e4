"""How trustworthy a run's 0/1 decisions are: decision metrics and the drift check.

AUC says whether scores rank anomalies above normals; a user acts on the decisions at
the threshold. :func:`decision_summary` puts the decisions' precision, recall and
false-positive rate beside the threshold's design rate, and tests whether far more
clips were flagged than the threshold is meant to flag (recordings unlike the ones the
threshold was fitted on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.evaluation.metrics import decision_metrics, machine_ids
from soundwatch.evaluation.threshold import ThresholdMethod, design_rate, drift_check


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
        :func:`~soundwatch.evaluation.metrics.decision_metrics`) and ``drift``: the
        binomial check on the normal clips when any are labelled, else on all clips,
        with ``on`` (``"normal clips"`` or ``"clips"``), ``n_flagged``, ``n_clips``,
        ``p_value``, ``drifting`` and ``message`` (the one-line warning, or None).
    """
    thresholds = dict(thresholds)
    rate = design_rate(method)
    s = np.asarray(scores, dtype=float)
    ids = machine_ids(clips)
    limits = np.array([thresholds.get(mid, thresholds.get("all", np.inf)) for mid in ids])
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
