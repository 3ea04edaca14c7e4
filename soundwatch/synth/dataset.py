"""Render clips of the synthetic machines and write a DCASE 2020-layout data set.

Layout written by :func:`generate_dataset` (``NNNNNNNN`` is an 8-digit running index per
machine ID and label, as in DCASE 2020 Task 2)::

    <out_root>/<machine>/train/normal_id_00_00000000.wav
    <out_root>/<machine>/test/normal_id_00_00000000.wav
    <out_root>/<machine>/test/anomaly_id_00_00000000.wav
    <out_root>/<machine>/synth_manifest.json

Every clip has its own random generator seeded from ``(seed, machine, id, split/label,
index)``, so the files do not depend on the number of workers or on which clips were
rendered before.

With ``sessions > 1`` the clips are recorded in several sessions (days) whose microphone
gain, EQ tilt, background level and machine load differ (see :func:`session_conditions`);
the session and recording are the ``_sessionNN_takeT`` tag at the end of each file name
and ``session`` and ``take`` in the manifest.
"""

from __future__ import annotations

import ctypes
import json
import math
import multiprocessing
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from soundwatch.data.manifest import MANIFEST_NAME
from soundwatch.errors import ConfigError
from soundwatch.fileio import atomic_write_text
from soundwatch.synth import fan, slider
from soundwatch.synth.noise import F32, factory_noise, mix_at_snr, sample_environment

__all__ = [
    "ANOMALY_KINDS",
    "MACHINES",
    "MANIFEST_NAME",
    "generate_dataset",
    "render_clip",
    "sample_id_params",
    "session_conditions",
]

_PEAK_LIMIT = 0.98  # final clips never exceed this (no clipping in the 16-bit file)
_GAIN_SPREAD_DB = 3.0  # random per-clip level: loudness alone must not give anomalies away
_SEVERITY_SPREAD = 0.3  # per-clip severity = severity * exp(N(0, 0.3)): varied difficulty
_SPLIT_CODES = {("train", "normal"): 0, ("test", "normal"): 1, ("test", "anomaly"): 2}
_CLIP_NAME = re.compile(r"^(normal|anomaly)_id_\d+_\d{8}(_session\d+_take\d+)?\.wav$")
# Spread of the recording conditions between sessions (standard deviations): microphone
# gain (dB), EQ tilt (dB per octave around 1 kHz), background level (dB) and machine
# load (log of the speed factor). A session's clips come from several recordings (takes):
# _TRAIN_TAKES of training clips and one (take 0) of test clips, whose conditions differ
# by _TAKE_SPREAD times as much.
_SESSION_SPREAD = {"gain_db": 3.0, "tilt_db_oct": 1.0, "background_db": 3.0, "log_load": 0.03}
_TAKE_SPREAD = 0.5
_TRAIN_TAKES = 2
# Parameters that scale with machine load, with their exponent (speed up, cycles shorter).
_LOAD_PARAMS = {"slider": {"motor_hz": 1.0, "cycle_s": -1.0}, "fan": {"rpm": 1.0}}


@dataclass(frozen=True)
class _Model:
    description: str
    kinds: dict[str, str]
    sample_params: Callable[[np.random.Generator], dict]
    render: Callable[..., tuple[np.ndarray, float]]


_MODELS: dict[str, _Model] = {
    "slider": _Model(slider.DESCRIPTION, slider.KINDS, slider.sample_params, slider.render),
    "fan": _Model(fan.DESCRIPTION, fan.KINDS, fan.sample_params, fan.render),
}

#: Machine types that can be synthesised, with a one-line description each.
MACHINES: dict[str, str] = {name: m.description for name, m in _MODELS.items()}

#: Anomaly kinds of each machine type, with a one-line description each.
ANOMALY_KINDS: dict[str, dict[str, str]] = {name: dict(m.kinds) for name, m in _MODELS.items()}


def _model(machine: str) -> _Model:
    if machine not in _MODELS:
        raise ConfigError(
            f"unknown synthetic machine {machine!r}; choose one of {', '.join(sorted(_MODELS))}"
        )
    return _MODELS[machine]


