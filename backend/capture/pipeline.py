"""Capture: footage in, one take file per tracked face out (docs/formats.md#take-file).

Pipeline (streaming, bounded memory)::

    reader thread (backend.capture.reader): decode (PyAV) -> detect + landmark (MediaPipe Face Landmarker,
        |  VIDEO mode: landmarks, ARKit scores, pose, confidence) -> track -> crop (224x224); a bounded queue of
        v  FrameItem (frame index, PTS time, one FaceObs per face)
    main thread (Batcher): gather crops across frames into batches -> networks (backend.capture.networks:
        reconstructor + emotion, or emotion alone for the open model) + the detector's columns
        (backend.capture.open) -> rows appended to one TakeWriter per track (chunk files on disk)
    finalise: pick the track(s), fill short gaps (flagged), smooth (raw_* kept; the detector's 478 points a slice
        at a time from disk), write each take whole into the run's work folder, then move them all into place
    extras: --plot / --preview, from the finished take

The model decides the take's kind (backend.capture.options.capture_kind): "open" (the default without an
installed EMOCA/DECA model: ARKit scores, head rotation and translation from the detector) or "flame" (EMOCA/DECA
codes; the detector's ARKit scores are recorded too when it gives them).

Track strategy (why one pass): the final choice of 'largest' needs the whole clip, so every track is encoded
and the unselected writers are discarded at finalisation. Against the alternative (a detection pass storing
boxes, then a second decode+crop+encode pass) this decodes once and detects once; its only cost is network time
spent on extra faces in multi-face clips, which the two-pass design would spend on a second decode of every
frame instead. Memory stays bounded either way: frames live only in the bounded queue, rows go to disk every
``chunk_rows`` rows, and a track that appears late costs nothing for the frames before it (TakeWriter.skip).
The only per-frame state kept in memory is (frame index, time): 16 bytes a frame.

Nothing lost (backend.capture.output): before any work the output is checked, its folders made and an exclusive
lock taken on it (a second capture of the same output is refused: ``output_busy``); every chunk and unfinished take
lives in the run's own hidden work folder beside the output. The takes replace what was at their paths only when
all of them are complete (``commit_takes``), so a failure or cancel before that leaves an earlier take untouched and
removes everything the run made (its work folder, lock and the folders it created); one after it (during the
preview) keeps the new takes and says so. Nothing here deletes a file the run did not create.

Front ends (backend.capture.reader.FrontEnd): the reader thread above by default; a batch's worker process
(backend.capture.workers) runs the same decode/detect/crop loop and hands over the same FrameItems, so a clip's
take is the same whichever front end read it.

Cancelling (``cancel`` event) is checked between frames in the reader and between micro-batches in the main
thread; micro-batches are small on CPU so a cancel lands within a second.
"""

from __future__ import annotations

import math
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend import __version__
from backend.capture.networks import Loaded, Loader, Networks, NetworkSource, landmarks_to_frame
from backend.capture.open import arkit_meta, open_rows
from backend.capture.options import (
    CaptureOptions,
    Progress,
    Warn,
    batch_size,
    capture_kind,
    check_detector,
    check_precision,
    decisive_options,
    output_paths,
    parse_face,
    parse_frames,
    resolve_device,
)
from backend.capture.output import OutputSite, commit_takes, open_output
from backend.capture.reader import END, FaceObs, FrameItem, FrontEnd, FrontEndFactory, LocalFrontEnd
from backend.footage.detect import ARKIT_SOURCE, UNOBSERVED_ARKIT
from backend.take.smoothing import (
    CHANNEL_GROUPS,
    SmoothingOptions,
    interpolate_gaps,
    smooth_channels,
    smooth_large,
    smoothing_meta,
)
from backend.take.writer import TakeWriter
from emoca_contract.errors import EmocaError
from emoca_contract.take import SMOOTHED_BY_KIND, SMOOTHED_OPTIONAL_BY_KIND, base_meta, read_take

