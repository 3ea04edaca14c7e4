"""Reading what ``soundwatch evaluate`` and ``soundwatch bench`` wrote.

An evaluate folder holds ``result.json``, ``anomaly_score_<type>_id_<XX>.csv``,
``decision_result_<type>_id_<XX>.csv`` and ``model.safetensors``; a bench folder holds
``leaderboard.json`` and one evaluate folder per detector. Labels come from the test
clips' file names (the same parser that the evaluation used); audio paths from
``data_root`` and ``test_files`` in ``result.json`` (written since soundwatch added
reports; older folders fall back to ``<data_root>/<type>/test/<name>`` when it exists).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from soundwatch.data.audio import audio_info
from soundwatch.data.clips import ANOMALY, NORMAL, Clip
from soundwatch.data.datasets import clip_from_path, discover
from soundwatch.errors import ConfigError, SoundwatchError
from soundwatch.evaluation.protocol import MODEL_FILE, RESULT_FILE
from soundwatch.thresholds import lookup_threshold

LEADERBOARD_FILE = "leaderboard.json"
_SCORE_FILE = re.compile(r"^anomaly_score_(?P<type>.+)_id_(?P<id>[^_]+)\.csv$")


@dataclass
class IdScores:
    """The test clips of one machine ID as scored and decided.

    Attributes
    ----------
    machine_id : str
    names : list of str
        File names, in the order of the CSV.
    paths : list of Path or None
        Where the audio is, when known.
    scores : ndarray of shape (n_clips,)
    labels : list of str or None
        ``"normal"``, ``"anomaly"`` or None (unlabelled) per clip.
    decisions : ndarray of shape (n_clips,) or None
        0/1 from ``decision_result_*.csv``, None if that file is missing.
    threshold : float or None
        The decision threshold used for this ID.
    threshold_pooled : bool
        Whether that is the pooled threshold (the ID had too few held-out clips for
        one of its own).
    """

    machine_id: str
    names: list[str]
    paths: list[Path | None]
    scores: np.ndarray
    labels: list[str | None]
    decisions: np.ndarray | None
    threshold: float | None
    threshold_pooled: bool = False

    @property
    def is_anomaly(self) -> np.ndarray:
        """Boolean labels, shape (n_clips,); only meaningful when :attr:`labelled`."""
        return np.array([label == ANOMALY for label in self.labels], dtype=bool)

    @property
    def labelled(self) -> bool:
        """Whether every clip is labelled and both classes are present (AUC defined)."""
        return (
            all(label is not None for label in self.labels)
            and ANOMALY in self.labels
            and NORMAL in self.labels
        )


@dataclass
class RunData:
    """One evaluate folder.

    Attributes
    ----------
    folder : Path
    result : dict
        ``result.json``.
    ids : list of IdScores
        Sorted by machine ID.
    model_path : Path or None
        ``model.safetensors`` when present.
    model_meta : dict
        The model file's metadata (empty without a readable model file).
    """

    folder: Path
    result: dict
    ids: list[IdScores]
    model_path: Path | None
    model_meta: dict = field(default_factory=dict)

    @property
    def detector(self) -> str:
        return str(self.result.get("detector", "?"))

    @property
    def machine_type(self) -> str:
        return str(self.result.get("machine_type", "?"))

    @property
    def data_root(self) -> Path | None:
        root = self.result.get("data_root")
        return Path(root) if root else None

    @property
    def threshold_spec(self) -> str:
        """The run's threshold method, e.g. ``gamma:0.9`` (older results: from the
        quantile they recorded)."""
        if self.result.get("threshold_spec"):
            return str(self.result["threshold_spec"])
        method = self.result.get("threshold_method") or "gamma"
        quantile = self.result.get("threshold_quantile")
        return f"{method}:{quantile:g}" if quantile is not None else str(method)

    @property
    def calibration_scores(self) -> dict[str, np.ndarray]:
        """Held-out normal scores per machine ID from the model file (empty for model
        files written before they were stored)."""
        calibration = (self.model_meta.get("threshold") or {}).get("calibration") or {}
        return {k: np.asarray(v, dtype=float) for k, v in (calibration.get("scores") or {}).items()}

    @property
    def calibration_source(self) -> str | None:
        calibration = (self.model_meta.get("threshold") or {}).get("calibration") or {}
        return calibration.get("source")

    @property
    def history(self) -> dict:
        return self.model_meta.get("history") or {}

    @property
    def labelled_ids(self) -> list[IdScores]:
        return [entry for entry in self.ids if entry.labelled]


@dataclass
class BenchData:
    """One bench folder: the leaderboard and the evaluate folder of every detector that
    produced results."""

    folder: Path
    machine_type: str
    rows: list[dict]
    runs: list[RunData]


@dataclass
class DataSummary:
    """Clips per machine ID and split, and what the audio files are like.

    Attributes
    ----------
    rows : list of dict
        Keys ``machine_id``, ``split``, ``normal``, ``anomaly``, ``unlabelled``,
        ``hours`` (total duration), ``min_s``/``max_s`` (clip duration range, seconds).
    sample_rates, channels, subtypes : Counter
        Clips per sample rate (Hz), channel count and sample format.
    n_unreadable : int
        Files whose header could not be read.
    note : str
        Where the figures come from, or why they are incomplete.
    """

    rows: list[dict]
    sample_rates: Counter
    channels: Counter
    subtypes: Counter
    n_unreadable: int = 0
    note: str = ""


def is_bench_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``soundwatch bench`` run (a ``leaderboard.json``)."""
    return (Path(folder) / LEADERBOARD_FILE).is_file()


