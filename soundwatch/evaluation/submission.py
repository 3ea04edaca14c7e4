"""Writers of the DCASE 2020 Task 2 output files, and a text table for the console.

Per machine ID the challenge expects ``anomaly_score_<type>_id_<XX>.csv`` (rows
``filename,score``) and, since 2021, ``decision_result_<type>_id_<XX>.csv`` (rows
``filename,0|1``); neither has a header. ``result.csv`` follows the 2020 baseline's layout
and ``result.json`` holds the same numbers for programs.

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), as UTF-8 with ``\\n`` line endings, so a crash never leaves a half-written
file that a scorer would read as complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError
from soundwatch.evaluation.metrics import (
    IdResult,
    evaluate_by_id,
    machine_ids,
    mean_scores,
)
from soundwatch.fileio import atomic_write_text
from soundwatch.thresholds import clip_thresholds, decide
from soundwatch.validation import check_array

_MEAN_KEYS = ("mean_auc", "mean_pauc", "hmean_auc", "hmean_pauc")
_SCHEMA_KEYS = frozenset(
    ("machine_type", "detector", "per_id", *_MEAN_KEYS, "fit_seconds", "score_seconds")
)


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def _check_name(value: str, what: str) -> str:
    """Refuse names that would escape the output folder or give odd file names."""
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or any(ch in value for ch in ("/", "\\", "\0"))
    ):
        raise ConfigError(f"{what} {value!r} cannot be used in a file name")
    return value


def _basenames(filenames: Sequence[str | os.PathLike], n: int, what: str) -> list[str]:
    if len(filenames) != n:
        raise ConfigError(f"got {len(filenames)} file names for {n} {what}")
    return [Path(f).name for f in filenames]


#: The per-machine-ID files of a submission: file-name prefix -> what its rows hold.
ID_FILES: dict[str, str] = {"anomaly_score": "anomaly scores", "decision_result": "decisions"}


def id_file_path(out_dir: str | os.PathLike, kind: str, machine_type: str, machine_id: str) -> Path:
    """Path of ``<kind>_<machine_type>_id_<machine_id>.csv`` in ``out_dir``.

    ``kind`` is a key of :data:`ID_FILES`: ``"anomaly_score"`` or ``"decision_result"``.
    """
    if kind not in ID_FILES:
        raise ConfigError(f"unknown submission file kind {kind!r}; known: {', '.join(ID_FILES)}")
    _check_name(machine_type, "machine type")
    _check_name(machine_id, "machine id")
    return Path(out_dir) / f"{kind}_{machine_type}_id_{machine_id}.csv"


def write_id_file(
    out_dir: str | os.PathLike,
    kind: str,
    machine_type: str,
    machine_id: str,
    filenames: Sequence[str | os.PathLike],
    values: np.ndarray,
) -> Path:
    """Write one machine ID's ``<kind>_<type>_id_<XX>.csv``: rows ``filename,value``, no header.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing).
    kind : {"anomaly_score", "decision_result"}
        ``anomaly_score``: finite anomaly scores, written with full float precision;
        ``decision_result``: decisions 0 (normal) or 1 (anomaly), e.g. from
        :func:`~soundwatch.thresholds.decide`.
    machine_type : str
        For example ``"fan"``.
    machine_id : str
        For example ``"00"``.
    filenames : sequence of str or path-like of length n_clips
        Clip files; only their base names are written.
    values : array-like of shape (n_clips,)
        Scores or decisions, as ``kind`` says.

    Returns
    -------
    path : Path
        The file written.
    """
    path = id_file_path(out_dir, kind, machine_type, machine_id)
    if kind == "anomaly_score":
        cells = [float(v) for v in check_array(values, "anomaly scores")]
    else:
        d = np.asarray(values)
        if d.ndim != 1 or not np.isin(d, (0, 1)).all():
            raise ConfigError("decisions must be a 1-D array of 0 and 1")
        cells = [int(v) for v in d]
    names = _basenames(filenames, len(cells), ID_FILES[kind])
    atomic_write_text(path, _csv_text(zip(names, cells, strict=True)))
    return path


def write_result_csv(
    path: str | os.PathLike,
    machine_type: str,
    results: Sequence[IdResult],
    means: Mapping[str, float],
) -> Path:
    """Write ``result.csv`` in the DCASE 2020 baseline's layout, plus a harmonic mean row.

    Layout (floats at full precision)::

        fan
        id,AUC,pAUC
        00,0.93,0.71
        ...
        Average,<mean_auc>,<mean_pauc>
        Harmonic mean,<hmean_auc>,<hmean_pauc>
        <empty line>

    Parameters
    ----------
    path : path-like
        File to write (its folder is created if missing).
    machine_type : str
    results : sequence of IdResult
    means : mapping
        As returned by :func:`~soundwatch.evaluation.metrics.mean_scores`.

    Returns
    -------
    path : Path
    """
    rows: list[list[object]] = [[machine_type], ["id", "AUC", "pAUC"]]
    rows += [[r.machine_id, float(r.auc), float(r.pauc)] for r in results]
    rows.append(["Average", float(means["mean_auc"]), float(means["mean_pauc"])])
    rows.append(["Harmonic mean", float(means["hmean_auc"]), float(means["hmean_pauc"])])
    rows.append([])
    path = Path(path)
    atomic_write_text(path, _csv_text(rows))
    return path


def _json_default(obj: object) -> object:
    # Let numpy scalars and arrays, and paths, from `extra` through.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def result_payload(
    machine_type: str,
    detector: str,
    results: Sequence[IdResult],
    means: Mapping[str, float] | None,
    fit_seconds: float,
    score_seconds: float,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """The dict that :func:`write_result_json` writes (see there for the schema)."""
    payload: dict = {
        "machine_type": machine_type,
        "detector": detector,
        "per_id": [
            {
                "id": r.machine_id,
                "auc": float(r.auc),
                "pauc": float(r.pauc),
                "n_normal": int(r.n_normal),
                "n_anomaly": int(r.n_anomaly),
            }
            for r in results
        ],
    }
    for key in _MEAN_KEYS:
        payload[key] = None if means is None else float(means[key])
    payload["fit_seconds"] = float(fit_seconds)
    payload["score_seconds"] = float(score_seconds)
    if extra:
        clash = sorted(_SCHEMA_KEYS.intersection(extra))
        if clash:
            raise ConfigError(f"extra result keys clash with the result schema: {clash}")
        payload.update(extra)
    return payload


def write_result_json(
    path: str | os.PathLike,
    machine_type: str,
    detector: str,
    results: Sequence[IdResult],
    means: Mapping[str, float] | None,
    fit_seconds: float,
    score_seconds: float,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """Write ``result.json``.

    Schema, in this key order, then the keys of ``extra``::

        {"machine_type": str, "detector": str,
         "per_id": [{"id": "00", "auc": float, "pauc": float,
                     "n_normal": int, "n_anomaly": int}, ...],
         "mean_auc": float, "mean_pauc": float, "hmean_auc": float, "hmean_pauc": float,
         "fit_seconds": float, "score_seconds": float}

    The four means are ``null`` when ``means`` is None (no labelled data).

    Parameters
    ----------
    path : path-like
        File to write (its folder is created if missing).
    machine_type : str
    detector : str
        Detector name.
    results : sequence of IdResult
    means : mapping or None
        As returned by :func:`~soundwatch.evaluation.metrics.mean_scores`.
    fit_seconds, score_seconds : float
        Wall-clock time of training and of scoring.
    extra : mapping, optional
        JSON-serialisable items appended after the schema keys; they may not reuse a
        schema key.

    Returns
    -------
    payload : dict
        What was written.

    Raises
    ------
    ConfigError
        If ``extra`` clashes with the schema, or a value is NaN/infinite or not
        serialisable.
    """
    payload = result_payload(
        machine_type, detector, results, means, fit_seconds, score_seconds, extra
    )
    try:
        # allow_nan=False: NaN/Infinity are not valid JSON and would break readers.
        text = json.dumps(payload, indent=2, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot write {Path(path).name}: {exc}") from None
    atomic_write_text(Path(path), text + "\n")
    return payload


def write_submission(
    out_dir: str | os.PathLike,
    machine_type: str,
    detector_name: str,
    clips: Sequence[Clip],
    scores: np.ndarray,
    thresholds: Mapping[str, float],
    fit_seconds: float,
    score_seconds: float,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """Write all output files of one machine type and return the result dict.

    For every machine ID: ``anomaly_score_<type>_id_<XX>.csv`` and
    ``decision_result_<type>_id_<XX>.csv`` (also for unlabelled evaluation clips). The
    threshold of an ID is ``thresholds[id]``, else ``thresholds["all"]``. When some clips
    are labelled, per-ID AUC/pAUC go to ``result.csv`` and ``result.json``; otherwise only
    ``result.json`` is written, with an empty ``per_id`` and null means.

    Machine IDs follow :func:`~soundwatch.evaluation.metrics.machine_ids`: if no clip has
    an ID they all get ``"00"``; a mix of clips with and without ID is an error. All
    checks and metrics run before the first file is written.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created if missing).
    machine_type : str
        Used in the file names and result files.
    detector_name : str
    clips : sequence of Clip of length n_clips
        Clip file names in the CSVs are ``clip.path.name``.
    scores : array-like of shape (n_clips,)
        Finite anomaly scores, in the order of ``clips``.
    thresholds : mapping of str to float
        Decision threshold per machine ID and/or under ``"all"``.
    fit_seconds, score_seconds : float
        Wall-clock time of training and of scoring.
    extra : mapping, optional
        Extra items for ``result.json``.

    Returns
    -------
    result : dict
        The ``result.json`` payload.

    Raises
    ------
    ConfigError
        No clips, scores of the wrong length or not finite, machine IDs partly missing,
        a machine ID without threshold, or labelled clips of which no ID has both classes.
    """
    if not clips:
        raise ConfigError("no clips to write a submission for")
    s = check_array(scores, "anomaly scores", n=len(clips), items="clips")
    _check_name(machine_type, "machine type")
    ids = machine_ids(clips)
    groups: dict[str, list[int]] = {}
    for i, mid in enumerate(ids):
        groups.setdefault(_check_name(mid, "machine id"), []).append(i)

    limits = clip_thresholds(thresholds, ids, clips)
    for mid in groups:
        idx = groups[mid]
        if np.isnan(limits[idx]).any():
            raise ConfigError(f"no decision threshold for machine id {mid} (nor for 'all')")
        if not np.isfinite(limits[idx]).all():
            t = limits[idx][~np.isfinite(limits[idx])][0]
            raise ConfigError(f"decision threshold for machine id {mid} is {t}")

    results: list[IdResult] = []
    means = None
    if any(c.label is not None for c in clips):
        results = evaluate_by_id(clips, s)
        means = mean_scores(results)

    out = Path(out_dir)
    for mid in sorted(groups):
        idx = groups[mid]
        names = [clips[i].path.name for i in idx]
        write_id_file(out, "anomaly_score", machine_type, mid, names, s[idx])
        decisions = decide(s[idx], limits[idx])
        write_id_file(out, "decision_result", machine_type, mid, names, decisions)
    if means is not None:
        write_result_csv(out / "result.csv", machine_type, results, means)
    return write_result_json(
        out / "result.json",
        machine_type,
        detector_name,
        results,
        means,
        fit_seconds,
        score_seconds,
        extra,
    )


def format_table(results: Sequence[IdResult], means: Mapping[str, float] | None) -> str:
    """Fixed-width text table of per-ID results and their means, for the console.

    Parameters
    ----------
    results : sequence of IdResult
    means : mapping or None
        As returned by :func:`~soundwatch.evaluation.metrics.mean_scores`; the mean rows
        are left out when None.

    Returns
    -------
    table : str
        Lines joined by ``\\n``, no trailing newline. For example::

            id                AUC    pAUC  n_normal  n_anomaly
            --------------------------------------------------
            00             0.9300  0.7100       100         50
            Average        0.9300  0.7100
            Harmonic mean  0.9300  0.7100
    """
    labels = [r.machine_id for r in results] + ["Average", "Harmonic mean"]
    w = max(len(x) for x in labels) + 2
    header = f"{'id':<{w}}{'AUC':>6}{'pAUC':>8}{'n_normal':>10}{'n_anomaly':>11}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.machine_id:<{w}}{r.auc:>6.4f}{r.pauc:>8.4f}{r.n_normal:>10d}{r.n_anomaly:>11d}"
        )
    if means is not None:
        lines.append(f"{'Average':<{w}}{means['mean_auc']:>6.4f}{means['mean_pauc']:>8.4f}")
        lines.append(f"{'Harmonic mean':<{w}}{means['hmean_auc']:>6.4f}{means['hmean_pauc']:>8.4f}")
    return "\n".join(lines)
