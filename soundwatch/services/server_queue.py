"""A bounded queue of clips to score, emptied by worker threads in batches per machine.

The HTTP server puts each upload here and awaits its future, so scoring never runs on
the event loop. The queue holds at most ``capacity`` clips; when it is full,
:meth:`ScoringQueue.submit` raises :class:`QueueFullError` at once (the server answers
503 with ``Retry-After``) instead of letting requests pile up in memory. A worker takes
the oldest clip and up to ``max_batch - 1`` more clips of the same machine, so that under
load one detector call and one store transaction serve many requests.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class QueueFullError(Exception):
    """The queue holds ``capacity`` clips already; the caller should retry later."""


class QueueClosedError(Exception):
    """The queue is shutting down and takes no more clips."""


@dataclass
class Job:
    """One clip waiting to be scored.

    Attributes
    ----------
    machine : str
        Key of the model in the runtime.
    payload : Any
        What the batch function needs for this clip (the server passes an upload).
    future : Future
        Resolved with the batch function's answer for this clip, or its exception.
    """

    machine: str
    payload: Any
    future: Future = field(default_factory=Future)


# Scores a batch of jobs of one machine; returns one answer per job, in order. It may
# raise; the queue then retries the jobs one by one, so that only a bad one fails.
BatchFunction = Callable[[str, Sequence[Job]], Sequence[Any]]


class ScoringQueue:
    """Bounded FIFO of :class:`Job` served by ``workers`` threads.

    Parameters
    ----------
    score_batch : callable ``(machine, jobs) -> answers``
        Runs in a worker thread.
    capacity : int
        Most jobs waiting (not counting those being scored).
    workers : int
        Worker threads.
    max_batch : int
        Most jobs handed to one ``score_batch`` call.
    """

    def __init__(
        self,
        score_batch: BatchFunction,
        *,
        capacity: int = 64,
        workers: int = 1,
        max_batch: int = 16,
    ) -> None:
        if capacity < 1 or workers < 1 or max_batch < 1:
            raise ValueError("capacity, workers and max_batch must be >= 1")
        self._score_batch = score_batch
        self.capacity = capacity
        self.max_batch = max_batch
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"soundwatch-scorer-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting to be scored."""
        return len(self._jobs)

    def submit(self, machine: str, payload: Any) -> Future:
        """Queue one clip; its future resolves to the batch function's answer.

        Raises
        ------
        QueueFullError
            ``capacity`` jobs are waiting already.
        QueueClosedError
            :meth:`close` was called.
        """
        job = Job(machine, payload)
        with self._ready:
            if self._closed:
                raise QueueClosedError("the scoring queue is shutting down")
            if len(self._jobs) >= self.capacity:
                raise QueueFullError(f"{self.capacity} clips are waiting to be scored")
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Take no more jobs, finish the queued ones and stop the workers."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ workers
    def _next_batch(self) -> list[Job] | None:
        """The oldest job and the next jobs of its machine; None once closed and empty."""
        with self._ready:
            while not self._jobs:
                if self._closed:
                    return None
                self._ready.wait()
            first = self._jobs.popleft()
            batch = [first]
            if self.max_batch > 1 and self._jobs:
                rest: deque[Job] = deque()
                while self._jobs:
                    job = self._jobs.popleft()
                    if job.machine == first.machine and len(batch) < self.max_batch:
                        batch.append(job)
                    else:
                        rest.append(job)
                self._jobs = rest
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _run(self, batch: list[Job]) -> None:
        try:
            answers = list(self._score_batch(batch[0].machine, batch))
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for {len(batch)} clips")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            for job in batch:  # only the bad clip should fail
                self._run([job])
            return
        for job, answer in zip(batch, answers, strict=True):
            job.future.set_result(answer)
