"""Batch capture on a Ray cluster (``capture --ray [ADDRESS]``): the clips fanned out to Ray actors, each holding
its networks for many clips.

Roles. The driver (this process) expands the clips (backend.capture.manifest), skips the complete ones
(backend.capture.batch.complete_takes), takes each clip's output lock (backend.capture.output: one batch, or one
capture, per output at a time) and hands one clip at a time to each idle :class:`CaptureWorker` actor. An actor runs
backend.capture.batch.run_clip, exactly what an in-process batch runs for a clip, into a folder of its own
machine, then either puts the takes in place in the output folder itself (the default: the output folder is on a
file system every machine shares) or returns their bytes to the driver, which puts them in place
(``return_takes``: ``--ray-return``, for nodes without the shared folder). A take is put in place whole
(written beside, then renamed), so the output never holds half a take.

Failures. A clip's own failure (no face, corrupt footage) is its ClipResult, never retried. A worker that dies
(a crash, out of memory, a lost node) is restarted by Ray (``max_restarts``) and its clip retried
(``max_task_retries`` = ``retries``); a clip that keeps killing its worker is reported as ``worker_lost``, and
the other clips go on.

Cancel. ``cancel`` (Ctrl-C, the protocol's ``cancel``) is passed to every actor through a method in a separate
concurrency group (it runs while the capture does), which sets the actor's cancel event: each clip in flight
stops within a second and leaves nothing at the output (backend.capture.pipeline's guarantee); actors that do not
answer within CANCEL_GRACE_S are killed.

Resources. Each actor asks for ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (fractions share a GPU:
0.25 = four actors on one GPU, each with its own copy of the networks); an actor without a GPU hides the GPUs
from torch (so ``device auto`` is the CPU there). The number of actors is ``workers``, else what the cluster's
resources hold, at most one per clip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from backend.capture.batch import (
    BatchReport,
    ClipResult,
    NetworkCache,
    complete_takes,
    failed,
    run_clip,
    skipped,
)
from backend.capture.manifest import ClipJob
from backend.capture.options import Warn
from backend.capture.output import OutputLock, acquire_lock, check_output, make_folders
from backend.capture.pipeline import run_meta
from emoca_contract.errors import EmocaError

# an actor that has not ended its clip this long after a cancel is killed
CANCEL_GRACE_S = 15.0
POLL_S = 0.2
LOCAL = "local"  # the ADDRESS word for a Ray started here, for this batch only


@dataclass
class RayOptions:
    """How the clips run on Ray. ``address``: None or "local" (start Ray here for this batch), "auto" (the cluster
    this machine belongs to: ``ray start``), or a cluster's address (``HOST:6379``).
    ``init``: more keyword arguments for ``ray.init`` when it starts Ray here (``num_cpus``)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    retries: int = 2
    return_takes: bool = False
    overwrite: bool = False
    init: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# the actor


