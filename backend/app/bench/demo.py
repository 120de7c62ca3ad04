"""`python -m backend bench open_demo`: the demo's recovered-vs-true figures from a shorter run of its pipeline.

The same performance as ``make demo`` (backend.synthetic.ict_clip.DEMO_PERFORMANCE, the same moves and timing)
rendered at :data:`BENCH_FPS` instead of 25 fps (fewer frames), captured with the open model, scored by
backend.app.demo.recovery; no preview, plot or Blender. Results:

* ``open_arkit_error_ratio``: mean absolute ARKit weight error on the channels the performance drives, divided
  by that of answering neutral (all weights 0): 0 is perfect, 1 no better than neutral (the bar is 0.5);
* ``open_head_error_deg`` (and ``open_head_error_deg_max``): the angle between the captured and the rendered
  head rotation, mean (and max) over the frames with a face, no fitting;
* ``open_demo_face_fraction``: the fraction of frames where the Face Landmarker found the face;
* ``open_demo_frames``: the frames scored.

Registered in backend.app.bench.BENCHMARKS as "open_demo".
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from backend.app.demo import capture_clip, recovery, render_step

BENCH_FPS = 10.0  # the demo renders 25 fps; the same moves at 10 fps are 40% of the frames


def _quiet(_message: str) -> None:
    """Progress lines are not bench results (one ``name: value`` per line on stdout)."""


def run(args: argparse.Namespace) -> dict[str, float | int]:
    """Render, capture and score the demo's performance at :data:`BENCH_FPS` in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="emoca_bench_demo_") as tmp:
        out = Path(tmp)
        truth, channels = render_step(out, BENCH_FPS)
        take = capture_clip(Path(truth["path"]), out / "take.npz", "open", args.device, say=_quiet)
        errors = recovery(take, truth, channels)
    return {
        "open_arkit_error_ratio": round(errors["open_arkit_error_ratio"], 3),
        "open_head_error_deg": round(errors["head_error_deg_mean"], 2),
        "open_head_error_deg_max": round(errors["head_error_deg_max"], 2),
        "open_demo_face_fraction": round(errors["face_fraction"], 3),
        "open_demo_frames": errors["frames_total"],
    }
