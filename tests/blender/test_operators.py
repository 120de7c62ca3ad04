"""Operators: clean (un)registration, one undo step per apply/capture, capture and cancel with the real backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from emoca_blender import api
from emoca_blender.rig import build_rig, rig_info, rig_mesh
from emoca_contract.errors import EmocaError

from .test_apply import state

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]

REGISTER_SCRIPT = textwrap.dedent(
    """
    import sys, bpy
    sys.path.insert(0, sys.argv[1])
    import emoca_blender
    def ours():
        return sorted(n for n in dir(bpy.types) if n.startswith(("EMOCA_", "Emoca")))
    before = ours()
    for _ in range(2):  # register twice in a row (disable/enable cycle)
        emoca_blender.register()
        registered = ours()
        assert hasattr(bpy.types.Scene, "emoca") and hasattr(bpy.types.WindowManager, "emoca_job")
        assert hasattr(bpy.types.Scene, "emoca_train") and hasattr(bpy.types.WindowManager, "emoca_train_job")
        assert all(cls.is_registered for cls in emoca_blender.CLASSES)
        emoca_blender.unregister()
        assert ours() == before, ours()
        assert not any(cls.is_registered for cls in emoca_blender.CLASSES)
        assert not hasattr(bpy.types.Scene, "emoca")
        assert not hasattr(bpy.types.Scene, "emoca_train")
        assert not hasattr(bpy.types.WindowManager, "emoca_train_job")
    print("REGISTERED", ",".join(registered))
    """
)


def test_register_and_unregister_are_clean():
    out = subprocess.run(
        [sys.executable, "-c", REGISTER_SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    names = out.stdout.split("REGISTERED ")[1].strip().split(",")
    for expected in (
        "EMOCA_OT_capture",
        "EMOCA_OT_apply_take",
        "EMOCA_OT_import_rig",
        "EMOCA_PT_view3d",
        "EMOCA_PT_clip",
        "EMOCA_OT_train",
        "EMOCA_OT_train_stop",
        "EMOCA_OT_use_trained_model",
        "EMOCA_PT_view3d_train",
    ):
        assert expected in names


def test_import_rig_operator_builds_the_rig_and_targets_it(rig_file):
    assert bpy.ops.emoca.import_rig(filepath=str(rig_file)) == {"FINISHED"}
    rig = bpy.context.scene.emoca.rig
    assert rig is not None and rig.type == "ARMATURE" and rig_mesh(rig).name == "FLAME"


def test_import_rig_via_the_backend_export(monkeypatch):
    """No rig file: the operator asks the backend (`export_rig`, here the synthetic head)."""
    import sys

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    assert bpy.ops.emoca.import_rig(use_backend=True, head="synthetic") == {"FINISHED"}
    rig = bpy.context.scene.emoca.rig
    assert "synthetic" in rig_info(rig)["model"]
    assert len(rig_mesh(rig).data.shape_keys.key_blocks) == 1 + 100 + 50 + 36


def test_import_rig_via_the_backend_defaults_to_the_open_head(monkeypatch, tmp_path):
    """With no FLAME file set or installed, the backend exports the open ICT head: ARKit keys, no Shape000.."""
    import sys

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path / "no assets"))
    assert bpy.ops.emoca.import_rig(use_backend=True) == {"FINISHED"}
    rig = bpy.context.scene.emoca.rig
    keys = rig_mesh(rig).data.shape_keys.key_blocks
    assert "ICT" in rig_info(rig)["model"] and "not FLAME" in rig_info(rig)["model"]
    assert "mouthSmileLeft" in keys and "jawOpen" in keys and not any(k.name.startswith("Shape") for k in keys)


def test_apply_operator_is_one_undo_step(rig_file, make_take, fresh_scene):
    """Undo driven headless: ed.undo_push marks the state, the operator pushes its own step, ed.undo reverts it.

    ``bpy.ops.x(..)`` from Python pushes no undo step unless asked: ('EXEC_DEFAULT', True) is what a button does.
    """
    build_rig(rig_file)
    fresh_scene.render.fps = 30
    path, take = make_take(n_frames=15, name="undoable")
    bpy.ops.ed.undo_push(message="rig imported")
    before = state(bpy.context.scene)
    assert bpy.ops.emoca.apply_take(
        "EXEC_DEFAULT", True, filepath=str(path), rig_name="FLAME_rig", camera_match=True
    ) == {"FINISHED"}
    after = state(bpy.context.scene)
    assert after != before and "EMOCA_undoable" in after["actions"]
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert state(bpy.context.scene) == before  # everything the apply did is gone: keys, action, camera, props
    arm = bpy.data.objects["FLAME_rig"]  # look up by name after undo (RNA pointers do not survive it)
    assert arm.animation_data is None or arm.animation_data.action is None
    assert bpy.ops.ed.redo() == {"FINISHED"}
    bpy.context.scene.frame_set(5)
    key = bpy.data.objects["FLAME"].data.shape_keys
    assert key.key_blocks["Exp001"].value == pytest.approx(take["exp"][4, 1], abs=1e-5)


def test_apply_operator_reports_a_bad_take_and_changes_nothing(rig_file, tmp_path):
    build_rig(rig_file)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    before = state(bpy.context.scene)
    with pytest.raises(RuntimeError, match="not a readable"):  # bpy.ops raises on an ERROR report headless
        bpy.ops.emoca.apply_take(filepath=str(bad), rig_name="FLAME_rig")
    assert state(bpy.context.scene) == before


# ------------------------------------------------------------------ with the real backend (torch env)
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from backend.synthetic.clips import make_astronaut_clip

    path = tmp_path_factory.mktemp("clip") / "astronaut take.mp4"
    make_astronaut_clip(path, n_frames=6)
    return path


@pytest.mark.torch
@pytest.mark.slow
def test_capture_operator_keys_the_rig_in_one_undoable_step(rig_file, clip, tmp_path, fresh_scene, addon_prefs):
    addon_prefs.emoca_model = "untrained"  # the EMOCA path (the default without EMOCA assets is the open model)
    build_rig(rig_file)
    fresh_scene.render.fps = 25
    bpy.ops.ed.undo_push(message="before capture")
    before = state(fresh_scene)
    result = bpy.ops.emoca.capture(
        "EXEC_DEFAULT",
        True,
        input=str(clip),
        output_dir=str(tmp_path),
        rig_name="FLAME_rig",
        frame_mapping="footage_rate",
    )
    assert result == {"FINISHED"}
    take = np.load(tmp_path / "astronaut take.npz", allow_pickle=False)
    action = bpy.data.actions["EMOCA_astronaut take"]
    assert action["emoca_source"] == str(clip)
    fresh_scene.frame_set(3)
    key = bpy.data.objects["FLAME"].data.shape_keys
    valid = take["valid"]
    assert valid[2]
    assert key.key_blocks["Exp000"].value == pytest.approx(float(take["exp"][2, 0]), abs=1e-5)
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert state(bpy.context.scene) == before


@pytest.mark.torch
def test_cancelled_capture_leaves_scene_and_disk_untouched(rig_file, clip, tmp_path, fresh_scene):
    """Cancel through the real backend (`serve`): the request is cancelled as soon as it is sent."""
    rig = build_rig(rig_file)
    before = state(fresh_scene)
    with pytest.raises(EmocaError) as err:
        api.capture(clip, rig=rig, output=tmp_path, cancel=lambda: True, verbose=False)
    assert err.value.code == "cancelled"
    assert state(fresh_scene) == before
    assert not list(tmp_path.glob("*.npz"))


@pytest.mark.torch
def test_capture_of_bad_footage_reports_the_backend_error(rig_file, tmp_path, fresh_scene):
    rig = build_rig(rig_file)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    before = state(fresh_scene)
    with pytest.raises(EmocaError) as err:
        api.capture(bad, rig=rig, output=tmp_path, verbose=False)
    assert err.value.code in ("input_corrupt", "input_unsupported")
    assert state(fresh_scene) == before


@pytest.mark.torch  # Check tests the backend environment first: this interpreter must be a working one
def test_check_assets_reports_found_and_missing(monkeypatch, tmp_path):
    """The preferences' Check button runs `python -m backend assets status --json` and lists every asset."""
    import sys

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path))  # an empty asset root: everything missing
    assert bpy.ops.emoca.check_assets() == {"FINISHED"}
    report = bpy.context.window_manager.emoca_setup_job.check_report.splitlines()
    assert any(line.startswith("flame2020: MISSING") for line in report)
    assert all(": " in line for line in report) and len(report) >= 3


