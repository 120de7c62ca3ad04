"""The landmark-driven retarget onto a character whose shape keys have no ARKit names, in real Blender: landmarks
as empties (placed, moved, snapped onto the mesh), each key's effect on them, and known key weights recovered
(mean error <= 0.05) from an open take made of those keys; with the Face Landmarker (a headless render, the
backend's detector, rays cast back onto the mesh) in the backend environment.

The character is the ICT head's mesh (built by the add-on from the numpy-only open rig file) with its ARKit shapes
replaced by custom keys, each a known mix of them ("My Smile" = both smiles, ...); the take's ARKit channels are
the keys' known weights mixed the same way, so the take's landmark motion is what the keys make of them.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from backend.ict.data import load_ict
from backend.ict.rig import build_open_rig, write_open_rig
from backend.retarget.map import MapOptions, map_for_head
from emoca_blender import api
from emoca_blender.retarget import landmarks as L
from emoca_blender.rig import build_rig
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.livelink import open_take_arrays
from emoca_contract.take import Take, base_meta

from .test_apply import set_fps

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

MIXES = {  # custom key -> the ICT ARKit shapes it is made of (at weight 1 each)
    "My Smile": ("mouthSmileLeft", "mouthSmileRight"),
    "open.wide": ("jawOpen",),
    "Oo": ("mouthFunnel", "mouthPucker"),
    "BROWS_UP": ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"),
    "blink both": ("eyeBlinkLeft", "eyeBlinkRight"),
    "Key 6": ("mouthFrownLeft", "mouthFrownRight", "browDownLeft", "browDownRight"),
    "sneer": ("noseSneerLeft", "noseSneerRight"),
    "mouth-to-left": ("mouthLeft",),
    "stretch": ("mouthStretchLeft", "mouthStretchRight"),
    "puff": ("cheekPuff",),
}


@pytest.fixture(scope="module")
def ict_rig(tmp_path_factory):
    return write_open_rig(tmp_path_factory.mktemp("ict") / "ict_rig.npz", build_open_rig(load_ict()))


@pytest.fixture(scope="module")
def arkit_map(tmp_path_factory):
    path, _m, _ = map_for_head("synthetic", opt=MapOptions(samples=300, test_samples=100),
                               folder=tmp_path_factory.mktemp("maps"))  # fmt: skip
    return path


@pytest.fixture
def character(fresh_scene, ict_rig):
    """The ICT mesh with custom keys (module docstring) and one key far from the face; every key at 0."""
    set_fps(fresh_scene, 30)
    arm = build_rig(ict_rig)
    mesh = next(c for c in arm.children if c.type == "MESH")
    rest = L.rest_coords(mesh)
    deltas = {kb.name: L.key_delta(mesh, kb) for kb in L.key_blocks(mesh)}
    for kb in L.key_blocks(mesh):
        mesh.shape_key_remove(kb)
    for name, shapes in MIXES.items():
        kb = mesh.shape_key_add(name=name, from_mix=False)
        kb.data.foreach_set("co", (rest + sum(deltas[s] for s in shapes)).astype(np.float32).ravel())
        kb.value = 0.0
    back = mesh.shape_key_add(name="Scalp_Bulge", from_mix=False)  # moves the back of the head only
    bulge = rest.copy()
    bulge[rest[:, 2] < rest[:, 2].min() + 0.03] += [0.0, 0.0, -0.01]
    back.data.foreach_set("co", bulge.astype(np.float32).ravel())
    back.value = 0.0
    return mesh


def known_take(n: int = 48, seed: int = 0) -> tuple[Take, np.ndarray]:
    """An open take whose ARKit channels are the custom keys' known weights (N, K) mixed like the keys."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 30.0
    k = len(MIXES)
    u = np.clip(0.5 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0, k) * t[:, None] + rng.uniform(0, 6, k)), 0, 1)
    u[:5] = 0.0  # the take starts at rest (its neutral)
    arkit = np.zeros((n, 52))
    for j, shapes in enumerate(MIXES.values()):
        for s in shapes:
            arkit[:, ARKIT_INDEX[s]] = u[:, j]
    arrays = open_take_arrays(t, np.arange(n), arkit, np.zeros((n, 3)))
    meta = base_meta(kind="open", source={"path": "custom keys.mp4", "fps": 30.0, "frame_count": n},
                     model={"name": "known weights (test, not a capture)", "kind": "open"},
                     arkit={"names": list(ARKIT_NAMES), "source": "known weights", "unobserved": []},
                     emotion={"model": "none", "classes": []})  # fmt: skip
    return Take(arrays=arrays, meta=meta), u


def keyed_values(mesh, n: int) -> np.ndarray:
    """The custom keys' values (N, K) at scene frames 1..N."""
    out = []
    for frame in range(1, n + 1):
        bpy.context.scene.frame_set(frame)
        out.append([mesh.data.shape_keys.key_blocks[name].value for name in MIXES])
    return np.asarray(out)


def model_binding() -> L.Binding:
    """The ICT head's own 68 landmark vertices."""
    ids = load_ict().landmark_indices
    return L.Binding(np.repeat(ids[:, None], 3, 1), np.tile([1.0, 0.0, 0.0], (68, 1)), "test")


