"""``soundwatch bench``: evaluate several detectors with one protocol and rank them.

Each detector runs ``soundwatch evaluate`` in its own process, so its peak memory is its
own and a crash in one detector does not lose the others' results. A detector whose
folder holds a ``result.json`` with the same fingerprint (detector, parameters, data
files, soundwatch version; see :mod:`soundwatch.evaluation.fingerprint`) is skipped, so
an interrupted bench resumes where it stopped; one with another fingerprint is rerun.
The leaderboard has a row for every result folder under the bench folder, and its
``settings`` column says which rows were run with other settings than this bench's.

:func:`bench_regimes` runs two regimes: the full training set, and the few-shot regime
of the first N training normals per ID (``OUT/few-shot-N/``), side by side in
``OUT/regimes.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from soundwatch.detectors.registry import create, get, names
from soundwatch.errors import ConfigError
from soundwatch.evaluation.fingerprint import differences, fingerprint
from soundwatch.evaluation.protocol import RESULT_FILE, smallest_id, training_clips
from soundwatch.fileio import atomic_write_text, check_writable

# The ``settings`` column: this bench's settings, or how a row's differ.
SAME_SETTINGS = "same"

COLUMNS = [
    "rank",
    "detector",
    "mean_auc",
    "mean_pauc",
    "hmean_auc",
    "hmean_pauc",
    "fit_seconds",
    "score_seconds",
    "peak_memory_mb",
    "settings",
]


def resolve_detectors(spec: str) -> list[str]:
    """Comma-separated detector names, or ``all`` for every registered detector."""
    if spec.strip() == "all":
        return names()  # imports no detector module
    chosen = [n.strip() for n in spec.split(",") if n.strip()]
    if not chosen:
        raise ConfigError("--detectors is empty")
    for name in chosen:
        get(name)
    return chosen


def split_params(assignments: dict[str, str], detectors: Sequence[str]) -> dict[str, dict]:
    """Route ``det.KEY=VALUE`` to one detector and ``KEY=VALUE`` to every detector that
    has a parameter ``KEY``."""
    per_detector: dict[str, dict] = {name: {} for name in detectors}
    for key, value in assignments.items():
        target, dot, param = key.rpartition(".")
        if dot:
            if target not in per_detector:
                raise ConfigError(f"--param {key}: {target!r} is not among the detectors")
            per_detector[target][param] = value
            continue
        takers = [n for n in detectors if key in get(n).param_spec()]
        if not takers:
            raise ConfigError(f"--param {key}: no chosen detector has parameter {key!r}")
        for name in takers:
            per_detector[name][key] = value
    return per_detector


def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def expected_fingerprint(
    root: Path, machine_type: str, name: str, params: dict, n_train: int | None = None
) -> dict:
    """The fingerprint ``evaluate`` will store for ``name`` with ``params``."""
    return fingerprint(root, machine_type, name, create(name, **params).get_params(), n_train)


def run_one(
    root: Path,
    machine_type: str,
    name: str,
    params: dict,
    out_dir: Path,
    overwrite: bool,
    expected: dict | None = None,
    n_train: int | None = None,
) -> tuple[dict, str]:
    """Evaluate one detector in a child process (on the first ``n_train`` training
    normals per ID, if given), unless ``out_dir`` holds a result with the ``expected``
    fingerprint.

    Returns
    -------
    result : dict
        Its result, or an error record.
    status : str
        ``skipped (same settings)``, ``ran``, ``reran (settings changed: ...)`` or
        ``failed``.
    """
    result_path = out_dir / RESULT_FILE
    old = _read_result(result_path) if result_path.is_file() else None
    changed = differences(old.get("fingerprint"), expected) if old and expected else []
    if old is not None and not overwrite and not changed:
        return old, "skipped (same settings)"
    status = f"reran (settings changed: {', '.join(changed)})" if old and changed else "ran"
    overwrite = overwrite or old is not None
    command = [
        sys.executable,
        "-m",
        "soundwatch",
        "evaluate",
        str(root),
        "--machine",
        machine_type,
        "--detector",
        name,
        "--out",
        str(out_dir),
    ]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    if n_train is not None:
        command += ["--n-train", str(n_train)]
    if overwrite:
        command.append("--overwrite")
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True)
    result = _read_result(result_path) if completed.returncode == 0 else None
    if result is None:
        return {"detector": name, "error": f"exit status {completed.returncode}"}, "failed"
    return result, status


def collect_results(out_dir: Path) -> dict[str, dict]:
    """Every result under a bench folder (``OUT/<folder>/result.json``), by folder name."""
    found = {}
    for path in sorted(Path(out_dir).glob(f"*/{RESULT_FILE}")):
        result = _read_result(path)
        if result is not None and result.get("detector"):
            found[path.parent.name] = result
    return found


def settings_note(result: dict, expected: dict | None) -> str:
    """``same`` when ``result`` has the ``expected`` fingerprint, else how it differs;
    for a folder this bench did not run, how its data and version differ (if at all)."""
    if result.get("error"):
        return ""
    stored = result.get("fingerprint")
    if expected is None:  # a folder of a detector not chosen this time
        return "not in this bench" + (" (no fingerprint)" if not stored else "")
    changed = differences(stored, expected)
    return SAME_SETTINGS if not changed else "differs: " + "; ".join(changed)


def rank(results: list[dict]) -> list[dict]:
    """Leaderboard rows, best mean AUC first; failed detectors last."""
    rows = []
    for result in results:
        row = {key: result.get(key) for key in COLUMNS[1:]}
        row["detector"] = result.get("bench_name") or result.get("detector")
        row["error"] = result.get("error")
        for entry in result.get("per_id", []):
            row[f"auc_id_{entry['id']}"] = entry["auc"]
            row[f"pauc_id_{entry['id']}"] = entry["pauc"]
        for kind, entry in result.get("per_kind", {}).items():
            row[f"auc_kind_{kind}"] = entry["auc"]
        rows.append(row)
    rows.sort(key=lambda r: (r["mean_auc"] is None, -(r["mean_auc"] or 0), r["detector"]))
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_leaderboard(out_dir: Path, machine_type: str, rows: list[dict]) -> list[Path]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.json``.

    Besides :data:`COLUMNS`: the mean AUC of each anomaly kind (``auc_kind_<kind>``,
    synthetic data only), then AUC and pAUC of each machine ID, then any error.
    """
    kind_columns = sorted({k for r in rows for k in r if k.startswith("auc_kind_")})
    id_columns = sorted(
        {k for r in rows for k in r if k.startswith(("auc_id_", "pauc_id_"))},
        key=lambda k: (k.rsplit("_", 1)[1], k.startswith("pauc")),
    )
    columns = COLUMNS + kind_columns + id_columns + ["error"]
    csv_lines = [",".join(columns)] + [",".join(_fmt(r.get(c)) for c in columns) for r in rows]
    md_lines = [
        f"# Leaderboard: {machine_type}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    md_lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    paths = [out_dir / "leaderboard.csv", out_dir / "leaderboard.md", out_dir / "leaderboard.json"]
    atomic_write_text(paths[0], "\n".join(csv_lines) + "\n")
    atomic_write_text(paths[1], "\n".join(md_lines) + "\n")
    atomic_write_text(
        paths[2], json.dumps({"machine_type": machine_type, "rows": rows}, indent=2) + "\n"
    )
    return paths


def bench(
    root: Path,
    machine_type: str,
    detectors: Sequence[str],
    params: dict[str, dict],
    out_dir: Path,
    *,
    overwrite: bool = False,
    n_train: int | None = None,
) -> list[dict]:
    """Evaluate every detector into ``out_dir/<detector>/`` and write the leaderboard.

    Prints one line per detector on stderr as it finishes: its fit time, or that it
    was skipped because its folder holds results of the same settings. The leaderboard
    has a row for every result folder under ``out_dir`` (see :func:`settings_note`).
    ``n_train``: train on the first ``n_train`` normals of each ID only.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(root)
    expected = {
        name: expected_fingerprint(root, machine_type, name, params.get(name, {}), n_train)
        for name in detectors
    }
    fresh: dict[str, dict] = {}
    rows: list[dict] = []
    for i, name in enumerate(detectors, 1):
        result, status = run_one(
            root,
            machine_type,
            name,
            params.get(name, {}),
            out_dir / name,
            overwrite,
            expected[name],
            n_train,
        )
        fresh[name] = result
        print(f"[{i}/{len(detectors)}] {name}: {_outcome(result, status)}", file=sys.stderr)
        # Rewrite after each detector so a long bench shows (and keeps) partial results.
        rows = _board(out_dir, fresh, expected)
        write_leaderboard(out_dir, machine_type, rows)
    return rows


def few_shot_folder(out_dir: Path, n: int) -> Path:
    """Where :func:`bench_regimes` writes the few-shot regime of ``n`` clips per ID."""
    return Path(out_dir) / f"few-shot-{n}"


def bench_regimes(
    root: Path,
    machine_type: str,
    detectors: Sequence[str],
    params: dict[str, dict],
    out_dir: Path,
    *,
    few_shot: int,
    overwrite: bool = False,
) -> tuple[list[dict], list[dict] | None]:
    """:func:`bench` on the full training set into ``out_dir``, then, if ``few_shot``
    is positive, on the first ``few_shot`` normals of each ID into
    :func:`few_shot_folder`; ``out_dir/regimes.md`` puts the two side by side.

    The few-shot regime is skipped, with a line on stderr saying why, when some ID
    has no more than ``few_shot`` training normals (it would repeat the full one).

    Returns
    -------
    full_rows, few_shot_rows : list of dict
        The two leaderboards; ``few_shot_rows`` is None when that regime was skipped.
    """
    if few_shot < 0:
        raise ConfigError(f"--few-shot must be 0 (off) or a number of clips, got {few_shot}")
    few_rows = None
    if few_shot:
        where, smallest = smallest_id(training_clips(root, machine_type))
        if smallest <= few_shot:
            print(
                f"few-shot regime skipped: {where} has {smallest} training normals, "
                f"not more than --few-shot {few_shot}",
                file=sys.stderr,
            )
            few_shot = 0
    full_rows = bench(root, machine_type, detectors, params, out_dir, overwrite=overwrite)
    if few_shot:
        print(f"few-shot regime: the first {few_shot} training normals per ID", file=sys.stderr)
        few_rows = bench(
            root,
            machine_type,
            detectors,
            params,
            few_shot_folder(out_dir, few_shot),
            overwrite=overwrite,
            n_train=few_shot,
        )
        atomic_write_text(
            Path(out_dir) / "regimes.md", regimes_table(machine_type, full_rows, few_rows, few_shot)
        )
    return full_rows, few_rows


def regimes_table(machine_type: str, full: list[dict], few: list[dict], n: int) -> str:
    """Markdown table of the full and few-shot leaderboards side by side, ranked by the
    full regime's mean AUC; a detector missing from one regime has empty cells there."""
    full_by_name = {r["detector"]: r for r in full}
    few_by_name = {r["detector"]: r for r in few}
    names = list(full_by_name) + [name for name in few_by_name if name not in full_by_name]
    metrics = [  # label, key, decimals
        ("AUC", "mean_auc", 4),
        ("pAUC", "mean_pauc", 4),
        ("fit s", "fit_seconds", 1),
        ("peak MiB", "peak_memory_mb", 0),
    ]
    regimes = ("full", f"{n}-shot")
    header = ["detector"] + [f"{regime} {label}" for label, _, _ in metrics for regime in regimes]
    lines = [
        f"# {machine_type}: full training set and {n} training normals per ID",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name in names:
        cells = [name]
        for _, key, decimals in metrics:
            for rows in (full_by_name, few_by_name):
                row = rows.get(name, {})
                value = row.get(key)
                if row.get("error"):
                    cells.append("failed")
                else:
                    cells.append("" if value is None else f"{value:.{decimals}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _outcome(result: dict, status: str) -> str:
    if result.get("error"):
        return f"failed ({result['error']})"
    auc = result.get("mean_auc")
    text = f"mean AUC {auc:.4f}, " if isinstance(auc, float) else ""
    text += f"fit {result.get('fit_seconds') or 0:.1f} s"
    return f"{status}; {text}" if status != "ran" else text


def _board(out_dir: Path, fresh: dict[str, dict], expected: dict[str, dict]) -> list[dict]:
    """Rows of every result folder under ``out_dir`` (this bench's own results, failed
    ones included, taking precedence), each with its ``settings`` note."""
    results = {**collect_results(out_dir), **fresh}
    rows = []
    for folder, result in results.items():
        rows.append(
            {
                **result,
                "bench_name": folder,
                "settings": settings_note(result, expected.get(folder)),
            }
        )
    return rank(rows)


def format_leaderboard(rows: list[dict]) -> str:
    """Compact text table for the terminal."""
    lines = [
        f"{'#':>2}  {'detector':<24} {'AUC':>7} {'pAUC':>7} {'fit s':>8} {'score s':>8}"
        f" {'peak MB':>8}"
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['rank']:>2}  {r['detector']:<24} failed: {r['error']}")
            continue
        lines.append(
            f"{r['rank']:>2}  {r['detector']:<24} {_fmt(r['mean_auc']):>7} "
            f"{_fmt(r['mean_pauc']):>7} {r['fit_seconds']:>8.1f} "
            f"{r['score_seconds']:>8.1f} {r['peak_memory_mb'] or 0:>8.0f}"
            + (f"  [{r['settings']}]" if r.get("settings") not in (None, SAME_SETTINGS) else "")
        )
    return "\n".join(lines)