def _machine_code(machine: str) -> int:
    """Stable integer for a machine name (Python's hash() is salted per process)."""
    return zlib.crc32(machine.encode("utf-8"))


def _blend(product: object, unit: object, spread: float) -> object:
    """``product + spread * (unit - product)`` on every float of two parameter trees.

    Integers (blade and ball counts), booleans and lists whose lengths differ (how many
    background tones or bands there are) stay the product's: they are design choices,
    not tolerances.
    """
    if isinstance(product, dict) and isinstance(unit, dict):
        return {key: _blend(value, unit.get(key), spread) for key, value in product.items()}
    if isinstance(product, list) and isinstance(unit, list) and len(product) == len(unit):
        return [_blend(a, b, spread) for a, b in zip(product, unit, strict=True)]
    if isinstance(product, float) and isinstance(unit, float):
        return product + spread * (unit - product)
    return product


def sample_id_params(
    machine: str, machine_id: str | int, seed: int = 0, id_spread: float = 1.0
) -> dict:
    """Draw the physical parameters of one machine ID, deterministically from ``seed``.

    With ``id_spread`` 1 (default) every ID is an independent machine in a hall of its
    own. Below 1 the IDs are units of one product line in one factory hall: a
    *product* (nominal design and hall) is drawn from ``seed`` alone, a *unit* from
    ``seed`` and the ID, and every continuous parameter is ``product + id_spread *
    (unit - product)``; 0 gives identical units.

    Parameters
    ----------
    machine : str
        A key of :data:`MACHINES`.
    machine_id : str or int
        Machine ID such as ``"00"``.
    seed : int
        Data-set seed.
    id_spread : float
        How far the IDs' parameters stray from the product's, in [0, 1].

    Returns
    -------
    dict
        JSON-serialisable parameters for :func:`render_clip`: the machine's physical
        parameters plus ``"background"``, the environment of its location (see
        :func:`soundwatch.synth.noise.sample_environment`).
    """
    model = _model(machine)
    id_spread = _check_float("id_spread", id_spread, 0.0, 1.0)

    def draw(*key: int) -> dict:
        rng = np.random.default_rng(
            np.random.SeedSequence([int(seed), _machine_code(machine), *key, 7919])
        )
        params = model.sample_params(rng)
        params["background"] = sample_environment(rng)
        return params

    unit = draw(int(machine_id))
    if id_spread == 1.0:  # not a blend: counts and list lengths would be the product's
        return unit
    return _blend(draw(), unit, id_spread)


def session_conditions(
    machine: str, machine_id: str | int, session: int, take: int, seed: int = 0
) -> dict:
    """Recording conditions of one take of one session of a machine ID.

    A session (a recording day) has its own microphone gain, EQ tilt, background level
    and machine load, drawn from ``(seed, machine, id, session)``. Its clips come from
    several recordings (takes: 1 and 2 for training clips, 0 for test clips) whose
    conditions stray a little further, drawn from ``(..., take)``.

    Returns
    -------
    dict
        ``gain_db``, ``tilt_db_oct``, ``background_db`` and ``load`` (speed factor), for
        :func:`render_clip`'s ``conditions``.
    """
    code = _machine_code(machine)
    day = np.random.default_rng([int(seed), code, int(machine_id), 5, int(session)])
    rec = np.random.default_rng([int(seed), code, int(machine_id), 6, int(session), int(take)])
    values = {
        key: spread * (day.standard_normal() + _TAKE_SPREAD * rec.standard_normal())
        for key, spread in _SESSION_SPREAD.items()
    }
    return {
        "gain_db": round(float(values["gain_db"]), 3),
        "tilt_db_oct": round(float(values["tilt_db_oct"]), 3),
        "background_db": round(float(values["background_db"]), 3),
        "load": round(float(np.exp(values["log_load"])), 4),
    }


def _apply_load(machine: str, params: dict, load: float) -> dict:
    """The ID's parameters with its speed scaled by ``load``."""
    changed = dict(params)
    for key, exponent in _LOAD_PARAMS.get(machine, {}).items():
        changed[key] = params[key] * load**exponent
    return changed


