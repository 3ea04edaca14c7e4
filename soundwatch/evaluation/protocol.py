"""The DCASE 2020 Task 2 protocol: train on ``ROOT/TYPE/train``, score ``ROOT/TYPE/test``."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from soundwatch.data.clips import ANOMALY, Clip
from soundwatch.data.datasets import discover
from soundwatch.data.ground_truth import apply_ground_truth
from soundwatch.data.manifest import anomaly_kinds
from soundwatch.detectors.base import Detector
from soundwatch.detectors.modelfile import MODEL_SUFFIX
from soundwatch.errors import ConfigError, DatasetError
from soundwatch.evaluation.dcase import check_clips, write_dcase_submission
from soundwatch.evaluation.dcase_protocols import infer_protocol
from soundwatch.evaluation.decisions import decision_summary
from soundwatch.evaluation.fingerprint import fingerprint
from soundwatch.evaluation.metrics import evaluate_by_kind
from soundwatch.evaluation.submission import write_submission
from soundwatch.fileio import _umask, check_writable

RESULT_FILE = "result.json"
MODEL_FILE = "model" + MODEL_SUFFIX


@dataclass
class Evaluation:
    """What :func:`evaluate` produced: the result dict and where the files are."""

    result: dict
    out_dir: Path
    detector: Detector


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Reads ``VmHWM`` where there is a ``/proc``: unlike ``ru_maxrss``, it starts afresh
    at ``exec``, so a child started by a large parent (``bench``) reports its own peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and kilobytes elsewhere.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def training_clips(root: Path, machine_type: str | None) -> list[Clip]:
    """Normal training clips of a data set: its ``train`` split, or every clip when the
    layout has no split (a plain folder of normal recordings).

    Raises
    ------
    ConfigError
        ``machine_type`` is None and the data holds several machine types: one model
        must never pool, say, slider ID 00 and fan ID 00.
    """
    clips = discover(root, machine_type)
    if machine_type is None:
        types = sorted({c.machine_type for c in clips if c.machine_type})
        if len(types) > 1:
            raise ConfigError(
                f"{root} holds several machine types ({', '.join(types)}); "
                "choose one with --machine"
            )
    train = [c for c in clips if c.split == "train"]
    if not train and all(c.split is None for c in clips):
        train = clips
    if not train:
        raise DatasetError(f"no training clips (a train/ folder) under {root}")
    anomalous = [c for c in train if c.label == ANOMALY]
    if anomalous:
        raise DatasetError(
            f"{len(anomalous)} training clips under {root} are labelled anomalous, "
            f"e.g. {anomalous[0].path.name}; train on normal clips only"
        )
    return train


def clips_per_id(clips: list[Clip]) -> dict[tuple[str | None, str | None], list[Clip]]:
    """Clips grouped by machine ID (DCASE 2021+: by section and domain), each group in
    file-name order."""
    groups: dict[tuple[str | None, str | None], list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: c.path.name):
        groups.setdefault((clip.machine_id, clip.domain), []).append(clip)
    return groups


def smallest_id(clips: list[Clip]) -> tuple[str, int]:
    """The machine ID (and domain) with the fewest clips, as words, and its count."""
    (mid, domain), group = min(clips_per_id(clips).items(), key=lambda item: len(item[1]))
    return f"ID {mid}" + (f" ({domain})" if domain else ""), len(group)


def first_per_id(clips: list[Clip], n: int) -> list[Clip]:
    """The first ``n`` clips of each machine ID (DCASE 2021+: of each section and
    domain) by file name: the few-shot regime of a full training set.

    Synthetic sets render training clip ``i`` the same whatever their size, so this
    picks exactly the clips of ``soundwatch synth --n-train n``.

    Raises
    ------
    ConfigError
        ``n`` is below 1, or an ID has fewer than ``n`` clips (the regime would mix
        sizes).
    """
    if n < 1:
        raise ConfigError(f"--n-train must be at least 1, got {n}")
    where, count = smallest_id(clips)
    if count < n:
        raise ConfigError(f"--n-train {n}: {where} has only {count} training normals")
    return [clip for group in clips_per_id(clips).values() for clip in group[:n]]


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form, or absolute if it lies elsewhere."""
    # abspath, not resolve: a data set of symlinks should keep its own layout
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return absolute.as_posix()


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, before training, a folder that already holds results (unless told to
    overwrite) or that cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"output path {out_dir} exists and is not a folder")
    if (out_dir / RESULT_FILE).exists() and not overwrite:
        raise DatasetError(
            f"{out_dir} already holds results; choose another --out or pass --overwrite"
        )
    check_writable(out_dir)
    check_writable(out_dir.parent)  # the new run is written beside it, then swapped in


