"""``soundwatch`` command line: synth, train, score, evaluate, official-score, bench,
report, inspect, demo, detectors, encoders.

Every command reports bad input as one ``error: ...`` line on stderr and exits 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import textwrap
import time
from pathlib import Path

from soundwatch import __version__
from soundwatch.errors import ConfigError, SoundwatchError
from soundwatch.evaluation.dcase_protocols import PROTOCOLS

DEFAULT_DETECTOR = "logmel-mahalanobis"
EXIT_ERROR = 1


THRESHOLD_HELP = (
    "decision threshold fitted on held-out normal training scores: gamma:Q (Q quantile "
    "of a fitted gamma, default gamma:0.9), percentile:P (empirical P-th percentile) or "
    "meanstd:K (mean + K standard deviations)"
)


REFIT_THRESHOLD_HELP = (
    "refit the decision threshold, without retraining, from the held-out normal scores "
    "stored in the model: gamma:Q, percentile:P or meanstd:K (default: the model's own)"
)


def _detector(name: str, assignments: list[str] | None, threshold: str | None = None):
    from soundwatch.detectors import create
    from soundwatch.detectors.params import parse_assignments

    params = parse_assignments(assignments)
    if threshold is not None:
        if "threshold" in params and params["threshold"] != threshold:
            raise ConfigError(
                f"--threshold {threshold} contradicts --param threshold={params['threshold']}"
            )
        params["threshold"] = threshold
    return create(name, **params)


def _add_threshold_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--threshold", "-t", metavar="METHOD", help=help_text)


def _add_detector_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detector",
        "-d",
        default=DEFAULT_DETECTOR,
        help=f"registered detector name (default: {DEFAULT_DETECTOR}; see `soundwatch detectors`)",
    )
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        metavar="KEY=VALUE",
        help="override a detector hyperparameter, e.g. --param epochs=5 (repeatable)",
    )


def _print_table(result: dict) -> None:
    from soundwatch.evaluation.metrics import IdResult
    from soundwatch.evaluation.submission import format_table

    if not result.get("per_id"):
        print("no labelled test clips: scores and decisions written, no metrics")
        return
    results = [
        IdResult(r["id"], r["auc"], r["pauc"], r["n_normal"], r["n_anomaly"])
        for r in result["per_id"]
    ]
    means = {k: result[k] for k in ("mean_auc", "mean_pauc", "hmean_auc", "hmean_pauc")}
    print(format_table(results, means))
    per_kind = result.get("per_kind") or {}
    if per_kind:
        print(
            "mean AUC per anomaly kind: "
            + ", ".join(f"{kind} {entry['auc']:.4f}" for kind, entry in per_kind.items())
        )


# ------------------------------------------------------------------------- commands
def cmd_detectors(args: argparse.Namespace) -> int:
    from soundwatch.detectors import available

    detectors = available()
    width = max(map(len, detectors))
    for name, cls in detectors.items():
        print(f"{name:<{width}}  {cls.summary}")
        if args.verbose:
            print(textwrap.indent(cls.describe(), "    "))
            print("    parameters:")
            for key, param in cls.param_spec().items():
                print(f"      {key} = {param.default!r}: {param.help}")
            print()
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from soundwatch.encoders.registry import ENCODERS

    encoders = ENCODERS.available()
    width = max(map(len, encoders))
    for name, cls in encoders.items():
        if not cls.requires_weights:
            status = "no weights needed"
        else:
            found = cls.local_weights()
            status = f"weights: {found}" if found else "weights: not found locally"
        print(f"{name:<{width}}  {cls.summary}\n{'':<{width}}  {status}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from soundwatch.synth import generate_dataset

    summary = generate_dataset(
        args.out,
        machine=args.machine,
        n_ids=args.ids,
        n_train_per_id=args.n_train,
        n_test_normal_per_id=args.n_test_normal,
        n_test_anomaly_per_id=args.n_test_anomaly,
        snr_db=args.snr,
        severity=args.severity,
        seed=args.seed,
        id_spread=args.id_spread,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {summary.get('n_clips', '?')} clips of {args.machine} to "
        f"{Path(args.out) / args.machine}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from soundwatch.evaluation.protocol import training_clips

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} already exists; choose another -o or pass --overwrite")
    detector = _detector(args.detector, args.param, args.threshold)
    clips = training_clips(Path(args.data), args.machine)
    print(f"training {detector.name} on {len(clips)} clips", file=sys.stderr)
    start = time.perf_counter()
    detector.fit(clips)
    detector.save(output, overwrite=args.overwrite)
    thresholds = ", ".join(f"{k}: {v:.4g}" for k, v in detector.thresholds_.items())
    print(
        f"saved {output} ({time.perf_counter() - start:.1f} s); "
        f"{detector.threshold_method.spec} thresholds {thresholds}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from soundwatch.data.datasets import collect_audio
    from soundwatch.detectors.base import Detector

    detector = Detector.load(args.model)
    if args.threshold is not None:
        detector.refit_threshold(args.threshold)
    clips = collect_audio(args.paths)
    output = Path(args.output) if args.output else None
    if output is not None and output.exists() and not args.overwrite:
        raise ConfigError(f"{output} already exists; choose another -o or pass --overwrite")
    scores = detector.score(clips)
    decisions = detector.decide(clips, scores)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "machine_id", "score", "threshold", "decision"])
    for clip, score, decision in zip(clips, scores, decisions, strict=True):
        writer.writerow(
            [
                clip.path,
                clip.machine_id or "",
                f"{score:.6g}",
                f"{detector.threshold_for(clip.machine_id):.6g}",
                int(decision),
            ]
        )
    if output is None:
        sys.stdout.write(buffer.getvalue())
    else:
        from soundwatch.fileio import atomic_write_text

        atomic_write_text(output, buffer.getvalue())
        print(f"scored {len(clips)} clips, {int(decisions.sum())} above threshold -> {output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from soundwatch.evaluation.protocol import evaluate

    detector = _detector(args.detector, args.param, args.threshold)
    out = Path(args.out) if args.out else Path("soundwatch-results") / args.machine / detector.name
    protocol = None if args.protocol == "auto" else args.protocol
    evaluation = evaluate(
        Path(args.root),
        args.machine,
        detector,
        out,
        overwrite=args.overwrite,
        protocol=protocol,
        ground_truth=Path(args.ground_truth) if args.ground_truth else None,
    )
    result = evaluation.result
    print(f"{args.machine} / {detector.name} / {result['protocol']} ({result['protocol_reason']})")
    _print_table(evaluation.result)
    if result.get("per_section"):
        from soundwatch.evaluation.dcase import format_sections

        print(format_sections(result))
    print(
        f"fit {evaluation.result['fit_seconds']:.1f} s, "
        f"score {evaluation.result['score_seconds']:.1f} s; files in {out}"
    )
    return 0


def cmd_official_score(args: argparse.Namespace) -> int:
    from soundwatch.evaluation.dcase import format_combined, read_results

    combined = read_results([Path(d) for d in args.result_dirs])
    print(format_combined(combined))
    return 0 if combined["official_score"] is not None else EXIT_ERROR


def cmd_bench(args: argparse.Namespace) -> int:
    from soundwatch.detectors.params import parse_assignments
    from soundwatch.evaluation.leaderboard import (
        bench,
        format_leaderboard,
        resolve_detectors,
        split_params,
    )

    root = Path(args.root)
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root}")
    detectors = resolve_detectors(args.detectors)
    params = split_params(parse_assignments(args.param), detectors)
    out = Path(args.out) if args.out else Path("soundwatch-bench") / args.machine
    rows = bench(root, args.machine, detectors, params, out, overwrite=args.overwrite)
    print(format_leaderboard(rows))
    print(f"leaderboard.csv, leaderboard.md, leaderboard.json and per-detector files in {out}")
    return 0 if all(not r.get("error") for r in rows) else EXIT_ERROR


def cmd_report(args: argparse.Namespace) -> int:
    from soundwatch.reports.build import build_report, figures_folder

    path = build_report(
        Path(args.result_dir), args.out, overwrite=args.overwrite, n_examples=args.examples
    )
    print(f"wrote {path} (figures in {figures_folder(path)})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from soundwatch.data.audio import is_audio_file

    source = Path(args.file)
    if not source.is_file() or not is_audio_file(source):
        raise ConfigError(f"not an audio file: {source}")
    out = Path(args.out) if args.out else Path(f"{source.stem}_inspect.png")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {out}")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    from soundwatch.fileio import atomic_path
    from soundwatch.reports.inspect import inspect_clip
    from soundwatch.reports.plots import figure_png

    found = inspect_clip(source, args.model, args.threshold)
    with atomic_path(out) as tmp:
        tmp.write_bytes(figure_png(found.figure))
    where = f"machine ID {found.machine_id}" if found.machine_id else "pooled"
    print(f"score {found.score:.6g}")
    print(f"threshold {found.threshold:.6g} ({found.method}, {where})")
    print(f"decision {'anomalous' if found.decision else 'normal'} ({found.decision})")
    note = "" if found.has_map else " (no anomaly map for this detector)"
    print(f"wrote {out}{note}")
    return 0


def _fresh_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... whichever does not exist yet."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def cmd_demo(args: argparse.Namespace) -> int:
    from soundwatch.evaluation.protocol import evaluate
    from soundwatch.synth import generate_dataset

    out = Path(args.out) if args.out else _fresh_folder(Path("soundwatch-demo"))
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another --out")
    data = out / "data"
    print(f"1/3 synthesising a small {args.machine} data set in {data}")
    generate_dataset(
        data,
        machine=args.machine,
        n_ids=3,
        n_train_per_id=args.n_train,
        n_test_normal_per_id=20,
        n_test_anomaly_per_id=20,
        seed=args.seed,
    )
    detector = _detector(args.detector, args.param)
    print(f"2/3 training {detector.name} on the normal training clips")
    evaluation = evaluate(data, args.machine, detector, out / "results")
    print("3/3 evaluating on the test clips\n")
    _print_table(evaluation.result)
    print(f"\nresults, decisions and model in {out / 'results'}")
    print(f"report: soundwatch report {out / 'results'}")
    print(f"next: soundwatch evaluate {data} --machine {args.machine} --detector dcase2020-ae")
    return 0


# ------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundwatch",
        description="Unsupervised anomalous sound detection for machines: train on normal "
        "recordings, score new ones, evaluate with the DCASE 2020-2025 Task 2 metrics.",
    )
    parser.add_argument("--version", action="version", version=f"soundwatch {__version__}")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not read or write the feature cache "
        "(default cache: ~/.cache/soundwatch, or $SOUNDWATCH_CACHE)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="CPU threads for torch (default: torch's choice, one per core). On a machine "
        "that is busy with other work, --threads 1 avoids threads fighting for cores",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "detectors",
        help="list the registered detectors",
        description="List the registered detectors with a one-line summary.",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show each detector's architecture and parameters",
    )
    p.set_defaults(func=cmd_detectors)

    p = sub.add_parser(
        "encoders",
        help="list the pretrained audio encoders and their weights",
        description="List the registered audio encoders and whether each one's weights "
        "are available locally ($SOUNDWATCH_EFFICIENTAT_WEIGHTS or the user "
        "cache ~/.cache/soundwatch/weights).",
    )
    p.set_defaults(func=cmd_encoders)

    p = sub.add_parser(
        "synth",
        help="write a synthetic DCASE 2020-layout data set",
        description="Write synthetic machine sounds from a physical model as "
        "OUT/MACHINE/train/normal_id_XX_*.wav and OUT/MACHINE/test/"
        "{normal,anomaly}_id_XX_*.wav (16 kHz, 16-bit, 10 s). See docs/synth.md.",
    )
    p.add_argument("out", help="output data-set root")
    p.add_argument("--machine", "-m", default="slider", help="machine type (default: slider)")
    p.add_argument("--ids", type=int, default=4, help="machine IDs (default: 4)")
    p.add_argument("--n-train", type=int, default=100, help="training normals per ID")
    p.add_argument("--n-test-normal", type=int, default=50, help="test normals per ID")
    p.add_argument("--n-test-anomaly", type=int, default=50, help="test anomalies per ID")
    p.add_argument(
        "--snr",
        type=float,
        default=0.0,
        help="machine-to-factory-noise ratio in dB (e.g. 6, 0, -6; default 0)",
    )
    p.add_argument(
        "--severity", type=float, default=1.0, help="anomaly strength (default 1; larger is easier)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--id-spread",
        type=float,
        default=1.0,
        help="how different the machine IDs are, 0-1: 1 (default) draws unrelated "
        "machines in unrelated halls, smaller values units of one product in one hall",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "train",
        help="train a detector on normal clips and save a model file",
        description="Train on DATA/MACHINE/train (or every clip of a plain folder of normal "
        "recordings) and write one model file (.safetensors with JSON metadata).",
    )
    p.add_argument("data", help="data-set root, machine folder or folder of normal clips")
    p.add_argument("--machine", "-m", help="machine type to train on (a folder under DATA)")
    _add_detector_options(p)
    _add_threshold_option(p, THRESHOLD_HELP + "; same as --param threshold=METHOD")
    p.add_argument("--output", "-o", required=True, help="model file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "score",
        help="score audio files or folders with a trained model",
        description="Score files or folders (searched recursively) with a model file. Writes "
        "CSV: path, machine_id, score, threshold, decision (1 = anomalous). --threshold "
        "refits the decision threshold from the held-out normal scores stored in the model, "
        "without retraining.",
    )
    p.add_argument("model", help="model file written by `soundwatch train` or `evaluate`")
    p.add_argument("paths", nargs="+", help="audio files or folders")
    _add_threshold_option(p, REFIT_THRESHOLD_HELP)
    p.add_argument("--output", "-o", help="CSV file to write (default: standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "evaluate",
        help="train and evaluate with a DCASE Task 2 protocol (2020-2025)",
        description="Train on ROOT/MACHINE/train, score ROOT/MACHINE/test (2021: "
        "source_test and target_test) and write the year's anomaly_score_*.csv and "
        "decision_result_*.csv, result.csv, result.json and model.safetensors to --out. "
        "`soundwatch report OUT` turns them into an HTML page.",
    )
    p.add_argument("root", help="data-set root holding MACHINE/train and MACHINE/test")
    p.add_argument("--machine", "-m", required=True, help="machine type, e.g. slider")
    _add_detector_options(p)
    _add_threshold_option(p, THRESHOLD_HELP + "; same as --param threshold=METHOD")
    p.add_argument("--out", help="output folder (default: soundwatch-results/MACHINE/DETECTOR)")
    p.add_argument("--overwrite", action="store_true", help="replace results in --out")
    p.add_argument(
        "--protocol",
        choices=("auto", *PROTOCOLS),
        default="auto",
        help="challenge year whose metrics, official score and submission files to use "
        "(default auto: inferred from the test file names)",
    )
    p.add_argument(
        "--ground-truth",
        metavar="DIR",
        help="folder of the official ground_truth_*.csv files (DCASE 2021+ evaluators) "
        "that label unlabelled evaluation clips",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "official-score",
        help="official DCASE 2021+ score over several machine types' evaluate folders",
    )
    p.add_argument("result_dirs", nargs="+", help="folders written by `soundwatch evaluate`")
    p.set_defaults(func=cmd_official_score)

    p = sub.add_parser(
        "bench",
        help="evaluate several detectors and write a leaderboard",
        description="Run `evaluate` for each detector (each in its own process, so peak "
        "memory is measured per detector) into OUT/DETECTOR/, then write "
        "leaderboard.csv, leaderboard.md and leaderboard.json to OUT. Detectors "
        "whose folder already holds results are not rerun, so a stopped bench "
        "resumes.",
    )
    p.add_argument("root", help="data-set root holding MACHINE/train and MACHINE/test")
    p.add_argument("--machine", "-m", required=True, help="machine type, e.g. slider")
    p.add_argument(
        "--detectors", default="all", help="comma-separated detector names, or 'all' (default)"
    )
    p.add_argument(
        "--param",
        "-p",
        action="append",
        metavar="[DET.]KEY=VALUE",
        help="DET.KEY=VALUE sets one detector's parameter; KEY=VALUE sets it for "
        "every chosen detector that has it (repeatable)",
    )
    p.add_argument("--out", help="output folder (default: soundwatch-bench/MACHINE)")
    p.add_argument("--overwrite", action="store_true", help="rerun detectors with results")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "report",
        help="write an HTML report of an evaluate or bench folder",
        description="Turn an `evaluate` folder (result.json) or a `bench` folder "
        "(leaderboard.json) into one self-contained HTML page with the figures embedded: "
        "per-ID AUC/pAUC and precision/recall/F1/accuracy at the decision threshold, ROC "
        "curves, score histograms, a comparison of threshold methods with oracle "
        "operating points, training curves, the most and least anomalous test clips with "
        "log-mel spectrograms and anomaly maps, a data summary and, for a bench, the "
        "leaderboard. The PNGs are also written to <report>_figures/ beside the page.",
    )
    p.add_argument("result_dir", help="folder written by `soundwatch evaluate` or `bench`")
    p.add_argument(
        "--out", "-o", help="HTML file to write (default: RESULT_DIR/report/report.html)"
    )
    p.add_argument(
        "--examples",
        type=int,
        default=3,
        help="most and least anomalous test clips to show per detector (default: 3)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "inspect",
        help="score one clip and plot its waveform, log-mel and anomaly map",
        description="Score one audio file with a model file; print the score, the "
        "threshold and the decision, and write a PNG with the waveform, the log-mel "
        "spectrogram and the detector's anomaly map (when it has one).",
    )
    p.add_argument("file", help="audio file (wav or flac)")
    p.add_argument("--model", "-M", required=True, help="model file (.safetensors)")
    p.add_argument("--out", "-o", help="PNG to write (default: ./<file stem>_inspect.png)")
    _add_threshold_option(p, REFIT_THRESHOLD_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "demo",
        help="synthesise a small data set, train, evaluate and print the table",
        description="End-to-end demo on synthetic slider sounds (about a minute on 2 cores).",
    )
    p.add_argument("--out", help="demo folder (default: ./soundwatch-demo, or -2, -3...)")
    p.add_argument("--machine", "-m", default="slider", help="machine type (default: slider)")
    p.add_argument("--n-train", type=int, default=60, help="training normals per ID")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _add_detector_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.no_cache:
        os.environ["SOUNDWATCH_CACHE"] = "off"
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        # Child processes (bench) start with the same setting.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        return args.func(args)
    except SoundwatchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; use fewer clips or smaller batches", file=sys.stderr)
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
    return EXIT_ERROR
