"""Batch capture: many clips in one process, the networks loaded once, decode + detect + crop in ``--jobs N``
worker processes (backend.capture.workers), one report.

For each clip (backend.capture.manifest.ClipJob), :func:`run_clip`: skip it when its take is already complete
(:func:`complete_takes`: a readable take whose ``meta.source`` is this clip, unchanged since, and whose
``meta.options`` are this clip's options; ``overwrite`` redoes it), else capture it with
backend.capture.pipeline.capture (every safety of a single capture holds: its own lock and work folder, nothing
replaced until the takes are complete) on networks shared through a :class:`NetworkCache`. A clip's failure is
its :class:`ClipResult` (the error's code and message), never the batch's: the others go on. Ray workers run the
same :func:`run_clip` (backend.capture.ray_backend).

Determinism: every clip goes through the same front end loop and the same per-clip network batches whichever way
it runs (a single capture, ``--jobs N``, a Ray worker), so its take's arrays are the same; only ``meta.created``
and ``meta.run`` (where it ran) differ.

Concurrency: ``jobs`` clips are in flight at once, one thread each here (the pipeline's batcher, finalisation and
writing), each with one worker process reading its footage; their network passes take turns on the one network
thread (backend.capture.networks).
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.capture.manifest import ClipJob
from backend.capture.networks import Loaded, load_networks
from backend.capture.options import (
    CaptureOptions,
    Progress,
    Warn,
    capture_kind,
    decisive_options,
    network_key,
    parse_face,
    resolve_device,
)
from backend.capture.output import same_file
from backend.capture.pipeline import capture, run_meta, source_stamp
from backend.capture.reader import FrontEndFactory
from backend.capture.workers import WorkerPool, remote_front_ends
from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

STATUSES = ("done", "skipped", "failed", "cancelled")
# clip progress: (clip index, done, total, stage, fps, eta)
ClipProgress = Callable[[int, int, int, str, float | None, float | None], None]


def core_count() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_jobs(options: CaptureOptions, n_clips: int) -> int:
    """Worker processes when ``--jobs`` is not given: one per core, at most one per clip; one core fewer for an
    EMOCA model on the CPU (its networks run in this process and need a core of their own)."""
    cores = core_count()
    heavy_here = capture_kind(options) == "flame" and resolve_device(options.device) == "cpu"
    return max(1, min(n_clips, cores - 1 if heavy_here and cores > 1 else cores))


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class ClipResult:
    """One clip's outcome: what the report lists."""

    name: str
    input: str
    output: str
    status: str  # one of STATUSES
    takes: list[str] = field(default_factory=list)
    frames: int = 0  # rows of the take (skipped: of the existing take)
    faces: int = 0  # faces encoded (skipped: valid rows of the existing takes)
    fps: float | None = None  # frames / seconds of this clip's capture (None when skipped or failed)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: dict | None = None  # {"code", "message", "hint"} of a failure
    worker: str | None = None  # where it ran (host, process; the Ray actor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed(job: ClipJob, exc: EmocaError, seconds: float = 0.0, warnings: list[str] | None = None) -> ClipResult:
    """The result of a clip that raised ``exc`` (status "cancelled" for a cancel)."""
    status = "cancelled" if exc.code == "cancelled" else "failed"
    return ClipResult(
        job.name, job.input, job.output, status, seconds=seconds, warnings=list(warnings or []), error=exc.to_dict()
    )


