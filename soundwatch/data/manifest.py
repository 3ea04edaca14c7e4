"""Reading the manifest of a synthetic data set (written by :mod:`soundwatch.synth`).

A synthetic machine folder holds ``synth_manifest.json`` beside its ``train`` and
``test`` folders; among other things it records the anomaly kind of every anomalous
test clip, which evaluation uses to report the AUC per kind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from soundwatch.data.clips import Clip
from soundwatch.errors import DatasetError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "synth_manifest.json"


def manifest_kinds(machine_dir: str | Path) -> dict[str, str]:
    """Anomaly kind of every anomalous clip in a synthetic data set's manifest.

    Parameters
    ----------
    machine_dir : str or Path
        A ``<out_root>/<machine>`` folder written by
        :func:`soundwatch.synth.generate_dataset`.

    Returns
    -------
    dict
        ``{"test/anomaly_id_00_00000000.wav": "rail_damage", ...}``, paths relative to
        ``machine_dir``; empty when the folder has no manifest (e.g. real data).

    Raises
    ------
    DatasetError
        If the manifest exists but cannot be read.
    """
    path = Path(machine_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["clips"]
        return {str(r["file"]): str(r["kind"]) for r in records if r.get("kind")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path} is not a readable synth manifest ({exc!r})") from None


def anomaly_kinds(clips: Sequence[Clip]) -> list[str | None]:
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
