"""Decision thresholds: turn anomaly scores into 0/1 decisions.

Every method sees only anomaly scores of normal clips (the held-out training normals),
never test labels:

- ``gamma:Q`` (the default, ``Q = 0.9``) follows the DCASE 2021 Task 2 baseline: fit a
  gamma distribution to the scores and take its ``Q`` quantile;
- ``percentile:P`` takes the empirical ``P``-th percentile of the scores;
- ``meanstd:K`` takes the mean plus ``K`` sample standard deviations.

:func:`fit_threshold` dispatches on such a method spec; :func:`fit_thresholds` fits one
threshold per machine ID (when it has enough scores) and a pooled one, and for DCASE
2021+ clips also one per section and domain (key ``"00/target"``).
:func:`lookup_threshold` is the one place that picks a clip's threshold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from soundwatch.errors import ConfigError
from soundwatch.validation import check_array

# Offset, in units of the scores' standard deviation, that keeps the smallest shifted
# score strictly positive (see gamma_threshold).
_MARGIN = 1e-3


def gamma_threshold(scores: np.ndarray, quantile: float = 0.9) -> float:
    """Decision threshold: the ``quantile`` of a gamma distribution fitted to the scores.

    Scores are first standardised as ``z = (scores - min) / std + margin`` (margin =
    1e-3) and a three-parameter gamma is fitted to ``z`` with ``scipy.stats.gamma.fit``;
    its ``ppf(quantile)`` is mapped back to score units. Why: a gamma lives on
    ``(loc, inf)`` and scipy's fit starts from guesses and uses tolerances in absolute
    units that suit positive values of order one. Raw scores can be negative
    (negative log-likelihoods), tiny (1e-6) or huge, where the fit goes astray or fails;
    the shift to a strictly positive minimum and the scaling make it depend only on the
    shape of the score distribution. Since ``loc`` is free, the shift does not change the
    fitted model, only the numerics.

    When the three-parameter fit degenerates (``loc`` at the smallest score with shape
    below 1, a J-shaped density that one outlier can produce and whose upper quantiles
    lie inside the bulk of the scores), the gamma is refitted with ``loc`` fixed just
    below the smallest score.

    Falls back to the empirical quantile (``numpy.quantile``) when there are fewer than
    3 scores, all scores are equal, the fit raises, or it yields non-finite values.
    The result is deterministic (no random state is involved).

    Parameters
    ----------
    scores : array-like of shape (n_clips,)
        Anomaly scores of normal clips (higher means more anomalous).
    quantile : float, default=0.9
        Quantile of the fitted distribution to return, in (0, 1).

    Returns
    -------
    threshold : float

    Raises
    ------
    ConfigError
        If ``quantile`` is not in (0, 1), ``scores`` is empty, not 1-D, or not finite.
    """
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"threshold quantile must be in (0, 1), got {quantile}")
    s = check_array(scores, "scores for the decision threshold")
    if s.size == 0:
        raise ConfigError("cannot fit a decision threshold to zero scores")
    empirical = float(np.quantile(s, quantile))
    if s.size < 3:
        return empirical

    with np.errstate(all="ignore"):
        lo = float(s.min())
        spread = float(np.std(s - lo))
    if not np.isfinite(spread) or spread == 0.0:
        return empirical
    z = (s - lo) / spread + _MARGIN

    try:
        # The fit's optimiser and the ppf may warn on hard data; we check the result.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            shape, loc, scale = stats.gamma.fit(z)
            if shape < 1.0 and loc <= _MARGIN * (1.0 + 1e-6):
                # Degenerate maximum likelihood: loc runs into the smallest score and the
                # density becomes J-shaped, which one large outlier can cause; its upper
                # quantiles then fall inside the bulk of the scores (even below their
                # median). Fit the two-parameter gamma that starts just below the smallest
                # score instead.
                shape, loc, scale = stats.gamma.fit(z, floc=0.0)
            q = float(stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))
    except (ValueError, RuntimeError, ArithmeticError):
        return empirical
    if not np.isfinite([shape, loc, scale, q]).all():
        return empirical
    threshold = lo + (q - _MARGIN) * spread
    return float(threshold) if np.isfinite(threshold) else empirical


def decide(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Binary decisions: 1 (anomaly) where ``score > threshold``, else 0 (normal).

    Parameters
    ----------
    scores : array-like of shape (n_clips,)
    threshold : float or array-like of shape (n_clips,)
        One threshold, or each clip's (see :func:`clip_thresholds`).

    Returns
    -------
    decisions : ndarray of shape (n_clips,), dtype int

    Raises
    ------
    ConfigError
        If ``threshold`` or any score is NaN or infinite.
    """
    if not np.all(np.isfinite(threshold)):
        raise ConfigError(f"decision threshold must be finite, got {threshold}")
    s = check_array(scores, "anomaly scores")
    if np.ndim(threshold) and np.shape(threshold) != s.shape:
        raise ConfigError(f"{np.size(threshold)} thresholds for {s.size} anomaly scores")
    return (s > threshold).astype(int)


