"""Load benchmark of ``soundwatch serve`` on loopback.

Trains ``logmel-mahalanobis`` on a small synthetic slider set, starts ``soundwatch
serve`` in a child process on 127.0.0.1, and sends 1,000 scoring requests (10 s,
16 kHz clips, ``store=true``) from 16 concurrent httpx clients. Each request carries a
distinct clip: a synthetic test clip with two samples changed in their lowest bits, so
every upload has its own digest. Prints

- throughput (clips/s) and p50/p95/p99 request latency (client side, upload to answer),
- the server's peak resident memory,
- the server's and the clients' CPU time per clip (what the figures above would be on
  idle cores follows from these when the machine is shared),
- a check that every request got exactly one stored score (same key, same score).

The clients run on the same machine as the server and take CPU from it.

Usage::

    python benchmarks/bench_serve.py [--requests 1000] [--clients 16] [--upload multipart|raw]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from soundwatch.detectors.registry import create
from soundwatch.evaluation.protocol import training_clips
from soundwatch.store import EventStore
from soundwatch.synth import generate_dataset

MACHINE = "slider"
HEADER_BYTES = 44  # the synthetic clips are plain 16-bit PCM WAV


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--upload", choices=["multipart", "raw"], default="multipart")
    parser.add_argument("--workers", type=int, default=1, help="server scoring threads")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the server (default 1)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for data, model and database"
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="soundwatch-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)

    model, clips = _model_and_clips(work)
    db = work / f"events-{int(time.time())}.db"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "soundwatch",
        "--threads",
        str(args.threads),
        "serve",
        "--model",
        f"{MACHINE}={model}",
        "--db",
        str(db),
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--max-batch",
        str(args.max_batch),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, server)
        print(
            f"server pid {server.pid}: {args.requests} requests, {args.clients} clients, "
            f"{args.upload} uploads, {args.workers} scoring thread(s), "
            f"max batch {args.max_batch}, torch threads {args.threads}",
            flush=True,
        )
        server_cpu = _cpu_seconds(server.pid)
        client_cpu = _own_cpu_seconds()
        results, wall = asyncio.run(_load(base, clips, args.requests, args.clients, args.upload))
        server_cpu = _cpu_seconds(server.pid) - server_cpu
        client_cpu = _own_cpu_seconds() - client_cpu
        peak_mb = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)

    latencies = np.array([r["latency"] for r in results])
    statuses = [r["status"] for r in results]
    retries = sum(r["retries"] for r in results)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
    print(f"throughput: {len(results) / wall:.1f} clips/s ({len(results)} in {wall:.1f} s)")
    print(f"latency: p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms")
    by_order = sorted(results, key=lambda r: r["i"])
    cold = max(r["latency"] for r in by_order[: args.clients]) * 1000
    warm = np.percentile([r["latency"] for r in by_order[args.clients :]], 99) * 1000
    print(
        f"cold start: the first {args.clients} requests took up to {cold:.0f} ms; "
        f"p99 of the others {warm:.0f} ms"
    )
    print(f"server peak memory: {peak_mb:.0f} MB resident")
    n = len(results)
    print(
        f"CPU time per clip: server {1000 * server_cpu / n:.1f} ms, clients "
        f"{1000 * client_cpu / n:.1f} ms (server used {server_cpu / wall:.2f} cores on "
        f"average; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"503 answers retried: {retries}")
    return _check(results, statuses, db)


def _model_and_clips(work: Path) -> tuple[Path, list[bytes]]:
    data = work / "data"
    if not (data / MACHINE / "test").is_dir():
        generate_dataset(
            data,
            machine=MACHINE,
            n_ids=1,
            n_train_per_id=40,
            n_test_normal_per_id=4,
            n_test_anomaly_per_id=4,
            seed=3,
            progress=False,
        )
    model = work / "slider.safetensors"
    if not model.is_file():
        detector = create("logmel-mahalanobis")
        detector.fit(training_clips(data, MACHINE))
        detector.save(model)
    clips = [p.read_bytes() for p in sorted((data / MACHINE / "test").glob("*.wav"))]
    return model, clips


def _variant(clips: list[bytes], i: int) -> tuple[str, bytes]:
    """Request ``i``'s clip: a test clip with two samples' low bytes set from ``i``."""
    base = clips[i % len(clips)]
    data = bytearray(base)
    data[HEADER_BYTES + 1000] = i & 0xFF
    data[HEADER_BYTES + 3000] = (i >> 8) & 0xFF
    kind = "anomaly" if i % len(clips) < len(clips) // 2 else "normal"
    return f"{kind}_id_00_req{i:05d}.wav", bytes(data)


async def _load(base: str, clips: list[bytes], n: int, n_clients: int, upload: str):
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    results: list[dict] = []

    async def client() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                name, data = _variant(clips, i)
                retries = 0
                start = time.perf_counter()
                while True:
                    if upload == "multipart":
                        response = await http.post(
                            "/v1/score",
                            files={"file": (name, data, "audio/wav")},
                            data={"machine": MACHINE, "store": "true"},
                        )
                    else:
                        response = await http.post(
                            "/v1/score",
                            params={"machine": MACHINE, "store": "true", "filename": name},
                            content=data,
                            headers={"Content-Type": "audio/wav"},
                        )
                    if response.status_code != 503:
                        break
                    retries += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                results.append(
                    {
                        "i": i,
                        "status": response.status_code,
                        "latency": time.perf_counter() - start,
                        "retries": retries,
                        "answer": response.json(),
                        "key": "sha256:" + hashlib.sha256(data).hexdigest(),
                    }
                )

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(n_clients)))
    return results, time.perf_counter() - start


def _check(results: list[dict], statuses: list[int], db: Path) -> int:
    """Every request answered 200 and stored once: one row per key, with its score."""
    problems = []
    bad = [s for s in statuses if s != 200]
    if bad:
        problems.append(f"{len(bad)} requests failed (statuses {sorted(set(bad))})")
    with EventStore.open(db, read_only=True) as store:
        rows = store.scores(MACHINE)
    stored = {}
    for row in rows:
        stored[row["clip_key"]] = stored.get(row["clip_key"], 0) + 1
    for r in results:
        answer = r["answer"]
        if r["status"] != 200:
            continue
        if answer.get("clip_key") != r["key"]:
            problems.append(f"request {r['i']}: answered for another clip")
        if not answer.get("stored") or answer.get("duplicate"):
            problems.append(f"request {r['i']}: stored={answer.get('stored')}")
        if stored.get(r["key"]) != 1:
            problems.append(f"request {r['i']}: {stored.get(r['key'], 0)} stored scores")
    if len(rows) != len(results):
        problems.append(f"{len(rows)} stored scores for {len(results)} requests")
    by_key = {row["clip_key"]: row["score"] for row in rows}
    if any(by_key.get(r["key"]) != r["answer"].get("score") for r in results):
        problems.append("a stored score differs from the answered one")
    if problems:
        print("check FAILED:\n  " + "\n  ".join(problems[:20]))
        return 1
    print(f"check: {len(results)} requests, {len(rows)} stored scores, one per request")
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not answer /healthz within 120 s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (Linux ``VmHWM``); NaN elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
