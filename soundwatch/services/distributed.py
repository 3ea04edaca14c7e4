"""Scale out on Ray: score recording archives with Ray Data, train fleets with Ray tasks.

Two jobs, both behind the same commands as on one machine:

- :func:`score_archive` streams the paths of an archive (a folder tree, a list file or a
  glob) into partitions of ``partition_size`` clips, and scores them with Ray Data
  ``map_batches`` over an actor pool whose actors each load the model once, through
  :class:`~soundwatch.runtime.ScoringRuntime` (so a clip gets the same score and decision
  as with plain ``soundwatch score``). Each partition becomes one Parquet file, written
  under a temporary name and renamed when complete, so a rerun skips complete
  partitions and redoes interrupted ones. A clip that cannot be scored is a row with an
  ``error``; it never fails the job.
- :func:`train_fleet` fits one model per machine listed in a TOML file, each as a Ray
  task with CPU resources that Ray retries on failure, and writes the model files, a
  ``fleet.json`` index (which :meth:`ScoringRuntime.load` takes as a model map) and a
  leaderboard of held-out results.

Ray is an optional dependency (``pip install soundwatch[ray]``); it is imported only
when one of these functions runs.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from soundwatch.data.audio import is_audio_file
from soundwatch.data.datasets import walk_audio
from soundwatch.detectors.registry import DEFAULT_DETECTOR
from soundwatch.errors import ConfigError, DatasetError, SoundwatchError
from soundwatch.features.cache import file_digest
from soundwatch.fileio import atomic_path, atomic_write_text, check_writable
from soundwatch.runtime.scoring import FLEET_FORMAT, ScoringRuntime

# Clips per output partition: the unit of work, of resumption and of one Parquet file.
DEFAULT_PARTITION_SIZE = 1000
# Clips one actor scores per call of the runtime (bounds the memory of one batch).
SCORE_BATCH = 64
MANIFEST = "manifest.json"
# Folder of the partitions still to do, as JSON-lines files of LISTING_PARTITIONS each:
# Ray Data reads them in parallel, and no task holds the whole listing.
LISTING = "_pending"
LISTING_PARTITIONS = 100
PART_GLOB = "part-*.parquet"
COLUMNS = (
    "path",
    "machine_id",
    "score",
    "threshold",
    "threshold_source",
    "decision",
    "model_digest",
    "error",
)


def _require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'soundwatch[ray]' (ray[data], pyarrow)"
        ) from None
    return ray


# ---------------------------------------------------------------------------- inputs
def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _is_glob(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def iter_archive(sources: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Stream the audio paths of an archive, in a repeatable order.

    Parameters
    ----------
    sources : iterable of str or path-like
        Each a folder (searched recursively), a list file (one path per line; blank
        lines and ``#`` comments ignored; relative paths are relative to the list), an
        audio file, or a glob such as ``archive/**/*.wav`` (matched while walking the
        fixed part of the pattern in sorted order, with :mod:`fnmatch` rules: ``*`` also
        matches across folders, and ``**/`` may match no folder; quote it in a shell).

    Raises
    ------
    DatasetError
        A source is missing, or a glob names no existing folder.
    """
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            yield from walk_audio(path)
        elif path.is_file() and is_audio_file(path):
            yield text
        elif path.is_file():
            base = path.parent
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    entry = line.strip()
                    if entry and not entry.startswith("#"):
                        yield entry if os.path.isabs(entry) else str(base / entry)
        elif _is_glob(text):
            root = _glob_root(text)
            if not Path(root).is_dir():
                raise DatasetError(f"no folder {root} to search for {text}")
            regex = re.compile(fnmatch.translate(text.replace("**/", "*")))
            for found in walk_audio(Path(root)):
                if regex.match(found):
                    yield found
        else:
            raise DatasetError(f"audio folder, list file or glob not found: {text}")


