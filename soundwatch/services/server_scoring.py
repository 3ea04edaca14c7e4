"""What the HTTP server does with an upload once it is accepted: score it through the
:class:`~soundwatch.runtime.ScoringRuntime`, store it, update alerts and metrics.

Everything here runs in the scoring queue's worker threads (see
:mod:`soundwatch.services.server_queue`), never on the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from soundwatch.data.audio import DEFAULT_SAMPLE_RATE
from soundwatch.errors import AudioError, SoundwatchError
from soundwatch.runtime import Result, ScoringRuntime
from soundwatch.services.alerts import AlertEngine
from soundwatch.services.server_queue import Job, ScoringQueue
from soundwatch.store import ClipRef, EventStore, StoreError

logger = logging.getLogger("soundwatch.serve")

# Latency buckets (seconds) of the request histogram: 10 s clips score in milliseconds,
# a queue under load adds up to seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Rule name of the alert opened while scores cannot be stored.
STORE_RULE = "store"
# A memory-backed folder for the uploads being scored (Linux).
SHARED_MEMORY = "/dev/shm"
# Characters kept from an uploaded file name (the name carries the machine ID).
_SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class Upload:
    """One uploaded clip.

    Attributes
    ----------
    data : bytes
        The WAV or FLAC file.
    filename : str
        Its name as sent (a DCASE-style name selects the machine ID's threshold).
    store : bool
        Keep the score in the event store.
    info : dict
        ``duration`` (s) and ``sample_rate`` (Hz) from the header.
    received_at : float
        Seconds since the epoch.
    """

    data: bytes
    filename: str
    store: bool
    info: dict
    received_at: float = field(default_factory=time.time)


@dataclass
class Scored:
    """The answer for one upload.

    Attributes
    ----------
    result : Result
        Its ``path`` is the uploaded file name.
    clip_key : str
        ``sha256:<hex>`` of the bytes.
    stored : bool
        The store holds this score after the request.
    duplicate : bool
        It held it before (same clip, same machine): nothing was added.
    store_error : str or None
        Why the score could not be stored.
    """

    result: Result
    clip_key: str
    stored: bool = False
    duplicate: bool = False
    store_error: str | None = None

    def to_json(self) -> dict:
        r = self.result
        return {
            "machine": r.machine,
            "file": str(r.path),
            "machine_id": r.machine_id,
            "score": r.score,
            "threshold": r.threshold,
            "threshold_source": r.threshold_source,
            "decision": r.decision,
            "model_digest": r.model_digest,
            "warnings": list(r.warnings),
            "clip_key": self.clip_key,
            "stored": self.stored,
            "duplicate": self.duplicate,
            "store_error": self.store_error,
        }


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (so that two servers
    in one process, as in tests, do not collide)."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.clips = Counter(
            "soundwatch_clips_scored",
            "Clips scored, by machine",
            ["machine"],
            registry=self.registry,
        )
        self.anomalies = Counter(
            "soundwatch_anomalies",
            "Clips scored above their threshold, by machine",
            ["machine"],
            registry=self.registry,
        )
        self.last_score = Gauge(
            "soundwatch_last_score",
            "Score of the last clip scored, by machine",
            ["machine"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "soundwatch_score_request_seconds",
            "Time from receiving a scoring request to answering it (queue wait included)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "soundwatch_requests_rejected",
            "Scoring requests refused, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "soundwatch_store_errors",
            "Batches of scores that could not be written to the event store",
            registry=self.registry,
        )
        depth = Gauge(
            "soundwatch_queue_depth", "Clips waiting to be scored", registry=self.registry
        )
        depth.set_function(queue_depth)


class ScoringService:
    """Score uploads in batches, store them, keep alerts and metrics.

    Parameters
    ----------
    runtime : ScoringRuntime
        Holds the models and the event store (``runtime.store``, where ``store=true``
        uploads go; None keeps nothing). It should have ``skip_bad=True`` so that one
        bad clip of a batch does not fail the others.
    alerts : AlertEngine, optional
        Fed the results of every ``store=true`` upload, in order; opens and closes the
        machine's alerts (in the store, and in memory while the store fails).
    capacity, workers, max_batch
        Of the :class:`ScoringQueue`.
    """

    def __init__(
        self,
        runtime: ScoringRuntime,
        *,
        alerts: AlertEngine | None = None,
        capacity: int = 64,
        workers: int = 1,
        max_batch: int = 16,
    ) -> None:
        self.runtime = runtime
        self.alerts = alerts
        self._alerts_lock = threading.Lock()  # the engine keeps per-machine history
        # Uploads live in files only while they are scored (detectors read files): in
        # memory (/dev/shm) where there is one, which makes writing and removing them
        # several times cheaper; on disk when it is missing or full.
        self._folders = [Path(tempfile.mkdtemp(prefix="soundwatch-serve-"))]
        if os.path.isdir(SHARED_MEMORY) and os.access(SHARED_MEMORY, os.W_OK):
            self._folders.insert(
                0, Path(tempfile.mkdtemp(prefix="soundwatch-serve-", dir=SHARED_MEMORY))
            )
        self._lock = threading.Lock()
        self._store_alerts: dict[str, dict] = {}
        self._next_alert_id = -1
        self._last_uploads: dict[str, tuple[Upload, Scored]] = {}
        self.queue = ScoringQueue(
            self._score_batch, capacity=capacity, workers=workers, max_batch=max_batch
        )
        self.metrics = Metrics(lambda: self.queue.depth)

    def warm_up(self) -> None:
        """Score one second of noise per model and drop the answer, so that the first
        request does not wait for torch's and the feature code's first call."""
        rng = np.random.default_rng(0)
        for machine in self.runtime.machines:
            detector = self.runtime.detector(machine)
            audio = (detector.fit_info_ or {}).get("audio") or {}
            rate = int(audio.get("sample_rate") or DEFAULT_SAMPLE_RATE)
            noise = rng.normal(0, 0.1, rate).astype(np.float32)
            try:
                detector.score_waveform(noise, rate)
            except SoundwatchError as exc:
                logger.warning("warning: %s: a test clip of noise did not score: %s", machine, exc)

    @property
    def store(self) -> EventStore | None:
        return self.runtime.store

    def close(self) -> None:
        """Finish the queued clips, close the store and remove the temporary folder."""
        self.queue.close()
        if self.alerts is not None:
            self.alerts.notifier.close()
        if self.store is not None:
            self.store.close()
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ scoring
    def _score_batch(self, machine: str, jobs: Sequence[Job]) -> list[Scored]:
        uploads: list[Upload] = [job.payload for job in jobs]
        folder, paths = self._write(uploads)
        try:
            results = self.runtime.score(paths, machine)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        answers = []
        for upload, path, result in zip(uploads, paths, results, strict=True):
            result.path = Path(upload.filename)
            if result.error:
                # The message names the temporary file; name the upload instead.
                result.error = result.error.replace(str(path), upload.filename)
            digest = hashlib.sha256(upload.data).hexdigest()
            answers.append(Scored(result, f"sha256:{digest}"))
        self._store(machine, uploads, answers)
        for upload, answer in zip(uploads, answers, strict=True):
            result = answer.result
            if result.error or result.score is None:
                continue
            self.metrics.clips.labels(machine).inc()
            self.metrics.anomalies.labels(machine).inc(result.decision)
            self.metrics.last_score.labels(machine).set(result.score)
            with self._lock:
                self._last_uploads[machine] = (upload, answer)
        return answers

    def _write(self, uploads: Sequence[Upload]) -> tuple[Path, list[Path]]:
        """Write a batch of uploads to a new folder; returns it and the files."""
        *preferred, last = self._folders
        for base in preferred:
            try:
                return _write_uploads(base, uploads)
            except OSError:  # /dev/shm is full: the disk takes the batch
                pass
        return _write_uploads(last, uploads)

    def _store(self, machine: str, uploads: Sequence[Upload], answers: list[Scored]) -> None:
        """Record the good results of ``store=true`` uploads; a store failure leaves the
        scores answered and opens an alert instead of failing the requests."""
        chosen = [
            (upload, answer)
            for upload, answer in zip(uploads, answers, strict=True)
            if upload.store and not answer.result.error
        ]
        if not chosen:
            return
        if self.store is None:
            for _, answer in chosen:
                answer.store_error = "the server has no event store (--db)"
            return
        if self.alerts is not None:
            with self._alerts_lock:  # history from the store before this batch is in it
                self.alerts.prepare([machine])
        try:
            for _, answer in chosen:
                answer.duplicate = self.store.has_clip(answer.clip_key, machine)
            # An upload has no lasting path (its temporary file is gone): its source
            # names it instead.
            refs = [
                ClipRef(
                    key=answer.clip_key,
                    source=f"http:{upload.filename}",
                    duration=upload.info.get("duration"),
                    sample_rate=upload.info.get("sample_rate"),
                    recorded_at=upload.received_at,
                )
                for upload, answer in chosen
            ]
            self.runtime.record([answer.result for _, answer in chosen], refs)
        except StoreError as exc:
            self.metrics.store_errors.inc()
            for _, answer in chosen:
                answer.store_error = str(exc)
            self._open_store_alert(machine, str(exc))
        else:
            for _, answer in chosen:
                answer.stored = True
            self._close_store_alert(machine)
        if self.alerts is not None:
            fresh = [answer.result for _, answer in chosen if not answer.duplicate]
            with self._alerts_lock:
                self.alerts.feed(fresh)

    # ------------------------------------------------------------------ alerts
    def _open_store_alert(self, machine: str, message: str) -> None:
        """An alert kept in memory (the store cannot take it) until a write succeeds;
        one error line when it opens, not one per clip."""
        with self._lock:
            if machine in self._store_alerts:
                return
            self._store_alerts[machine] = {
                "id": self._next_alert_id,
                "machine": machine,
                "rule": STORE_RULE,
                "reason": f"scores are not being stored: {message}",
                "opened_at": time.time(),
                "closed_at": None,
                "close_reason": None,
            }
            self._next_alert_id -= 1
        logger.error("error: %s; %s is scored but not stored (alert open)", message, machine)

    def _close_store_alert(self, machine: str) -> None:
        with self._lock:
            alert = self._store_alerts.pop(machine, None)
        if alert is not None:
            logger.warning("alert on %s closed: scores are stored again", machine)

    def last_upload(self, machine: str) -> tuple[Upload, Scored] | None:
        """The machine's last upload scored since the server started, and its answer."""
        with self._lock:
            return self._last_uploads.get(machine)

    def service_alerts(self, machine: str | None = None) -> list[dict]:
        """Open alerts kept in memory because the store could not be written."""
        with self._lock:
            alerts = list(self._store_alerts.values())
        return [a for a in alerts if machine is None or a["machine"] == machine]


def _write_uploads(base: Path, uploads: Sequence[Upload]) -> tuple[Path, list[Path]]:
    folder = Path(tempfile.mkdtemp(dir=base))
    try:
        paths = []
        for i, upload in enumerate(uploads):
            # One sub-folder per clip: two uploads may carry the same name.
            path = folder / str(i) / safe_filename(upload.filename)
            path.parent.mkdir()
            path.write_bytes(upload.data)
            paths.append(path)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, paths


def safe_filename(name: str) -> str:
    """The last part of an uploaded file name, with only letters, digits, ``.``, ``_``
    and ``-`` kept (never a path, never hidden)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c if c in _SAFE_NAME_CHARS else "_" for c in base).lstrip(".")
    return cleaned[:200] or "upload.wav"


def is_client_error(exc: BaseException) -> bool:
    """Whether a scoring failure is the clip's fault (422) rather than the server's."""
    return isinstance(exc, (AudioError, SoundwatchError)) and not isinstance(exc, StoreError)
