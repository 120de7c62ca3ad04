"""Batch capture on Ray (issue 15): a local Ray cluster (``num_cpus=2``), real actors holding real networks, the
same clips as tests/capture/test_batch.py. Few and slow: each batch starts its actors and loads their networks."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from backend.capture.batch import BatchOptions, run_batch
from backend.capture.manifest import clip_jobs
from emoca_contract.take import read_take

from .test_batch import OPEN, make_batch_clips

pytestmark = [pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    from backend.capture.ray_backend import RayOptions, start_ray

    assert start_ray(RayOptions(init={"num_cpus": 2}))  # a Ray of this machine, as `capture --ray` starts it
    yield
    ray.shutdown()


def _same_takes(a: Path, b: Path) -> None:
    """Array-equal takes whose meta are equal but for when and where they were made (created, run)."""
    ta, tb = read_take(a), read_take(b)
    assert set(ta.arrays) == set(tb.arrays)
    for key in ta.arrays:
        np.testing.assert_array_equal(ta[key], tb[key], err_msg=f"{a.name}: {key}")
    strip = ("created", "run")
    assert {k: v for k, v in ta.meta.items() if k not in strip} == {k: v for k, v in tb.meta.items() if k not in strip}


def test_the_same_batch_through_local_ray_gives_identical_takes_and_resumes(tmp_path, local_ray):
    from backend.capture.ray_backend import RayOptions, run_ray_batch

    clips = make_batch_clips(tmp_path / "clips")
    here = run_batch(clip_jobs([str(tmp_path / "clips")], tmp_path / "here", OPEN), BatchOptions(jobs=2))
    jobs = clip_jobs([str(tmp_path / "clips")], tmp_path / "ray", OPEN)
    on_ray = run_ray_batch(jobs, RayOptions(workers=2))
    assert on_ray.engine == "ray" and not on_ray.cancelled
    assert [(c.name, c.status) for c in on_ray.clips] == [(c.name, c.status) for c in here.clips]
    assert on_ray.count("done") == 18 and on_ray.count("failed") == 2
    codes = {c.name: c.error["code"] for c in on_ray.clips if c.error}
    assert codes == {"corrupt": "input_corrupt", "noface": "no_face"}
    for name in (f"clip{i:02d}" for i in range(18)):
        _same_takes(tmp_path / "here" / f"{name}.npz", tmp_path / "ray" / f"{name}.npz")
    run = read_take(tmp_path / "ray" / "clip00.npz").meta["run"]
    assert run["engine"] == "ray" and run["worker"].startswith("actor ")
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(f"clip{i:02d}.npz" for i in range(18))

    # resume on Ray: the 18 are skipped (untouched), the 2 failures tried again
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.npz")}
    again = run_ray_batch(jobs, RayOptions(workers=2))
    assert again.count("skipped") == 18 and again.count("failed") == 2
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.npz")} == before

    # --ray-return: the takes come back to the driver, which puts them in place: the same takes again
    few = clip_jobs([str(clips["clip01"]), str(clips["clip02"])], tmp_path / "returned", OPEN)
    returned = run_ray_batch(few, RayOptions(workers=2, return_takes=True))
    assert [c.status for c in returned.clips] == ["done", "done"]
    for name in ("clip01", "clip02"):
        _same_takes(tmp_path / "here" / f"{name}.npz", tmp_path / "returned" / f"{name}.npz")


def test_cancel_reaches_every_ray_worker_and_leaves_only_finished_takes(tmp_path, local_ray):
    from backend.capture.ray_backend import RayOptions, run_ray_batch

    clips = make_batch_clips(tmp_path / "clips", n_good=4, frames=40)
    jobs = clip_jobs([str(clips[f"clip{i:02d}"]) for i in range(4)], tmp_path / "out", OPEN)
    cancel = threading.Event()
    report = run_ray_batch(jobs, RayOptions(workers=2), on_clip=lambda i, r: cancel.set(), cancel=cancel)
    assert report.cancelled
    statuses = [c.status for c in report.clips]
    assert statuses.count("done") >= 1 and statuses.count("cancelled") >= 2
    stopped = [c for c in report.clips if c.status == "cancelled" and c.error["message"] == "capture cancelled"]
    assert stopped or statuses.count("done") == 2  # the clip in flight on the other worker was stopped there
    done = {Path(t).name for c in report.clips for t in c.takes}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(done)  # no lock, no half take
    assert all(read_take(tmp_path / "out" / n).n_frames == 40 for n in done)


def _kill_first_worker(batch, killed: list[int]) -> None:
    """Wait for a clip in flight, then SIGKILL the process of the actor capturing it (a crash, as the OS sees it)."""
    deadline = time.monotonic() + 300
    while not batch.flights and time.monotonic() < deadline:
        time.sleep(0.05)
    flight = next(iter(batch.flights.values()))
    pid = ray.get(flight.actor.where.remote())["pid"]
    killed.append(pid)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("retries", [1, 0])
def test_a_ray_worker_that_dies_is_retried_and_a_clip_that_keeps_failing_is_reported(tmp_path, local_ray, retries):
    from backend.capture.ray_backend import RayBatch, RayOptions

    clips = make_batch_clips(tmp_path / "clips", n_good=3, frames=30)
    jobs = clip_jobs([str(clips[f"clip{i:02d}"]) for i in range(3)], tmp_path / "out", OPEN)
    batch = RayBatch(jobs, RayOptions(workers=1, retries=retries))
    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_worker, args=(batch, killed))
    killer.start()
    report = batch.run()
    killer.join()
    first = report.clips[0]
    if retries:  # restarted and retried: every take made, the first by the restarted worker
        assert [c.status for c in report.clips] == ["done", "done", "done"]
        assert f":{killed[0]} " not in first.worker
    else:  # no retry left: that clip is reported, not lost, and the others go on
        assert first.status == "failed" and first.error["code"] == "worker_lost"
        assert [c.status for c in report.clips[1:]] == ["done", "done"]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(Path(t).name for c in report.clips for t in c.takes)