def test_backend_environment_steps_mirror_the_makefile(tmp_path):
    """Create-backend-environment runs: venv, pinned backend requirements, then the --no-deps set."""
    from emoca_blender import environment

    steps = environment.env_steps("/usr/bin/python3", tmp_path / "env")
    assert steps[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "env")]
    req = ROOT / "requirements"
    for step in steps[1:]:
        assert step[:4] == [str(tmp_path / "env" / "bin" / "python"), "-m", "pip", "install"]
        assert step[step.index("-c") + 1] == str(req / "constraints.txt")
    assert steps[1][-2:] == ["-r", str(req / "backend.txt")]
    assert steps[2][-3:] == ["--no-deps", "-r", str(req / "nodeps.txt")]
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements/nodeps.txt" in makefile and "-r requirements/backend.txt" in makefile
    assert all(Path(s[-1]).is_file() for s in steps[1:])


class _Layout:
    """Records what a panel draws and checks every property and operator it names exists (no UI headless)."""

    def __init__(self, log):
        self.log = log
        self.enabled = True

    def __getattr__(self, name):
        if name in ("row", "column", "box", "split"):
            return lambda *a, **k: _Layout(self.log)
        if name in ("label", "separator", "progress"):
            return lambda *a, **k: self.log.append((name, k.get("text")))
        raise AttributeError(name)

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **kw):
        self.prop(data, name)
        assert search_name in search_data.bl_rna.properties, f"no collection {search_name!r} to search"

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **kw):
        assert hasattr(bpy.types, list_type), f"no UIList {list_type!r}"
        self.prop(data, name)
        self.prop(active_data, active_name)

    def operator(self, idname, **kw):
        module, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), op), idname
        self.log.append(("operator", idname))
        return _OpProps(idname)


