"""``soundwatch monitor`` end to end on real folders, streams, stores and loopback
receivers: folder watch, stdin stream, alert rules and actions, webhooks up and down,
a killed and restarted monitor, hot reload, and a store that stops taking writes.

The model is logmel-mahalanobis trained once on small synthetic slider clips; the
anomalous clips are loud white noise, far from anything it was trained on.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundwatch.cli.main import main
from soundwatch.data.audio import write_audio
from soundwatch.errors import ConfigError
from soundwatch.runtime.scoring import Result, ScoringRuntime
from soundwatch.services.alerts import (
    AlertEngine,
    KOfN,
    MovingMedian,
    Notifier,
    parse_rule,
)
from soundwatch.services.monitor import Monitor
from soundwatch.services.monitor_config import load_config
from soundwatch.store import EventStore, StoreError

pytest.importorskip("watchdog")
# watchdog says so when a new subfolder is watched twice (harmless).
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
# Every wait in these tests ends by itself.
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model trained on 12 synthetic normal slider clips of 1 s, and 8 unseen normal
    clips of the same machine."""
    import soundwatch
    from soundwatch.data.datasets import collect_audio
    from soundwatch.synth.dataset import generate_dataset

    root = tmp_path_factory.mktemp("monitor-data")
    generate_dataset(
        root / "data",
        "slider",
        n_ids=1,
        n_train_per_id=12,
        n_test_normal_per_id=8,
        n_test_anomaly_per_id=1,
        duration=1.0,
        progress=False,
        seed=1,
    )
    detector = soundwatch.create("logmel-mahalanobis")
    detector.fit(collect_audio([root / "data" / "slider" / "train"]))
    model = detector.save(root / "slider.safetensors")
    normals = sorted((root / "data" / "slider" / "test").glob("normal_*.wav"))
    return {"root": root, "model": model, "normals": normals}