def test_empties_show_the_landmarks_and_moving_one_moves_its_landmark(character):
    mesh = character
    empties = L.store_binding(mesh, model_binding())
    assert len(empties) == 68 and all(e.parent == mesh for e in empties) and L.landmark_empties(mesh) == empties
    rest = L.rest_coords(mesh)
    ids = load_ict().landmark_indices
    np.testing.assert_allclose(L.current_binding(mesh).points(rest), rest[ids], atol=1e-6)
    # a landmark dragged off the surface snaps back onto the mesh, where the user put it (nearest point)
    tri = L.triangles(mesh.data)
    face = tri[np.isin(tri, [ids[30]]).any(1)][0]
    inside = rest[face].mean(0)
    normal = np.cross(rest[face[1]] - rest[face[0]], rest[face[2]] - rest[face[0]])
    empties[30].location = tuple(inside + 0.002 * normal / np.linalg.norm(normal))
    moved = L.current_binding(mesh)
    assert moved.source == "empties"
    np.testing.assert_allclose(moved.points(rest)[30], inside, atol=1e-5)
    names, effects, ranges = L.key_effects(mesh, moved)
    assert names == list(MIXES) and effects.shape == (len(MIXES), 68, 3)  # Scalp_Bulge moves no landmark
    assert (ranges == [0.0, 1.0]).all()
    assert json.loads(mesh[L.PROP])["vertices"][30] == [int(ids[30])] * 3


def test_known_weights_of_custom_keys_come_back_from_the_landmark_solve(character, arkit_map):
    """The done-when test for custom keys (landmarks at the head's own landmark vertices)."""
    mesh = character
    L.store_binding(mesh, model_binding())
    take, u = known_take()
    result = api.retarget(mesh, take, method="landmarks", arkit_map=str(arkit_map))
    assert result.mapping.name == "landmark solve" and len(result.mapping.entries) == len(MIXES)
    assert result.report[0].startswith("source: landmark solve: 10 shape keys reproduce")
    got = keyed_values(mesh, len(u))
    error = np.abs(got - u).mean()
    assert error <= 0.05, error
    assert mesh.data.shape_keys.key_blocks["Scalp_Bulge"].value == 0.0  # not driven: it moves no landmark


def test_a_character_without_landmarks_is_refused_and_unchanged(character, arkit_map):
    mesh = character
    take, _ = known_take(12)
    actions = sorted(a.name for a in bpy.data.actions)
    with pytest.raises(EmocaError) as err:
        api.retarget(mesh, take, method="landmarks", arkit_map=str(arkit_map))
    assert err.value.code == "config_invalid" and "no face landmarks" in err.value.message
    mesh[L.PROP] = "{broken"
    with pytest.raises(EmocaError, match="damaged"):
        api.retarget(mesh, take, method="landmarks", arkit_map=str(arkit_map))
    assert sorted(a.name for a in bpy.data.actions) == actions


@pytest.mark.torch
@pytest.mark.slow
def test_the_detector_finds_the_landmarks_on_a_render_and_the_solve_recovers_the_weights(character, arkit_map,
                                                                                          tmp_path):  # fmt: skip
    mesh = character
    objects = {o.name for o in bpy.data.objects}
    binding = L.detect_landmarks(mesh, python=sys.executable, keep_render=tmp_path / "face.png")
    assert (tmp_path / "face.png").is_file() and binding.source == "detected"
    assert {o.name for o in bpy.data.objects} - objects == {f"{mesh.name}_lm{i:02d}" for i in range(68)}
    assert not {c.name for c in bpy.data.cameras} & {"EMOCA landmarks camera"}  # the render's scene is gone
    rest = L.rest_coords(mesh)
    found = binding.points(rest)
    ict = rest[load_ict().landmark_indices]
    size = L.face_size(ict)
    inner = np.linalg.norm(found[17:] - ict[17:], axis=1) / size
    assert np.median(inner) < 0.03 and inner.max() < 0.1  # eyes, brows, nose and lips where the head has them
    take, u = known_take()
    api.retarget(mesh, take, method="landmarks", arkit_map=str(arkit_map))
    error = np.abs(keyed_values(mesh, len(u)) - u).mean()
    assert error <= 0.05, error


@pytest.mark.torch
@pytest.mark.slow
def test_the_command_line_detects_the_landmarks_and_solves_in_one_call(character, arkit_map, tmp_path, capsys):
    from backend.take.writer import write_take
    from emoca_blender import cli

    name = character.name  # the command line opens the file again: the object is gone from this session
    blend = tmp_path / "custom character.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    take, u = known_take(24)
    path = write_take(tmp_path / "cli custom.npz", take.arrays, take.meta)
    out = tmp_path / "solved.blend"
    argv = ["retarget", str(path), "--blend", str(blend), "--target", name, "--output", str(out),
            "--method", "landmarks", "--arkit-map", str(arkit_map),
            "--detect-landmarks", "--python", sys.executable]  # fmt: skip
    assert cli.main(argv) == 0
    assert f"found the 68 face landmarks of {name}" in capsys.readouterr().out
    bpy.ops.wm.open_mainfile(filepath=str(out))
    solved = bpy.data.objects[name]
    assert L.read_binding(solved).source == "detected"
    error = np.abs(keyed_values(solved, len(u)) - u).mean()
    assert error <= 0.05, error


def test_the_panels_retarget_runs_the_landmark_solve_with_the_panels_map(character, arkit_map, tmp_path):
    from backend.take.writer import write_take

    mesh = character
    L.store_binding(mesh, model_binding())
    take, u = known_take(24)
    path = write_take(tmp_path / "panel custom.npz", take.arrays, take.meta)
    settings = bpy.context.scene.emoca_retarget
    settings.target, settings.take = mesh, str(path)
    settings.method, settings.arkit_map = "landmarks", str(arkit_map)
    assert bpy.ops.emoca.retarget("EXEC_DEFAULT", True) == {"FINISHED"}
    assert len(settings.entries) == 0  # no name matching for the landmark solve
    assert settings.report.startswith("source: landmark solve: 10 shape keys")
    assert np.abs(keyed_values(mesh, 24) - u).mean() <= 0.05