class _OpProps:
    def __init__(self, idname):
        module, op = idname.split(".")
        object.__setattr__(self, "props", getattr(getattr(bpy.ops, module), op).get_rna_type().properties)

    def __setattr__(self, name, value):
        assert name in self.props, name


def test_panels_name_only_existing_properties_and_operators(fresh_scene):
    from emoca_blender import panel

    class Ctx:
        scene = fresh_scene
        window_manager = bpy.context.window_manager
        space_data = type(
            "Space", (), {"clip": type("Clip", (), {"name": "c", "filepath": "//c.mp4", "library": None})()}
        )()

    for source in ("FILE", "SEQUENCE", "CLIP"):
        fresh_scene.emoca.source = source
        for running in (False, True):
            bpy.context.window_manager.emoca_job.running = running
            for cls in [c for c in panel.CLASSES if issubclass(c, bpy.types.Panel)]:  # not the UILists
                log = []
                cls.draw(type("P", (), {"layout": _Layout(log)})(), Ctx)
                assert any(kind == "operator" for kind, _ in log)
    bpy.context.window_manager.emoca_job.running = False


def test_scene_smoothing_overrides_the_preferences_default_both_ways(fresh_scene, addon_prefs):
    import bpy

    from emoca_blender.preferences import capture_options

    prefs = addon_prefs
    settings = fresh_scene.emoca
    old = prefs.smooth, settings.smooth
    try:
        prefs.smooth, settings.smooth = 0.0, 0.5
        opts = capture_options(settings, bpy.context)
        assert opts["smooth"] != "off" and opts["smooth_strength"] == pytest.approx(0.5)
        prefs.smooth, settings.smooth = 0.7, 0.0
        assert capture_options(settings, bpy.context)["smooth"] == "off"
    finally:
        prefs.smooth, settings.smooth = old
