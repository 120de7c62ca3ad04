"""`python -m backend serve` and `python -m backend capture --progress json` as real subprocesses."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backend.assets import SPECS
from emoca_contract import protocol
from emoca_contract.errors import EmocaError

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # generous: the CI machine is slow and shared; no test asserts a duration


class Server:
    """A serve subprocess; events are read by a thread into a queue."""

    def __init__(self, *extra: str):
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", *extra],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: queue.Queue = queue.Queue()
        self.raw: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr: list[bytes] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            self.events.put(json.loads(line))  # every stdout line must be JSON: fails the test otherwise
        self.events.put(None)

    def send(self, obj) -> None:
        line = obj if isinstance(obj, str) else json.dumps(obj)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = TIMEOUT) -> dict:
        ev = self.events.get(timeout=timeout)
        assert ev is not None, b"".join(self.stderr)[-3000:].decode(errors="replace")
        protocol.validate(ev)
        return ev

    def until(self, pred, timeout: float = TIMEOUT) -> tuple[dict, list[dict]]:
        seen = []
        while True:
            ev = self.next(timeout)
            seen.append(ev)
            if pred(ev):
                return ev, seen

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(TIMEOUT)


def test_protocol_errors_status_export_train_and_clean_exit(tmp_path):
    s = Server()
    try:
        s.send("this is not json")
        ev = s.next()
        assert ev["type"] == "error" and ev["code"] == "protocol" and ev["id"] is None
        s.send({"type": "capture", "version": 1, "id": "c1"})  # lacks input/output
        ev = s.next()
        assert ev["type"] == "error" and ev["code"] == "protocol" and ev["id"] == "c1"
        s.send({"type": "status", "version": 99, "id": "s0"})
        ev = s.next()
        assert ev["code"] == "protocol" and "version" in ev["message"]
        s.send({"type": "progress", "version": 1, "id": "x", "done": 0, "total": 1, "stage": "x"})
        assert s.next()["code"] == "protocol"
        s.send({"type": "cancel", "version": 1, "id": "nothing"})
        assert s.next()["type"] == "warning"
        s.send(protocol.encode(protocol.make("status", id="s1")).strip())  # still serving after bad lines
        ev = s.next()
        assert ev["type"] == "result" and ev["id"] == "s1" and ev["files"] == []
        assert ev["backend_version"] and ev["protocol_version"] == 1 and ev["device"]
        # what is installed: the one documented status document (docs/assets.md), unvalidated
        doc = ev["assets"]
        assert (doc["format"], doc["version"], doc["deep"]) == ("emoca-assets-status", 1, False)
        assert {a["key"] for a in doc["assets"]} == {s.key for s in SPECS}
        assert all(a["valid"] is None for a in doc["assets"])  # a status request never validates
        assert set(doc["capabilities"]) == {"rig", "capture", "detail", "emotion", "detector", "training"}
        rig = tmp_path / "tête.npz"
        s.send(protocol.make("export_rig", id="r", output=str(rig), head="synthetic"))
        ev, seen = s.until(lambda e: e["type"] in ("result", "error"))
        assert ev["type"] == "result" and ev["files"] == [str(rig)] and "not FLAME" in ev["model"]
        assert any(e["type"] == "log" and "synthetic" in e["message"] for e in seen)
        with np.load(rig, allow_pickle=False) as z:
            assert z["v_template"].shape[1] == 3
        # train runs as a child process whose events are relayed under this request's id
        s.send(protocol.make("train", id="t", config=str(tmp_path / "absent.yaml"), overrides=["a=1"]))
        ev, _ = s.until(lambda e: e["type"] in ("result", "error"))
        assert ev["type"] == "error" and ev["id"] == "t" and ev["code"] == "input_missing"
        assert "absent.yaml" in ev["message"]
    finally:
        code = s.close()
    assert code == 0


def test_capture_streams_progress_then_result_and_cancel_leaves_nothing(tmp_path):
    from backend.synthetic.clips import make_astronaut_clip

    small = make_astronaut_clip(tmp_path / "petit é.mp4", n_frames=6, size=(320, 180), face_height=70)
    long = make_astronaut_clip(tmp_path / "long.mp4", n_frames=40, size=(320, 180), face_height=70)
    out = tmp_path / "sortie"
    s = Server()
    try:
        s.send(
            protocol.make(
                "capture",
                id="a",
                input=str(small.path),
                output=str(out / "a.npz"),
                options={"device": "cpu", "batch_size": 2, "smooth": "one_euro"},
            )
        )
        result, seen = s.until(lambda e: e["type"] in ("result", "error"))
        assert result["type"] == "result", result
        progress = [e for e in seen if e["type"] == "progress"]
        assert progress and all(e["id"] == "a" for e in progress)
        assert progress[-1]["done"] == progress[-1]["total"] == 6
        assert result["files"] == [str(out / "a.npz")] and (out / "a.npz").is_file()
        assert result["takes"][0]["frames"] == 6
        from emoca_contract.take import read_take

        assert read_take(out / "a.npz").meta["smoothing"]["method"] == "one_euro"

        s.send(
            protocol.make(
                "capture",
                id="b",
                input=str(long.path),
                output=str(out / "b.npz"),
                options={"device": "cpu", "batch_size": 2, "model": "untrained"},  # slow enough to cancel mid-run
            )
        )
        s.until(lambda e: e["type"] == "progress" and e["stage"] == "encode" and e["done"] > 0)
        t0 = time.perf_counter()
        s.send(protocol.make("cancel", id="b"))
        ev, seen = s.until(lambda e: e["type"] in ("result", "error"))
        latency = time.perf_counter() - t0
        print(f"cancel -> error event: {latency:.2f} s")
        assert ev["type"] == "error" and ev["code"] == "cancelled" and ev["id"] == "b"
        assert max(e["done"] for e in seen if e["type"] == "progress") < 40 if seen[:-1] else True
        assert sorted(p.name for p in out.iterdir()) == ["a.npz"]  # nothing of b: no take, partial or parts
    finally:
        code = s.close()
    assert code == 0
    assert all(json.loads(line)["type"] in protocol.EVENT_TYPES for line in s.raw)


def test_stdin_close_cancels_running_job(tmp_path):
    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "c.mp4", n_frames=40, size=(320, 180), face_height=70)
    s = Server()
    s.send(
        protocol.make(
            "capture",
            id="c",
            input=str(clip.path),
            output=str(tmp_path / "o" / "c.npz"),
            options={"device": "cpu", "batch_size": 2, "model": "untrained"},  # slow enough to close mid-run
        )
    )
    s.until(lambda e: e["type"] == "progress" and e["stage"] == "encode" and e["done"] > 0)
    assert s.close() == 0
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_closed_stdout_exits_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader went away
    proc.stdin.write(b'{"type": "status", "version": 1, "id": "s"}\n')
    proc.stdin.flush()
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    assert b"Traceback" not in err


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to watch the orphaned server")
def test_exits_when_parent_dies():
    # an intermediate parent starts the server on OUR stdin pipe (which stays open), waits until it answers a
    # status request (so it is up and knows its parent), then exits
    code = (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'backend', 'serve'], "
        "stdin=sys.stdin, stdout=subprocess.PIPE); print(p.pid, flush=True); p.stdout.readline()"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    pid = int(parent.stdout.readline())
    parent.stdin.write(b'{"type": "status", "version": 1, "id": "s"}\n')
    parent.stdin.flush()
    parent.wait(TIMEOUT)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(pid)
    if alive:
        os.kill(pid, 9)
    parent.stdin.close()
    assert not alive, "the orphaned server kept running with its stdin still open"


def test_capture_cli_json_errors(tmp_path):
    from backend.synthetic.clips import make_no_face_clip

    clip = make_no_face_clip(tmp_path / "vide.mp4", n_frames=6)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "capture",
            str(clip.path),
            "-o",
            str(tmp_path / "t.npz"),
            "--device",
            "cpu",
            "--progress",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2
    events = [protocol.decode(line) for line in proc.stdout.decode().splitlines()]
    assert events[-1]["type"] == "error" and events[-1]["code"] == "no_face"
    assert "vide.mp4" in events[-1]["message"] and events[-1]["hint"]
    assert list(tmp_path.iterdir()) == [clip.path]


MALFORMED = [
    # issue 13 case 7: (request fields, code, what the message must name); each used to be `internal`
    ({"options": "abc"}, "protocol", "'options': expected an object or null, got string 'abc'"),
    ({"options": {"batch_size": "abc"}}, "config_invalid", "'batch_size': expected an integer or null"),
    ({"options": {"frames": 5}}, "config_invalid", "'frames': expected"),
    ({"input": 12}, "protocol", "'input': expected a string, got integer 12"),
]


def test_malformed_requests_get_protocol_or_config_errors_never_internal(tmp_path):
    s = Server()
    try:
        for i, (change, code, fragment) in enumerate(MALFORMED):
            request = {"type": "capture", "version": 1, "id": f"m{i}", "input": str(tmp_path / "clip.mp4")}
            s.send({**request, "output": str(tmp_path / f"m{i}.npz"), **change})
            ev = s.next()
            assert (ev["type"], ev["id"], ev["code"]) == ("error", f"m{i}", code), ev
            assert fragment in ev["message"], ev["message"]
        s.send(protocol.make("export_rig", id="r", output=str(tmp_path / "rig.npz"), n_exp=-1))
        ev = s.next()
        assert (ev["id"], ev["code"]) == ("r", "config_invalid") and "n_exp" in ev["message"]
        s.send(protocol.make("status", id="s"))  # still serving
        assert s.next()["type"] == "result"
    finally:
        code = s.close()
    assert code == 0
    assert not list(tmp_path.iterdir())  # no job started: nothing was written
    assert b"Traceback" not in b"".join(s.stderr)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"frames": [0, 10, 2, 1]}, "'frames': [0, 10, 2, 1] is not [start, stop, step]"),
        ({"frames": "a:b"}, "frame range"),
        ({"frames": [0, 10, 0]}, "step must be >= 1"),
        ({"face": "nobody"}, "--face 'nobody'"),
        ({"face": True}, "'face': expected a string or an integer, got boolean True"),
        ({"smooth_strength": 10**400}, "'smooth_strength' is 1000"),
        ({"smooth": "wobbly"}, "smoothing method 'wobbly'"),
        ({"smoothing": {"method": "off"}}, "'smoothing': expected a SmoothingOptions or null"),
        ({"detail": "yes"}, "'detail': expected true or false"),
        ({"colour": "red"}, "unknown capture option(s) ['colour']"),
    ],
)
def test_capture_options_are_checked_when_the_request_arrives(options, fragment):
    from backend.app.serve import request_args

    msg = protocol.make("capture", id="c", input="clip.mp4", output="take.npz", options=options)
    with pytest.raises(EmocaError) as err:
        request_args("capture", msg)
    assert err.value.code == "config_invalid" and fragment in err.value.message, err.value.message


def test_well_typed_options_become_capture_options():
    from backend.app.serve import request_args

    options = {"frames": [0, 30, 2], "face": 1, "batch_size": 4, "smooth": "one_euro", "smooth_strength": 1}
    opts = request_args("capture", protocol.make("capture", id="c", input="a", output="b", options=options))["options"]
    assert (opts.frames, opts.face, opts.batch_size) == ([0, 30, 2], 1, 4)
    assert (opts.smoothing.method, opts.smoothing.strength) == ("one_euro", 1.0)


def test_formats_md_lists_every_capture_option():
    from backend.capture.options import CaptureOptions
    from backend.footage.video import FrameRange
    from emoca_contract.fields import field_types

    doc = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    table = doc[doc.index("| option | type |") : doc.index("Events:", doc.index("| option | type |"))]
    documented = set(re.findall(r"`(\w+)`(?=[^|]*\|[^|]*\|$)", table, flags=re.M))
    wire = set(field_types(CaptureOptions, {"FrameRange": FrameRange})) - {"smoothing"}  # built from smooth*
    assert documented == wire | {"smooth", "smooth_strength"}, documented ^ (wire | {"smooth", "smooth_strength"})
