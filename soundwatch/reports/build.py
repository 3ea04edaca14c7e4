"""``soundwatch report``: one self-contained HTML page for an evaluate or bench folder.

The page (``report.html``) embeds every figure as a base64 PNG; the same PNGs are also
written beside it (``report_figures/``) for slides and documents. Sections of one
detector's results:

1. Overview: detector, threshold method, means, timings, parameters.
2. Results per machine ID: AUC, pAUC, and precision, recall, F1, accuracy at the
   decision threshold; on synthetic data also AUC and pAUC per anomaly kind.
3. ROC curves with the pAUC region and the operating point.
4. Score distributions of normal and anomalous test clips with the threshold.
5. Threshold methods: every method fitted on the held-out normals (from the model
   file), and the oracle best-F1 and Youden thresholds, which use the test labels.
6. Training curves of neural detectors.
7. The most and least anomalous test clips: log-mel spectrogram, anomaly map, audio.
8. Data summary: clips per ID and split, durations, sample rates.

A bench folder gets a leaderboard chart, one data summary, and these sections for every
detector.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundwatch.detectors.base import calibration_description
from soundwatch.errors import ConfigError, SoundwatchError
from soundwatch.evaluation.decisions import (
    BinaryMetrics,
    best_f1_threshold,
    binary_metrics,
    metrics_at,
    unusable_decisions,
    youden_threshold,
)
from soundwatch.evaluation.protocol import RESULT_FILE
from soundwatch.fileio import atomic_path, atomic_write_text
from soundwatch.reports import html as h
from soundwatch.reports import plots
from soundwatch.reports.data import (
    BenchData,
    IdScores,
    RunData,
    is_bench_folder,
    load_bench,
    load_run,
    summarize_data,
)
from soundwatch.thresholds import (
    COMPARED_METHODS,
    MIN_CLIPS_PER_ID,
    fit_thresholds,
    lookup_threshold,
    parse_threshold_method,
)

REPORT_FOLDER = "report"
REPORT_FILE = "report.html"

# Section titles (the tests and readers look for these exact words).
OVERVIEW = "Overview"
PER_ID = "Results per machine ID"
ROC = "ROC curves"
HISTOGRAMS = "Score distributions"
THRESHOLDS = "Threshold methods"
TRAINING = "Training curves"
EXAMPLES = "Most and least anomalous test clips"
DATA = "Data summary"
LEADERBOARD = "Leaderboard"
RUN_SECTIONS = (OVERVIEW, PER_ID, ROC, HISTOGRAMS, THRESHOLDS, TRAINING, EXAMPLES)
ORACLE_LABEL = "oracle (uses test labels)"


def default_report_path(result_dir: str | Path) -> Path:
    """``RESULT_DIR/report/report.html``."""
    return Path(result_dir) / REPORT_FOLDER / REPORT_FILE


def figures_folder(report_path: str | Path) -> Path:
    """Where the PNGs of a report go: ``<stem>_figures/`` beside the HTML file."""
    report_path = Path(report_path)
    return report_path.with_name(f"{report_path.stem}_figures")


@dataclass
class _Page:
    """Collects the body, table of contents and PNGs of one report."""

    html_dir: Path
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str, int]] = field(default_factory=list)
    pngs: dict[str, bytes] = field(default_factory=dict)

    def add(self, *fragments: str) -> None:
        self.parts.extend(fragments)

    def heading(self, text: str, level: int, anchor: str) -> None:
        self.toc.append((text, anchor, level))
        self.add(h.heading(text, level, anchor))

    def figure(self, figure, name: str, alt: str, caption: str = "") -> None:
        png = plots.figure_png(figure)
        figure.clear()  # free the Agg buffers now; reports hold many figures
        self.pngs[name] = png
        self.add(h.image(png, alt, caption))

    def link(self, path: Path) -> str:
        """A relative URL from the report to ``path`` (works over file://)."""
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.html_dir))
        return urllib.parse.quote(Path(relative).as_posix())


# ----------------------------------------------------------------------------- helpers
def _method_text(spec: str) -> str:
    """``gamma:0.9 (the 0.9 quantile of ... of held-out normal training clips)``."""
    try:
        method = parse_threshold_method(spec)
    except ConfigError:
        return spec
    return f"{method.spec} ({method.description} of held-out normal training clips)"


def _decisions(entry: IdScores) -> np.ndarray | None:
    if entry.decisions is not None:
        return entry.decisions
    if entry.threshold is not None:
        return (entry.scores > entry.threshold).astype(int)
    return None


