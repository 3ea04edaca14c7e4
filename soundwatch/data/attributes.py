"""Attributes of DCASE 2021+ clips: from the file name and from ``attributes_XX.csv``.

Since 2021 a development or training file name ends in its attributes, as name/value
pairs joined by ``_``::

    section_00_source_train_normal_0000_car_C2_spd_34V_mic_1.wav
    -> (("car", "C2"), ("spd", "34V"), ("mic", "1"))

From 2022 on, each machine-type folder may also hold one ``attributes_<section>.csv`` per
section, with a header ``file_name,d1p,d1v[,d2p,d2v...]`` and rows such as
``fan/train/section_00_source_train_normal_0000_m-n_X.wav,m-n,X``. Where a clip is
listed there, the CSV is authoritative (it also covers evaluation clips whose names carry
no attributes).

A name whose attribute part does not split into pairs (an odd number of fields) keeps
it whole under the key ``"attributes"``; ``noAttribute`` (used by some 2024 machine
types) means none.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from soundwatch.data.clips import Clip
from soundwatch.errors import DatasetError

Attributes = tuple[tuple[str, str], ...]

logger = logging.getLogger(__name__)

# section_00_source_train_normal_0000_<attributes>; the attribute part is group 1
_ATTRIBUTE_TAIL = re.compile(
    r"^section_\d+(?:_(?:source|target))?(?:_(?:train|test))?(?:_(?:normal|anomaly))?"
    r"_\d+_(.+)$",
    re.IGNORECASE,
)
_ATTRIBUTE_CSV = re.compile(r"^attributes_(\d+)\.csv$", re.IGNORECASE)
_NO_ATTRIBUTE = "noattribute"


def parse_attributes(path: str | Path) -> Attributes:
    """Attributes written in a DCASE 2021+ file name, as ``(name, value)`` pairs.

    Parameters
    ----------
    path : str or path-like
        A file name or path; only the name without its extension is used.

    Returns
    -------
    tuple of (str, str)
        In file-name order; empty when the name carries none or is in another style.

    Examples
    --------
    >>> parse_attributes("section_00_source_train_normal_0001_vel_5_loc_A.wav")
    (('vel', '5'), ('loc', 'A'))
    >>> parse_attributes("section_00_0001.wav")
    ()
    """
    m = _ATTRIBUTE_TAIL.match(Path(path).stem)
    if not m or m.group(1).lower() == _NO_ATTRIBUTE:
        return ()
    fields = m.group(1).split("_")
    if len(fields) % 2:
        return (("attributes", m.group(1)),)
    return tuple(zip(fields[::2], fields[1::2], strict=True))


def with_name_attributes(clip: Clip) -> Clip:
    """``clip`` with the attributes of its file name (unchanged when it has none)."""
    attributes = parse_attributes(clip.path)
    return dataclasses.replace(clip, attributes=attributes) if attributes else clip


def read_attribute_csv(path: str | Path) -> dict[str, Attributes]:
    """Read one ``attributes_XX.csv``.

    Returns
    -------
    dict
        File base name -> attributes, in column order (``d1p=d1v``, ``d2p=d2v``, ...).
        Empty value cells (a section with fewer attributes than columns) are left out.

    Raises
    ------
    DatasetError
        Unreadable file, no ``file_name`` column, or a row whose cells do not pair up.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read attribute file {path}: {exc}") from None
    if not rows or not rows[0] or rows[0][0].strip() != "file_name":
        raise DatasetError(f"{path}: expected a header starting with 'file_name'")
    table: dict[str, Attributes] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        cells = row[1:]
        if len(cells) % 2:
            raise DatasetError(f"{path}, line {line}: attribute names and values do not pair up")
        pairs = tuple(
            (name.strip(), value.strip())
            for name, value in zip(cells[::2], cells[1::2], strict=True)
            if name.strip()
        )
        table[Path(row[0].strip()).name] = pairs
    return table


def attach_attribute_csvs(clips: Sequence[Clip]) -> list[Clip]:
    """Give each clip the attributes listed for it in an ``attributes_XX.csv``.

    The CSVs are looked for in the machine-type folder of each clip (the folder above
    its split folder), and apply to clips of the same section. Clips not listed keep the
    attributes of their names. An unreadable CSV is skipped with a logged warning.
    """
    tables: dict[Path, dict[tuple[str, str], Attributes]] = {}
    out = []
    for clip in clips:
        if clip.machine_id is None or clip.split is None:
            out.append(clip)
            continue
        type_folder = Path(clip.path).parent.parent
        if type_folder not in tables:
            tables[type_folder] = _type_folder_tables(type_folder)
        listed = tables[type_folder].get((clip.machine_id, Path(clip.path).name))
        out.append(clip if listed is None else dataclasses.replace(clip, attributes=listed))
    return out


def _type_folder_tables(folder: Path) -> dict[tuple[str, str], Attributes]:
    table: dict[tuple[str, str], Attributes] = {}
    if not folder.is_dir():
        return table
    for csv_path in sorted(folder.iterdir()):
        if m := _ATTRIBUTE_CSV.match(csv_path.name):
            try:
                listed = read_attribute_csv(csv_path)
            except DatasetError as exc:
                # Metadata must not block training on the audio; say what is lost.
                logger.warning("%s; attributes come from the file names instead", exc)
                continue
            for name, pairs in listed.items():
                table[(m.group(1), name)] = pairs
    return table