def percentile_threshold(scores: np.ndarray, percentile: float = 95.0) -> float:
    """Decision threshold: the empirical ``percentile`` of the scores.

    Uses ``numpy.percentile`` with linear interpolation between order statistics, so
    with few scores the threshold lies between two observed scores. No distribution is
    assumed, which makes it robust to odd score shapes but coarse on small samples: with
    20 held-out clips the 95th percentile is set by the top one or two of them.

    Parameters
    ----------
    scores : array-like of shape (n_clips,)
        Anomaly scores of normal clips (higher means more anomalous).
    percentile : float, default=95.0
        Percentile in (0, 100).

    Returns
    -------
    threshold : float

    Raises
    ------
    ConfigError
        If ``percentile`` is not in (0, 100), or ``scores`` is empty, not 1-D, or not
        finite.

    Examples
    --------
    >>> percentile_threshold(np.arange(101.0), 95)
    95.0
    """
    if not 0.0 < percentile < 100.0:
        raise ConfigError(f"threshold percentile must be in (0, 100), got {percentile}")
    s = check_array(scores, "scores for the decision threshold")
    if s.size == 0:
        raise ConfigError("cannot fit a decision threshold to zero scores")
    return float(np.percentile(s, percentile))


def meanstd_threshold(scores: np.ndarray, k: float = 3.0) -> float:
    """Decision threshold: ``mean + k * std`` of the scores.

    ``std`` is the sample standard deviation (``ddof=1``): held-out sets are small (tens
    of clips), where the population formula would understate the spread. A single score
    has no spread and gives ``mean`` itself. Assumes roughly symmetric scores; for
    skewed ones (squared errors, distances) :func:`gamma_threshold` fits better.

    Parameters
    ----------
    scores : array-like of shape (n_clips,)
        Anomaly scores of normal clips (higher means more anomalous).
    k : float, default=3.0
        Number of standard deviations above the mean; may be negative or zero.

    Returns
    -------
    threshold : float

    Raises
    ------
    ConfigError
        If ``k`` is not finite, or ``scores`` is empty, not 1-D, or not finite.

    Examples
    --------
    >>> meanstd_threshold(np.array([1.0, 2.0, 3.0]), 2.0)
    4.0
    """
    if not math.isfinite(k):
        raise ConfigError(f"threshold k (standard deviations) must be finite, got {k}")
    s = check_array(scores, "scores for the decision threshold")
    if s.size == 0:
        raise ConfigError("cannot fit a decision threshold to zero scores")
    std = float(np.std(s, ddof=1)) if s.size > 1 else 0.0
    return float(np.mean(s) + k * std)


