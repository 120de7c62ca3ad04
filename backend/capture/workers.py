"""Batch capture's worker processes: decode + detect + track + crop of one clip at a time in each of ``--jobs N``
processes, feeding the networks in the main process.

Why processes: decoding and the Face Landmarker are the open model's whole cost (its networks are only the small
emotion net), and they hold the GIL or their own threads for most of a frame; N processes run N clips' front ends
at once. A crash in a decoder takes down one worker, not the batch: its clip fails with ``worker_lost`` and a new
worker takes its place.

The worker side (:func:`worker_main`) runs the same loop as a single capture's reader thread
(backend.capture.reader.read_items) and sends each clip's messages, tagged with the task's serial number, on its
own bounded queue (the networks' pace holds it back): ``open`` (the footage's info, the detector's kind), ``warn``,
``frame`` (a FrameItem), then one final message: ``end`` (the tracks, the frames skipped, timings), ``error`` (an
EmocaError as a dict) or ``stopped`` (after a stop). The main side (:class:`RemoteFrontEnd`) is a
backend.capture.reader.FrontEnd: the capture pipeline runs unchanged on top of it.

Conventions: processes are started with ``spawn`` (the main process has torch and threads; ``fork`` would copy
them half-initialised); workers ignore SIGINT (Ctrl-C reaches the main process, which stops them) and leave when
their parent is gone. Nothing here touches torch.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.capture.reader import END, LocalFrontEnd, read_items
from emoca_contract.errors import EmocaError

# FrameItems a worker may be ahead of the networks (each about 160 kB: a 224x224 crop, 478 landmarks)
WORKER_QUEUE_ITEMS = 64
# How long a stopped worker may take to finish its frame before it is killed (and replaced)
STOP_GRACE_S = 10.0
POLL_S = 0.1
FINAL = ("end", "error", "stopped")


@dataclass(frozen=True)
class Task:
    """One clip for a worker: the front end's inputs (everything else stays in the main process)."""

    serial: int
    input: str
    frames: Any  # backend.footage.video.FrameRange
    detector: str


# ---------------------------------------------------------------------------------------------------------------
# the worker process


def error_payload(exc: BaseException) -> dict:
    """An exception as the dict an ``error`` message carries (EmocaError's own; anything else is ``internal``)."""
    if isinstance(exc, EmocaError):
        return exc.to_dict()
    return {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "hint": None}


