"""`python -m backend bench batch`: batch capture throughput, in-process with 1 and N jobs and on a local Ray.

The same 8 short generated clips (24 frames, 320x180, the astronaut's face moving; the open model: the default
without licensed files, where the worker processes do nearly all the work) are captured three times, one run each,
every run a whole batch as a user starts it (worker processes or Ray started, networks loaded, every take
written), each into its own folder:

* ``batch_clips_per_min_1``: ``--jobs 1``;
* ``batch_clips_per_min_n``: ``--jobs N``, N = ``batch_jobs_n`` = this machine's cores;
* ``ray_overhead_ratio``: the same N-job batch through a Ray started here for it (``--ray``, N CPUs, N actors),
  seconds over the in-process N-job batch's (1.0 = no overhead; Ray's start and its actors' network loads are
  what it adds on a batch this small).

Where a short batch's time goes: ``batch_first_clip_s_*`` (until the first clip is done: worker processes
started, networks loaded, the first clip captured) and ``batch_steady_clips_per_min_*`` (the clips after the
first, per minute, from the first one's end to the last one's: what a long batch approaches).

Every clip of every run must succeed (a failed clip fails the benchmark). Registered in
backend.app.bench.BENCHMARKS as "batch".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from backend.capture.batch import BatchOptions, BatchReport, ClipResult, core_count, run_batch
from backend.capture.manifest import clip_jobs
from backend.capture.options import CaptureOptions, resolve_device

N_CLIPS = 8
CLIP_FRAMES = 24
CLIP_SIZE = (320, 180)


def make_clips(folder: Path) -> list[str]:
    """The benchmark's clips: the astronaut panning, each clip from another seed of the background."""
    from backend.synthetic.clips import make_astronaut_clip

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(N_CLIPS):
        motion = ("pan", "static")[i % 2]
        clip = make_astronaut_clip(folder / f"clip{i}.mp4", CLIP_FRAMES, CLIP_SIZE, motion=motion, face_height=80)
        paths.append(str(clip.path))
    return paths


OnClip = Callable[[int, ClipResult], None]


def timed(run: Callable[[OnClip], BatchReport]) -> tuple[float, float, float]:
    """A batch run: (wall seconds, seconds to the first clip's end, steady clips per minute after it); raises when
    any clip did not succeed. ``run(on_clip)`` runs the batch."""
    ends: list[float] = []
    t0 = time.perf_counter()
    report = run(lambda i, result: ends.append(time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    if not report.ok:
        bad = [f"{c.name}: {c.error}" for c in report.clips if c.status not in ("done", "skipped")]
        raise RuntimeError(f"{len(bad)} clips failed: {bad[:3]}")
    ends.sort()
    steady = 60 * (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else 0.0
    return seconds, ends[0], steady


def run(args: argparse.Namespace) -> dict[str, float | int | str]:
    from backend.capture.ray_backend import RayOptions, run_ray_batch

    device = resolve_device(args.device)
    n = core_count()
    options = CaptureOptions(device=device, model="open")
    with tempfile.TemporaryDirectory(prefix="emoca-bench-batch-") as tmp:
        clips = make_clips(Path(tmp) / "clips")

        def jobs(name: str) -> list:
            return clip_jobs(clips, Path(tmp) / name, options)

        one, first_1, steady_1 = timed(lambda cb: run_batch(jobs("one"), BatchOptions(jobs=1), on_clip=cb))
        many, first_n, steady_n = timed(lambda cb: run_batch(jobs("many"), BatchOptions(jobs=n), on_clip=cb))
        ray_opts = RayOptions(address="local", workers=n, init={"num_cpus": n})
        on_ray, _, _ = timed(lambda cb: run_ray_batch(jobs("ray"), ray_opts, on_clip=cb))
    return {
        "batch_device": device,
        "batch_clips": N_CLIPS,
        "batch_clip_frames": CLIP_FRAMES,
        "batch_jobs_n": n,
        "batch_clips_per_min_1": round(60 * N_CLIPS / one, 2),
        "batch_clips_per_min_n": round(60 * N_CLIPS / many, 2),
        "batch_jobs_speedup": round(one / many, 3),
        "batch_seconds_1": round(one, 2),
        "batch_seconds_n": round(many, 2),
        "batch_first_clip_s_1": round(first_1, 2),
        "batch_first_clip_s_n": round(first_n, 2),
        "batch_steady_clips_per_min_1": round(steady_1, 2),
        "batch_steady_clips_per_min_n": round(steady_n, 2),
        "ray_seconds_n": round(on_ray, 2),
        "ray_overhead_ratio": round(on_ray / many, 3),
    }
