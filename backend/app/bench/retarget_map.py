"""`python -m backend bench retarget_landmarks`: the FLAME <-> ARKit map's reproduction figures and the landmark
solve's landmark error on a character of another topology (numpy only; docs/benchmarks.md, docs/retarget.md).

* ``map_*``: the synthetic test head's map (built into a temporary cache with the default options; its
  ``meta.figures``, docs/formats.md "ARKit map"), and ``map_flame_*`` the installed FLAME's when there is one;
* ``retarget_landmark_error`` (% of the face size): a FLAME take (the synthetic head, smooth random expressions
  and jaw) solved onto the ICT head as a character with its 51 ARKit shapes as anonymous keys (24591 vertices,
  not the synthetic head's 471): the mean distance between the take's landmark motion, moved onto the character,
  and what the solved keys reproduce; ``retarget_landmark_motion`` the motion's own mean size, for scale;
* ``retarget_landmark_error_open``: the other way, an open take (ICT ARKit curves) onto the synthetic head as a
  character whose keys are its first 20 expression components (each way) and a jaw opening;
* ``retarget_solve_frames_per_s``: frames of the first solve per second (68 landmarks, 51 keys, smoothed).
The characters' landmarks are their heads' own landmark vertices (Blender finds them with the detector: the
tests measure that part).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from typing import Any

import numpy as np

from backend.ict.data import load_ict
from backend.retarget.ict import ict_landmark_model
from backend.retarget.map import MapOptions, head_landmarks, map_for_head
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.arkit_map import ArkitMap, arkit_landmarks, flame_landmarks
from emoca_contract.errors import EmocaError
from emoca_contract.landmark_solve import LandmarkSolve, face_size, solve_landmarks

FRAMES = 300
FIGURES = ("forward_error_pct", "forward_floor_pct", "forward_motion_pct", "inverse_error_pct",
           "inverse_motion_pct", "round_trip_weight_error")  # fmt: skip


def curves(n: int, k: int, rng: np.random.Generator, rest: int = 15) -> np.ndarray:
    """(n, k) smooth bursts in [0, 1]: half-sines at random rates and phases; the first ``rest`` frames at 0."""
    t = np.arange(n) / 30.0
    wave = np.sin(2 * np.pi * rng.uniform(0.2, 1.0, k) * t[:, None] + rng.uniform(0, 2 * np.pi, k))
    out = np.clip(wave, 0.0, None) * (rng.random(k) < 0.5)
    out[:rest] = 0.0
    return out


def flame_take_onto_ict(m: ArkitMap, rng: np.random.Generator) -> tuple[LandmarkSolve, float, float]:
    """A FLAME take's landmarks solved onto the ICT head's ARKit shapes: (solve, motion %, seconds)."""
    e = m.n_exp
    exp = 2.0 * (curves(FRAMES, e, rng) - curves(FRAMES, e, rng))  # signed expression coefficients
    jaw = np.zeros((FRAMES, 3))
    jaw[:, 0] = 0.3 * curves(FRAMES, 1, rng)[:, 0]
    take = flame_landmarks(m.flame, exp, jaw)
    neutral, effects = ict_landmark_model(load_ict())
    keep = np.abs(effects).max((1, 2)) > 0  # tongueOut: no ICT shape
    t0 = time.perf_counter()
    solved = solve_landmarks(effects[keep], neutral, take, m.flame_neutral)
    seconds = time.perf_counter() - t0
    motion = np.linalg.norm(solved.target, axis=2).mean() / solved.face_size * 100.0
    return solved, float(motion), seconds


def open_take_onto_synthetic(m: ArkitMap, rng: np.random.Generator) -> tuple[LandmarkSolve, float]:
    """An open take's ICT landmarks solved onto the synthetic head's expression components: (solve, motion %)."""
    weights = np.zeros((FRAMES, 52))
    carried = [i for i, n in enumerate(ARKIT_NAMES) if m.carried[i]]
    weights[:, carried] = 0.8 * curves(FRAMES, len(carried), rng)
    take = arkit_landmarks(m, weights)
    components = 2.0 * np.moveaxis(m.flame.pe[:, :, :20], 2, 0)  # (20, 68, 3): two sigma of each component
    opened = flame_landmarks(m.flame, np.zeros((1, m.n_exp)), np.array([[0.3, 0.0, 0.0]]))[0] - m.flame_neutral
    effects = np.concatenate([components, -components, opened[None]])
    solved = solve_landmarks(effects, m.flame_neutral, take, m.arkit_neutral)
    motion = np.linalg.norm(solved.target, axis=2).mean() / solved.face_size * 100.0
    return solved, float(motion)


def map_figures(prefix: str, m: ArkitMap) -> dict[str, Any]:
    return {f"{prefix}_{k.removesuffix('_pct')}": m.meta["figures"][k] for k in FIGURES}


def installed_flame_figures(opt: MapOptions) -> dict[str, Any]:
    """The installed FLAME's map figures (its cached map, built when missing), or {} without FLAME."""
    try:
        head_landmarks("flame", n_exp=opt.n_exp)
    except EmocaError as exc:
        if exc.code != "asset_missing":
            raise
        print(f"# no installed FLAME ({exc.message}): map figures for the synthetic head only", flush=True)
        return {}
    _, m, _ = map_for_head("flame", opt=opt)
    return map_figures("map_flame", m)


def run(args: argparse.Namespace) -> dict[str, Any]:
    opt = dataclasses.replace(MapOptions())
    with tempfile.TemporaryDirectory(prefix="emoca_bench_map_") as folder:
        _, m, _ = map_for_head("synthetic", opt=opt, folder=folder)
    rng = np.random.default_rng(0)
    onto_ict, motion, seconds = flame_take_onto_ict(m, rng)
    onto_synthetic, motion_open = open_take_onto_synthetic(m, rng)
    print(f"# map: synthetic test head (not FLAME), {opt.samples} samples per set, face size "
          f"{face_size(m.flame_neutral):.4f} m; solves: {FRAMES} frames", flush=True)  # fmt: skip
    return {
        **map_figures("map", m),
        **installed_flame_figures(opt),
        "retarget_landmark_error": round(onto_ict.error_pct, 3),
        "retarget_landmark_motion": round(motion, 3),
        "retarget_landmark_error_open": round(onto_synthetic.error_pct, 3),
        "retarget_landmark_motion_open": round(motion_open, 3),
        "retarget_solve_frames_per_s": round(FRAMES / seconds, 1),
    }
