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
SMALL_ROWS = 8  # by default a job of at most this many rows may be predicted by the request's thread (run_now)
SMALL_SECONDS = 0.005  # ... when such a predict has taken at most this long (a small, fast model)


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

    `run_now` lets the caller predict a small job itself when nothing else is waiting or running: a lone
    client's request then costs no hand-over to the worker thread and back (two wake-ups, each of which
    waits for a core on a busy machine). A lock keeps it and the worker to one predict at a time.
    """

    def __init__(self, predict: Callable[[list], list], max_rows: int = 256,
                 wait_seconds: float = 0.005, max_waiting: int = 1000, inline_rows: int = SMALL_ROWS):
        self.predict, self.max_rows, self.wait_seconds = predict, max(1, max_rows), max(0.0, wait_seconds)
        self.inline_rows = min(inline_rows, SMALL_ROWS)  # run_now takes jobs of at most this many rows (0: none)
        self.jobs: queue.Queue = queue.Queue(maxsize=max_waiting)
        self.calls = 0
        self._predicting = threading.Lock()  # held by whoever runs predict: the worker or run_now's caller
        self.small_seconds = float("inf")  # the shortest predict of at most SMALL_ROWS rows so far
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

    def run_now(self, rows: list) -> list | None:
        """The predictions of `rows`, computed by the caller, when no job is queued and the worker is not
        predicting; else None (submit them). Errors are raised to the caller."""
        if len(rows) > self.inline_rows or self.small_seconds > SMALL_SECONDS or not self.jobs.empty() or \
                self._held is not None or not self._predicting.acquire(blocking=False):
            return None
        try:
            return self._timed(rows)
        finally:
            self._predicting.release()

    def _timed(self, rows: list) -> list:
        """predict(rows), counted, and timed when the job is small (run_now's test of a fast model: the
        shortest time so far, which a moment of load on the machine does not raise)."""
        self.calls += 1
        started = time.perf_counter()
        predictions = self.predict(rows)
        if len(rows) <= SMALL_ROWS:
            self.small_seconds = min(self.small_seconds, time.perf_counter() - started)
        return predictions

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
            with self._predicting:
                predictions = self._timed([row for job in live for row in job.rows])
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
            with self._predicting:
                predictions = self._timed(job.rows)
            job.future.set_result(predictions)
        except Exception as error:  # noqa: BLE001 (as in _serve: handed to the request)
            job.future.set_exception(error)
