"""FLAME takes onto a character with its own topology and non-Apple ARKit key names, through the FLAME <-> ARKit
map, in real Blender: a FLAME take synthesized from known ARKit weights through the map's inverse gives the weights
back (mean error <= 0.05) on the evaluated mesh; the map comes from a file or from the backend (its cache).

The map is the synthetic test head's (numpy-only backend code), so these tests run under Blender 4.2 (no torch)
too; the character is the retarget test character (emoca_blender.retarget.bench.build_character).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.retarget.map import MapOptions, map_for_head
from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from backend.take.writer import write_take
from emoca_blender import api
from emoca_blender.retarget.bench import build_character, recover_weights
from emoca_blender.retarget.flame import load_map, map_fields, open_to_flame
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.arkit_map import arkit_to_flame, flame_to_arkit
from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

from .test_apply import set_fps

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

# channels a performance moves (all carried by the map): each rises and falls a few times
PERFORMED = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp",
             "browOuterUpLeft", "mouthFunnel", "mouthPucker", "cheekPuff", "mouthFrownRight", "noseSneerLeft",
             "mouthLeft", "mouthRollLower")  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A user data folder whose cache holds the synthetic head's map (the backend's default options)."""
    folder = tmp_path_factory.mktemp("data")
    old = os.environ.get("EMOCA_BLENDER_DATA")
    os.environ["EMOCA_BLENDER_DATA"] = str(folder)
    try:
        path, m, _ = map_for_head("synthetic", opt=MapOptions())
    finally:
        if old is None:
            os.environ.pop("EMOCA_BLENDER_DATA")
        else:
            os.environ["EMOCA_BLENDER_DATA"] = old
    return folder, path, m


def at_rest(obj) -> None:
    """Every key at 0 (Blender 5.0 adds a shape key at 1): the keys a FLAME take does not drive stay at rest."""
    for kb in obj.data.shape_keys.key_blocks:
        kb.value = 0.0


def known_weights(n: int, seed: int = 0) -> np.ndarray:
    """(n, 52) weights in [0, 0.85]: the performed channels rise and fall (half-sines), the rest stay at 0; the
    first frames rest."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 30.0
    w = np.zeros((n, 52))
    for name in PERFORMED:
        wave = np.sin(2 * np.pi * rng.uniform(0.4, 1.2) * t + rng.uniform(0, 2 * np.pi))
        w[:, ARKIT_INDEX[name]] = 0.85 * np.clip(wave, 0.0, None)
    w[:4] = 0.0
    return w


def flame_take(tmp_path: Path, m, weights: np.ndarray, name: str = "flame performance") -> Path:
    """A FLAME take (captured on the synthetic head, per its meta) whose exp and jaw are the map's inverse of the
    weights."""
    take = make_synthetic_take(len(weights), seed=3)
    exp, jaw = arkit_to_flame(m, weights)
    for key, value in (("exp", exp), ("jaw_pose", jaw)):
        take.arrays[key] = take.arrays["raw_" + key] = value.astype(np.float32)
    take.meta["source"].update({"path": f"/footage/{name}.mp4", "fps": 30.0})
    return Path(write_take(tmp_path / f"{name}.npz", take.arrays, take.meta))


def test_a_flame_take_from_known_weights_gives_them_back_on_the_character(fresh_scene, data_dir, tmp_path):
    """The done-when test: ARKit weights -> FLAME (the map's inverse) -> a FLAME take -> retarget by the map onto
    the character's CC_ keys: the evaluated mesh shows the weights."""
    set_fps(fresh_scene, 30)
    _, map_path, m = data_dir
    obj, arm, deltas, _names = build_character(scheme="cc")
    at_rest(obj)
    weights = known_weights(40)
    path = flame_take(tmp_path, m, weights)
    result = api.retarget(obj, path, arkit_map=str(map_path), jaw_bone="Jaw")
    assert result.n_frames == 40
    assert result.report[0].startswith("source: FLAME take through the FLAME <-> ARKit map of synthetic test head")
    assert any("not observed in the take" in line and "eyeLookInLeft" in line for line in result.report)
    recovered = recover_weights(obj, deltas, np.arange(1, 41))
    error = np.abs(recovered - weights).mean()
    assert error <= 0.05, error
    performed = [ARKIT_INDEX[n] for n in PERFORMED]
    assert np.abs(recovered[:, performed] - weights[:, performed]).mean() <= 0.1  # the moving channels follow
    assert np.corrcoef(recovered[:, ARKIT_INDEX["jawOpen"]], weights[:, ARKIT_INDEX["jawOpen"]])[0, 1] > 0.95
    # the jaw bone turns with the take's FLAME jaw (what the map made of jawOpen)
    bpy.context.scene.frame_set(20)
    jaw = read_take(path)["jaw_pose"][19]
    angle = np.array(arm.pose.bones["Jaw"].rotation_euler)
    assert np.linalg.norm(jaw) > 0.02 and np.allclose(angle, jaw, atol=0.02)


def test_the_map_comes_from_the_backend_cache_when_none_is_given(fresh_scene, data_dir, tmp_path, monkeypatch):
    set_fps(fresh_scene, 30)
    folder, map_path, m = data_dir
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(folder))
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    obj, _arm, deltas, _names = build_character(scheme="numbered")
    at_rest(obj)
    weights = known_weights(20, seed=1)
    path = flame_take(tmp_path, m, weights)
    assert map_fields(read_take(path)) == {"head": "synthetic"}  # the take says it was captured on that head
    assert load_map(read_take(path)).meta["model_hash"] == m.meta["model_hash"]
    api.retarget(obj, path)  # flame_channels="map" is the default
    recovered = recover_weights(obj, deltas, np.arange(1, 21))
    assert np.abs(recovered - weights).mean() <= 0.05


def test_an_open_takes_channels_become_flame_coefficients_and_back(data_dir):
    _, map_path, m = data_dir
    take = make_synthetic_open_take(12, seed=2, channels=PERFORMED)
    exp, jaw = open_to_flame(take, m)
    assert exp.shape == (12, 50) and jaw.shape == (12, 3)
    back = flame_to_arkit(m, exp, jaw)
    performed = [ARKIT_INDEX[n] for n in PERFORMED]
    assert np.abs(back[:, performed] - take["arkit"][:, performed]).mean() < 0.1
    assert (back[:, [ARKIT_INDEX[n] for n in ARKIT_NAMES if n.startswith("eyeLook")]] == 0).all()


def test_a_bad_map_file_changes_nothing(fresh_scene, data_dir, tmp_path):
    set_fps(fresh_scene, 30)
    _, _, m = data_dir
    obj, _arm, _deltas, _names = build_character(scheme="cc")
    path = flame_take(tmp_path, m, known_weights(10))
    bad = tmp_path / "bad_map.npz"
    bad.write_bytes(b"not a map")
    actions = sorted(a.name for a in bpy.data.actions)
    with pytest.raises(EmocaError) as err:
        api.retarget(obj, path, arkit_map=str(bad))
    assert err.value.code == "asset_invalid" and sorted(a.name for a in bpy.data.actions) == actions