@contextlib.contextmanager
def fresh_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir`` to write a whole run into; on success it
    replaces ``out_dir`` (so no file of an earlier run survives beside the new ones),
    on failure it is removed and ``out_dir`` is left as it was.

    A folder that exists without results (e.g. one the user made, holding their own
    files) is written into directly instead, so nothing of theirs is removed.
    """
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / RESULT_FILE).exists():
        yield out_dir
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.new-"))
    try:
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    os.chmod(new, 0o777 & ~_umask())
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "run")
        try:
            os.replace(new, out_dir)
        except BaseException:
            os.replace(old / "run", out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out_dir)


def evaluate(
    root: Path,
    machine_type: str,
    detector: Detector,
    out_dir: Path,
    *,
    overwrite: bool = False,
    calibration_clips: list[Clip] | None = None,
    progress: Callable[[str], None] | None = None,
    protocol: str | None = None,
    ground_truth: Path | None = None,
    n_train: int | None = None,
) -> Evaluation:
    """Fit ``detector`` on the training normals, score the test clips, write the DCASE files.

    Writes into ``out_dir``: ``anomaly_score_*.csv``, ``decision_result_*.csv``,
    ``result.csv``, ``result.json`` and the trained ``model.safetensors``. Besides the
    schema of :func:`~soundwatch.evaluation.submission.write_result_json`, ``result.json``
    holds ``params``, the threshold (``threshold_method``, ``threshold_quantile`` (null
    unless gamma), ``threshold_spec``, ``thresholds`` per machine ID), ``peak_memory_mb``,
    and, so that ``soundwatch report`` can find the audio, ``data_root`` (absolute) and
    ``test_files`` (paths relative to it, in scoring order), and ``per_kind``: mean AUC
    and pAUC of each anomaly kind of a synthetic data set (see
    :func:`~soundwatch.evaluation.metrics.evaluate_by_kind`; empty for real data), and
    ``fingerprint``: the settings that determine the result (see
    :func:`~soundwatch.evaluation.fingerprint.fingerprint`), ``calibration`` (what the
    threshold was fitted on) and the entries of
    :func:`~soundwatch.evaluation.decisions.decision_summary` (decision metrics, drift).
    ``calibration_clips`` are separate normal recordings that only set the threshold.

    The run is written to a temporary sibling folder that replaces ``out_dir`` when it
    is complete (see :func:`fresh_folder`), so an overwritten folder holds no file of
    the earlier run, and a failed run leaves the earlier one intact. ``progress``, when
    given, is called with one line per step once the inputs have been checked.

    ``protocol`` (``dcase2020`` ... ``dcase2025``; None: inferred from the test clips'
    names) selects the year's metrics and submission files, see
    :mod:`soundwatch.evaluation.dcase`; ``result.json`` holds ``protocol`` and
    ``protocol_reason`` (``"chosen"`` or why it was inferred). ``ground_truth``: a folder
    of official ground-truth CSVs that label unlabelled evaluation clips, see
    :mod:`soundwatch.data.ground_truth`. ``n_train``: train on the first ``n_train``
    normals of each ID only (the few-shot regime, see :func:`first_per_id`); recorded
    in ``result.json`` and the fingerprint.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    train = training_clips(root, machine_type)
    available = len(train)
    if n_train is not None:
        train = first_per_id(train, n_train)
    test = discover(root, machine_type, split="test")
    if ground_truth is not None:
        test = apply_ground_truth(test, ground_truth, machine_type)
    reason = "chosen"
    if protocol is None:
        protocol, reason = infer_protocol(test)
        reason = f"inferred: {reason}"
    check_clips(protocol, machine_type, test)
    settings = fingerprint(root, machine_type, detector.name, detector.get_params(), n_train)
    step = progress or (lambda message: None)
    if n_train is not None:
        step(
            f"few-shot: the first {n_train} training normals of each ID by file name "
            f"({len(train)} of {available} clips)"
        )
    step(f"training {detector.name} on {len(train)} {machine_type} clips")
    start = time.perf_counter()
    detector.fit(train, calibration_clips)
    fit_seconds = time.perf_counter() - start
    step(f"scoring {len(test)} test clips")
    start = time.perf_counter()
    scores = detector.score(test)
    score_seconds = time.perf_counter() - start
    data_root = Path(os.path.abspath(root))
    with fresh_folder(out_dir) as folder:
        result = _write_run(
            folder,
            machine_type,
            detector,
            test,
            scores,
            fit_seconds,
            score_seconds,
            data_root,
            settings,
            protocol,
            reason,
        )
    return Evaluation(result=result, out_dir=out_dir, detector=detector)


def _write_run(
    folder: Path,
    machine_type: str,
    detector: Detector,
    test: list[Clip],
    scores,
    fit_seconds: float,
    score_seconds: float,
    data_root: Path,
    settings: dict,
    protocol: str,
    protocol_reason: str,
) -> dict:
    """Write the DCASE files, ``result.json`` and the model of one run into ``folder``."""
    method = detector.threshold_method
    if protocol == "dcase2020":
        writer = write_submission
    else:
        writer = functools.partial(write_dcase_submission, protocol=protocol)
    result = writer(
        folder,
        machine_type,
        detector.name,
        test,
        scores,
        detector.thresholds_,
        fit_seconds,
        score_seconds,
        extra={
            "params": detector.get_params(),
            "threshold_method": method.name,
            "threshold_quantile": method.value if method.name == "gamma" else None,
            "peak_memory_mb": peak_memory_mb(),
            "threshold_spec": method.spec,
            "thresholds": detector.thresholds_,
            "data_root": str(data_root),
            "test_files": [_relative(c.path, data_root) for c in test],
            "per_kind": evaluate_by_kind(test, scores, anomaly_kinds(test)),
            "fingerprint": settings,
            "protocol": protocol,
            "protocol_reason": protocol_reason,
            # what the threshold was fitted on; precision, recall, FPR; drift check
            "calibration": detector.calibration_info_,
            "n_train_per_id": settings["n_train"],
            **decision_summary(test, scores, detector.thresholds_, method),
        },
    )
    detector.save(folder / MODEL_FILE, overwrite=True)
    return result
