"""Apply a take: evaluated values equal the take's after the frame mapping; actions, ranges, failure safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.take.writer import write_take
from emoca_blender import animation
from emoca_blender.apply import apply_take
from emoca_blender.rig import build_rig, rig_mesh
from emoca_contract.errors import EmocaError
from emoca_contract.take import TAKE_VERSION

from .flame_ref import rodrigues

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def set_fps(scene, fps: int, base: float = 1.0) -> None:
    scene.render.fps, scene.render.fps_base = fps, base


def fcurve(id_data, path: str, index: int = 0):
    action = id_data.animation_data.action
    return animation.fcurves_for(action, id_data).find(path, index)


def key_frames(fc) -> np.ndarray:
    co = np.empty(len(fc.keyframe_points) * 2, np.float32)
    fc.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)[:, 0]


def quat_matrix(q) -> np.ndarray:
    import mathutils

    return np.array(mathutils.Quaternion(q).to_matrix())


def state(scene) -> dict:
    """What a failed apply must not change."""
    out: dict[str, object] = {
        "fps": (scene.render.fps, scene.render.fps_base),
        "actions": sorted(a.name for a in bpy.data.actions),
        "objects": sorted(o.name for o in bpy.data.objects),
        "cameras": sorted(c.name for c in bpy.data.cameras),
    }
    for obj in bpy.data.objects:
        ad = obj.animation_data
        out[obj.name] = (
            ad.action.name if ad and ad.action else None,
            len(ad.nla_tracks) if ad else 0,
            sorted(k for k in obj.keys() if k.startswith("emoca_v") or k.startswith("emoca_e")),
        )
        if obj.type == "MESH" and obj.data.shape_keys:
            kad = obj.data.shape_keys.animation_data
            out[obj.name + ".key"] = kad.action.name if kad and kad.action else None
    return out


@pytest.fixture
def rig(rig_file):
    return build_rig(rig_file)


def test_same_rate_every_channel_reads_back_equal(rig, make_take, fresh_scene):
    set_fps(fresh_scene, 30)
    path, take = make_take(n_frames=40, fps=30.0)
    action = apply_take(rig, path)
    key = rig_mesh(rig).data.shape_keys
    if animation.SLOTTED:  # one Action, one slot per ID, both assigned
        assert key.animation_data.action == action and rig.animation_data.action == action
        assert rig.animation_data.action_slot is not None and key.animation_data.action_slot is not None
        assert {s.target_id_type for s in action.slots} == {"OBJECT", "KEY"}
    else:
        assert key.animation_data.action.name == action.name + "_shapes"
    for row in (0, 7, 22, 39):
        frame = 1 + row
        fresh_scene.frame_set(frame)
        for i in (0, 5, 49):
            assert key.key_blocks[f"Exp{i:03d}"].value == pytest.approx(take["exp"][row, i], abs=1e-5)
            fc = fcurve(key, f'key_blocks["Exp{i:03d}"].value')
            assert fc.evaluate(frame) == pytest.approx(take["exp"][row, i], abs=1e-5)
        r_jaw = rodrigues(take["jaw_pose"][row])
        np.testing.assert_allclose(quat_matrix(rig.pose.bones["jaw"].rotation_quaternion), r_jaw, atol=1e-5)
        np.testing.assert_allclose(
            quat_matrix(rig.pose.bones["root"].rotation_quaternion), rodrigues(take["global_pose"][row]), atol=1e-5
        )
        correctives = [key.key_blocks[f"Pose{9 + k:03d}"].value for k in range(9)]
        np.testing.assert_allclose(correctives, (r_jaw - np.eye(3)).ravel(), atol=1e-5)
        assert rig["emoca_valence"] == pytest.approx(take["valence"][row], abs=1e-5)
        assert rig["emoca_arousal"] == pytest.approx(take["arousal"][row], abs=1e-5)
        for c, cls in enumerate(CLASSES):
            assert rig[f"emoca_expr_{cls}"] == pytest.approx(take["expression"][row, c], abs=1e-5)
    assert len(fcurve(key, 'key_blocks["Exp000"].value').keyframe_points) == 40
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, 40)  # the scene now plays the take


def test_frame_range_option_keeps_the_scene_range(rig, make_take, fresh_scene):
    set_fps(fresh_scene, 30)
    fresh_scene.frame_start, fresh_scene.frame_end = 5, 17
    path, _ = make_take(n_frames=40, fps=30.0)
    apply_take(rig, path, frame_range=False)
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (5, 17)
    apply_take(rig, path, start="playhead", offset=100)
    first = fresh_scene.frame_current + 100
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (first, first + 39)


def test_resample_to_a_different_scene_rate_by_time(rig, make_take, fresh_scene):
    set_fps(fresh_scene, 24)
    path, take = make_take(n_frames=61, fps=30.0)  # 2 s of footage
    apply_take(rig, path, frame_mapping="resample")
    key = rig_mesh(rig).data.shape_keys
    frames = key_frames(fcurve(key, 'key_blocks["Exp010"].value'))
    np.testing.assert_array_equal(frames, np.arange(1, 50))  # 2 s at 24 fps, from frame 1
    t = take["time"]
    for frame in (1, 2, 3, 17, 30, 49):
        tau = (frame - 1) / 24.0
        fresh_scene.frame_set(frame)
        for i in (0, 10, 33):
            want = np.interp(tau, t, take["exp"][:, i])
            assert key.key_blocks[f"Exp{i:03d}"].value == pytest.approx(want, abs=1e-5)
        assert rig["emoca_valence"] == pytest.approx(np.interp(tau, t, take["valence"]), abs=1e-5)
    for frame in (1, 5, 9, 45):  # scene frames on a source row: the jaw equals the take's rotation
        fresh_scene.frame_set(frame)
        row = round((frame - 1) / 24 * 30)
        np.testing.assert_allclose(
            quat_matrix(rig.pose.bones["jaw"].rotation_quaternion),
            rodrigues(take["global_pose"][row] * 0 + take["jaw_pose"][row]),
            atol=1e-5,
        )
    fresh_scene.frame_set(3)  # between rows 2 and 3 (weight 0.5): slerp lies halfway in angle
    q = np.array(rig.pose.bones["jaw"].rotation_quaternion)
    ang = [
        np.arccos(np.clip((np.trace(quat_matrix(q).T @ rodrigues(take["jaw_pose"][r])) - 1) / 2, -1, 1)) for r in (2, 3)
    ]
    assert ang[0] == pytest.approx(ang[1], abs=1e-4)


def test_footage_rate_sets_the_scene_rate_and_starts_at_the_playhead(rig, make_take, fresh_scene):
    fresh_scene.frame_current = 50
    path, take = make_take(n_frames=30, fps=29.97, frame0=100)
    action = apply_take(rig, path, frame_mapping="footage_rate", start="playhead", offset=3)
    assert fresh_scene.render.fps == 30 and fresh_scene.render.fps_base == pytest.approx(1.001)
    key = rig_mesh(rig).data.shape_keys
    frames = key_frames(fcurve(key, 'key_blocks["Exp002"].value'))
    np.testing.assert_array_equal(frames, 53 + np.arange(30))
    for row in (0, 13, 29):
        fresh_scene.frame_set(53 + row)
        assert key.key_blocks["Exp002"].value == pytest.approx(take["exp"][row, 2], abs=1e-5)
    assert action["emoca_frame_mapping"] == "footage_rate" and action["emoca_start_frame"] == 53.0


@pytest.mark.parametrize("mapping", ["resample", "footage_rate"])
def test_invalid_frames_get_no_keys(rig, make_take, fresh_scene, mapping):
    set_fps(fresh_scene, 30)
    path, take = make_take(n_frames=20, invalid=(5, 6, 7))
    apply_take(rig, path, frame_mapping=mapping)
    for path_ in ('key_blocks["Exp000"].value', 'pose.bones["jaw"].rotation_quaternion', '["emoca_valence"]'):
        owner = rig_mesh(rig).data.shape_keys if path_.startswith("key") else rig
        frames = key_frames(fcurve(owner, path_))
        np.testing.assert_array_equal(frames, [f for f in range(1, 21) if f - 1 not in (5, 6, 7)])


def test_optional_channels_can_be_left_out(rig, make_take):
    path, _ = make_take(n_frames=8)
    apply_take(rig, path, head_rotation=False, correctives=False, emotion=False)
    key = rig_mesh(rig).data.shape_keys
    assert fcurve(key, 'key_blocks["Exp000"].value') is not None
    assert fcurve(key, 'key_blocks["Pose009"].value') is None
    assert fcurve(rig, 'pose.bones["jaw"].rotation_quaternion', 3) is not None
    assert fcurve(rig, 'pose.bones["root"].rotation_quaternion') is None
    assert fcurve(rig, '["emoca_valence"]') is None and "emoca_valence" not in rig


def test_keys_outside_the_captured_range_are_left_alone(rig, make_take, fresh_scene):
    set_fps(fresh_scene, 30)
    path_a, take_a = make_take(n_frames=60, name="long", seed=1)
    path_b, take_b = make_take(n_frames=20, name="patch", seed=2)
    action = apply_take(rig, path_a)
    fresh_scene.frame_current = 21
    again = apply_take(rig, path_b, start="playhead", action_mode="active")
    assert again == action
    key = rig_mesh(rig).data.shape_keys
    fc = fcurve(key, 'key_blocks["Exp004"].value')
    np.testing.assert_array_equal(key_frames(fc), np.arange(1, 61))
    for frame in (1, 20, 41, 60):  # outside the patch: the first take
        assert fc.evaluate(frame) == pytest.approx(take_a["exp"][frame - 1, 4], abs=1e-5)
    for frame in (21, 30, 40):  # inside: the patch
        assert fc.evaluate(frame) == pytest.approx(take_b["exp"][frame - 21, 4], abs=1e-5)
    fv = fcurve(rig, '["emoca_valence"]')
    assert fv.evaluate(50) == pytest.approx(take_a["valence"][49], abs=1e-5)
    assert fv.evaluate(25) == pytest.approx(take_b["valence"][4], abs=1e-5)


def test_one_action_per_take_named_after_the_clip_with_metadata_and_nla(rig, make_take, fresh_scene):
    path_a, take_a = make_take(n_frames=10, name="interview")
    path_b, _ = make_take(n_frames=10, name="laugh")
    first = apply_take(rig, path_a)
    assert first.name == "EMOCA_interview" and first.use_fake_user
    assert first["emoca_source"] == "/footage/interview.mp4"
    assert first["emoca_take"] == str(path_a)
    assert first["emoca_source_fps"] == pytest.approx(30.0)
    assert json.loads(first["emoca_meta"])["format"] == "emoca-take"
    second = apply_take(rig, path_b, push_down=True)
    assert second.name == "EMOCA_laugh" and second != first
    assert rig.animation_data.action == second
    tracks = rig.animation_data.nla_tracks
    assert len(tracks) == 1 and tracks[0].strips[0].action == first
    key = rig_mesh(rig).data.shape_keys
    assert len(key.animation_data.nla_tracks) == 1
    if animation.SLOTTED:
        assert tracks[0].strips[0].action_slot is not None


def test_emotion_curves_are_id_properties_with_ui_ranges(rig, make_take):
    path, _ = make_take(n_frames=5)
    apply_take(rig, path)
    ui = rig.id_properties_ui("emoca_valence").as_dict()
    assert (ui["min"], ui["max"]) == (-1.0, 1.0)
    ui = rig.id_properties_ui("emoca_expr_Happy").as_dict()
    assert (ui["min"], ui["max"]) == (0.0, 1.0)
    assert fcurve(rig, '["emoca_expr_Happy"]').group.name == "Emotion"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        arrays[k] = v(arrays) if callable(v) else v
    np.savez(path, **arrays)


CORRUPTIONS = {
    "truncated": (_truncate, "readable"),
    "wrong_format": (lambda p: _rewrite(p, meta=np.array(json.dumps({"format": "something", "version": 1}))), "format"),
    "newer_version": (
        lambda p: _rewrite(p, meta=np.array(json.dumps({"format": "emoca-take", "version": TAKE_VERSION + 1}))),
        "newer",
    ),
    "nan_in_valid_row": (
        lambda p: _rewrite(
            p, exp=lambda a: np.where(np.arange(len(a["exp"]))[:, None] == 3, np.nan, a["exp"]).astype(np.float32)
        ),
        "NaN",
    ),
    "short_column": (lambda p: _rewrite(p, jaw_pose=lambda a: a["jaw_pose"][:-1]), "jaw_pose"),
    "too_many_exp": (
        lambda p: _rewrite(
            p,
            exp=lambda a: np.zeros((len(a["exp"]), 80), np.float32),
            raw_exp=lambda a: np.zeros((len(a["exp"]), 80), np.float32),
        ),
        "Exp0",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_bad_take_leaves_the_scene_untouched(rig, make_take, fresh_scene, corruption):
    good, _ = make_take(n_frames=10, name="good")
    apply_take(rig, good)
    path, _ = make_take(n_frames=10, name="bad")
    damage, message = CORRUPTIONS[corruption]
    damage(path)
    before = state(fresh_scene)
    with pytest.raises(EmocaError, match=message) as err:
        apply_take(rig, path, frame_mapping="footage_rate", camera_match=True, push_down=True)
    assert str(path.name) in str(err.value) or corruption == "too_many_exp"
    assert state(fresh_scene) == before


def test_save_and_reload_keeps_the_keys(rig, make_take, fresh_scene, tmp_path):
    set_fps(fresh_scene, 30)
    path, take = make_take(n_frames=25, name="saved")
    apply_take(rig, path)
    blend = tmp_path / "scene é.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    arm = bpy.data.objects["FLAME_rig"]
    key = bpy.data.objects["FLAME"].data.shape_keys
    action = bpy.data.actions["EMOCA_saved"]
    assert action.use_fake_user and action["emoca_take"] == str(path)
    scene = bpy.context.scene
    scene.frame_set(11)
    assert key.key_blocks["Exp007"].value == pytest.approx(take["exp"][10, 7], abs=1e-5)
    assert arm["emoca_arousal"] == pytest.approx(take["arousal"][10], abs=1e-5)
    np.testing.assert_allclose(
        quat_matrix(arm.pose.bones["jaw"].rotation_quaternion), rodrigues(take["jaw_pose"][10]), atol=1e-5
    )


def test_camera_match_projects_the_mesh_like_the_take(rig, make_take, fresh_scene):
    """A vertex seen through the matched camera lands where the take's camera and crop put it."""
    from bpy_extras.object_utils import world_to_camera_view

    set_fps(fresh_scene, 30)
    path, take = make_take(n_frames=12, name="cam")
    take.arrays["crop"][:] = np.array([[1.7, 0, 150.0], [0, 1.7, 20.0], [0, 0, 1]], np.float32)
    write_take(path, take.arrays, take.meta)
    apply_take(rig, path, camera_match=True)
    cam = fresh_scene.camera
    assert cam is not None and cam.data.type == "ORTHO"
    row = 6
    fresh_scene.frame_set(row + 1)
    mesh = rig_mesh(rig)
    dg = bpy.context.evaluated_depsgraph_get()
    ev = mesh.evaluated_get(dg)
    me = ev.to_mesh()
    import mathutils

    s, tx, ty = take["cam"][row].astype(np.float64)
    crop = take["crop"][row].astype(np.float64)
    for vi in (0, 100, 300):
        local = np.array(me.vertices[vi].co)
        ndc = world_to_camera_view(fresh_scene, cam.evaluated_get(dg), ev.matrix_world @ mathutils.Vector(local))
        got = np.array([ndc.x * 640, (1 - ndc.y) * 360]) - 0.5  # camera view: pixel corners; takes: centres
        x, y = s * (local[0] + tx), -s * (local[1] + ty)
        want = (crop @ [(x + 1) * 112, (y + 1) * 112, 1])[:2]
        np.testing.assert_allclose(got, want, atol=1e-2)
    ev.to_mesh_clear()
