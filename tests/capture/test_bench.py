"""The benchmark registry: present benchmarks run, absent ones are skipped with a note (no timing asserted)."""

from __future__ import annotations

import argparse

from backend.app import bench


def test_registry_skips_missing_and_runs_present(monkeypatch, capsys):
    monkeypatch.setattr(
        bench,
        "BENCHMARKS",
        {
            "missing": "backend.no_such_module:run",
            "missing_cli": "python -m no_such_package.bench",
            "fake": "tests.capture.test_bench:fake_benchmark",
        },
    )
    args = argparse.Namespace(which="all", device="cpu", frames=10, batch_size=None, repeats=1)
    assert bench.run(args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["fake_metric: 1.5", "fake_count: 3"]
    assert "bench missing: skipped" in err and "bench missing_cli: skipped" in err
    # asking for one that is not installed is an error, not a silent skip
    args.which = "missing"
    assert bench.run(args) == 1


def fake_benchmark(args) -> dict:
    return {"fake_metric": 1.5, "fake_count": 3}


def test_default_registry_names():
    assert {"capture", "render", "train", "blender"} <= set(bench.BENCHMARKS)
    assert bench.BENCHMARKS["capture"] == "backend.app.bench:bench_capture"
