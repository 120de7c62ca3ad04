"""Retargeting in real Blender: an open take (and a Live Link CSV, and a FLAME take's own ARKit channels) onto a
character with its own topology and non-Apple key names; weights recovered from the evaluated mesh; bones, presets,
the operator (one undo step), the API and ``blender -c emoca retarget``; validate-then-write with rollback.

The character is built procedurally (emoca_blender.retarget.bench.build_character: an ellipsoid head, not ICT's
or FLAME's topology, one known deformation per ARKit channel); takes come from numpy-only backend code, so these
tests run under Blender 4.2 (no torch) too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from backend.take.writer import write_take
from emoca_blender import animation, api, cli
from emoca_blender.retarget.bench import build_character, recover_weights, weights_take
from emoca_blender.retarget.bones import quat_to_euler
from emoca_blender.retarget.mapping import BoneSettings, Entry, Mapping, auto_mapping, save_preset
from emoca_blender.retarget.write import write_key_curves
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.livelink import write_csv
from emoca_contract.rotations import axis_angle_to_quat, quat_to_matrix

from .test_apply import quat_matrix, set_fps, state

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender


@pytest.fixture
def character(fresh_scene):
    set_fps(fresh_scene, 30)
    return build_character(scheme="cc")


@pytest.fixture
def open_take(tmp_path):
    def make(n_frames: int = 40, name: str = "open performance", seed: int = 0, **kwargs):
        take = make_synthetic_open_take(n_frames, fps=30.0, seed=seed, **kwargs)
        take.meta["source"].update({"path": f"/footage/{name}.mp4"})
        return write_take(tmp_path / f"{name}.npz", take.arrays, take.meta), take

    return make


def key_state(obj) -> dict:
    """What a failed retarget must not change (beyond apply's ``state``): the mesh's Key Action."""
    key = obj.data.shape_keys
    ad = key.animation_data
    return {"key_action": ad.action.name if ad and ad.action else None, **state(bpy.context.scene)}


@pytest.mark.parametrize("scheme", ["cc", "numbered", "snake_dot", "camel_underscore"])
def test_an_open_take_drives_a_character_with_its_own_names_and_topology(fresh_scene, open_take, scheme):
    """The done-when test: the take's channels drive the keys; the weights the evaluated mesh shows are the take's."""
    set_fps(fresh_scene, 30)
    obj, _arm, deltas, names = build_character(scheme=scheme)
    assert len(obj.data.vertices) not in (24591, 5023)  # neither ICT's nor FLAME's topology
    path, take = open_take(n_frames=36)
    result = api.retarget(obj, path)
    assert result.n_frames == 36 and len(result.mapping.entries) == 52
    assert {e.source: e.target for e in result.mapping.entries} == dict(zip(ARKIT_NAMES, names))
    recovered = recover_weights(obj, deltas, np.arange(1, 37))
    error = np.abs(recovered - take["arkit"]).mean()
    assert error <= 0.05, error
    assert error < 1e-4  # the keys are the take's channels, up to float32 rounding
    assert any("keys no channel drives (3)" in line for line in result.report)
    action = result.action
    suffix = "" if animation.SLOTTED else "_shapes"  # 4.2: the Key has an Action of its own
    assert action.name == "EMOCA_open performance_retarget" + suffix and action.use_fake_user
    assert action["emoca_take_kind"] == "open" and "open take" in action["emoca_retarget_source"]
    assert json.loads(action["emoca_retarget_mapping"])["format"] == "emoca-retarget-preset"
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, 36)


def test_a_live_link_csv_from_the_app_retargets_like_a_take(character, tmp_path):
    obj, _arm, deltas, _names = character
    take = weights_take(48, fps=30.0)
    path = write_csv(take, tmp_path / "iPhone take é.csv")
    result = api.retarget(obj, path, csv_fps=30)
    recovered = recover_weights(obj, deltas, np.arange(1, 49))
    assert np.abs(recovered - take["arkit"]).mean() < 1e-4
    assert result.action["emoca_take_kind"] == "open" and "Live Link Face CSV" in result.report[0]


def test_head_and_jaw_bones_in_their_own_rotation_modes(character, open_take):
    obj, arm, _deltas, _names = character
    path, take = open_take(n_frames=20)
    result = api.retarget(obj, path, head_bone="Head", jaw_bone="Jaw", jaw_open_gain=0.4)
    assert result.armature == arm
    scene = bpy.context.scene
    head, jaw = arm.pose.bones["Head"], arm.pose.bones["Jaw"]
    assert head.rotation_mode == "QUATERNION" and jaw.rotation_mode == "XYZ"
    for frame in (1, 9, 20):
        scene.frame_set(frame)
        want = quat_to_matrix(axis_angle_to_quat(take["global_pose"][frame - 1].astype(np.float64)))
        np.testing.assert_allclose(quat_matrix(tuple(head.rotation_quaternion)), want, atol=1e-5)
        jaw_open = take["arkit"][frame - 1, ARKIT_INDEX["jawOpen"]]
        np.testing.assert_allclose(tuple(jaw.rotation_euler), (0.4 * jaw_open, 0.0, 0.0), atol=1e-5)
    if animation.SLOTTED:  # one Action, a slot per ID
        assert obj.data.shape_keys.animation_data.action == arm.animation_data.action
    else:
        assert arm.animation_data.action.name == result.action.name.removesuffix("_shapes")
    assert any(line == "bone Head: rotation keyed" for line in result.report)


def test_euler_keys_match_blenders_own_conversion_for_every_order(character):
    import mathutils

    obj, arm, _deltas, _names = character
    rng = np.random.default_rng(3)
    q = rng.normal(size=(6, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    frames = np.arange(1, 7, dtype=float)
    for order in ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX", "AXIS_ANGLE"):
        arm.pose.bones["Jaw"].rotation_mode = order
        write_key_curves(obj, frames, {}, {"Jaw": q}, action_name=f"jaw {order}")
        for k, frame in enumerate(frames):
            bpy.context.scene.frame_set(int(frame))
            got = arm.pose.bones["Jaw"].matrix_basis.to_3x3()
            np.testing.assert_allclose(np.array(got), np.array(mathutils.Quaternion(q[k]).to_matrix()), atol=1e-5)
    small = axis_angle_to_quat(np.array([[0.3, -0.5, 0.2]]))  # a head-sized turn: the same angles as Blender's
    for order in ("XYZ", "ZXY", "YZX"):
        want = tuple(mathutils.Quaternion(small[0]).to_euler(order))
        np.testing.assert_allclose(quat_to_euler(small, order)[0], want, atol=1e-6)


def test_a_flame_take_uses_its_own_arkit_channels_and_its_jaw(character, tmp_path):
    obj, arm, deltas, _names = character
    flame = make_synthetic_take(24, seed=5)
    weights = weights_take(24)["arkit"]
    flame.arrays["arkit"] = flame.arrays["raw_arkit"] = weights
    flame.meta["arkit"] = {"names": list(ARKIT_NAMES), "source": "detector scores", "unobserved": []}
    flame.meta["source"].update({"path": "/footage/flame clip.mp4", "fps": 30.0})
    path = write_take(tmp_path / "flame.npz", flame.arrays, flame.meta)
    result = api.retarget(obj, path, jaw_bone="Jaw", flame_channels="detector")
    assert result.report[0].startswith("source: FLAME take: its own detector ARKit channels")
    assert np.abs(recover_weights(obj, deltas, np.arange(1, 25)) - weights).mean() < 1e-4
    bpy.context.scene.frame_set(7)
    want = quat_to_matrix(axis_angle_to_quat(flame["jaw_pose"][6].astype(np.float64)))
    np.testing.assert_allclose(np.array(arm.pose.bones["Jaw"].matrix_basis.to_3x3()), want, atol=1e-5)


def test_a_flame_take_without_arkit_channels_changes_nothing(character, make_take):
    obj, _arm, _deltas, _names = character
    path, _ = make_take(n_frames=10)
    before = key_state(obj)
    with pytest.raises(EmocaError, match="no ARKit channels") as err:
        api.retarget(obj, path, flame_channels="detector")
    assert err.value.code == "config_invalid" and key_state(obj) == before


def test_an_edited_preset_travels_to_another_character_with_the_same_names(fresh_scene, open_take, tmp_path):
    set_fps(fresh_scene, 30)
    first, _, _, names = build_character("First", scheme="cc", seed=0)
    mapping, _ = auto_mapping(ARKIT_NAMES, names)
    edited = Mapping(
        entries=tuple(Entry(e.source, e.target, 0.5, 0.1, 0.0, 0.4) if e.source == "jawOpen" else e
                      for e in mapping.entries) + (Entry("jawOpen", "Sculpt_Fix", 2.0, 0.0, 0.0, 1.0),),
        bones=BoneSettings(head_bone="Head"),
        name="CC characters",
    )  # fmt: skip
    preset = save_preset(edited, tmp_path / "cc.json")
    second, arm2, _, _ = build_character("Second", scheme="cc", seed=9)  # other deformations, same key names
    path, take = open_take(n_frames=15)
    result = api.retarget(second, path, str(preset))
    assert result.armature == arm2 and "mapping CC characters: 53 entries" in result.report
    key = second.data.shape_keys.key_blocks
    jaw_open = take["arkit"][:, ARKIT_INDEX["jawOpen"]]
    for frame in (1, 8, 15):
        bpy.context.scene.frame_set(frame)
        v = float(jaw_open[frame - 1])
        assert key["CC_Jaw_Open"].value == pytest.approx(min(0.4, 0.5 * v + 0.1), abs=1e-5)
        assert key["Sculpt_Fix"].value == pytest.approx(min(1.0, 2 * v), abs=1e-5)
        assert key["CC_Mouth_Smile_L"].value == pytest.approx(take["arkit"][frame - 1, 23], abs=1e-5)
    assert first.data.shape_keys.animation_data is None  # the first character is untouched


def test_a_preset_for_a_fuller_character_skips_what_this_one_lacks(character, open_take):
    obj, _arm, _deltas, _names = character
    path, _ = open_take(n_frames=8)
    mapping = Mapping(entries=(Entry("jawOpen", "CC_Jaw_Open"), Entry("jawOpen", "Missing_Key")))
    result = api.retarget(obj, path, mapping)
    assert "skipped: jawOpen -> Missing_Key: the character has no shape key 'Missing_Key'" in result.report


BAD = {
    "no key reached": (lambda obj: {"mapping": Mapping(entries=(Entry("jawOpen", "Nope"),))}, "nothing to key"),
    "missing bone": (lambda obj: {"head_bone": "Neck"}, "no bone 'Neck'"),
    "bad axes": (lambda obj: {"head_bone": "Head", "head_axes": "X,Y"}, "head_axes"),
    "unknown option": (lambda obj: {"frame_rate": 30}, "unknown retarget option 'frame_rate'"),
    "bad option": (lambda obj: {"start": "middle"}, "start 'middle'"),
    "not a mesh": (lambda obj: {"target": obj.parent}, "child meshes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_changes_nothing(character, open_take, case):
    obj, _arm, _deltas, _names = character
    path, _ = open_take(n_frames=8)
    api.retarget(obj, path, name="earlier")  # an earlier retarget: its Action must stay assigned
    make, message = BAD[case]
    kwargs = make(obj)
    target = kwargs.pop("target", obj)
    if case == "not a mesh":
        extra = bpy.data.objects.new("Second_Mesh", obj.data.copy())
        bpy.context.scene.collection.objects.link(extra)
        extra.parent = obj.parent
    before = key_state(obj)
    with pytest.raises(EmocaError, match=message) as err:
        api.retarget(target, path, **kwargs)
    assert err.value.code == "config_invalid"
    if case != "not a mesh":
        assert key_state(obj) == before


def test_a_failing_write_is_rolled_back(character, open_take, monkeypatch):
    obj, arm, _deltas, _names = character
    path, _ = open_take(n_frames=8)
    api.retarget(obj, path, name="earlier", head_bone="Head")
    scene = bpy.context.scene
    scene.frame_end, scene.render.fps = 99, 24  # footage_rate would set 30 fps and the take's range
    before = key_state(obj)
    real = animation.write_channels
    calls = []

    def failing(action, id_data, *args, **kwargs):
        calls.append(id_data)
        if len(calls) == 2:  # the shape keys are written; the bones fail
            raise RuntimeError("disk full")
        return real(action, id_data, *args, **kwargs)

    monkeypatch.setattr(animation, "write_channels", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        api.retarget(obj, path, name="later", head_bone="Head", frame_mapping="footage_rate", offset=4)
    assert key_state(obj) == before and (scene.frame_start, scene.frame_end, scene.render.fps) == (1, 99, 24)
    assert "later" not in bpy.data.actions and arm.animation_data.action.name.startswith("earlier")


def test_active_action_mode_replaces_only_the_takes_range(character, open_take):
    obj, _arm, _deltas, _names = character
    path, take = open_take(n_frames=10)
    first = api.retarget(obj, path, offset=20).action
    second = api.retarget(obj, path, action_mode="active").action
    assert first == second
    key = obj.data.shape_keys.key_blocks
    bpy.context.scene.frame_set(25)
    assert key["CC_Jaw_Open"].value == pytest.approx(take["arkit"][4, ARKIT_INDEX["jawOpen"]], abs=1e-5)
    bpy.context.scene.frame_set(5)
    assert key["CC_Jaw_Open"].value == pytest.approx(take["arkit"][4, ARKIT_INDEX["jawOpen"]], abs=1e-5)


def test_write_key_curves_checks_everything_first(character):
    obj, _arm, _deltas, _names = character
    frames = np.arange(1, 6, dtype=float)
    ok = {"CC_Jaw_Open": np.linspace(0, 1, 5), 'Quote "key"': np.zeros(5)}
    obj.shape_key_add(name='Quote "key"', from_mix=False)
    written = write_key_curves(obj, frames, ok, action_name="direct")
    assert written.n_keys == 10
    bpy.context.scene.frame_set(5)
    assert obj.data.shape_keys.key_blocks["CC_Jaw_Open"].value == pytest.approx(1.0)
    before = key_state(obj)
    for bad, message in (
        ({"CC_Jaw_Open": np.zeros(4)}, "expected \\(5,\\)"),
        ({"CC_Jaw_Open": np.full(5, np.nan)}, "finite"),
        ({"Basis": np.zeros(5)}, "no shape key 'Basis'"),
        ({"Nope": np.zeros(5), "Nope2": np.zeros(5)}, "no shape key 'Nope' \\(and 1 more\\)"),
    ):
        with pytest.raises(EmocaError, match=message):
            write_key_curves(obj, frames, bad, action_name="bad")
        assert key_state(obj) == before
    with pytest.raises(EmocaError, match="strictly increasing"):
        write_key_curves(obj, frames[::-1], ok)
    with pytest.raises(EmocaError, match="action_mode"):
        write_key_curves(obj, frames, ok, action_mode="append")
    assert key_state(obj) == before


def test_the_panel_matches_retargets_in_one_undo_step_and_saves_presets(character, open_take, tmp_path):
    obj, _arm, _deltas, _names = character
    path, take = open_take(n_frames=12, name="panel take")
    settings = bpy.context.scene.emoca_retarget
    settings.target, settings.take = obj, str(path)
    assert bpy.ops.emoca.retarget_match() == {"FINISHED"}
    assert len(settings.entries) == 52 and settings.report.startswith("matched 52 channels")
    entry = next(e for e in settings.entries if e.source == "jawOpen")
    entry.gain = 0.5
    settings.head_bone = "Head"
    bpy.ops.ed.undo_push(message="mapping edited")
    before = key_state(obj)
    assert bpy.ops.emoca.retarget("EXEC_DEFAULT", True) == {"FINISHED"}
    assert key_state(bpy.data.objects["Character"]) != before
    bpy.context.scene.frame_set(3)
    keys = bpy.data.objects["Character"].data.shape_keys.key_blocks
    assert keys["CC_Jaw_Open"].value == pytest.approx(0.5 * take["arkit"][2, ARKIT_INDEX["jawOpen"]], abs=1e-5)
    assert "bone Head: rotation keyed" in bpy.context.scene.emoca_retarget.report
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert key_state(bpy.data.objects["Character"]) == before  # look up by name: undo replaced the data
    preset = tmp_path / "panel preset.json"
    assert bpy.ops.emoca.retarget_preset_save(filepath=str(preset)) == {"FINISHED"}
    saved = json.loads(preset.read_text(encoding="utf-8"))
    assert saved["bones"]["head_bone"] == "Head"
    assert next(e for e in saved["entries"] if e["source"] == "jawOpen")["gain"] == 0.5
    settings = bpy.context.scene.emoca_retarget
    settings.entries.clear()
    settings.head_bone = ""
    assert bpy.ops.emoca.retarget_preset_load(filepath=str(preset)) == {"FINISHED"}
    assert len(settings.entries) == 52 and settings.head_bone == "Head"
    assert bpy.ops.emoca.retarget_entry_add() == {"FINISHED"} and len(settings.entries) == 53
    assert bpy.ops.emoca.retarget_entry_remove() == {"FINISHED"} and len(settings.entries) == 52
    csv_out = tmp_path / "panel take.csv"
    assert bpy.ops.emoca.export_live_link(filepath=str(csv_out)) == {"FINISHED"}
    assert csv_out.read_text().startswith("Timecode,BlendShapeCount,EyeBlinkLeft")


def test_the_operator_reports_a_missing_take_and_changes_nothing(character):
    obj, _arm, _deltas, _names = character
    settings = bpy.context.scene.emoca_retarget
    settings.target, settings.take = obj, ""
    before = key_state(obj)
    with pytest.raises(RuntimeError, match="no take chosen"):  # bpy.ops raises on an ERROR report headless
        bpy.ops.emoca.retarget()
    assert key_state(obj) == before
    settings.take = "//missing take.npz"
    with pytest.raises(RuntimeError, match="input_missing"):
        bpy.ops.emoca.retarget()
    assert key_state(obj) == before


def test_the_command_line_retargets_into_a_saved_blend(character, open_take, tmp_path, capsys):
    obj, _arm, _deltas, _names = character
    blend = tmp_path / "character.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    path, take = open_take(n_frames=10, name="cli take")
    out, preset = tmp_path / "out" / "retargeted.blend", tmp_path / "used.json"
    argv = ["retarget", str(path), "--blend", str(blend), "--target", "Character", "--output", str(out),
            "--head-bone", "Head", "--jaw-bone", "Jaw", "--jaw-open-axis=-X", "--offset", "4",
            "--save-preset", str(preset)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "matched 52 channels" in printed and "retargeted 10 frames" in printed
    assert json.loads(preset.read_text(encoding="utf-8"))["bones"]["jaw_open_axis"] == "-X"
    bpy.ops.wm.open_mainfile(filepath=str(out))
    bpy.context.scene.frame_set(5 + 3)
    keys = bpy.data.objects["Character"].data.shape_keys.key_blocks
    assert keys["CC_Eye_Blink_L"].value == pytest.approx(take["arkit"][3, 0], abs=1e-5)
    jaw = bpy.data.objects["Character_rig"].pose.bones["Jaw"]
    assert jaw.rotation_euler[0] == pytest.approx(-0.35 * take["arkit"][3, ARKIT_INDEX["jawOpen"]], abs=1e-5)
    assert cli.main(["retarget", str(path), "--blend", str(blend), "--target", "Nobody", "--output",
                     str(tmp_path / "x.blend")]) == 1  # fmt: skip
    assert "no object named 'Nobody'" in capsys.readouterr().err and not (tmp_path / "x.blend").exists()


def test_the_benchmark_prints_its_figures():
    out = subprocess.run(
        [sys.executable, "-m", "emoca_blender.retarget.bench", "--frames", "300", "--check-frames", "12"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    values = dict(line.split(": ") for line in out.stdout.strip().splitlines())
    assert float(values["retarget_weight_error"]) <= 0.05
    assert float(values["retarget_names_matched"]) == 1.0 and float(values["retarget_frames_per_s"]) > 0


def test_other_source_curves_plug_into_the_same_path(character, open_take):
    """A conversion or a solve hands its own channels (here: named after the keys) to the same engine and writer."""
    from emoca_blender.retarget.sources import SourceCurves

    obj, _arm, _deltas, _names = character
    path, take = open_take(n_frames=9)
    values = np.linspace(0, 1, 9)[:, None] * np.array([[1.0, 0.5]])
    source = SourceCurves(["CC_Jaw_Open", "Sculpt_Fix"], values, None, None, "a solve")
    mapping = Mapping(entries=(Entry("CC_Jaw_Open", "CC_Jaw_Open"), Entry("Sculpt_Fix", "Sculpt_Fix")))
    result = api.retarget(obj, path, mapping, source=source)
    assert result.report[0] == "source: a solve"
    bpy.context.scene.frame_set(9)
    keys = obj.data.shape_keys.key_blocks
    assert (keys["CC_Jaw_Open"].value, keys["Sculpt_Fix"].value) == (pytest.approx(1.0), pytest.approx(0.5))
    before = key_state(obj)
    short = SourceCurves(["CC_Jaw_Open"], values[:5, :1], None, None, "too short")
    with pytest.raises(EmocaError) as err:
        api.retarget(obj, path, mapping, source=short)
    assert err.value.code == "internal" and key_state(obj) == before