def _chunks(paths: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _paths_digest(paths: list[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]


def part_name(index: int) -> str:
    """File name of partition ``index``."""
    return f"part-{index:06d}.parquet"


# ---------------------------------------------------------------------------- workers
def _reason(error: str, path: str) -> str:
    """An error without its file name, so that equal reasons count together."""
    return error.replace(path, "FILE")


class PartitionScorer:
    """Ray Data actor: loads the model once, then scores whole partitions.

    Each call gets a batch of partition descriptors (``index``, ``paths``, ``digest``),
    scores each partition through :class:`ScoringRuntime` with ``skip_bad``, and writes
    it as one Parquet file (temporary name, renamed when complete). It returns one
    summary row per partition.
    """

    def __init__(self, model: str, threshold: str | None, out_dir: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.runtime = ScoringRuntime(skip_bad=True, threshold=threshold)
        self.runtime.load({"model": model})
        self.digest = file_digest(model)[:16]
        self.out_dir = Path(out_dir)

    def score_paths(self, paths: list[str]) -> list[dict]:
        from soundwatch.data.datasets import clip_from_path

        rows = []
        for start in range(0, len(paths), SCORE_BATCH):
            chunk = paths[start : start + SCORE_BATCH]
            clips = [clip_from_path(p) for p in chunk]
            try:
                results = self.runtime.score(clips)
            except Exception:
                # Not an unreadable file (those are skipped inside): find the clip.
                results = [self._score_one(clip) for clip in clips]
            rows.extend(self._row(r) for r in results)
        return rows

    def _score_one(self, clip):
        from soundwatch.runtime.scoring import Result

        try:
            return self.runtime.score([clip])[0]
        except Exception as exc:
            return Result(
                path=clip.path,
                machine="model",
                machine_id=clip.machine_id,
                model_digest=self.digest,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _row(self, result) -> dict:
        return {
            "path": str(result.path),
            "machine_id": result.machine_id,
            "score": result.score,
            "threshold": result.threshold,
            "threshold_source": result.threshold_source,
            "decision": result.decision,
            "model_digest": result.model_digest or self.digest,
            "error": result.error,
        }

    def __call__(self, batch: dict) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        summary = {"index": [], "clips": [], "errors": [], "reasons": [], "seconds": []}
        for index, paths_text, digest in zip(
            batch["index"], batch["paths"], batch["digest"], strict=True
        ):
            start = time.perf_counter()
            paths = str(paths_text).split("\n")
            rows = self.score_paths(paths)
            table = pa.Table.from_pylist(rows, schema=_schema())
            table = table.replace_schema_metadata(
                {"paths_digest": str(digest), "model_digest": self.digest}
            )
            with atomic_path(self.out_dir / part_name(int(index))) as tmp:
                pq.write_table(table, tmp)
            reasons = Counter(_reason(r["error"], r["path"]) for r in rows if r["error"])
            summary["index"].append(int(index))
            summary["clips"].append(len(rows))
            summary["errors"].append(sum(reasons.values()))
            summary["reasons"].append(json.dumps(reasons))
            summary["seconds"].append(time.perf_counter() - start)
        return summary


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("machine_id", pa.string()),
            ("score", pa.float64()),
            ("threshold", pa.float64()),
            ("threshold_source", pa.string()),
            ("decision", pa.int8()),
            ("model_digest", pa.string()),
            ("error", pa.string()),
        ]
    )


# ---------------------------------------------------------------------------- Ray setup
@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[dict]:
    """Connect to Ray at ``address``, or start a local Ray sized to this machine.

    Yields the cluster's resources. A Ray that is already initialised (e.g. by a test)
    is used as it is and left running.
    """
    ray = _require_ray()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level="warning")
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                logging_level="warning",
            )
        started = True
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()


def actor_cpus(cluster_cpus: float, workers: int) -> float:
    """CPUs each scoring actor reserves: at most one, leaving one CPU free for Ray Data's
    read tasks. Whole-CPU actors on a small machine starve those tasks and the pipeline
    never moves."""
    spare = max(cluster_cpus - 1.0, 0.25)
    return max(0.05, min(1.0, round(spare / workers, 2)))


