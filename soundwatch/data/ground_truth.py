"""Labels and domains of DCASE 2021+ evaluation clips from the official ground-truth files.

Evaluation clips are named without label (``section_03_0000.wav``); the organisers
published their labels with the evaluators, as header-less ``file_name,value`` CSVs:

* 2021 (``dcase2021_task2_evaluator/ground_truth_data``):
  ``ground_truth_<type>_section_<XX>_<source|target>_test.csv``, value 0 normal, 1 anomaly;
  the file name gives the domain.
* 2022-2025 (``ground_truth_data`` and ``ground_truth_domain`` of each year's evaluator):
  ``ground_truth_<type>_section_<XX>_test.csv``; in ``ground_truth_data`` the value is
  0 normal, 1 anomaly, in ``ground_truth_domain`` 0 source, 1 target.

Files in a ``ground_truth_attributes`` folder are not read.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from soundwatch.data.clips import ANOMALY, NORMAL, Clip
from soundwatch.errors import DatasetError

_FILE = re.compile(
    r"^ground_truth_(?P<type>.+)_section_(?P<section>\d+)(?:_(?P<domain>source|target))?_test\.csv$"
)
_LABELS = {"0": NORMAL, "1": ANOMALY}
_DOMAINS = {"0": "source", "1": "target"}


def read_ground_truth(folder: str | os.PathLike) -> dict[tuple[str, str], dict[str, str]]:
    """Read every ground-truth CSV under ``folder`` (any depth).

    Returns
    -------
    dict
        ``(machine_type, file_name) -> {"label": ..., "domain": ...}`` (either key may be
        missing when no file gives it).

    Raises
    ------
    DatasetError
        ``folder`` is missing or holds no ground-truth file, or a file has a row that is
        not ``file_name,0|1``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"ground-truth folder not found: {folder}")
    table: dict[tuple[str, str], dict[str, str]] = {}
    n_files = 0
    for path in sorted(folder.rglob("ground_truth_*.csv")):
        m = _FILE.match(path.name)
        if not m or path.parent.name == "ground_truth_attributes":
            continue
        n_files += 1
        is_domain_file = path.parent.name == "ground_truth_domain"
        for line, row in enumerate(_rows(path), start=1):
            if len(row) < 2 or row[1].strip() not in ("0", "1"):
                raise DatasetError(f"{path}, line {line}: expected file_name,0|1")
            entry = table.setdefault((m.group("type"), Path(row[0].strip()).name), {})
            if is_domain_file:
                entry["domain"] = _DOMAINS[row[1].strip()]
            else:
                entry["label"] = _LABELS[row[1].strip()]
                if m.group("domain"):
                    entry["domain"] = m.group("domain")
    if not n_files:
        raise DatasetError(f"no ground_truth_<type>_section_XX_..._test.csv files under {folder}")
    return table


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def apply_ground_truth(
    clips: Sequence[Clip], folder: str | os.PathLike, machine_type: str
) -> list[Clip]:
    """Give unlabelled test clips of ``machine_type`` their official label and domain.

    A clip keeps a label or domain its name already gives.

    Raises
    ------
    DatasetError
        The ground truth names no clip of ``machine_type``, or only some of its
        unlabelled test clips (a partial evaluation would be quietly wrong).
    """
    table = read_ground_truth(folder)
    out, missing, found = [], [], 0
    for clip in clips:
        entry = table.get((clip.machine_type or machine_type, Path(clip.path).name))
        if clip.split != "test" or clip.label is not None:
            out.append(clip)
            continue
        if entry is None or "label" not in entry:
            missing.append(clip)
            out.append(clip)
            continue
        found += 1
        out.append(
            dataclasses.replace(
                clip, label=entry["label"], domain=clip.domain or entry.get("domain")
            )
        )
    if not found:
        raise DatasetError(f"the ground truth in {folder} lists no test clip of {machine_type}")
    if missing:
        raise DatasetError(
            f"the ground truth in {folder} lists {found} of {found + len(missing)} unlabelled "
            f"test clips of {machine_type}; missing e.g. {Path(missing[0].path).name}"
        )
    return out