def _tilt(y: np.ndarray, sample_rate: float, tilt_db_oct: float) -> np.ndarray:
    """Apply a microphone EQ tilt of ``tilt_db_oct`` dB per octave around 1 kHz."""
    spectrum = np.fft.rfft(y)
    f = np.maximum(np.fft.rfftfreq(y.size, 1.0 / sample_rate), 50.0)
    spectrum *= 10.0 ** (tilt_db_oct * np.log2(f / 1000.0) / 20.0)
    return np.fft.irfft(spectrum, y.size).astype(F32)


def render_clip(
    machine: str,
    params: dict,
    kind: str | None = None,
    severity: float = 1.0,
    rng: np.random.Generator | int | None = None,
    *,
    snr_db: float = 0.0,
    duration: float = 10.0,
    sample_rate: int = 16000,
    normalize: bool = True,
    conditions: dict | None = None,
) -> np.ndarray:
    """Render one clip: machine sound (normal or anomalous) plus factory background.

    Parameters
    ----------
    machine : str
        A key of :data:`MACHINES`.
    params : dict
        Per-ID parameters from :func:`sample_id_params`.
    kind : str or None
        None or ``"normal"`` for a normal clip, else a key of ``ANOMALY_KINDS[machine]``.
    severity : float
        Anomaly strength: 0 renders the normal clip, 1 is the calibrated default, about 3
        is obvious. Ignored for normal clips.
    rng : numpy.random.Generator or int or None
        Random source (or seed). The clip draws four independent sub-generators from it
        (machine variation, anomaly details, background, gain), so a normal and an
        anomalous clip rendered from the same state share machine variation, background
        and gain, and differ only by the anomaly.
    snr_db : float
        Ratio of the normal machine sound's power to the background power, in dB.
    duration : float
        Clip length in seconds.
    sample_rate : int
        Sampling rate in Hz.
    normalize : bool
        Scale the clip so that a normal clip has the ID's level (``params["level_dbfs"]``
        RMS, +-3 dB random per clip) and keep the peak below 0.98; otherwise return the
        mixture unscaled.
    conditions : dict or None
        Recording session from :func:`session_conditions`: machine ``load`` scales its
        speed, ``background_db`` raises the background, ``tilt_db_oct`` tilts the
        spectrum and ``gain_db`` shifts the level. None (default): no session effects.

    Returns
    -------
    ndarray of float32, shape (round(duration * sample_rate),)
    """
    model = _model(machine)
    if kind == "normal":
        kind = None
    if kind is not None and kind not in model.kinds:
        raise ConfigError(
            f"unknown anomaly kind {kind!r} for {machine}; choose from {', '.join(model.kinds)}"
        )
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    n = round(duration * sample_rate)
    if n < 16:
        raise ConfigError(f"duration {duration} s is too short to render a clip")
    seeds = rng.integers(0, 2**63 - 1, size=4)
    machine_rng, anomaly_rng, noise_rng, gain_rng = (np.random.default_rng(s) for s in seeds)
    if conditions is not None:
        params = _apply_load(machine, params, float(conditions["load"]))
        snr_db = float(snr_db) - float(conditions["background_db"])
    signal, ref_power = model.render(
        params, kind, float(severity), n, float(sample_rate), machine_rng, anomaly_rng
    )
    noise = factory_noise(n, float(sample_rate), noise_rng, params.get("background"))
    y = mix_at_snr(signal, noise, float(snr_db), signal_power=ref_power)
    if conditions is not None:
        y = _tilt(y, float(sample_rate), float(conditions["tilt_db_oct"]))
    if normalize:
        target_db = params.get("level_dbfs", -27.0) + gain_rng.uniform(
            -_GAIN_SPREAD_DB, _GAIN_SPREAD_DB
        )
        if conditions is not None:
            target_db += float(conditions["gain_db"])
        # Scale by the power a normal clip has (normal machine + background), not by this
        # clip's own: a recording's gain knows nothing of the fault, so an anomaly that
        # adds energy makes the clip a little louder, as it would in a real recording;
        # the random per-clip gain keeps loudness from being a reliable cue.
        normal_power = ref_power * (1.0 + 10.0 ** (-float(snr_db) / 10.0))
        y *= F32(10.0 ** (target_db / 20.0) / max(np.sqrt(normal_power), 1e-12))
        peak = float(np.max(np.abs(y)))
        if peak > _PEAK_LIMIT:
            y *= F32(_PEAK_LIMIT / peak)
    return y.astype(F32, copy=False)