# ---------------------------------------------------------------------------- scoring
@dataclass
class ArchiveSummary:
    """What :func:`score_archive` did."""

    partitions: int = 0
    partitions_done_before: int = 0
    partitions_changed: int = 0
    partitions_removed: int = 0
    clips_done_before: int = 0
    clips: int = 0
    errors: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    startup_seconds: float = 0.0
    workers: int = 0
    actor_cpus: float = 0.0
    out_dir: Path | None = None
    csv: Path | None = None

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The final summary, one line per fact."""
        lines = [
            f"scored {self.clips - self.errors} clips in {self.seconds:.1f} s "
            f"({self.clips_per_second:.1f} clips/s, {self.workers} Ray workers at "
            f"{self.actor_cpus:g} CPU each, Ray start {self.startup_seconds:.1f} s) -> "
            f"{self.out_dir}"
        ]
        if self.partitions_done_before:
            lines.append(
                f"resumed: kept {self.partitions_done_before} complete partitions "
                f"({self.clips_done_before} clips) from an earlier run"
            )
        if self.errors:
            lines.append(f"skipped {self.errors} files (see the error column):")
            lines += [f"  {n} x {reason}" for reason, n in self.reasons.most_common(10)]
        if self.csv:
            lines.append(f"CSV -> {self.csv}")
        return lines


def _run_settings(model: Path, sources: list[str], partition_size: int, threshold) -> dict:
    return {
        "format": "soundwatch-archive-scores",
        "version": 1,
        "model": str(Path(os.path.abspath(model))),
        "model_digest": file_digest(model)[:16],
        "inputs": sources,
        "partition_size": partition_size,
        "threshold": threshold,
    }


def _prepare_out(out_dir: Path, settings: dict, overwrite: bool, say) -> None:
    """Refuse an output folder of another run; clear it under ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; --out names a folder for Parquet partitions")
    manifest = out_dir / MANIFEST
    if manifest.exists():
        old = json.loads(manifest.read_text())
        keys = ("model_digest", "inputs", "partition_size", "threshold")
        changed = [k for k in keys if old.get(k) != settings[k]]
        if changed and not overwrite:
            raise ConfigError(
                f"{out_dir} holds scores of another run ({', '.join(changed)} differ); "
                "choose another --out or pass --overwrite"
            )
        if overwrite:
            removed = list(out_dir.glob(PART_GLOB))
            for path in removed:
                path.unlink()
            say(f"--overwrite: removed {len(removed)} partitions of the earlier run")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise ConfigError(
            f"{out_dir} is not empty and holds no soundwatch run; choose another --out"
        )
    check_writable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = list(out_dir.glob(".part-*.tmp"))
    for path in stale:
        path.unlink()
    if stale:
        say(f"removed {len(stale)} unfinished partitions of an interrupted run; redoing them")


def _complete(path: Path, digest: str, model_digest: str) -> int | None:
    """Rows of a complete partition written for the same paths and model, else None."""
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    try:
        meta = pq.read_metadata(path)
    except Exception:
        return None
    stored = meta.metadata or {}
    if stored.get(b"paths_digest", b"").decode() != digest:
        return None
    if stored.get(b"model_digest", b"").decode() != model_digest:
        return None
    return meta.num_rows


def _write_listing(out_dir: Path, sources: list[str], size: int, model_digest: str, summary):
    """Stream the archive into a listing of the partitions still to do (one JSON line
    each, :data:`LISTING_PARTITIONS` per file); returns how many there are. Holds the
    paths of one listing file at a time."""
    pending = 0
    folder = out_dir / LISTING
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    batch: list[str] = []
    files = 0

    def flush() -> None:
        nonlocal files
        atomic_write_text(folder / f"listing-{files:06d}.jsonl", "".join(batch))
        files += 1
        batch.clear()

    # Absolute paths: Ray workers do not share the driver's working folder.
    absolute = (os.path.abspath(p) for p in iter_archive(sources))
    for index, paths in enumerate(_chunks(absolute, size)):
        summary.partitions += 1
        digest = _paths_digest(paths)
        part = out_dir / part_name(index)
        done = _complete(part, digest, model_digest)
        if done is not None:
            summary.partitions_done_before += 1
            summary.clips_done_before += done
            continue
        if part.exists():
            summary.partitions_changed += 1
        batch.append(
            json.dumps({"index": index, "paths": "\n".join(paths), "digest": digest}) + "\n"
        )
        pending += 1
        if len(batch) == LISTING_PARTITIONS:
            flush()
    if batch:
        flush()
    # Partitions past the end of a shrunken archive would mix old rows into the result.
    for part in out_dir.glob(PART_GLOB):
        if int(part.stem.split("-")[1]) >= summary.partitions:
            part.unlink()
            summary.partitions_removed += 1
    return pending