def read_model_metadata(path: str | Path) -> dict:
    """The JSON metadata of a soundwatch model file, read from its header only (no
    tensors are loaded). Empty dict when it is missing or not a soundwatch model."""
    try:
        with safe_open(str(path), framework="np") as handle:
            raw = (handle.metadata() or {}).get("soundwatch")
        return json.loads(raw) if raw else {}
    except (SafetensorError, OSError, ValueError):
        return {}


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.reader(handle) if row]


def _audio_paths(result: dict, machine_type: str) -> dict[str, Path]:
    """File name -> audio path, from ``data_root`` and ``test_files`` of result.json."""
    root = Path(result["data_root"]) if result.get("data_root") else None
    paths: dict[str, Path] = {}
    for entry in result.get("test_files") or []:
        path = Path(entry)
        if not path.is_absolute() and root is not None:
            path = root / path
        paths[path.name] = path
    if not paths and root is not None:  # results written before test_files existed
        test_dir = root / machine_type / "test"
        if test_dir.is_dir():
            paths = {p.name: p for p in sorted(test_dir.iterdir()) if p.is_file()}
    return paths


def load_run(folder: str | Path) -> RunData:
    """Read an evaluate folder.

    Parameters
    ----------
    folder : str or Path
        Holds ``result.json`` and the ``anomaly_score_*.csv`` files.

    Returns
    -------
    run : RunData

    Raises
    ------
    ConfigError
        No ``result.json``, it is not valid JSON, or there are no score files.
    """
    folder = Path(folder)
    result_path = folder / RESULT_FILE
    if not result_path.is_file():
        raise ConfigError(f"{folder} holds no {RESULT_FILE}: not a soundwatch evaluate folder")
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{result_path} is not valid JSON ({exc})") from None
    machine_type = str(result.get("machine_type", ""))
    model_path = folder / MODEL_FILE
    meta = read_model_metadata(model_path) if model_path.is_file() else {}
    thresholds = result.get("thresholds") or (meta.get("threshold") or {}).get("values") or {}
    audio = _audio_paths(result, machine_type)

    ids: list[IdScores] = []
    for path in sorted(folder.glob("anomaly_score_*.csv")):
        match = _SCORE_FILE.match(path.name)
        if not match or match["type"] != machine_type:
            continue
        machine_id = match["id"]
        try:
            rows = _read_rows(path)
            names = [row[0] for row in rows]
            scores = np.array([float(row[1]) for row in rows])
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"{path} is not a filename,score CSV ({exc})") from None
        decisions = None
        decision_path = path.with_name(path.name.replace("anomaly_score_", "decision_result_", 1))
        if decision_path.is_file():
            by_name = {row[0]: int(row[1]) for row in _read_rows(decision_path)}
            if all(name in by_name for name in names):
                decisions = np.array([by_name[name] for name in names])
        paths = [audio.get(name) for name in names]
        # Labels from the names, parsed as the evaluation parsed them.
        labels = [
            clip_from_path(p if p is not None else name).label
            for p, name in zip(paths, names, strict=True)
        ]
        # score files of this layout are per machine ID, without domains
        key, threshold = lookup_threshold(thresholds, machine_id)
        ids.append(
            IdScores(
                machine_id,
                names,
                paths,
                scores,
                labels,
                decisions,
                threshold,
                key != machine_id,
            )
        )
    if not ids:
        raise ConfigError(f"{folder} holds no anomaly_score_{machine_type}_id_*.csv files")
    return RunData(folder, result, ids, model_path if model_path.is_file() else None, meta)


