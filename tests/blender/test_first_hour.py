"""A first hour in Blender without surprises (issue 13, cases 3, 11, 14, 15, 16): camera match that validates
before it writes, the rig argument checked before a capture, Esc that never waits on the UI thread, the take
folder and face track settings, rigs kept apart from takes, honest custom properties, and headless undo.

Everything here runs without torch (Blender 4.2 too) except the captures marked ``torch``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.take.writer import write_take
from emoca_blender import api, client, modal, takes
from emoca_blender.apply import apply_take
from emoca_blender.preferences import capture_options
from emoca_blender.rig import build_rig, prop_name, rig_info, rig_mesh
from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

from .test_apply import fcurve, key_frames, set_fps, state

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]


def scene_state(scene) -> dict:
    """``state`` plus what a camera match touches on the scene (its camera and render size) and every datablock
    a camera brings (camera data, movie clips)."""
    out = state(scene)
    out["scene_camera"] = scene.camera.name if scene.camera else None
    out["resolution"] = (scene.render.resolution_x, scene.render.resolution_y)
    out["movieclips"] = sorted(c.name for c in bpy.data.movieclips)
    return out


# ------------------------------------------------------------------ case 3: camera match validates, then writes
BAD_SOURCES = {
    "width_text": {"width": "abc"},
    "width_zero": {"width": 0},
    "width_nan": {"width": float("nan")},
    "width_bool": {"width": True},
    "height_missing": {"height": None},
    "height_huge": {"height": 10**9},
    "fps_text": {"fps": "abc"},
    "path_number": {"path": 12},
}


@pytest.mark.parametrize("bad", list(BAD_SOURCES))
def test_camera_match_with_a_bad_source_changes_nothing(rig_file, make_take, fresh_scene, bad):
    """The take reader refuses these; a Take built in memory (what api.apply_take also accepts) must not get
    past the planning step either: every value the camera needs is checked before the scene is touched."""
    rig = build_rig(rig_file)
    path, _ = make_take(n_frames=8, name="camera source")
    take = read_take(path)
    for key, value in BAD_SOURCES[bad].items():
        if value is None:
            del take.meta["source"][key]
        else:
            take.meta["source"][key] = value
    before = scene_state(fresh_scene)
    with pytest.raises(EmocaError) as err:
        apply_take(rig, take, camera_match=True)
    assert err.value.code == "config_invalid"
    assert "meta.source" in err.value.message
    assert scene_state(fresh_scene) == before
    assert not bpy.data.cameras and "camera source_camera" not in bpy.data.objects


def test_a_failed_write_rolls_back_everything_the_camera_match_made(rig_file, make_take, fresh_scene, tmp_path):
    """The last resort behind validation: undoing a complete camera-match write (object, camera data, the
    footage's Movie Clip, scene camera, render size, Actions, frame range) leaves the scene as it was."""
    from emoca_blender.apply import ApplyOptions, _roll_back, _Undo, _write, plan_write

    rig = build_rig(rig_file)
    footage = tmp_path / "footage.mp4"
    footage.write_bytes(b"\x00" * 64)  # Blender opens any file as a clip; it is only the camera's background
    path, _ = make_take(n_frames=8, name="rolled back", path=str(footage))
    before = scene_state(fresh_scene) | {"range": (fresh_scene.frame_start, fresh_scene.frame_end)}
    undo = _Undo()
    _write(plan_write(rig, path, ApplyOptions(camera_match=True), fresh_scene), undo)
    assert fresh_scene.camera is not None and len(bpy.data.movieclips) == 1 and bpy.data.cameras
    _roll_back(undo)
    assert scene_state(fresh_scene) | {"range": (fresh_scene.frame_start, fresh_scene.frame_end)} == before
    assert not bpy.data.cameras and not bpy.data.movieclips


# ------------------------------------------------------------------ case 11: the rig argument, before the capture
@pytest.fixture
def footage(tmp_path) -> Path:
    path = tmp_path / "footage.mp4"
    path.write_bytes(b"\x00" * 256)  # never decoded: every test here fails before the backend runs
    return path


def test_capture_checks_a_missing_rig_file_before_capturing(footage, tmp_path):
    with pytest.raises(EmocaError) as err:
        api.capture(footage, rig=str(tmp_path / "no rig.npz"), output=tmp_path / "t", python=str(tmp_path / "none"))
    assert err.value.code == "input_missing" and "no rig.npz" in err.value.message


def test_capture_checks_a_damaged_rig_file_before_capturing(footage, tmp_path):
    bad = tmp_path / "rig.npz"
    bad.write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(EmocaError) as err:
        api.capture(footage, rig=bad, output=tmp_path / "t", python=str(tmp_path / "none"))
    assert err.value.code in ("asset_invalid", "input_corrupt") and "rig.npz" in err.value.message


def test_capture_refuses_an_object_that_is_not_a_rig_before_capturing(footage, tmp_path, fresh_scene):
    lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", "POINT"))
    fresh_scene.collection.objects.link(lamp)
    for rig in (lamp, 12):
        with pytest.raises(EmocaError) as err:
            api.capture(footage, rig=rig, output=tmp_path / "t", python=str(tmp_path / "none"))
        assert err.value.code == "config_invalid" and "not an EMOCA rig" in err.value.message


def test_find_rig_and_apply_take_refuse_a_path_with_a_clear_error(rig_file, make_take):
    path, _ = make_take(n_frames=4)
    with pytest.raises(EmocaError) as err:
        apply_take(str(rig_file), path)
    assert err.value.code == "config_invalid" and "Import Rig" in err.value.hint


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from backend.synthetic.clips import make_astronaut_clip

    return make_astronaut_clip(tmp_path_factory.mktemp("clip") / "rig arg.mp4", n_frames=5).path


@pytest.mark.torch
@pytest.mark.slow
def test_cli_capture_with_a_rig_file_builds_that_rig(clip, rig_file, tmp_path):
    """`blender -c emoca capture clip.mp4 --output x.blend --rig rig.npz`: crashed in find_rig after the capture."""
    from emoca_blender import cli

    blend = tmp_path / "x.blend"
    argv = ["capture", str(clip), "--output", str(blend), "--rig", str(rig_file), "--model", "untrained"]
    assert cli.main(argv + ["--device", "cpu"]) == 0
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    arm = bpy.data.objects["FLAME_rig"]
    assert rig_info(arm)["source"] == str(rig_file)
    assert arm.animation_data.action.name == "EMOCA_rig arg"
    takes_dir = tmp_path / "x_takes"
    assert takes.take_files(takes_dir) == [takes_dir / "rig arg.npz"]
    assert not (takes_dir / "rigs").exists()  # the rig came from the file: none exported


@pytest.mark.torch
@pytest.mark.slow
def test_panel_capture_writes_takes_beside_the_blend_and_the_rig_apart(clip, tmp_path, fresh_scene, addon_prefs):
    """The panel's defaults: takes into //takes/ of the saved .blend, the exported rig into its rigs/ folder."""
    addon_prefs.emoca_model = "untrained"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    assert bpy.ops.emoca.capture(input=str(clip)) == {"FINISHED"}
    folder = tmp_path / "takes"
    assert takes.take_files(folder) == [folder / "rig arg.npz"]
    assert [p.name for p in (folder / "rigs").iterdir()] == ["rig arg_rig.npz"]
    rig = bpy.context.scene.emoca.rig
    assert rig_info(rig)["source"] == str(folder / "rigs" / "rig arg_rig.npz")


# ------------------------------------------------------------------ case 14: Esc asks the backend to stop and polls
@pytest.fixture
def stubborn_python(tmp_path) -> Path:
    """An interpreter stand-in that ignores stdin closing (a backend stuck in a long network call): a real
    process that only a terminate ends."""
    script = tmp_path / "stubborn-python"
    script.write_text("#!/bin/sh\nexec sleep 120\n")
    script.chmod(0o755)
    return script


def test_backend_stop_never_waits_and_escalates_by_elapsed_time(stubborn_python):
    proc = client.BackendProcess(stubborn_python)
    proc.stop()  # closes stdin: a real backend exits on EOF; this one does not
    assert proc.reap(elapsed=0.0) is False and proc.alive
    assert proc.reap(elapsed=client.TERMINATE_AFTER_S + 0.1) in (False, True)  # terminate sent
    deadline = time.monotonic() + 60
    while not proc.reap(elapsed=client.TERMINATE_AFTER_S + 0.2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.alive and proc.proc.returncode == -15  # ended by SIGTERM, not by waiting


class _CaptureOp(modal.BackendJobOperator):
    """The modal-job mixin as the capture operator uses it, outside an Operator class (no UI headless)."""

    job_props = "emoca_job"
    job_noun = "Capture"
    cancelled_message = "Capture cancelled; the scene is unchanged"

    def __init__(self):
        self.reports: list[tuple[set, str]] = []

    def report(self, type, message):  # noqa: A002 - Blender's signature
        self.reports.append((type, message))

    def prepare(self, context):
        return "capturing"

    def make_job(self, context, proc):
        return client.CaptureJob(proc, {"input": "clip.mp4", "output": "clip.npz", "options": {}})

    def progress_text(self, props):
        return props.stage

    def job_done(self, context, props):
        return {"FINISHED"}


def test_esc_keeps_the_operator_modal_until_the_backend_is_gone(stubborn_python, monkeypatch):
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", str(stubborn_python))
    context = bpy.context
    op = _CaptureOp()
    assert op._begin(context)
    proc = op._proc
    props = context.window_manager.emoca_job
    assert props.running
    esc, tick = SimpleNamespace(type="ESC"), SimpleNamespace(type="TIMER")
    assert op.modal(context, esc) == {"RUNNING_MODAL"}  # asked to stop; nothing waited for
    assert props.running and props.stage == "stopping" and proc.alive
    assert op.modal(context, esc) == {"RUNNING_MODAL"}  # a second Esc while stopping changes nothing
    result, deadline = {"RUNNING_MODAL"}, time.monotonic() + 60
    while result == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        time.sleep(modal.TICK_S)
        result = op.modal(context, tick)
    assert result == {"CANCELLED"}
    assert not proc.alive and not props.running and props.message == op.cancelled_message


# ------------------------------------------------------------------ case 15: take folder, face track, rigs apart
def test_take_folder_defaults_beside_the_blend_and_needs_it_saved(tmp_path):
    assert takes.take_folder("//takes/", str(tmp_path / "shot.blend")) == tmp_path / "takes"
    assert takes.take_folder(str(tmp_path / "abs"), "") == tmp_path / "abs"
    with pytest.raises(EmocaError) as err:
        takes.take_folder("//takes/", "")
    assert err.value.code == "config_invalid" and "Save the .blend" in err.value.hint


def test_capture_of_an_unsaved_blend_says_so_before_starting(fresh_scene, footage, monkeypatch, tmp_path):
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", str(tmp_path / "never started"))
    assert fresh_scene.emoca.take_dir == "//takes/"
    with pytest.raises(RuntimeError, match="not saved"):
        bpy.ops.emoca.capture(input=str(footage))


def test_face_track_is_any_number(fresh_scene):
    settings = fresh_scene.emoca
    settings.face = "TRACK"
    settings.face_track = 7
    assert capture_options(settings)["face"] == 7
    settings.face = "all"
    assert capture_options(settings)["face"] == "all"


def test_unused_take_and_rig_path_settings_are_gone():
    props = bpy.types.Scene.bl_rna.properties["emoca"].fixed_type.properties
    assert "take_path" not in props and "rig_path" not in props and "take_dir" in props


def test_every_property_and_operator_has_a_description(addon):
    """Operators: their tooltip (the docstring); every property any class declares: its tooltip."""
    empty = []
    for cls in addon.CLASSES:
        if issubclass(cls, bpy.types.Operator):
            module, name = cls.bl_idname.split(".")
            rna, inherited = getattr(getattr(bpy.ops, module), name).get_rna_type(), {"rna_type"}
            if not rna.description.strip():
                empty.append(cls.__name__)
        else:
            base = next(b for b in cls.__mro__[1:] if "bl_rna" in vars(b))  # the bpy.types base
            rna, inherited = cls.bl_rna, {p.identifier for p in base.bl_rna.properties}
        empty += [f"{cls.__name__}.{p.identifier}" for p in rna.properties
                  if p.identifier not in inherited and not p.description.strip()]  # fmt: skip
    assert not empty, empty


def test_capture_targets_keep_rigs_out_of_the_take_folder(tmp_path):
    take, rig = takes.capture_targets(tmp_path / "clip 1.mp4", tmp_path / "takes", face="largest")
    assert take == tmp_path / "takes" / "clip 1.npz"
    assert rig.parent == tmp_path / "takes" / "rigs" and rig.suffix == ".npz"
    take, _ = takes.capture_targets(tmp_path / "clip 1.mp4", tmp_path / "takes", face="all")
    assert take == tmp_path / "takes"  # one take per track, named by the backend


def test_take_globs_skip_rig_files_and_a_rig_given_as_a_take_is_named(rig_file, make_take, tmp_path):
    path, _ = make_take(n_frames=4, name="shot")
    folder = path.parent
    shutil.copy(rig_file, folder / "rig.npz")
    (folder / "notes.npz").write_bytes(b"not a zip")
    assert takes.take_files(folder) == [path]
    assert api.take_files(folder) == [path]
    rig = build_rig(rig_file)
    with pytest.raises(EmocaError) as err:
        apply_take(rig, folder / "rig.npz")
    assert err.value.code == "input_unsupported"
    assert "rig.npz" in err.value.message and "rig file" in err.value.message and "Import Rig" in err.value.hint


@pytest.mark.parametrize("take_fps, scene_fps", [(30.0, 24), (25.0, 30), (30.0, 30)])
def test_scene_range_ends_on_the_last_key(rig_file, make_take, fresh_scene, take_fps, scene_fps):
    rig = build_rig(rig_file)
    set_fps(fresh_scene, scene_fps)
    path, _ = make_take(n_frames=30, fps=take_fps)
    apply_take(rig, path)
    frames = key_frames(fcurve(rig_mesh(rig).data.shape_keys, 'key_blocks["Exp000"].value'))
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (int(frames[0]), int(frames[-1]))


def emotion_props(classes) -> set[str]:
    return {"emoca_valence", "emoca_arousal", *(prop_name(c) for c in classes)}


def test_the_rigs_custom_properties_are_only_its_emotion_curves(rig_file, make_take):
    """Internal data (joint expdirs, rig kind, metadata) lives on the armature data, out of the object's
    custom properties panel: what is left there is what a user animates or drives."""
    rig = build_rig(rig_file)
    assert set(rig.keys()) == set()
    assert rig_info(rig)["kind"] == "flame" and rig_info(rig)["n_exp"] == 50
    path, take = make_take(n_frames=6)
    apply_take(rig, path)
    assert set(rig.keys()) == emotion_props(take.meta["emotion"]["classes"])
    for name in rig.keys():
        assert fcurve(rig, f'["{name}"]') is not None, name  # every one is keyed by the take


def test_a_rig_saved_by_the_first_release_is_still_found_and_keyed(rig_file, make_take, tmp_path):
    """Rigs in users' .blend files from the first release kept their data as object properties (emoca_n_exp,
    emoca_joint_expdirs, ...): they are still rigs, and a take still keys them, through a save and reload."""
    from emoca_blender.rig import RIG_INFO, find_rig

    rig = build_rig(rig_file)
    info = rig_info(rig)
    for key, prop in (("n_exp", "emoca_n_exp"), ("mesh", "emoca_mesh"), ("meta", "emoca_rig_meta"),
                      ("source", "emoca_rig_source"), ("model", "emoca_model"),
                      ("joint_expdirs", "emoca_joint_expdirs")):  # fmt: skip
        rig[prop] = info[key]
    del rig.data[RIG_INFO]  # as the first release wrote it
    name = rig.name
    blend = tmp_path / "first release.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    rig = bpy.data.objects[name]
    assert find_rig(rig) is rig and find_rig(rig_mesh(rig)) is rig
    assert rig_info(rig)["kind"] == "flame" and rig_info(rig)["n_exp"] == 50
    path, take = make_take(n_frames=6)
    action = apply_take(rig, path)
    assert action is not None and fcurve(rig, '["emoca_valence"]') is not None


def test_the_open_rigs_custom_properties_are_only_its_emotion_holder(tmp_path):
    from backend.ict.data import load_ict
    from backend.ict.rig import build_open_rig, write_open_rig
    from emoca_contract.take import FER_CLASSES_DEFAULT

    rig = build_rig(write_open_rig(tmp_path / "ict.npz", build_open_rig(load_ict())))
    assert set(rig.keys()) == emotion_props(FER_CLASSES_DEFAULT)
    assert rig_info(rig)["kind"] == "open" and rig_info(rig)["head_bone"] == "head"


def test_emotion_class_names_map_to_distinct_properties(rig_file, make_take, fresh_scene):
    """'a!' and 'a?' were both emoca_expr_a: one curve silently overwrote the other."""
    classes = ["a!", "a?", 'say "hi"', "back\\slash", "Happy Face", "Happy_Face", "Neutral"]
    assert len({prop_name(c) for c in classes}) == len(classes)
    set_fps(fresh_scene, 30)  # the take's rate: scene frame 3 is row 2
    rig = build_rig(rig_file)
    path, take = make_take(n_frames=6)
    take.meta["emotion"]["classes"] = classes
    write_take(path, take.arrays, take.meta)
    apply_take(rig, path)
    bpy.context.scene.frame_set(3)
    for c, cls in enumerate(classes):
        assert rig[prop_name(cls)] == pytest.approx(float(take["expression"][2, c]), abs=1e-5), cls


# ------------------------------------------------------------------ case 16: headless undo, the documented example
def headless_undo_example() -> str:
    """The Python block of docs/headless.md's "Undo in scripts" section."""
    doc = (ROOT / "docs" / "headless.md").read_text(encoding="utf-8")
    section = doc.split("## Undo in scripts", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has one Python example"
    return blocks[0]


def test_the_documented_headless_undo_example_runs(rig_file, make_take, tmp_path):
    path, _ = make_take(n_frames=10, name="take")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(rig_file, work / "rig.npz")
    shutil.copy(path, work / "take.npz")
    prelude = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import bpy
        import emoca_blender
        emoca_blender.register()  # what enabling the extension does
        bpy.ops.wm.read_factory_settings(use_empty=True)
        """
    )
    epilogue = "\nprint('EXAMPLE RAN')\nemoca_blender.unregister()  # what disabling the extension does\n"
    script = prelude + headless_undo_example() + epilogue
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "EXAMPLE RAN" in out.stdout
