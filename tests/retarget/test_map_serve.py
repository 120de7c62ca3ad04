"""The retarget requests of `python -m backend serve` as a real subprocess: ``arkit_map`` (built once, then read
from the cache) and ``face_landmarks`` (the Face Landmarker on a rendered face), and their refusals."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from emoca_contract import protocol
from emoca_contract.arkit_map import read_arkit_map

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # generous: the machine is slow and shared; nothing here asserts a duration

pytestmark = [pytest.mark.torch, pytest.mark.slow]


class Server:
    """A serve subprocess with its events on a queue."""

    def __init__(self, data: Path):
        env = dict(os.environ, PYTHONWARNINGS="ignore", EMOCA_BLENDER_DATA=str(data))
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve"], cwd=ROOT, env=env, stdin=pipe,
                                     stdout=pipe, stderr=subprocess.DEVNULL)  # fmt: skip
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def ask(self, **msg) -> dict:
        """Send one request; its final event (result or error), every event checked against the protocol."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"version": 1, **msg}) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            ev = self.events.get(timeout=TIMEOUT)
            assert ev is not None, "the backend exited"
            protocol.validate(ev)
            if ev["type"] in ("result", "error") and ev.get("id") == msg["id"]:
                return ev

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(TIMEOUT)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    s.close()


def test_arkit_map_is_built_once_then_read_from_the_cache(server, tmp_path):
    first = server.ask(type="arkit_map", id="m1", head="synthetic")
    assert first["type"] == "result", first
    path = Path(first["files"][0])
    assert first["built"] and path.is_relative_to(tmp_path / "data") and path.name.startswith("arkit_map_")
    assert first["model"] == "synthetic test head (not FLAME)" and first["n_exp"] == 50
    assert first["figures"]["forward_error_pct"] < first["figures"]["forward_motion_pct"]
    m = read_arkit_map(path)
    assert m.meta["model_hash"] == first["model_hash"] and "eyeLookInLeft" in first["not_carried"]
    second = server.ask(type="arkit_map", id="m2", head="synthetic")
    assert second["type"] == "result" and not second["built"] and second["files"] == first["files"]


def test_arkit_map_requests_that_cannot_be_served_are_refused(server, tmp_path):
    bad = server.ask(type="arkit_map", id="b1", head="ict")
    assert bad["type"] == "error" and bad["code"] == "config_invalid" and "ict" in bad["message"]
    bad = server.ask(type="arkit_map", id="b2", head="synthetic", n_exp=0)
    assert bad["code"] == "config_invalid" and "n-exp" in bad["message"]
    bad = server.ask(type="arkit_map", id="b3", head="synthetic", n_exp="50")
    assert bad["code"] == "protocol" and "'n_exp'" in bad["message"]
    missing = server.ask(type="arkit_map", id="b4", head="flame", flame=str(tmp_path / "none.pkl"))
    assert missing["type"] == "error" and missing["code"] in ("asset_missing", "input_missing"), missing


def test_face_landmarks_finds_the_rendered_face(server, tmp_path):
    import cv2

    from backend.flame.landmarks import MEDIAPIPE_TO_68
    from backend.synthetic.head import render_preview, synthetic_head

    head = synthetic_head()
    image = render_preview(head, image_size=384)  # the astronaut-textured synthetic head, frontal
    cv2.imwrite(str(tmp_path / "face.png"), image[:, :, ::-1])
    found = server.ask(type="face_landmarks", id="f1", image=str(tmp_path / "face.png"))
    assert found["type"] == "result", found
    points, points68 = np.asarray(found["landmarks"]), np.asarray(found["landmarks68"])
    assert points.shape == (478, 2) and points68.shape == (68, 2) and found["width"] == found["height"] == 384
    np.testing.assert_allclose(points68, points[MEDIAPIPE_TO_68])
    # the head's vertices are the mesh points MediaPipe finds: they land where the render put them
    s = 1.6 / np.ptp(head.v_template[:, 0])
    px = np.stack([(s * head.v_template[:468, 0] + 1) * 192, (-s * head.v_template[:468, 1] + 1) * 192], 1)
    assert np.linalg.norm(points[:468] - px, axis=1).mean() < 0.03 * 384
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 128, 3), 200, np.uint8))
    assert server.ask(type="face_landmarks", id="f2", image=str(blank))["code"] == "no_face"
    assert server.ask(type="face_landmarks", id="f3", image=str(tmp_path / "none.png"))["code"] == "input_missing"
    assert server.ask(type="face_landmarks", id="f4")["code"] == "protocol"