def _by_id(run: RunData) -> dict[str, tuple[np.ndarray, np.ndarray, float | None]]:
    return {e.machine_id: (e.is_anomaly, e.scores, e.threshold) for e in run.labelled_ids}


def _pooled(run: RunData, thresholds: Callable[[IdScores], float]) -> BinaryMetrics:
    total = BinaryMetrics(0, 0, 0, 0)
    for entry in run.labelled_ids:
        total = total + metrics_at(entry.is_anomaly, entry.scores, thresholds(entry))
    return total


def _calibration_text(run: RunData, n_calibration: int) -> str:
    """What the threshold was fitted on, in words."""
    info = run.result.get("calibration") or (run.model_meta.get("threshold") or {}).get(
        "calibration"
    )
    if info and info.get("description"):
        return str(info["description"])
    if not n_calibration:
        return "held-out normal training clips (their scores are not in this model file)"
    if run.calibration_source == "training":
        return calibration_description("training", n_calibration)
    return f"{n_calibration} {run.calibration_source or 'held-out'} normal training clips"


def _decision_warnings(run: RunData, n_calibration: int) -> list[str]:
    """Sentences for the overview when the decisions cannot be trusted as they stand."""
    warnings = []
    if run.calibration_source == "training":
        warnings.append(
            f"The threshold was fitted on {_calibration_text(run, n_calibration)}, so it "
            "flags too many normal clips. Use a validation_fraction above 0, more training "
            "clips or --calibrate-on DIR."
        )
    unusable = unusable_decisions(run.result)
    if unusable:
        warnings.append(unusable)
    return warnings


# ----------------------------------------------------------------------------- sections
def _overview(page: _Page, run: RunData, level: int, anchor: str) -> None:
    page.heading(OVERVIEW, level, anchor)
    result = run.result
    calibration = run.calibration_scores
    n_calibration = sum(len(v) for v in calibration.values())
    calibration_text = _calibration_text(run, n_calibration)
    rows = [
        ("machine type", run.machine_type),
        ("detector", run.detector),
        ("decision threshold", _method_text(run.threshold_spec)),
        ("threshold fitted on", calibration_text),
        ("mean AUC / pAUC", f"{h.fmt(result.get('mean_auc'))} / {h.fmt(result.get('mean_pauc'))}"),
        (
            "harmonic mean AUC / pAUC",
            f"{h.fmt(result.get('hmean_auc'))} / {h.fmt(result.get('hmean_pauc'))}",
        ),
        (
            "fit / score time",
            f"{h.fmt(result.get('fit_seconds'), 1)} s / {h.fmt(result.get('score_seconds'), 1)} s",
        ),
        ("peak memory", f"{h.fmt(result.get('peak_memory_mb'), 0)} MiB"),
        ("results folder", str(run.folder)),
    ]
    page.add(h.table([], rows))
    for warning in _decision_warnings(run, n_calibration):
        page.add(h.paragraph(warning, "warning"))
    params = result.get("params") or run.model_meta.get("params") or {}
    if params:
        page.add(
            h.details(
                "detector parameters", h.table(["parameter", "value"], sorted(params.items()))
            )
        )


