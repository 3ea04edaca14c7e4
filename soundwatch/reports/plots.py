"""Report figures: plain functions that return :class:`matplotlib.figure.Figure` objects.

Figures are built with the object API on an Agg canvas, never through ``pyplot``: no
global figure registry to leak memory in a long report, no GUI backend needed, and the
caller's own matplotlib backend is left alone. :func:`figure_png` renders one to PNG
bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from PIL import Image

from soundwatch.evaluation.decisions import metrics_at, roc_points, youden_threshold

#: Colours of normal and anomalous clips, the decision threshold and oracle points.
NORMAL_COLOR = "#3b75af"
ANOMALY_COLOR = "#d1495b"
THRESHOLD_COLOR = "#222222"
ORACLE_COLOR = "#8c8c8c"
# Axes per row of a per-ID grid: four keep each panel readable at report width.
_GRID_COLUMNS = 4


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """An empty figure (inches) on an Agg canvas."""
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes, with a 256-colour palette.

    Spectrograms are noisy images that compress poorly as 24-bit PNG (about 250 kB per
    clip figure); an adaptive palette keeps them visually identical at a third of the
    size, which matters for a page that embeds dozens of them.
    """
    figure.set_dpi(dpi)
    canvas = (
        figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    )
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    image = rgb.quantize(256, method=Image.Quantize.FASTOCTREE)
    # The octree averages colours, so the white background comes out 254-grey; snap
    # near-white palette entries back to white so figures blend into the page.
    palette = image.getpalette()
    for k in range(0, len(palette), 3):
        if min(palette[k : k + 3]) >= 250:
            palette[k : k + 3] = [255, 255, 255]
    image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _grid(n_panels: int, panel_width: float, panel_height: float) -> tuple[Figure, list]:
    columns = min(n_panels, _GRID_COLUMNS)
    rows = -(-n_panels // columns)
    figure = new_figure(panel_width * columns, panel_height * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return figure, list(axes[:n_panels])


def roc_figure(
    by_id: Mapping[str, tuple[np.ndarray, np.ndarray, float | None]], max_fpr: float = 0.1
) -> Figure:
    """ROC curve of every machine ID, with the pAUC region and the operating point.

    Parameters
    ----------
    by_id : mapping of str to (is_anomaly, scores, threshold)
        Per machine ID: boolean labels and scores of shape (n_clips,), and the decision
        threshold (None: no operating point).
    max_fpr : float, default=0.1
        The pAUC range, FPR in [0, max_fpr], is shaded.

    Returns
    -------
    figure : Figure
        One panel per ID. The operating point (FPR, TPR of ``score > threshold``) is a
        filled dot; the oracle Youden point (chosen on these labels) an open grey one.
    """
    figure, axes = _grid(len(by_id), 3.2, 3.2)
    for ax, (machine_id, (y, scores, threshold)) in zip(axes, by_id.items(), strict=True):
        fpr, tpr = roc_points(y, scores)
        ax.axvspan(
            0, max_fpr, color="#f2d7a6", alpha=0.6, lw=0, label=f"pAUC region (FPR ≤ {max_fpr:g})"
        )
        ax.plot([0, 1], [0, 1], ls=":", color="#999999", lw=1)
        ax.plot(fpr, tpr, color=NORMAL_COLOR, lw=2, drawstyle="steps-post", label="ROC")
        oracle = metrics_at(y, scores, youden_threshold(y, scores))
        ax.plot(
            oracle.fpr,
            oracle.recall,
            "o",
            mfc="white",
            mec=ORACLE_COLOR,
            ms=8,
            label="Youden J (oracle)",
        )
        if threshold is not None:
            point = metrics_at(y, scores, threshold)
            ax.plot(
                point.fpr, point.recall, "o", color=ANOMALY_COLOR, ms=7, label="decision threshold"
            )
        ax.set(
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.01),
            xlabel="false-positive rate",
            ylabel="true-positive rate",
            title=f"machine ID {machine_id}",
            aspect="equal",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=7, framealpha=0.9)
    return figure


def histogram_figure(
    by_id: Mapping[str, tuple[np.ndarray, np.ndarray, float | None]], bins: int = 30
) -> Figure:
    """Score histograms of normal and anomalous test clips per machine ID, with the
    decision threshold as a vertical line.

    Parameters
    ----------
    by_id : mapping of str to (is_anomaly, scores, threshold)
        As for :func:`roc_figure`.
    bins : int, default=30
        Bins over each ID's score range, shared by both classes. Positive scores that
        span more than a factor of 10 get logarithmic bins and axis.
    """
    figure, axes = _grid(len(by_id), 3.6, 2.6)
    for ax, (machine_id, (y, scores, threshold)) in zip(axes, by_id.items(), strict=True):
        y = np.asarray(y, dtype=bool)
        values = np.asarray(scores, dtype=float)
        span = np.append(values, threshold) if threshold is not None else values
        if (span > 0).all() and span.max() > 10 * span.min():
            # Squared errors and distances are heavy-tailed: on a linear axis the normal
            # clips and the threshold crowd into the first few bins.
            edges = np.geomspace(span.min(), span.max(), bins + 1)
            ax.set_xscale("log")
            # Ticks at 1, 2, 5 x 10^k as plain numbers; the default labels every minor
            # tick as 2x10^2, 3x10^2... which overlap on a narrow panel.
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            edges = np.histogram_bin_edges(span, bins=bins)
        ax.hist(
            values[~y], bins=edges, color=NORMAL_COLOR, alpha=0.6, label=f"normal ({(~y).sum()})"
        )
        ax.hist(
            values[y], bins=edges, color=ANOMALY_COLOR, alpha=0.6, label=f"anomalous ({y.sum()})"
        )
        if threshold is not None:
            ax.axvline(threshold, color=THRESHOLD_COLOR, ls="--", lw=1.5, label="threshold")
        ax.set(xlabel="anomaly score", ylabel="clips", title=f"machine ID {machine_id}")
        ax.legend(fontsize=7)
    return figure


def _curves(history: dict) -> dict[str, dict]:
    """Named training curves: the history itself, or the members' of an ensemble."""
    if history.get("train_loss"):
        return {"": history}
    return {
        str(name): sub
        for name, sub in history.items()
        if isinstance(sub, dict) and sub.get("train_loss")
    }


def has_training_curves(history: dict) -> bool:
    """Whether a detector's ``history_`` holds any training curves."""
    return bool(_curves(history or {}))


def training_curves_figure(history: dict) -> Figure:
    """Training and validation loss per epoch (log scale), the learning rate, and the
    kept (best validation) epoch.

    Parameters
    ----------
    history : dict
        A neural detector's ``history_`` (``train_loss``, ``valid_loss``,
        ``learning_rate``, ``best_epoch``), or an ensemble's, which holds its members'
        histories under their names.

    Raises
    ------
    ValueError
        If there are no curves (check :func:`has_training_curves` first).
    """
    curves = _curves(history)
    if not curves:
        raise ValueError("no training curves in this history")
    figure, axes = _grid(len(curves), 5.0, 3.0)
    for ax, (name, curve) in zip(axes, curves.items(), strict=True):
        train = np.asarray(curve.get("train_loss") or [], dtype=float)
        valid = np.asarray(curve.get("valid_loss") or [], dtype=float)
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, "-o", ms=3, color=NORMAL_COLOR, label="training loss")
        if valid.size:
            ax.plot(
                np.arange(1, len(valid) + 1),
                valid,
                "-o",
                ms=3,
                color=ANOMALY_COLOR,
                label="validation loss",
            )
        best = curve.get("best_epoch", -1)
        if isinstance(best, int) and best >= 0:
            # best_epoch is 0-based in the training loop; epochs are shown from 1.
            ax.axvline(best + 1, color=THRESHOLD_COLOR, ls="--", lw=1, label="kept epoch")
        values = np.concatenate([train, valid])
        # Log scale only when the loss falls by more than an order of magnitude; over a
        # narrow range it just adds odd tick labels.
        if values.size and (values > 0).all() and values.max() / values.min() > 10:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="loss", title=name or None)
        rates = curve.get("learning_rate") or []
        if rates and len(set(rates)) > 1:
            twin = ax.twinx()
            twin.plot(
                np.arange(1, len(rates) + 1), rates, color=ORACLE_COLOR, lw=1, label="learning rate"
            )
            twin.set_ylabel("learning rate", color=ORACLE_COLOR)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    return figure


