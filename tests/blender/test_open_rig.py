"""The open head rig (ICT-FaceKit) in real Blender: the build, its deformation equal to the backend's, drivers,
and applying open takes (keys by ARKit name, head bone, emotion, kind checks, rollback).

Rig and take files come from numpy-only backend code, so these tests run under Blender 4.2 (no torch) too.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.ict.data import load_ict
from backend.ict.rig import build_open_rig, driven_channels, pose_rig, write_open_rig
from backend.synthetic.take import make_synthetic_open_take
from backend.take.writer import write_take
from emoca_blender import animation
from emoca_blender.apply import apply_take
from emoca_blender.rig import build_rig, rig_kind, rig_mesh
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.rig import read_rig
from emoca_contract.rotations import quat_to_axis_angle

from .test_apply import fcurve, key_frames, quat_matrix, set_fps, state
from .test_rig import evaluated_vertices

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def open_rig_file(tmp_path_factory):
    return write_open_rig(tmp_path_factory.mktemp("open") / "ict rig é.npz", build_open_rig(load_ict()))


@pytest.fixture(scope="module")
def rig_data(open_rig_file):
    return read_rig(open_rig_file)


@pytest.fixture
def rig(open_rig_file):
    return build_rig(open_rig_file)


@pytest.fixture
def make_open_take(tmp_path):
    def make(n_frames: int = 30, fps: float = 30.0, name: str = "open performance", seed: int = 0, invalid=()):
        take = make_synthetic_open_take(n_frames, fps=fps, seed=seed, invalid=invalid)
        take.meta["source"].update({"path": f"/footage/{name}.mp4", "fps": fps})
        return write_take(tmp_path / f"{name}.npz", take.arrays, take.meta), take

    return make


def mesh_arrays(mesh) -> dict[str, np.ndarray]:
    """Corner vertex ids, loop starts, material ids and UVs of a Blender mesh."""
    data = mesh.data
    out = {}
    for name, coll, attr, n, dtype in (
        ("corners", data.loops, "vertex_index", len(data.loops), np.int32),
        ("starts", data.polygons, "loop_start", len(data.polygons), np.int32),
        ("totals", data.polygons, "loop_total", len(data.polygons), np.int32),
        ("materials", data.polygons, "material_index", len(data.polygons), np.int32),
        ("smooth", data.polygons, "use_smooth", len(data.polygons), bool),
    ):
        buf = np.empty(n, dtype)
        coll.foreach_get(attr, buf)
        out[name] = buf
    uv = np.empty(len(data.loops) * 2, np.float32)
    data.uv_layers["UVMap"].data.foreach_get("uv", uv)
    out["uv"] = uv.reshape(-1, 2)
    return out


def test_the_build_is_the_rig_file_with_arkit_keys_bones_and_materials(rig, rig_data):
    mesh = rig_mesh(rig)
    assert rig.name == "ICT_rig" and mesh.name == "ICT" and rig_kind(rig) == "open"
    got = mesh_arrays(mesh)
    np.testing.assert_array_equal(got["corners"], rig_data["poly_vertices"])
    np.testing.assert_array_equal(got["totals"], rig_data["poly_sizes"])
    np.testing.assert_array_equal(got["materials"], rig_data["poly_materials"])
    np.testing.assert_allclose(got["uv"], rig_data["uvs"][rig_data["poly_uvs"]], atol=1e-7)
    assert got["smooth"].all()
    # consistent winding: no edge is walked twice in the same direction (a flipped face would)
    nxt = np.arange(len(got["corners"])) + 1
    ends = got["starts"] + got["totals"] - 1
    nxt[ends] = got["starts"]
    directed = got["corners"].astype(np.int64) * len(mesh.data.vertices) + got["corners"][nxt]
    assert len(np.unique(directed)) == len(directed)
    keys = mesh.data.shape_keys.key_blocks.keys()
    assert keys == ["Basis"] + [n for n in ARKIT_NAMES if n != "tongueOut"]
    assert not any(k.startswith(("Shape", "Exp", "Pose")) for k in keys)
    kb = mesh.data.shape_keys.key_blocks["mouthSmileLeft"]
    assert (kb.slider_min, kb.slider_max, kb.value) == (0.0, 1.0, 0.0)
    assert [b.name for b in rig.data.bones] == ["root", "neck", "head", "jaw", "eye_L", "eye_R"]
    assert [b.parent.name if b.parent else None for b in rig.data.bones] == [None, "root", "neck", "head", "head",
                                                                              "head"]  # fmt: skip
    assert [b.name for b in rig.data.bones if b.use_deform] == ["neck", "head", "eye_L", "eye_R"]
    assert sorted(mesh.vertex_groups.keys()) == sorted(["neck", "head", "eye_L", "eye_R"])
    for bone, joint in zip(rig.data.bones, rig_data["joints"]):
        m = np.array(bone.matrix_local)
        np.testing.assert_allclose(m[:3, :3], np.eye(3), atol=1e-6)
        np.testing.assert_allclose(m[:3, 3], joint, atol=1e-6)
    names = [m.name for m in mesh.data.materials]
    assert names == [f"ICT_{n}" for n in rig_data["material_names"]]
    assert {"ICT_Skin", "ICT_Lips", "ICT_Sclera", "ICT_Iris", "ICT_Pupil", "ICT_Teeth", "ICT_Gums"} <= set(names)
    for mat, color in zip(mesh.data.materials, rig_data["material_colors"]):
        bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
        np.testing.assert_allclose(tuple(bsdf.inputs["Base Color"].default_value), color, atol=1e-6)
    skin, teeth = (np.asarray(rig_data["material_colors"])[list(rig_data["material_names"]).index(n)][:3]
                   for n in ("Skin", "Teeth"))  # fmt: skip
    assert skin[0] > skin[1] > skin[2] and teeth.min() > 0.6  # warm skin, light teeth
    for prop in ["emoca_valence", "emoca_arousal", "emoca_expr_Happy", "emoca_expr_Neutral"]:
        assert rig[prop] == 0.0 and rig.id_properties_ui(prop).as_dict()["max"] == 1.0


def test_the_posed_mesh_equals_the_backends_evaluation(rig, rig_data):
    """Shape keys, drivers (eyes, jaw bone) and skinning in Blender == backend.ict.rig.pose_rig (what the
    renderer draws)."""
    rng = np.random.default_rng(3)
    names = [str(n) for n in rig_data["shape_names"]]
    values = rng.uniform(0, 1, len(names)) * (rng.uniform(size=len(names)) < 0.3)
    values[names.index("eyeLookUpLeft")], values[names.index("eyeLookInRight")] = 0.8, 0.6
    values[names.index("jawOpen")] = 0.7
    mesh = rig_mesh(rig)
    for name, value in zip(names, values):
        mesh.data.shape_keys.key_blocks[name].value = float(value)
    q = np.array([0.95, 0.1, 0.25, -0.05])
    q /= np.linalg.norm(q)
    rig.pose.bones["head"].rotation_quaternion = tuple(q)
    bpy.context.view_layer.update()
    expected = pose_rig(rig_data, values[None], quat_to_axis_angle(q)[None])[0]
    got = evaluated_vertices(mesh)
    assert np.abs(got - expected).max() < 1e-5  # metres; the eyes turned and the jaw bone followed
    eye = rig.pose.bones["eye_L"].rotation_euler
    assert eye[0] == pytest.approx(-0.8 * np.deg2rad(20.0), abs=1e-5)  # looking up is negative X
    assert rig.pose.bones["jaw"].rotation_euler[0] > 0.2  # the jaw bone opens with jawOpen


def test_an_open_take_keys_every_arkit_channel_the_head_and_emotion(rig, make_open_take, fresh_scene):
    set_fps(fresh_scene, 30)
    path, take = make_open_take(n_frames=24)
    action = apply_take(rig, path)
    key = rig_mesh(rig).data.shape_keys
    if animation.SLOTTED:
        assert key.animation_data.action == action and rig.animation_data.action == action
    else:
        assert key.animation_data.action.name == action.name + "_shapes"
    assert action.name == "EMOCA_open performance" and action["emoca_take_kind"] == "open"
    assert action["emoca_unkeyed_channels"] == "tongueOut"
    col = {n: i for i, n in enumerate(take.arkit_names)}
    for row in (0, 9, 23):
        fresh_scene.frame_set(1 + row)
        for name in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight", "browInnerUp", "cheekPuff"):
            assert key.key_blocks[name].value == pytest.approx(take["arkit"][row, col[name]], abs=1e-5)
        np.testing.assert_allclose(quat_matrix(rig.pose.bones["head"].rotation_quaternion),
                                   quat_matrix(_quat(take["global_pose"][row])), atol=1e-5)  # fmt: skip
        assert rig["emoca_valence"] == pytest.approx(take["valence"][row], abs=1e-5)
        assert rig["emoca_expr_Happy"] == pytest.approx(take["expression"][row, 3], abs=1e-5)
    assert len(key_frames(fcurve(key, 'key_blocks["jawOpen"].value'))) == 24
    assert fcurve(rig, 'pose.bones["root"].location') is None  # the head's movement is opt-in
    assert fcurve(rig, 'pose.bones["jaw"].rotation_quaternion') is None


def _quat(axis_angle) -> np.ndarray:
    from emoca_contract.rotations import axis_angle_to_quat

    return axis_angle_to_quat(np.asarray(axis_angle, np.float64))


def test_an_applied_frame_poses_the_mesh_as_the_take_says(rig, rig_data, make_open_take, fresh_scene):
    set_fps(fresh_scene, 30)
    path, take = make_open_take(n_frames=12, seed=4)
    apply_take(rig, path, head_translation=True)
    row = 7
    fresh_scene.frame_set(1 + row)
    cols = [take.arkit_names.index(str(n)) for n in rig_data["shape_names"]]
    move = take["translation"][row] - take["translation"][0]
    expected = pose_rig(rig_data, take["arkit"][row, cols][None], take["global_pose"][row][None], move[None])[0]
    assert np.abs(evaluated_vertices(rig_mesh(rig)) - expected).max() < 1e-5
    np.testing.assert_allclose(tuple(rig.pose.bones["root"].location), move, atol=1e-6)


def test_invalid_frames_get_no_keys_on_the_open_rig(rig, make_open_take, fresh_scene):
    set_fps(fresh_scene, 30)
    path, _ = make_open_take(n_frames=10, invalid=(3, 4))
    apply_take(rig, path, frame_mapping="footage_rate")
    frames = key_frames(fcurve(rig_mesh(rig).data.shape_keys, 'key_blocks["jawOpen"].value'))
    assert list(frames) == [1, 2, 3, 6, 7, 8, 9, 10]


def test_takes_of_the_other_kind_are_config_invalid_and_change_nothing(rig, rig_file, make_take, make_open_take,
                                                                       fresh_scene):  # fmt: skip
    flame_path, _ = make_take(n_frames=10, name="flame take")
    before = state(fresh_scene)
    with pytest.raises(EmocaError) as err:
        apply_take(rig, flame_path)
    assert err.value.code == "config_invalid" and "flame take cannot key the open rig" in err.value.message
    assert state(fresh_scene) == before
    flame_rig = build_rig(rig_file)
    open_path, _ = make_open_take(n_frames=10)
    before = state(fresh_scene)
    with pytest.raises(EmocaError) as err:
        apply_take(flame_rig, open_path)
    assert err.value.code == "config_invalid" and "open take cannot key the flame rig" in err.value.message
    assert state(fresh_scene) == before
    with pytest.raises(EmocaError, match="camera match"):
        apply_take(rig, open_path, camera_match=True)
    assert state(fresh_scene) == before


def test_a_failing_write_rolls_the_open_apply_back(rig, make_open_take, fresh_scene, monkeypatch):
    path, _ = make_open_take(n_frames=10)
    apply_take(rig, path)
    before = state(fresh_scene)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("emoca_blender.apply._write_armature", broken)  # after the shape keys were written
    with pytest.raises(RuntimeError, match="disk full"):
        apply_take(rig, path)
    assert state(fresh_scene) == before


def test_save_and_reload_keeps_the_open_rig_working(rig, rig_data, make_open_take, fresh_scene, tmp_path):
    set_fps(fresh_scene, 30)
    path, take = make_open_take(n_frames=12)
    apply_take(rig, path)
    blend = tmp_path / "open é.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    arm = bpy.data.objects["ICT_rig"]
    bpy.context.scene.frame_set(6)
    cols = [take.arkit_names.index(str(n)) for n in rig_data["shape_names"]]
    eye = driven_channels(rig_data, take["arkit"][5, cols][None])[("eye_L", "rotation_euler")][0]
    assert abs(eye[0]) > 0.05  # the take turns the eye; the reloaded drivers follow it
    np.testing.assert_allclose(tuple(arm.pose.bones["eye_L"].rotation_euler), eye, atol=1e-5)