# Channels filled across short gaps (backend.take.smoothing.interpolate_gaps: linear, slerp for rotations).
# Detector outputs (confidence, detected_landmarks) stay zero there: they were not observed.
INTERPOLATED_KEYS = (
    "shape",
    "exp",
    "arkit",
    "global_pose",
    "jaw_pose",
    "cam",
    "translation",
    "crop",
    "landmarks",
    "valence",
    "arousal",
    "expression",
    "tex",
    "light",
)
# Large smoothed channels: never loaded whole, smoothed a slice of points at a time from disk.
LARGE_KEYS = ("detected_landmarks",)
# With --face all, tracks seen in fewer frames than this are dropped (a false detection is not a performer).
ALL_MIN_FRAMES = 3


def _check_cancel(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise EmocaError("cancelled", "capture cancelled")


# ---------------------------------------------------------------------------------------------------------------
# progress and warnings


class ProgressMeter:
    """Calls ``progress(done, total, stage, fps, eta)`` at most every ``min_interval`` s (unless forced)."""

    def __init__(self, cb: Progress | None, total: int, min_interval: float = 0.2):
        self.cb, self.total, self.min_interval = cb, max(int(total), 0), min_interval
        self.t0 = time.perf_counter()
        self.last = -1e9

    def __call__(self, done: int, stage: str, force: bool = False) -> None:
        if self.cb is None:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.min_interval:
            return
        self.last = now
        el = now - self.t0
        fps = done / el if el > 0 and done else None
        total = max(self.total, done)
        eta = (total - done) / fps if fps else None
        self.cb(done, total, stage, fps, eta)


@dataclass
class WarningLog:
    """Collects the capture's warnings (for the take's meta) and passes each on to the caller's ``warn``."""

    forward: Warn | None = None
    messages: list[str] = field(default_factory=list)

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        if self.forward is not None:
            self.forward(message)


def _expected_rows(frame_count: int, frames: Any) -> int:
    """Rows a FrameRange yields from a clip of ``frame_count`` frames (0 when unknown)."""
    stop = frame_count if frames.stop is None else min(frames.stop, frame_count or frames.stop)
    return max(0, math.ceil((stop - frames.start) / frames.step))


# ---------------------------------------------------------------------------------------------------------------
# the batcher


@dataclass
class Track:
    """One face track's rows on disk, and how many frames it was seen in."""

    writer: TakeWriter
    frames: int = 0


class Batcher:
    """The main thread's state: frames taken from the reader, crops waiting for the networks, one TakeWriter
    per track, and the counters (rows done, faces encoded, network seconds).

    ``add(item)`` queues a frame's faces and runs the networks once ``batch`` crops are waiting; ``flush()``
    runs them on what is left. The networks come from ``loader`` on the first batch (they load meanwhile).
    """

    def __init__(self, batch: int, work: Path, label: str, loader: Loader, cancel: threading.Event):
        self.batch, self.work, self.label = batch, work, label  # the run's work folder; the take, for messages
        self.loader, self.cancel = loader, cancel
        self.pending: list[tuple[int, FaceObs]] = []  # (row, face) waiting for the network
        self.tracks: dict[int, Track] = {}
        self.index: list[int] = []  # per row: source frame index
        self.times: list[float] = []  # per row: presentation time, s
        self.loaded: Loaded | None = None
        self.network_s = 0.0
        self.n_faces = 0
        self.done_rows = 0

    @property
    def n_rows(self) -> int:
        return len(self.index)

    def add(self, item: FrameItem) -> bool:
        """Take one frame; True when a batch ran (rows were written)."""
        self.index.append(item.index)
        self.times.append(item.time)
        self.pending.extend((item.pos, f) for f in item.faces)
        if len(self.pending) >= self.batch:
            self.flush()
            return True
        if not item.faces:
            self.done_rows = item.pos + 1
        return False

    def load(self) -> Loaded:
        """The loaded networks and their metadata (waits for the loader the first time)."""
        if self.loaded is None:
            self.loaded = self.loader.wait(self.cancel)
        return self.loaded

    def networks(self) -> Networks:
        return self.load()[0]

    def flush(self) -> None:
        """Run the networks on the waiting crops and append one row per face to its track's writer."""
        if not self.pending:
            return
        nets = self.networks()
        faces = [f for _, f in self.pending]
        arkit = face_arkit(faces)
        t0 = time.perf_counter()
        out = nets.run(np.stack([f.crop for f in faces]), self.cancel, arkit=arkit)
        self.network_s += time.perf_counter() - t0
        out.update(detector_columns(faces, nets.kind, arkit, out.pop("landmarks_norm", None)))
        for i, (row, face) in enumerate(self.pending):
            self._append(row, face, {k: v[i] for k, v in out.items()})
        self.n_faces += len(self.pending)
        self.done_rows = self.pending[-1][0] + 1
        self.pending.clear()

    def _append(self, row: int, face: FaceObs, values: dict[str, np.ndarray]) -> None:
        tr = self.tracks.get(face.track)
        if tr is None:
            writer = TakeWriter(self.work / f"track{face.track}.npz", label=self.label)
            tr = self.tracks[face.track] = Track(writer)
        tr.frames += 1
        tr.writer.skip(row - tr.writer.n_rows)
        tr.writer.append({**values, "valid": True, "interpolated": False})

    def abort(self, keep: tuple[int, ...] | list[int] = ()) -> None:
        """Discard the chunk files of every track not in ``keep``."""
        for tid, tr in self.tracks.items():
            if tid not in keep:
                tr.writer.abort()


def face_arkit(faces: list[FaceObs]) -> np.ndarray | None:
    """(B, 52) the faces' ARKit scores, or None when the detector gave none (FAN)."""
    scores = [f.arkit for f in faces if f.arkit is not None]
    return np.stack(scores).astype(np.float32) if len(scores) == len(faces) else None


def detector_columns(
    faces: list[FaceObs], kind: str, arkit: np.ndarray | None, landmarks_norm: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The take columns of B faces that come from the detector, not the networks: confidence, crop, its
    landmarks; for the open model ARKit scores, head rotation and translation (backend.capture.open), for an
    EMOCA model the ARKit scores when there are some and the model's landmarks (B, 68, 2) in frame pixels."""
    crop = np.stack([f.tform for f in faces])
    cols = {
        "confidence": np.array([f.score for f in faces], np.float32),
        "crop": crop,
        "detected_landmarks": np.stack([f.landmarks for f in faces]),
    }
    if kind == "open":
        poses = [f.transform for f in faces if f.transform is not None]
        if arkit is None or len(poses) != len(faces):
            raise EmocaError("internal", "the open model got a face without ARKit scores or pose from the detector")
        cols.update(open_rows(arkit, np.stack(poses)))
    elif arkit is not None:
        cols["arkit"] = np.clip(arkit, 0.0, 1.0)
    if landmarks_norm is not None:
        cols["landmarks"] = landmarks_to_frame(landmarks_norm, crop)
    return cols


def consume(q: queue.Queue, reader: FrontEnd, batcher: Batcher, meter: ProgressMeter, cancel: threading.Event) -> None:
    """Take FrameItems until the reader's END, batching their crops; then run the last batch."""
    while True:
        _check_cancel(cancel)
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is END:
            break
        if batcher.add(item):
            meter(batcher.done_rows, "encode")
    if reader.error is not None:
        raise reader.error
    _check_cancel(cancel)
    batcher.flush()


# ---------------------------------------------------------------------------------------------------------------
# track selection and finalisation


def select_tracks(tracker: Any, tracks: dict[int, Track], face: str | int, path: str) -> list[int]:
    """Track ids to write (backend.footage.track.select_tracks on the tracker's summary of encoded tracks)."""
    from backend.footage.track import select_tracks as select

    summary = [t for t in tracker.summary() if t.id in tracks]
    if not summary:
        raise EmocaError("no_face", f"{path}: no face was found in any frame of the chosen range")
    try:
        return select(summary, face, min_frames=ALL_MIN_FRAMES)
    except EmocaError as exc:
        raise EmocaError(exc.code, f"{path}: {exc.message}", exc.hint) from None


def warn_other_faces(tracker: Any, tracks: dict[int, Track], selected: list[int], warn: Warn) -> None:
    """Several faces in the footage and 'largest' chosen: say which one was kept and how to get the others."""
    seen = [t for t in tracker.summary() if t.id in tracks and t.n_frames >= ALL_MIN_FRAMES]
    if len(seen) > 1:
        kept = next(t for t in seen if t.id in selected)
        warn(
            f"{len(seen)} faces were tracked; captured the largest (track {kept.id}, seen in {kept.n_frames} "
            f"frames). Use face 'all' for one take per face, or a track number for another one."
        )


def source_stamp(input_path: Path) -> dict:
    """A footage file's size and modification time (``bytes``, ``mtime_ns``): a batch redoes the take of a clip
    that changed since (backend.capture.batch). Empty for an image sequence (a folder or a pattern)."""
    try:
        st = input_path.stat()
    except OSError:
        return {}
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)} if input_path.is_file() else {}


