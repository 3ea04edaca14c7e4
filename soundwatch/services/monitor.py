"""``soundwatch monitor``: score each new recording of a watched folder or a live stream
as it arrives, keep every score in the event store, and raise alerts.

One scoring loop on the calling thread takes work from the sources (a folder watcher,
a stream reader thread), scores it through :class:`ScoringRuntime`, records it in the
:class:`EventStore` and feeds the :class:`AlertEngine`; alert actions run on their own
thread. Clips already in the store (same file content, or same stream offset) are
skipped, so a restart scores nothing twice and, because every file in the folders is
looked at on start, skips nothing. Model files and the config file are re-read when
they change; a model that fails to load keeps the old one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from soundwatch.data.inputs import waveform_clip
from soundwatch.errors import AudioError, SoundwatchError
from soundwatch.runtime.scoring import Result, ScoringRuntime
from soundwatch.services.alerts import AlertEngine, Notifier
from soundwatch.services.monitor_config import MonitorConfig, load_config
from soundwatch.services.sources import (
    FolderWatcher,
    StreamWindows,
    microphone_chunks,
    read_stream,
)
from soundwatch.store import ClipRef, EventStore, StoreError

log = logging.getLogger("soundwatch.monitor")

# Most files scored in one batch (one model call).
BATCH_MAX = 32
# How often models, the config file and retention are looked at, in seconds.
RELOAD_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 3600.0
# Results kept in memory while the store cannot be written, retried on each batch.
UNRECORDED_MAX = 10_000


@dataclass
class MonitorSummary:
    scored: int = 0
    anomalous: int = 0
    already_stored: int = 0
    errors: int = 0
    unrouted: int = 0
    alerts_opened: int = 0
    alerts_closed: int = 0
    unrecorded: int = 0

    def line(self) -> str:
        text = (
            f"monitor: scored {self.scored} clip(s), {self.anomalous} anomalous, "
            f"{self.errors} unreadable; {self.already_stored} already in the store "
            f"(skipped); alerts opened {self.alerts_opened}, closed {self.alerts_closed}"
        )
        if self.unrouted:
            text += f"; {self.unrouted} file(s) matched no route (ignored)"
        if self.unrecorded:
            text += f"; {self.unrecorded} result(s) could NOT be stored"
        return text


class Monitor:
    """Watch, score, store and alert until stopped.

    Parameters
    ----------
    config : MonitorConfig
    config_path : Path, optional
        The TOML file ``config`` came from; re-read when it changes.
    cli : dict, optional
        The command-line values merged over the file on each re-read.
    once : bool
        Score what is in the folders now (and the stream up to its end), then stop.
    stream_input : binary file, optional
        Where a ``--stdin`` stream is read (default: ``sys.stdin.buffer``).
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        config_path: Path | None = None,
        cli: dict | None = None,
        once: bool = False,
        stream_input: BinaryIO | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.cli = cli
        self.once = once
        self.stream_input = stream_input
        self.summary = MonitorSummary()
        self._stop = threading.Event()
        self._work: queue.Queue = queue.Queue(maxsize=64)
        self._stream_done = threading.Event()
        self._unrecorded: list[tuple[list[Result], list[ClipRef]]] = []
        self._store_failing: str | None = None
        self._signatures: dict[Path, tuple[int, int] | None] = {}
        self.store: EventStore | None = None
        self.runtime: ScoringRuntime | None = None
        self.watcher: FolderWatcher | None = None

    def stop(self) -> None:
        """Ask the loop to finish the clip in hand and stop (thread- and signal-safe)."""
        self._stop.set()

    # ----------------------------------------------------------------- running
    def run(self) -> MonitorSummary:
        """Run until stopped (SIGINT, SIGTERM, :meth:`stop`) or, with ``once``, until
        everything there is scored. Returns what was done."""
        config = self.config
        self.store = EventStore.open(config.db)
        log.info("event store: %s", self.store.location)
        handlers = self._install_signals()
        try:
            self.runtime = ScoringRuntime(skip_bad=True, store=self.store)
            self.runtime.load(config.models)
            for name, path in config.models.items():
                self._signatures[path] = _signature(path)
                log.info("model %s: %s (%s)", name, path, self.runtime.model_digest(name))
            if self.config_path is not None:
                self._signatures[self.config_path] = _signature(self.config_path)
            self.notifier = Notifier(
                config.webhooks, config.command, config.retries, config.backoff_seconds
            )
            self.alerts = AlertEngine(config.rule, self.notifier, self.store)
            self._prune()
            self._start_watcher()
            stream_thread = self._start_stream()
            self._loop(stream_thread)
        finally:
            self._shutdown(handlers)
        return self.summary

    def _loop(self, stream_thread: threading.Thread | None) -> None:
        next_reload = time.monotonic() + RELOAD_INTERVAL_S
        next_prune = time.monotonic() + PRUNE_INTERVAL_S
        while not self._stop.is_set():
            files = self.watcher.ready() if self.watcher else []
            if files:
                self._score_files(files)
            try:
                item = self._work.get(timeout=0.05 if files else 0.2)
            except queue.Empty:
                item = None
            if item is not None:
                self._score_window(*item)
            now = time.monotonic()
            if now >= next_reload and not self.once:
                self._reload()
                next_reload = now + RELOAD_INTERVAL_S
            if now >= next_prune:
                self._prune()
                next_prune = now + PRUNE_INTERVAL_S
            if self._finished(stream_thread):
                break

    def _finished(self, stream_thread: threading.Thread | None) -> bool:
        stream_over = stream_thread is None or (self._stream_done.is_set() and self._work.empty())
        if not stream_over:
            return False
        # With --once, or without folders, the monitor ends with its stream.
        return self.once or (stream_thread is not None and self.watcher is None)

    def _shutdown(self, handlers: dict) -> None:
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop()
        if getattr(self, "notifier", None) is not None:
            self.notifier.close()
        if self._unrecorded and self.store is not None:
            self._flush_unrecorded()
        self.summary.unrecorded = sum(len(r) for r, _ in self._unrecorded)
        if self.summary.unrecorded:
            log.error(
                "error: %d result(s) could not be stored before shutdown; their clips "
                "will be scored again on the next start",
                self.summary.unrecorded,
            )
        if self.store is not None:
            self.store.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda *_: self.stop())
        return handlers

    # ----------------------------------------------------------------- sources
    def _start_watcher(self) -> None:
        roots = sorted({r.root for r in self.config.routes})
        if not roots:
            self.watcher = None
            return
        self.watcher = FolderWatcher(roots, self.config.stable_seconds, self.config.polling)
        if self.once:
            # Everything there now, without waiting for it to settle.
            self._score_files(self.watcher.existing())
            self.watcher = None
            return
        self.watcher.start()
        log.info("watching %s", ", ".join(str(r) for r in roots))

    def _start_stream(self) -> threading.Thread | None:
        spec = self.config.stream
        if spec is None:
            return None
        info = self.runtime.detector(spec.machine).fit_info_ or {}
        trained = info.get("audio") or {}

        def read() -> None:
            try:
                if spec.microphone:
                    rate = spec.sample_rate or trained.get("sample_rate")
                    chunks = microphone_chunks(int(rate), spec.channels, self._stop)
                    start = self.store.stream_end(spec.source) or 0
                else:
                    import sys

                    handle = self.stream_input or sys.stdin.buffer
                    fmt, chunks = read_stream(handle, spec.format, spec.sample_rate, spec.channels)
                    rate, start = fmt.sample_rate, 0
                seconds = spec.window_seconds or trained.get("max_duration")
                if not seconds:
                    raise SoundwatchError(
                        f"stream {spec.source}: the model does not record its clip length; "
                        "give --window SECONDS"
                    )
                window = round(seconds * rate)
                hop = round((spec.hop_seconds or seconds) * rate)
                cutter = StreamWindows(window, hop, start)
                log.info(
                    "stream %s: %d Hz, windows of %.3g s every %.3g s, from sample %d",
                    spec.source,
                    rate,
                    window / rate,
                    hop / rate,
                    start,
                )
                for chunk in chunks:
                    for offset, samples in cutter.feed(chunk):
                        while not self._stop.is_set():
                            with contextlib.suppress(queue.Full):
                                self._work.put((spec, offset, samples, rate), timeout=0.2)
                                break
                    if self._stop.is_set():
                        return
                if cutter.leftover > 0:
                    log.info(
                        "stream %s ended; its last %.3g s make no full window (not scored)",
                        spec.source,
                        cutter.leftover / rate,
                    )
            except SoundwatchError as exc:
                log.error("error: %s", exc)
            except OSError as exc:
                log.error("error: stream %s: %s", spec.source, exc)
            finally:
                self._stream_done.set()

        thread = threading.Thread(target=read, name="soundwatch-stream", daemon=True)
        thread.start()
        return thread

    # ----------------------------------------------------------------- scoring
    def _score_files(self, files: list[Path]) -> None:
        by_machine: dict[str, list[tuple[Path, ClipRef]]] = {}
        keys: set[tuple[str, str]] = set()
        for path in files:
            machine = self.config.route(path)
            if machine is None:
                self.summary.unrouted += 1
                log.info("%s: matches no route; ignored", path)
                continue
            try:
                ref = _file_ref(path)
            except OSError as exc:
                log.warning("%s: vanished before scoring (%s)", path, exc.strerror or exc)
                continue
            if (ref.key, machine) in keys or self._stored(ref.key, machine):
                # Same content as a clip already scored (or about to be, in this batch).
                self.summary.already_stored += 1
                log.debug("%s: already scored by %s; skipped", path, machine)
                continue
            keys.add((ref.key, machine))
            by_machine.setdefault(machine, []).append((path, ref))
        for machine, items in by_machine.items():
            for start in range(0, len(items), BATCH_MAX):
                if self._stop.is_set():
                    return  # what is left is scored on the next start
                batch = items[start : start + BATCH_MAX]
                results = self._score([p for p, _ in batch], machine)
                self._handle(results, [r for _, r in batch])

    def _score_window(self, spec, offset: int, samples, rate: int) -> None:
        ref = ClipRef.for_window(spec.source, offset, len(samples), rate, time.time())
        if self._stored(ref.key, spec.machine):
            self.summary.already_stored += 1
            return
        try:
            with waveform_clip(samples, rate) as clip:
                results = self._score([clip], spec.machine)
        except SoundwatchError as exc:
            results = [Result(path=Path(ref.key), machine=spec.machine, error=str(exc))]
        for result in results:
            result.path = Path(ref.key)
        self._handle(results, [ref])

    def _score(self, batch: list, machine: str) -> list[Result]:
        try:
            return self.runtime.score(batch, machine)
        except SoundwatchError as exc:
            return [
                Result(path=getattr(item, "path", item), machine=machine, error=str(exc))
                for item in batch
            ]

    def _handle(self, results: list[Result], refs: list[ClipRef]) -> None:
        for result in results:
            if result.error:
                self.summary.errors += 1
                log.warning("%s: not scored: %s", result.path, result.error)
                continue
            self.summary.scored += 1
            self.summary.anomalous += result.decision or 0
            log.info(
                "%s %s score %.4g threshold %.4g%s",
                result.machine,
                result.path,
                result.score,
                result.threshold,
                " ANOMALOUS" if result.decision else "",
            )
            for warning in result.warnings:
                log.warning("warning: %s", warning)
        self.alerts.prepare({r.machine for r in results})
        self._record(results, refs)
        opened, closed = self.alerts.opened, self.alerts.closed
        self.alerts.feed(results)
        self.summary.alerts_opened += self.alerts.opened - opened
        self.summary.alerts_closed += self.alerts.closed - closed

    # ----------------------------------------------------------------- storing
    def _stored(self, key: str, machine: str) -> bool:
        try:
            return self.store.has_clip(key, machine)
        except StoreError as exc:
            self._store_failed(exc)
            return False

    def _record(self, results: list[Result], refs: list[ClipRef]) -> None:
        self._unrecorded.append((results, refs))
        self._flush_unrecorded()

    def _flush_unrecorded(self) -> None:
        while self._unrecorded:
            results, refs = self._unrecorded[0]
            try:
                self.store.record(results, refs)
            except StoreError as exc:
                self._store_failed(exc)
                held = sum(len(r) for r, _ in self._unrecorded)
                if held > UNRECORDED_MAX:
                    dropped, _ = self._unrecorded.pop(0)
                    log.error(
                        "error: %d result(s) dropped: the store stays unwritable", len(dropped)
                    )
                return
            self._unrecorded.pop(0)
            if self._store_failing is not None:
                log.warning("event store writable again; held results stored")
                self._store_failing = None

    def _store_failed(self, exc: StoreError) -> None:
        """Say once per kind of failure that the store fails; scoring goes on."""
        if self._store_failing == str(exc):
            return
        self._store_failing = str(exc)
        log.error("error: %s; scoring continues, results held in memory", exc)
        self.notifier.notify(
            {"event": "store_error", "machine": None, "reason": str(exc), "time": time.time()}
        )

    def _prune(self) -> None:
        if self.config.retention_days is None:
            return
        try:
            removed = self.store.prune(self.config.retention_days * 86400.0)
        except StoreError as exc:
            self._store_failed(exc)
            return
        if any(removed.values()):
            log.info(
                "retention %.3g days: removed %d score(s), %d alert(s), %d clip(s)",
                self.config.retention_days,
                removed["scores"],
                removed["alerts"],
                removed["clips"],
            )

    # ----------------------------------------------------------------- reloading
    def _reload(self) -> None:
        if self.config_path is not None and self._changed(self.config_path):
            self._reload_config()
        for name, path in list(self.config.models.items()):
            if self._changed(path):
                self._reload_model(name, path)

    def _changed(self, path: Path) -> bool:
        signature = _signature(path)
        if signature is None or signature == self._signatures.get(path):
            return False
        self._signatures[path] = signature
        return True

    def _reload_model(self, name: str, path: Path) -> bool:
        old = self.runtime.model_digest(name) if name in self.runtime.machines else None
        try:
            self.runtime.load({name: path})
        except (SoundwatchError, OSError) as exc:
            log.error("error: model %s failed to load, keeping the old one: %s", name, exc)
            return False
        log.info("model %s reloaded: %s -> %s", name, old, self.runtime.model_digest(name))
        return True

    def _reload_config(self) -> None:
        try:
            config = load_config(self.config_path, self.cli)
        except SoundwatchError as exc:
            log.error("error: %s; keeping the running config", exc)
            return
        for name, path in list(config.models.items()):
            if self.config.models.get(name) != path or name not in self.runtime.machines:
                self._signatures[path] = _signature(path)
                if not self._reload_model(name, path):
                    # The running model (if any) stays, with its file.
                    del config.models[name]
                    if name in self.config.models:
                        config.models[name] = self.config.models[name]
        config.routes = [r for r in config.routes if r.machine in self.runtime.machines]
        roots_changed = {r.root for r in config.routes} != {r.root for r in self.config.routes}
        if config.rule.describe() != self.config.rule.describe():
            self.alerts = AlertEngine(config.rule, self.notifier, self.store)
        if (config.webhooks, config.command) != (self.config.webhooks, self.config.command):
            # The old notifier delivers what it holds in the background.
            threading.Thread(target=self.notifier.close, daemon=True).start()
            self.notifier = Notifier(
                config.webhooks, config.command, config.retries, config.backoff_seconds
            )
            self.alerts.notifier = self.notifier
        config.stream = self.config.stream  # a running stream keeps its settings
        self.config = config
        if roots_changed:
            if self.watcher is not None:
                self.watcher.stop()
            self._start_watcher()
        log.info("config %s reloaded", self.config_path)


def _file_ref(path: Path) -> ClipRef:
    """The file's reference; for a file that is not readable audio, its digest only (the
    runtime then records why it was skipped)."""
    try:
        return ClipRef.for_file(path)
    except AudioError:
        from soundwatch.features.cache import file_digest

        return ClipRef(key=f"sha256:{file_digest(path)}", path=str(path))


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
