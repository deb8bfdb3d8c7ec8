"""Micro-batching: requests that arrive within a short window are merged, and one worker thread runs
Model.predict once over all of them. A network call costs nearly the same for 1 row as for 100, so
under load this multiplies throughput; one worker also keeps torch to one predict at a time. Also the
server-wide allowance of decoded pixels and samples that requests hold while they wait here."""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("lamina.serve")


@dataclass
class Job:
    rows: list  # merged by list concatenation: cheaper than concatenating DataFrames per request
    future: Future = field(default_factory=Future)


class Busy(RuntimeError):
    """The queue of waiting requests is full, or the decoded files of the others fill the allowance."""


class Allowance:
    """Decoded pixels and samples held by all requests together: a request takes its share before
    decoding its files and gives it back once answered, so decoded images waiting in the queue
    cannot add up past the allowance, however many clients send them. A request waits (in its
    decoding thread, never on the event loop) up to `wait_seconds` for room, then gets Busy."""

    def __init__(self, pixels: int, samples: int, wait_seconds: float = 30.0):
        self.capacity = (pixels, samples)
        self.free = [pixels, samples]
        self.wait_seconds = wait_seconds
        self._changed = threading.Condition()

    def take(self, pixels: int, samples: int) -> tuple[int, int]:
        """Holds (pixels, samples), each at most the capacity; returns what to give back."""
        held = (min(pixels, self.capacity[0]), min(samples, self.capacity[1]))
        with self._changed:
            if not self._changed.wait_for(lambda: held[0] <= self.free[0] and held[1] <= self.free[1],
                                          self.wait_seconds):
                raise Busy(f"the files of other requests fill the server's allowance of {self.capacity[0]:,} "
                           f"decoded pixels and {self.capacity[1]:,} samples; retry shortly")
            self.free[0] -= held[0]
            self.free[1] -= held[1]
        return held

    def give(self, held: tuple[int, int]) -> None:
        with self._changed:
            self.free[0] += held[0]
            self.free[1] += held[1]
            self._changed.notify_all()


class Batcher:
    """A queue of prediction jobs and the one thread that serves them. `predict` maps a list of
    rows to a list of predictions, one per row, in order.

    The worker takes the first waiting job and every job already queued behind it, while the merged
    rows stay within `max_rows` (a job larger than that runs on its own); `max_rows=1` turns merging
    off. When the last batch merged several jobs (the server is under concurrent load) it also waits
    up to `wait_seconds` for more to arrive. A lone client never waits: a sleeping thread can take
    far longer than the window to be scheduled again on a busy machine. `calls` counts predict calls.
    """

    def __init__(self, predict: Callable[[list], list], max_rows: int = 256,
                 wait_seconds: float = 0.005, max_waiting: int = 1000):
        self.predict, self.max_rows, self.wait_seconds = predict, max(1, max_rows), max(0.0, wait_seconds)
        self.jobs: queue.Queue = queue.Queue(maxsize=max_waiting)
        self.calls = 0
        self._held: Job | None = None  # a job that did not fit the last batch: it starts the next one
        self._concurrent = False  # the last batch merged several jobs
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lamina-batcher", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def submit(self, rows: list) -> Future:
        """Queue rows for prediction; the future holds their predictions (a list) or the error."""
        job = Job(rows)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self.jobs.maxsize} requests are already waiting; retry shortly") from None
        return job.future

    def _next(self, timeout: float) -> Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        try:
            return self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()
        except queue.Empty:
            return None

    def _collect(self, first: Job) -> list[Job]:
        group, rows = [first], len(first.rows)
        deadline = time.monotonic() + (self.wait_seconds if self._concurrent else 0.0)
        while rows < self.max_rows:
            job = self._next(deadline - time.monotonic())
            if job is None:
                break
            if rows + len(job.rows) > self.max_rows:
                self._held = job
                break
            group.append(job)
            rows += len(job.rows)
        self._concurrent = len(group) > 1
        return group

    def _run(self) -> None:
        while not self._stopping.is_set():
            first = self._next(0.1)  # wakes up now and then to notice stop()
            if first is not None:
                self._serve(self._collect(first))

    def _serve(self, group: list[Job]) -> None:
        live = [job for job in group if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            self.calls += 1
            predictions = self.predict([row for job in live for row in job.rows])
        # the worker must outlive any error: it is handed to the waiting request(s), never raised here
        except Exception as error:  # noqa: BLE001
            if len(live) > 1:  # one bad request must not fail its neighbours: predict each alone
                for job in live:
                    self._retry_alone(job)
                return
            live[0].future.set_exception(error)
            return
        start = 0
        for job in live:
            job.future.set_result(predictions[start:start + len(job.rows)])
            start += len(job.rows)

    def _retry_alone(self, job: Job) -> None:
        try:
            self.calls += 1
            job.future.set_result(self.predict(job.rows))
        except Exception as error:  # noqa: BLE001 (as in _serve: handed to the request)
            job.future.set_exception(error)
