"""Finding clips on disk and reading what their paths say about them.

Three layouts are recognised, file by file, from the folder names around each file:

a) DCASE 2020 Task 2 and DCASE 2021+: ``<root>/<machine_type>/<split>/<name>.wav`` where
   ``<split>`` is ``train``, ``test``, ``source_test`` or ``target_test``. The machine
   type is the folder above the split folder, so the root may be the data-set folder, a
   machine-type folder or a split folder. Machine ID (or section), label and domain come
   from the file name (see :func:`parse_filename`), attributes from the name and from the
   type folder's ``attributes_XX.csv`` (see :mod:`soundwatch.data.attributes`).
b) raw MIMII: ``<machine_type>/id_00/normal|abnormal/00000000.wav``, possibly below a
   ``-6_dB_fan`` style folder, or with that folder in place of ``<machine_type>``.
   These clips have no split.
c) anything else (a plain folder of ``.wav``/``.flac`` files, any nesting): machine
   ID, label, domain and split come from the file name where it parses, and the
   machine type is unknown.

Hidden files and folders (names starting with ``.``) are skipped when searching.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from soundwatch.data.attributes import attach_attribute_csvs, with_name_attributes
from soundwatch.data.audio import AUDIO_EXTENSIONS, is_audio_file
from soundwatch.data.clips import ANOMALY, NORMAL, Clip
from soundwatch.errors import ConfigError, DatasetError

SPLITS = ("train", "test")

_LABELS = {"normal": NORMAL, "anomaly": ANOMALY, "abnormal": ANOMALY}

# split folder name -> (split, domain)
_SPLIT_FOLDERS = {
    "train": ("train", None),
    "test": ("test", None),
    "source_test": ("test", "source"),
    "target_test": ("test", "target"),
}

# DCASE 2020 development: normal_id_00_00000000, anomaly_id_00_00000000[_tag...]
# (soundwatch synth --sessions appends _sessionNN)
_DCASE2020_DEV = re.compile(r"^(normal|anomaly|abnormal)_id_(\d+)_(\d+)(?:_.*)?$", re.IGNORECASE)
# DCASE 2020 evaluation (unlabelled): id_01_00000000
_DCASE2020_EVAL = re.compile(r"^id_(\d+)_(\d+)$", re.IGNORECASE)
# DCASE 2021+: section_00_source_test_normal_0001[_attributes...], and the unlabelled
# evaluation names section_03_0000 and section_00_test_0000
_DCASE2021 = re.compile(
    r"^section_(\d+)"
    r"(?:_(source|target))?"
    r"(?:_(train|test))?"
    r"(?:_(normal|anomaly))?"
    r"_(\d+)(?:_.*)?$",
    re.IGNORECASE,
)
_MIMII_ID_FOLDER = re.compile(r"^id_(\d+)$", re.IGNORECASE)
_MIMII_LABEL_FOLDERS = {"normal": NORMAL, "abnormal": ANOMALY}
_SNR_PREFIX = re.compile(r"^[-+]?\d+_?db_?(.+)$", re.IGNORECASE)

_EXTENSIONS_TEXT = ", ".join(AUDIO_EXTENSIONS)


def parse_filename(path: str | os.PathLike) -> dict:
    """Read machine ID, label, domain and split from a clip's file name.

    Parameters
    ----------
    path : str or path-like
        A file name or path; only the name without its extension is used.

    Returns
    -------
    dict
        Keys ``machine_id`` (two-digit ID or section string such as ``"00"``),
        ``label`` (``"normal"``, ``"anomaly"``), ``domain`` (``"source"``,
        ``"target"``) and ``split`` (``"train"``, ``"test"``), each None when the name
        does not say. All four are None for a name in no known style.

    Examples
    --------
    >>> parse_filename("anomaly_id_00_00000000.wav")["label"]
    'anomaly'
    >>> parse_filename("section_01_target_test_normal_0003.wav")["domain"]
    'target'
    """
    stem = Path(path).stem
    result = {"machine_id": None, "label": None, "domain": None, "split": None}
    if m := _DCASE2020_DEV.match(stem):
        result["label"] = _LABELS[m.group(1).lower()]
        result["machine_id"] = m.group(2)
    elif m := _DCASE2020_EVAL.match(stem):
        result["machine_id"] = m.group(1)
    elif m := _DCASE2021.match(stem):
        section, domain, split, label, _ = m.groups()
        result["machine_id"] = section
        result["domain"] = domain.lower() if domain else None
        result["split"] = split.lower() if split else None
        result["label"] = _LABELS[label.lower()] if label else None
    return result


def clip_from_path(path: str | os.PathLike) -> Clip:
    """Build the :class:`Clip` for one audio file from its name and folders.

    The layout (DCASE, MIMII or plain, see the module docstring) is told from the
    names of the folders around the file; the file itself is not opened. Attributes
    come from the name (see :func:`~soundwatch.data.attributes.parse_attributes`).
    """
    return with_name_attributes(_clip_from_folders(path))


def _clip_from_folders(path: str | os.PathLike) -> Clip:
    path = Path(path)
    info = parse_filename(path)
    # folder names from the top, without the anchor ("/") and without following links
    parents = Path(os.path.abspath(path)).parts[1:-1]
    parent = parents[-1].lower() if parents else ""
    above = parents[-2] if len(parents) >= 2 else ""

    if parent in _SPLIT_FOLDERS:  # layout a) DCASE
        split, domain = _SPLIT_FOLDERS[parent]
        return Clip(
            path=path,
            machine_type=above or None,
            machine_id=info["machine_id"],
            split=split,
            label=info["label"],
            domain=domain or info["domain"],
        )

    id_match = _MIMII_ID_FOLDER.match(above)
    if parent in _MIMII_LABEL_FOLDERS and id_match:  # layout b) MIMII
        type_folder = parents[-3] if len(parents) >= 3 else ""
        if snr := _SNR_PREFIX.match(type_folder):
            type_folder = snr.group(1)
        return Clip(
            path=path,
            machine_type=type_folder or None,
            machine_id=id_match.group(1),
            split=None,
            label=_MIMII_LABEL_FOLDERS[parent],
            domain=None,
        )

    return Clip(path=path, **info)  # layout c) plain


def discover(
    root: str | os.PathLike,
    machine_type: str | None = None,
    split: str | None = None,
) -> list[Clip]:
    """Find every clip under a data folder and describe it.

    Parameters
    ----------
    root : str or path-like
        A data-set folder (e.g. ``dev_data``), a machine-type folder (``dev_data/fan``),
        a split folder (``dev_data/fan/train``), a MIMII or plain folder of audio files,
        or a single audio file.
    machine_type : str or None
        Keep only clips of this machine type (compared without regard to case).
    split : {"train", "test"} or None
        Keep only clips of this split.

    Returns
    -------
    list of Clip
        Sorted by path; never empty.

    Raises
    ------
    DatasetError
        ``root`` is missing, is a file that is not audio, or holds no audio files, or
        no clip has the requested machine type or split.
    ConfigError
        ``split`` is not ``"train"``, ``"test"`` or None.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data folder not found: {root}")
    if root.is_dir():
        files = _find_audio(root)
        if not files:
            raise DatasetError(f"no audio files ({_EXTENSIONS_TEXT}) found under {root}")
    elif is_audio_file(root):
        files = [root]
    else:
        raise DatasetError(f"not a data folder or an audio file ({_EXTENSIONS_TEXT}): {root}")

    all_clips = sorted((clip_from_path(f) for f in files), key=lambda c: c.path)
    all_clips = attach_attribute_csvs(all_clips)  # attributes_XX.csv (DCASE 2022+)
    clips = all_clips

    if machine_type is not None:
        wanted = machine_type.lower()
        selected = [c for c in clips if c.machine_type and c.machine_type.lower() == wanted]
        if not selected:
            raise DatasetError(
                f"no clips of machine type '{machine_type}' under {root}; "
                f"machine types found: {_types_text(clips)}"
            )
        clips = selected

    if split is not None:
        selected = [c for c in clips if c.split == split]
        if not selected:
            what = f" of machine type '{machine_type}'" if machine_type else ""
            splits = sorted({c.split for c in clips if c.split})
            with_split = _machine_types([c for c in all_clips if c.split == split])
            raise DatasetError(
                f"no {split} clips{what} under {root}; splits found: "
                f"{', '.join(splits) or 'none (the layout has no train/test folders)'}; "
                f"machine types with {split} clips: {', '.join(with_split) or 'none'}"
            )
        clips = selected
    return clips


