"""`bench all` runs every registered benchmark; any failure makes the exit status 1 (`make bench` fails)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util

from backend.app import bench
from backend.app.cli import main

ARGS = argparse.Namespace(which="all", device="cpu", frames=10, batch_size=None, repeats=1)


def fake_benchmark(args) -> dict:
    return {"fake_metric": 1.5, "fake_device": args.device}


def broken_benchmark(args) -> dict:
    raise RuntimeError("the benchmark broke")


def test_a_failing_benchmark_fails_the_run_and_the_others_still_run(monkeypatch, capsys):
    monkeypatch.setattr(
        bench,
        "BENCHMARKS",
        {
            "first": "tests.test_bench_registry:fake_benchmark",
            "exits_1": "python -c \"import sys; print('partial_metric: 2'); sys.exit(1)\"",
            "raises": "tests.test_bench_registry:broken_benchmark",
            "not_installed": "backend.no_such_module:run",
            "last": "tests.test_bench_registry:fake_benchmark",
        },
    )
    assert bench.run(ARGS) == 1
    out, err = capsys.readouterr()
    # every benchmark ran, in order, the failing subprocess's own output relayed
    assert out.splitlines() == [
        "fake_metric: 1.5",
        "fake_device: cpu",
        "partial_metric: 2",
        "fake_metric: 1.5",
        "fake_device: cpu",
    ]
    assert "bench exits_1: exited with status 1" in err
    assert "bench raises: failed: RuntimeError: the benchmark broke" in err
    assert "bench not_installed: failed: ModuleNotFoundError" in err
    assert "3 of 5 failed: exits_1, raises, not_installed" in err


def test_exit_status_through_the_cli(monkeypatch, capsys):
    """`python -m backend bench all` returns run()'s status: 0 when all pass, 1 when the subprocess one fails."""
    passing = {
        "first": "tests.test_bench_registry:fake_benchmark",
        "cli": "python -c \"print('cli_metric: 3')\"",
    }
    monkeypatch.setattr(bench, "BENCHMARKS", passing)
    assert main(["bench", "all", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == ["fake_metric: 1.5", "fake_device: cpu", "cli_metric: 3"]
    monkeypatch.setattr(bench, "BENCHMARKS", {**passing, "blender": 'python -c "raise SystemExit(3)"'})
    assert main(["bench", "all", "--device", "cpu"]) == 1
    assert "bench blender: exited with status 3" in capsys.readouterr().err
    # one benchmark by name: its own failure is the exit status too
    assert main(["bench", "blender", "--device", "cpu"]) == 1
    assert main(["bench", "first", "--device", "cpu"]) == 0


def test_default_registry_names_real_benchmarks():
    """Every registered target exists: the functions are callable, the subprocess modules are findable."""
    assert set(bench.BENCHMARKS) >= {"capture", "render", "train", "blender"}
    assert bench.BENCHMARKS["capture"] == "backend.app.bench.capture:run"
    for name, target in bench.BENCHMARKS.items():
        if target.startswith(bench.SUBPROCESS_PREFIX):
            args = target[len(bench.SUBPROCESS_PREFIX) :].split()
            assert args[0] == "-m" and importlib.util.find_spec(args[1]) is not None, name
        else:
            module, func = target.split(":")
            assert callable(getattr(importlib.import_module(module), func)), name