@dataclass(frozen=True)
class ThresholdMethod:
    """A parsed threshold method spec such as ``gamma:0.9``.

    Attributes
    ----------
    name : str
        ``"gamma"``, ``"percentile"`` or ``"meanstd"``.
    value : float
        The method's parameter: gamma quantile, percentile, or number of standard
        deviations.
    """

    name: str
    value: float

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"gamma:0.9"`` or ``"percentile:95"``."""
        return f"{self.name}:{self.value:g}"

    @property
    def description(self) -> str:
        """What the threshold is, in words."""
        if self.name == "gamma":
            return f"the {self.value:g} quantile of a gamma distribution fitted to the scores"
        if self.name == "percentile":
            return f"the empirical {self.value:g}th percentile of the scores"
        return f"the mean plus {self.value:g} standard deviations of the scores"

    def fit(self, scores: np.ndarray) -> float:
        """The threshold of this method for ``scores`` of normal clips."""
        function = {
            "gamma": gamma_threshold,
            "percentile": percentile_threshold,
            "meanstd": meanstd_threshold,
        }[self.name]
        return function(scores, self.value)


#: Key of the threshold and calibration scores pooled over every machine ID; clips
#: without an ID are calibrated and judged with the pooled threshold.
POOLED = "all"
#: Fewest held-out scores for a threshold of a machine ID's own (else the pooled one):
#: a distribution fitted to a handful of scores is unreliable.
MIN_CLIPS_PER_ID = 8
#: Separator of a section-and-domain threshold key such as ``"00/target"``.
DOMAIN_SEP = "/"
#: Default parameter of each method when a spec gives only the name.
THRESHOLD_DEFAULTS: dict[str, float] = {"gamma": 0.9, "percentile": 95.0, "meanstd": 3.0}
#: The method specs that reports compare.
COMPARED_METHODS: tuple[str, ...] = ("gamma:0.9", "percentile:95", "meanstd:3")
_SPEC_HELP = "gamma:Q (0 < Q < 1), percentile:P (0 < P < 100) or meanstd:K (K finite)"


def parse_threshold_method(spec: str, default_quantile: float | None = None) -> ThresholdMethod:
    """Parse and validate a threshold method spec.

    Parameters
    ----------
    spec : str
        ``NAME`` or ``NAME:VALUE`` with NAME one of ``gamma`` (VALUE a quantile in
        (0, 1), default 0.9), ``percentile`` (in (0, 100), default 95) or ``meanstd``
        (standard deviations above the mean, default 3). Case and surrounding spaces
        are ignored.
    default_quantile : float, optional
        Quantile of a bare ``gamma`` instead of 0.9 (a detector's
        ``threshold_quantile``).

    Returns
    -------
    method : ThresholdMethod

    Raises
    ------
    ConfigError
        One line naming the bad spec and the valid forms.

    Examples
    --------
    >>> parse_threshold_method("percentile:99").spec
    'percentile:99'
    >>> parse_threshold_method("gamma").value
    0.9
    """
    text = str(spec).strip().lower()
    name, sep, value_text = text.partition(":")
    name = name.strip()
    if name not in THRESHOLD_DEFAULTS:
        raise ConfigError(f"unknown threshold method {spec!r}; use {_SPEC_HELP}")
    if not sep:
        value = THRESHOLD_DEFAULTS[name]
        if name == "gamma" and default_quantile is not None:
            value = float(default_quantile)
    else:
        try:
            value = float(value_text)
        except ValueError:
            raise ConfigError(
                f"threshold method {spec!r}: {value_text.strip()!r} is not a number; "
                f"use {_SPEC_HELP}"
            ) from None
    valid = {
        "gamma": 0.0 < value < 1.0,
        "percentile": 0.0 < value < 100.0,
        "meanstd": math.isfinite(value),
    }[name]
    if not valid:
        raise ConfigError(f"threshold method {spec!r} is out of range; use {_SPEC_HELP}")
    return ThresholdMethod(name, value)


def fit_threshold(scores: np.ndarray, method_spec: str | ThresholdMethod = "gamma:0.9") -> float:
    """Decision threshold of normal-clip scores by a method spec.

    Parameters
    ----------
    scores : array-like of shape (n_clips,)
        Anomaly scores of normal clips (higher means more anomalous).
    method_spec : str or ThresholdMethod, default="gamma:0.9"
        ``gamma:Q``, ``percentile:P`` or ``meanstd:K``; see
        :func:`parse_threshold_method`.

    Returns
    -------
    threshold : float

    Raises
    ------
    ConfigError
        If the spec is invalid, or ``scores`` is empty, not 1-D, or not finite.

    Examples
    --------
    >>> fit_threshold(np.array([1.0, 2.0, 3.0]), "meanstd:1")
    3.0
    """
    method = (
        method_spec
        if isinstance(method_spec, ThresholdMethod)
        else parse_threshold_method(method_spec)
    )
    return method.fit(scores)


def domain_key(machine_id: str | None, domain: str | None) -> str | None:
    """Threshold key of a section's domain, e.g. ``"00/target"``; None without either.

    Examples
    --------
    >>> domain_key("00", "target")
    '00/target'
    >>> domain_key("00", None) is None
    True
    """
    if not machine_id or not domain:
        return None
    return f"{machine_id}{DOMAIN_SEP}{domain}"


def fit_thresholds(
    scores_by_id: Mapping[str, np.ndarray],
    method_spec: str | ThresholdMethod = "gamma:0.9",
    min_clips: int = MIN_CLIPS_PER_ID,
    pooled_key: str = POOLED,
) -> dict[str, float]:
    """Pooled, per-machine-ID and per-(section, domain) thresholds of normal-clip scores.

    Parameters
    ----------
    scores_by_id : mapping of str to array-like
        Scores of normal clips per machine ID, or per section and domain under
        :func:`domain_key` keys (``"00/source"``); a section's threshold pools its
        domains. Clips without an ID are given under ``pooled_key``: they count for the
        pooled threshold only.
    method_spec : str or ThresholdMethod, default="gamma:0.9"
    min_clips : int, default=8
        Fewest scores for a threshold of an ID's (or a domain's) own; groups with fewer
        fall back (see :func:`lookup_threshold`), since a distribution fitted to a
        handful of scores is unreliable.
    pooled_key : str, default="all"

    Returns
    -------
    thresholds : dict of str to float
        ``pooled_key`` (over all scores), then each ID and each section's domain with at
        least ``min_clips`` scores, sorted.

    Raises
    ------
    ConfigError
        As :func:`fit_threshold`, or if there are no scores at all.
    """
    method = (
        method_spec
        if isinstance(method_spec, ThresholdMethod)
        else parse_threshold_method(method_spec)
    )
    arrays = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in scores_by_id.items()}
    pooled = np.concatenate(list(arrays.values())) if arrays else np.zeros(0)
    thresholds = {pooled_key: method.fit(pooled)}
    groups: dict[str, list[np.ndarray]] = {}
    for key, values in arrays.items():
        if key == pooled_key:
            continue
        groups.setdefault(key.split(DOMAIN_SEP, 1)[0], []).append(values)
        if DOMAIN_SEP in key:
            groups.setdefault(key, []).append(values)
    for key in sorted(groups):
        values = np.concatenate(groups[key])
        if values.size >= min_clips:
            thresholds[key] = method.fit(values)
    return thresholds


def lookup_threshold(
    thresholds: Mapping[str, float], machine_id: str | None, domain: str | None = None
) -> tuple[str | None, float | None]:
    """The threshold a clip is judged by, and its key.

    Order: the section's domain (``"00/target"``), else the machine ID's (section's),
    else the pooled one.

    Parameters
    ----------
    thresholds : mapping of str to float
        As :func:`fit_thresholds` returns.
    machine_id : str or None
        The clip's machine ID (its section for DCASE 2021+).
    domain : str or None
        ``"source"``, ``"target"`` or None.

    Returns
    -------
    key : str or None
        The key used; None when not even a pooled threshold exists.
    threshold : float or None

    Examples
    --------
    >>> lookup_threshold({"all": 1.0, "00": 2.0}, "00", "target")
    ('00', 2.0)
    """
    for key in (domain_key(machine_id, domain), machine_id or None, POOLED):
        if key is not None and key in thresholds:
            return key, float(thresholds[key])
    return None, None


def clip_thresholds(
    thresholds: Mapping[str, float], ids: Sequence[str | None], clips: Sequence
) -> np.ndarray:
    """:func:`lookup_threshold` for each clip, shape (n_clips,); NaN where none applies.

    Parameters
    ----------
    thresholds : mapping of str to float
    ids : sequence of str or None of length n_clips
        Each clip's machine ID as the caller assigns it.
    clips : sequence of Clip of length n_clips
        Their ``domain`` selects a section's domain threshold.
    """
    values = [
        lookup_threshold(thresholds, machine_id, getattr(clip, "domain", None))[1]
        for machine_id, clip in zip(ids, clips, strict=True)
    ]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def describe_threshold(
    thresholds: Mapping[str, float], machine_id: str | None, domain: str | None = None
) -> str:
    """In words, which threshold :func:`lookup_threshold` picks.

    ``section 00, target domain``; ``machine ID 00`` (with ``(no threshold for its
    target domain)`` when the clip has a domain); ``pooled (no threshold for ID 06)``;
    ``pooled`` for a clip without ID.
    """
    key, _ = lookup_threshold(thresholds, machine_id, domain)
    if key is not None and key == domain_key(machine_id, domain):
        return f"section {machine_id}, {domain} domain"
    if machine_id and key == machine_id:
        if domain:
            return f"machine ID {machine_id} (no threshold for its {domain} domain)"
        return f"machine ID {machine_id}"
    if machine_id:
        return f"pooled (no threshold for ID {machine_id})"
    return "pooled"


def design_rate(method: ThresholdMethod) -> float:
    """Fraction of normal clips a threshold of ``method`` is meant to flag.

    ``gamma:Q`` flags ``1 - Q``, ``percentile:P`` flags ``1 - P / 100``, and
    ``meanstd:K`` the upper tail of a normal distribution above ``K`` standard
    deviations.

    Examples
    --------
    >>> round(design_rate(parse_threshold_method("gamma:0.9")), 6)
    0.1
    """
    if method.name == "gamma":
        return 1.0 - method.value
    if method.name == "percentile":
        return 1.0 - method.value / 100.0
    return float(stats.norm.sf(method.value))


#: A batch is drifting when it flags at least this many times the design rate...
DRIFT_RATIO = 3.0
#: ...and a one-sided binomial test at the design rate rejects at this level.
DRIFT_P_VALUE = 0.01


@dataclass(frozen=True)
class DriftCheck:
    """Whether a batch flags far more clips than a threshold's design rate.

    Attributes
    ----------
    n_flagged, n_clips : int
    design_rate : float
    p_value : float
        One-sided binomial test of ``n_flagged`` against ``design_rate``.
    drifting : bool
        ``n_flagged / n_clips >= DRIFT_RATIO * design_rate`` and ``p_value < DRIFT_P_VALUE``.
    """

    n_flagged: int
    n_clips: int
    design_rate: float
    p_value: float
    drifting: bool

    @property
    def rate(self) -> float:
        """Flagged fraction of the batch."""
        return self.n_flagged / self.n_clips if self.n_clips else 0.0

    def message(self, what: str = "clips") -> str:
        """The one-line warning (whether or not the batch is drifting)."""
        return (
            f"warning: {self.n_flagged} of {self.n_clips} {what} ({self.rate:.0%}) are above "
            f"the threshold, which is meant to flag {self.design_rate:.0%} of normal clips "
            f"(binomial p = {self.p_value:.2g}); the recordings may differ from the "
            "training data (another day, microphone or load): refit the threshold on normal "
            "clips of these conditions with --calibrate-on DIR, or set it with --threshold"
        )


def drift_check(
    decisions: np.ndarray,
    rate: float,
    *,
    ratio: float = DRIFT_RATIO,
    alpha: float = DRIFT_P_VALUE,
) -> DriftCheck:
    """Test whether far more of a batch is flagged than a threshold's design rate.

    Parameters
    ----------
    decisions : array-like of shape (n_clips,)
        0/1 decisions of a batch (all clips, or the normal clips of a labelled test set).
    rate : float
        The design rate, e.g. :func:`design_rate` of the threshold method.
    ratio : float, default=3
        Fewest multiples of ``rate`` that count as drift.
    alpha : float, default=0.01
        Level of the one-sided binomial test.

    Returns
    -------
    DriftCheck

    Examples
    --------
    >>> drift_check(np.ones(20), 0.1).drifting
    True
    >>> drift_check(np.r_[np.ones(2), np.zeros(18)], 0.1).drifting
    False
    """
    flags = np.asarray(decisions).reshape(-1).astype(bool)
    n, k = int(flags.size), int(flags.sum())
    if n == 0:
        return DriftCheck(0, 0, float(rate), 1.0, False)
    p_value = float(stats.binomtest(k, n, min(max(rate, 1e-12), 1.0), alternative="greater").pvalue)
    drifting = k / n >= ratio * rate and p_value < alpha
    return DriftCheck(k, n, float(rate), p_value, bool(drifting))
