"""``soundwatch inspect``: score one clip with a model and draw where it looks anomalous."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from soundwatch.data.audio import load_audio
from soundwatch.data.datasets import clip_from_path
from soundwatch.detectors.base import Detector
from soundwatch.features.extract import extract_logmel
from soundwatch.features.logmel import LogMelConfig
from soundwatch.reports import plots


@dataclass
class Inspection:
    """What :func:`inspect_clip` found.

    Attributes
    ----------
    path : Path
    machine_id : str or None
        Read from the file name; picks the per-ID threshold.
    score, threshold : float
    decision : int
        1 (anomalous) when ``score > threshold``, else 0.
    method : str
        The threshold method spec, e.g. ``gamma:0.9``.
    threshold_source : str
        ``machine ID 00``, ``pooled`` or ``pooled (no threshold for ID 06)``.
    has_map : bool
        Whether the detector produced an anomaly map.
    figure : Figure
        Waveform, log-mel spectrogram and anomaly map.
    """

    path: Path
    machine_id: str | None
    score: float
    threshold: float
    decision: int
    method: str
    threshold_source: str
    has_map: bool
    figure: Figure


def inspect_clip(
    path: str | Path, model: str | Path | Detector, threshold: str | None = None
) -> Inspection:
    """Score one audio file and draw its waveform, log-mel and anomaly map.

    Parameters
    ----------
    path : str or Path
        A wav or flac file. A DCASE-style name (``normal_id_00_...``) selects that
        machine ID's threshold; otherwise the pooled one applies.
    model : str, Path or Detector
        A model file written by ``soundwatch train``/``evaluate``, or a fitted detector.
    threshold : str, optional
        Refit the threshold with this method (``gamma:Q``, ``percentile:P``,
        ``meanstd:K``) from the held-out scores stored in the model.

    Returns
    -------
    inspection : Inspection
    """
    detector = model if isinstance(model, Detector) else Detector.load(model)
    if threshold is not None:
        detector.refit_threshold(threshold)
    clip = clip_from_path(path)
    score = float(detector.score([clip])[0])
    limit = float(detector.threshold_for(clip.machine_id, clip.domain))
    decision = int(score > limit)
    config = detector.logmel_config() if hasattr(detector, "logmel_config") else LogMelConfig()
    waveform = load_audio(
        clip.path, config.sample_rate, channel=config.channel, duration=config.duration
    )
    logmel = extract_logmel([clip], config)[0]
    amap = detector.anomaly_map(clip)
    title = (
        f"{Path(path).name} · {detector.name} · score {score:.4g} · threshold {limit:.4g} "
        f"({detector.threshold_method.spec}) → {'ANOMALOUS' if decision else 'normal'}"
    )
    figure = plots.inspect_figure(
        np.asarray(waveform),
        logmel,
        amap,
        sample_rate=config.sample_rate,
        hop_length=config.hop_length,
        title=title,
    )
    return Inspection(
        Path(path),
        clip.machine_id,
        score,
        limit,
        decision,
        detector.threshold_method.spec,
        detector.threshold_source(clip.machine_id, clip.domain),
        amap is not None,
        figure,
    )