def _per_id(page: _Page, run: RunData, level: int, anchor: str) -> None:
    page.heading(PER_ID, level, anchor)
    page.add(
        h.paragraph(
            "AUC and pAUC (FPR ≤ 0.1, McClish-standardised) as in DCASE 2020 Task 2. "
            "Precision, recall, F1 and accuracy are those of the decisions in "
            f"decision_result_*.csv, made at the threshold {_method_text(run.threshold_spec)}; "
            "no test labels are used to set it. Anomalous is the positive class.",
            "note",
        )
    )
    auc = {str(r["id"]): r for r in run.result.get("per_id") or []}
    rows, total = [], BinaryMetrics(0, 0, 0, 0)
    unlabelled = []
    for entry in run.ids:
        decisions = _decisions(entry)
        if not entry.labelled or decisions is None:
            unlabelled.append(entry.machine_id)
            continue
        m = binary_metrics(entry.is_anomaly, decisions)
        total = total + m
        r = auc.get(entry.machine_id, {})
        rows.append(
            [
                entry.machine_id,
                int((~entry.is_anomaly).sum()),
                int(entry.is_anomaly.sum()),
                r.get("auc"),
                r.get("pauc"),
                entry.threshold,
                "pooled" if entry.threshold_pooled else "this ID",
                m.precision,
                m.recall,
                m.f1,
                m.accuracy,
            ]
        )
    if not rows:
        page.add(h.paragraph("No labelled test clips: scores and decisions only, no metrics."))
        return
    rows.append(
        [
            "all IDs",
            total.tn + total.fp,
            total.tp + total.fn,
            run.result.get("mean_auc"),
            run.result.get("mean_pauc"),
            None,
            None,
            total.precision,
            total.recall,
            total.f1,
            total.accuracy,
        ]
    )
    header = [
        "machine ID",
        "normal",
        "anomalous",
        "AUC",
        "pAUC",
        "threshold",
        "fitted on",
        "precision",
        "recall",
        "F1",
        "accuracy",
    ]
    page.add(h.table(header, rows, row_classes=[""] * (len(rows) - 1) + ["total"]))
    page.add(
        h.paragraph(
            "The all-IDs row has the mean AUC and pAUC over IDs, and "
            "precision to accuracy of all clips pooled. A threshold is fitted on an ID's "
            f"own held-out normals when it has at least {MIN_CLIPS_PER_ID} of them, else on "
            "those of all IDs pooled.",
            "note",
        )
    )
    per_kind = run.result.get("per_kind") or {}
    if per_kind:
        page.add(
            h.table(
                ["anomaly kind", "anomalous", "AUC", "pAUC"],
                [[k, e.get("n_anomaly"), e.get("auc"), e.get("pauc")] for k, e in per_kind.items()],
            )
        )
        page.add(
            h.paragraph(
                "Per anomaly kind (from the synthetic data set's manifest): each ID's "
                "normal test clips against its anomalies of that kind only, mean over IDs.",
                "note",
            )
        )
    if unlabelled:
        page.add(
            h.paragraph(
                f"Machine IDs without labelled normal and anomalous test clips "
                f"(not shown): {', '.join(unlabelled)}.",
                "note",
            )
        )


def _roc(page: _Page, run: RunData, level: int, anchor: str, prefix: str) -> None:
    page.heading(ROC, level, anchor)
    by_id = _by_id(run)
    if not by_id:
        page.add(h.paragraph("No labelled test clips, so no ROC curves."))
        return
    page.figure(
        plots.roc_figure(by_id),
        f"{prefix}roc.png",
        "ROC curves per machine ID",
        "Shaded: the pAUC range (FPR ≤ 0.1). Red dot: the decision threshold. Open grey "
        "dot: Youden's J, an oracle operating point chosen on the test labels.",
    )


def _histograms(page: _Page, run: RunData, level: int, anchor: str, prefix: str) -> None:
    page.heading(HISTOGRAMS, level, anchor)
    by_id = _by_id(run)
    if not by_id:
        page.add(h.paragraph("No labelled test clips, so no class histograms."))
        return
    page.figure(
        plots.histogram_figure(by_id),
        f"{prefix}histograms.png",
        "score histograms of normal and anomalous clips",
        f"Dashed: the decision threshold ({run.threshold_spec}); clips to its right are "
        "flagged anomalous.",
    )


