"""The backend client: finding the bundled backend, the shared protocol, a real `serve` subprocess."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from emoca_blender import client
from emoca_contract.errors import EmocaError

pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]


def test_backend_root_is_found_in_the_dev_checkout_and_protocol_is_the_contracts_file():
    assert client.backend_root() == ROOT / "backend"
    assert client.requirements_dir() == ROOT / "requirements"
    proto = client.protocol
    assert Path(proto.__file__) == ROOT / "emoca_contract" / "protocol.py"
    msg = proto.make("status", id="x")
    assert proto.decode(proto.encode(msg)) == msg


def test_backend_root_prefers_the_folder_bundled_inside_the_extension(tmp_path):
    """The extension zip puts backend/ and emoca_contract/ inside the add-on folder; both are found there."""
    import shutil
    import subprocess
    import sys

    addon = tmp_path / "emoca_blender"
    shutil.copytree(ROOT / "emoca_blender", addon, ignore=shutil.ignore_patterns("__pycache__"))
    (addon / "backend").mkdir()
    for name in ("__main__.py", "__init__.py"):
        shutil.copy(ROOT / "backend" / name, addon / "backend" / name)
    shutil.copytree(ROOT / "emoca_contract", addon / "emoca_contract", ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import importlib; "
        "c = importlib.import_module('emoca_blender.client'); print(c.backend_root()); "
        "print(sys.modules['emoca_contract'].__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-1500:]
    lines = out.stdout.strip().splitlines()
    assert Path(lines[-2]) == addon / "backend"
    assert Path(lines[-1]) == addon / "emoca_contract" / "__init__.py"


def test_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(EmocaError, match="backend Python not found"):
        client.BackendProcess(tmp_path / "no-python")


def test_status_round_trip_with_the_real_backend_and_clean_exit():
    import sys

    with client.BackendProcess(sys.executable) as proc:
        req = proc.request("status")
        deadline = time.monotonic() + 120
        events: list[dict] = []
        while time.monotonic() < deadline and not any(e.get("type") == "result" for e in events):
            events += proc.poll()
            time.sleep(0.05)
        result = next(e for e in events if e.get("type") == "result")
        assert result["id"] == req and result["version"] == 1
        assert "backend_version" in result
        # a request the backend does not understand comes back as a protocol error event
        proc.send({"type": "capture", "version": 1, "id": "bad", "input": "x", "output": "y", "options": {"nope": 1}})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            errs = [e for e in proc.poll() if e.get("type") == "error"]
            if errs:
                break
            time.sleep(0.05)
        assert errs and errs[0]["id"] == "bad" and errs[0]["code"]
    assert proc.proc.returncode == 0  # closing stdin ends the backend


def test_run_request_raises_the_backends_error_with_code_and_hint(tmp_path):
    import sys

    with pytest.raises(EmocaError) as err:
        client.run_request(
            sys.executable,
            "export_rig",
            timeout=120,
            output=str(tmp_path / "r.npz"),
            flame=str(tmp_path / "missing.pkl"),
        )
    assert err.value.code in ("input_missing", "asset_missing")
    assert "missing.pkl" in err.value.message


def _drive(job, until, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    state = job.step()
    while state == "running" and not until(job) and time.monotonic() < deadline:
        time.sleep(0.1)
        state = job.step()
    return state


@pytest.mark.torch
def test_capture_job_cancelled_mid_run_writes_nothing(tmp_path):
    """What Esc does in the modal operator: the job is cancelled once the backend reports progress."""
    import sys

    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "clip.mp4", n_frames=40).path
    out = tmp_path / "takes" / "clip.npz"
    with client.BackendProcess(sys.executable) as proc:
        options = {"device": "cpu", "model": "untrained"}  # slow enough to cancel mid-run
        job = client.CaptureJob(proc, {"input": str(clip), "output": str(out), "options": options})
        job.start()
        assert _drive(job, until=lambda j: j.stage not in ("starting",)) == "running"
        assert job.stage and 0.0 <= job.progress <= 1.0
        job.cancel()
        assert job.state == "cancelled"
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline:  # the backend confirms: error code 'cancelled'
            answer = next((e for e in proc.poll() if e.get("type") == "error" and e.get("id") == job.req_id), None)
            time.sleep(0.05)
        assert answer is not None and answer["code"] == "cancelled"
        assert not out.exists() and not list(tmp_path.rglob("*.npz*"))


@pytest.mark.torch
def test_capture_job_reports_a_backend_failure(tmp_path):
    import sys

    with client.BackendProcess(sys.executable) as proc:
        job = client.CaptureJob(
            proc, {"input": str(tmp_path / "missing.mp4"), "output": str(tmp_path / "t.npz"), "options": {}}
        )
        job.start()
        assert _drive(job, until=lambda j: False) == "failed"
        assert job.error.code == "input_missing" and "missing.mp4" in job.error.message
