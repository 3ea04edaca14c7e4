"""The event store: machines, clips, scores and alerts in an embedded SQLite database.

Every writer goes through :class:`EventStore`. Inserts are keyed (a clip by its file
digest or stream offset, a score by clip and machine), so ingesting a clip again after a
crash or restart changes nothing: nothing is scored twice and :meth:`EventStore.has_clip`
tells a caller what is already done.

The database runs in WAL mode, so other processes (a dashboard, ``sqlite3``) can read
while one writes. Within a process one connection is shared under a lock: one writer and
any number of reader threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from soundwatch.errors import ConfigError, SoundwatchError
from soundwatch.store.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA_VERSION_TABLE,
    SQLITE,
)

# How long a write waits for another process's write to finish before giving up.
BUSY_TIMEOUT_S = 10.0


class StoreError(SoundwatchError):
    """The event store cannot be opened, read or written."""


class StoreReadOnlyError(StoreError):
    """The event store's file or folder is not writable."""


class StoreFullError(StoreError):
    """The disk holding the event store is full."""


@dataclass(frozen=True)
class ClipRef:
    """What identifies one scored clip, and what the store keeps about it.

    Attributes
    ----------
    key : str
        ``sha256:<hex>`` of a file's bytes, or ``stream:<source>@<offset>``.
    path : str or None
        The file (None for a stream window).
    source : str or None
        The stream's name (None for a file).
    offset : int or None
        First sample of the window in the stream.
    duration : float or None
        Seconds.
    sample_rate : int or None
        Hz.
    recorded_at : float or None
        Seconds since the epoch: the file's modification time, or when the window ended.
    """

    key: str
    path: str | None = None
    source: str | None = None
    offset: int | None = None
    duration: float | None = None
    sample_rate: int | None = None
    recorded_at: float | None = None

    @classmethod
    def for_file(cls, path: str | os.PathLike, digest: str | None = None) -> ClipRef:
        """The reference of an audio file, keyed by its content's SHA-256 (so a renamed
        or copied file is the same clip). Reads the header for duration and rate."""
        from soundwatch.data.audio import audio_info
        from soundwatch.features.cache import file_digest

        path = Path(path)
        digest = digest or file_digest(path)
        info = audio_info(path)
        return cls(
            key=f"sha256:{digest}",
            path=str(path),
            duration=info["duration"],
            sample_rate=info["sample_rate"],
            recorded_at=path.stat().st_mtime,
        )

    @classmethod
    def for_window(
        cls, source: str, offset: int, n_samples: int, sample_rate: int, recorded_at: float
    ) -> ClipRef:
        """The reference of a window of a stream, keyed by the stream and its offset."""
        return cls(
            key=stream_key(source, offset),
            source=source,
            offset=int(offset),
            duration=n_samples / sample_rate,
            sample_rate=int(sample_rate),
            recorded_at=recorded_at,
        )


def stream_key(source: str, offset: int) -> str:
    """Clip key of the window of stream ``source`` that starts at sample ``offset``."""
    return f"stream:{source}@{int(offset)}"


