"""Official DCASE Task 2 metrics, scores and submission files, per challenge year.

What each year's official evaluator computes (from the evaluators' published READMEs
and result layouts; numbers here are computed with scikit-learn's ``roc_auc_score``
like theirs, ``max_fpr=0.1`` for pAUC, and harmonic means over values floored at
``sys.float_info.epsilon`` as they do):

* **dcase2020** (github.com/y-kawagu/dcase2020_task2_evaluator): per machine type and
  machine ID, AUC and pAUC of all normal against all anomalous test clips; the result
  file gives each machine type's arithmetic ``Average`` over IDs. That evaluator defines
  no single score pooled over machine types, so none is reported here.
* **dcase2021** (github.com/y-kawagu/dcase2021_task2_evaluator): per machine type,
  section and domain, AUC and pAUC of that domain's normals against that domain's
  anomalies (``source_test`` and ``target_test`` are scored separately), and harmonic
  means of AUC and of pAUC "over all machine types, sections, and domains". The
  ``official_score`` reported here for 2021 is the harmonic mean of all those AUC and
  pAUC values together (the rule of 2022-2025 applied to 2021's per-domain values); the
  2021 ranking itself is defined in the task description (arXiv 2106.04492), which could
  not be checked against a stored copy, so compare 2021 rankings on ``hmean_auc`` and
  ``hmean_pauc``, which are the evaluator's own figures.
* **dcase2022** (github.com/Kota-Dohi/dcase2022_evaluator) and **dcase2023, dcase2024,
  dcase2025** (github.com/nttcslab/dcase2023_task2_evaluator, ..._2024_..., ..._2025_...):
  per machine type and section, AUC (source) of source normals against *all* anomalies
  of the section, AUC (target) of target normals against all anomalies, and one pAUC over
  all clips of the section (both domains pooled). The official score is the harmonic mean
  of {AUC (source), AUC (target), pAUC} over all machine types and sections.

Submission files (no header, rows ``file_name,value``): 2020
``anomaly_score_<type>_id_<XX>.csv``; 2021
``anomaly_score_<type>_section_<XX>_<source|target>_test.csv`` and
``decision_result_<type>_section_<XX>_<source|target>_test.csv``; 2022-2025
``anomaly_score_<type>_section_<XX>_test.csv`` and
``decision_result_<type>_section_<XX>_test.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError, DatasetError
from soundwatch.evaluation.dcase_protocols import DOMAINS, check_protocol
from soundwatch.evaluation.metrics import evaluate_by_id, machine_ids, mean_scores
from soundwatch.evaluation.submission import write_result_json
from soundwatch.fileio import atomic_write_text
from soundwatch.thresholds import clip_thresholds, decide
from soundwatch.validation import check_array

logger = logging.getLogger(__name__)

MAX_FPR = 0.1
_SUBMISSION_KINDS = ("anomaly_score", "decision_result")


@dataclass
class SectionResult:
    """Official metrics of one machine type and section (None where undefined).

    Attributes
    ----------
    machine_type, section : str
    auc_source, auc_target : float or None
        2021: the domain's normals against the domain's anomalies. 2022+: the domain's
        normals against all anomalies of the section.
    pauc : float or None
        2022+: pAUC over all clips of the section (both domains).
    pauc_source, pauc_target : float or None
        2021: pAUC within each domain.
    auc_all : float or None
        2022+: AUC over all clips of the section (the evaluators' "AUC (all)").
    n_normal_source, n_normal_target, n_anomaly_source, n_anomaly_target : int
        Labelled clips scored.
    """

    machine_type: str
    section: str
    auc_source: float | None = None
    auc_target: float | None = None
    pauc: float | None = None
    pauc_source: float | None = None
    pauc_target: float | None = None
    auc_all: float | None = None
    n_normal_source: int = 0
    n_normal_target: int = 0
    n_anomaly_source: int = 0
    n_anomaly_target: int = 0

    def official_values(self, protocol: str) -> dict[str, float | None]:
        """The values of this section that enter the year's official score."""
        if protocol == "dcase2021":
            keys = ("auc_source", "auc_target", "pauc_source", "pauc_target")
        else:
            keys = ("auc_source", "auc_target", "pauc")
        return {k: getattr(self, k) for k in keys}


def _auc(y: np.ndarray, s: np.ndarray, max_fpr: float | None = None) -> float | None:
    if y.all() or not y.any():  # one class only: undefined
        return None
    return float(roc_auc_score(y, s, max_fpr=max_fpr))


def section_results(
    clips: Sequence[Clip],
    scores: np.ndarray,
    protocol: str,
    machine_type: str | None = None,
    max_fpr: float = MAX_FPR,
) -> list[SectionResult]:
    """Official per-section metrics of the labelled clips, for a 2021+ protocol.

    Parameters
    ----------
    clips : sequence of Clip of length n_clips
        Unlabelled clips are ignored. Labelled clips need a section and a domain.
    scores : array-like of shape (n_clips,)
        Anomaly scores; higher means more anomalous.
    protocol : str
        ``dcase2021`` ... ``dcase2025``.
    machine_type : str, optional
        Used when a clip does not name its machine type.
    max_fpr : float, default=0.1

    Returns
    -------
    list of SectionResult
        One per (machine type, section) with labelled clips, sorted.

    Raises
    ------
    ConfigError
        Unknown or 2020 protocol, lengths differ, non-finite scores, or a labelled clip
        without section or domain.
    """
    check_protocol(protocol)
    if protocol == "dcase2020":
        raise ConfigError("dcase2020 scores per machine ID, not per section and domain")
    s = check_array(scores, "anomaly scores", n=len(clips), items="clips")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, clip in enumerate(clips):
        if clip.label is None:
            continue
        if clip.machine_id is None or clip.domain not in DOMAINS:
            raise ConfigError(
                f"{protocol} needs the section and domain of every labelled clip; "
                f"{Path(clip.path).name} has section {clip.machine_id} and domain {clip.domain}"
            )
        key = (clip.machine_type or machine_type or "-", clip.machine_id)
        groups.setdefault(key, []).append(i)

    results = []
    for (mtype, section), idx in sorted(groups.items()):
        sub = [clips[i] for i in idx]
        y = np.array([c.is_anomaly for c in sub], dtype=bool)
        dom = np.array([c.domain for c in sub])
        ss = s[idx]
        r = SectionResult(mtype, section)
        for d in DOMAINS:
            setattr(r, f"n_normal_{d}", int(((dom == d) & ~y).sum()))
            setattr(r, f"n_anomaly_{d}", int(((dom == d) & y).sum()))
            if protocol == "dcase2021":
                keep = dom == d
                setattr(r, f"auc_{d}", _auc(y[keep], ss[keep]))
                setattr(r, f"pauc_{d}", _auc(y[keep], ss[keep], max_fpr))
            else:
                keep = (dom == d) | y
                setattr(r, f"auc_{d}", _auc(y[keep], ss[keep]))
        if protocol != "dcase2021":
            r.auc_all = _auc(y, ss)
            r.pauc = _auc(y, ss, max_fpr)
        results.append(r)
    return results


def _hmean(values: Iterable[float]) -> float:
    # The evaluators floor values at machine epsilon so that a 0 does not break hmean.
    return float(hmean(np.maximum(np.asarray(list(values), dtype=float), sys.float_info.epsilon)))


def official_score(results: Sequence[SectionResult], protocol: str) -> dict:
    """The year's official score and its parts, over all machine types and sections given.

    Returns
    -------
    dict
        ``official_score`` (float, or None with ``missing`` listing the undefined values
        that keep it from being computed), ``hmean_auc`` and ``amean_auc`` (source and
        target AUCs), ``hmean_pauc`` and ``amean_pauc``, ``hmean_auc_source`` and
        ``hmean_auc_target``; each None when one of its values is undefined.
    """
    check_protocol(protocol)
    if protocol == "dcase2020":
        raise ConfigError("dcase2020 has no official score pooled over machine types")
    if not results:
        raise ConfigError("no sections to score")
    pauc_keys = ("pauc_source", "pauc_target") if protocol == "dcase2021" else ("pauc",)
    missing = [
        f"{r.machine_type} section {r.section} {key}"
        for r in results
        for key, value in r.official_values(protocol).items()
        if value is None
    ]

    def collect(keys: Sequence[str]) -> list[float] | None:
        values = [getattr(r, k) for r in results for k in keys]
        return None if any(v is None for v in values) else values

    def summary(values: list[float] | None, mean) -> float | None:
        return None if values is None else mean(values)

    auc = collect(("auc_source", "auc_target"))
    pauc = collect(pauc_keys)
    every = [v for r in results for v in r.official_values(protocol).values()]
    return {
        "official_score": None if missing else _hmean(every),
        "missing": missing,
        "hmean_auc": summary(auc, _hmean),
        "amean_auc": summary(auc, lambda v: float(np.mean(v))),
        "hmean_pauc": summary(pauc, _hmean),
        "amean_pauc": summary(pauc, lambda v: float(np.mean(v))),
        "hmean_auc_source": summary(collect(("auc_source",)), _hmean),
        "hmean_auc_target": summary(collect(("auc_target",)), _hmean),
    }


def submission_file_name(
    protocol: str, kind: str, machine_type: str, section: str, domain: str | None = None
) -> str:
    """Name of one submission CSV of a 2021+ protocol (see the module docstring)."""
    check_protocol(protocol)
    if kind not in _SUBMISSION_KINDS:
        raise ConfigError(f"unknown submission file kind {kind!r}")
    for value, what in ((machine_type, "machine type"), (section, "section")):
        if not value or any(ch in value for ch in "/\\\0") or value in (".", ".."):
            raise ConfigError(f"{what} {value!r} cannot be used in a file name")
    if protocol == "dcase2020":
        raise ConfigError("dcase2020 submission files are per machine ID")
    if protocol == "dcase2021":
        if domain not in DOMAINS:
            raise ConfigError(
                f"dcase2021 writes one file per domain; section {section} has a clip "
                "without domain (names or source_test/target_test folders must say)"
            )
        return f"{kind}_{machine_type}_section_{section}_{domain}_test.csv"
    return f"{kind}_{machine_type}_section_{section}_test.csv"


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _cell(value: float | None) -> object:
    return "" if value is None else float(value)


def result_csv_rows(
    protocol: str, machine_type: str, results: Sequence[SectionResult], score: Mapping
) -> list[list[object]]:
    """Rows of ``result.csv`` in the layout of the year's evaluator, for one machine type."""
    rows: list[list[object]] = [[machine_type]]
    if protocol == "dcase2021":
        rows.append(["section", "domain", "AUC", "pAUC"])
        for d in DOMAINS:
            for r in results:
                rows.append(
                    [r.section, d, _cell(getattr(r, f"auc_{d}")), _cell(getattr(r, f"pauc_{d}"))]
                )
    else:
        rows.append(["section", "AUC (all)", "AUC (source)", "AUC (target)", "pAUC"])
        for r in results:
            rows.append(
                [
                    r.section,
                    _cell(r.auc_all),
                    _cell(r.auc_source),
                    _cell(r.auc_target),
                    _cell(r.pauc),
                ]
            )
        rows.append(["", "", "AUC", "pAUC"])
    rows.append(["arithmetic mean", "", _cell(score["amean_auc"]), _cell(score["amean_pauc"])])
    rows.append(["harmonic mean", "", _cell(score["hmean_auc"]), _cell(score["hmean_pauc"])])
    rows.append([])
    rows.append(["official score", "", _cell(score["official_score"])])
    return rows


def check_clips(protocol: str, machine_type: str, clips: Sequence[Clip]) -> None:
    """Refuse, before any training, test clips that ``protocol`` cannot score or name.

    Raises
    ------
    ConfigError
        For 2021+: a clip without section (or, for 2021, without domain), or a labelled
        clip without domain.
    """
    check_protocol(protocol)
    if protocol == "dcase2020" or not clips:
        return
    if any(c.machine_id is None for c in clips):
        bad = next(c for c in clips if c.machine_id is None)
        raise ConfigError(
            f"{protocol} needs section names (section_XX_...); {Path(bad.path).name} has none"
        )
    for clip in clips:
        submission_file_name(protocol, "anomaly_score", machine_type, clip.machine_id, clip.domain)
        if clip.label is not None and clip.domain not in DOMAINS:
            raise ConfigError(
                f"{protocol} needs the domain of every labelled clip; "
                f"{Path(clip.path).name} names none"
            )


def write_dcase_submission(
    out_dir: str | Path,
    machine_type: str,
    detector_name: str,
    clips: Sequence[Clip],
    scores: np.ndarray,
    thresholds: Mapping[str, float],
    fit_seconds: float,
    score_seconds: float,
    extra: Mapping[str, object] | None = None,
    *,
    protocol: str,
) -> dict:
    """Write one machine type's submission files and results for a 2021+ protocol.

    Writes the year's ``anomaly_score_*`` and ``decision_result_*`` files (also for
    unlabelled evaluation clips) and, when clips are labelled, ``result.csv`` in the
    year's evaluator layout. ``result.json`` holds the usual schema (its ``per_id`` is
    each section's AUC/pAUC over both domains) plus ``protocol``, ``per_section`` (a
    list of :class:`SectionResult` dicts) and ``official`` (see :func:`official_score`;
    None without labels). All checks and metrics run before the first file is written.

    Parameters
    ----------
    out_dir : path-like
    machine_type, detector_name : str
    clips : sequence of Clip of length n_clips
    scores : array-like of shape (n_clips,)
    thresholds : mapping of str to float
        Decision threshold per section, per section and domain (``"00/target"``)
        and/or under ``"all"``; each clip's is picked by
        :func:`~soundwatch.thresholds.lookup_threshold`.
    fit_seconds, score_seconds : float
    extra : mapping, optional
        Extra items for ``result.json``.
    protocol : str
        ``dcase2021`` ... ``dcase2025``.

    Returns
    -------
    dict
        The ``result.json`` payload.
    """
    if protocol == "dcase2020":
        raise ConfigError("use write_submission for dcase2020 (files per machine ID)")
    if not clips:
        raise ConfigError("no clips to write a submission for")
    check_clips(protocol, machine_type, clips)
    s = check_array(scores, "anomaly scores", n=len(clips), items="clips")
    sections = machine_ids(clips)
    files: dict[str, list[int]] = {}
    for i, (clip, section) in enumerate(zip(clips, sections, strict=True)):
        name = submission_file_name(protocol, "anomaly_score", machine_type, section, clip.domain)
        files.setdefault(name, []).append(i)
    limits = clip_thresholds(thresholds, sections, clips)
    for section in sorted(set(sections)):
        idx = [i for i, name in enumerate(sections) if name == section]
        if not np.isfinite(limits[idx]).all():
            raise ConfigError(f"no finite decision threshold for section {section} (nor 'all')")

    per_id, per_section, score = [], [], None
    if any(c.label is not None for c in clips):
        per_id = evaluate_by_id(clips, s)
        per_section = section_results(clips, s, protocol, machine_type)
        score = official_score(per_section, protocol)
        if score["official_score"] is None:
            logger.info(
                "%s: no official %s score; undefined: %s",
                machine_type,
                protocol,
                ", ".join(score["missing"]),
            )

    out = Path(out_dir)
    for name, idx in sorted(files.items()):
        names = [Path(clips[i].path).name for i in idx]
        atomic_write_text(
            out / name, _csv_text(zip(names, (float(v) for v in s[idx]), strict=True))
        )
        decisions = (int(v) for v in decide(s[idx], limits[idx]))
        decision_name = name.replace("anomaly_score_", "decision_result_", 1)
        atomic_write_text(out / decision_name, _csv_text(zip(names, decisions, strict=True)))
    if score is not None:
        atomic_write_text(
            out / "result.csv",
            _csv_text(result_csv_rows(protocol, machine_type, per_section, score)),
        )
    means = mean_scores(per_id) if per_id else None
    return write_result_json(
        out / "result.json",
        machine_type,
        detector_name,
        per_id,
        means,
        fit_seconds,
        score_seconds,
        extra={
            "protocol": protocol,
            "per_section": [asdict(r) for r in per_section],
            "official": score,
            **(extra or {}),
        },
    )


def combine_results(payloads: Sequence[Mapping]) -> dict:
    """Official score over several machine types from their ``result.json`` payloads.

    All payloads must come from the same 2021+ protocol and from different machine types.

    Returns
    -------
    dict
        ``protocol``, ``machine_types`` and the keys of :func:`official_score`.
    """
    if not payloads:
        raise ConfigError("no results to combine")
    protocols = {p.get("protocol") for p in payloads}
    if len(protocols) != 1 or None in protocols:
        raise ConfigError(
            "results to combine must all come from one protocol; found "
            + ", ".join(sorted(str(p) for p in protocols))
        )
    protocol = check_protocol(protocols.pop())
    types = [p.get("machine_type") for p in payloads]
    if len(set(types)) != len(types):
        raise ConfigError(f"machine types given twice: {', '.join(sorted(map(str, types)))}")
    results = []
    for p in payloads:
        if not p.get("per_section"):
            raise ConfigError(f"{p.get('machine_type')}: no labelled results to combine")
        results += [SectionResult(**r) for r in p["per_section"]]
    return {"protocol": protocol, "machine_types": types, **official_score(results, protocol)}


def read_results(result_dirs: Sequence[Path]) -> dict:
    """:func:`combine_results` of the ``result.json`` in each of ``result_dirs``."""
    payloads = []
    for folder in result_dirs:
        path = Path(folder) / "result.json"
        try:
            payloads.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from None
    return combine_results(payloads)


def format_combined(combined: Mapping) -> str:
    """Text lines of :func:`combine_results`: the machine types, the harmonic means and
    the official score, and what keeps an undefined score from being computed."""
    lines = [f"{combined['protocol']}: {', '.join(combined['machine_types'])}"]
    for key in ("hmean_auc_source", "hmean_auc_target", "hmean_pauc", "official_score"):
        value = combined.get(key)
        lines.append(f"{key:<18}{'undefined' if value is None else f'{value:.4f}'}")
    if combined["missing"]:
        lines.append("undefined: " + ", ".join(combined["missing"]))
    return "\n".join(lines)


def format_sections(result: Mapping) -> str:
    """Fixed-width text table of a 2021+ ``result.json``'s sections and official score."""
    protocol = result["protocol"]
    header = f"{'section':<9}{'AUC src':>9}{'AUC tgt':>9}"
    header += f"{'pAUC src':>10}{'pAUC tgt':>10}" if protocol == "dcase2021" else f"{'pAUC':>9}"
    lines = [header, "-" * len(header)]

    def fmt(v: float | None, w: int) -> str:
        return f"{'-':>{w}}" if v is None else f"{v:>{w}.4f}"

    for r in result["per_section"]:
        line = f"{r['section']:<9}{fmt(r['auc_source'], 9)}{fmt(r['auc_target'], 9)}"
        if protocol == "dcase2021":
            line += fmt(r["pauc_source"], 10) + fmt(r["pauc_target"], 10)
        else:
            line += fmt(r["pauc"], 9)
        lines.append(line)
    official = result.get("official") or {}
    value = official.get("official_score")
    if value is None:
        lines.append(
            f"official {protocol} score: undefined ({', '.join(official.get('missing', []))})"
        )
    else:
        lines.append(f"official {protocol} score (harmonic mean): {value:.4f}")
    return "\n".join(lines)