def put_in_place(data: bytes | Path, dst: Path) -> Path:
    """A finished take (its bytes, or a file) at ``dst``, whole: written to a hidden file beside it, then renamed
    over it (a take already there is replaced at once, never half)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{socket.gethostname()}.{os.getpid()}.placing")
    try:
        if isinstance(data, Path):
            shutil.copyfile(data, tmp)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


class CaptureWorkerImpl:
    """A Ray actor's state: its networks (loaded by the first clip that needs them, kept for the next ones), its
    cancel event, and where it runs. Ray's decorator is applied below (:data:`CaptureWorker`)."""

    def __init__(self, has_gpu: bool):
        if not has_gpu:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: a CPU worker leaves the GPUs alone
        self.networks = NetworkCache()
        self.cancel = threading.Event()
        self.actor = ray.get_runtime_context().get_actor_id() or ""

    def capture(self, job: ClipJob, return_takes: bool) -> dict[str, Any]:
        """Capture one clip into a folder of this machine, then put its takes in place (or return their bytes):
        ``{"result": ClipResult as a dict, "data": {take name: bytes}}``."""
        self.cancel.clear()
        final = Path(job.output).parent
        with tempfile.TemporaryDirectory(prefix="emoca-ray-") as tmp:
            local = replace(job, output=str(Path(tmp) / Path(job.output).name))
            result = run_clip(local, self.networks, self.cancel, True, run=run_meta("ray", f"actor {self.actor[:12]}"))
            result.output = job.output
            made = [Path(p) for p in result.takes]
            result.takes = [str(final / p.name) for p in made]
            data = {p.name: p.read_bytes() for p in made} if return_takes else {}
            if not return_takes:
                for p in made:
                    put_in_place(p, final / p.name)
        return {"result": result.to_dict(), "data": data}

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        """Cancel the clip in flight (runs in its own concurrency group, beside the capture)."""
        self.cancel.set()

    @ray.method(concurrency_group="control")
    def where(self) -> dict[str, Any]:
        """This actor's host and process id."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "actor": self.actor}


# the "control" group runs stop() and where() while capture() is busy in the default group
CaptureWorker = ray.remote(concurrency_groups={"control": 1})(CaptureWorkerImpl)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------------------------
# the driver


def start_ray(options: RayOptions) -> bool:
    """Connect to (or start) Ray as ``options.address`` says; True when this call started or joined it (and the
    batch should shut it down after), False when this process was connected already."""
    if ray.is_initialized():
        return False
    address = None if options.address in (None, "", LOCAL) else options.address
    # the workers import this project: give them this checkout when they run on this machine's file system
    root = str(Path(__file__).resolve().parents[2])
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}}
    kwargs: dict[str, Any] = dict(options.init) if address is None else {}
    try:
        ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EmocaError(
            "config_invalid",
            f"--ray {options.address}: cannot reach the Ray cluster ({exc})",
            "Start the head with `ray start --head` on it and give its address (HOST:6379), 'auto' on a node of it, "
            "or --ray alone for a Ray on this machine only (docs/capture.md, 'A cluster through Ray').",
        ) from None
    return True


def worker_count(options: RayOptions, n_clips: int) -> int:
    """Actors to start: ``options.workers``, else as many as the cluster's CPUs (and GPUs) hold; at most one per
    clip, at least one."""
    if options.workers:
        return max(1, min(int(options.workers), n_clips))
    res = ray.cluster_resources()
    fits = int(res.get("CPU", 1) // max(options.cpus_per_worker, 1e-6))
    if options.gpus_per_worker > 0:
        fits = min(fits, int(res.get("GPU", 0) // options.gpus_per_worker))
    return max(1, min(fits, n_clips))


def make_worker(options: RayOptions) -> Any:
    """A CaptureWorker actor: restarted whenever it dies, its clip retried ``options.retries`` times."""
    return CaptureWorker.options(
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker,
        max_restarts=-1,
        max_task_retries=max(0, int(options.retries)),
    ).remote(options.gpus_per_worker > 0)


def claim(job: ClipJob) -> OutputLock:
    """The clip's output checked, its folder made and its lock taken (held by the driver while a worker captures
    it: another batch or capture of the same output is refused, output_busy)."""
    target = check_output(job.output, job.input, job.options.preview, job.options.plot)
    make_folders(target.parent, target)
    return acquire_lock(target, job.input)


def lost(job: ClipJob, exc: BaseException, retries: int) -> ClipResult:
    """A clip whose worker kept dying: worker_lost, with Ray's reason."""
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    message = f"{job.input}: the Ray worker capturing this clip died, and again on each of {retries} retries ({reason})"
    return failed(job, EmocaError("worker_lost", message))


@dataclass
class Flight:
    """A clip in flight: its index, the actor capturing it, the lock held on its output."""

    index: int
    actor: Any
    lock: OutputLock


