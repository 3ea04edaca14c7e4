"""What a detector is given to score, and what its training audio looked like.

:func:`as_clips` turns clips, paths or folders into clips; :func:`waveform_clip`
turns an in-memory waveform into a clip. :func:`audio_summary` records the sample
rate, channel count and duration of training audio in a model, and
:func:`audio_mismatches` compares a new file with that record.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from soundwatch.data.audio import audio_info, write_audio
from soundwatch.data.clips import Clip
from soundwatch.data.datasets import clip_from_path, collect_audio
from soundwatch.errors import AudioError, ConfigError

# Durations within this many seconds of the training range count as the same.
DURATION_TOLERANCE_S = 0.05
# At most this many training files are opened to summarise the audio (headers only).
SUMMARY_MAX_FILES = 2000


def as_clips(items: Sequence[Clip | str | os.PathLike] | Clip | str | os.PathLike) -> list[Clip]:
    """Clips from clips, audio files or folders (searched recursively), in order.

    Raises
    ------
    DatasetError
        A path is missing, not audio, or a folder holds no audio.
    """
    if isinstance(items, (Clip, str, os.PathLike)):
        items = [items]
    clips: list[Clip] = []
    for item in items:
        if isinstance(item, Clip):
            clips.append(item)
        elif isinstance(item, (str, os.PathLike)):
            clips.extend(collect_audio([item]))
        else:
            raise ConfigError(
                f"cannot score a {type(item).__name__}: give clips, audio files or folders "
                "(use score_waveform for an array)"
            )
    return clips


@contextlib.contextmanager
def waveform_clip(y: np.ndarray, sr: int) -> Iterator[Clip]:
    """A clip of a waveform held in memory, written to a temporary file for as long as
    the ``with`` block lasts (detectors read audio from files).

    Parameters
    ----------
    y : ndarray of shape (n_samples,) or (n_samples, n_channels)
    sr : int
        Sample rate in Hz.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise ConfigError(
            f"waveform must have shape (n_samples,) or (n_samples, n_channels), got {y.shape}"
        )
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ConfigError(f"sample rate must be a positive integer (Hz), got {sr!r}")
    folder = tempfile.mkdtemp(prefix="soundwatch-waveform-")
    try:
        path = Path(folder) / "waveform.wav"
        write_audio(path, y, int(sr), subtype="FLOAT")
        yield clip_from_path(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def machine_type_of(clips: Sequence[Clip]) -> str | None:
    """The one machine type of ``clips``, or None when they name none or several."""
    types = {c.machine_type.lower() for c in clips if c.machine_type}
    return types.pop() if len(types) == 1 else None


def audio_summary(clips: Sequence[Clip]) -> dict | None:
    """Sample rate, channel count and duration range of training audio.

    Reads file headers only (of at most :data:`SUMMARY_MAX_FILES` files, evenly
    spaced). Returns None when no file can be read, e.g. for clips without files.

    Returns
    -------
    dict or None
        ``sample_rate`` and ``channels`` (the most common value, int),
        ``sample_rates`` and ``channel_counts`` (every value seen, sorted),
        ``min_duration`` and ``max_duration`` (seconds) and ``n_files`` (files read).
    """
    step = max(1, len(clips) // SUMMARY_MAX_FILES)
    infos = []
    for clip in list(clips)[::step]:
        with contextlib.suppress(AudioError, OSError):
            infos.append(audio_info(clip.path))
    if not infos:
        return None
    rates = Counter(i["sample_rate"] for i in infos)
    channels = Counter(i["channels"] for i in infos)
    durations = [i["duration"] for i in infos]
    return {
        "sample_rate": rates.most_common(1)[0][0],
        "sample_rates": sorted(rates),
        "channels": channels.most_common(1)[0][0],
        "channel_counts": sorted(channels),
        "min_duration": min(durations),
        "max_duration": max(durations),
        "n_files": len(infos),
    }


def audio_mismatches(info: dict, summary: dict | None) -> list[str]:
    """How one file (``audio_info`` output) differs from a training summary, in words.

    Empty when it matches or when there is no summary (older model files).
    """
    if not summary:
        return []
    found = []
    rates = summary.get("sample_rates") or [summary["sample_rate"]]
    if info["sample_rate"] not in rates:
        found.append(f"sample rate {info['sample_rate']} Hz (trained on {_listing(rates, ' Hz')})")
    counts = summary.get("channel_counts") or [summary["channels"]]
    if info["channels"] not in counts:
        found.append(f"{info['channels']} channel(s) (trained on {_listing(counts, '')})")
    low, high = summary["min_duration"], summary["max_duration"]
    duration = info["duration"]
    if not low - DURATION_TOLERANCE_S <= duration <= high + DURATION_TOLERANCE_S:
        trained = f"{low:.2f} s" if abs(high - low) < 0.01 else f"{low:.2f}-{high:.2f} s"
        found.append(f"duration {duration:.2f} s (trained on {trained})")
    return found


def _listing(values: list, unit: str) -> str:
    return " or ".join(f"{v}{unit}" for v in values)
