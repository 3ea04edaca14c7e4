"""``soundwatch bench``: evaluate several detectors with one protocol and rank them.

Each detector runs ``soundwatch evaluate`` in its own process, so its peak memory is its
own and a crash in one detector does not lose the others' results. A detector whose
folder already holds a ``result.json`` is not run again (delete the folder or pass
``overwrite`` to rerun it), so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from soundwatch.detectors.registry import get, names
from soundwatch.errors import ConfigError
from soundwatch.evaluation.protocol import RESULT_FILE
from soundwatch.fileio import atomic_write_text

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


def run_one(
    root: Path, machine_type: str, name: str, params: dict, out_dir: Path, overwrite: bool
) -> dict:
    """Evaluate one detector in a child process; returns its result or an error record."""
    result_path = out_dir / RESULT_FILE
    if result_path.is_file() and not overwrite:
        return json.loads(result_path.read_text())
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
    if overwrite:
        command.append("--overwrite")
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True)
    if completed.returncode != 0 or not result_path.is_file():
        return {"detector": name, "error": f"exit status {completed.returncode}"}
    return json.loads(result_path.read_text())


def rank(results: list[dict]) -> list[dict]:
    """Leaderboard rows, best mean AUC first; failed detectors last."""
    rows = []
    for result in results:
        row = {key: result.get(key) for key in COLUMNS[1:]}
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
) -> list[dict]:
    """Evaluate every detector into ``out_dir/<detector>/`` and write the leaderboard."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, name in enumerate(detectors, 1):
        print(f"[{i}/{len(detectors)}] {name}", file=sys.stderr, flush=True)
        results.append(
            run_one(Path(root), machine_type, name, params.get(name, {}), out_dir / name, overwrite)
        )
        # Rewrite after each detector so a long bench shows (and keeps) partial results.
        rows = rank(results)
        write_leaderboard(out_dir, machine_type, rows)
    return rows


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
        )
    return "\n".join(lines)
