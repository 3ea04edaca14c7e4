"""The DCASE 2020 Task 2 protocol: train on ``ROOT/TYPE/train``, score ``ROOT/TYPE/test``."""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from soundwatch.data.clips import ANOMALY, Clip
from soundwatch.data.datasets import discover
from soundwatch.data.ground_truth import apply_ground_truth
from soundwatch.data.manifest import manifest_kinds
from soundwatch.detectors.base import Detector
from soundwatch.detectors.modelfile import MODEL_SUFFIX
from soundwatch.errors import DatasetError
from soundwatch.evaluation.dcase import check_clips, write_dcase_submission
from soundwatch.evaluation.dcase_protocols import infer_protocol
from soundwatch.evaluation.metrics import evaluate_by_kind
from soundwatch.evaluation.submission import write_submission

RESULT_FILE = "result.json"
MODEL_FILE = "model" + MODEL_SUFFIX

logger = logging.getLogger(__name__)


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
    layout has no split (a plain folder of normal recordings)."""
    clips = discover(root, machine_type)
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


def anomaly_kinds(clips: list[Clip]) -> list[str | None]:
    """Anomaly kind of each clip from its synthetic data set's manifest, None where
    unknown (normal clips, real data). An unreadable manifest only costs the per-kind
    results, with a warning: it must not fail an evaluation after the training."""
    manifests: dict[Path, dict[str, str]] = {}
    kinds = []
    for clip in clips:
        path = Path(clip.path)
        machine_dir = path.parent.parent
        if machine_dir not in manifests:
            try:
                manifests[machine_dir] = manifest_kinds(machine_dir)
            except DatasetError as exc:
                logger.warning("%s; no results per anomaly kind", exc)
                manifests[machine_dir] = {}
        kinds.append(manifests[machine_dir].get(f"{path.parent.name}/{path.name}"))
    return kinds


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form, or absolute if it lies elsewhere."""
    # abspath, not resolve: a data set of symlinks should keep its own layout
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return absolute.as_posix()


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that already holds results, unless told to."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"output path {out_dir} exists and is not a folder")
    if (out_dir / RESULT_FILE).exists() and not overwrite:
        raise DatasetError(
            f"{out_dir} already holds results; choose another --out or pass --overwrite"
        )


def evaluate(
    root: Path,
    machine_type: str,
    detector: Detector,
    out_dir: Path,
    *,
    overwrite: bool = False,
    protocol: str | None = None,
    ground_truth: Path | None = None,
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
    :func:`~soundwatch.evaluation.metrics.evaluate_by_kind`; empty for real data).

    ``protocol`` (``dcase2020`` ... ``dcase2025``; None: inferred from the test clips'
    names) selects the year's metrics and submission files, see
    :mod:`soundwatch.evaluation.dcase`; ``result.json`` holds ``protocol`` and
    ``protocol_reason`` (``"chosen"`` or why it was inferred). ``ground_truth``: a folder
    of official ground-truth CSVs that label unlabelled evaluation clips, see
    :mod:`soundwatch.data.ground_truth`.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    train = training_clips(root, machine_type)
    test = discover(root, machine_type, split="test")
    if ground_truth is not None:
        test = apply_ground_truth(test, ground_truth, machine_type)
    reason = "chosen"
    if protocol is None:
        protocol, reason = infer_protocol(test)
        reason = f"inferred: {reason}"
    check_clips(protocol, machine_type, test)
    start = time.perf_counter()
    detector.fit(train)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = detector.score(test)
    score_seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    method = detector.threshold_method
    data_root = Path(os.path.abspath(root))
    if protocol == "dcase2020":
        writer = write_submission
    else:
        writer = functools.partial(write_dcase_submission, protocol=protocol)
    result = writer(
        out_dir,
        machine_type,
        detector.name,
        test,
        scores,
        detector.thresholds_,
        fit_seconds,
        score_seconds,
        extra={
            "protocol": protocol,
            "protocol_reason": reason,
            "params": detector.get_params(),
            "threshold_method": method.name,
            "threshold_quantile": method.value if method.name == "gamma" else None,
            "peak_memory_mb": peak_memory_mb(),
            "threshold_spec": method.spec,
            "thresholds": detector.thresholds_,
            "data_root": str(data_root),
            "test_files": [_relative(c.path, data_root) for c in test],
            "per_kind": evaluate_by_kind(test, scores, anomaly_kinds(test)),
        },
    )
    detector.save(out_dir / MODEL_FILE, overwrite=True)
    return Evaluation(result=result, out_dir=out_dir, detector=detector)