class EventStore:
    """Machines, clips, scores and alerts, kept in a database.

    Use :meth:`open`; close with :meth:`close` or a ``with`` block.

    Examples
    --------
    >>> store = EventStore.open("events.db")                   # doctest: +SKIP
    >>> store.record(results, [ClipRef.for_file(r.path) for r in results])  # doctest: +SKIP
    >>> store.scores("slider", limit=100)                       # doctest: +SKIP
    """

    def __init__(self, connection: sqlite3.Connection, location: str) -> None:
        self._db = connection
        self.location = location
        self.dialect = SQLITE
        self._lock = threading.RLock()
        self._closed = False

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, url_or_path: str | os.PathLike, *, read_only: bool = False) -> EventStore:
        """Open (creating and migrating as needed) the store at a path or URL.

        Parameters
        ----------
        url_or_path : str or path-like
            A file path, ``sqlite:///PATH`` or ``:memory:``. PostgreSQL URLs are refused
            for now (see :mod:`soundwatch.store.schema` for what adding one takes).
        read_only : bool
            Open for reading only (a dashboard beside a writer); never migrates.

        Raises
        ------
        StoreError
            The database cannot be opened, is not a soundwatch store, or was written by
            a newer soundwatch.
        """
        location = str(url_or_path)
        if location.startswith(("postgres://", "postgresql://")):
            raise ConfigError(
                f"{location.split('@')[-1]}: PostgreSQL is not supported yet; use a SQLite "
                "file path"
            )
        if location.startswith("sqlite:///"):
            location = location[len("sqlite:///") :]
        elif "://" in location:
            raise ConfigError(f"event store: unknown URL scheme in {location!r}")
        if location != ":memory:":
            folder = Path(location).expanduser().resolve().parent
            if not folder.is_dir():
                raise StoreError(f"event store {location}: folder {folder} does not exist")
            if read_only and not Path(location).exists():
                raise StoreError(f"event store {location}: no such file")
        try:
            if read_only and location != ":memory:":
                uri = Path(location).expanduser().resolve().as_uri() + "?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            else:
                db = sqlite3.connect(location, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            db.isolation_level = None  # explicit transactions only
            db.row_factory = sqlite3.Row
            store = cls(db, location)
        except sqlite3.Error as exc:
            raise _store_error(location, exc) from exc
        try:
            with store._errors():
                if not read_only and location != ":memory:":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                store._migrate(read_only)
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self, read_only: bool) -> None:
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise StoreError(
                f"event store {self.location}: schema version {current} was written by a "
                f"newer soundwatch (this one knows up to {LATEST_VERSION})"
            )
        if current == LATEST_VERSION:
            return
        if read_only:
            raise StoreError(
                f"event store {self.location}: schema version {current}, needs "
                f"{LATEST_VERSION}; open it once for writing to migrate"
            )
        with self._write() as db:
            db.execute(SCHEMA_VERSION_TABLE)
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    db.execute(self.dialect.sql(statement))
                db.execute(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time()),
                )

    def schema_version(self) -> int:
        """The highest migration applied (0 for a new database)."""
        with self._read() as db:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
            if not exists:
                tables = db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type='table'"
                ).fetchone()[0]
                if tables:
                    raise StoreError(
                        f"event store {self.location}: the database holds tables but is "
                        "not a soundwatch event store"
                    )
                return 0
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            return int(row[0] or 0)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- writing
    def register_machine(
        self,
        name: str,
        *,
        machine_type: str | None = None,
        machine_id: str | None = None,
        model_path: str | os.PathLike | None = None,
        model_digest: str | None = None,
    ) -> None:
        """Add a machine, or update its type, ID and model (the model changes on a
        reload; earlier scores keep the digest of the model that gave them)."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO machines (name, machine_type, machine_id, model_path, "
                "model_digest, registered_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET "
                "machine_type = coalesce(excluded.machine_type, machines.machine_type), "
                "machine_id = coalesce(excluded.machine_id, machines.machine_id), "
                "model_path = coalesce(excluded.model_path, machines.model_path), "
                "model_digest = coalesce(excluded.model_digest, machines.model_digest), "
                "updated_at = excluded.updated_at",
                (
                    name,
                    machine_type,
                    machine_id,
                    None if model_path is None else str(model_path),
                    model_digest,
                    now,
                    now,
                ),
            )

    def record(self, results: Sequence[Any], clips: Sequence[ClipRef | str]) -> int:
        """Store scoring results, once each.

        Parameters
        ----------
        results : sequence of Result
            From :meth:`ScoringRuntime.score` (a result with ``error`` is kept too, so a
            bad file is not retried forever).
        clips : sequence of ClipRef or str
            One per result: its reference, or only its key.

        Returns
        -------
        int
            How many scores were new; a (clip, machine) pair already stored is left
            as it was.
        """
        if len(results) != len(clips):
            raise ConfigError(f"record: {len(results)} results but {len(clips)} clip keys")
        now = time.time()
        added = 0
        with self._write() as db:
            for result, clip in zip(results, clips, strict=True):
                ref = clip if isinstance(clip, ClipRef) else ClipRef(key=str(clip))
                path = ref.path
                if path is None and ref.source is None and getattr(result, "path", None):
                    path = str(result.path)
                db.execute(
                    "INSERT INTO clips (key, path, source, stream_offset, duration, "
                    "sample_rate, recorded_at, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (
                        ref.key,
                        path,
                        ref.source,
                        ref.offset,
                        ref.duration,
                        ref.sample_rate,
                        ref.recorded_at,
                        now,
                    ),
                )
                db.execute(
                    "INSERT INTO machines (name, registered_at, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    (result.machine, now, now),
                )
                cursor = db.execute(
                    "INSERT INTO scores (clip_key, machine, machine_id, score, threshold, "
                    "threshold_source, decision, model_digest, warnings, error, scored_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (clip_key, machine) DO NOTHING",
                    (
                        ref.key,
                        result.machine,
                        result.machine_id,
                        result.score,
                        result.threshold,
                        result.threshold_source,
                        result.decision,
                        result.model_digest,
                        json.dumps(list(result.warnings)) if result.warnings else None,
                        result.error,
                        now,
                    ),
                )
                added += cursor.rowcount
        return added

    def open_alert(
        self, machine: str, reason: str, *, rule: str = "alert", at: float | None = None
    ) -> tuple[int, bool]:
        """Open an alert on ``machine``, unless one of ``rule`` is open already.

        Returns
        -------
        (int, bool)
            The alert's id, and True when it was opened now (False: it was open).
        """
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM alerts WHERE machine = ? AND rule = ? AND closed_at IS NULL "
                "ORDER BY id LIMIT 1",
                (machine, rule),
            ).fetchone()
            if row:
                return int(row[0]), False
            cursor = db.execute(
                "INSERT INTO alerts (machine, rule, reason, opened_at) VALUES (?, ?, ?, ?)",
                (machine, rule, reason, time.time() if at is None else at),
            )
            return int(cursor.lastrowid), True

    def close_alert(
        self,
        machine: str,
        *,
        rule: str | None = None,
        reason: str | None = None,
        at: float | None = None,
    ) -> list[int]:
        """Close the open alerts of ``machine`` (of one ``rule`` when given).

        Returns
        -------
        list of int
            Ids of the alerts closed (empty when none was open).
        """
        clause, args = "machine = ? AND closed_at IS NULL", [machine]
        if rule is not None:
            clause += " AND rule = ?"
            args.append(rule)
        with self._write() as db:
            ids = [int(r[0]) for r in db.execute(f"SELECT id FROM alerts WHERE {clause}", args)]
            if ids:
                db.execute(
                    f"UPDATE alerts SET closed_at = ?, close_reason = ? WHERE {clause}",
                    [time.time() if at is None else at, reason, *args],
                )
        return ids

    def prune(self, older_than: float | timedelta) -> dict[str, int]:
        """Delete what is older than the retention period.

        Scores scored, and alerts closed, more than ``older_than`` ago (seconds or a
        timedelta), and clips left without scores. A file whose score was pruned is a
        new clip again if it is seen again.

        Returns
        -------
        dict
            Rows deleted per table: ``scores``, ``alerts``, ``clips``.
        """
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if not seconds >= 0:
            raise ConfigError(f"retention must be zero or more seconds, got {older_than!r}")
        cutoff = time.time() - float(seconds)
        with self._write() as db:
            scores = db.execute("DELETE FROM scores WHERE scored_at < ?", (cutoff,)).rowcount
            alerts = db.execute(
                "DELETE FROM alerts WHERE closed_at IS NOT NULL AND closed_at < ?", (cutoff,)
            ).rowcount
            clips = db.execute(
                "DELETE FROM clips WHERE ingested_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM scores WHERE scores.clip_key = clips.key)",
                (cutoff,),
            ).rowcount
        return {"scores": scores, "alerts": alerts, "clips": clips}

    # ----------------------------------------------------------------- reading
    def has_clip(self, key: str, machine: str) -> bool:
        """Whether ``machine`` has a stored result for the clip ``key``."""
        with self._read() as db:
            row = db.execute(
                "SELECT 1 FROM scores WHERE clip_key = ? AND machine = ?", (key, machine)
            ).fetchone()
        return row is not None

    def stream_end(self, source: str) -> int | None:
        """First sample after the last stored window of stream ``source`` (None when
        none is stored)."""
        with self._read() as db:
            row = db.execute(
                "SELECT max(stream_offset + CAST(round(duration * sample_rate) AS INTEGER)) "
                "FROM clips WHERE source = ?",
                (source,),
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def machines(self) -> list[dict]:
        """Every machine: ``name``, ``machine_type``, ``machine_id``, ``model_path``,
        ``model_digest``, ``registered_at``, ``updated_at``, ``n_scores``,
        ``last_scored_at`` and ``open_alerts``."""
        with self._read() as db:
            rows = db.execute(
                "SELECT m.*, "
                "(SELECT count(*) FROM scores s WHERE s.machine = m.name) AS n_scores, "
                "(SELECT max(scored_at) FROM scores s WHERE s.machine = m.name) "
                "AS last_scored_at, "
                "(SELECT count(*) FROM alerts a WHERE a.machine = m.name "
                "AND a.closed_at IS NULL) AS open_alerts "
                "FROM machines m ORDER BY m.name"
            ).fetchall()
        return [dict(r) for r in rows]

    def scores(
        self,
        machine: str | None = None,
        since: float | datetime | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Stored scores, oldest first.

        Parameters
        ----------
        machine : str, optional
            Only this machine's.
        since : float or datetime, optional
            Only those scored after this time (seconds since the epoch, or a datetime;
            a naive datetime is taken as UTC).
        limit : int, optional
            Only the most recent ``limit``.

        Returns
        -------
        list of dict
            ``clip_key``, ``machine``, ``machine_id``, ``score``, ``threshold``,
            ``threshold_source``, ``decision``, ``model_digest``, ``warnings`` (list),
            ``error``, ``scored_at``, and the clip's ``path``, ``source``,
            ``stream_offset``, ``duration``, ``sample_rate`` and ``recorded_at``.
        """
        clauses, args = [], []
        if machine is not None:
            clauses.append("s.machine = ?")
            args.append(machine)
        if since is not None:
            clauses.append("s.scored_at > ?")
            args.append(_epoch(since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = ""
        if limit is not None:
            if int(limit) < 0:
                raise ConfigError(f"limit must be zero or more, got {limit}")
            tail = f" LIMIT {int(limit)}"
        query = (
            "SELECT s.*, c.path, c.source, c.stream_offset, c.duration, c.sample_rate, "
            "c.recorded_at FROM scores s LEFT JOIN clips c ON c.key = s.clip_key "
            f"{where} ORDER BY s.scored_at DESC, s.rowid DESC{tail}"
        )
        with self._read() as db:
            rows = db.execute(query, args).fetchall()
        out = []
        for row in reversed(rows):
            item = dict(row)
            item["warnings"] = json.loads(item["warnings"]) if item["warnings"] else []
            out.append(item)
        return out

    def alerts(
        self, machine: str | None = None, open_only: bool = False, limit: int | None = None
    ) -> list[dict]:
        """Alerts, newest first: ``id``, ``machine``, ``rule``, ``reason``,
        ``opened_at``, ``closed_at`` (None while open) and ``close_reason``."""
        clauses, args = [], []
        if machine is not None:
            clauses.append("machine = ?")
            args.append(machine)
        if open_only:
            clauses.append("closed_at IS NULL")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = "" if limit is None else f" LIMIT {max(0, int(limit))}"
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM alerts {where} ORDER BY opened_at DESC, id DESC{tail}", args
            ).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table: ``machines``, ``clips``, ``scores``, ``alerts``."""
        with self._read() as db:
            return {
                table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("machines", "clips", "scores", "alerts")
            }

    # ----------------------------------------------------------------- plumbing
    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._check_open()
            yield self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction; rolled back when anything in it fails."""
        with self._lock, self._errors():
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # SQLite rolls back by itself on some errors (a full disk).
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _store_error(self.location, exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"event store {self.location}: closed")


def _epoch(when: float | datetime) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return float(when)


def _store_error(location: str, exc: sqlite3.Error) -> StoreError:
    """A one-line error for a database failure, of the class that says what to do."""
    text = str(exc)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return StoreReadOnlyError(
            f"event store {location}: read-only ({text}); make the file and its folder "
            "writable or give another --db"
        )
    if "disk is full" in lowered or "database or disk is full" in lowered:
        return StoreFullError(f"event store {location}: the disk is full ({text})")
    if "unable to open" in lowered:
        return StoreError(f"event store {location}: cannot open the database ({text})")
    if "not a database" in lowered or "malformed" in lowered:
        return StoreError(f"event store {location}: not a soundwatch event store ({text})")
    if "locked" in lowered or "busy" in lowered:
        return StoreError(
            f"event store {location}: locked by another process for over "
            f"{BUSY_TIMEOUT_S:.0f} s ({text})"
        )
    return StoreError(f"event store {location}: {text}")