def load_bench(folder: str | Path) -> BenchData:
    """Read a bench folder: ``leaderboard.json`` and each detector's evaluate folder.

    Detectors that failed (an ``error`` in the leaderboard) or whose folder cannot be
    read are kept in ``rows`` only.
    """
    folder = Path(folder)
    try:
        board = json.loads((folder / LEADERBOARD_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {folder / LEADERBOARD_FILE} ({exc})") from None
    rows = list(board.get("rows") or [])
    runs = []
    for row in rows:
        run_dir = folder / str(row.get("detector", ""))
        if row.get("error") or not (run_dir / RESULT_FILE).is_file():
            continue
        try:
            runs.append(load_run(run_dir))
        except ConfigError as exc:
            row["error"] = str(exc)
    return BenchData(folder, str(board.get("machine_type", "?")), rows, runs)


def summarize_data(data_root: Path | None, machine_type: str, test: list[IdScores]) -> DataSummary:
    """Clip counts per ID and split with durations and formats, from the audio headers.

    Reads every clip of ``machine_type`` under ``data_root`` (headers only). When the
    data folder is gone, falls back to the test clips of the score files (counts only).
    """
    clips: list[Clip] = []
    note = ""
    if data_root is not None:
        try:
            clips = discover(data_root, machine_type)
            note = f"audio headers of {len(clips)} clips under {data_root}"
        except SoundwatchError as exc:
            note = f"data folder unavailable ({exc}); test clip counts from the score files"
    else:
        note = "result.json names no data folder; test clip counts from the score files"
    if not clips:
        clips = [
            Clip(Path(name), machine_type, entry.machine_id, "test", label)
            for entry in test
            for name, label in zip(entry.names, entry.labels, strict=True)
        ]
        read_audio = False
    else:
        read_audio = True

    groups: dict[tuple[str, str], dict] = {}
    rates: Counter = Counter()
    channels: Counter = Counter()
    subtypes: Counter = Counter()
    unreadable = 0
    for clip in clips:
        key = (clip.machine_id or "-", clip.split or "-")
        group = groups.setdefault(
            key, {"normal": 0, "anomaly": 0, "unlabelled": 0, "durations": []}
        )
        group[clip.label if clip.label in (NORMAL, ANOMALY) else "unlabelled"] += 1
        if not read_audio:
            continue
        try:
            info = audio_info(clip.path)
        except SoundwatchError:
            unreadable += 1
            continue
        group["durations"].append(info["duration"])
        rates[info["sample_rate"]] += 1
        channels[info["channels"]] += 1
        subtypes[info["subtype"]] += 1

    rows = []
    for (machine_id, split), group in sorted(groups.items()):
        durations = group.pop("durations")
        rows.append(
            {
                "machine_id": machine_id,
                "split": split,
                **group,
                "hours": sum(durations) / 3600 if durations else None,
                "min_s": min(durations) if durations else None,
                "median_s": statistics.median(durations) if durations else None,
                "max_s": max(durations) if durations else None,
            }
        )
    return DataSummary(rows, rates, channels, subtypes, unreadable, note)