def _noise(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    write_audio(path, (0.5 * rng.standard_normal(SR)).astype(np.float32), SR)
    return path


def _config(trained: dict, tmp_path: Path, **cli) -> object:
    values = {"models": [f"slider={trained['model']}"], "db": str(tmp_path / "events.db")}
    values.update(cli)
    return load_config(None, values)


def _wait(condition, what: str, timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _scores(db: Path) -> list[dict]:
    with EventStore.open(db, read_only=True) as store:
        return store.scores()


def _count(db: Path) -> int:
    """Scores stored so far (0 while the store is not there or not yet migrated)."""
    try:
        return len(_scores(db))
    except StoreError:
        return 0


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- folders
def test_once_scores_a_folder_and_a_rerun_scores_nothing_twice(trained, tmp_path) -> None:
    incoming = tmp_path / "incoming" / "line1"
    incoming.mkdir(parents=True)
    for path in trained["normals"][:3]:
        shutil.copy(path, incoming / path.name)
    _noise(incoming / "noise.wav", 0)
    (incoming / "notes.txt").write_text("not audio")
    config = _config(trained, tmp_path, watch=[str(tmp_path / "incoming")])
    summary = Monitor(config, once=True).run()
    assert (summary.scored, summary.already_stored) == (4, 0)
    rows = _scores(tmp_path / "events.db")
    assert len(rows) == 4
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["noise.wav"]["decision"] == 1
    assert summary.anomalous == sum(r["decision"] for r in rows)
    # A copy under another name is the same clip; a rerun adds nothing.
    shutil.copy(incoming / "noise.wav", incoming / "noise-copy.wav")
    again = Monitor(_config(trained, tmp_path, watch=[str(tmp_path / "incoming")]), once=True)
    summary = again.run()
    assert (summary.scored, summary.already_stored) == (0, 5)
    assert len(_scores(tmp_path / "events.db")) == 4
    # Two copies of a new clip arriving together are scored once.
    _noise(incoming / "twin1.wav", 5)
    shutil.copy(incoming / "twin1.wav", incoming / "twin2.wav")
    config = _config(trained, tmp_path, watch=[str(tmp_path / "incoming")])
    summary = Monitor(config, once=True).run()
    assert (summary.scored, summary.already_stored) == (1, 6)
    assert len(_scores(tmp_path / "events.db")) == 5


def test_scores_match_the_runtime(trained, tmp_path) -> None:
    """The monitor gives the same score, threshold and decision as the runtime."""
    incoming = tmp_path / "in"
    incoming.mkdir()
    clip = shutil.copy(trained["normals"][0], incoming / "a.wav")
    Monitor(_config(trained, tmp_path, watch=[str(incoming)]), once=True).run()
    [row] = _scores(tmp_path / "events.db")
    [direct] = ScoringRuntime().load({"slider": trained["model"]}).score([clip], "slider")
    assert row["score"] == pytest.approx(direct.score, rel=1e-6)
    assert (row["threshold"], row["decision"]) == (direct.threshold, direct.decision)
    assert row["threshold_source"] == direct.threshold_source


def test_runtime_record_writes_through_the_store(trained, tmp_path) -> None:
    with EventStore.open(tmp_path / "events.db") as store:
        runtime = ScoringRuntime(store=store).load({"slider": trained["model"]})
        results = runtime.score(trained["normals"][:2], "slider")
        assert runtime.record(results) == 2
        assert runtime.record(results) == 0
        [machine] = store.machines()
        assert machine["model_digest"] == runtime.model_digest("slider")
        assert machine["n_scores"] == 2
    assert ScoringRuntime().record(results) == 0  # no store: nothing kept


@pytest.mark.slow
def test_watch_waits_for_complete_files_and_takes_renames(trained, tmp_path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    config = _config(trained, tmp_path, watch=[str(incoming)], stable_seconds=0.8)
    monitor = Monitor(config)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    try:
        _wait(lambda: monitor.watcher is not None, "the watcher to start")
        # Written in place in two parts: only the complete file counts.
        data = trained["normals"][0].read_bytes()
        slow = incoming / "sub" / "slow.wav"
        slow.parent.mkdir()
        with open(slow, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(0.4)
            handle.write(data[len(data) // 2 :])
        # Written under a name that is not audio, then renamed into place.
        staging = incoming / "renamed.wav.part"
        _noise(tmp_path / "noise.wav", 1)
        shutil.copy(tmp_path / "noise.wav", staging)
        os.rename(staging, incoming / "renamed.wav")
        _wait(lambda: _count(tmp_path / "events.db") >= 2, "two scores")
        time.sleep(1.5)  # nothing more comes of either file
    finally:
        monitor.stop()
        thread.join(DEADLINE_S)
    assert not thread.is_alive()
    rows = {Path(r["path"]).name: r for r in _scores(tmp_path / "events.db")}
    assert set(rows) == {"slow.wav", "renamed.wav"}
    assert rows["slow.wav"]["error"] is None and rows["slow.wav"]["duration"] == 1.0
    assert rows["renamed.wav"]["decision"] == 1


def test_toml_routes_files_to_machines_by_glob(trained, tmp_path) -> None:
    incoming = tmp_path / "incoming"
    (incoming / "a").mkdir(parents=True)
    (incoming / "b").mkdir()
    shutil.copy(trained["normals"][0], incoming / "a" / "x.wav")
    shutil.copy(trained["normals"][1], incoming / "b" / "y.wav")
    shutil.copy(trained["normals"][2], incoming / "z.wav")
    model = trained["model"]
    config_file = tmp_path / "monitor.toml"
    config_file.write_text(
        f'db = "events.db"\n[models]\nline_a = "{model}"\nline_b = "{model}"\n'
        '[[watch]]\npath = "incoming"\nglob = "a/*.wav"\nmachine = "line_a"\n'
        '[[watch]]\npath = "incoming/b"\nmachine = "line_b"\n'
        '[alerts]\nrule = "median"\nwindow = 3\n'
    )
    config = load_config(config_file)
    assert isinstance(config.rule, MovingMedian)
    summary = Monitor(config, config_path=config_file, once=True).run()
    assert summary.unrouted == 1  # z.wav matches no route
    rows = {Path(r["path"]).name: r["machine"] for r in _scores(tmp_path / "events.db")}
    assert rows == {"x.wav": "line_a", "y.wav": "line_b"}


def test_bad_options_are_one_line_errors(trained, tmp_path, capsys) -> None:
    cases = [
        (["--watch", str(tmp_path)], "no model"),
        (["-M", f"slider={trained['model']}"], "nothing to watch"),
        (["-M", f"slider={tmp_path / 'none.safetensors'}", "--watch", str(tmp_path)], "no such"),
        (["-M", f"slider={trained['model']}", "--watch", str(tmp_path / "nope")], "not a folder"),
        (["-M", f"slider={trained['model']}", "--stdin", "pump"], "no model for machine"),
        (["-M", f"slider={trained['model']}", "--stdin", "slider", "--hop", "0"], "hop"),
        (["-M", f"s={trained['model']}", "--watch", str(tmp_path), "--alert", "k-of-n:9/3"], "k"),
        (["-M", "a=x", "-M", "b=y", "--watch", str(tmp_path)], "name the machine"),
        (["--config", str(tmp_path / "missing.toml")], "--config"),
        (["-M", f"s={trained['model']}", "--watch", str(tmp_path), "--webhook", "ftp://x"], "URL"),
    ]
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("models = [\n")
    cases.append((["--config", str(bad_toml)], "not valid TOML"))
    for argv, fragment in cases:
        assert not (tmp_path / "events.db").exists()  # refused before anything starts
        code = main(["monitor", *argv, "--db", str(tmp_path / "events.db")])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert fragment in lines[0], (argv, err)


# --------------------------------------------------------------------------- streams
def _stream_bytes(trained: dict, n_clips: int, raw: bool = False) -> bytes:
    y = np.concatenate([sf.read(p, dtype="float32")[0] for p in trained["normals"][:n_clips]])
    y = np.concatenate([y, y[: SR // 4]])  # a quarter second no window covers
    if raw:
        return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    sf.write(buffer, y, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_stdin_stream_is_cut_into_windows_with_a_hop(trained, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "soundwatch.monitor")
    data = _stream_bytes(trained, 3)
    config = _config(trained, tmp_path, stdin="slider", hop=0.5)
    summary = Monitor(config, once=True, stream_input=io.BytesIO(data)).run()
    # 3.25 s, windows of 1 s (the model's clip length) every 0.5 s: starts 0 .. 2.0 s.
    assert summary.scored == 5
    rows = _scores(tmp_path / "events.db")
    assert [r["stream_offset"] for r in rows] == [0, 8000, 16000, 24000, 32000]
    assert all(r["source"] == "stdin:slider" and r["duration"] == 1.0 for r in rows)
    assert "no full window (not scored)" in caplog.text
    # The same stream again: every window is already stored.
    summary = Monitor(config, once=True, stream_input=io.BytesIO(data)).run()
    assert (summary.scored, summary.already_stored) == (0, 5)


@pytest.mark.slow
def test_raw_pcm_on_stdin_through_the_command_line(trained, tmp_path) -> None:
    data = _stream_bytes(trained, 2, raw=True)
    done = subprocess.run(
        [sys.executable, "-m", "soundwatch", "monitor", "-M", f"slider={trained['model']}",
         "--stdin", "slider", "--format", "s16le", "--sample-rate", str(SR),
         "--db", str(tmp_path / "events.db")],
        input=data, capture_output=True, cwd=ROOT, timeout=DEADLINE_S,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert b"scored 2 clip(s)" in done.stdout
    assert [r["stream_offset"] for r in _scores(tmp_path / "events.db")] == [0, SR]


# --------------------------------------------------------------------------- alerts
def _r(decision: int, score: float = 0.0, machine: str = "m") -> Result:
    return Result(
        path=Path("x.wav"), machine=machine, score=score, threshold=0.0, decision=decision
    )


def test_k_of_n_opens_and_closes_with_hysteresis(tmp_path) -> None:
    notifier = Notifier()
    with EventStore.open(tmp_path / "events.db") as store:
        engine = AlertEngine(KOfN(k=2, n=3, close_after=2), notifier, store)
        engine.feed([_r(1), _r(0)])
        assert not engine.is_open("m")
        engine.feed([_r(1)])  # 2 of the last 3
        assert engine.is_open("m")
        engine.feed([_r(0), _r(1), _r(0)])  # never 2 normal in a row: stays open
        assert engine.is_open("m") and engine.opened == 1
        engine.feed([_r(0)])
        assert not engine.is_open("m") and engine.closed == 1
        [alert] = store.alerts("m")
        assert alert["closed_at"] is not None and "2 normal" in alert["close_reason"]
        # A new engine (a restarted monitor) picks up the history from the store.
        store.record([_r(1), _r(0)], ["sha256:1", "sha256:2"])
        restarted = AlertEngine(KOfN(k=2, n=3, close_after=2), notifier, store)
        restarted.feed([_r(1)])  # 1, 0 from the store, then 1
        assert restarted.is_open("m")


def test_moving_median_rule() -> None:
    engine = AlertEngine(MovingMedian(window=3), Notifier(), None)
    engine.feed([_r(1, 5.0), _r(0, -1.0)])
    assert not engine.is_open("m")  # fewer than 3 clips
    engine.feed([_r(1, 2.0)])  # median of 5, -1, 2 = 2 > 0
    assert engine.is_open("m")
    engine.feed([_r(0, -3.0), _r(0, -2.0)])
    assert not engine.is_open("m")


def test_rule_specs() -> None:
    assert parse_rule("k-of-n:3/5:4").describe() == "k-of-n:3/5:4"
    assert parse_rule("median:7").describe() == "median:7"
    for bad in ("k-of-n:6/5", "median:0", "sometimes", "k-of-n:x/5"):
        with pytest.raises(ConfigError):
            parse_rule(bad)


def test_alert_reaches_webhook_and_command(trained, tmp_path, receiver) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    for i in range(3):
        _noise(incoming / f"noise{i}.wav", 10 + i)
    marker = tmp_path / "alert.json"
    config = _config(
        trained,
        tmp_path,
        watch=[str(incoming)],
        alert="k-of-n:2/3",
        webhooks=[f"http://127.0.0.1:{receiver.server_port}/hook"],
        command=f"cat >> {marker}",
    )
    summary = Monitor(config, once=True).run()
    assert summary.anomalous == 3 and summary.alerts_opened == 1
    [event] = receiver.received
    assert event["event"] == "alert_opened" and event["machine"] == "slider"
    assert "2 of the last" in event["reason"] and event["alert_id"] == 1
    assert json.loads(marker.read_text())["alert_id"] == 1
    with EventStore.open(tmp_path / "events.db") as store:
        [alert] = store.alerts(open_only=True)
        assert alert["rule"] == "k-of-n"


def test_webhook_down_is_retried_without_blocking_scoring(trained, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "soundwatch.monitor")
    incoming = tmp_path / "in"
    incoming.mkdir()
    for i in range(2):
        _noise(incoming / f"noise{i}.wav", 20 + i)
    for path in trained["normals"][:4]:
        shutil.copy(path, incoming / path.name)
    config = _config(
        trained,
        tmp_path,
        watch=[str(incoming)],
        alert="k-of-n:1/1:1",
        webhooks=[f"http://127.0.0.1:{_closed_port()}/hook"],
        retries=2,
        backoff=0.2,
    )
    monitor = Monitor(config, once=True)
    summary = monitor.run()
    # Every clip was scored and stored although no notification got through.
    assert summary.scored == 6 and len(_scores(tmp_path / "events.db")) == 6
    assert monitor.notifier.delivered == 0 and monitor.notifier.failed >= 1
    assert "retry 1/2" in caplog.text and "gave up after 3 attempt(s)" in caplog.text


def test_store_that_stops_taking_writes_raises_an_alert_and_scoring_goes_on(
    trained, tmp_path, receiver
) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    config = _config(
        trained,
        tmp_path,
        watch=[str(incoming)],
        stable_seconds=0.2,
        webhooks=[f"http://127.0.0.1:{receiver.server_port}/hook"],
    )
    monitor = Monitor(config)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    try:
        _wait(lambda: monitor.watcher is not None, "the watcher to start")
        shutil.copy(trained["normals"][0], incoming / "a.wav")
        _wait(lambda: monitor.summary.scored == 1, "the first score")
        with monitor.store._lock:  # as if the file turned read-only under us
            monitor.store._db.execute("PRAGMA query_only = ON")
        shutil.copy(trained["normals"][1], incoming / "b.wav")
        _wait(lambda: monitor.summary.scored == 2, "scoring to go on")
        _wait(lambda: receiver.received, "the store alert")
        assert receiver.received[0]["event"] == "store_error"
        assert "read-only" in receiver.received[0]["reason"]
        with monitor.store._lock:
            monitor.store._db.execute("PRAGMA query_only = OFF")
        shutil.copy(trained["normals"][2], incoming / "c.wav")
        _wait(lambda: _count(tmp_path / "events.db") == 3, "the held results stored")
    finally:
        monitor.stop()
        thread.join(DEADLINE_S)
    assert monitor.summary.unrecorded == 0


# --------------------------------------------------------------------------- restarts
def _monitor_process(trained: dict, incoming: Path, db: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "soundwatch", "monitor", "-M", f"slider={trained['model']}",
         "--watch", str(incoming), "--db", str(db), "--stable", "0.2", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
def test_killed_monitor_restarts_without_loss_or_doubles(trained, tmp_path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    db = tmp_path / "events.db"
    clips = [*trained["normals"][:6], *(_noise(tmp_path / f"n{i}.wav", 30 + i) for i in range(4))]
    process = _monitor_process(trained, incoming, db)
    try:
        for clip in clips[:6]:
            shutil.copy(clip, incoming / clip.name)
        _wait(lambda: _count(db) >= 2, "the first scores")
        process.kill()  # no clean shutdown at all
        process.wait(DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    done_before = len(_scores(db))
    for clip in clips[6:]:  # arrive while the monitor is down
        shutil.copy(clip, incoming / clip.name)
    process = _monitor_process(trained, incoming, db)
    try:
        _wait(lambda: _count(db) == len(clips), "every clip scored")
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    rows = _scores(db)
    names = sorted(Path(r["path"]).name for r in rows)
    assert names == sorted(c.name for c in clips)  # each exactly once
    assert f"scored {len(clips) - done_before} clip(s)" in out
    assert f"{done_before} already in the store" in out


@pytest.mark.slow
def test_sigint_stops_cleanly(trained, tmp_path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    process = _monitor_process(trained, incoming, tmp_path / "events.db")
    try:
        _wait(lambda: (tmp_path / "events.db").exists(), "the store")
        time.sleep(2.0)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.startswith("monitor: scored 0 clip(s)") and "Traceback" not in err


# --------------------------------------------------------------------------- reloads
@pytest.mark.slow
def test_hot_reload_keeps_the_old_model_when_the_new_one_fails(trained, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "soundwatch.monitor")
    import soundwatch

    model = tmp_path / "model.safetensors"
    shutil.copy(trained["model"], model)
    refit = soundwatch.load(trained["model"]).refit_threshold("percentile:50")
    other = refit.save(tmp_path / "other.safetensors")
    incoming = tmp_path / "in"
    incoming.mkdir()
    config = load_config(
        None,
        {
            "models": [f"slider={model}"],
            "watch": [str(incoming)],
            "db": str(tmp_path / "events.db"),
            "stable_seconds": 0.2,
        },
    )
    monitor = Monitor(config)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    try:
        _wait(lambda: monitor.watcher is not None, "the watcher to start")
        first = monitor.runtime.model_digest("slider")
        model.write_bytes(b"not a model")
        _wait(lambda: "failed to load, keeping the old one" in caplog.text, "the failed reload")
        shutil.copy(trained["normals"][0], incoming / "a.wav")
        _wait(lambda: monitor.summary.scored == 1, "a score with the old model")
        shutil.copy(other, model)
        _wait(lambda: monitor.runtime.model_digest("slider") != first, "the new model")
        shutil.copy(trained["normals"][1], incoming / "b.wav")
        _wait(lambda: monitor.summary.scored == 2, "a score with the new model")
    finally:
        monitor.stop()
        thread.join(DEADLINE_S)
    rows = {Path(r["path"]).name: r for r in _scores(tmp_path / "events.db")}
    assert rows["a.wav"]["model_digest"] == first
    assert rows["b.wav"]["model_digest"] == monitor.runtime.model_digest("slider") != first
    assert rows["b.wav"]["threshold"] == pytest.approx(refit.threshold_for("00"))


@pytest.mark.slow
def test_changed_config_applies_without_restart(trained, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "soundwatch.monitor")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    config_file = tmp_path / "monitor.toml"

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")

    def write(folder: Path, extra: str = "") -> None:
        config_file.write_text(
            f'db = "events.db"\nstable_seconds = 0.2\n[models]\nslider = "{trained["model"]}"\n'
            f'{extra}[[watch]]\npath = "{folder.name}"\nmachine = "slider"\n'
        )

    write(first)
    monitor = Monitor(load_config(config_file), config_path=config_file)
    thread = threading.Thread(target=monitor.run)
    thread.start()
    try:
        _wait(lambda: monitor.watcher is not None, "the watcher to start")
        config_file.write_text("models = [\n")  # broken: the running config stays
        _wait(lambda: "keeping the running config" in caplog.text, "the refused config")
        time.sleep(0.05)
        # The new config moves the folder and adds a machine whose model is broken.
        write(second, f'pump = "{broken}"\n')
        _wait(lambda: "monitor.toml reloaded" in caplog.text, "the reload")
        assert "model pump failed to load, keeping the old one" in caplog.text
        shutil.copy(trained["normals"][0], second / "a.wav")
        _wait(lambda: monitor.summary.scored == 1, "a score from the new folder")
    finally:
        monitor.stop()
        thread.join(DEADLINE_S)
    assert Path(_scores(tmp_path / "events.db")[0]["path"]).parent == second