def _thresholds(page: _Page, run: RunData, level: int, anchor: str) -> None:
    page.heading(THRESHOLDS, level, anchor)
    labelled = run.labelled_ids
    if not labelled:
        page.add(h.paragraph("No labelled test clips to compare threshold methods on."))
        return
    calibration = run.calibration_scores
    header = [
        "method",
        "fitted on",
        "threshold per machine ID",
        "precision",
        "recall",
        "F1",
        "accuracy",
    ]
    rows, classes = [], []

    def add(name: str, source: str, values: dict[str, float], css: str) -> None:
        m = _pooled(run, lambda e: values[e.machine_id])
        if len(set(values.values())) == 1 and len(values) > 1:
            text = f"all IDs: {h.fmt(next(iter(values.values())))}"
        else:
            text = ", ".join(f"{k}: {h.fmt(v)}" for k, v in values.items())
        rows.append([name, source, text, m.precision, m.recall, m.f1, m.accuracy])
        classes.append(css)

    if calibration:
        specs = list(COMPARED_METHODS)
        used = parse_threshold_method(run.threshold_spec).spec
        if used not in specs:
            specs.insert(0, used)
        for spec in specs:
            method = parse_threshold_method(spec)
            fitted = fit_thresholds(calibration, method, min_clips=MIN_CLIPS_PER_ID)
            values = {e.machine_id: lookup_threshold(fitted, e.machine_id)[1] for e in labelled}
            name = f"{method.spec} (used)" if method.spec == used else method.spec
            add(
                name,
                f"{run.calibration_source or 'held-out'} normals",
                values,
                "used" if method.spec == used else "",
            )
    else:
        values = {e.machine_id: e.threshold for e in labelled if e.threshold is not None}
        if len(values) == len(labelled):
            add(f"{run.threshold_spec} (used)", "held-out normals", values, "used")
        page.add(
            h.paragraph(
                "This model file holds no held-out normal scores (written before "
                "soundwatch stored them), so only the threshold used is shown; "
                "retrain to compare methods.",
                "note",
            )
        )
    for name, oracle in (("best F1", best_f1_threshold), ("Youden's J", youden_threshold)):
        values = {e.machine_id: oracle(e.is_anomaly, e.scores) for e in labelled}
        add(f"{name} — {ORACLE_LABEL}", "test labels", values, "oracle")
    page.add(h.table(header, rows, row_classes=classes))
    page.add(
        h.paragraph(
            "gamma:Q is the Q quantile of a gamma distribution fitted to the held-out normal "
            "scores, percentile:P their empirical P-th percentile, meanstd:K their mean plus K "
            "standard deviations; each per machine ID with enough held-out clips, else pooled. "
            "Metrics pool the test clips of all IDs. The oracle rows pick, per ID, the "
            "threshold that maximises F1 or TPR − FPR on the test labels themselves: upper "
            "bounds for comparison that need labels, not thresholds one could deploy. "
            "Change a model's method with `soundwatch score --threshold METHOD`.",
            "note",
        )
    )


def _training(page: _Page, run: RunData, level: int, anchor: str, prefix: str) -> None:
    page.heading(TRAINING, level, anchor)
    if run.model_path is None:
        page.add(h.paragraph("No model file in the results folder, so no training curves."))
        return
    history = run.history
    if not plots.has_training_curves(history):
        page.add(
            h.paragraph(f"{run.detector} is not a neural detector: it has no training curves.")
        )
        return
    best = history.get("best_epoch")
    caption = "Loss per epoch on the training batches and on the held-out normals."
    if isinstance(best, int) and best >= 0:
        caption += f" The weights of epoch {best + 1} (best validation loss) were kept."
    page.figure(
        plots.training_curves_figure(history),
        f"{prefix}training.png",
        "training and validation loss per epoch",
        caption,
    )


def _load_detector(run: RunData):
    """(detector or None, note)."""
    if run.model_path is None:
        return None, "no model file in the results folder"
    try:
        from soundwatch.detectors.base import Detector

        return Detector.load(run.model_path), ""
    except SoundwatchError as exc:
        return None, f"model not loadable ({exc})"


def _example_items(run: RunData, n: int) -> list[tuple[str, int, IdScores, int]]:
    """(group, rank, ID entry, clip index) of the ``n`` highest- and lowest-scored clips;
    the lowest come lowest first, and no clip is shown twice."""
    items = [(e, i) for e in run.ids for i in range(len(e.names))]
    items.sort(key=lambda item: -float(item[0].scores[item[1]]))
    top = items[:n]
    bottom = [item for item in reversed(items) if item not in top][:n]
    return [("most anomalous", r, e, i) for r, (e, i) in enumerate(top, 1)] + [
        ("least anomalous", r, e, i) for r, (e, i) in enumerate(bottom, 1)
    ]


