"""Shared by the server and dashboard tests: a small trained model and a real uvicorn
server on a free loopback port, run in a thread."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from soundwatch.detectors.base import Detector
from soundwatch.detectors.registry import create
from soundwatch.evaluation.protocol import training_clips
from soundwatch.runtime import ScoringRuntime
from soundwatch.services.server import create_app
from soundwatch.services.server_scoring import ScoringService
from soundwatch.store import EventStore
from soundwatch.synth import generate_dataset


def train_small_model(root: Path) -> tuple[Path, Path]:
    """Synthesise a small slider set (one ID) and train ``logmel-mahalanobis`` on it.

    Returns
    -------
    (model file, test folder)
    """
    generate_dataset(
        root / "data",
        machine="slider",
        n_ids=1,
        n_train_per_id=16,
        n_test_normal_per_id=3,
        n_test_anomaly_per_id=3,
        severity=2.0,
        seed=11,
        progress=False,
    )
    detector = create("logmel-mahalanobis")
    detector.fit(training_clips(root / "data", "slider"))
    model = root / "slider.safetensors"
    detector.save(model)
    return model, root / "data" / "slider" / "test"


def wav_bytes(y: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


def make_service(
    model: Path | Detector, db: Path | None, machine: str = "slider", **queue
) -> ScoringService:
    from soundwatch.services.alerts import AlertEngine, KOfN, Notifier

    store = EventStore.open(db) if db is not None else None
    runtime = ScoringRuntime(skip_bad=True, store=store).load({machine: model})
    alerts = AlertEngine(KOfN(2, 3), Notifier(), store) if store is not None else None
    return ScoringService(runtime, alerts=alerts, **queue)


@contextlib.contextmanager
def running_server(service: ScoringService, **options) -> Iterator[str]:
    """Serve ``service`` on 127.0.0.1 (a free port) in a thread; yields the base URL and
    stops the server (and closes the service) afterwards."""
    import uvicorn

    app = create_app(service, **options)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
