"""``python -m backend smooth TAKE.npz [-o OUT.npz] --smooth METHOD [--smooth-strength X]``: redo a take's smoothing.

Takes keep the unsmoothed values of every smoothed channel (``raw_*``), so smoothing can be changed after the
fact without capturing again: the smoothed channels are recomputed from ``raw_*`` with the same code capture
uses (backend.take.smoothing) and the take is rewritten atomically (in place unless ``-o`` is given).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("take", help="a take file (.npz)")
    parser.add_argument("-o", "--output", help="write here instead of replacing the take")
    parser.add_argument("--smooth", choices=("off", "butterworth", "one_euro"), default="butterworth")
    parser.add_argument("--smooth-strength", type=float, default=None, help="0 (light) .. 1 (strong)")


def resmooth(take_path: str | Path, output: str | Path | None, method: str, strength: float | None) -> Path:
    """Recompute the smoothed channels of a take from its raw_* values; returns the path written."""
    from backend.capture.pipeline import _smoothing_meta, make_smoothing
    from backend.take.smoothing import smooth_channels
    from backend.take.writer import write_take
    from emoca_contract.take import SMOOTHED_KEYS, read_take

    take = read_take(take_path)  # validates the contract, raw_* included
    fps = float(take.meta.get("source", {}).get("fps") or 0.0)
    times = take.arrays["time"]
    if fps <= 0:  # an image-sequence take without a rate: fall back to the timestamps' median step
        fps = 1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 25.0
    options = make_smoothing(method, strength)
    raw = {k: take.arrays[f"raw_{k}"] for k in SMOOTHED_KEYS}
    arrays = dict(take.arrays)
    arrays.update(smooth_channels(raw, take.arrays["valid"], fps, options, times=times))
    meta = dict(take.meta, smoothing=_smoothing_meta(options))
    return write_take(output or take_path, arrays, meta)


def run(args: argparse.Namespace) -> int:
    path = resmooth(args.take, args.output, args.smooth, args.smooth_strength)
    print(f"wrote {path}")
    return 0
