"""Official DCASE 2022-2025 figures of every result folder under a bench or evaluate
output, as a Markdown table (``soundwatch bench``'s leaderboard ranks by mean AUC).

    python benchmarks/domain_shift_table.py OUT [--folders]

Columns: official score (harmonic mean of source AUC, target AUC and pAUC over
sections), the harmonic means of each, per-section source AUC / target AUC / pAUC, and
fit seconds. ``--folders`` adds each result's folder name to the detector.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path, folders: bool) -> None:
    rows = []
    for path in sorted(out.glob("*/result.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        official = result.get("official")
        if not official:
            print(f"error: {path} holds no official DCASE 2021+ score", file=sys.stderr)
            raise SystemExit(2)
        name = result.get("bench_name") or result["detector"]
        if folders:
            name += f" ({path.parent.name})"
        sections = {s["section"]: s for s in result["per_section"]}
        rows.append((official["official_score"], name, official, sections, result))
    if not rows:
        print(f"error: no */result.json under {out}", file=sys.stderr)
        raise SystemExit(2)
    rows.sort(key=lambda row: -row[0])
    names = sorted(rows[0][3])
    header = ["rank", "detector", "official score", "hmean AUC source", "hmean AUC target"]
    header += ["hmean pAUC"] + [f"section {s}: AUC src / tgt / pAUC" for s in names]
    print("| " + " | ".join(header + ["fit s"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for rank, (score, name, official, sections, result) in enumerate(rows, 1):
        cells = [
            f"{sections[s]['auc_source']:.4f} / {sections[s]['auc_target']:.4f} / "
            f"{sections[s]['pauc']:.4f}"
            for s in names
        ]
        values = [
            str(rank),
            name,
            f"{score:.4f}",
            f"{official['hmean_auc_source']:.4f}",
            f"{official['hmean_auc_target']:.4f}",
            f"{official['hmean_pauc']:.4f}",
            *cells,
            f"{result.get('fit_seconds') or 0:.1f}",
        ]
        print("| " + " | ".join(values) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python benchmarks/domain_shift_table.py OUT [--folders]", file=sys.stderr)
        raise SystemExit(2)
    main(Path(sys.argv[1]), "--folders" in sys.argv[2:])