# --------------------------------------------------------------------------- data set


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_float(
    name: str, value: object, lo: float | None = None, hi: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be at most {hi}, got {value}")
    return float(value)


def prepare_folder(
    machine_dir: Path,
    overwrite: bool,
    clip_name: re.Pattern = _CLIP_NAME,
    own_file: re.Pattern | None = None,
) -> None:
    """Refuse a non-empty target unless ``overwrite``; then remove only our own files:
    clips in train/ and test/ matching ``clip_name``, the manifest, and files of the
    machine folder matching ``own_file``."""
    if machine_dir.exists() and not machine_dir.is_dir():
        raise ConfigError(f"{machine_dir} exists and is not a folder")
    if machine_dir.is_dir() and any(machine_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{machine_dir} is not empty; choose another folder or pass --overwrite "
                "(overwrite=True)"
            )
        # Remove clips named like ours (stale ones from a bigger earlier run would mix in)
        # and the manifest; anything else the user keeps there is left alone.
        for sub in ("train", "test"):
            d = machine_dir / sub
            if d.is_dir():
                for f in d.iterdir():
                    if f.is_file() and clip_name.match(f.name):
                        f.unlink()
        (machine_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for f in machine_dir.iterdir():
            if own_file is not None and f.is_file() and own_file.match(f.name):
                f.unlink()
    (machine_dir / "train").mkdir(parents=True, exist_ok=True)
    (machine_dir / "test").mkdir(parents=True, exist_ok=True)


_ALLOCATOR_TUNED = False


def _tune_allocator() -> None:
    """Let glibc keep freed clip-sized buffers instead of returning them to the kernel.

    Rendering allocates a few dozen 0.6-1.3 MB temporaries per clip. With glibc's default
    trim threshold they go back to the kernel after every clip and come back as fresh
    zeroed pages, and the page faults cost about as much as the arithmetic. Keeping up to
    64 MB of free heap (and serving blocks under 4 MB from the heap) removes them. This
    is process-wide but harmless; it is a no-op where libc has no ``mallopt``.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return
    _ALLOCATOR_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _render_job(job: dict) -> dict:
    """Render and write one clip (module level so that worker processes can run it)."""
    ss = np.random.SeedSequence(job["entropy"])
    y = render_clip(
        job["machine"],
        job["params"],
        job["kind"],
        job["severity"],
        np.random.default_rng(ss),
        snr_db=job["snr_db"],
        duration=job["duration"],
        sample_rate=job["sample_rate"],
        conditions=job.get("conditions"),
    )
    sf.write(job["path"], y, job["sample_rate"], subtype="PCM_16", format="WAV")
    return {"index": job["order"], "peak": float(np.max(np.abs(y)))}


def render_jobs(jobs: list[dict], desc: str, progress: bool, workers: int) -> float:
    """Render and write every clip job (in ``workers`` processes); returns the seconds."""
    _tune_allocator()
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress)
    try:
        if workers == 1 or len(jobs) < 2:
            for job in jobs:
                _render_job(job)
                bar.update(1)
        else:
            pool = multiprocessing.get_context().Pool(
                min(workers, len(jobs)), initializer=_tune_allocator
            )
            with pool:
                for _ in pool.imap_unordered(_render_job, jobs, chunksize=4):
                    bar.update(1)
    finally:
        bar.close()
    return time.perf_counter() - t0


def generate_dataset(
    out_root: str | Path,
    machine: str = "slider",
    n_ids: int = 4,
    n_train_per_id: int = 100,
    n_test_normal_per_id: int = 30,
    n_test_anomaly_per_id: int = 30,
    snr_db: float = 0.0,
    severity: float = 1.0,
    anomaly_kinds: Sequence[str] | str | None = None,
    seed: int = 0,
    id_spread: float = 1.0,
    duration: float = 10.0,
    sample_rate: int = 16000,
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
    sessions: int = 1,
) -> dict:
    """Synthesise a DCASE 2020 Task 2-layout data set of one machine type.

    Parameters
    ----------
    out_root : str or Path
        Data-set root; clips go to ``<out_root>/<machine>/{train,test}``.
    machine : str
        A key of :data:`MACHINES` (``"slider"``, ``"fan"``).
    n_ids : int
        Number of machine IDs; IDs are ``"00", "02", "04", "06", ...`` as in DCASE 2020.
    n_train_per_id, n_test_normal_per_id, n_test_anomaly_per_id : int
        Clips per ID: normal training clips, normal and anomalous test clips.
    snr_db : float
        Machine-to-background power ratio in dB (MIMII / DCASE 2020 used 6, 0 and -6).
    severity : float
        Anomaly strength (0 = anomalous clips are statistically normal, 1 = default,
        ~3 = obvious). Each anomalous clip gets ``severity * exp(N(0, 0.3))``.
    anomaly_kinds : sequence of str, str or None
        Kinds to use (cycled through per ID); None uses all kinds of the machine.
    seed : int
        Seed of everything (IDs' physical parameters and every clip).
    id_spread : float
        How different the machine IDs are, in [0, 1]: 1 (default) draws every ID's
        machine and hall independently, smaller values draw them around one product
        design and hall (see :func:`sample_id_params`).
    duration : float
        Clip length in seconds.
    sample_rate : int
        Sampling rate in Hz; files are mono 16-bit PCM WAV.
    progress : bool
        Show a tqdm progress bar over clips.
    workers : int
        Processes rendering in parallel; the files do not depend on it.
    overwrite : bool
        Allow writing into a non-empty ``<out_root>/<machine>``: clips named like DCASE
        clips in ``train``/``test`` and the manifest are removed first, other files kept.
    sessions : int
        Recording sessions (days). 1 (default) records everything in one session, with
        no session effects. With N > 1, clip ``i`` of every ID and split is recorded in
        session ``i % N + 1`` (so training and test clips span all sessions), under
        that session's conditions (:func:`session_conditions`). A session's training
        clips come from two recordings (takes 1 and 2), its test clips from a third
        (take 0); file names end in ``_sessionNN_takeT``.

    Returns
    -------
    dict
        Summary: ``machine``, ``root``, ``ids``, clip counts, ``anomaly_kinds``,
        ``seconds``, ``clips_per_second`` and ``manifest`` (path).

    Raises
    ------
    ConfigError
        Unknown machine or kind, invalid numbers, or a non-empty target folder.
    """
    model = _model(machine)
    n_ids = _check_int("n_ids", n_ids, 1, 50)
    n_train = _check_int("n_train_per_id", n_train_per_id, 0)
    n_test_normal = _check_int("n_test_normal_per_id", n_test_normal_per_id, 0)
    n_test_anomaly = _check_int("n_test_anomaly_per_id", n_test_anomaly_per_id, 0)
    seed = _check_int("seed", seed, 0)
    workers = _check_int("workers", workers, 1)
    sample_rate = _check_int("sample_rate", sample_rate, 1000, 384000)
    snr_db = _check_float("snr_db", snr_db)
    severity = _check_float("severity", severity, 0.0)
    duration = _check_float("duration", duration)
    id_spread = _check_float("id_spread", id_spread, 0.0, 1.0)
    sessions = _check_int("sessions", sessions, 1, 99)
    if duration * sample_rate < 16:
        raise ConfigError(f"duration must give at least 16 samples, got {duration} s")
    if anomaly_kinds is None:
        kinds = list(model.kinds)
    else:
        kinds = [anomaly_kinds] if isinstance(anomaly_kinds, str) else list(anomaly_kinds)
        unknown = [k for k in kinds if k not in model.kinds]
        if unknown or not kinds:
            raise ConfigError(
                f"unknown anomaly kind(s) {', '.join(map(repr, unknown)) or '(none given)'} "
                f"for {machine}; choose from {', '.join(model.kinds)}"
            )
    if n_train + n_test_normal + n_test_anomaly == 0:
        raise ConfigError("no clips requested: all per-ID clip counts are 0")

    machine_dir = Path(out_root) / machine
    prepare_folder(machine_dir, overwrite)

    code = _machine_code(machine)
    ids = [f"{2 * i:02d}" for i in range(n_ids)]
    id_params = {mid: sample_id_params(machine, mid, seed, id_spread) for mid in ids}
    jobs: list[dict] = []
    records: list[dict] = []
    for mid in ids:
        groups = (("train", "normal", n_train), ("test", "normal", n_test_normal))
        groups += (("test", "anomaly", n_test_anomaly),)
        for split, label, count in groups:
            split_code = _SPLIT_CODES[(split, label)]
            sev_rng = np.random.default_rng([seed, code, int(mid), 3, 0])
            for i in range(count):
                kind, sev = None, 0.0
                if label == "anomaly":
                    kind = kinds[i % len(kinds)]
                    sev = severity * float(np.exp(_SEVERITY_SPREAD * sev_rng.standard_normal()))
                session, conditions, tag = None, None, ""
                if sessions > 1:
                    session = i % sessions + 1
                    # two training recordings per session, the test clips a third
                    take = (i // sessions) % _TRAIN_TAKES + 1 if split == "train" else 0
                    conditions = session_conditions(machine, mid, session, take, seed)
                    tag = f"_session{session:02d}_take{take}"
                rel = f"{split}/{label}_id_{mid}_{i:08d}{tag}.wav"
                record = {
                    "file": rel,
                    "machine_id": mid,
                    "split": split,
                    "label": label,
                    "kind": kind,
                    "severity": round(sev, 4),
                }
                if session is not None:
                    record["session"] = session
                    record["take"] = take
                    record["conditions"] = conditions
                records.append(record)
                jobs.append(
                    {
                        "order": len(jobs),
                        "machine": machine,
                        "params": id_params[mid],
                        "kind": kind,
                        "severity": sev,
                        "snr_db": snr_db,
                        "duration": duration,
                        "sample_rate": sample_rate,
                        "path": str(machine_dir / rel),
                        "entropy": [seed, code, int(mid), split_code, i],
                        "conditions": conditions,
                    }
                )

    seconds = render_jobs(jobs, f"synth {machine}", progress, workers)

    manifest = {
        "generator": "soundwatch.synth",
        "machine": machine,
        "description": model.description,
        "settings": {
            "seed": seed,
            "id_spread": id_spread,
            "snr_db": snr_db,
            "severity": severity,
            "anomaly_kinds": kinds,
            "duration": duration,
            "sample_rate": sample_rate,
            "n_ids": n_ids,
            "n_train_per_id": n_train,
            "n_test_normal_per_id": n_test_normal,
            "n_test_anomaly_per_id": n_test_anomaly,
            "subtype": "PCM_16",
            "severity_spread": _SEVERITY_SPREAD,
            "gain_spread_db": _GAIN_SPREAD_DB,
            **({"sessions": sessions, "session_spread": _SESSION_SPREAD} if sessions > 1 else {}),
            **({"take_spread": _TAKE_SPREAD} if sessions > 1 else {}),
        },
        "anomaly_kinds": {k: model.kinds[k] for k in kinds},
        "ids": id_params,
        "clips": records,
    }
    manifest_path = machine_dir / MANIFEST_NAME
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return {
        "machine": machine,
        "root": str(machine_dir),
        "ids": ids,
        "n_train": n_train * n_ids,
        "n_test_normal": n_test_normal * n_ids,
        "n_test_anomaly": n_test_anomaly * n_ids,
        "n_clips": len(jobs),
        "anomaly_kinds": kinds,
        "seconds": round(seconds, 3),
        "clips_per_second": round(len(jobs) / seconds, 2) if seconds > 0 else None,
        "manifest": str(manifest_path),
    }
