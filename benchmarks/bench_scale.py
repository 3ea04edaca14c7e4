"""Scale-out benchmark: Ray (1 and 2 workers) against single-process ``soundwatch score``.

On the same synthetic 10 s slider clips, side by side in one run, for
``logmel-mahalanobis`` and one EfficientAT detector:

- throughput (clips/s) of ``soundwatch score`` (one process, through ScoringRuntime) and
  of ``soundwatch score --engine ray --workers 1|2``, each a fresh child process, so
  every figure includes starting Python, loading the model and (for Ray) starting Ray;
- the engine's overhead: Ray start-up, and per-clip time against plain ``score``;
- peak resident memory of the Ray driver at each archive size in ``--memory-n`` (it must
  stay flat: the driver streams paths and holds one partition at a time).

The archive is ``--base`` distinct rendered clips hard-linked to ``--n`` file names (the
feature cache is off, so every file is read and scored). The machine's other load is
not controlled: run it on an idle machine for figures to quote.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--n 5000] [--n-efficientat 500]
        [--memory-n 1000,5000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from soundwatch.detectors import create
from soundwatch.evaluation.protocol import training_clips
from soundwatch.synth import generate_dataset

PEAK_SCRIPT = (
    "import sys; from soundwatch.cli.main import main; rc = main(sys.argv[1:]); "
    "from soundwatch.evaluation.protocol import peak_memory_mb; "
    "print(f'PEAK_MB {peak_memory_mb():.1f}'); sys.exit(rc)"
)


def _archive(base_dir: Path, n: int, root: Path) -> Path:
    """``n`` file names hard-linked (copied across file systems) to the base clips."""
    folder = root / f"archive-{n}" / "slider" / "test"
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder.parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    base = sorted(base_dir.glob("*.wav"))
    for i in range(n):
        source = base[i % len(base)]
        target = folder / f"{source.stem}_{i:06d}.wav"
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                target.write_bytes(source.read_bytes())
    return folder.parent.parent


def _run(args: list[str], env: dict) -> tuple[float, str, float]:
    """Wall seconds, output and driver peak MiB of one soundwatch command."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    peak = float(re.search(r"PEAK_MB ([\d.]+)", done.stdout).group(1))
    return wall, done.stdout + done.stderr, peak


def _ray_start(output: str) -> float:
    found = re.search(r"Ray start ([\d.]+) s", output)
    return float(found.group(1)) if found else float("nan")


def bench_detector(name: str, data: Path, work: Path, n: int, env: dict) -> list[dict]:
    model = work / f"{name}.safetensors"
    if not model.exists():
        detector = create(name)
        detector.fit(training_clips(data, "slider"))
        detector.save(model)
    archive = _archive(data / "slider" / "test", n, work)
    rows = []
    wall, _, peak = _run(
        ["score", str(model), str(archive), "-o", str(work / "single.csv"), "--overwrite"], env
    )
    rows.append(
        {
            "detector": name,
            "engine": "single process",
            "n": n,
            "wall_s": wall,
            "clips_per_s": n / wall,
            "ray_start_s": 0.0,
            "driver_peak_mb": peak,
        }
    )
    for workers in (1, 2):
        out = work / f"ray-{name}-{n}-{workers}"
        wall, output, peak = _run(
            [
                "score",
                str(model),
                str(archive),
                "--engine",
                "ray",
                "--workers",
                str(workers),
                "-o",
                str(out),
                "--overwrite",
                "--partition-size",
                "250",
            ],
            env,
        )
        rows.append(
            {
                "detector": name,
                "engine": f"ray, {workers} worker(s)",
                "n": n,
                "wall_s": wall,
                "clips_per_s": n / wall,
                "ray_start_s": _ray_start(output),
                "driver_peak_mb": peak,
            }
        )
    single = rows[0]["wall_s"] / n
    for row in rows[1:]:
        row["overhead_per_clip_ms"] = (
            1000 * (row["wall_s"] - row["ray_start_s"] - rows[0]["wall_s"]) / n
        )
    print(f"  single process: {single * 1000:.1f} ms/clip", flush=True)
    return rows


def bench_memory(data: Path, work: Path, sizes: list[int], env: dict) -> list[dict]:
    model = work / "logmel-mahalanobis.safetensors"
    rows = []
    for n in sizes:
        archive = _archive(data / "slider" / "test", n, work)
        out = work / f"ray-memory-{n}"
        wall, _, peak = _run(
            [
                "score",
                str(model),
                str(archive),
                "--engine",
                "ray",
                "--workers",
                "2",
                "-o",
                str(out),
                "--overwrite",
                "--partition-size",
                "250",
            ],
            env,
        )
        rows.append({"n": n, "driver_peak_mb": peak, "wall_s": wall})
        if len(rows) > 1:
            a, b = rows[-2], rows[-1]
            slope = (b["wall_s"] - a["wall_s"]) / (b["n"] - a["n"])
            b["marginal_clips_per_s"] = 1 / slope if slope > 0 else float("nan")
            b["fixed_s"] = b["wall_s"] - slope * b["n"]
            print(
                f"  marginal {b['marginal_clips_per_s']:.2f} clips/s, fixed cost "
                f"{b['fixed_s']:.0f} s (2 workers, from the two sizes)",
                flush=True,
            )
        print(f"  {n} clips: driver peak {peak:.0f} MiB ({wall:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="clips for logmel-mahalanobis")
    parser.add_argument("--n-efficientat", type=int, default=500, help="clips for EfficientAT")
    parser.add_argument("--memory-n", default="1000,5000", help="archive sizes for memory")
    parser.add_argument("--base", type=int, default=200, help="distinct rendered clips")
    parser.add_argument("--efficientat", default="embedding")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sw-bench-scale")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    env = {
        **os.environ,
        "SOUNDWATCH_CACHE": "off",
        "OMP_NUM_THREADS": "1",
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    }
    os.environ["SOUNDWATCH_CACHE"] = "off"
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    if not (data / "slider").is_dir():
        generate_dataset(
            data,
            "slider",
            n_ids=2,
            n_train_per_id=40,
            n_test_normal_per_id=args.base // 4,
            n_test_anomaly_per_id=args.base // 4,
            progress=False,
            seed=11,
        )
    rows = []
    for name, n in (("logmel-mahalanobis", args.n), (args.efficientat, args.n_efficientat)):
        if n <= 0:
            continue
        print(f"{name}, {n} clips", flush=True)
        rows += bench_detector(name, data, args.work, n, env)
    print("driver memory", flush=True)
    memory = bench_memory(data, args.work, [int(x) for x in args.memory_n.split(",")], env)
    print(
        f"\n{'detector':<26} {'engine':<18} {'clips':>6} {'wall s':>8} {'clips/s':>8} "
        f"{'Ray start s':>11} {'+ms/clip':>9} {'driver MiB':>10}"
    )
    for r in rows:
        extra = r.get("overhead_per_clip_ms")
        print(
            f"{r['detector']:<26} {r['engine']:<18} {r['n']:>6} {r['wall_s']:>8.1f} "
            f"{r['clips_per_s']:>8.2f} {r['ray_start_s']:>11.1f} "
            f"{'' if extra is None else f'{extra:.1f}':>9} {r['driver_peak_mb']:>10.0f}"
        )
    for m in memory:
        print(f"driver peak at {m['n']} clips: {m['driver_peak_mb']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"throughput": rows, "memory": memory}, indent=2))


if __name__ == "__main__":
    main()
