"""Synthetic takes for tests and benchmarks (numpy only): smooth random curves, honestly named in ``meta``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from emoca_contract.take import SMOOTHED_KEYS, Take, base_meta

FER_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def make_synthetic_take(
    n_frames: int,
    n_exp: int = 50,
    fps: float = 30.0,
    seed: int = 0,
    n_landmarks: int = 478,
    classes: list[str] | None = None,
    invalid: Iterable[int] = (),
) -> Take:
    """A plausible take for tests (numpy only): smooth random curves, frames ``invalid`` hold zeros.

    The expression, pose and emotion curves are sums of slow sinusoids, so keyframe tests see real motion.
    """
    rng = np.random.default_rng(seed)
    classes = list(classes or FER_CLASSES)
    n = int(n_frames)
    t = np.arange(n) / fps

    def curves(d: int, amp: float) -> np.ndarray:
        freq = rng.uniform(0.1, 1.5, size=(1, d))
        phase = rng.uniform(0, 2 * np.pi, size=(1, d))
        return (amp * np.sin(2 * np.pi * freq * t[:, None] + phase)).astype(np.float32)

    valid = np.ones(n, bool)
    valid[list(invalid)] = False
    logits = curves(len(classes), 2.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = np.full(n, 8.0, np.float32)
    crop = np.tile(np.array([[1.0, 0, 200], [0, 1.0, 60], [0, 0, 1]], np.float32), (n, 1, 1))
    landmarks = (rng.uniform(40, 180, size=(1, 68, 2)) + curves(2, 3.0)[:, None, :]).astype(np.float32)
    det = (rng.uniform(40, 180, size=(1, n_landmarks, 2)) + curves(2, 3.0)[:, None, :]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "frame": np.arange(n, dtype=np.int64),
        "time": t.astype(np.float64),
        "valid": valid,
        "interpolated": np.zeros(n, bool),
        "confidence": np.full(n, 0.95, np.float32),
        "shape": np.tile(rng.normal(0, 0.5, size=(1, 100)).astype(np.float32), (n, 1)),
        "exp": curves(n_exp, 1.0),
        "global_pose": curves(3, 0.2),
        "jaw_pose": np.abs(curves(3, 0.1)) * np.array([1, 0, 0], np.float32),
        "cam": np.stack([s, *curves(2, 0.01).T], 1).astype(np.float32),
        "crop": crop,
        "landmarks": landmarks,
        "detected_landmarks": det,
        "valence": curves(1, 0.6)[:, 0],
        "arousal": curves(1, 0.4)[:, 0],
        "expression": probs.astype(np.float32),
    }
    for key in arrays:
        if key not in ("frame", "time", "valid", "interpolated"):
            arrays[key][~valid] = 0
    for key in SMOOTHED_KEYS:
        arrays["raw_" + key] = arrays[key].copy()
    meta = base_meta(
        source={
            "path": "synthetic",
            "fps": fps,
            "width": 640,
            "height": 360,
            "frame_count": n,
            "rotation": 0,
            "frames": [0, n, 1],
        },
        track={"id": 0, "selection": "largest", "n_tracks": 1},
        model={
            "name": "synthetic take (not a capture)",
            "trained": False,
            "flame": "synthetic test head (not FLAME)",
            "device": "cpu",
        },
        emotion={"model": "synthetic", "classes": classes, "valence_arousal": "synthetic curves"},
        smoothing={"method": "off", "strength": 0.0, "groups": []},
        gaps={"max_interpolated": 0},
        fallbacks=["synthetic take"],
    )
    return Take(arrays=arrays, meta=meta)