@dataclass
class BatchReport:
    """The batch's outcome: one ClipResult per clip, in the order they were given."""

    clips: list[ClipResult]
    engine: str = "batch"  # "batch" (worker processes here) or "ray"
    jobs: int = 1
    seconds: float = 0.0
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)  # warnings of the batch as a whole (network fallbacks)

    def count(self, status: str) -> int:
        return sum(1 for c in self.clips if c.status == status)

    @property
    def ok(self) -> bool:
        """Every clip done or skipped."""
        return all(c.status in ("done", "skipped") for c in self.clips)

    def files(self) -> list[str]:
        """Every take the batch stands for (written now or skipped as complete)."""
        return [t for c in self.clips for t in c.takes]

    def to_dict(self) -> dict[str, Any]:
        totals = {s: self.count(s) for s in STATUSES}
        totals.update(clips=len(self.clips), frames=sum(c.frames for c in self.clips if c.status == "done"))
        return {
            "engine": self.engine,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 3),
            "cancelled": self.cancelled,
            "totals": totals,
            "notes": list(self.notes),
            "clips": [c.to_dict() for c in self.clips],
        }

    def write(self, path: str | os.PathLike) -> Path:
        """The report as JSON at ``path`` (written whole: a temporary file renamed)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        return out

    def table(self) -> str:
        """The summary a terminal shows: one line per clip, then the totals."""
        rows = [("clip", "status", "frames", "faces", "fps", "warnings", "error")]
        for c in self.clips:
            fps = f"{c.fps:.1f}" if c.fps else "-"
            err = f"[{c.error['code']}] {c.error['message']}" if c.error else ""
            rows.append((c.name, c.status, str(c.frames), str(c.faces), fps, str(len(c.warnings)), err))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["  ".join(r[i].ljust(widths[i]) if i < 2 else r[i].rjust(widths[i]) for i in range(6)) + "  " + r[6]
                 for r in rows]  # fmt: skip
        totals = ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s))
        lines.append(f"{len(self.clips)} clips: {totals} ({self.seconds:.1f} s, {self.engine}, {self.jobs} jobs)")
        return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# complete takes (resume)


def existing_takes(job: ClipJob) -> list[Path]:
    """The take files at the clip's output: ``<name>.npz``, or with face 'all' every ``<name>_track<id>.npz``."""
    target = Path(job.output)
    if parse_face(job.options.face) != "all":
        return [target] if target.is_file() else []
    pattern = re.compile(re.escape(target.stem) + r"_track\d+\.npz")
    found = glob.glob(glob.escape(str(target.with_name(target.stem))) + "_track*.npz")
    return sorted(Path(p) for p in found if pattern.fullmatch(Path(p).name))


def take_matches(meta: dict, job: ClipJob, kind: str) -> bool:
    """Whether a take's meta says it is this clip's capture: the same footage (and unchanged: size, modification
    time), the same options that decide its contents (backend.capture.options.decisive_options), the same kind."""
    source = meta.get("source") or {}
    wanted = json.loads(json.dumps(decisive_options(job.options)))  # as the take stores them (lists, not tuples)
    stamp = source_stamp(Path(job.input))
    return (
        meta.get("kind") == kind
        and meta.get("options") == wanted
        and isinstance(source.get("path"), str)
        and same_file(source["path"], job.input)
        and all(source.get(k) == v for k, v in stamp.items())
    )


def complete_takes(job: ClipJob) -> list[Path] | None:
    """The clip's takes when they are complete (every one readable and matching: :func:`take_matches`), else
    None (missing, damaged, another clip's or other options': capture it again)."""
    paths = existing_takes(job)
    if not paths:
        return None
    kind = capture_kind(job.options)
    for p in paths:
        try:
            take = read_take(p)
        except EmocaError:
            return None
        if not take_matches(take.meta, job, kind):
            return None
    return paths


def skipped(job: ClipJob, paths: list[Path], seconds: float) -> ClipResult:
    """The result of a clip whose takes were already complete (frames and faces: theirs)."""
    takes = [read_take(p) for p in paths]
    return ClipResult(
        job.name,
        job.input,
        job.output,
        "skipped",
        takes=[str(p) for p in paths],
        frames=max(t.n_frames for t in takes),
        faces=sum(int(t["valid"].sum()) for t in takes),
        seconds=seconds,
    )


# ---------------------------------------------------------------------------------------------------------------
# networks, once


class NetworkCache:
    """Loaded networks shared by the clips of a batch: one load per backend.capture.options.network_key (clips
    of a manifest may ask for different models), each loaded by the first clip that needs it while the others
    needing it wait. ``warn`` hears each load's fallbacks once."""

    def __init__(self, warn: Warn | None = None):
        self.warn = warn or (lambda m: None)
        self.loaded: dict[tuple, Loaded] = {}
        self.lock = threading.Lock()
        self.key_locks: dict[tuple, threading.Lock] = {}
        self.load_s = 0.0

    def get(self, options: CaptureOptions) -> Loaded:
        device = resolve_device(options.device)
        key = network_key(options, device)
        with self.lock:
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self.loaded:
                t0 = time.perf_counter()
                self.loaded[key] = load_networks(options, device, self.warn)
                self.load_s += time.perf_counter() - t0
            return self.loaded[key]


# ---------------------------------------------------------------------------------------------------------------
# one clip


def worker_label(run: dict) -> str:
    """Where a clip ran, for the report: ``host:pid`` (and the Ray worker)."""
    label = f"{run.get('host')}:{run.get('pid')}"
    return f"{label} {run['worker']}" if run.get("worker") else label


