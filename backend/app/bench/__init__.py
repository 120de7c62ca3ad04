"""`python -m backend bench NAME|all [--device ...]`: the benchmark registry; one ``name: value`` line per result.

Every workstream registers its benchmark in :data:`BENCHMARKS` as ``name -> "module:function"`` (the function
takes the parsed args and returns ``{name: value}``, printed here) or ``name -> "python ARGS..."`` (run with this
interpreter in a subprocess, its stdout relayed). ``all`` runs every registered benchmark, in order, even after
one fails; a failure (an exception, a missing module, a non-zero subprocess exit) is reported on stderr and makes
the exit status 1, so ``make bench`` fails when any benchmark does.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys

from emoca_contract.errors import EmocaError

BENCHMARKS: dict[str, str] = {
    "capture": "backend.app.bench.capture:run",
    "open_capture": "backend.app.bench.capture:run_open",
    "batch": "backend.app.bench.batch:run",
    "open_demo": "backend.app.bench.demo:run",
    "render": "backend.app.bench.render:run",
    "precision": "backend.app.bench.precision:run",
    "train": "backend.app.bench.train:run",
    "blender": "python -m emoca_blender.bench",
    "retarget": "python -m emoca_blender.retarget.bench",
    "retarget_landmarks": "backend.app.bench.retarget_map:run",
    "likeness": "backend.app.bench.likeness:run",
}
SUBPROCESS_PREFIX = "python "


class BenchmarkFailed(Exception):
    """A benchmark subprocess exited with a non-zero status."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", nargs="?", default="all", help=f"one of {', '.join(BENCHMARKS)} or all")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--frames", type=int, default=100, help="frames of the generated capture clip")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is reported")


def peak_rss_mb() -> float:
    """The process's peak resident memory in MiB (getrusage: KiB on Linux, bytes on macOS)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _run_subprocess(target: str) -> None:
    """``python ARGS...`` with this interpreter; stdout relayed, a non-zero exit raised."""
    cmd = [sys.executable, *shlex.split(target[len(SUBPROCESS_PREFIX) :])]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    if proc.returncode:
        raise BenchmarkFailed(f"exited with status {proc.returncode}")


def _run_function(target: str, args: argparse.Namespace) -> None:
    """``module:function``: imported and called with ``args``; each result printed as ``key: value``."""
    module, func = target.split(":")
    results = getattr(importlib.import_module(module), func)(args)
    for key, value in results.items():
        print(f"{key}: {value}", flush=True)


def run_one(name: str, args: argparse.Namespace) -> None:
    """Run one registered benchmark; raises when it fails."""
    target = BENCHMARKS[name]
    if target.startswith(SUBPROCESS_PREFIX):
        _run_subprocess(target)
    else:
        _run_function(target, args)


def run(args: argparse.Namespace) -> int:
    """Run ``args.which`` (or every benchmark for ``all``); 1 when any of them failed, else 0."""
    names = list(BENCHMARKS) if args.which == "all" else [args.which]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise EmocaError("config_invalid", f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    failed = []
    for name in names:
        try:
            run_one(name, args)
        except BenchmarkFailed as exc:  # the subprocess printed its own error on stderr
            print(f"bench {name}: {exc}", file=sys.stderr)
            failed.append(name)
        except Exception as exc:  # one failing benchmark must not hide the others
            print(f"bench {name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"bench: {len(failed)} of {len(names)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
