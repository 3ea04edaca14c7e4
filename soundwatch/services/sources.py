"""Where the monitor's clips come from: watched folders and live streams.

- :class:`FolderWatcher` follows folders recursively with ``watchdog`` and hands on a
  file only once it is complete: renamed into place, or its size and modification time
  unchanged for ``stable_seconds``.
- :class:`StreamWindows` cuts a stream of samples into windows of the model's clip
  length with a hop; :func:`read_stream` reads raw PCM or WAV from a binary file
  (stdin), :func:`microphone_chunks` from a microphone through ``sounddevice``.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from soundwatch.data.audio import is_audio_file
from soundwatch.errors import AudioError, ConfigError

log = logging.getLogger("soundwatch.monitor")

# Frames read from a stream at a time.
STREAM_CHUNK_FRAMES = 4096
# Raw sample formats of a stream: numpy dtype and the scale to [-1, 1].
RAW_FORMATS = {"s16le": ("<i2", 32768.0), "s32le": ("<i4", 2147483648.0), "f32le": ("<f4", 1.0)}


# --------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class Route:
    """Files under ``root`` whose path relative to it matches ``glob`` go to
    ``machine`` (``*`` matches across folders)."""

    root: Path
    glob: str
    machine: str

    def matches(self, path: Path) -> bool:
        try:
            relative = path.relative_to(self.root).as_posix()
        except ValueError:
            return False
        return fnmatch.fnmatchcase(relative, self.glob)


class FolderWatcher:
    """Watch folders for audio files and report each complete file once per change.

    Parameters
    ----------
    roots : list of Path
        Folders watched recursively.
    stable_seconds : float
        How long size and modification time must stay the same before a file that was
        written in place counts as complete.
    polling : bool
        Poll the folders instead of using the operating system's notifications (for
        network file systems).
    """

    def __init__(self, roots: list[Path], stable_seconds: float = 1.0, polling: bool = False):
        self.roots = sorted({Path(r).resolve() for r in roots})
        self.stable_seconds = float(stable_seconds)
        self.polling = polling
        self._lock = threading.Lock()
        # path -> (signature, time the signature was first seen)
        self._pending: dict[Path, tuple[tuple[int, int], float]] = {}
        self._ready: list[Path] = []
        self._observer = None

    def start(self) -> None:
        """Start watching, then queue the audio files already there."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
            from watchdog.observers.polling import PollingObserver
        except ImportError as exc:
            raise ConfigError(
                "folder watching needs watchdog: pip install 'soundwatch[serve]'"
            ) from exc

        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_created(self, event) -> None:
                if not event.is_directory:
                    watcher._seen(Path(event.src_path))

            def on_modified(self, event) -> None:
                if not event.is_directory:
                    watcher._seen(Path(event.src_path))

            def on_closed(self, event) -> None:
                if not event.is_directory:
                    watcher._seen(Path(event.src_path))

            def on_moved(self, event) -> None:
                if not event.is_directory:
                    watcher._renamed(Path(event.dest_path))

        self._observer = PollingObserver(timeout=0.5) if self.polling else Observer()
        handler = _Handler()
        for root in self.roots:
            self._observer.schedule(handler, str(root), recursive=True)
        self._observer.start()
        for path in self.existing():
            self._seen(path)

    def existing(self) -> list[Path]:
        """Audio files in the watched folders now, sorted by path."""
        found = set()
        for root in self.roots:
            found.update(p for p in root.rglob("*") if p.is_file() and is_audio_file(p))
        return sorted(found)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _seen(self, path: Path) -> None:
        if not is_audio_file(path):
            return
        signature = _signature(path)
        if signature is None:
            return
        with self._lock:
            old = self._pending.get(path)
            if old is None or old[0] != signature:
                self._pending[path] = (signature, time.monotonic())

    def _renamed(self, path: Path) -> None:
        # A file renamed into place is complete.
        if is_audio_file(path) and path.is_file():
            with self._lock:
                self._pending.pop(path, None)
                self._ready.append(path)

    def ready(self) -> list[Path]:
        """Files complete since the last call (in the order they became complete)."""
        now = time.monotonic()
        with self._lock:
            for path, (signature, since) in list(self._pending.items()):
                current = _signature(path)
                if current is None:
                    del self._pending[path]
                elif current != signature:
                    self._pending[path] = (current, now)
                elif now - since >= self.stable_seconds and current[0] > 0:
                    del self._pending[path]
                    self._ready.append(path)
            ready, self._ready = self._ready, []
        return ready

    @property
    def waiting(self) -> int:
        """Files seen but not yet complete."""
        with self._lock:
            return len(self._pending)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


