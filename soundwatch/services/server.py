"""``soundwatch serve``: score clips over HTTP and show a live dashboard.

A FastAPI application on uvicorn. Uploads are checked on the event loop (size, token,
machine, "is it WAV or FLAC at all"), then scored by worker threads through a bounded
queue (:mod:`soundwatch.services.server_queue`): a full queue answers 503 with
``Retry-After`` instead of letting requests pile up. Every error is a JSON object
``{"error": "..."}`` with the status that says whose fault it is; no request can stop
the server.

Endpoints
---------
``POST /v1/score``
    A WAV or FLAC file, as multipart form data (fields ``file``, ``machine``, ``store``)
    or as the raw request body (``?machine=...&store=true&filename=...``).
``GET /v1/machines``, ``GET /v1/machines/{name}/scores?since=...&limit=...``,
``GET /v1/machines/{name}/last.png``, ``GET /v1/alerts``
    What the event store holds, for the dashboard and for scripts.
``GET /healthz``, ``GET /metrics``
    Liveness and Prometheus metrics.
``GET /``
    The dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import soundfile as sf
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from soundwatch.data.audio import AUDIO_EXTENSIONS
from soundwatch.errors import ConfigError
from soundwatch.services.alerts import AlertEngine, KOfN, Notifier, parse_rule
from soundwatch.services.server_figures import clip_png
from soundwatch.services.server_queue import QueueClosedError, QueueFullError
from soundwatch.services.server_scoring import (
    ScoringService,
    Upload,
    is_client_error,
    safe_filename,
)
from soundwatch.store import StoreError

logger = logging.getLogger("soundwatch.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 16.0
# Seconds a client is asked to wait when the queue is full.
RETRY_AFTER_S = 1
# Formats soundfile may report for an upload we accept.
_AUDIO_FORMATS = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac"}
_DASHBOARD_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}
# Scores sent to a dashboard panel at most (the newest).
MAX_SCORES = 5000


class ApiError(Exception):
    """A request the server refuses, with its HTTP status and one-line reason."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def create_app(
    service: ScoringService,
    *,
    token: str | None = None,
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
) -> FastAPI:
    """The FastAPI application of ``soundwatch serve``.

    Parameters
    ----------
    service : ScoringService
        Holds the runtime, the store and the queue; closed when the app shuts down.
    token : str, optional
        When set, every ``/v1`` and ``/metrics`` request must send
        ``Authorization: Bearer TOKEN`` (401 otherwise).
    max_upload_bytes : int
        Larger uploads get 413 before they are read.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(service.warm_up)
        yield
        await asyncio.to_thread(service.close)

    app = FastAPI(
        title="soundwatch",
        summary="Anomalous sound detection: score clips, watch machines",
        lifespan=lifespan,
        # The interactive docs load their scripts from a CDN; the schema is at
        # /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    figures: dict[str, tuple[str, bytes, bool]] = {}  # machine -> (clip key, png, has_map)

    def authorize(request: Request) -> None:
        if token is None:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            raise ApiError(
                401,
                "missing or wrong token: send the header 'Authorization: Bearer TOKEN'",
                {"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(authorize)]

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if request.url.path == "/v1/score":
            service.metrics.rejected.labels(str(exc.status)).inc()
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse({"error": problems or "invalid request"}, 422)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )

    # ------------------------------------------------------------------ scoring
    @app.post("/v1/score", dependencies=auth)
    async def score(request: Request) -> JSONResponse:
        """Score one WAV or FLAC clip with a machine's model."""
        started = time.perf_counter()
        body = await _read_body(request, max_upload_bytes)
        fields = await _fields(request, body)
        machine = fields.get("machine") or _only_machine(service)
        if machine not in service.runtime.machines:
            loaded = ", ".join(service.runtime.machines)
            raise ApiError(404, f"unknown machine {machine!r}; loaded: {loaded}")
        data = fields["data"]
        info, suffix = _sniff_audio(data)
        filename = safe_filename(fields.get("filename") or f"upload{suffix}")
        if not filename.lower().endswith(AUDIO_EXTENSIONS):
            filename += suffix
        upload = Upload(data, filename, _flag(fields.get("store")), info)
        try:
            future = service.queue.submit(machine, upload)
        except QueueFullError as exc:
            raise ApiError(
                503, f"busy: {exc}; retry later", {"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        except QueueClosedError as exc:
            raise ApiError(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)}) from None
        try:
            answer = await asyncio.wrap_future(future)
        except Exception as exc:
            if is_client_error(exc):
                raise ApiError(422, _name_upload(str(exc), filename)) from None
            raise
        if answer.result.error:
            raise ApiError(422, _name_upload(answer.result.error, filename))
        service.metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(answer.to_json())

    # ------------------------------------------------------------------ reading
    @app.get("/v1/machines", dependencies=auth)
    def machines() -> dict:
        """Every machine the server scores or the store knows, with its last clip."""
        return {"machines": _machines(service)}

    @app.get("/v1/machines/{name}/scores", dependencies=auth)
    def scores(
        name: str,
        since: Annotated[str | None, Query(description="epoch seconds or ISO 8601")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_SCORES)] = 1000,
    ) -> dict:
        """Scores of one machine scored after ``since``, oldest first (the newest
        ``limit``)."""
        _known_machine(service, name)
        rows = service.store.scores(name, _parse_since(since), limit) if service.store else []
        return {"machine": name, "scores": [_score_row(r) for r in rows]}

    @app.get("/v1/machines/{name}/last.png", dependencies=auth)
    def last_png(name: str) -> Response:
        """Log-mel spectrogram and anomaly map of the machine's last clip."""
        _known_machine(service, name)
        last = _last_clip(service, name)
        if last is None:
            raise ApiError(404, f"no clip of {name!r} to draw yet (or its file is gone)")
        key, data, filename = last
        cached = figures.get(name)
        if cached is None or cached[0] != key:
            detector = service.runtime.detector(name) if name in service.runtime.machines else None
            png, has_map = clip_png(data, filename, detector, title=filename)
            cached = figures[name] = (key, png, has_map)
        headers = {
            "X-Clip-Key": key,
            "X-Anomaly-Map": "yes" if cached[2] else "no",
            "Cache-Control": "no-store",
        }
        return Response(cached[1], media_type="image/png", headers=headers)

    @app.get("/v1/alerts", dependencies=auth)
    def alerts(
        machine: str | None = None,
        open_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict:
        """Alerts, newest first: the store's, and those the server holds while it
        cannot write the store."""
        if machine is not None:
            _known_machine(service, machine)
        stored = service.store.alerts(machine, open_only, limit) if service.store else []
        return {"alerts": service.service_alerts(machine) + stored}

    @app.get("/healthz")
    def healthz() -> dict:
        """The server is up; which machines it scores and how full its queue is."""
        return {
            "status": "ok",
            "machines": service.runtime.machines,
            "queue_depth": service.queue.depth,
            "queue_capacity": service.queue.capacity,
            "store": service.store.location if service.store else None,
            "store_alerts": len(service.service_alerts()),
        }

    @app.get("/metrics", dependencies=auth)
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ dashboard
    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @app.get("/dashboard/", include_in_schema=False)
    def dashboard() -> Response:
        return _asset("index.html")

    @app.get("/dashboard/{name}", include_in_schema=False)
    def dashboard_asset(name: str) -> Response:
        return _asset(name)

    return app


# ---------------------------------------------------------------------- helpers
async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    length = request.headers.get("content-length")
    too_big = ApiError(413, f"upload larger than the limit of {limit} bytes (--max-upload-mb)")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, f"invalid Content-Length {length!r}") from None
        if declared > limit:
            raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _fields(request: Request, body: bytes) -> dict[str, Any]:
    """``data``, ``filename``, ``machine`` and ``store`` from a multipart form or from
    a raw body and the query string."""
    content_type = request.headers.get("content-type", "")
    query = request.query_params
    fields: dict[str, Any] = {
        "machine": query.get("machine"),
        "store": query.get("store"),
        "filename": query.get("filename"),
    }
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise ApiError(422, "empty request: send a WAV or FLAC file")
        fields["data"] = body
        return fields

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # malformed multipart data
        raise ApiError(422, f"cannot read the form data: {exc}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(422, "no file: send the clip in the form field 'file'")
    fields["data"] = await upload.read()
    fields["filename"] = fields["filename"] or upload.filename
    for name in ("machine", "store"):
        value = form.get(name)
        if isinstance(value, str) and value:
            fields[name] = value
    await form.close()
    if not fields["data"]:
        raise ApiError(422, "the uploaded file is empty")
    return fields


def _sniff_audio(data: bytes) -> tuple[dict, str]:
    """Header facts of an upload and its file suffix; 415 unless it is WAV or FLAC."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception:
        raise ApiError(415, "not a WAV or FLAC file (its header cannot be read)") from None
    if info.format not in _AUDIO_FORMATS:
        raise ApiError(415, f"unsupported audio format {info.format}: send WAV or FLAC")
    if info.frames <= 0 or info.samplerate <= 0:
        raise ApiError(422, "the audio file holds no samples")
    return (
        {"duration": info.frames / info.samplerate, "sample_rate": int(info.samplerate)},
        _AUDIO_FORMATS[info.format],
    )


def _flag(value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ApiError(422, f"store must be true or false, got {value!r}")


def _only_machine(service: ScoringService) -> str:
    machines = service.runtime.machines
    if len(machines) == 1:
        return machines[0]
    raise ApiError(422, f"name the machine (machine=...): one of {', '.join(machines)}")


def _name_upload(message: str, filename: str) -> str:
    return message if filename in message else f"{filename}: {message}"


def _known_machine(service: ScoringService, name: str) -> None:
    if name in service.runtime.machines:
        return
    if service.store is not None and any(m["name"] == name for m in service.store.machines()):
        return
    raise ApiError(404, f"unknown machine {name!r}")


def _parse_since(since: str | None) -> float | None:
    if since is None or since == "":
        return None
    try:
        value = float(since)
    except ValueError:
        try:
            return datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ApiError(
                422, f"since must be seconds since the epoch or ISO 8601, got {since!r}"
            ) from None
    if not math.isfinite(value):
        raise ApiError(422, f"since must be a finite number, got {since!r}")
    return value


def _score_row(row: dict) -> dict:
    keep = (
        "clip_key",
        "machine_id",
        "score",
        "threshold",
        "threshold_source",
        "decision",
        "model_digest",
        "warnings",
        "error",
        "scored_at",
        "path",
        "source",
    )
    return {k: row.get(k) for k in keep}


def _machines(service: ScoringService) -> list[dict]:
    stored = {m["name"]: m for m in service.store.machines()} if service.store else {}
    names = list(service.runtime.machines) + [
        n for n in stored if n not in service.runtime.machines
    ]
    out = []
    for name in names:
        row = stored.get(name, {})
        loaded = name in service.runtime.machines
        detector = service.runtime.detector(name) if loaded else None
        last = service.store.scores(name, limit=1) if service.store else []
        out.append(
            {
                "name": name,
                "loaded": loaded,
                "detector": detector.name if detector is not None else None,
                "threshold_method": detector.threshold_method.spec if detector else None,
                "model_path": row.get("model_path"),
                "model_digest": service.runtime.model_digest(name)
                if loaded
                else row.get("model_digest"),
                "n_scores": row.get("n_scores", 0),
                "open_alerts": row.get("open_alerts", 0) + len(service.service_alerts(name)),
                "last": _score_row(last[0]) if last else None,
            }
        )
    return out


def _last_clip(service: ScoringService, machine: str) -> tuple[str, bytes, str] | None:
    """Key, bytes and file name of the machine's newest clip: the last upload, or the
    store's newest scored file (written by ``soundwatch monitor``) while it exists."""
    upload = service.last_upload(machine)
    newest = service.store.scores(machine, limit=1) if service.store else []
    if newest and (upload is None or newest[0]["clip_key"] != upload[1].clip_key):
        row = newest[0]
        path = row.get("path")
        if path and row["scored_at"] > (upload[0].received_at if upload else 0):
            try:
                return row["clip_key"], Path(path).read_bytes(), Path(path).name
            except OSError:
                pass
    if upload is None:
        return None
    return upload[1].clip_key, upload[0].data, upload[0].filename


def _asset(name: str) -> Response:
    if name not in _DASHBOARD_FILES:
        raise ApiError(404, f"no dashboard file {name!r}")
    data = resources.files("soundwatch.services").joinpath("dashboard", name).read_bytes()
    return Response(data, media_type=_DASHBOARD_FILES[name])


def build_app_from_options(
    models: dict[str, str],
    *,
    db: str | None,
    token: str | None,
    max_upload_mb: float,
    queue_size: int,
    workers: int,
    max_batch: int,
    threshold: str | None = None,
    strict: bool = False,
    alert: str | None = None,
    webhooks: list[str] | None = None,
    alert_command: str | None = None,
) -> FastAPI:
    """Load the models, open the store and build the app (what ``soundwatch serve``
    does before it listens).

    Raises
    ------
    ConfigError
        A bad option value.
    ModelFileError, StoreError
        A model or the store cannot be opened.
    """
    from soundwatch.runtime import ScoringRuntime
    from soundwatch.store import EventStore

    if not models:
        raise ConfigError("serve needs at least one --model MACHINE=MODEL_FILE")
    if not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    for option, value in (("--queue-size", queue_size), ("--workers", workers)):
        if value < 1:
            raise ConfigError(f"{option} must be >= 1, got {value}")
    if max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
    if token is not None and not token.strip():
        raise ConfigError("--token must not be empty")
    if not db and (alert or webhooks or alert_command):
        raise ConfigError("alerts are kept in the event store: give --db")
    rule = parse_rule(alert) if alert else KOfN()
    notifier = Notifier(list(webhooks or []), alert_command)
    store = EventStore.open(db) if db else None
    runtime = ScoringRuntime(strict=strict, skip_bad=True, threshold=threshold, store=store)
    try:
        runtime.load(models)
    except BaseException:
        if store is not None:
            store.close()
        raise
    alerts = AlertEngine(rule, notifier, store) if store is not None else None
    service = ScoringService(
        runtime,
        alerts=alerts,
        capacity=queue_size,
        workers=workers,
        max_batch=max_batch,
    )
    return create_app(service, token=token, max_upload_bytes=int(max_upload_mb * 2**20))


def run(app: FastAPI, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Listen until SIGINT or SIGTERM; the requests in hand are answered and the queued
    clips scored before it returns (normally: a stop signal is not an error)."""
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises a stop signal after its graceful shutdown, which would make
        # Ctrl-C look like an interruption and SIGTERM like a crash; stop like it, then
        # return.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    print(
        f"serving {', '.join(app.state.service.runtime.machines)} on http://{shown}:{port} "
        f"(dashboard: http://{shown}:{port}/dashboard/); Ctrl-C stops",
        flush=True,
    )
    Server(config).run()
    print("stopped", flush=True)
