"""`soundwatch serve`: scoring over HTTP on loopback, its errors, backpressure, metrics,
and what happens when the event store cannot be written."""

from __future__ import annotations

import csv
import io
import logging
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import make_service, running_server, train_small_model, wav_bytes

from soundwatch.cli.main import main
from soundwatch.runtime import ScoringRuntime
from soundwatch.services.server_queue import QueueClosedError, QueueFullError, ScoringQueue


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return train_small_model(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture
def model(trained) -> Path:
    return trained[0]


@pytest.fixture
def test_clips(trained) -> list[Path]:
    return sorted(trained[1].glob("*.wav"))


def _post(base: str, path: Path, **fields) -> httpx.Response:
    with open(path, "rb") as handle:
        return httpx.post(
            f"{base}/v1/score",
            files={"file": (path.name, handle, "audio/wav")},
            data={"machine": "slider", **fields},
            timeout=30,
        )


def test_http_score_is_the_cli_score(model, test_clips, tmp_path, capsys):
    clip = next(c for c in test_clips if c.name.startswith("anomaly"))
    with running_server(make_service(model, None)) as base:
        answer = _post(base, clip).json()
    assert answer["file"] == clip.name and answer["machine_id"] == "00"
    assert answer["stored"] is False and answer["store_error"] is None
    # The same runtime call `soundwatch score` makes, to the last bit ...
    expected = ScoringRuntime().load({"model": model}).score([clip])[0]
    assert answer["score"] == expected.score
    assert answer["threshold"] == expected.threshold
    assert answer["threshold_source"] == expected.threshold_source
    assert answer["decision"] == expected.decision
    # ... and the CSV `soundwatch score` prints.
    assert main(["score", str(model), str(clip)]) == 0
    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["score"] == f"{answer['score']:.6g}"
    assert row["threshold"] == f"{answer['threshold']:.6g}"
    assert int(row["decision"]) == answer["decision"]
    assert row["threshold_source"] == answer["threshold_source"]


def test_stored_scores_are_listed_once_and_raw_uploads_work(model, test_clips, tmp_path):
    clip = test_clips[0]
    with running_server(make_service(model, tmp_path / "events.db")) as base:
        first = _post(base, clip, store="true").json()
        assert first["stored"] is True and first["duplicate"] is False
        # The same bytes again, as a raw body this time: scored, but stored once.
        again = httpx.post(
            f"{base}/v1/score",
            params={"machine": "slider", "store": "true", "filename": clip.name},
            content=clip.read_bytes(),
            headers={"Content-Type": "audio/wav"},
            timeout=30,
        ).json()
        assert again["score"] == first["score"] and again["machine_id"] == "00"
        assert again["stored"] is True and again["duplicate"] is True
        scores = httpx.get(f"{base}/v1/machines/slider/scores").json()["scores"]
        assert [s["clip_key"] for s in scores] == [first["clip_key"]]
        assert scores[0]["score"] == first["score"]
        later = httpx.get(
            f"{base}/v1/machines/slider/scores", params={"since": scores[0]["scored_at"]}
        ).json()
        assert later["scores"] == []
        machines = httpx.get(f"{base}/v1/machines").json()["machines"]
        assert machines[0]["name"] == "slider" and machines[0]["n_scores"] == 1
        assert machines[0]["detector"] == "logmel-mahalanobis"
        png = httpx.get(f"{base}/v1/machines/slider/last.png", timeout=60)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert png.headers["X-Clip-Key"] == first["clip_key"]
        assert png.headers["X-Anomaly-Map"] == "no"  # mahalanobis cannot localise


def test_bad_requests_get_json_errors_and_never_stop_the_server(model, test_clips, tmp_path):
    clip = test_clips[0]
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    nan_clip = noise.copy()
    nan_clip[100] = np.nan
    corrupt = clip.read_bytes()[:44] + b"\xff" * 10  # a header, then almost nothing
    service = make_service(model, tmp_path / "events.db")
    with running_server(service, token="s3cret", max_upload_bytes=400_000) as base:
        auth = {"Authorization": "Bearer s3cret"}

        def post(content: bytes, **params) -> httpx.Response:
            return httpx.post(
                f"{base}/v1/score",
                params={"machine": "slider", **params},
                content=content,
                headers={**auth, "Content-Type": "audio/wav"},
                timeout=30,
            )

        cases = {
            401: httpx.post(f"{base}/v1/score", content=clip.read_bytes()),
            413: post(b"\0" * 400_001),
            415: post(b"machine,score\nslider,1\n"),
            404: post(clip.read_bytes(), machine="press"),
        }
        cases[422] = post(wav_bytes(nan_clip, subtype="FLOAT"))
        wrong = httpx.post(
            f"{base}/v1/score", content=b"x", headers={"Authorization": "Bearer nope"}
        )
        for status, response in cases.items():
            assert response.status_code == status, (status, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]
        assert wrong.status_code == 401
        assert cases[401].headers["WWW-Authenticate"] == "Bearer"
        assert "NaN" in cases[422].json()["error"]
        assert post(corrupt).status_code in (415, 422)
        assert post(b"").status_code == 422
        assert post(clip.read_bytes(), store="maybe").status_code == 422
        no_file = httpx.post(
            f"{base}/v1/score", data={"machine": "slider"}, files={"x": ("a", b"1")}, headers=auth
        )
        assert no_file.status_code == 422 and "file" in no_file.json()["error"]
        bad_since = httpx.get(
            f"{base}/v1/machines/slider/scores", params={"since": "yesterday"}, headers=auth
        )
        assert bad_since.status_code == 422
        assert httpx.get(f"{base}/v1/machines/press/scores", headers=auth).status_code == 404
        assert httpx.get(f"{base}/v1/machines").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        # Liveness needs no token; after all that the server still scores.
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        good = post(clip.read_bytes(), store="true", filename=clip.name)
        assert good.status_code == 200 and good.json()["stored"] is True
        metrics = httpx.get(f"{base}/metrics", headers=auth).text
    assert 'soundwatch_clips_scored_total{machine="slider"} 1.0' in metrics
    assert 'soundwatch_last_score{machine="slider"}' in metrics
    assert 'soundwatch_anomalies_total{machine="slider"}' in metrics
    assert "soundwatch_score_request_seconds_bucket" in metrics
    assert 'soundwatch_requests_rejected_total{status="415"} 1.0' in metrics


def test_a_full_queue_answers_503_with_retry_after(model, test_clips):
    service = make_service(model, None, capacity=1, workers=1)
    entered, release = threading.Event(), threading.Event()
    score = service.runtime.score

    def slow_score(*args, **kwargs):
        entered.set()
        release.wait(30)
        return score(*args, **kwargs)

    service.runtime.score = slow_score
    data = test_clips[0].read_bytes()
    answers: dict[str, httpx.Response] = {}

    def send(name: str, base: str) -> None:
        answers[name] = httpx.post(
            f"{base}/v1/score", params={"machine": "slider"}, content=data, timeout=60
        )

    with running_server(service) as base:
        first = threading.Thread(target=send, args=("first", base))
        first.start()
        assert entered.wait(30)  # the worker holds the first clip
        second = threading.Thread(target=send, args=("second", base))
        second.start()
        deadline = time.monotonic() + 30
        while service.queue.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        send("third", base)  # the queue holds the second: no room
        release.set()
        first.join(60)
        second.join(60)
    assert answers["third"].status_code == 503
    assert answers["third"].headers["Retry-After"] == "1"
    assert "busy" in answers["third"].json()["error"]
    assert answers["first"].status_code == 200 and answers["second"].status_code == 200


def test_concurrent_requests_are_each_answered_and_stored_once(model, test_clips, tmp_path):
    rng = np.random.default_rng(1)
    base_clip, sr = _read(test_clips[0])
    # Distinct clips: the normal clip with a little noise of its own each.
    clips = [wav_bytes(base_clip + rng.normal(0, 1e-3, base_clip.shape), sr) for _ in range(24)]
    service = make_service(model, tmp_path / "events.db", max_batch=8)
    answers: list[dict] = [{}] * len(clips)

    def send(i: int, base: str) -> None:
        answers[i] = httpx.post(
            f"{base}/v1/score",
            params={"machine": "slider", "store": "true", "filename": f"normal_id_00_{i}.wav"},
            content=clips[i],
            timeout=60,
        ).json()

    with running_server(service) as base:
        threads = [threading.Thread(target=send, args=(i, base)) for i in range(len(clips))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        stored = httpx.get(f"{base}/v1/machines/slider/scores").json()["scores"]
    keys = [a["clip_key"] for a in answers]
    assert len(set(keys)) == len(clips) and all(a["stored"] for a in answers)
    assert sorted(s["clip_key"] for s in stored) == sorted(keys)
    by_key = {s["clip_key"]: s["score"] for s in stored}
    assert all(by_key[a["clip_key"]] == a["score"] for a in answers)


def test_queue_batches_per_machine_and_fails_only_the_bad_clip():
    gate = threading.Event()
    batches: list[list[str]] = []

    def score_batch(machine, jobs):
        gate.wait(30)
        batches.append([job.payload for job in jobs])
        if any(job.payload == "bad" for job in jobs):
            raise ValueError("bad clip")
        return [f"{machine}:{job.payload}" for job in jobs]

    queue = ScoringQueue(score_batch, capacity=10, workers=1, max_batch=3)
    first = queue.submit("a", "a0")  # taken by the worker, which waits at the gate
    while queue.depth:
        time.sleep(0.01)
    futures = [
        queue.submit(m, p)
        for m, p in [("a", "a1"), ("b", "b1"), ("a", "bad"), ("a", "a3"), ("a", "a4")]
    ]
    with pytest.raises(QueueFullError):
        for i in range(10):
            queue.submit("c", f"c{i}")
    gate.set()
    assert first.result(30) == "a:a0"
    assert [f.exception(30) is None for f in futures] == [True, True, False, True, True]
    assert futures[0].result() == "a:a1" and futures[4].result() == "a:a4"
    queue.close()
    # a1, bad and a3 went together (max_batch 3); the failure was retried clip by clip.
    assert batches[:4] == [["a0"], ["a1", "bad", "a3"], ["a1"], ["bad"]]
    with pytest.raises(QueueClosedError):
        queue.submit("a", "late")


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_store_fault_keeps_scoring_and_raises_an_alert(model, test_clips, tmp_path, fault, caplog):
    caplog.set_level(logging.ERROR, logger="soundwatch.serve")
    service = make_service(model, tmp_path / "events.db")
    store = service.store
    clip = test_clips[0]
    with running_server(service) as base:
        connection = store._db
        with store._lock:
            if fault == "disk full":
                store._db = _FullDisk(connection)
            else:
                connection.execute("PRAGMA query_only = ON")
        answer = _post(base, clip, store="true").json()
        assert answer["score"] is not None and answer["stored"] is False
        expected = "disk is full" if fault == "disk full" else "read-only"
        assert expected in answer["store_error"]
        assert _post(base, test_clips[1], store="true").json()["stored"] is False
        lines = [r.getMessage() for r in caplog.records if r.name == "soundwatch.serve"]
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
        alerts = httpx.get(f"{base}/v1/alerts", params={"open_only": "true"}).json()["alerts"]
        assert [a["rule"] for a in alerts] == ["store"]
        assert "not being stored" in alerts[0]["reason"] and alerts[0]["closed_at"] is None
        assert httpx.get(f"{base}/healthz").json()["store_alerts"] == 1
        assert "soundwatch_store_errors_total 2.0" in httpx.get(f"{base}/metrics").text
        # The disk is freed (the file made writable): the next clip is stored, the
        # alert closes.
        with store._lock:
            store._db = connection
            connection.execute("PRAGMA query_only = OFF")
        assert _post(base, clip, store="true").json()["stored"] is True
        assert httpx.get(f"{base}/v1/alerts", params={"open_only": "true"}).json() == {"alerts": []}


def test_anomalies_open_an_alert_in_the_store(model, test_clips, tmp_path):
    results = ScoringRuntime().load({"slider": model}).score(test_clips)
    flagged = [r.path for r in results if r.decision == 1]
    assert len(flagged) >= 2  # the seeded synthetic anomalies are loud
    service = make_service(model, tmp_path / "events.db")  # rule: 2 of the last 3
    with running_server(service) as base:
        opened = []
        for clip in flagged[:2]:
            assert _post(base, clip, store="true").json()["decision"] == 1
            opened.append(httpx.get(f"{base}/v1/alerts").json()["alerts"])
    assert opened[0] == []  # one anomalous clip is not two (nothing counted twice)
    assert [a["rule"] for a in opened[1]] == ["k-of-n"] and opened[1][0]["closed_at"] is None
    assert opened[1][0]["reason"].startswith("2 of the last 2 clips anomalous")


@pytest.mark.slow
def test_serve_command_serves_until_sigterm(model, test_clips, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "soundwatch", "--threads", "1", "serve"]
    command += ["--model", f"slider={model}", "--db", str(tmp_path / "events.db")]
    command += ["--port", str(port), "--token", "t0ken"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.3)
        with open(test_clips[0], "rb") as handle:
            answer = httpx.post(
                f"{base}/v1/score",
                files={"file": (test_clips[0].name, handle)},
                data={"machine": "slider", "store": "true"},
                headers={"Authorization": "Bearer t0ken"},
                timeout=60,
            )
        assert answer.status_code == 200 and answer.json()["stored"] is True
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out
    assert f"serving slider on http://localhost:{port}" in out and "Traceback" not in out
    assert out.rstrip().endswith("stopped")


def test_serve_command_refuses_bad_options(capsys, tmp_path, model):
    assert main(["serve", "--model", f"slider={tmp_path / 'absent.safetensors'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "absent.safetensors" in err and "\n" not in err
    assert main(["serve", "--model", f"slider={model}", "--port", "70000"]) == 1
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--model", f"slider={model}", "--webhook", "http://x"]) == 1
    assert "--db" in capsys.readouterr().err
    assert main(["serve", "--model", f"slider={model}", "--queue-size", "0"]) == 1
    assert "--queue-size" in capsys.readouterr().err


class _FullDisk:
    """A database connection on a full disk: every write fails as SQLite reports it.

    (Filling a real disk is not bounded; ``PRAGMA max_page_count`` still lets a small
    insert into a half-empty page through.)"""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, *args):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._connection, name)


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32")
    return y, sr
