"""``python -m backend smooth TAKE.npz [-o OUT.npz] --smooth METHOD [--smooth-strength X]``: redo a take's smoothing.

Takes keep the unsmoothed values of every smoothed channel (``raw_*``), so smoothing can be changed after the
fact without capturing again (backend.take.smoothing.resmooth_take, the code capture uses); the take is rewritten
atomically (in place unless ``-o`` is given). This module only parses the arguments and prints the result.
"""

from __future__ import annotations

import argparse

from backend.capture.options import make_smoothing
from backend.take.smoothing import resmooth_take


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("take", help="a take file (.npz)")
    parser.add_argument("-o", "--output", help="write here instead of replacing the take")
    parser.add_argument("--smooth", choices=("off", "butterworth", "one_euro"), default="butterworth")
    parser.add_argument("--smooth-strength", type=float, default=None, help="0 (light) .. 1 (strong)")


def run(args: argparse.Namespace) -> int:
    path = resmooth_take(args.take, args.output, make_smoothing(args.smooth, args.smooth_strength))
    print(f"wrote {path}")
    return 0
