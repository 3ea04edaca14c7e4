"""Compact Markdown tables of ``soundwatch bench`` folders, for ``benchmarks/results/``.

    python benchmarks/leaderboard_tables.py OUT [OUT ...]

For each bench folder ``OUT`` (and its few-shot regime ``OUT/few-shot-N/``, if any):
rank, detector, mean AUC and pAUC, the mean AUC of each anomaly kind, fit and score
seconds and peak memory, from the ``leaderboard.json`` that ``bench`` wrote. Rows run
with other settings than the bench's own are marked with their ``settings`` note.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _cell(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table(board_path: Path) -> str:
    """One leaderboard as a compact Markdown table."""
    board = json.loads(board_path.read_text(encoding="utf-8"))
    rows = board["rows"]
    kinds = sorted({k for r in rows for k in r if k.startswith("auc_kind_")})
    header = ["rank", "detector", "AUC", "pAUC"] + [k.removeprefix("auc_kind_") for k in kinds]
    header += ["fit s", "score s", "peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        name = r["detector"]
        if r.get("settings") not in (None, "same"):
            name += f" ({r['settings']})"
        if r.get("error"):
            lines.append(f"| {r['rank']} | {name} | failed: {r['error']} |")
            continue
        cells = [str(r["rank"]), name, _cell(r["mean_auc"], 4), _cell(r["mean_pauc"], 4)]
        cells += [_cell(r.get(k), 3) for k in kinds]
        cells += [
            _cell(r["fit_seconds"], 1),
            _cell(r["score_seconds"], 1),
            _cell(r["peak_memory_mb"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(folders: list[Path]) -> None:
    for out in folders:
        boards = [out / "leaderboard.json"] + sorted(out.glob("few-shot-*/leaderboard.json"))
        found = [b for b in boards if b.is_file()]
        if not found:
            print(f"error: no leaderboard.json in {out}", file=sys.stderr)
            raise SystemExit(2)
        for board in found:
            regime = board.parent.name if board.parent != out else "full training set"
            machine = json.loads(board.read_text(encoding="utf-8"))["machine_type"]
            print(f"### {machine}, {regime}\n\n{table(board)}\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python benchmarks/leaderboard_tables.py OUT [OUT ...]", file=sys.stderr)
        raise SystemExit(2)
    main([Path(arg) for arg in sys.argv[1:]])