def run_meta(engine: str = "capture", worker: str | None = None) -> dict:
    """The take's ``meta.run``: where it was made (host, process, and the engine: "capture" for one clip,
    "batch" for ``--jobs``, "ray" for a Ray worker, which ``worker`` names). The one part of a take's meta, with
    ``created``, that differs between two captures of the same clip with the same options."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "engine": engine, "worker": worker}


def source_meta(input_path: Path, footage: Any, frames: Any) -> dict:
    """The take's ``meta.source``: where the rows came from (``footage``: anything with ``info`` and ``n_errors``,
    such as a FrontEnd)."""
    info = footage.info
    return {
        "path": str(input_path),
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "frame_count": info.frame_count,
        "rotation": info.rotation,
        "frames": frames.as_list(),
        "kind": info.kind,
        "time_base": info.time_base,
        "skipped_frames": getattr(footage, "n_errors", 0),
        **source_stamp(input_path),
    }


def smoothed_keys(kind: str, keys: list[str]) -> list[str]:
    """The channels of a ``kind`` take with columns ``keys`` that smoothing changes (raw_* kept for each)."""
    wanted = [*SMOOTHED_BY_KIND[kind], *SMOOTHED_OPTIONAL_BY_KIND[kind]]
    return [k for k in wanted if k in keys]


def large_columns(
    writer: TakeWriter,
    valid: np.ndarray,
    interpolated: np.ndarray,
    fps: float,
    smoothing: SmoothingOptions,
    times: np.ndarray,
) -> dict[str, np.ndarray]:
    """``<key>`` and ``raw_<key>`` for the LARGE_KEYS the writer holds, as memory maps of files in its parts folder:
    the raw column assembled from the chunks, the smoothed one filtered into a second map a slice at a time (the
    raw map itself when their group is not smoothed)."""
    cols: dict[str, np.ndarray] = {}
    for key in [k for k in LARGE_KEYS if k in writer.keys()]:
        raw = writer.column_map(key)
        cols["raw_" + key] = cols[key] = raw
        if CHANNEL_GROUPS[key] in smoothing.enabled_groups():
            out = writer.scratch(f"{key}.smoothed", raw.shape, raw.dtype)
            cols[key] = smooth_large(key, raw, out, valid, fps, smoothing, times, interpolated)
    return cols


def finalize_track(
    writer: TakeWriter,
    path: Path,
    meta: dict,
    index: np.ndarray,
    times: np.ndarray,
    smoothing: SmoothingOptions,
    max_gap: int,
    fps: float,
) -> Path:
    """Fill short gaps (flagged), smooth, write the take atomically; raw_* = the unsmoothed (gap-filled) values.

    index (N,) int64 source frames, times (N,) float64 s. Only the small per-frame channels are loaded whole
    here; the detector's landmarks (LARGE_KEYS) are smoothed from a memory map of their chunks into another,
    a slice of points at a time, and streamed into the take from there.
    """
    n = len(index)
    writer.skip(n - writer.n_rows)
    observed = writer.column("valid")
    keys = [k for k in INTERPOLATED_KEYS if k in writer.keys()]
    cols, fill = interpolate_gaps({k: writer.column(k) for k in keys}, observed, max_gap)
    valid = observed | fill
    cols.update(frame=index, time=times, valid=valid, interpolated=fill)
    small = [k for k in smoothed_keys(meta["kind"], writer.keys()) if k not in LARGE_KEYS]
    raw = {k: cols[k] for k in small}
    smoothed = smooth_channels(raw, valid, fps, smoothing, times=times, interpolated=fill)
    for k in small:
        cols["raw_" + k] = raw[k]
        cols[k] = smoothed[k]
    cols.update(large_columns(writer, valid, fill, fps, smoothing, times))
    meta["gaps"]["interpolated_frames"] = int(fill.sum())
    return writer.finalize(meta, cols, path=path)


@dataclass
class TakeContext:
    """What every take of one capture shares: options, the resolved face choice and smoothing, the source."""

    options: CaptureOptions
    face: str | int
    smoothing: SmoothingOptions
    source: dict
    detector_kind: str
    run: dict = field(default_factory=run_meta)


@dataclass
class Outcome:
    """What a capture has put in place so far: the takes (once moved onto their paths) and the extras written."""

    takes: list[Path] = field(default_factory=list)
    extras: list[Path] = field(default_factory=list)


def write_takes(
    batcher: Batcher,
    selected: list[int],
    ctx: TakeContext,
    log: WarningLog,
    meter: ProgressMeter,
    cancel: threading.Event,
) -> list[Path]:
    """Finalise each selected track into a finished take in the run's work folder; returns their paths there
    (nothing at the output changes until :func:`backend.capture.output.commit_takes` moves them)."""
    nets, model_meta, emo_meta, fallbacks = batcher.load()  # loaded: the tracks' rows went through them
    index = np.asarray(batcher.index, np.int64)
    times = np.asarray(batcher.times, np.float64)
    staged = []
    for tid in selected:
        _check_cancel(cancel)
        meter(batcher.n_rows, "write", force=True)
        tr = batcher.tracks[tid]
        extra = {"arkit": arkit_meta(ARKIT_SOURCE, UNOBSERVED_ARKIT)} if "arkit" in tr.writer.keys() else {}
        meta = base_meta(
            kind=nets.kind,
            **extra,
            source=ctx.source,
            track={"id": tid, "selection": ctx.face, "n_tracks": len(batcher.tracks), "frames_seen": tr.frames},
            model=model_meta,
            emotion=emo_meta,
            smoothing=smoothing_meta(ctx.smoothing),
            gaps={"max_interpolated": int(ctx.options.max_gap)},
            fallbacks=list(fallbacks),
            warnings=log.messages[:50],
            backend_version=__version__,
            detector=ctx.detector_kind,
            options=decisive_options(ctx.options),
            run=ctx.run,
        )
        fps = ctx.source["fps"]
        max_gap = int(ctx.options.max_gap)
        staged.append(finalize_track(tr.writer, tr.writer.path, meta, index, times, ctx.smoothing, max_gap, fps))
    return staged


def _run_extra(stage: str, job: Any, warn: Warn) -> bool:
    """One --preview / --plot job: a failure is a warning (the takes are fine: keep them); a cancel is not.
    True when it was written."""
    try:
        job()
        return True
    except EmocaError as exc:
        if exc.code == "cancelled":
            raise
        warn(f"the {stage} was not written: {exc.message}")
    except Exception as exc:
        warn(f"the {stage} was not written: {type(exc).__name__}: {exc}")
    return False


def write_extras(
    outcome: Outcome,
    input_path: Path,
    options: CaptureOptions,
    meter: ProgressMeter,
    n_rows: int,
    cancel: threading.Event,
    warn: Warn,
) -> None:
    """--preview / --plot for the first take (they read the finished file: what the add-on will see); each one
    written is added to ``outcome.extras``."""
    if not outcome.takes or not (options.preview or options.plot):
        return
    from backend.take.plot import plot_emotion
    from backend.take.preview import write_preview

    take = read_take(outcome.takes[0])
    plot, preview = options.plot, options.preview
    if plot:
        meter(n_rows, "plot", force=True)
        if _run_extra("plot", lambda: plot_emotion(take, plot), warn):
            outcome.extras.append(Path(plot))
    if preview:
        meter(0, "preview", force=True)

        def job() -> Path:
            return write_preview(
                take, input_path, preview, flame=options.flame, cancel=cancel, progress=lambda d: meter(d, "preview")
            )

        if _run_extra("preview", job, warn):
            outcome.extras.append(Path(preview))


def is_cancel(exc: BaseException) -> bool:
    """A cancel: the ``cancel`` event (EmocaError cancelled) or Ctrl-C (KeyboardInterrupt in the main thread)."""
    return isinstance(exc, KeyboardInterrupt) or (isinstance(exc, EmocaError) and exc.code == "cancelled")


def kept_takes_cancel(outcome: Outcome, options: CaptureOptions) -> EmocaError:
    """The 'cancelled' error of a cancel after the takes were in place: they are kept, and it says so (and which
    extras were and were not written)."""
    several = len(outcome.takes) > 1
    wanted = [(name, Path(p)) for name, p in (("plot", options.plot), ("preview", options.preview)) if p]
    missing = [name for name, p in wanted if p not in outcome.extras]
    message = f"capture cancelled after the take{'s were' if several else ' was'} written: "
    message += ", ".join(str(p) for p in outcome.takes) + " kept (complete)"
    if outcome.extras:
        message += "; written too: " + ", ".join(str(p) for p in outcome.extras)
    hint = f"The take{'s are' if several else ' is'} complete and kept."
    if missing:
        message += "; not written: the " + " and the ".join(missing)
        flags = " ".join(f"--{name}" for name in missing)
        hint += f" Only the {' and the '.join(missing)} is missing: capture again with {flags} to get it."
    return EmocaError("cancelled", message, hint)


# ---------------------------------------------------------------------------------------------------------------
# capture


def capture(
    input: str | Path,
    output: str | Path,
    options: CaptureOptions | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    warn: Warn | None = None,
    stats: dict | None = None,
    networks: NetworkSource | None = None,
    front: FrontEndFactory | None = None,
    run: dict | None = None,
) -> list[Path]:
    """Capture ``input`` into take file(s) at ``output``; return the paths written.

    ``progress(done, total, stage, fps, eta)`` is called at most ~5 times a second; ``warn(message)`` gets
    fallbacks and skipped frames; ``cancel`` stops the run (EmocaError 'cancelled': before the takes are in place
    nothing is written and an earlier take at the output is unchanged; during the preview/plot the takes are kept
    and the error names them). ``stats`` (optional dict) receives timings (seconds per stage, frames, faces).
    ``networks``: the result of :func:`backend.capture.networks.load_networks`, to reuse loaded networks across
    clips (benchmarks), or a function returning it (a batch's cache: called while the footage is read).
    ``front``: what opens the clip's front end (default :class:`backend.capture.reader.LocalFrontEnd`: a reader
    thread here; batch capture passes a worker process's).
    ``run``: the take's ``meta.run`` (default :func:`run_meta`). Errors: EmocaError input_* (footage), no_face,
    face_not_found, cancelled, asset_* (models), config_invalid (options; an output that would replace the
    footage), output_unwritable, output_busy (another capture writes the same output), worker_lost (a batch's
    worker process died). The output is checked before any work.
    """
    options = options or CaptureOptions()
    cancel = cancel or threading.Event()
    face = parse_face(options.face)
    device = resolve_device(options.device)
    batch = batch_size(options, device)
    parse_frames(options.frames)
    check_precision(options.precision)
    kind = networks[0].kind if networks is not None and not callable(networks) else capture_kind(options)
    check_detector(kind, options.detector)
    input_path = Path(input)
    site = open_output(output, input_path, options.preview, options.plot)
    outcome = Outcome()
    job = Run(options, face, device, batch, input_path, output, site, cancel, WarningLog(warn), stats, networks)
    job.front = front or LocalFrontEnd
    job.run = run or run_meta()
    try:
        job.go(progress, outcome)
    except BaseException as exc:
        site.close(failed=not outcome.takes)
        if outcome.takes and is_cancel(exc):
            raise kept_takes_cancel(outcome, options) from None
        raise
    site.close(failed=False)
    return outcome.takes


@dataclass
class Run:
    """One capture's settled inputs (options checked, output held), run by :meth:`go`."""

    options: CaptureOptions
    face: str | int
    device: str
    batch: int
    input_path: Path
    output: str | Path
    site: OutputSite
    cancel: threading.Event
    log: WarningLog
    stats: dict | None
    networks: NetworkSource | None
    front: FrontEndFactory = LocalFrontEnd
    run: dict = field(default_factory=run_meta)

    def go(self, progress: Progress | None, outcome: Outcome) -> None:
        """Decode, detect, encode, finalise, move the takes into place (``outcome.takes``), then the extras."""
        options, cancel, log = self.options, self.cancel, self.log
        stats = self.stats if self.stats is not None else {}
        frames = parse_frames(options.frames)
        t_start = time.perf_counter()
        smoothing = options.smoothing if options.smoothing is not None else SmoothingOptions()
        front = self.front(self.input_path, frames, options.detector, log)  # footage errors: here, before any work
        meter = ProgressMeter(progress, _expected_rows(front.info.frame_count, frames))
        meter(0, "decode", force=True)

        q: queue.Queue = queue.Queue(maxsize=max(2, options.queue_frames or 2 * self.batch))
        stop = threading.Event()  # ours: stops the reader on errors without touching the caller's event
        # Networks load in a thread while the reader decodes and detects (a clip without faces fails without
        # waiting for them; a cancel during the load is seen at once).
        loader = Loader(options, self.device, log.forward or (lambda m: None), self.networks)
        batcher = Batcher(self.batch, self.site.work, str(self.site.target), loader, cancel)

        try:
            front.start(q, (cancel, stop), stats)
        except BaseException:
            front.close()
            raise
        loader.start()
        try:
            consume(q, front, batcher, meter, cancel)
            if batcher.loaded is not None:
                stats["load_s"] = loader.seconds
            n_rows = batcher.n_rows
            meter(n_rows, "encode", force=True)
            selected = select_tracks(front, batcher.tracks, self.face, str(self.input_path))
            if self.face == "largest":
                warn_other_faces(front, batcher.tracks, selected, log)
            paths = output_paths(self.output, self.input_path, selected, self.face)
            stats.update(frames=n_rows, faces=batcher.n_faces, network_s=batcher.network_s, tracks=len(batcher.tracks))
            meter.total = n_rows
            source = source_meta(self.input_path, front, frames)
            ctx = TakeContext(options, self.face, smoothing, source, front.detector_kind, self.run)
            staged = write_takes(batcher, selected, ctx, log, meter, cancel)
            _check_cancel(cancel)  # the last moment a cancel leaves the output as it was
            commit_takes(staged, paths, self.input_path, outcome.takes)
            batcher.abort()
            stats["total_s"] = time.perf_counter() - t_start
            write_extras(outcome, self.input_path, options, meter, n_rows, cancel, log)
            meter(n_rows, "done", force=True)
        except BaseException:
            stop.set()
            front.stop(q)
            batcher.abort()
            raise
        finally:
            stop.set()
            front.stop(q)
            if loader.is_alive() and not cancel.is_set():
                # an early error (no face, bad footage) must not leave torch loading in a thread while the
                # interpreter exits (C++ aborts); a cancel returns at once and lets it finish in the background
                loader.join()
            front.close()


def summary(paths: list[Path]) -> dict:
    """What the result event / CLI prints about the written takes."""
    out = []
    for p in paths:
        t = read_take(p)
        out.append(
            {
                "path": str(p),
                "frames": t.n_frames,
                "valid": int(t["valid"].sum()),
                "track": t.meta.get("track", {}).get("id"),
            }
        )
    return {"takes": out}