def _examples(page: _Page, run: RunData, level: int, anchor: str, prefix: str, n: int) -> None:
    from soundwatch.data.datasets import clip_from_path
    from soundwatch.features.extract import extract_logmel
    from soundwatch.features.logmel import LogMelConfig

    page.heading(EXAMPLES, level, anchor)
    detector, note = _load_detector(run)
    config = detector.logmel_config() if hasattr(detector, "logmel_config") else LogMelConfig()
    cards, n_maps = [], 0
    for group, rank, entry, i in _example_items(run, n):
        name, score, label = entry.names[i], float(entry.scores[i]), entry.labels[i]
        css = label if label in ("normal", "anomaly") else "unknown"
        facts = [
            f"machine ID {h.escape(entry.machine_id)}",
            h.badge(label or "unlabelled", css),
            f"score {h.escape(h.fmt(score))}",
        ]
        if entry.threshold is not None:
            decided = "anomalous" if score > entry.threshold else "normal"
            facts.append(f"threshold {h.escape(h.fmt(entry.threshold))} → decided {decided}")
        path = entry.paths[i]
        audio = ""
        if path is None or not path.is_file():
            body = h.paragraph("audio file not found (data folder moved?)", "note")
        else:
            audio = h.audio_player(page.link(path), path.name)
            try:
                clip = clip_from_path(path)
                logmel = extract_logmel([clip], config)[0]
                amap = detector.anomaly_map(clip) if detector is not None else None
                figure = plots.clip_figure(
                    logmel, amap, sample_rate=config.sample_rate, hop_length=config.hop_length
                )
                png = plots.figure_png(figure)
                figure.clear()
                n_maps += amap is not None
                kind = "top" if group == "most anomalous" else "bottom"
                page.pngs[f"{prefix}clip_{kind}{rank}.png"] = png
                what = "log-mel and anomaly map" if amap is not None else "log-mel"
                body = h.image(png, f"{what} of {name}")
            except SoundwatchError as exc:
                body = h.paragraph(f"could not analyse this clip: {exc}", "note")
        cards.append(h.card(css, f"{group} #{rank}: {name}", facts, audio, body))
    if n_maps:
        text = (
            "Left: the log-mel spectrogram. Right: the detector's anomaly map, its error in "
            "each time-frequency cell averaged over the windows covering it (grey: no "
            "window makes a claim there); bright regions drive the score."
        )
    else:
        reason = note or f"{run.detector} cannot localise its score"
        text = f"Log-mel spectrograms; no anomaly map for this detector ({reason})."
    page.add(h.paragraph(text + " Audio links are relative paths to the data set.", "note"))
    # Without maps a figure is half as wide, so two cards fit side by side.
    page.add(h.cards(cards, columns=1 if n_maps else 2))


def _data_summary(page: _Page, run: RunData, level: int, anchor: str) -> None:
    page.heading(DATA, level, anchor)
    summary = summarize_data(run.data_root, run.machine_type, run.ids)
    rows = [
        [
            r["machine_id"],
            r["split"],
            r["normal"],
            r["anomaly"],
            r["unlabelled"],
            r["hours"],
            None if r["min_s"] is None else f"{r['min_s']:.2f}–{r['max_s']:.2f}",
        ]
        for r in summary.rows
    ]
    page.add(
        h.table(
            [
                "machine ID",
                "split",
                "normal",
                "anomalous",
                "unlabelled",
                "total hours",
                "clip seconds (min–max)",
            ],
            rows,
            digits=3,
        )
    )

    def counts(counter, unit: str = "") -> str:
        return ", ".join(f"{k}{unit} ({v} clips)" for k, v in sorted(counter.items())) or "–"

    facts = [
        ("sample rates", counts(summary.sample_rates, " Hz")),
        ("channels", counts(summary.channels)),
        ("sample formats", counts(summary.subtypes)),
    ]
    if summary.n_unreadable:
        facts.append(("unreadable files", str(summary.n_unreadable)))
    fit_info = run.model_meta.get("fit_info") or {}
    if fit_info.get("n_train") is not None:
        facts.append(
            (
                "training split",
                f"{fit_info['n_train']} clips trained on, "
                f"{fit_info.get('n_validation', 0)} held out for "
                "validation and the threshold",
            )
        )
    page.add(h.table([], facts))
    page.add(h.paragraph(f"Source: {summary.note}.", "note"))


def _run_sections(
    page: _Page, run: RunData, level: int, prefix: str, n_examples: int, data: bool
) -> None:
    def anchor(title: str) -> str:
        return h.slug(f"{prefix}{title}")

    _overview(page, run, level, anchor(OVERVIEW))
    _per_id(page, run, level, anchor(PER_ID))
    _roc(page, run, level, anchor(ROC), prefix)
    _histograms(page, run, level, anchor(HISTOGRAMS), prefix)
    _thresholds(page, run, level, anchor(THRESHOLDS))
    _training(page, run, level, anchor(TRAINING), prefix)
    _examples(page, run, level, anchor(EXAMPLES), prefix, n_examples)
    if data:
        _data_summary(page, run, level, anchor(DATA))


