"""The event store: migrations, idempotent ingestion, queries, alerts, retention, and
clear errors for a read-only or foreign database."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from soundwatch.errors import ConfigError
from soundwatch.runtime.scoring import Result
from soundwatch.store import (
    ClipRef,
    EventStore,
    StoreError,
    StoreReadOnlyError,
    stream_key,
)
from soundwatch.store.schema import LATEST_VERSION


def _result(machine: str = "slider", score: float = 1.0, threshold: float = 2.0) -> Result:
    return Result(
        path=Path("clip.wav"),
        machine=machine,
        machine_id="00",
        score=score,
        threshold=threshold,
        threshold_source="machine ID 00",
        decision=int(score > threshold),
        model_digest="abcd",
    )


def test_new_store_is_migrated_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventStore.open(path) as store:
        assert store.schema_version() == LATEST_VERSION
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in db.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    db.close()
    # Opening again applies nothing twice.
    with EventStore.open(path) as store:
        assert store.schema_version() == LATEST_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    EventStore.open(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (LATEST_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer soundwatch"):
        EventStore.open(path)


def test_foreign_database_and_postgres_url_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a soundwatch event store"):
        EventStore.open(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a soundwatch event store"):
        EventStore.open(junk)
    with pytest.raises(ConfigError, match="PostgreSQL is not supported yet"):
        EventStore.open("postgresql://user:secret@db/soundwatch")
    with pytest.raises(StoreError, match="does not exist"):
        EventStore.open(tmp_path / "missing" / "events.db")


def test_record_is_idempotent_per_clip_and_machine(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        refs = [ClipRef(key="sha256:aa", path="a.wav"), ClipRef(key="sha256:bb", path="b.wav")]
        results = [_result(score=1.0), _result(score=3.0)]
        assert store.record(results, refs) == 2
        assert store.record(results, refs) == 0
        # The same clip scored by another machine is a new score.
        assert store.record([_result(machine="fan")], ["sha256:aa"]) == 1
        assert store.has_clip("sha256:aa", "slider")
        assert store.has_clip("sha256:aa", "fan")
        assert not store.has_clip("sha256:bb", "fan")
        rows = store.scores("slider")
        assert [r["score"] for r in rows] == [1.0, 3.0]
        assert [r["decision"] for r in rows] == [0, 1]
        assert rows[0]["path"] == "a.wav"
        assert rows[0]["threshold_source"] == "machine ID 00"
        assert store.counts() == {"machines": 2, "clips": 2, "scores": 3, "alerts": 0}


def test_record_keeps_errors_and_warnings(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        bad = Result(path=Path("bad.wav"), machine="slider", error="cannot read bad.wav")
        warned = _result()
        warned.warnings = ["clip.wav: duration 3.00 s (trained on 2.00 s)"]
        store.record([bad, warned], ["sha256:01", "sha256:02"])
        rows = store.scores("slider")
        assert rows[0]["error"] == "cannot read bad.wav" and rows[0]["score"] is None
        assert rows[0]["path"] == "bad.wav"
        assert rows[1]["warnings"] == warned.warnings
        with pytest.raises(ConfigError, match="2 results but 1 clip keys"):
            store.record([bad, warned], ["sha256:01"])


def test_scores_since_and_limit(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        for i in range(5):
            store.record([_result(score=float(i))], [f"sha256:{i}"])
        middle = store.scores("slider")[2]["scored_at"]
        assert [r["score"] for r in store.scores("slider", limit=2)] == [3.0, 4.0]
        later = store.scores("slider", since=middle)
        assert all(r["scored_at"] > middle for r in later)
        assert store.scores("pump") == []


def test_stream_windows_and_their_end(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        assert store.stream_end("mic") is None
        refs = [ClipRef.for_window("mic", off, 16000, 16000, time.time()) for off in (0, 8000)]
        store.record([_result(), _result()], refs)
        assert store.stream_end("mic") == 24000
        assert store.has_clip(stream_key("mic", 8000), "slider")
        row = store.scores("slider")[1]
        assert row["source"] == "mic" and row["stream_offset"] == 8000
        assert row["duration"] == 1.0 and row["path"] is None


def test_clip_ref_for_file_uses_the_content_digest(tmp_path: Path) -> None:
    from soundwatch.data.audio import write_audio

    first, copy = tmp_path / "a.wav", tmp_path / "copy.wav"
    write_audio(first, np.zeros(800, dtype=np.float32) + 0.1, 8000)
    copy.write_bytes(first.read_bytes())
    ref = ClipRef.for_file(first)
    assert ref.key == ClipRef.for_file(copy).key and ref.key.startswith("sha256:")
    assert ref.sample_rate == 8000 and ref.duration == pytest.approx(0.1)


def test_machines_and_alerts(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        store.register_machine("slider", machine_type="slider", model_digest="d1")
        store.register_machine("slider", model_path="slider.safetensors", model_digest="d2")
        [machine] = store.machines()
        assert machine["machine_type"] == "slider" and machine["model_digest"] == "d2"
        assert machine["model_path"] == "slider.safetensors"
        first, opened = store.open_alert("slider", "3 of the last 5 clips anomalous", rule="k-of-n")
        assert opened
        again, opened = store.open_alert("slider", "still", rule="k-of-n")
        assert again == first and not opened
        assert store.machines()[0]["open_alerts"] == 1
        assert store.close_alert("slider", reason="3 normal clips") == [first]
        assert store.close_alert("slider") == []
        [alert] = store.alerts("slider")
        assert alert["closed_at"] is not None and alert["close_reason"] == "3 normal clips"
        assert store.alerts(open_only=True) == []


def test_prune_deletes_only_what_is_older(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        store.record([_result()], ["sha256:old"])
        store.open_alert("slider", "old", rule="r", at=time.time() - 100)
        store.close_alert("slider", at=time.time() - 90)
        store.open_alert("slider", "still open", rule="r", at=time.time() - 100)
        # Age the first score by hand (the store stamps rows with the current time).
        store._db.execute("UPDATE scores SET scored_at = scored_at - 100")
        store._db.execute("UPDATE clips SET ingested_at = ingested_at - 100")
        store.record([_result()], ["sha256:new"])
        assert store.prune(50) == {"scores": 1, "alerts": 1, "clips": 1}
        assert [r["clip_key"] for r in store.scores()] == ["sha256:new"]
        assert [a["reason"] for a in store.alerts()] == ["still open"]
        with pytest.raises(ConfigError, match="retention"):
            store.prune(-1)


def test_store_opened_read_only_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventStore.open(path) as store:
        store.record([_result()], ["sha256:1"])
    with EventStore.open(path, read_only=True) as store:
        assert store.has_clip("sha256:1", "slider")
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            store.record([_result()], ["sha256:2"])
    with pytest.raises(StoreError, match="no such file"):
        EventStore.open(tmp_path / "absent.db", read_only=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_database_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "events.db"
    with EventStore.open(path) as store:
        store.record([_result()], ["sha256:1"])
    # Fold the WAL back so the file alone holds everything.
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        with EventStore.open(path) as store:
            assert len(store.scores()) == 1  # reading still works
            with pytest.raises(StoreReadOnlyError, match="read-only"):
                store.record([_result()], ["sha256:2"])
            with pytest.raises(StoreReadOnlyError):
                store.open_alert("slider", "x")
        with EventStore.open(path, read_only=True) as store:
            assert store.has_clip("sha256:1", "slider")
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


def test_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        page_count = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {page_count}")
        with pytest.raises(StoreError, match="disk is full"):
            store.record(
                [_result() for _ in range(200)], [f"sha256:{'x' * 500}{i}" for i in range(200)]
            )
        # The failed batch left nothing behind.
        assert store.counts()["scores"] == 0


def test_one_writer_and_reader_threads(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "events.db")
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(50):
                store.scores("slider", limit=10)
                store.machines()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for i in range(100):
        store.record([_result()], [f"sha256:{i}"])
    for thread in readers:
        thread.join(timeout=30)
    store.close()
    assert not failures
    with EventStore.open(tmp_path / "events.db") as again:
        assert again.counts()["scores"] == 100


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "events.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.scores()