# --------------------------------------------------------------------------- streams
class StreamWindows:
    """Cut a stream into windows of ``window`` samples every ``hop`` samples.

    Offsets count samples from ``start`` (the first sample fed), so the same stream fed
    again gives the same windows with the same offsets.
    """

    def __init__(self, window: int, hop: int, start: int = 0) -> None:
        if window <= 0 or hop <= 0:
            raise ConfigError(f"stream window and hop must be positive, got {window}, {hop}")
        self.window, self.hop = int(window), int(hop)
        self._buffer = np.zeros((0, 1), dtype=np.float32)
        self._buffer_start = int(start)  # stream offset of the buffer's first sample
        self._next = int(start)  # offset of the next window

    def feed(self, samples: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Windows completed by ``samples`` (shape (n, channels)) as (offset, window)."""
        if self._buffer.shape[0] == 0:
            self._buffer = np.zeros((0, samples.shape[1]), dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32)])
        end = self._buffer_start + self._buffer.shape[0]
        while self._next + self.window <= end:
            begin = self._next - self._buffer_start
            window = self._buffer[begin : begin + self.window]
            yield self._next, (window[:, 0] if window.shape[1] == 1 else window).copy()
            self._next += self.hop
        drop = max(0, min(self._next - self._buffer_start, self._buffer.shape[0]))
        self._buffer = self._buffer[drop:]
        self._buffer_start += drop

    @property
    def leftover(self) -> int:
        """Samples fed after the last window's start that no full window covers."""
        return self._buffer_start + self._buffer.shape[0] - self._next


@dataclass(frozen=True)
class StreamFormat:
    sample_rate: int
    channels: int
    dtype: str
    scale: float


def read_stream(
    handle: BinaryIO, fmt: str = "auto", sample_rate: int | None = None, channels: int = 1
) -> tuple[StreamFormat, Iterator[np.ndarray]]:
    """The format of a stream and its samples, as float32 chunks of shape (n, channels).

    Parameters
    ----------
    handle : binary file
        Usually ``sys.stdin.buffer``.
    fmt : str
        ``wav`` (header read from the stream), ``s16le``, ``s32le`` or ``f32le`` (raw
        little-endian samples), or ``auto`` (WAV when the stream starts with ``RIFF``,
        else ``s16le``).
    sample_rate, channels : int
        Of raw samples (a WAV header gives its own; a different ``sample_rate`` is an
        error).
    """
    head = _read_exact(handle, 4)
    if fmt == "auto":
        fmt = "wav" if head == b"RIFF" else "s16le"
    if fmt == "wav":
        if head != b"RIFF":
            raise AudioError("stream: expected a WAV stream (RIFF header)")
        spec = _wav_header(handle)
        if sample_rate is not None and sample_rate != spec.sample_rate:
            raise ConfigError(
                f"stream: --sample-rate {sample_rate} but the WAV header says {spec.sample_rate} Hz"
            )
        head = b""
    elif fmt in RAW_FORMATS:
        if not sample_rate:
            raise ConfigError("stream: raw samples need --sample-rate")
        dtype, scale = RAW_FORMATS[fmt]
        spec = StreamFormat(int(sample_rate), int(channels), dtype, scale)
    else:
        raise ConfigError(f"stream format {fmt!r}: expected auto, wav, {', '.join(RAW_FORMATS)}")
    return spec, _chunks(handle, spec, head)


def _chunks(handle: BinaryIO, spec: StreamFormat, head: bytes) -> Iterator[np.ndarray]:
    frame_bytes = np.dtype(spec.dtype).itemsize * spec.channels
    pending = head
    while True:
        data = handle.read(STREAM_CHUNK_FRAMES * frame_bytes)
        if not data:
            return
        pending += data
        usable = len(pending) - len(pending) % frame_bytes
        if usable:
            samples = np.frombuffer(pending[:usable], dtype=spec.dtype)
            pending = pending[usable:]
            yield (samples.astype(np.float32) / spec.scale).reshape(-1, spec.channels)


def _read_exact(handle: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = handle.read(n - len(data))
        if not more:
            break
        data += more
    return data


def _wav_header(handle: BinaryIO) -> StreamFormat:
    """Read a WAV header up to its data chunk (the data size is ignored, so a stream
    of unknown length works)."""
    riff = _read_exact(handle, 8)
    if len(riff) < 8 or riff[4:8] != b"WAVE":
        raise AudioError("stream: not a WAV stream (no WAVE tag)")
    spec = None
    while True:
        chunk = _read_exact(handle, 8)
        if len(chunk) < 8:
            raise AudioError("stream: WAV header ends before its data chunk")
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"data":
            if spec is None:
                raise AudioError("stream: WAV data chunk before its fmt chunk")
            return spec
        body = _read_exact(handle, size + (size & 1))
        if name == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            formats = {(1, 16): ("<i2", 32768.0), (1, 32): ("<i4", 2147483648.0)}
            formats[(3, 32)] = ("<f4", 1.0)
            if (tag, bits) not in formats:
                raise AudioError(
                    f"stream: WAV format {tag} with {bits} bits is not supported "
                    "(use 16- or 32-bit PCM or 32-bit float)"
                )
            spec = StreamFormat(rate, channels, *formats[(tag, bits)])


def microphone_chunks(
    sample_rate: int, channels: int, stop: threading.Event, device: str | None = None
) -> Iterator[np.ndarray]:
    """Float32 chunks of shape (n, channels) from a microphone until ``stop`` is set."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise ConfigError(f"--mic needs the sounddevice package and PortAudio ({exc})") from exc
    chunks: queue.Queue[np.ndarray] = queue.Queue(maxsize=256)

    def callback(data, frames, when, status) -> None:  # runs on the audio thread
        if status:
            log.warning("microphone: %s", status)
        try:
            chunks.put_nowait(data.copy())
        except queue.Full:
            log.warning("microphone: scoring falls behind; %d frames dropped", frames)

    with sounddevice.InputStream(
        samplerate=sample_rate,
        channels=channels,
        dtype="float32",
        device=device,
        callback=callback,
    ):
        while not stop.is_set():
            try:
                yield chunks.get(timeout=0.2)
            except queue.Empty:
                continue
