"""Alert rules over a machine's recent decisions, and the actions an alert sets off.

A rule watches one machine's results in order and says when an alert opens and when it
closes:

- :class:`KOfN`: ``k`` of the last ``n`` decisions anomalous opens it; ``close_after``
  normal decisions in a row close it (hysteresis, so one normal clip does not flap it);
- :class:`MovingMedian`: the median of ``score - threshold`` over the last ``window``
  clips above zero opens it; at or below zero closes it.

:class:`AlertEngine` keeps open alerts in the event store and hands each opening and
closing to :class:`Notifier`, which runs the actions (a log line, webhook POSTs, a
shell command) on a background thread with retries and backoff, so a slow or dead
receiver never holds up scoring.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from soundwatch.errors import ConfigError
from soundwatch.store import EventStore, StoreError

log = logging.getLogger("soundwatch.monitor")

# A webhook gets this long to answer one attempt.
WEBHOOK_TIMEOUT_S = 5.0
# A shell command gets this long to finish one attempt.
COMMAND_TIMEOUT_S = 30.0
# Backoff between attempts never grows past this.
MAX_BACKOFF_S = 60.0


# --------------------------------------------------------------------------- rules
class KOfN:
    """Open when ``k`` of the last ``n`` decisions are anomalous; close after
    ``close_after`` normal decisions in a row."""

    name = "k-of-n"

    def __init__(self, k: int = 3, n: int = 5, close_after: int | None = None) -> None:
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise ConfigError(f"alert rule k-of-n: need 1 <= k <= n, got k={k}, n={n}")
        close_after = n if close_after is None else close_after
        if not (isinstance(close_after, int) and close_after >= 1):
            raise ConfigError(f"alert rule k-of-n: close_after must be >= 1, got {close_after}")
        self.k, self.n, self.close_after = k, n, close_after
        self.history = int(max(n, close_after))

    def describe(self) -> str:
        return f"k-of-n:{self.k}/{self.n}:{self.close_after}"

    def opens(self, recent: Sequence[dict]) -> str | None:
        last = [r["decision"] for r in recent[-self.n :]]
        anomalous = sum(last)
        if anomalous >= self.k:
            return f"{anomalous} of the last {len(last)} clips anomalous (rule {self.describe()})"
        return None

    def closes(self, recent: Sequence[dict]) -> str | None:
        last = [r["decision"] for r in recent[-self.close_after :]]
        if len(last) == self.close_after and not any(last):
            return f"{self.close_after} normal clips in a row"
        return None


class MovingMedian:
    """Open when the median of ``score - threshold`` over the last ``window`` clips is
    above zero; close when it is at or below zero."""

    name = "median"

    def __init__(self, window: int = 5) -> None:
        if not (isinstance(window, int) and window >= 1):
            raise ConfigError(f"alert rule median: window must be >= 1, got {window}")
        self.window = window
        self.history = window

    def describe(self) -> str:
        return f"median:{self.window}"

    def _median(self, recent: Sequence[dict]) -> float | None:
        last = recent[-self.window :]
        if len(last) < self.window:
            return None
        return statistics.median(r["score"] - r["threshold"] for r in last)

    def opens(self, recent: Sequence[dict]) -> str | None:
        median = self._median(recent)
        if median is not None and median > 0:
            return (
                f"median score over the last {self.window} clips is {median:.4g} above "
                "the threshold"
            )
        return None

    def closes(self, recent: Sequence[dict]) -> str | None:
        median = self._median(recent)
        if median is not None and median <= 0:
            return f"median score over the last {self.window} clips back under the threshold"
        return None


def parse_rule(spec: str) -> KOfN | MovingMedian:
    """A rule from its command-line form: ``k-of-n:K/N[:M]`` or ``median:W``."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "k-of-n":
            counts, _, close = rest.partition(":")
            k, _, n = counts.partition("/")
            return KOfN(int(k), int(n), int(close) if close else None)
        if kind == "median":
            return MovingMedian(int(rest))
    except ValueError:
        pass
    raise ConfigError(
        f"--alert {spec!r}: expected k-of-n:K/N[:M] (K of the last N clips anomalous, close "
        "after M normal) or median:W (median over W clips above the threshold)"
    )


def rule_from_table(table: dict) -> KOfN | MovingMedian:
    """A rule from the ``[alerts]`` table of a monitor config."""
    kind = table.get("rule", "k-of-n")
    if kind == "k-of-n":
        return KOfN(int(table.get("k", 3)), int(table.get("n", 5)), table.get("close_after"))
    if kind == "median":
        return MovingMedian(int(table.get("window", 5)))
    raise ConfigError(f"[alerts] rule = {kind!r}: expected 'k-of-n' or 'median'")