def _leaderboard(page: _Page, bench: BenchData) -> None:
    page.heading(LEADERBOARD, 2, h.slug(LEADERBOARD))
    if any(r.get("mean_auc") is not None for r in bench.rows):
        page.figure(
            plots.leaderboard_figure(bench.rows),
            "leaderboard.png",
            "mean AUC and pAUC per detector",
            "Mean over machine IDs of AUC and pAUC; dotted: a random detector.",
        )
    reported = {run.detector for run in bench.runs}
    rows = []
    for r in bench.rows:
        name = str(r.get("detector", "?"))
        cell = h.link("#" + h.slug("det-" + name), name) if name in reported else name
        rows.append(
            [
                r.get("rank"),
                cell,
                r.get("mean_auc"),
                r.get("mean_pauc"),
                r.get("hmean_auc"),
                r.get("hmean_pauc"),
                r.get("fit_seconds"),
                r.get("score_seconds"),
                r.get("peak_memory_mb"),
                r.get("error") or "",
            ]
        )
    page.add(
        h.table(
            [
                "rank",
                "detector",
                "mean AUC",
                "mean pAUC",
                "hmean AUC",
                "hmean pAUC",
                "fit s",
                "score s",
                "peak MiB",
                "error",
            ],
            rows,
            digits=[0, 0, 4, 4, 4, 4, 1, 1, 0, 0],
        )
    )


# ----------------------------------------------------------------------------- entry point
def _check_targets(report: Path, figures: Path, overwrite: bool) -> None:
    if report.exists() and not report.is_file():
        raise ConfigError(f"{report} exists and is not a file")
    if report.exists() and not overwrite:
        raise ConfigError(f"{report} already exists; choose another --out or pass --overwrite")
    if figures.exists() and not figures.is_dir():
        raise ConfigError(f"{figures} exists and is not a folder")
    if figures.is_dir() and any(figures.iterdir()) and not overwrite:
        raise ConfigError(f"{figures} is not empty; choose another --out or pass --overwrite")


def build_report(
    result_dir: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    n_examples: int = 3,
) -> Path:
    """Write the HTML report of an evaluate or bench folder, and its PNGs.

    Parameters
    ----------
    result_dir : str or Path
        An ``evaluate`` output folder (``result.json``) or a ``bench`` folder
        (``leaderboard.json``).
    out : str or Path, optional
        The HTML file to write (default ``RESULT_DIR/report/report.html``); the PNGs go
        to ``<stem>_figures/`` beside it.
    overwrite : bool, default=False
        Replace an existing report (its old PNGs are removed; nothing else is touched).
        Without it an existing report file or a non-empty figures folder is an error.
    n_examples : int, default=3
        How many most and least anomalous test clips to show per detector.

    Returns
    -------
    path : Path
        The HTML file written.

    Raises
    ------
    ConfigError
        Not a results folder, a bad ``out``, or a report already there.
    """
    result_dir = Path(result_dir)
    if not result_dir.is_dir():
        raise ConfigError(f"results folder not found: {result_dir}")
    bench = is_bench_folder(result_dir)
    if not bench and not (result_dir / RESULT_FILE).is_file():
        raise ConfigError(
            f"{result_dir} is neither an evaluate folder ({RESULT_FILE}) nor a bench folder "
            "(leaderboard.json)"
        )
    if n_examples < 0:
        raise ConfigError(f"--examples must be >= 0, got {n_examples}")
    report = Path(out) if out is not None else default_report_path(result_dir)
    if report.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"report file must end in .html, got {report}")
    figures = figures_folder(report)
    _check_targets(report, figures, overwrite)

    page = _Page(report.parent)
    if bench:
        data = load_bench(result_dir)
        title = f"soundwatch bench report: {data.machine_type}"
        lead = (
            f"{len(data.rows)} detectors on {data.machine_type}, from {result_dir}. "
            f"Per-detector sections follow the leaderboard."
        )
        _leaderboard(page, data)
        if data.runs:
            _data_summary(page, data.runs[0], 2, h.slug(DATA))
        for run in data.runs:
            page.heading(f"Detector: {run.detector}", 2, h.slug(f"det-{run.detector}"))
            _run_sections(page, run, 3, f"{run.detector}_", n_examples, data=False)
    else:
        run = load_run(result_dir)
        title = f"soundwatch report: {run.detector} on {run.machine_type}"
        lead = f"Evaluation results from {result_dir}."
        _run_sections(page, run, 2, "", n_examples, data=True)

    header = h.heading(title, 1, "top") + h.paragraph(lead, "lead")
    body = header + h.toc(page.toc) + "".join(page.parts)

    if overwrite and figures.is_dir():
        for old in figures.glob("*.png"):  # only what a report writes; keep anything else
            old.unlink()
    figures.mkdir(parents=True, exist_ok=True)
    for name, png in page.pngs.items():
        with atomic_path(figures / name) as tmp:
            tmp.write_bytes(png)
    atomic_write_text(report, h.document(title, body))
    return report