def collect_audio(paths: Iterable[str | os.PathLike]) -> list[Clip]:
    """Gather the clips to score from files and folders given by a user.

    Parameters
    ----------
    paths : list of str or path-like
        Audio files and folders; folders are searched recursively.

    Returns
    -------
    list of Clip
        In the order the paths were given, each folder's clips sorted by path, with
        metadata read from file and folder names where possible (see
        :func:`clip_from_path`). A file reached twice is listed once.

    Raises
    ------
    DatasetError
        No paths given, a path is missing, a file is not audio, or a folder holds no
        audio files.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    clips: list[Clip] = []
    seen: set[str] = set()
    n_given = 0
    for given in paths:
        n_given += 1
        p = Path(given)
        if not p.exists():
            raise DatasetError(f"audio file or folder not found: {p}")
        if p.is_dir():
            files = _find_audio(p)
            if not files:
                raise DatasetError(f"no audio files ({_EXTENSIONS_TEXT}) found under {p}")
        elif is_audio_file(p):
            files = [p]
        else:
            raise DatasetError(f"not an audio file ({_EXTENSIONS_TEXT}): {p}")
        for f in files:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                clips.append(clip_from_path(f))
    if n_given == 0:
        raise DatasetError("no audio files or folders given")
    return clips


def machine_types(root: str | os.PathLike) -> list[str]:
    """Machine types present under ``root``, sorted without regard to case.

    Empty when the layout names no machine type (a plain folder of clips). Raises
    :class:`DatasetError` as :func:`discover` does.
    """
    return _machine_types(discover(root))


def _machine_types(clips: list[Clip]) -> list[str]:
    return sorted({c.machine_type for c in clips if c.machine_type}, key=lambda t: (t.lower(), t))


def _types_text(clips: list[Clip]) -> str:
    return ", ".join(_machine_types(clips)) or "none (the layout names no machine type)"


def walk_audio(folder: str | os.PathLike) -> Iterator[str]:
    """Audio files under ``folder`` at any depth, folder by folder in sorted order;
    follows links but not loops, skips hidden names, and holds one folder's names at a
    time (never the whole tree)."""
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_audio_file(name):
                yield os.path.join(dirpath, name)


def _find_audio(folder: Path) -> list[Path]:
    """Audio files under ``folder`` at any depth, sorted (see :func:`walk_audio`)."""
    return sorted(Path(f) for f in walk_audio(folder))