def run_clip(
    job: ClipJob,
    networks: NetworkCache,
    cancel: threading.Event,
    overwrite: bool = False,
    front: FrontEndFactory | None = None,
    run: dict | None = None,
    progress: Progress | None = None,
) -> ClipResult:
    """Capture one clip of a batch (or skip it: complete already); every failure is the result's, not raised
    (a KeyboardInterrupt is). ``front``/``run``: as backend.capture.pipeline.capture takes them."""
    t0 = time.perf_counter()
    warnings: list[str] = []
    worker = None if run is None else worker_label(run)
    try:
        if cancel.is_set():
            raise EmocaError("cancelled", "batch cancelled before this clip started")
        done = None if overwrite else complete_takes(job)
        if done is not None:
            return skipped(job, done, time.perf_counter() - t0)
        stats: dict = {}
        paths = capture(
            job.input, job.output, job.options, progress=progress, cancel=cancel, warn=warnings.append,
            stats=stats, networks=lambda: networks.get(job.options), front=front, run=run,
        )  # fmt: skip
    except EmocaError as exc:
        result = failed(job, exc, time.perf_counter() - t0, warnings)
        result.worker = worker
        return result
    except Exception as exc:  # a bug: this clip's, reported; the batch goes on
        traceback.print_exc(file=sys.stderr)
        result = failed(job, EmocaError("internal", f"{type(exc).__name__}: {exc}"), time.perf_counter() - t0, warnings)
        result.worker = worker
        return result
    seconds = time.perf_counter() - t0
    frames = int(stats.get("frames", 0))
    fps = frames / max(seconds, 1e-9)  # wall time: the first clips' include the networks' load
    return ClipResult(
        job.name, job.input, job.output, "done", takes=[str(p) for p in paths], frames=frames,
        faces=int(stats.get("faces", 0)), fps=round(fps, 2),
        seconds=round(seconds, 3), warnings=warnings, worker=worker,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# the batch


@dataclass
class BatchOptions:
    """How a batch runs (what it captures is each ClipJob's): ``jobs`` worker processes (None: default_jobs),
    ``overwrite`` complete takes instead of skipping them."""

    jobs: int | None = None
    overwrite: bool = False


def run_batch(
    jobs: list[ClipJob],
    options: BatchOptions | None = None,
    progress: ClipProgress | None = None,
    on_clip: Callable[[int, ClipResult], None] | None = None,
    cancel: threading.Event | None = None,
    warn: Warn | None = None,
) -> BatchReport:
    """Capture every clip of ``jobs`` here, ``options.jobs`` at a time; returns the report (never raises for a
    clip's failure). ``progress(clip index, done, total, stage, fps, eta)`` reports each clip's frames;
    ``on_clip(index, result)`` each clip's end. ``cancel`` (or Ctrl-C) stops every clip and worker: the clips
    not done are "cancelled", finished takes stay, and ``report.cancelled`` is True."""
    if not jobs:
        raise EmocaError("input_empty", "no clips to capture: the batch is empty")
    options = options or BatchOptions()
    cancel = cancel or threading.Event()
    n_jobs = max(1, min(int(options.jobs or default_jobs(jobs[0].options, len(jobs))), len(jobs)))
    t0 = time.perf_counter()
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if warn is not None:
            warn(message)

    cache = NetworkCache(note)
    results: list[ClipResult | None] = [None] * len(jobs)
    interrupted = False
    with WorkerPool(n_jobs) as pool, concurrent.futures.ThreadPoolExecutor(n_jobs, "batch-clip") as ex:
        front = remote_front_ends(pool, cancel)

        def one(i: int) -> None:
            clip_progress = None if progress is None else _bind(progress, i)
            result = run_clip(jobs[i], cache, cancel, options.overwrite, front, run_meta("batch"), clip_progress)
            results[i] = result
            if on_clip is not None:
                on_clip(i, result)

        futures = [ex.submit(one, i) for i in range(len(jobs))]
        interrupted = _wait_all(futures, cancel)
    clips = [
        r if r is not None else failed(j, EmocaError("cancelled", "batch cancelled")) for r, j in zip(results, jobs)
    ]
    report = BatchReport(clips, "batch", n_jobs, time.perf_counter() - t0, cancel.is_set() or interrupted, notes)
    return report


def _bind(progress: ClipProgress, i: int) -> Progress:
    def clip_progress(done: int, total: int, stage: str, fps: float | None, eta: float | None) -> None:
        progress(i, done, total, stage, fps, eta)

    return clip_progress


def _wait_all(futures: list[concurrent.futures.Future], cancel: threading.Event) -> bool:
    """Wait for every clip; Ctrl-C sets ``cancel`` (every clip stops, every worker with it) and waits for them to
    end. True when interrupted."""
    interrupted = False
    pending = set(futures)
    while pending:
        try:
            _, pending = concurrent.futures.wait(pending, timeout=0.2)
        except KeyboardInterrupt:
            cancel.set()
            interrupted = True
    for f in futures:
        f.result()  # a bug in the runner itself (run_clip reports every clip's own failure)
    return interrupted