def _time_extent(n_frames: int, n_mels: int, sample_rate: int, hop_length: int) -> list:
    seconds = n_frames * hop_length / sample_rate
    return [0.0, seconds, -0.5, n_mels - 0.5]


def _show_logmel(
    ax, figure: Figure, logmel: np.ndarray, sample_rate: int, hop_length: int, cax=None
) -> None:
    image = ax.imshow(
        logmel,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=_time_extent(logmel.shape[1], logmel.shape[0], sample_rate, hop_length),
    )
    ax.set(xlabel="time (s)", ylabel="mel band", title="log-mel spectrogram")
    figure.colorbar(image, ax=None if cax else ax, cax=cax, label="dB", pad=0.01)


def _show_map(
    ax, figure: Figure, anomaly_map: np.ndarray, sample_rate: int, hop_length: int, cax=None
) -> None:
    finite = anomaly_map[np.isfinite(anomaly_map)]
    # Clip at the 99.5th percentile: squared errors are heavy-tailed and a few hot cells
    # would otherwise wash the rest of the map out.
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    masked = np.ma.masked_invalid(anomaly_map)
    image = ax.imshow(
        masked,
        origin="lower",
        aspect="auto",
        cmap="inferno",
        vmin=0.0,
        vmax=top or 1.0,
        extent=_time_extent(anomaly_map.shape[1], anomaly_map.shape[0], sample_rate, hop_length),
    )
    ax.set_facecolor("#d9d9d9")  # cells without a value (NaN) show grey
    ax.set(xlabel="time (s)", ylabel="mel band", title="anomaly map (per-cell error)")
    figure.colorbar(image, ax=None if cax else ax, cax=cax, label="error", pad=0.01)


