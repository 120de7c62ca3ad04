"""`python -m backend bench precision`: what bf16 buys on this CPU and what it costs against fp32.

On the same crops, with the same reconstructor weights, in one run: ``cpu_fp32_ms_per_crop`` and
``cpu_bf16_ms_per_crop`` (encode + FLAME decode in capture's CPU batches, interleaved ``--repeats`` times, the
best of each: the machine may be shared), ``cpu_bf16_speedup`` = fp32 time / bf16 time, and the accuracy cost of
bf16: max and mean absolute difference of exp, pose (radians) and vertices (mm) against fp32
(``cpu_bf16_max_abs_exp_diff`` etc.). ``cpu_auto_precision`` says what ``--precision auto`` picks here.

The network is the installed trained model when there is one (``backend.assets.resolve_capture``), else the
untrained demo network (same architecture and cost; its differences are those of random weights). The crops are
the astronaut photograph's face (scikit-image) at a few offsets and scales. Registered in
backend.app.bench.BENCHMARKS as "precision".
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

CPU_BATCH = 8  # capture's CPU micro-batch (backend.capture.networks.CPU_MICRO_BATCH)
N_CROPS = 16


def astronaut_crops(n: int = N_CROPS) -> np.ndarray:
    """(n, 224, 224, 3) uint8: the astronaut's face, shifted and scaled a little from crop to crop."""
    from skimage import data
    from skimage.transform import resize

    img = data.astronaut()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        half = int(rng.integers(100, 125))
        cy, cx = 140 + int(rng.integers(-10, 11)), 240 + int(rng.integers(-10, 11))
        out.append(resize(img[cy - half : cy + half, cx - half : cx + half], (224, 224)))
    return (np.stack(out) * 255).astype(np.uint8)


def load_pair():
    """(fp32 reconstructor, bf16 reconstructor, model name) on the CPU, same weights."""
    from backend.assets import resolve_capture
    from backend.models.reconstructor import FaceReconstructor

    found = resolve_capture(None, None)
    kw = {"device": "cpu", "landmarks": found.landmarks, "mediapipe": found.mediapipe}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained / emulated-bf16 warnings: reported as lines instead
        f32 = FaceReconstructor.from_paths(found.model, found.flame, precision="fp32", **kw)
        b16 = FaceReconstructor.from_paths(found.model, found.flame, precision="bf16", **kw)
    return f32, b16, str(f32.info.get("name"))


def reconstruct_all(rec, crops: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """(exp, pose, vertices of every crop, seconds) in capture's CPU batches, without the detail code."""
    t0 = time.perf_counter()
    parts = [rec.reconstruct(crops[a : a + CPU_BATCH], detail=False) for a in range(0, len(crops), CPU_BATCH)]
    seconds = time.perf_counter() - t0
    return {k: np.concatenate([p[k] for p in parts]) for k in ("exp", "pose", "vertices")}, seconds


def differences(b16: dict[str, np.ndarray], f32: dict[str, np.ndarray]) -> dict[str, float]:
    """max / mean |bf16 - fp32| of exp, pose (radians) and vertices (reported in mm)."""
    out = {}
    for key, scale, unit in (("exp", 1.0, ""), ("pose", 1.0, ""), ("vertices", 1000.0, "_mm")):
        d = np.abs(b16[key].astype(np.float64) - f32[key]) * scale
        out[f"cpu_bf16_max_abs_{key}_diff{unit}"] = float(f"{d.max():.3g}")
        out[f"cpu_bf16_mean_abs_{key}_diff{unit}"] = float(f"{d.mean():.3g}")
    return out


def run(args: argparse.Namespace | None = None) -> dict[str, float | str | bool]:
    import torch

    from backend.models.reconstructor import cpu_has_native_bf16

    repeats = max(1, int(getattr(args, "repeats", 3) or 3))
    crops = astronaut_crops()
    f32, b16, name = load_pair()
    reconstruct_all(f32, crops[:CPU_BATCH])  # warm-up: allocator, oneDNN kernels
    reconstruct_all(b16, crops[:CPU_BATCH])
    t32, t16 = [], []
    for _ in range(repeats):  # interleaved, best of each
        ref, s32 = reconstruct_all(f32, crops)
        low, s16 = reconstruct_all(b16, crops)
        t32.append(s32)
        t16.append(s16)
    return {
        "cpu_precision_model": name,
        "cpu_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_auto_precision": "bf16" if cpu_has_native_bf16() else "fp32",
        "cpu_fp32_ms_per_crop": round(1000 * min(t32) / len(crops), 1),
        "cpu_bf16_ms_per_crop": round(1000 * min(t16) / len(crops), 1),
        "cpu_bf16_speedup": round(min(t32) / min(t16), 2),
        **differences(low, ref),
    }


if __name__ == "__main__":
    for k, val in run().items():
        print(f"{k}: {val}")
