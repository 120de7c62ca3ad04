"""The benchmark registry names (failure counting: tests/test_bench_registry.py; no timing asserted)."""

from __future__ import annotations

from backend.app import bench


def test_default_registry_names():
    assert {"capture", "render", "train", "blender"} <= set(bench.BENCHMARKS)
    assert bench.BENCHMARKS["capture"] == "backend.app.bench.capture:run"
