"""``soundwatch`` command line: synth, train, train-fleet, score, evaluate, official-score,
bench, report, inspect, demo, detectors, encoders, monitor, serve.

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
from soundwatch.detectors.registry import DEFAULT_DETECTOR
from soundwatch.errors import ConfigError, SoundwatchError
from soundwatch.evaluation.dcase_protocols import PROTOCOLS

EXIT_ERROR = 1
# `score --skip-bad` when some files were skipped: the CSV holds only the others.
EXIT_SKIPPED = 2
# From this many clips, scoring takes seconds and `score` says what it is doing.
SCORE_STEP_MIN_CLIPS = 20
# Commands that train or score with torch (for the busy-cores hint).
TORCH_COMMANDS = {"train", "train-fleet", "score", "evaluate", "bench", "demo", "inspect"}


THRESHOLD_HELP = (
    "decision threshold fitted on normal training scores (cross-fitted or held out, see "
    "--group-by and --calibrate-on): gamma:Q (Q quantile "
    "of a fitted gamma, default gamma:0.9), percentile:P (empirical P-th percentile) or "
    "meanstd:K (mean + K standard deviations)"
)


REFIT_THRESHOLD_HELP = (
    "refit the decision threshold, without retraining, from the normal calibration scores "
    "stored in the model: gamma:Q, percentile:P or meanstd:K (default: the model's own)"
)


def _detector(
    name: str,
    assignments: list[str] | None,
    threshold: str | None = None,
    group_by: str | None = None,
):
    from soundwatch.detectors import create
    from soundwatch.detectors.params import parse_assignments

    params = parse_assignments(assignments)
    for key, value in (("threshold", threshold), ("group_by", group_by)):
        if value is None:
            continue
        if key in params and params[key] != value:
            option = "--" + key.replace("_", "-")
            raise ConfigError(f"{option} {value} contradicts --param {key}={params[key]}")
        params[key] = value
    return create(name, **params)


def _add_calibration_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibrate-on",
        metavar="DIR",
        help="folder of separately recorded normal clips (e.g. from another day) that "
        "only sets the decision threshold; the model never trains on them",
    )
    parser.add_argument(
        "--group-by",
        metavar="HOW",
        help="recording groups that cross-fitted calibration keeps within one fold: "
        "auto (default: a sessionNN tag in the file names, else folders), session, "
        "folder, clip (each clip its own group), or a regular expression whose first "
        "group names the group; "
        "same as --param group_by=HOW",
    )


def _calibration_clips(args: argparse.Namespace):
    """The clips of ``--calibrate-on``, or None; refused before any training."""
    if not getattr(args, "calibrate_on", None):
        return None
    from soundwatch.data.datasets import collect_audio
    from soundwatch.detectors.base import check_calibration_clips

    folder = Path(args.calibrate_on)
    if not folder.is_dir():
        raise ConfigError(f"--calibrate-on: not a folder: {folder}")
    return check_calibration_clips("--calibrate-on", collect_audio([folder]))


def _warn_drift(detector, decisions) -> None:
    """One line on stderr when a scored batch flags far more clips than the threshold's
    design rate (``score``; ``evaluate`` reads the check from its result)."""
    from soundwatch.thresholds import design_rate, drift_check

    check = drift_check(decisions, design_rate(detector.threshold_method))
    if check.drifting:
        print(check.message(), file=sys.stderr)


def _format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _add_threshold_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--threshold", "-t", metavar="METHOD", help=help_text)


def _add_out_option(
    parser: argparse.ArgumentParser, help_text: str, *, old: str | None = None
) -> None:
    """``--out/-o``; ``old`` is an earlier spelling kept as a hidden alias."""
    parser.add_argument("--out", "-o", dest="out", help=help_text)
    if old:
        parser.add_argument(old, dest="out", help=argparse.SUPPRESS)


def _step(message: str) -> None:
    """One line per step on stderr (bars appear on a terminal, lines in a log)."""
    print(message, file=sys.stderr, flush=True)


def _busy_cores_hint(threads: int) -> str | None:
    """A one-line hint when torch would start more threads than the load leaves cores."""
    if threads or not hasattr(os, "getloadavg"):
        return None
    cores = os.cpu_count() or 1
    wanted = int(os.environ.get("OMP_NUM_THREADS") or cores)
    load = os.getloadavg()[0]
    free = max(1, round(cores - load))
    if wanted <= free:
        return None
    return (
        f"hint: the CPUs are busy (load {load:.1f} on {cores} cores) and torch would use "
        f"{wanted} threads; --threads 1 may be faster"
    )


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
        _print_calibration(result)
        return
    results = [
        IdResult(r["id"], r["auc"], r["pauc"], r["n_normal"], r["n_anomaly"])
        for r in result["per_id"]
    ]
    means = {k: result[k] for k in ("mean_auc", "mean_pauc", "hmean_auc", "hmean_pauc")}
    decisions = result.get("decisions")
    if not decisions:  # a result of an older soundwatch
        print(format_table(results, means))
    else:
        _print_decision_table(results, means, decisions)
    per_kind = result.get("per_kind") or {}
    if per_kind:
        print(
            "mean AUC per anomaly kind: "
            + ", ".join(f"{kind} {entry['auc']:.4f}" for kind, entry in per_kind.items())
        )
    _print_calibration(result)


def _print_decision_table(results, means: dict, decisions: dict) -> None:
    """AUC and pAUC per ID beside precision, recall and false-positive rate of the
    decisions at the threshold."""
    labels = [r.machine_id for r in results] + ["Average", "Harmonic mean", "All clips"]
    w = max(len(x) for x in labels) + 2
    header = (
        f"{'id':<{w}}{'AUC':>6}{'pAUC':>8}{'prec':>8}{'recall':>8}{'FPR':>8}"
        f"{'n_normal':>10}{'n_anomaly':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        d = decisions["per_id"].get(r.machine_id, {})
        rates = "".join(f"{_format_rate(d.get(k)):>8}" for k in ("precision", "recall", "fpr"))
        lines.append(
            f"{r.machine_id:<{w}}{r.auc:>6.4f}{r.pauc:>8.4f}{rates}"
            f"{r.n_normal:>10d}{r.n_anomaly:>11d}"
        )
    lines.append(f"{'Average':<{w}}{means['mean_auc']:>6.4f}{means['mean_pauc']:>8.4f}")
    lines.append(f"{'Harmonic mean':<{w}}{means['hmean_auc']:>6.4f}{means['hmean_pauc']:>8.4f}")
    overall = decisions["overall"]
    rates = "".join(f"{_format_rate(overall.get(k)):>8}" for k in ("precision", "recall", "fpr"))
    lines.append(f"{'All clips':<{w}}{'':>14}{rates}")
    print("\n".join(lines))


def _print_calibration(result: dict) -> None:
    """What the threshold was fitted on, its design rate, and the drift warning."""
    spec = result.get("threshold_spec")
    rate = result.get("design_rate")
    calibration = (result.get("calibration") or {}).get("description")
    if spec and rate is not None:
        print(f"decisions at threshold {spec}, meant to flag {rate:.0%} of normal clips")
    if calibration:
        print(f"threshold fitted on {calibration}")
    message = (result.get("drift") or {}).get("message")
    if message:
        print(message, file=sys.stderr)


# ------------------------------------------------------------------------- commands
def cmd_detectors(args: argparse.Namespace) -> int:
    from soundwatch.detectors import get, summaries

    detectors = summaries()  # reads the registry table: imports no detector (nor torch)
    width = max(map(len, detectors))
    for name, summary in detectors.items():
        print(f"{name:<{width}}  {summary}")
        if args.verbose:
            cls = get(name)
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


# Names of generate_dataset's arguments, as the command line spells them.
SYNTH_OPTIONS = {
    "n_train_per_id": "--n-train",
    "n_test_normal_per_id": "--n-test-normal",
    "n_test_anomaly_per_id": "--n-test-anomaly",
    "n_ids": "--ids",
    "snr_db": "--snr",
    "id_spread": "--id-spread",
    "severity": "--severity",
    "workers": "--workers",
    "seed": "--seed",
    "sessions": "--sessions",
    "n_sections": "--sections",
    "n_source": "--n-source",
    "n_target": "--n-target",
    "n_test_normal": "--n-test-normal",
    "n_test_anomaly": "--n-test-anomaly",
    "shift": "--shift",
}


def cmd_synth(args: argparse.Namespace) -> int:
    import re

    try:
        summary = _generate(args)
    except ConfigError as exc:  # speak in options, not in Python argument names
        message = str(exc).replace(" (overwrite=True)", "")
        for name, option in SYNTH_OPTIONS.items():
            message = re.sub(rf"\b{name}(?= must )", option, message)
        raise ConfigError(message) from None
    print(
        f"wrote {summary.get('n_clips', '?')} clips of {args.machine} to "
        f"{Path(args.out) / args.machine}"
    )
    return 0


def _generate(args: argparse.Namespace) -> dict:
    from soundwatch.synth import generate_dataset, generate_domain_shift_dataset

    def given(*options: tuple[str, object]) -> list[str]:
        return [option for option, value in options if value is not None]

    common = {
        "machine": args.machine,
        "snr_db": args.snr,
        "severity": args.severity,
        "seed": args.seed,
        "id_spread": args.id_spread,
        "workers": args.workers,
        "overwrite": args.overwrite,
    }
    if args.domain_shift:
        if wrong := given(
            ("--ids", args.ids), ("--n-train", args.n_train), ("--sessions", args.sessions)
        ):
            raise ConfigError(
                f"{', '.join(wrong)} do not apply to --domain-shift; use --sections, "
                "--n-source and --n-target"
            )
        return generate_domain_shift_dataset(
            args.out,
            n_sections=3 if args.sections is None else args.sections,
            n_source=990 if args.n_source is None else args.n_source,
            n_target=10 if args.n_target is None else args.n_target,
            n_test_normal=args.n_test_normal,
            n_test_anomaly=args.n_test_anomaly,
            shift=1.0 if args.shift is None else args.shift,
            **common,
        )
    if wrong := given(
        ("--sections", args.sections),
        ("--n-source", args.n_source),
        ("--n-target", args.n_target),
        ("--shift", args.shift),
    ):
        raise ConfigError(f"{', '.join(wrong)} need --domain-shift")
    return generate_dataset(
        args.out,
        n_ids=4 if args.ids is None else args.ids,
        n_train_per_id=100 if args.n_train is None else args.n_train,
        n_test_normal_per_id=args.n_test_normal,
        n_test_anomaly_per_id=args.n_test_anomaly,
        sessions=1 if args.sessions is None else args.sessions,
        **common,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from soundwatch.evaluation.protocol import training_clips
    from soundwatch.fileio import check_writable

    if not args.out:
        raise ConfigError("train needs --out/-o MODEL_FILE (.safetensors)")
    output = Path(args.out)
    if output.exists() and not args.overwrite:
        raise ConfigError(f"{output} already exists; choose another -o or pass --overwrite")
    if output.is_dir():
        raise ConfigError(f"{output} is a folder; -o names the model file to write")
    check_writable(output.parent, "-o")
    detector = _detector(args.detector, args.param, args.threshold, args.group_by)
    clips = training_clips(Path(args.data), args.machine)
    calibration_clips = _calibration_clips(args)
    _step(f"training {detector.name} on {len(clips)} clips")
    start = time.perf_counter()
    detector.fit(clips, calibration_clips)
    detector.save(output, overwrite=args.overwrite)
    thresholds = ", ".join(f"{k}: {v:.4g}" for k, v in detector.thresholds_.items())
    print(
        f"saved {output} ({time.perf_counter() - start:.1f} s); "
        f"{detector.threshold_method.spec} thresholds {thresholds}"
    )
    print(f"threshold fitted on {detector.calibration_info_['description']}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _score_on_ray(args)
    if args.address or args.csv or args.partition_size or args.workers:
        raise ConfigError("--address, --csv, --partition-size and --workers need --engine ray")
    from soundwatch.data.datasets import collect_audio
    from soundwatch.fileio import atomic_write_text, check_writable
    from soundwatch.runtime import ScoringRuntime

    output = Path(args.out) if args.out else None
    if output is not None:
        if output.exists() and not args.overwrite:
            raise ConfigError(f"{output} already exists; choose another -o or pass --overwrite")
        check_writable(output.parent, "-o")
    calibration_clips = _calibration_clips(args)
    runtime = ScoringRuntime(strict=args.strict, skip_bad=args.skip_bad, threshold=args.threshold)
    runtime.load({"model": args.model})
    if calibration_clips is not None:
        runtime.detector().calibrate(calibration_clips)
    clips = collect_audio(args.paths)
    if len(clips) >= SCORE_STEP_MIN_CLIPS:
        _step(f"scoring {len(clips)} clips")
    results = runtime.score(clips)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "machine_id", "score", "threshold", "threshold_source", "decision"])
    skipped = [r for r in results if r.error]
    for result in results:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if result.error:
            continue
        writer.writerow(
            [
                result.path,
                result.machine_id or "",
                f"{result.score:.6g}",
                f"{result.threshold:.6g}",
                result.threshold_source,
                result.decision,
            ]
        )
    for result in skipped:
        print(f"skipped {result.path}: {result.error}", file=sys.stderr)
    runtime.record(results)
    scored = [r for r in results if not r.error]
    _warn_drift(runtime.detector(), [r.decision for r in scored])
    if output is None:
        sys.stdout.write(buffer.getvalue())
    else:
        atomic_write_text(output, buffer.getvalue())
        flagged = sum(r.decision for r in scored)
        print(f"scored {len(scored)} clips, {flagged} above threshold -> {output}")
    if skipped:
        print(f"skipped {len(skipped)} of {len(results)} files (listed above)", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def _score_on_ray(args: argparse.Namespace) -> int:
    from soundwatch.services.distributed import DEFAULT_PARTITION_SIZE, score_archive

    if not args.out:
        raise ConfigError("--engine ray needs --out/-o FOLDER for the Parquet partitions")
    if args.strict:
        raise ConfigError("--strict is not supported with --engine ray (mismatches are warned)")
    summary = score_archive(
        args.model,
        args.paths,
        args.out,
        address=args.address,
        workers=args.workers,
        partition_size=args.partition_size or DEFAULT_PARTITION_SIZE,
        threshold=args.threshold,
        overwrite=args.overwrite,
        write_csv=args.csv,
        say=_step,
    )
    for line in summary.lines():
        print(line)
    return EXIT_SKIPPED if summary.errors else 0


def cmd_train_fleet(args: argparse.Namespace) -> int:
    from soundwatch.services.distributed import format_fleet, train_fleet

    if args.engine != "ray":
        raise ConfigError("train-fleet needs --engine ray")
    out = Path(args.out) if args.out else Path(args.config).with_suffix("")
    rows = train_fleet(
        args.config,
        out,
        address=args.address,
        cpus_per_fit=args.cpus_per_fit,
        max_retries=args.max_retries,
        overwrite=args.overwrite,
        say=_step,
    )
    print(format_fleet(rows))
    failed = [r for r in rows if r["error"]]
    print(f"{len(rows) - len(failed)} models, fleet.json and leaderboard.csv -> {out}")
    return EXIT_SKIPPED if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from soundwatch.evaluation.protocol import evaluate

    detector = _detector(args.detector, args.param, args.threshold, args.group_by)
    out = Path(args.out) if args.out else Path("soundwatch-results") / args.machine / detector.name
    calibration_clips = _calibration_clips(args)
    protocol = None if args.protocol == "auto" else args.protocol
    evaluation = evaluate(
        Path(args.root),
        args.machine,
        detector,
        out,
        overwrite=args.overwrite,
        calibration_clips=calibration_clips,
        progress=_step,
        protocol=protocol,
        ground_truth=Path(args.ground_truth) if args.ground_truth else None,
        n_train=args.n_train,
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
        bench_regimes,
        few_shot_folder,
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
    full, few = bench_regimes(
        root,
        args.machine,
        detectors,
        params,
        out,
        few_shot=args.few_shot,
        overwrite=args.overwrite,
    )
    print(format_leaderboard(full))
    print(f"leaderboard.csv, leaderboard.md, leaderboard.json and per-detector files in {out}")
    if few is not None:
        print(f"\nfew-shot regime, {args.few_shot} training normals per ID:")
        print(format_leaderboard(few))
        folder = few_shot_folder(out, args.few_shot)
        print(f"its files in {folder}; both side by side in {out / 'regimes.md'}")
    rows = full + (few or [])
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
    from soundwatch.fileio import atomic_path, check_writable
    from soundwatch.reports.inspect import inspect_clip
    from soundwatch.reports.plots import figure_png
    from soundwatch.runtime import ScoringRuntime

    check_writable(out.parent)
    runtime = ScoringRuntime(threshold=args.threshold).load({"model": args.model})
    for warning in runtime.check(source):
        print(f"warning: {warning}", file=sys.stderr)
    found = inspect_clip(source, runtime.detector())
    with atomic_path(out) as tmp:
        tmp.write_bytes(figure_png(found.figure))
    print(f"score {found.score:.6g}")
    print(f"threshold {found.threshold:.6g} ({found.method}, {found.threshold_source})")
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
def _synth_machines() -> list[str]:
    try:
        from soundwatch.synth import MACHINES
    except ImportError:  # the synth stage is optional
        return ["slider"]
    return sorted(MACHINES)


# ---------------------------------------------------------------------- monitor
def _add_monitor_command(sub) -> None:
    p = sub.add_parser(
        "monitor",
        help="score new recordings of watched folders or a live stream, store and alert",
        description="Watch folders (recursively; a file counts once it is renamed into "
        "place or its size stays the same for --stable seconds) and/or a stream of raw PCM "
        "or WAV on stdin (cut into windows of the model's clip length every --hop "
        "seconds); score each clip with its machine's model, keep every score in an event "
        "store (SQLite), and open an alert when a machine starts to sound wrong (log "
        "line, webhook POST, shell command; retried in the background). Clips already in "
        "the store (same file content, same stream offset) are skipped, so a restart "
        "scores nothing twice. Changed model files and --config apply without a restart; "
        "a model that fails to load keeps the old one. Stops cleanly on Ctrl-C or SIGTERM. "
        'Folder watching needs watchdog: pip install "soundwatch[serve]".',
    )
    p.add_argument(
        "--model",
        "-M",
        action="append",
        metavar="NAME=MODEL_FILE",
        help="a machine name and its model file (repeatable)",
    )
    p.add_argument(
        "--watch",
        "-w",
        action="append",
        metavar="[NAME=]DIR[/GLOB]",
        help="folder to watch for the machine NAME (may be left out with one model); a "
        "glob such as NAME=incoming/*id_00*.wav routes only matching files (repeatable)",
    )
    p.add_argument("--config", "-c", help="TOML file with models, folders, stream and alerts")
    p.add_argument("--db", help="event store file (default: soundwatch-monitor.db)")
    p.add_argument(
        "--once",
        action="store_true",
        help="score what is there now (and stdin to its end), then exit",
    )
    p.add_argument("--stdin", metavar="NAME", help="score a stream on stdin as machine NAME")
    p.add_argument(
        "--mic", metavar="NAME", help="score a microphone as machine NAME (needs sounddevice)"
    )
    p.add_argument(
        "--format",
        choices=["auto", "wav", "s16le", "s32le", "f32le"],
        help="stdin format (default auto: WAV if it starts with a RIFF header, else s16le)",
    )
    p.add_argument("--sample-rate", type=int, help="sample rate of raw stdin samples (Hz)")
    p.add_argument("--channels", type=int, help="channels of raw stdin samples (default 1)")
    p.add_argument(
        "--window", type=float, help="stream window in seconds (default: the model's clip length)"
    )
    p.add_argument("--hop", type=float, help="seconds between stream windows (default: the window)")
    p.add_argument(
        "--alert",
        metavar="RULE",
        help="k-of-n:K/N[:M] (alert when K of the last N clips are anomalous, close after M "
        "normal ones in a row; default k-of-n:3/5:5) or median:W (alert while the median "
        "score over W clips is above the threshold)",
    )
    p.add_argument("--webhook", action="append", metavar="URL", help="POST each alert as JSON here")
    p.add_argument(
        "--on-alert",
        metavar="COMMAND",
        help="shell command run per alert (JSON on stdin and in $SOUNDWATCH_EVENT)",
    )
    p.add_argument("--retries", type=int, help="retries of a failed alert action (default 5)")
    p.add_argument(
        "--backoff", type=float, help="seconds before the first retry, doubling (default 1)"
    )
    p.add_argument(
        "--retention-days", type=float, help="delete scores older than this (default: keep)"
    )
    p.add_argument("--stable", type=float, help="seconds a file must stay unchanged (default 1)")
    p.add_argument(
        "--polling", action="store_true", help="poll the folders (for network file systems)"
    )
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    import logging

    from soundwatch.services.monitor import Monitor
    from soundwatch.services.monitor_config import load_config

    cli = {
        "models": args.model,
        "watch": args.watch,
        "stdin": args.stdin,
        "mic": args.mic,
        "format": args.format,
        "sample_rate": args.sample_rate,
        "channels": args.channels,
        "window": args.window,
        "hop": args.hop,
        "db": args.db,
        "retention_days": args.retention_days,
        "stable_seconds": args.stable,
        "alert": args.alert,
        "webhooks": args.webhook,
        "command": args.on_alert,
        "retries": args.retries,
        "backoff": args.backoff,
        "polling": args.polling,
    }
    config_path = Path(args.config) if args.config else None
    config = load_config(config_path, cli)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    # Every clip is new: caching its features would only fill the disk.
    os.environ["SOUNDWATCH_CACHE"] = "off"
    summary = Monitor(config, config_path=config_path, cli=cli, once=args.once).run()
    print(summary.line())
    return EXIT_ERROR if summary.unrecorded else 0


# ---------------------------------------------------------------------- serve
def _add_serve_command(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="score clips over HTTP and show a live dashboard",
        description="Serve POST /v1/score (a WAV or FLAC upload, a machine name and "
        "store=true to keep the score), GET /v1/machines, /v1/machines/NAME/scores, "
        "/v1/alerts, /healthz and /metrics (Prometheus), and a dashboard at /dashboard/ "
        "with each machine's score timeline, alerts and last clip. Scoring runs in worker "
        "threads behind a bounded queue; a full queue answers 503 with Retry-After. "
        "Uploads are not written to the feature cache. Needs the [serve] extra: "
        'pip install "soundwatch[serve]". See docs/deploy.md.',
    )
    p.add_argument(
        "--model",
        "-M",
        action="append",
        required=True,
        metavar="MACHINE=MODEL_FILE",
        help="a machine name and its model file (repeatable)",
    )
    p.add_argument(
        "--db",
        help="event store (SQLite file) for scores and alerts, e.g. one that "
        "`soundwatch monitor` writes (default: none; store=true is then refused)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: "
        "127.0.0.1, this machine only; 0.0.0.0 listens on every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--token",
        default=os.environ.get("SOUNDWATCH_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /v1 and /metrics (default: "
        "$SOUNDWATCH_TOKEN; none: no token needed)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=16.0, help="larger uploads get 413 (default 16)"
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=64,
        help="clips waiting to be scored before requests get 503 (default 64)",
    )
    p.add_argument("--workers", type=int, default=1, help="scoring threads (default 1)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="clips of one machine scored together under load (default 16)",
    )
    p.add_argument(
        "--alert",
        metavar="RULE",
        help="alert rule over the stored scores of each machine: k-of-n:K/N[:M] (K of "
        "the last N clips anomalous; close after M normal) or median:W (default "
        "k-of-n:3/5); needs --db",
    )
    p.add_argument(
        "--webhook",
        action="append",
        metavar="URL",
        help="POST each alert as JSON here "
        "(repeatable; retried with backoff, never blocks scoring)",
    )
    p.add_argument(
        "--on-alert",
        metavar="COMMAND",
        help="shell command run for each alert (the alert as JSON on stdin and in "
        "$SOUNDWATCH_EVENT)",
    )
    _add_threshold_option(p, REFIT_THRESHOLD_HELP)
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (422) clips of another sample rate, channel count or duration than "
        "the training data (default: answer with warnings)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from soundwatch.services.server import build_app_from_options, run
    except ImportError as exc:
        raise ConfigError(
            f"serve needs the [serve] extra ({exc.name} is missing): "
            'pip install "soundwatch[serve]"'
        ) from None
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model wants MACHINE=MODEL_FILE, got {item!r}")
        if name in models:
            raise ConfigError(f"--model: machine {name!r} is given twice")
        models[name] = path
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    app = build_app_from_options(
        models,
        db=args.db,
        token=args.token,
        max_upload_mb=args.max_upload_mb,
        queue_size=args.queue_size,
        workers=args.workers,
        max_batch=args.max_batch,
        threshold=args.threshold,
        strict=args.strict,
        alert=args.alert,
        webhooks=args.webhook,
        alert_command=args.on_alert,
    )
    # Every upload is a new file: caching its features would only fill the disk.
    os.environ["SOUNDWATCH_CACHE"] = "off"
    run(app, args.host, args.port)
    return 0


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
        help="write a synthetic DCASE 2020-layout (or, --domain-shift, 2023-style) data set",
        description="Write synthetic machine sounds from a physical model as "
        "OUT/MACHINE/train/normal_id_XX_*.wav and OUT/MACHINE/test/"
        "{normal,anomaly}_id_XX_*.wav (16 kHz, 16-bit, 10 s); with --domain-shift as "
        "OUT/MACHINE/{train,test}/section_XX_{source,target}_{train,test}_{normal,anomaly}"
        "_NNNN_ATTR_VALUE.wav plus attributes_XX.csv. See docs/synth.md.",
    )
    p.add_argument("out", help="output data-set root")
    p.add_argument(
        "--machine",
        "-m",
        default="slider",
        help=f"machine type: {', '.join(_synth_machines())} (default: slider)",
    )
    p.add_argument(
        "--ids",
        type=int,
        metavar="N",
        help="number of machine IDs to synthesise, named 00, 02, 04... (default: 4)",
    )
    p.add_argument("--n-train", type=int, help="training normals per ID (default: 100)")
    p.add_argument(
        "--n-test-normal",
        type=int,
        default=50,
        help="test normals per ID (with --domain-shift: per section and domain)",
    )
    p.add_argument(
        "--n-test-anomaly",
        type=int,
        default=50,
        help="test anomalies per ID (with --domain-shift: per section and domain)",
    )
    p.add_argument(
        "--domain-shift",
        action="store_true",
        help="write a DCASE 2023-style set instead: sections section_00.., source and "
        "target domains whose speed, microphone or background differ, attributes in the "
        "file names and attributes_XX.csv (see docs/synth.md)",
    )
    p.add_argument(
        "--sections",
        type=int,
        metavar="N",
        help="--domain-shift: sections, each one machine unit (default: 3)",
    )
    p.add_argument(
        "--n-source",
        type=int,
        help="--domain-shift: source-domain training normals per section (default: 990)",
    )
    p.add_argument(
        "--n-target",
        type=int,
        help="--domain-shift: target-domain training normals per section (default: 10)",
    )
    p.add_argument(
        "--shift",
        type=float,
        help="--domain-shift: size of the source-to-target change, 0-3 (default: 1)",
    )
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
    p.add_argument(
        "--sessions",
        type=int,
        help="recording sessions (days) with their own microphone gain, EQ tilt, "
        "background level and machine load; training and test clips span all of them "
        "and file names end in _sessionNN (default 1: no session effects)",
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
    _add_calibration_options(p)
    _add_out_option(p, "model file to write (.safetensors; required)", old="--output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "score",
        help="score audio files or folders with a trained model",
        description="Score files or folders (searched recursively) with a model file. Writes "
        "CSV: path, machine_id, score, threshold, threshold_source (the threshold of the "
        "clip's section and domain, else of its machine ID, else the pooled one), decision "
        "(1 = anomalous). --threshold refits the "
        "decision threshold from the normal scores stored in the model, without "
        "retraining. A clip whose machine type, sample rate, channel count or duration "
        "differs from the training data gets a one-line warning on stderr.",
    )
    p.add_argument("model", help="model file written by `soundwatch train` or `evaluate`")
    p.add_argument("paths", nargs="+", help="audio files or folders")
    _add_threshold_option(p, REFIT_THRESHOLD_HELP)
    p.add_argument(
        "--calibrate-on",
        metavar="DIR",
        help="refit the decision threshold, without retraining, on the scores of this "
        "folder of normal clips recorded under the conditions of the clips to score",
    )
    _add_out_option(p, "CSV file to write (default: standard output)", old="--output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="score the readable files even when some are not; list each skipped file "
        "and why on stderr and exit with status 2 (default: name the bad file, write nothing)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse clips of another machine type, sample rate, channel count or duration "
        "than the training data (default: warn)",
    )
    # Scale out (soundwatch[ray]): see docs/scale.md.
    p.add_argument(
        "--engine",
        choices=["ray"],
        help="score on Ray: PATHS are folders, list files or globs, streamed in "
        "partitions; --out is a folder of Parquet partitions (path, machine_id, score, "
        "threshold, threshold_source, decision, model_digest, error); a rerun skips "
        "complete partitions; unreadable files are rows with an error",
    )
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="Ray scoring actors (default: one per CPU)")
    p.add_argument("--partition-size", type=int, help="clips per Parquet partition (default 1000)")
    p.add_argument("--csv", action="store_true", help="also write OUT/scores.csv")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "train-fleet",
        help="train one model per machine on Ray, from a TOML fleet config",
        description="Train one model per [[machine]] of CONFIG (keys: type, and optional "
        "id or ids, name, root, detector, params; top-level root, detector and params are "
        "defaults), each as a Ray task retried on failure. Writes the model files, "
        "fleet.json (a model map for ScoringRuntime.load) and leaderboard.csv (AUC and "
        "pAUC on each machine's held-out test clips).",
    )
    p.add_argument("config", help="fleet config (TOML)")
    p.add_argument("--engine", choices=["ray"], required=True, help="execution engine")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    _add_out_option(p, "output folder (default: CONFIG without its suffix)")
    p.add_argument("--cpus-per-fit", type=float, default=1.0, help="CPUs per model fit")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a failed fit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing fleet")
    p.set_defaults(func=cmd_train_fleet)

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
    _add_calibration_options(p)
    _add_out_option(p, "output folder (default: soundwatch-results/MACHINE/DETECTOR)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results in --out: the new run replaces the whole folder once "
        "it is complete",
    )
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
    p.add_argument(
        "--n-train",
        type=int,
        metavar="N",
        help="few-shot regime: train on the first N training normals of each ID (by file "
        "name) only; an ID with fewer is refused",
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
        "leaderboard.csv, leaderboard.md and leaderboard.json to OUT, one row per result "
        "folder under OUT. A detector whose folder holds results of the same settings "
        "(detector, parameters, data files, soundwatch version) is skipped, so a stopped "
        "bench resumes; one with other settings is rerun. Then the same for the few-shot "
        "regime (the first --few-shot training normals of each ID) into OUT/few-shot-N/, "
        "and OUT/regimes.md puts both regimes side by side.",
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
    _add_out_option(p, "output folder (default: soundwatch-bench/MACHINE)")
    p.add_argument(
        "--overwrite", action="store_true", help="rerun detectors even with the same settings"
    )
    p.add_argument(
        "--few-shot",
        type=int,
        default=10,
        metavar="N",
        help="training normals per ID of the few-shot regime (default 10; 0: full training "
        "set only). Skipped, with a note, when an ID has no more than N",
    )
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
    _add_out_option(p, "demo folder (default: ./soundwatch-demo, or -2, -3...)")
    p.add_argument("--machine", "-m", default="slider", help="machine type (default: slider)")
    p.add_argument("--n-train", type=int, default=60, help="training normals per ID")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    _add_detector_options(p)
    p.set_defaults(func=cmd_demo)
    _add_monitor_command(sub)
    _add_serve_command(sub)
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
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        # NumPy/SciPy's BLAS was loaded already (OMP_NUM_THREADS is read at load time):
        # without a limit, its threads contend with everything else on a busy machine.
        threadpool_limits(args.threads)
        # Child processes (bench) start with the same setting.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if (
        args.command in TORCH_COMMANDS
        and sys.stderr.isatty()
        and (hint := _busy_cores_hint(args.threads))
    ):
        print(hint, file=sys.stderr)
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