def score_archive(
    model: str | os.PathLike,
    sources: list[str],
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    workers: int | None = None,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    threshold: str | None = None,
    overwrite: bool = False,
    write_csv: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> ArchiveSummary:
    """Score an archive on Ray into partitioned Parquet (see the module docstring).

    Parameters
    ----------
    model : path
        Model file (``.safetensors``).
    sources : list of str
        Folders, list files or globs (see :func:`iter_archive`).
    out_dir : path
        Folder of ``part-NNNNNN.parquet`` files (columns :data:`COLUMNS`) and
        ``manifest.json``.
    address : str, optional
        A Ray cluster (``ray://host:10001`` or ``auto``); by default a local Ray sized to
        this machine is started.
    workers : int, optional
        Scoring actors; default one per CPU of the cluster.
    partition_size : int
        Clips per partition.
    write_csv : bool
        Also write ``scores.csv`` (streamed from the partitions).
    """
    if partition_size < 1:
        raise ConfigError(f"--partition-size must be >= 1, got {partition_size}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    model = Path(model)
    if not model.is_file():
        raise ConfigError(f"model file not found: {model}")
    ScoringRuntime(threshold=threshold).load({"model": model})  # refuse a bad model early
    out_dir = Path(out_dir)
    settings = _run_settings(model, [str(s) for s in sources], partition_size, threshold)
    _prepare_out(out_dir, settings, overwrite, say)
    summary = ArchiveSummary(out_dir=out_dir)
    pending = _write_listing(
        out_dir, settings["inputs"], partition_size, settings["model_digest"], summary
    )
    if summary.partitions == 0:
        raise DatasetError(f"no audio files found in {', '.join(settings['inputs'])}")
    atomic_write_text(out_dir / MANIFEST, json.dumps(settings, indent=2) + "\n")
    if summary.partitions_changed or summary.partitions_removed:
        say(
            f"the archive changed since the earlier run: rescoring "
            f"{summary.partitions_changed} partitions whose files differ, removed "
            f"{summary.partitions_removed} partitions past its new end"
        )
    if summary.partitions_done_before:
        say(
            f"resuming: {summary.partitions_done_before} of {summary.partitions} partitions "
            "are complete from an earlier run and are skipped"
        )
    start = time.perf_counter()
    if pending:
        with ray_session(address) as resources:
            summary.startup_seconds = time.perf_counter() - start
            _run_pipeline(
                out_dir,
                os.path.abspath(model),
                threshold,
                workers,
                pending,
                resources,
                summary,
                progress,
            )
    summary.seconds = time.perf_counter() - start - summary.startup_seconds
    shutil.rmtree(out_dir / LISTING, ignore_errors=True)
    if write_csv:
        summary.csv = write_scores_csv(out_dir)
    settings["summary"] = {
        "partitions": summary.partitions,
        "clips_scored_this_run": summary.clips - summary.errors,
        "errors_this_run": summary.errors,
        "seconds": round(summary.seconds, 3),
    }
    atomic_write_text(out_dir / MANIFEST, json.dumps(settings, indent=2) + "\n")
    return summary


def _run_pipeline(out_dir, model, threshold, workers, pending, resources, summary, progress):
    _require_ray()
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.verbose_stats_logs = False
    cpus = float(resources.get("CPU", 1))
    workers = min(workers or max(1, int(cpus)), pending)
    per_actor = actor_cpus(cpus, workers)
    summary.workers, summary.actor_cpus = workers, per_actor
    listing = str((out_dir / LISTING).resolve())
    dataset = ray.data.read_json(listing, lines=True, file_extensions=["jsonl"]).map_batches(
        PartitionScorer,
        fn_constructor_args=(model, threshold, str(out_dir.resolve()), max(1, int(per_actor))),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=per_actor,
    )
    for row in dataset.iter_rows():
        summary.clips += int(row["clips"])
        summary.errors += int(row["errors"])
        summary.reasons.update(json.loads(row["reasons"]))


def write_scores_csv(out_dir: str | os.PathLike) -> Path:
    """Write ``scores.csv`` from the Parquet partitions, one partition at a time."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    target = out_dir / "scores.csv"
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for part in sorted(out_dir.glob(PART_GLOB)):
            table = pq.read_table(part)
            for row in table.to_pylist():
                writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return target


# ---------------------------------------------------------------------------- fleets
@dataclass
class FleetMember:
    """One model of a fleet: its name, data and detector."""

    name: str
    root: str
    machine_type: str
    machine_id: str | None
    detector: str
    params: dict


def read_fleet_config(path: str | os.PathLike) -> list[FleetMember]:
    """Read a fleet TOML file.

    Top-level ``detector`` (default: ``DEFAULT_DETECTOR`` of the detector registry),
    ``root`` and ``params`` are defaults for each ``[[machine]]`` entry, which needs
    ``type`` and may set ``id``, ``name`` (default ``TYPE`` or ``TYPE-ID``), ``root``,
    ``detector`` and ``params``.
    Each entry may list ``ids = ["00", "02"]`` to make one model per ID.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fleet config not found: {path}")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    entries = config.get("machine")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path} lists no [[machine]] entries")
    members: list[FleetMember] = []
    for n, entry in enumerate(entries, 1):
        unknown = set(entry) - {"name", "root", "type", "id", "ids", "detector", "params"}
        if unknown:
            raise ConfigError(f"{path}: machine {n} has unknown keys {sorted(unknown)}")
        if "type" not in entry:
            raise ConfigError(f"{path}: machine {n} needs a type")
        root = entry.get("root", config.get("root"))
        if not root:
            raise ConfigError(f"{path}: machine {n} needs a root (or a top-level root)")
        root = str(path.parent / root) if not os.path.isabs(root) else root
        ids = entry.get("ids") or [entry.get("id")]
        for machine_id in ids:
            machine_id = None if machine_id is None else str(machine_id)
            default = entry["type"] if machine_id is None else f"{entry['type']}-{machine_id}"
            name = entry.get("name", default) if len(ids) == 1 else default
            members.append(
                FleetMember(
                    name=str(name),
                    root=root,
                    machine_type=str(entry["type"]),
                    machine_id=machine_id,
                    detector=str(entry.get("detector", config.get("detector", DEFAULT_DETECTOR))),
                    params={**config.get("params", {}), **entry.get("params", {})},
                )
            )
    names = Counter(m.name for m in members)
    if dup := [k for k, v in names.items() if v > 1]:
        raise ConfigError(f"{path}: machine names appear twice: {', '.join(dup)}")
    return members


def fit_member(member: FleetMember, out_dir: str) -> dict:
    """Fit one fleet model on its training normals and score its held-out test clips.

    Returns a leaderboard row; a bad configuration or data set is a row with ``error``
    (not retried), any other failure raises (Ray retries it).
    """
    from soundwatch.data.datasets import discover
    from soundwatch.detectors import create
    from soundwatch.evaluation.metrics import auc_pauc
    from soundwatch.evaluation.protocol import training_clips

    row = {
        "name": member.name,
        "machine_type": member.machine_type,
        "machine_id": member.machine_id,
        "detector": member.detector,
        "error": None,
    }
    try:
        detector = create(member.detector, **member.params)
        train = training_clips(Path(member.root), member.machine_type)
        if member.machine_id is not None:
            train = [c for c in train if c.machine_id == member.machine_id]
            if not train:
                raise DatasetError(
                    f"no training clips of ID {member.machine_id} for {member.machine_type}"
                )
        try:
            test = discover(member.root, member.machine_type, split="test")
        except DatasetError:
            test = []
        if member.machine_id is not None:
            test = [c for c in test if c.machine_id == member.machine_id]
        test = [c for c in test if c.label is not None]
        start = time.perf_counter()
        detector.fit(train)
        row["fit_seconds"] = round(time.perf_counter() - start, 2)
        model_path = Path(out_dir) / f"{member.name}.safetensors"
        detector.save(model_path, overwrite=True)
        row["model"] = model_path.name
        row["digest"] = file_digest(model_path)[:16]
        row["n_train"], row["n_test"] = len(train), len(test)
        row["auc"] = row["pauc"] = None
        labels = {c.is_anomaly for c in test}
        if len(labels) == 2:
            import numpy as np

            scores = detector.score(test)
            auc, pauc = auc_pauc(np.array([int(c.is_anomaly) for c in test]), scores)
            row["auc"], row["pauc"] = float(auc), float(pauc)
    except SoundwatchError as exc:
        row["error"] = str(exc)
    return row


def train_fleet(
    config: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    cpus_per_fit: float = 1.0,
    max_retries: int = 2,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> list[dict]:
    """Train every model of a fleet config as Ray tasks; write models, ``fleet.json``
    and ``leaderboard.csv`` into ``out_dir``. Returns the leaderboard rows, best first."""
    members = read_fleet_config(config)
    out_dir = Path(out_dir)
    if (out_dir / "fleet.json").exists() and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds a fleet; choose another --out or pass --overwrite"
        )
    check_writable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ray = _require_ray()
    with ray_session(address) as resources:
        cpus = min(cpus_per_fit, float(resources.get("CPU", 1)))
        task = ray.remote(fit_member).options(
            num_cpus=cpus, max_retries=max_retries, retry_exceptions=True
        )
        say(
            f"training {len(members)} models as Ray tasks "
            f"({cpus:g} CPU each, {max_retries} retries)"
        )
        refs = {task.remote(m, str(out_dir.resolve())): m for m in members}
        rows = []
        for ref, member in refs.items():
            try:
                rows.append(ray.get(ref))
            except Exception as exc:  # failed after every retry
                rows.append(
                    {
                        "name": member.name,
                        "machine_type": member.machine_type,
                        "machine_id": member.machine_id,
                        "detector": member.detector,
                        "error": f"failed after {max_retries} retries: {type(exc).__name__}",
                    }
                )
    index = {
        "format": FLEET_FORMAT,
        "version": 1,
        "models": {
            r["name"]: {
                "path": r["model"],
                "digest": r["digest"],
                "machine_type": r["machine_type"],
                "machine_id": r["machine_id"],
                "detector": r["detector"],
            }
            for r in rows
            if not r["error"]
        },
    }
    atomic_write_text(out_dir / "fleet.json", json.dumps(index, indent=2) + "\n")
    rows.sort(key=lambda r: (r["error"] is not None, -(r.get("auc") or -1.0), r["name"]))
    fields = [
        "name",
        "machine_type",
        "machine_id",
        "detector",
        "auc",
        "pauc",
        "n_train",
        "n_test",
        "fit_seconds",
        "model",
        "digest",
        "error",
    ]
    with atomic_path(out_dir / "leaderboard.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=fields, extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return rows


def format_fleet(rows: list[dict]) -> str:
    """The fleet leaderboard as a text table."""
    lines = [f"{'model':<20} {'detector':<22} {'AUC':>6} {'pAUC':>6} {'train':>6} {'test':>5}"]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['name']:<20} {r['detector']:<22} failed: {r['error']}")
            continue
        auc = "-" if r["auc"] is None else f"{r['auc']:.3f}"
        pauc = "-" if r["pauc"] is None else f"{r['pauc']:.3f}"
        lines.append(
            f"{r['name']:<20} {r['detector']:<22} {auc:>6} {pauc:>6} "
            f"{r['n_train']:>6} {r['n_test']:>5}"
        )
    return "\n".join(lines)
