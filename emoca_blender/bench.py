"""Benchmark: apply a 10,000-frame take (50 expression + jaw + head + correctives + emotion channels).

    python -m emoca_blender.bench [--frames 10000] [--insert-frames 200]

Prints ``blender_apply_seconds: X`` (read + validate + plan + bulk keyframe writing, the whole apply_take) and
``blender_apply_speedup: Y``: the time the same keys take with ``keyframe_insert`` (one call per channel per
frame, the way many importers do it) divided by X. keyframe_insert is timed on the first ``--insert-frames``
frames and extrapolated linearly to the full take (said on stderr); inserting into longer curves only gets
slower, so the extrapolation flatters keyframe_insert. Numpy-only synthetic data (the add-on does not import
the backend): a random head with FLAME's sizes and a take in the documented file format.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np

from .apply import JAW_POSE_KEYS, apply_take, prop_name
from .rig import build_rig, rig_mesh

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def synthetic_rig(
    n_vertices: int = 5023, n_faces: int = 9976, n_shape: int = 100, n_exp: int = 50, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.08, (n_vertices, 3)).astype(np.float32)
    faces = np.stack(
        [np.arange(n_faces) % n_vertices, (np.arange(n_faces) + 1) % n_vertices, (np.arange(n_faces) + 2) % n_vertices],
        1,
    ).astype(np.int32)
    reg = rng.uniform(0, 1, (5, n_vertices)).astype(np.float32)
    reg /= reg.sum(1, keepdims=True)
    w = rng.uniform(0, 1, (n_vertices, 5)).astype(np.float32) ** 4
    w /= w.sum(1, keepdims=True)
    return {
        "v_template": v,
        "faces": faces,
        "shapedirs": rng.normal(0, 1e-3, (n_vertices, 3, n_shape)).astype(np.float32),
        "expdirs": rng.normal(0, 1e-3, (n_vertices, 3, n_exp)).astype(np.float32),
        "posedirs": rng.normal(0, 1e-3, (n_vertices, 3, 36)).astype(np.float32),
        "J_regressor": reg,
        "joints": (reg @ v).astype(np.float32),
        "parents": np.array([-1, 0, 1, 1, 1], np.int32),
        "weights": w,
        "meta": {"format": "emoca-rig", "version": 1, "model": "benchmark head (not FLAME)"},
    }


def write_take(path: Path, n: int, n_exp: int = 50, fps: float = 30.0, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps

    def curves(d: int, amp: float) -> np.ndarray:
        f = rng.uniform(0.1, 1.5, (1, d))
        return (amp * np.sin(2 * np.pi * f * t[:, None] + rng.uniform(0, 6, (1, d)))).astype(np.float32)

    probs = np.exp(curves(len(CLASSES), 2.0))
    meta = {
        "format": "emoca-take",
        "version": 1,
        "source": {"path": "bench.mp4", "fps": fps, "width": 640, "height": 360, "frame_count": n},
        "emotion": {"classes": CLASSES},
    }
    np.savez(
        path,
        frame=np.arange(n, dtype=np.int64),
        time=t,
        valid=np.ones(n, bool),
        exp=curves(n_exp, 1.0),
        global_pose=curves(3, 0.2),
        jaw_pose=np.abs(curves(3, 0.1)),
        cam=np.tile([8.0, 0, 0], (n, 1)).astype(np.float32),
        crop=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        valence=curves(1, 0.6)[:, 0],
        arousal=curves(1, 0.4)[:, 0],
        expression=(probs / probs.sum(1, keepdims=True)).astype(np.float32),
        meta=np.array(json.dumps(meta)),
    )
    return path


def insert_keys(arm, take_path: Path, n_frames: int) -> int:
    """The slow way: set each value and keyframe_insert it, frame by frame (same channels as apply_take)."""
    key = rig_mesh(arm).data.shape_keys
    with np.load(take_path, allow_pickle=False) as npz:
        exp, jaw, head = npz["exp"], npz["jaw_pose"], npz["global_pose"]
        val, aro, expr = npz["valence"], npz["arousal"], npz["expression"]
    from emoca_contract.rotations import axis_angle_to_quat, quat_to_matrix

    qj, qh = axis_angle_to_quat(jaw[:n_frames]), axis_angle_to_quat(head[:n_frames])
    corr = (quat_to_matrix(qj) - np.eye(3)).reshape(-1, 9)
    for name in ["emoca_valence", "emoca_arousal"] + [prop_name(c) for c in CLASSES]:
        arm[name] = 0.0
    jb, rb = arm.pose.bones["jaw"], arm.pose.bones["root"]
    n = 0
    for f in range(n_frames):
        frame = f + 1
        for i in range(exp.shape[1]):
            kb = key.key_blocks[f"Exp{i:03d}"]
            kb.value = float(exp[f, i])
            kb.keyframe_insert("value", frame=frame)
        for i, name in enumerate(JAW_POSE_KEYS):
            kb = key.key_blocks[name]
            kb.value = float(corr[f, i])
            kb.keyframe_insert("value", frame=frame)
        jb.rotation_quaternion = qj[f].tolist()
        jb.keyframe_insert("rotation_quaternion", frame=frame)
        jb.keyframe_insert("location", frame=frame)
        rb.rotation_quaternion = qh[f].tolist()
        rb.keyframe_insert("rotation_quaternion", frame=frame)
        rb.keyframe_insert("location", frame=frame)
        arm["emoca_valence"], arm["emoca_arousal"] = float(val[f]), float(aro[f])
        arm.keyframe_insert('["emoca_valence"]', frame=frame)
        arm.keyframe_insert('["emoca_arousal"]', frame=frame)
        for c, cls in enumerate(CLASSES):
            arm[prop_name(cls)] = float(expr[f, c])
            arm.keyframe_insert(f'["{prop_name(cls)}"]', frame=frame)
        n += exp.shape[1] + 9 + 4 + 3 + 4 + 3 + 2 + len(CLASSES)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emoca_blender.bench")
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--insert-frames", type=int, default=200)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        take = write_take(Path(tmp) / "bench.npz", args.frames)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.scene.render.fps = 30
        rig = synthetic_rig()
        arm = build_rig(rig)
        t0 = time.perf_counter()
        action = apply_take(arm, take)
        fast = time.perf_counter() - t0
        n_curves = sum(len(cb.fcurves) for cb in _bags(action, arm))
        n_keys = n_curves * args.frames
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.scene.render.fps = 30
        arm = build_rig(rig)
        m = min(args.insert_frames, args.frames)
        t0 = time.perf_counter()
        n_inserted = insert_keys(arm, take, m)
        slow_sub = time.perf_counter() - t0
    slow = slow_sub * args.frames / m
    print(
        f"# {args.frames} frames, {n_curves} F-curves, {n_keys} keys written by apply_take in {fast:.3f} s "
        f"(Blender {bpy.app.version_string})",
        file=sys.stderr,
    )
    print(
        f"# keyframe_insert: {n_inserted} keys for the first {m} frames took {slow_sub:.3f} s; extrapolated "
        f"linearly to {args.frames} frames: {slow:.1f} s (an underestimate: insertion slows as curves grow)",
        file=sys.stderr,
    )
    print(f"blender_apply_seconds: {fast:.4f}")
    print(f"blender_apply_speedup: {slow / fast:.1f}")
    return 0


def _bags(action, arm):
    from .animation import fcurves_for

    key = rig_mesh(arm).data.shape_keys
    return [fcurves_for(action, arm), fcurves_for(key.animation_data.action, key)]


if __name__ == "__main__":
    sys.exit(main())