class _Sender:
    """Puts one task's messages on the worker's result queue, giving up when the clip is stopped or the parent
    process is gone (a final message waits for room until then)."""

    def __init__(self, results: Any, stop_clip: Any, serial: int, parent: int):
        self.results, self.stop_clip, self.serial, self.parent = results, stop_clip, serial, parent

    def warn(self, message: str) -> None:
        self.send("warn", message)

    def send(self, kind: str, payload: Any = None, final: bool = False) -> bool:
        while os.getppid() == self.parent and (final or not self.stop_clip.is_set()):
            try:
                self.results.put((self.serial, kind, payload), timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False


def run_task(task: Task, results: Any, stop_clip: Any, parent: int) -> None:
    """One clip's front end in this worker: messages ``open``, ``warn``, ``frame``..., then one final message."""
    out = _Sender(results, stop_clip, task.serial, parent)
    try:
        front = LocalFrontEnd(task.input, task.frames, task.detector, out.warn)
    except BaseException as exc:
        out.send("error", error_payload(exc), final=True)
        return
    try:
        out.send("open", (front.info, front.detector_kind))
        stats: dict = {}
        for item in read_items(front.footage, front.detector, front.tracker, stats):
            if stop_clip.is_set() or not out.send("frame", item):
                out.send("stopped", final=True)
                return
        end = {"summary": front.summary(), "n_errors": front.n_errors, "stats": stats}
        out.send("end", end, final=True)
    except BaseException as exc:
        if not isinstance(exc, EmocaError):
            traceback.print_exc(file=sys.stderr)
        out.send("error", error_payload(exc), final=True)
    finally:
        front.close()


def worker_main(tasks: Any, results: Any, stop_clip: Any, parent: int) -> None:
    """A worker process: run tasks until a None task, or until the parent process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    while os.getppid() == parent:
        try:
            task = tasks.get(timeout=0.5)
        except queue.Empty:
            continue
        if task is None:
            return
        run_task(task, results, stop_clip, parent)


# ---------------------------------------------------------------------------------------------------------------
# the main side


class Worker:
    """One worker process and its queues (tasks in, messages out, a stop flag for the clip it reads)."""

    def __init__(self, ctx: Any, number: int):
        self.tasks = ctx.Queue()
        self.results = ctx.Queue(maxsize=WORKER_QUEUE_ITEMS)
        self.stop_clip = ctx.Event()
        self.process = ctx.Process(
            target=worker_main,
            args=(self.tasks, self.results, self.stop_clip, os.getpid()),
            name=f"capture-worker-{number}",
            daemon=True,
        )
        self.process.start()
        self.serial = 0

    def alive(self) -> bool:
        return self.process.is_alive()

    def exit_text(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "it stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def kill(self) -> None:
        """End the process now (it may be stuck in a decoder) and let go of its queues."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5.0)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()

    def close(self) -> None:
        """Ask an idle worker to leave; kill it when it does not."""
        if self.process.is_alive():
            self.tasks.put(None)
            self.process.join(timeout=2.0)
        self.kill()


class WorkerPool:
    """``n`` worker processes, each lent to one clip at a time (:meth:`acquire` / :meth:`release`); a worker
    that died or did not finish its clip cleanly is replaced by a new one."""

    def __init__(self, n: int):
        self.ctx = multiprocessing.get_context("spawn")
        self.idle: queue.Queue[Worker] = queue.Queue()
        self.lock = threading.Lock()
        self.made = 0
        self.closed = False
        self.workers: list[Worker] = []
        for _ in range(max(1, int(n))):
            self.idle.put(self._spawn())

    def _spawn(self) -> Worker:
        with self.lock:
            self.made += 1
            w = Worker(self.ctx, self.made)
            self.workers.append(w)
            return w

    def acquire(self, cancel: threading.Event) -> Worker:
        """An idle worker (waits for one); EmocaError cancelled when ``cancel`` is set meanwhile."""
        while True:
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
            try:
                w = self.idle.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if w.alive():
                return w
            self._retire(w)
            self.idle.put(self._spawn())

    def release(self, w: Worker, clean: bool) -> None:
        """Give ``w`` back: kept when it finished its clip cleanly and lives, else killed and replaced."""
        if clean and w.alive() and not self.closed:
            self.idle.put(w)
            return
        self._retire(w)
        if not self.closed:
            self.idle.put(self._spawn())

    def _retire(self, w: Worker) -> None:
        w.kill()
        with self.lock:
            if w in self.workers:
                self.workers.remove(w)

    def close(self) -> None:
        """End every worker (idle ones are asked; busy ones should have been released first)."""
        self.closed = True
        with self.lock:
            workers = list(self.workers)
            self.workers.clear()
        for w in workers:
            w.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteFrontEnd:
    """A clip's front end in a worker process, as the capture pipeline sees it (backend.capture.reader.FrontEnd).

    Opening sends the task and waits for the worker's ``open`` (footage errors come back as the same EmocaError a
    single capture raises); :meth:`start` runs a pump thread moving the worker's FrameItems into the pipeline's
    queue; a stop (cancel, an error downstream) is passed on to the worker, and the worker is given back to the
    pool once its clip's final message came (else killed and replaced)."""

    def __init__(self, pool: WorkerPool, worker: Worker, task: Task, warn: Callable[[str], None]):
        self.pool, self.worker, self.task, self.warn = pool, worker, task, warn
        self.info: Any = None
        self.detector_kind = ""
        self.finished = False  # the task's final message arrived: the worker is free for the next clip
        self.gave_up = False  # a stop was not answered within STOP_GRACE_S: the worker is replaced
        self._error: BaseException | None = None
        self._summary: list = []
        self._n_errors = 0
        self._pump: threading.Thread | None = None

    @classmethod
    def open(cls, pool: WorkerPool, task: Task, warn: Callable[[str], None], cancel: threading.Event) -> RemoteFrontEnd:
        """Lend a worker the clip and wait for its footage to open; raises the worker's error (input_*), or
        cancelled, or worker_lost. The worker is given back when this raises."""
        worker = pool.acquire(cancel)
        worker.stop_clip.clear()  # the previous clip ended with its final message: the flag is ours to reset
        worker.serial = task.serial
        front = cls(pool, worker, task, warn)
        try:
            worker.tasks.put(task)
            front._wait_open(cancel)
        except BaseException:
            front._stop_worker()
            front.close()
            raise
        return front

    def _wait_open(self, cancel: threading.Event) -> None:
        while self.info is None:
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
            msg = self._next()
            if msg is None:
                continue
            kind, payload = msg
            if kind == "open":
                self.info, self.detector_kind = payload
            elif kind == "warn":
                self.warn(payload)
            elif kind in FINAL:
                self._final(kind, payload, {})
                raise self._error or EmocaError("internal", f"{self.task.input}: the worker stopped before opening")

    def _next(self) -> tuple[str, Any] | None:
        """The worker's next message for this task (None after POLL_S without one); worker_lost when it died."""
        try:
            serial, kind, payload = self.worker.results.get(timeout=POLL_S)
        except queue.Empty:
            if self.worker.alive():
                return None
            try:  # what it sent before it died is still in the pipe
                serial, kind, payload = self.worker.results.get(timeout=POLL_S)
            except (queue.Empty, OSError, EOFError):
                raise self._lost() from None
        return (kind, payload) if serial == self.task.serial else None

    def _lost(self) -> EmocaError:
        return EmocaError(
            "worker_lost",
            f"{self.task.input}: the worker process reading this clip died ({self.worker.exit_text()})",
        )

    def _final(self, kind: str, payload: Any, stats: dict) -> None:
        self.finished = True
        if kind == "end":
            self._summary, self._n_errors = payload["summary"], int(payload["n_errors"])
            stats.update(payload["stats"])
        elif kind == "error":
            self._error = EmocaError.from_dict(payload)

    # -- FrontEnd ---------------------------------------------------------------------------------------------
    @property
    def n_errors(self) -> int:
        return self._n_errors

    @property
    def error(self) -> BaseException | None:
        return self._error

    def summary(self) -> list:
        return self._summary

    def start(self, out: queue.Queue, stops: tuple[threading.Event, ...], stats: dict) -> None:
        self._pump = threading.Thread(target=self._run_pump, args=(out, stops, stats), name="capture-pump", daemon=True)
        self._pump.start()

    def _run_pump(self, out: queue.Queue, stops: tuple[threading.Event, ...], stats: dict) -> None:
        """Move the worker's frames into ``out`` until its final message; on a stop, pass it on and wait for the
        worker to end its clip (killed after STOP_GRACE_S)."""
        deadline: float | None = None

        def stopped() -> bool:
            return any(e.is_set() for e in stops)

        try:
            while not self.finished:
                if deadline is None and stopped():
                    self.worker.stop_clip.set()
                    deadline = time.monotonic() + STOP_GRACE_S
                if deadline is not None and time.monotonic() > deadline:
                    self.gave_up = True  # close() replaces the worker
                    return
                msg = self._next()
                if msg is None:
                    continue
                kind, payload = msg
                if kind == "frame" and deadline is None:
                    _put(out, payload, stopped)
                elif kind == "warn":
                    self.warn(payload)
                elif kind in FINAL:
                    self._final(kind, payload, stats)
        except BaseException as exc:  # worker_lost: handed to the pipeline after END
            self._error = exc
        finally:
            _put(out, END, stopped)

    def stop(self, out: queue.Queue) -> None:
        """Wait for the pump to end, draining ``out`` so that a blocked put returns."""
        pump = self._pump
        while pump is not None and pump.is_alive():
            try:
                out.get(timeout=0.05)
            except queue.Empty:
                pass
            pump.join(timeout=0.05)

    def _stop_worker(self) -> None:
        """Ask the worker to end this clip and wait (a while) for its final message."""
        self.worker.stop_clip.set()
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            while not self.finished and time.monotonic() < deadline:
                msg = self._next()
                if msg is not None and msg[0] in FINAL:
                    self._final(msg[0], msg[1], {})
        except EmocaError:  # it died meanwhile: close() replaces it
            pass
        self.gave_up = not self.finished

    def close(self) -> None:
        if not self.finished and not self.gave_up and self.worker.alive():
            self._stop_worker()
        self.pool.release(self.worker, clean=self.finished)


def _put(out: queue.Queue, item: object, stopped: Callable[[], bool]) -> None:
    while not stopped():
        try:
            out.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


def remote_front_ends(pool: WorkerPool, cancel: threading.Event) -> Callable[..., RemoteFrontEnd]:
    """A FrontEndFactory (backend.capture.reader) that opens each clip in a worker of ``pool``."""
    serials = iter(range(1, 1 << 62))
    lock = threading.Lock()

    def open_front(input_path: Any, frames: Any, detector: str, warn: Callable[[str], None]) -> RemoteFrontEnd:
        with lock:
            serial = next(serials)
        return RemoteFrontEnd.open(pool, Task(serial, str(input_path), frames, str(detector)), warn, cancel)

    return open_front
