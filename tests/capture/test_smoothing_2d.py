"""Smoothing of the take's 2D channels (crop, landmarks, the detector's 478 points) and of ARKit scores: the same
filter as the other channels, observed rows only for detector outputs, slice by slice from disk for the large
ones (memory bounded by a slice, not the clip), and version 1 takes (no raw_ of them) still re-smoothable."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np

from backend.capture.pipeline import finalize_track
from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from backend.take.smoothing import SmoothingOptions, resmooth_take, smooth_channels, smooth_large, smoothing_meta
from backend.take.writer import TakeWriter
from emoca_contract.take import SMOOTHED_BY_KIND, read_take

FPS = 30.0


def _points(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) smooth point tracks and the same with jitter, float32 frame pixels."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None, None] / FPS
    clean = 200 + 40 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6, (1, k, 2)))
    return clean.astype(np.float32), (clean + rng.normal(0, 1.0, clean.shape)).astype(np.float32)


def _jitter(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, n=2, axis=0)).mean())


def test_large_channels_smoothed_in_slices_equal_the_whole():
    _, noisy = _points(120, 50)
    valid = np.ones(120, bool)
    valid[60:64] = False
    whole = smooth_channels({"detected_landmarks": noisy}, valid, FPS)["detected_landmarks"]
    for block in (1, 7, 16, 64):
        out = smooth_large("detected_landmarks", noisy, np.zeros_like(noisy), valid, FPS, block=block)
        np.testing.assert_allclose(out, whole, atol=1e-5, err_msg=str(block))
    assert _jitter(whole[:60]) < 0.3 * _jitter(noisy[:60])  # smoothed: the jitter is mostly gone


def test_detector_points_skip_interpolated_rows():
    """Rows filled across a gap hold no detector points (zeros): filtering over them would drag the neighbours
    towards zero; detector outputs are filtered over observed rows only and the gap keeps its zeros."""
    clean, noisy = _points(90, 4)
    noisy[40:43] = 0
    fill = np.zeros(90, bool)
    fill[40:43] = True
    valid = np.ones(90, bool)  # the gap rows are valid (interpolated) for the other channels
    out = smooth_channels({"detected_landmarks": noisy}, valid, FPS, interpolated=fill)["detected_landmarks"]
    assert not out[40:43].any()
    near = np.r_[35:40, 43:48]
    assert np.abs(out[near] - clean[near]).max() < 3.0
    dragged = smooth_channels({"detected_landmarks": noisy}, valid, FPS)["detected_landmarks"]  # no mask: wrong
    assert np.abs(dragged[near] - clean[near]).max() > 10.0


def test_arkit_scores_stay_scores():
    rng = np.random.default_rng(1)
    steps = (np.arange(90) // 15) % 2  # a channel switching on and off: the filter overshoots both ends
    scores = np.clip(np.stack([steps, 1 - steps], 1) + rng.normal(0, 0.05, (90, 2)), 0, 1).astype(np.float32)
    out = smooth_channels({"arkit": scores}, np.ones(90, bool), FPS, SmoothingOptions(strength=0.2))["arkit"]
    assert out.dtype == np.float32 and (out >= 0).all() and (out <= 1).all()
    assert not np.allclose(out, scores)


def test_a_version_1_take_without_2d_raw_values_can_be_resmoothed(tmp_path):
    take = make_synthetic_take(60, fps=FPS, seed=2)
    arrays = {k: v for k, v in take.arrays.items() if k not in ("raw_crop", "raw_landmarks", "raw_detected_landmarks")}
    rng = np.random.default_rng(0)
    arrays["landmarks"] = arrays["landmarks"] + rng.normal(0, 1.0, arrays["landmarks"].shape).astype(np.float32)
    meta = {k: v for k, v in take.meta.items() if k != "kind"}
    meta["version"] = 1
    path = tmp_path / "v1.npz"
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    out = read_take(resmooth_take(path, tmp_path / "again.npz", SmoothingOptions("butterworth", 0.7)))
    for k in ("crop", "landmarks", "detected_landmarks"):
        np.testing.assert_array_equal(out["raw_" + k], arrays[k], err_msg=k)  # its values were the raw ones
    assert _jitter(out["landmarks"]) < 0.5 * _jitter(arrays["landmarks"])


def test_open_synthetic_take_carries_every_raw_value():
    take = make_synthetic_open_take(10)
    for k in SMOOTHED_BY_KIND["open"]:
        np.testing.assert_array_equal(take["raw_" + k], take[k], err_msg=k)


def _finalise_peak(tmp_path, n: int, k: int) -> tuple[int, np.ndarray, object]:
    """Write and finalise an n-frame open take with k detector points; (Python-heap peak during finalisation,
    the raw points, the take read back)."""
    _, noisy = _points(n, k)
    src = make_synthetic_open_take(n, fps=FPS)
    keys = ("confidence", "crop", "arkit", "global_pose", "translation", "valence", "arousal", "expression", "valid",
            "interpolated")  # fmt: skip
    writer = TakeWriter(tmp_path / f"parts{k}" / "long.npz")
    for a in range(0, n, 500):
        writer.append_rows({**{key: src[key][a : a + 500] for key in keys}, "detected_landmarks": noisy[a : a + 500]})
    opts = SmoothingOptions()
    meta = {**src.meta, "gaps": {"max_interpolated": 5}, "smoothing": smoothing_meta(opts)}
    index, times = np.arange(n, dtype=np.int64), np.arange(n) / FPS
    tracemalloc.start()
    try:
        path = finalize_track(writer, tmp_path / f"long{k}.npz", meta, index, times, opts, 5, FPS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not (tmp_path / f"parts{k}" / ".long.npz.parts").exists()
    assert list((tmp_path / f"parts{k}").iterdir()) == []  # the writer's own parts folder is gone, whatever its name
    return peak, noisy, read_take(path)


def test_finalising_a_long_take_holds_a_slice_of_the_points_not_the_column(tmp_path):
    """3000 frames of 478 points are 11.5 MB a column (and the take has two: raw and smoothed). Finalising keeps
    them on disk and filters them a slice at a time: the points add a small fraction of one column to the peak
    of finalising the same take with 16 points."""
    n = 3000
    few, _, _ = _finalise_peak(tmp_path, n, 16)
    many, noisy, take = _finalise_peak(tmp_path, n, 478)
    column_bytes = n * 478 * 2 * 4
    assert many - few < 0.15 * column_bytes, (few, many)
    np.testing.assert_array_equal(take["raw_detected_landmarks"], noisy)
    expected = smooth_channels({"detected_landmarks": noisy[:, :8]}, np.ones(n, bool), FPS, SmoothingOptions())
    np.testing.assert_allclose(take["detected_landmarks"][:, :8], expected["detected_landmarks"], atol=1e-4)