# --------------------------------------------------------------------------- actions
@dataclass
class Notifier:
    """Run alert actions off the scoring thread, retrying failed ones with backoff.

    Parameters
    ----------
    webhooks : list of str
        URLs that get each event as a JSON POST (a 2xx answer counts as delivered).
    command : str, optional
        Shell command run for each event, with the event as JSON on stdin and in
        ``$SOUNDWATCH_EVENT`` (exit status 0 counts as delivered).
    retries : int
        Attempts after the first one.
    backoff : float
        Seconds before the first retry; doubles each time (at most one minute).
    """

    webhooks: list[str] = field(default_factory=list)
    command: str | None = None
    retries: int = 5
    backoff: float = 1.0

    def __post_init__(self) -> None:
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook {url!r}: expected an http:// or https:// URL")
        if self.retries < 0 or self.backoff < 0:
            raise ConfigError("alert retries and backoff must be zero or more")
        self._queue: queue.Queue[tuple[str, Any, dict] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    def notify(self, event: dict) -> None:
        """Log ``event`` now and queue it for every other action (returns at once)."""
        log.warning("ALERT %s", _event_line(event))
        if not (self.webhooks or self.command):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="soundwatch-alerts", daemon=True)
            self._thread.start()
        for url in self.webhooks:
            self._queue.put(("webhook", url, event))
        if self.command:
            self._queue.put(("command", self.command, event))

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; says how
        many notifications were not delivered."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(1.0)
        left = self._queue.qsize()
        if left:
            log.warning("%d alert notification(s) not delivered before shutdown", left)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, target, event = item
            send = _post_json if kind == "webhook" else _run_command
            delay = self.backoff
            for attempt in range(self.retries + 1):
                try:
                    send(target, event)
                    self.delivered += 1
                    break
                except Exception as exc:  # any failure of a receiver is retried
                    last = f"{kind} {target}: {exc}"
                if attempt < self.retries:
                    log.warning("%s; retry %d/%d in %.1f s", last, attempt + 1, self.retries, delay)
                    if self._stop.wait(delay):
                        return
                    delay = min(delay * 2, MAX_BACKOFF_S)
            else:
                self.failed += 1
                log.error("%s; gave up after %d attempt(s)", last, self.retries + 1)


def _post_json(url: str, event: dict) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "soundwatch-monitor"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:
        raise RuntimeError(str(exc.reason)) from exc


def _run_command(command: str, event: dict) -> None:
    payload = json.dumps(event)
    done = subprocess.run(
        command,
        shell=True,
        input=payload,
        text=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
        env={**os.environ, "SOUNDWATCH_EVENT": payload},
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"exit status {done.returncode} {tail[0]}".strip())


def _event_line(event: dict) -> str:
    return f"{event['event']} machine={event.get('machine', '-')} {event.get('reason', '')}"


# --------------------------------------------------------------------------- engine
class AlertEngine:
    """Apply one rule to each machine's results; open and close alerts in the store
    and notify.

    The recent history of each machine is read back from the store the first time the
    machine is seen, so a restarted monitor continues where it stopped.
    """

    def __init__(
        self, rule: KOfN | MovingMedian, notifier: Notifier, store: EventStore | None
    ) -> None:
        self.rule = rule
        self.notifier = notifier
        self.store = store
        self._recent: dict[str, deque] = {}
        self._open: dict[str, int | None] = {}
        self.opened = 0
        self.closed = 0

    def _history(self, machine: str) -> deque:
        if machine not in self._recent:
            recent: deque = deque(maxlen=self.rule.history)
            open_id = None
            if self.store is not None:
                try:
                    recent.extend(
                        r
                        for r in self.store.scores(machine, limit=self.rule.history)
                        if r["decision"] is not None
                    )
                    alerts = self.store.alerts(machine, open_only=True)
                    open_id = next((a["id"] for a in alerts if a["rule"] == self.rule.name), None)
                except StoreError as exc:
                    log.error("error: %s (alert history of %s starts empty)", exc, machine)
            self._recent[machine] = recent
            self._open[machine] = open_id
        return self._recent[machine]

    def prepare(self, machines: Sequence[str]) -> None:
        """Read the history of machines not seen yet from the store; call it before the
        results to be fed are recorded, so that they are not counted twice."""
        for machine in machines:
            self._history(machine)

    def is_open(self, machine: str) -> bool:
        """Whether ``machine`` has an open alert of this rule."""
        self._history(machine)
        return self._open[machine] is not None

    def feed(self, results: Sequence[Any]) -> None:
        """Take results in scoring order (skipped clips are ignored)."""
        for result in results:
            if result.decision is None:
                continue
            machine = result.machine
            recent = self._history(machine)
            recent.append(
                {"decision": result.decision, "score": result.score, "threshold": result.threshold}
            )
            if self._open.get(machine) is None:
                reason = self.rule.opens(list(recent))
                if reason:
                    self._transition(machine, "alert_opened", reason, result)
            else:
                reason = self.rule.closes(list(recent))
                if reason:
                    self._transition(machine, "alert_closed", reason, result)

    def _transition(self, machine: str, kind: str, reason: str, result: Any) -> None:
        now = time.time()
        alert_id: int | None = None
        if kind == "alert_opened":
            self.opened += 1
            if self.store is not None:
                try:
                    alert_id, _ = self.store.open_alert(
                        machine, reason, rule=self.rule.name, at=now
                    )
                except StoreError as exc:
                    log.error("error: %s (alert not stored)", exc)
            self._open[machine] = alert_id if alert_id is not None else -1
        else:
            self.closed += 1
            alert_id = self._open.get(machine)
            if self.store is not None:
                try:
                    self.store.close_alert(machine, rule=self.rule.name, reason=reason, at=now)
                except StoreError as exc:
                    log.error("error: %s (alert closing not stored)", exc)
            self._open[machine] = None
        self.notifier.notify(
            {
                "event": kind,
                "machine": machine,
                "rule": self.rule.describe(),
                "reason": reason,
                "alert_id": alert_id if alert_id and alert_id > 0 else None,
                "time": now,
                "last_clip": str(result.path) if result.path else None,
                "last_score": result.score,
                "threshold": result.threshold,
                "model_digest": result.model_digest,
            }
        )
