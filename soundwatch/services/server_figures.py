"""The dashboard's picture of a clip: its log-mel spectrogram and anomaly map as a PNG,
drawn on the server with the same figure as ``soundwatch report``."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from soundwatch.data.datasets import clip_from_path
from soundwatch.detectors.base import Detector
from soundwatch.features.extract import extract_logmel
from soundwatch.features.logmel import LogMelConfig
from soundwatch.reports import plots

# Matplotlib figures are drawn one at a time: its font cache and text layout are not
# meant for threads, and the dashboard asks for one picture per new clip only.
_DRAW_LOCK = threading.Lock()


def clip_png(
    data: bytes, filename: str, detector: Detector | None, title: str = ""
) -> tuple[bytes, bool]:
    """Draw one clip's log-mel spectrogram and, when the detector has one, its anomaly
    map.

    Parameters
    ----------
    data : bytes
        The WAV or FLAC file.
    filename : str
        Its name (already made safe), for the machine ID.
    detector : Detector or None
        The machine's model: its log-mel settings and anomaly map. None draws the
        default log-mel alone.
    title : str

    Returns
    -------
    png : bytes
    has_map : bool
        Whether the anomaly map is in the picture (detectors that cannot localise
        their score, such as ``logmel-mahalanobis``, have none).
    """
    folder = Path(tempfile.mkdtemp(prefix="soundwatch-figure-"))
    try:
        path = folder / filename
        path.write_bytes(data)
        clip = clip_from_path(path)
        config = (
            detector.logmel_config()
            if detector is not None and hasattr(detector, "logmel_config")
            else LogMelConfig()
        )
        logmel = extract_logmel([clip], config, use_cache=False)[0]
        amap = detector.anomaly_map(clip) if detector is not None else None
        with _DRAW_LOCK:
            figure = plots.clip_figure(
                logmel,
                amap,
                sample_rate=config.sample_rate,
                hop_length=config.hop_length,
                title=title,
            )
            return plots.figure_png(figure, dpi=80), amap is not None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