def clip_figure(
    logmel: np.ndarray,
    anomaly_map: np.ndarray | None,
    *,
    sample_rate: int,
    hop_length: int,
    title: str = "",
) -> Figure:
    """Log-mel spectrogram and anomaly map of one clip, side by side.

    Parameters
    ----------
    logmel : ndarray of shape (n_mels, n_frames)
    anomaly_map : ndarray of shape (n_mels, n_frames) or None
        From :meth:`soundwatch.detectors.Detector.anomaly_map`; NaN cells are grey.
        None draws the log-mel alone, in a figure half as wide.
    sample_rate, hop_length : int
        For the time axis in seconds.
    title : str
    """
    # Fixed margins instead of constrained layout: this figure comes six times per
    # detector and the layout solver costs more than the drawing.
    panels = 1 if anomaly_map is None else 2
    figure = new_figure(5.0 * panels, 2.8, layout=None)
    figure.subplots_adjust(
        left=0.12 / panels,
        right=1 - 0.06 / panels,
        bottom=0.17,
        top=0.82 if title else 0.9,
        wspace=0.22,
    )
    axes = np.atleast_1d(figure.subplots(1, panels))
    _show_logmel(axes[0], figure, logmel, sample_rate, hop_length)
    if anomaly_map is not None:
        _show_map(axes[1], figure, anomaly_map, sample_rate, hop_length)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def inspect_figure(
    waveform: np.ndarray,
    logmel: np.ndarray,
    anomaly_map: np.ndarray | None,
    *,
    sample_rate: int,
    hop_length: int,
    title: str = "",
) -> Figure:
    """Waveform, log-mel spectrogram and anomaly map of one clip, stacked on one time axis.

    Parameters
    ----------
    waveform : ndarray of shape (n_samples,)
        At ``sample_rate``.
    logmel, anomaly_map, sample_rate, hop_length, title
        As for :func:`clip_figure`; without a map the figure has two panels.
    """
    rows = 2 if anomaly_map is None else 3
    figure = new_figure(9.0, 2.7 * rows)
    # An explicit colorbar column keeps the time axes of all panels aligned.
    grid = figure.add_gridspec(rows, 2, width_ratios=[40, 1])
    ax_wave = figure.add_subplot(grid[0, 0])
    t = np.arange(len(waveform)) / sample_rate
    # Plotting every sample would be 160 k points per 10 s; a min/max envelope per
    # block of samples looks the same and renders fast.
    step = max(1, len(waveform) // 2000)
    if step > 1:
        n = len(waveform) // step * step
        blocks = waveform[:n].reshape(-1, step)
        ax_wave.fill_between(
            t[:n:step], blocks.min(axis=1), blocks.max(axis=1), color=NORMAL_COLOR, lw=0
        )
    else:
        ax_wave.plot(t, waveform, color=NORMAL_COLOR, lw=0.5)
    ax_wave.set(
        xlim=(0, len(waveform) / sample_rate),
        xlabel="time (s)",
        ylabel="amplitude",
        title="waveform",
    )
    ax_mel = figure.add_subplot(grid[1, 0], sharex=ax_wave)
    _show_logmel(
        ax_mel, figure, logmel, sample_rate, hop_length, cax=figure.add_subplot(grid[1, 1])
    )
    if anomaly_map is not None:
        ax_map = figure.add_subplot(grid[2, 0], sharex=ax_wave)
        cax = figure.add_subplot(grid[2, 1])
        _show_map(ax_map, figure, anomaly_map, sample_rate, hop_length, cax=cax)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def leaderboard_figure(rows: Sequence[dict]) -> Figure:
    """Horizontal bars of mean AUC and pAUC per detector, best first.

    Parameters
    ----------
    rows : sequence of dict
        Leaderboard rows (``detector``, ``mean_auc``, ``mean_pauc``, ``rank``); rows
        without a mean AUC (failed detectors) are left out.
    """
    done = [r for r in rows if r.get("mean_auc") is not None]
    done.sort(key=lambda r: r.get("rank", 0))
    figure = new_figure(8.0, 0.9 + 0.45 * max(1, len(done)))
    ax = figure.subplots()
    positions = np.arange(len(done))
    height = 0.38
    auc = [r["mean_auc"] for r in done]
    pauc = [r.get("mean_pauc") or 0.0 for r in done]
    ax.barh(positions - height / 2, auc, height, color=NORMAL_COLOR, label="mean AUC")
    ax.barh(positions + height / 2, pauc, height, color="#e8a33d", label="mean pAUC")
    for y, value in zip(positions - height / 2, auc, strict=True):
        ax.text(value + 0.005, y, f"{value:.3f}", va="center", fontsize=8)
    for y, value in zip(positions + height / 2, pauc, strict=True):
        ax.text(value + 0.005, y, f"{value:.3f}", va="center", fontsize=8)
    ax.set_yticks(positions, [r["detector"] for r in done])
    ax.invert_yaxis()  # rank 1 on top
    ax.axvline(0.5, color="#999999", ls=":", lw=1)  # a random detector
    ax.set(xlim=(0, 1.08), xlabel="score (0.5 = random)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return figure
