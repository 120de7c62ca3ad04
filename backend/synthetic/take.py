"""Synthetic takes for tests and benchmarks (numpy only): smooth random curves, honestly named in ``meta``.

:func:`make_synthetic_take` gives a FLAME take (exp, jaw, pose, camera), :func:`make_synthetic_open_take` an open
take (the 52 ARKit scores, head rotation and translation); both carry emotion curves and every key of their kind
(docs/formats.md#take-file), with invalid frames all zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.take import SMOOTHED_BY_KIND, Take, base_meta

FER_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
Curves = Callable[[int, float], np.ndarray]


def _curves(rng: np.random.Generator, t: np.ndarray) -> Curves:
    """(d, amplitude) -> (N, d) float32 sums of slow sinusoids, so keyframe tests see real motion."""

    def curves(d: int, amp: float) -> np.ndarray:
        freq = rng.uniform(0.1, 1.5, size=(1, d))
        phase = rng.uniform(0, 2 * np.pi, size=(1, d))
        return (amp * np.sin(2 * np.pi * freq * t[:, None] + phase)).astype(np.float32)

    return curves


def _common(curves: Curves, n: int, fps: float, classes: list[str], n_landmarks: int,
            rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """The keys every kind has: frames, times, flags, crop, detector landmarks, head rotation, emotion."""
    logits = curves(len(classes), 2.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    crop = np.tile(np.array([[1.0, 0, 200], [0, 1.0, 60], [0, 0, 1]], np.float32), (n, 1, 1))
    det = (rng.uniform(40, 180, size=(1, n_landmarks, 2)) + curves(2, 3.0)[:, None, :]).astype(np.float32)
    return {
        "frame": np.arange(n, dtype=np.int64),
        "time": (np.arange(n) / fps).astype(np.float64),
        "valid": np.ones(n, bool),
        "interpolated": np.zeros(n, bool),
        "confidence": np.full(n, 0.95, np.float32),
        "global_pose": curves(3, 0.2),
        "crop": crop,
        "detected_landmarks": det,
        "valence": curves(1, 0.6)[:, 0],
        "arousal": curves(1, 0.4)[:, 0],
        "expression": probs.astype(np.float32),
    }


def _finish(arrays: dict[str, np.ndarray], kind: str, invalid: Iterable[int], meta: dict[str, Any]) -> Take:
    """Zero the invalid rows, copy the smoothed channels to raw_*, wrap with meta."""
    valid = arrays["valid"]
    valid[list(invalid)] = False
    for key in arrays:
        if key not in ("frame", "time", "valid", "interpolated"):
            arrays[key][~valid] = 0
    for key in SMOOTHED_BY_KIND[kind]:
        arrays["raw_" + key] = arrays[key].copy()
    return Take(arrays=arrays, meta=meta)


def _meta(kind: str, n: int, fps: float, classes: list[str], model: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return base_meta(
        kind=kind,
        source={
            "path": "synthetic",
            "fps": fps,
            "width": 640,
            "height": 360,
            "frame_count": n,
            "rotation": 0,
            "frames": [0, n, 1],
        },  # fmt: skip
        track={"id": 0, "selection": "largest", "n_tracks": 1},
        model=model,
        emotion={"model": "synthetic", "classes": classes, "valence_arousal": "synthetic curves"},
        smoothing={"method": "off", "strength": 0.0, "groups": []},
        gaps={"max_interpolated": 0},
        fallbacks=["synthetic take"],
        **extra,
    )


def make_synthetic_take(
    n_frames: int,
    n_exp: int = 50,
    fps: float = 30.0,
    seed: int = 0,
    n_landmarks: int = 478,
    classes: list[str] | None = None,
    invalid: Iterable[int] = (),
) -> Take:
    """A plausible FLAME take for tests (numpy only): smooth random curves, frames ``invalid`` hold zeros."""
    rng = np.random.default_rng(seed)
    classes = list(classes or FER_CLASSES)
    n = int(n_frames)
    curves = _curves(rng, np.arange(n) / fps)
    arrays = _common(curves, n, fps, classes, n_landmarks, rng)
    s = np.full(n, 8.0, np.float32)
    arrays.update(
        shape=np.tile(rng.normal(0, 0.5, size=(1, 100)).astype(np.float32), (n, 1)),
        exp=curves(n_exp, 1.0),
        jaw_pose=np.abs(curves(3, 0.1)) * np.array([1, 0, 0], np.float32),
        cam=np.stack([s, *curves(2, 0.01).T], 1).astype(np.float32),
        landmarks=(rng.uniform(40, 180, size=(1, 68, 2)) + curves(2, 3.0)[:, None, :]).astype(np.float32),
    )
    model = {"name": "synthetic take (not a capture)", "trained": False, "flame": "synthetic test head (not FLAME)",
             "device": "cpu"}  # fmt: skip
    return _finish(arrays, "flame", invalid, _meta("flame", n, fps, classes, model))


def make_synthetic_open_take(
    n_frames: int,
    fps: float = 30.0,
    seed: int = 0,
    classes: list[str] | None = None,
    invalid: Iterable[int] = (),
    channels: Iterable[str] = ARKIT_NAMES,
) -> Take:
    """A plausible open take (kind "open") for tests: ARKit scores in [0, 1] on ``channels`` (others 0), a head
    that turns and nods a little, 0.5 m in front of the camera, and emotion curves."""
    rng = np.random.default_rng(seed)
    classes = list(classes or FER_CLASSES)
    n = int(n_frames)
    curves = _curves(rng, np.arange(n) / fps)
    arrays = _common(curves, n, fps, classes, 478, rng)
    driven = np.isin(np.asarray(ARKIT_NAMES), list(channels))
    arkit = (0.5 + 0.5 * curves(len(ARKIT_NAMES), 1.0)) * driven[None, :]
    translation = np.array([0.0, 0.0, -0.5], np.float32) + curves(3, 0.01)
    arrays.update(arkit=arkit.astype(np.float32), translation=translation.astype(np.float32))
    model = {"name": "synthetic open take (not a capture)", "kind": "open", "device": "cpu"}
    arkit_meta = {"names": list(ARKIT_NAMES), "source": "synthetic curves", "unobserved": []}
    return _finish(arrays, "open", invalid, _meta("open", n, fps, classes, model, arkit=arkit_meta))