class RayBatch:
    """One batch on Ray: the driver's loop (module docstring). ``run()`` returns the BatchReport."""

    def __init__(
        self,
        jobs: list[ClipJob],
        options: RayOptions,
        on_clip: Callable[[int, ClipResult], None] | None = None,
        cancel: threading.Event | None = None,
        warn: Warn | None = None,
    ):
        self.jobs, self.options, self.on_clip, self.warn = jobs, options, on_clip, warn
        self.cancel = cancel or threading.Event()
        self.results: list[ClipResult | None] = [None] * len(jobs)
        self.actors: list[Any] = []
        self.flights: dict[Any, Flight] = {}  # ObjectRef -> Flight

    def _done(self, i: int, result: ClipResult) -> None:
        self.results[i] = result
        if self.on_clip is not None:
            self.on_clip(i, result)

    def _todo(self) -> list[int]:
        """The clips to capture; the complete ones are reported skipped at once (unless overwrite)."""
        todo = []
        for i, job in enumerate(self.jobs):
            t0 = time.perf_counter()
            done = None if self.options.overwrite else complete_takes(job)
            if done is None:
                todo.append(i)
            else:
                self._done(i, skipped(job, done, time.perf_counter() - t0))
        return todo

    def _submit(self, i: int, actor: Any) -> bool:
        """Hand clip ``i`` to ``actor``; False (the clip reported failed) when its output cannot be claimed."""
        job = self.jobs[i]
        try:
            lock = claim(job)
        except EmocaError as exc:
            self._done(i, failed(job, exc))
            return False
        ref = actor.capture.remote(job, self.options.return_takes)
        self.flights[ref] = Flight(i, actor, lock)
        return True

    def _land(self, ref: Any) -> Any:
        """A finished clip: its result recorded (the returned takes put in place), its lock released; returns the
        actor, free again."""
        flight = self.flights.pop(ref)
        job = self.jobs[flight.index]
        try:
            out = ray.get(ref)
            result = ClipResult(**out["result"])
            for name, data in out["data"].items():
                put_in_place(data, Path(job.output).parent / name)
        except ray.exceptions.RayActorError as exc:
            result = lost(job, exc, self.options.retries)
        except ray.exceptions.RayError as exc:  # the actor could not run the method at all (a bug, an import)
            result = failed(job, EmocaError("internal", f"{job.input}: the Ray worker failed: {exc}"))
        except OSError as exc:  # the driver could not put a returned take in place
            result = failed(job, EmocaError("output_unwritable", f"{job.output}: {exc}"))
        finally:
            flight.lock.release()
        self._done(flight.index, result)
        return flight.actor

    def run(self) -> BatchReport:
        t0 = time.perf_counter()
        started = start_ray(self.options)
        interrupted = False
        try:
            todo = self._todo()
            if todo:
                interrupted = self._fan_out(todo)
        finally:
            self._stop_all()
            if started:
                ray.shutdown()
        clips = [
            r if r is not None else failed(j, EmocaError("cancelled", "batch cancelled"))
            for r, j in zip(self.results, self.jobs)
        ]
        cancelled = self.cancel.is_set() or interrupted
        return BatchReport(clips, "ray", max(1, len(self.actors)), time.perf_counter() - t0, cancelled)

    def _fan_out(self, todo: list[int]) -> bool:
        """Keep every actor busy with one clip until all are done or the batch is cancelled; True on Ctrl-C."""
        self.actors = [make_worker(self.options) for _ in range(worker_count(self.options, len(todo)))]
        idle = list(self.actors)
        interrupted = False
        while (todo or self.flights) and not self.cancel.is_set():
            try:
                while todo and idle and not self.cancel.is_set():
                    i = todo.pop(0)
                    if self._submit(i, idle[0]):
                        idle.pop(0)
                ready, _ = ray.wait(list(self.flights), num_returns=1, timeout=POLL_S) if self.flights else ([], [])
                idle.extend(self._land(ref) for ref in ready)
            except KeyboardInterrupt:
                self.cancel.set()
                interrupted = True
        if self.flights:
            self._cancel_flights()
        return interrupted

    def _cancel_flights(self) -> None:
        """Cancel reaches every worker: each stops its clip (nothing left at the output) and reports 'cancelled';
        one that does not answer in CANCEL_GRACE_S is killed (its clip reported cancelled)."""
        for actor in {id(f.actor): f.actor for f in self.flights.values()}.values():
            actor.stop.remote()
        deadline = time.monotonic() + CANCEL_GRACE_S
        while self.flights and time.monotonic() < deadline:
            ready, _ = ray.wait(list(self.flights), num_returns=len(self.flights), timeout=POLL_S)
            for ref in ready:
                self._land(ref)
        for ref, flight in list(self.flights.items()):
            ray.kill(flight.actor, no_restart=True)
            flight.lock.release()
            self.flights.pop(ref)
            self._done(flight.index, failed(self.jobs[flight.index], EmocaError("cancelled", "batch cancelled")))

    def _stop_all(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        for flight in self.flights.values():
            flight.lock.release()
        self.flights.clear()


def run_ray_batch(
    jobs: list[ClipJob],
    options: RayOptions | None = None,
    on_clip: Callable[[int, ClipResult], None] | None = None,
    cancel: threading.Event | None = None,
    warn: Warn | None = None,
) -> BatchReport:
    """Capture ``jobs`` on Ray (module docstring); returns the report, as backend.capture.batch.run_batch does."""
    return RayBatch(jobs, options or RayOptions(), on_clip, cancel, warn).run()
