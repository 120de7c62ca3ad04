"""The benchmark registry names (failure counting: tests/test_bench_registry.py; no timing asserted)."""

from __future__ import annotations

import pytest

from backend.app import bench


def test_default_registry_names():
    assert {"capture", "open_capture", "render", "train", "blender"} <= set(bench.BENCHMARKS)
    assert bench.BENCHMARKS["capture"] == "backend.app.bench.capture:run"
    assert bench.BENCHMARKS["open_capture"] == "backend.app.bench.capture:run_open"


@pytest.mark.torch
def test_open_capture_bench_reports_its_figures():
    """A short real run (no timing asserted): every figure is there and consistent with the others."""
    import argparse

    from backend.app.bench.capture import run_open

    out = run_open(argparse.Namespace(device="cpu", frames=6, batch_size=None, repeats=1))
    assert out["open_capture_frames"] == 6 and out["open_capture_size"] == "1280x720"
    assert out["open_capture_fps"] > 0 and out["open_capture_detector_fps"] > 0
    ratio = out["open_capture_fps"] / out["open_capture_detector_fps"]
    assert abs(out["open_capture_ratio"] - ratio) < 0.05 * ratio + 0.01
    assert out["open_capture_peak_rss_mb"] > 0
