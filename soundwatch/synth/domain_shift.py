"""Write a synthetic DCASE 2023-style data set with domain shift (``synth --domain-shift``).

Layout written by :func:`generate_domain_shift_dataset` (``NNNN`` is a 4-digit running
index per section, domain, split and label, as in DCASE 2021-2025)::

    <out_root>/<machine>/train/section_00_source_train_normal_0000_spd_96.wav
    <out_root>/<machine>/train/section_00_target_train_normal_0000_spd_115.wav
    <out_root>/<machine>/test/section_00_source_test_anomaly_0000_spd_100.wav
    <out_root>/<machine>/attributes_00.csv
    <out_root>/<machine>/synth_manifest.json

Each section is one machine unit (:func:`~soundwatch.synth.dataset.sample_id_params`
with the section number as ID) whose recording conditions change between the source
and the target domain. Section ``s`` shifts one factor, in turn: motor speed
(``spd``, the machine load of :func:`~soundwatch.synth.dataset.session_conditions`),
microphone position (``mic``: EQ tilt and gain) or background level (``noise``). The
source domain is recorded under two or three nearby settings, the target domain under
one setting further away; the setting is the clip's attribute, in its file name and in
``attributes_XX.csv`` (header ``file_name,d1p,d1v``, as published for 2022-2025).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from soundwatch.data.manifest import MANIFEST_NAME
from soundwatch.errors import ConfigError
from soundwatch.fileio import atomic_write_text
from soundwatch.synth.dataset import (
    _SEVERITY_SPREAD,
    _check_float,
    _check_int,
    _machine_code,
    _model,
    prepare_folder,
    render_jobs,
    sample_id_params,
)

__all__ = ["SHIFTS", "domain_conditions", "generate_domain_shift_dataset"]

_NEUTRAL = {"gain_db": 0.0, "tilt_db_oct": 0.0, "background_db": 0.0, "load": 1.0}
#: The factor each section shifts (section ``s`` shifts ``SHIFTS[s % 3]``): attribute
#: name, then (attribute value, change of the recording conditions) of the source
#: settings and of the target setting. Target changes are scaled by ``shift``.
SHIFTS: tuple[tuple[str, list[tuple[str, dict]], tuple[str, dict]], ...] = (
    ("spd", [("96", {"load": 0.96}), ("100", {"load": 1.0}), ("104", {"load": 1.04})],
     ("115", {"load": 1.15})),
    ("mic", [("1", {"tilt_db_oct": 0.0}), ("2", {"tilt_db_oct": 0.3, "gain_db": 1.0})],
     ("3", {"tilt_db_oct": -1.5, "gain_db": -4.0})),
    ("noise", [("A", {"background_db": 0.0}), ("B", {"background_db": 1.0})],
     ("C", {"background_db": 6.0})),
)  # fmt: skip
_SPLIT_CODES = {("train", "normal"): 0, ("test", "normal"): 1, ("test", "anomaly"): 2}
_DOMAIN_CODES = {"source": 0, "target": 1}
_CLIP_NAME = re.compile(
    r"^section_\d{2}_(source|target)_(train|test)_(normal|anomaly)_\d{4}_.+\.wav$"
)
_ATTRIBUTE_CSV = re.compile(r"^attributes_\d{2}\.csv$")


def domain_conditions(section: int, domain: str, index: int, shift: float = 1.0) -> tuple:
    """Attribute and recording conditions of clip ``index`` of a section's domain.

    Source clips cycle through the section's source settings; target clips all have
    the target setting, whose change from neutral is scaled by ``shift`` (load in log
    space).

    Returns
    -------
    (name, value, conditions)
        Attribute name and value, and the ``conditions`` for
        :func:`~soundwatch.synth.dataset.render_clip`.
    """
    name, sources, target = SHIFTS[section % len(SHIFTS)]
    if domain == "source":
        value, change = sources[index % len(sources)]
        conditions = {**_NEUTRAL, **change}
    else:
        value, change = target
        conditions = {
            key: (
                float(np.exp(shift * np.log(change.get(key, 1.0))))
                if key == "load"
                else shift * change.get(key, 0.0)
            )
            for key in _NEUTRAL
        }
    return name, value, {k: round(float(v), 4) for k, v in conditions.items()}


def generate_domain_shift_dataset(
    out_root: str | Path,
    machine: str = "fan",
    n_sections: int = 3,
    n_source: int = 990,
    n_target: int = 10,
    n_test_normal: int = 50,
    n_test_anomaly: int = 50,
    shift: float = 1.0,
    snr_db: float = 0.0,
    severity: float = 1.0,
    seed: int = 0,
    id_spread: float = 1.0,
    duration: float = 10.0,
    sample_rate: int = 16000,
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> dict:
    """Synthesise a DCASE 2023-style data set with source and target domains.

    Parameters
    ----------
    out_root : str or Path
        Data-set root; clips go to ``<out_root>/<machine>/{train,test}``.
    machine : str
        A key of :data:`soundwatch.synth.MACHINES`.
    n_sections : int
        Sections ``00, 01, ...``; each is one machine unit and shifts one factor
        (:data:`SHIFTS`).
    n_source, n_target : int
        Normal training clips per section in the source and the target domain (DCASE
        2023: 990 and 10).
    n_test_normal, n_test_anomaly : int
        Normal and anomalous test clips per section *and domain* (balanced over domains).
    shift : float
        Size of the source-to-target change (1 = the settings of :data:`SHIFTS`; 0 =
        the target recorded as the neutral source setting).
    snr_db, severity, seed, id_spread, duration, sample_rate, progress, workers, overwrite
        As in :func:`soundwatch.synth.generate_dataset`.

    Returns
    -------
    dict
        Summary: ``machine``, ``root``, ``sections``, clip counts, ``seconds`` and
        ``manifest`` (path).

    Raises
    ------
    ConfigError
        Unknown machine, invalid numbers, or a non-empty target folder.
    """
    model = _model(machine)
    n_sections = _check_int("n_sections", n_sections, 1, 99)
    n_source = _check_int("n_source", n_source, 0, 9999)
    n_target = _check_int("n_target", n_target, 0, 9999)
    n_test_normal = _check_int("n_test_normal", n_test_normal, 0, 9999)
    n_test_anomaly = _check_int("n_test_anomaly", n_test_anomaly, 0, 9999)
    shift = _check_float("shift", shift, 0.0, 3.0)
    seed = _check_int("seed", seed, 0)
    workers = _check_int("workers", workers, 1)
    sample_rate = _check_int("sample_rate", sample_rate, 1000, 384000)
    snr_db = _check_float("snr_db", snr_db)
    severity = _check_float("severity", severity, 0.0)
    duration = _check_float("duration", duration)
    id_spread = _check_float("id_spread", id_spread, 0.0, 1.0)
    if duration * sample_rate < 16:
        raise ConfigError(f"duration must give at least 16 samples, got {duration} s")
    if n_source + n_target + n_test_normal + n_test_anomaly == 0:
        raise ConfigError("no clips requested: all per-section clip counts are 0")

    machine_dir = Path(out_root) / machine
    prepare_folder(machine_dir, overwrite, _CLIP_NAME, _ATTRIBUTE_CSV)
    kinds = list(model.kinds)
    code = _machine_code(machine)
    sections = [f"{s:02d}" for s in range(n_sections)]
    params = {sec: sample_id_params(machine, sec, seed, id_spread) for sec in sections}
    jobs: list[dict] = []
    records: list[dict] = []
    csv_rows: dict[str, list[list[str]]] = {sec: [] for sec in sections}
    for s, sec in enumerate(sections):
        groups = [
            ("train", "normal", "source", n_source),
            ("train", "normal", "target", n_target),
        ]
        for domain in ("source", "target"):
            groups += [("test", "normal", domain, n_test_normal)]
            groups += [("test", "anomaly", domain, n_test_anomaly)]
        for split, label, domain, count in groups:
            sev_rng = np.random.default_rng([seed, code, s, 13, _DOMAIN_CODES[domain]])
            for i in range(count):
                kind, sev = None, 0.0
                if label == "anomaly":
                    kind = kinds[i % len(kinds)]
                    sev = severity * float(np.exp(_SEVERITY_SPREAD * sev_rng.standard_normal()))
                name, value, conditions = domain_conditions(s, domain, i, shift)
                base = f"section_{sec}_{domain}_{split}_{label}_{i:04d}_{name}_{value}.wav"
                rel = f"{split}/{base}"
                csv_rows[sec].append([f"{machine}/{rel}", name, value])
                records.append(
                    {
                        "file": rel,
                        "machine_id": sec,
                        "split": split,
                        "label": label,
                        "domain": domain,
                        "attributes": {name: value},
                        "kind": kind,
                        "severity": round(sev, 4),
                        "conditions": conditions,
                    }
                )
                split_code = _SPLIT_CODES[(split, label)]
                jobs.append(
                    {
                        "order": len(jobs),
                        "machine": machine,
                        "params": params[sec],
                        "kind": kind,
                        "severity": sev,
                        "snr_db": snr_db,
                        "duration": duration,
                        "sample_rate": sample_rate,
                        "path": str(machine_dir / rel),
                        "entropy": [seed, code, s, split_code, _DOMAIN_CODES[domain], i, 11],
                        "conditions": conditions,
                    }
                )

    seconds = render_jobs(jobs, f"synth {machine} (domain shift)", progress, workers)
    for sec, rows in csv_rows.items():
        with open(machine_dir / f"attributes_{sec}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["file_name", "d1p", "d1v"])
            writer.writerows(rows)
    manifest = {
        "generator": "soundwatch.synth.domain_shift",
        "machine": machine,
        "description": model.description,
        "settings": {
            "seed": seed,
            "id_spread": id_spread,
            "snr_db": snr_db,
            "severity": severity,
            "shift": shift,
            "anomaly_kinds": kinds,
            "duration": duration,
            "sample_rate": sample_rate,
            "n_sections": n_sections,
            "n_source": n_source,
            "n_target": n_target,
            "n_test_normal_per_domain": n_test_normal,
            "n_test_anomaly_per_domain": n_test_anomaly,
            "subtype": "PCM_16",
            "severity_spread": _SEVERITY_SPREAD,
        },
        "shifts": {sec: SHIFTS[s % len(SHIFTS)][0] for s, sec in enumerate(sections)},
        "anomaly_kinds": dict(model.kinds),
        "ids": params,
        "clips": records,
    }
    manifest_path = machine_dir / MANIFEST_NAME
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return {
        "machine": machine,
        "root": str(machine_dir),
        "sections": sections,
        "n_train": (n_source + n_target) * n_sections,
        "n_test": 2 * (n_test_normal + n_test_anomaly) * n_sections,
        "n_clips": len(jobs),
        "seconds": round(seconds, 3),
        "manifest": str(manifest_path),
    }
