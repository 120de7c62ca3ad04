"""Batch capture (issue 15): many clips in one process, decode + detect in worker processes, resume, one report.

Real parts: PyAV-encoded clips (the astronaut's face moving, a face-free background, a truncated MP4), the real
Face Landmarker in real worker processes, the real emotion network, the real CLI in a subprocess. No timing is
asserted anywhere.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backend.capture.batch import BatchOptions, NetworkCache, complete_takes, run_batch
from backend.capture.manifest import ClipJob, clip_jobs, is_batch_input
from backend.capture.options import CaptureOptions, make_smoothing
from emoca_contract import protocol
from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 900  # generous: the machine is slow and shared; no test asserts a duration
ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
N_GOOD = 18
OPEN = CaptureOptions(device="cpu", model="open")


def make_batch_clips(folder: Path, n_good: int = N_GOOD, frames: int = 8) -> dict[str, Path]:
    """``n_good`` short clips with a face (240x136, moving), a corrupt one (a real MP4 cut short: its index is
    gone) and one without a face; returns name -> path."""
    from backend.synthetic.clips import make_astronaut_clip, make_no_face_clip

    folder.mkdir(parents=True, exist_ok=True)
    clips = {}
    for i in range(n_good):
        motion = ("pan", "static")[i % 2]
        clips[f"clip{i:02d}"] = make_astronaut_clip(
            folder / f"clip{i:02d}.mp4", n_frames=frames, size=(240, 136), motion=motion, face_height=70
        ).path
    whole = make_astronaut_clip(folder / "whole.mp4", n_frames=frames, size=(240, 136), face_height=70).path
    data = whole.read_bytes()
    whole.unlink()
    clips["corrupt"] = folder / "corrupt.mp4"
    clips["corrupt"].write_bytes(data[: len(data) // 3])
    clips["noface"] = make_no_face_clip(folder / "noface.mp4", n_frames=6, size=(240, 136)).path
    return clips


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend", "capture", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _stamps(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*.npz"))}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_batch_clips(tmp_path_factory.mktemp("batch") / "prises é")


# ---------------------------------------------------------------------------------------------------------------
# what a batch captures


def test_inputs_expand_to_clips_with_their_options_and_take_names(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("b.mp4", "a.MOV", ".hidden.mp4", "notes.txt"):
        (shots / name).write_bytes(b"x")
    frames = tmp_path / "seq"
    frames.mkdir()
    (frames / "f_0001.png").write_bytes(b"x")
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "input,output,face,max_gap,detail,smooth,smooth_strength\n"
        "shots/b.mp4,hero,all,3,true,one_euro,0.25\n"
        "seq,,,,,,\n",
        encoding="utf-8",
    )
    jobs = clip_jobs([str(shots), str(manifest)], tmp_path / "out", OPEN)
    assert [Path(j.input).name for j in jobs] == ["a.MOV", "b.mp4", "b.mp4", "seq"]
    assert [Path(j.output).name for j in jobs] == ["a.npz", "b.npz", "hero.npz", "seq.npz"]
    hero = jobs[2].options
    assert (hero.face, hero.max_gap, hero.detail, hero.model) == ("all", 3, True, "open")
    assert hero.smoothing == make_smoothing("one_euro", 0.25)
    assert jobs[3].options == OPEN  # empty cells: the command's options
    assert is_batch_input(str(shots)) and is_batch_input(str(manifest)) and not is_batch_input(str(frames))
    # a JSON manifest: common options, then each row's over them
    doc = {"options": {"frames": "0:4"}, "clips": [str(shots / "b.mp4"), {"input": "shots/a.MOV", "frames": "2:"}]}
    (tmp_path / "list.json").write_text(json.dumps(doc), encoding="utf-8")
    jobs = clip_jobs([str(tmp_path / "list.json")], tmp_path / "out", OPEN)
    assert [j.options.frames for j in jobs] == ["0:4", "2:"]
    # a glob, and the same clip named twice: once
    jobs = clip_jobs([str(shots / "*.mp4"), str(shots / "b.mp4")], tmp_path / "out", OPEN)
    assert [Path(j.input).name for j in jobs] == ["b.mp4"]


@pytest.mark.parametrize(
    "make, code, fragment",
    [
        (lambda d: ([str(d / "none*.mp4")], d / "out"), "input_missing", "no file matches"),
        (lambda d: ([str(d / "a" / "x.mp4"), str(d / "b" / "x.mp4")], d / "out"), "config_invalid", "both write"),
        (lambda d: ([str(d / "a" / "x.mp4")], d / "take.npz"), "config_invalid", "into a folder"),
        (lambda d: ([str(d / "bad.csv")], d / "out"), "config_invalid", "'input' column"),
        (lambda d: ([str(d / "typed.csv")], d / "out"), "config_invalid", "max_gap"),
    ],
)
def test_a_batch_that_cannot_run_is_refused_before_any_work(tmp_path, make, code, fragment):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.mp4").write_bytes(b"x")
    (tmp_path / "bad.csv").write_text("footage\nx.mp4\n", encoding="utf-8")
    (tmp_path / "typed.csv").write_text("input,max_gap\na/x.mp4,lots\n", encoding="utf-8")
    inputs, out = make(tmp_path)
    with pytest.raises(EmocaError) as err:
        clip_jobs(inputs, out, OPEN)
    assert err.value.code == code and fragment in err.value.message
    assert not (tmp_path / "out").exists()


def test_a_capture_request_or_command_line_is_a_batch_only_when_it_asks_for_one_and_bad_batch_fields_are_refused(
    tmp_path,
):
    import argparse

    from backend.app import capture as capture_cmd
    from backend.app.serve import request_args

    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    one = {"id": 1, "input": str(tmp_path / "a.mp4"), "output": str(tmp_path / "a.npz")}
    assert set(request_args("capture", one)) == {"options"}  # one clip: the single capture, as before
    many = dict(one, inputs=[str(tmp_path / "b.mp4")], output=str(tmp_path / "out"), options={"model": "open"})
    args = request_args("capture", many)
    assert [Path(j.output).name for j in args["clips"]] == ["a.npz", "b.npz"] and args["ray"] is None
    assert args["clips"][1].options.model == "open" and args["batch"].jobs is None
    folder = request_args("capture", dict(one, input=str(tmp_path), output=str(tmp_path / "out"), overwrite=True))
    assert len(folder["clips"]) == 2 and folder["batch"].overwrite  # a folder of videos is a batch by itself
    for bad, fragment in ((dict(many, jobs=0), "jobs is 0"), (dict(many, ray_return=True), "ray_return needs ray")):
        with pytest.raises(EmocaError) as err:
            request_args("capture", bad)
        assert err.value.code == "config_invalid" and fragment in err.value.message
    # the command line: the same rules
    parser = argparse.ArgumentParser()
    capture_cmd.configure(parser)
    assert not capture_cmd.is_batch(parser.parse_args([str(tmp_path / "a.mp4"), "-o", str(tmp_path / "a.npz")]))
    assert capture_cmd.is_batch(parser.parse_args([str(tmp_path / "a.mp4"), "-o", "out", "--jobs", "1"]))
    assert capture_cmd.is_batch(parser.parse_args([str(tmp_path), "-o", "out"]))
    with pytest.raises(EmocaError) as err:
        capture_cmd.ray_options(parser.parse_args([str(tmp_path), "-o", "out", "--ray-return"]))
    assert err.value.code == "config_invalid" and "--ray-return needs --ray" in err.value.message
    ray = capture_cmd.ray_options(parser.parse_args([str(tmp_path), "-o", "out", "--ray", "--ray-gpus", "0.25"]))
    assert (ray.address, ray.gpus_per_worker, ray.return_takes) == ("local", 0.25, False)


# ---------------------------------------------------------------------------------------------------------------
# issue 15, "Done when": 20 clips, one corrupt and one without a face; then a resume


@pytest.mark.slow
def test_twenty_clips_give_eighteen_takes_two_reported_failures_and_a_resume_redoes_nothing(tmp_path, clips):
    out, report = tmp_path / "takes", tmp_path / "report.json"
    run = _cli(str(clips["clip00"].parent), "-o", str(out), "--model", "open", "--device", "cpu", "--jobs", "2",
               "--report", str(report))  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]  # some clips failed: the project's error status
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert doc["totals"]["clips"] == 20 and doc["totals"]["done"] == N_GOOD and doc["totals"]["failed"] == 2
    by_name = {c["name"]: c for c in doc["clips"]}
    assert by_name["corrupt"]["error"]["code"] == "input_corrupt"
    assert by_name["noface"]["error"]["code"] == "no_face" and by_name["noface"]["takes"] == []
    for name in (f"clip{i:02d}" for i in range(N_GOOD)):
        clip = by_name[name]
        assert clip["status"] == "done" and clip["frames"] == 8 and clip["faces"] >= 6 and clip["fps"] > 0
        assert clip["takes"] == [str(out / f"{name}.npz")]
    # the terminal's table: one line per clip, then the totals
    table = run.stdout.splitlines()
    assert table[0].split()[:4] == ["clip", "status", "frames", "faces"]
    assert any(line.startswith("corrupt") and "[input_corrupt]" in line for line in table)
    assert "20 clips: 18 done, 2 failed" in table[-1]
    # exactly the 18 takes: no lock, work folder or partial file of any clip is left
    assert sorted(p.name for p in out.iterdir()) == sorted(f"clip{i:02d}.npz" for i in range(N_GOOD))
    take = read_take(out / "clip04.npz")
    assert take.meta["source"]["path"] == str(clips["clip04"]) and take.meta["options"]["model"] == "open"
    assert take.meta["run"]["engine"] == "batch" and take.n_frames == 8

    # resume: nothing redone (contents and modification times unchanged), the report says skipped
    before = _stamps(out)
    again = _cli(str(clips["clip00"].parent), "-o", str(out), "--model", "open", "--device", "cpu", "--jobs", "2",
                 "--progress", "json")  # fmt: skip
    assert again.returncode == 2, again.stderr[-3000:]
    events = [protocol.decode(line) for line in again.stdout.splitlines()]
    result = events[-1]
    assert result["type"] == "result" and result["totals"]["skipped"] == N_GOOD and result["totals"]["failed"] == 2
    assert sorted(result["files"]) == sorted(str(out / f"clip{i:02d}.npz") for i in range(N_GOOD))
    assert {c["name"]: c["status"] for c in result["clips"]}["clip07"] == "skipped"
    ended = [e for e in events if e["type"] == "log" and "clip_result" in e]
    assert len(ended) == 20  # each clip's end said as it happened
    assert _stamps(out) == before

    # a clip that changed since its take was made is captured again; the others are still skipped
    st = clips["clip03"].stat()
    os.utime(clips["clip03"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = _cli(str(clips["clip00"].parent), "-o", str(out), "--model", "open", "--device", "cpu", "--progress",
                 "none", "--report", str(report))  # fmt: skip
    assert third.returncode == 2
    statuses = {c["name"]: c["status"] for c in json.loads(report.read_text(encoding="utf-8"))["clips"]}
    assert statuses["clip03"] == "done" and statuses["clip04"] == "skipped"
    after = _stamps(out)
    assert after["clip03.npz"][0] != before["clip03.npz"][0]
    assert {k: v for k, v in after.items() if k != "clip03.npz"} == {
        k: v for k, v in before.items() if k != "clip03.npz"
    }


# ---------------------------------------------------------------------------------------------------------------
# resume's definition of complete


@pytest.mark.slow
def test_a_take_is_complete_only_for_its_clip_and_its_options(tmp_path, clips):
    out = tmp_path / "takes"
    jobs = clip_jobs([str(clips["clip01"]), str(clips["clip02"])], out, OPEN)
    report = run_batch(jobs, BatchOptions(jobs=1))
    assert [c.status for c in report.clips] == ["done", "done"] and report.jobs == 1
    assert complete_takes(jobs[0]) == [out / "clip01.npz"]
    other = ClipJob(jobs[0].input, jobs[0].output, CaptureOptions(device="cpu", model="open", max_gap=2), "clip01")
    assert complete_takes(other) is None  # other options decide other contents: capture again
    swapped = ClipJob(jobs[1].input, jobs[0].output, OPEN, "clip01")
    assert complete_takes(swapped) is None  # another clip's take at this name
    (out / "clip02.npz").write_bytes((out / "clip02.npz").read_bytes()[:500])
    assert complete_takes(jobs[1]) is None  # damaged: not readable
    # overwrite redoes complete takes; the damaged one is redone either way
    before = (out / "clip01.npz").stat().st_mtime_ns
    report = run_batch(jobs, BatchOptions(jobs=1, overwrite=True))
    assert [c.status for c in report.clips] == ["done", "done"]
    assert (out / "clip01.npz").stat().st_mtime_ns != before and read_take(out / "clip02.npz").n_frames == 8


# ---------------------------------------------------------------------------------------------------------------
# workers


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_clip_only_and_is_replaced(tmp_path):
    from backend.capture.pipeline import capture
    from backend.capture.workers import WorkerPool, remote_front_ends
    from backend.synthetic.clips import make_astronaut_clip

    long = make_astronaut_clip(tmp_path / "long.mp4", n_frames=60, size=(240, 136), face_height=70).path
    short = make_astronaut_clip(tmp_path / "short.mp4", n_frames=6, size=(240, 136), face_height=70).path
    nets = NetworkCache().get(OPEN)
    cancel = threading.Event()
    with WorkerPool(1) as pool:
        front = remote_front_ends(pool, cancel)
        killed: list[int] = []

        def kill_worker(done, total, stage, fps, eta):
            if stage == "encode" and done > 0 and not killed:
                pid = pool.workers[0].process.pid
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)  # a crash in the decoder, as the OS sees it

        with pytest.raises(EmocaError) as err:
            capture(long, tmp_path / "long.npz", OPEN, progress=kill_worker, networks=nets, front=front, cancel=cancel)
        assert err.value.code == "worker_lost" and "died" in err.value.message
        assert not (tmp_path / "long.npz").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "short.mp4"]  # no lock, no work folder
        paths = capture(short, tmp_path / "short.npz", OPEN, networks=nets, front=front, cancel=cancel)
        assert read_take(paths[0]).n_frames == 6
        assert pool.workers[0].process.pid != killed[0]
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_a_cancelled_batch_stops_every_clip_keeps_the_finished_ones_and_leaves_no_worker(tmp_path):
    clips = make_batch_clips(tmp_path / "clips", n_good=5, frames=40)
    jobs = clip_jobs([str(clips[f"clip{i:02d}"]) for i in range(5)], tmp_path / "out", OPEN)
    cancel = threading.Event()
    report = run_batch(jobs, BatchOptions(jobs=2), on_clip=lambda i, r: cancel.set(), cancel=cancel)
    assert report.cancelled and not report.ok
    statuses = [c.status for c in report.clips]
    assert statuses.count("done") >= 1 and statuses.count("cancelled") >= 3
    done = {Path(t).name for c in report.clips for t in c.takes}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(done)  # nothing half-written is left
    for name in done:
        assert read_take(tmp_path / "out" / name).n_frames == 40
    assert multiprocessing.active_children() == []
    # the same batch again: the finished clips are skipped, the rest captured
    report = run_batch(jobs, BatchOptions(jobs=2))
    assert report.ok and report.count("skipped") == len(done) and report.count("done") == 5 - len(done)
    assert all(read_take(tmp_path / "out" / f"clip{i:02d}.npz").n_frames == 40 for i in range(5))


@pytest.mark.slow
def test_takes_of_the_same_clip_and_options_are_the_same_whichever_front_end_read_them(tmp_path):
    """A single capture (reader thread) and a batch (worker process) of one clip: equal arrays, equal meta but
    for when and where it ran."""
    from backend.capture.pipeline import capture
    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "same.mp4", n_frames=8, size=(240, 136), face_height=70).path
    single = read_take(capture(clip, tmp_path / "single" / "same.npz", OPEN)[0])
    report = run_batch(clip_jobs([str(clip)], tmp_path / "batch", OPEN), BatchOptions(jobs=1))
    batch = read_take(report.clips[0].takes[0])
    assert set(single.arrays) == set(batch.arrays)
    for key in single.arrays:
        np.testing.assert_array_equal(single[key], batch[key], err_msg=key)
    strip = ("created", "run")
    assert {k: v for k, v in single.meta.items() if k not in strip} == {
        k: v for k, v in batch.meta.items() if k not in strip
    }
    assert (single.meta["run"]["engine"], batch.meta["run"]["engine"]) == ("capture", "batch")


# ---------------------------------------------------------------------------------------------------------------
# the protocol's capture request


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc), but multiprocessing's resource tracker (one per process
    that used its queues, for the process's whole life)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc (Linux)")
def test_a_batch_request_reports_each_clip_and_a_cancel_reaches_every_worker(tmp_path, clips):
    from .test_serve import Server

    out = tmp_path / "sortie"
    s = Server()
    try:
        inputs = [str(clips["clip05"]), str(clips["noface"])]
        s.send(protocol.make("capture", id="b1", input=str(clips["clip06"]), inputs=inputs, output=str(out),
                             options={"device": "cpu", "model": "open"}, jobs=2))  # fmt: skip
        result, seen = s.until(lambda e: e["type"] in ("result", "error"))
        assert result["type"] == "result", result
        assert result["files"] == [str(out / "clip06.npz"), str(out / "clip05.npz")]
        assert [c["status"] for c in result["clips"]] == ["done", "done", "failed"]
        assert result["clips"][2]["error"]["code"] == "no_face"
        progress = [e for e in seen if e["type"] == "progress"]
        assert {e["clip"] for e in progress} >= {"clip05", "clip06"} and all(e["clips"] == 3 for e in progress)
        assert sorted(e["clip_result"]["name"] for e in seen if e["type"] == "log" and "clip_result" in e) == [
            "clip05", "clip06", "noface"
        ]  # fmt: skip

        long = make_batch_clips(tmp_path / "long", n_good=3, frames=60)
        s.send(protocol.make("capture", id="b2", input=str(long["clip00"]), output=str(out / "long"),
                             inputs=[str(long["clip01"]), str(long["clip02"])],
                             options={"device": "cpu", "model": "open"}, jobs=2))  # fmt: skip
        s.until(lambda e: e["type"] == "progress" and e["stage"] == "encode" and e["done"] > 0)
        assert len(_children(s.proc.pid)) >= 2  # the worker processes
        s.send(protocol.make("cancel", id="b2"))
        ev, _ = s.until(lambda e: e["type"] in ("result", "error"))
        assert ev["type"] == "error" and ev["code"] == "cancelled" and ev["id"] == "b2"
        assert not (out / "long").exists() or list((out / "long").iterdir()) == []
        deadline = time.monotonic() + 30
        while _children(s.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _children(s.proc.pid) == []  # every worker ended with the cancelled batch
    finally:
        code = s.close()
    assert code == 0


@pytest.mark.slow
def test_the_batch_bench_reports_consistent_figures():
    """A real run of `bench batch` (no timing asserted): every figure is there and agrees with the others."""
    import argparse

    from backend.app.bench import BENCHMARKS
    from backend.app.bench.batch import N_CLIPS, run

    assert BENCHMARKS["batch"] == "backend.app.bench.batch:run"
    out = run(argparse.Namespace(device="cpu"))
    assert out["batch_clips"] == N_CLIPS and out["batch_jobs_n"] >= 1
    for jobs in ("1", "n"):
        per_min = 60 * N_CLIPS / out[f"batch_seconds_{jobs}"]
        assert abs(out[f"batch_clips_per_min_{jobs}"] - per_min) < 0.02 * per_min + 0.1
        assert 0 < out[f"batch_first_clip_s_{jobs}"] <= out[f"batch_seconds_{jobs}"] + 0.01
    ratio = out["ray_seconds_n"] / out["batch_seconds_n"]
    assert abs(out["ray_overhead_ratio"] - ratio) < 0.02 * ratio + 0.01
    assert abs(out["batch_jobs_speedup"] - out["batch_seconds_1"] / out["batch_seconds_n"]) < 0.02
