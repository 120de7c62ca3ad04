"""The apply options are one list (ApplyOptions): the scene's and the operators' properties, the CLI and the docs
follow it; bad values are config_invalid. Also the asset status document the preferences read, and progress text."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from emoca_blender import api, cli, preferences, progress
from emoca_blender.options import OPTIONS, ApplyOptions
from emoca_blender.rig import build_rig
from emoca_contract.errors import EmocaError

from .test_apply import state

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]
NAMES = [opt.name for opt in OPTIONS]


def test_every_option_is_described_once_with_a_default_of_its_type():
    assert NAMES == [f.name for f in dataclasses.fields(ApplyOptions)]
    assert len(NAMES) == 14 and {"frame_mapping", "joint_offsets", "frame_range", "name"} <= set(NAMES)
    for opt in OPTIONS:
        assert opt.label and opt.description, opt.name
        assert isinstance(opt.default, (bool, int, str)), opt.name
        if opt.items:
            assert opt.default in [item[0] for item in opt.items], opt.name


@pytest.mark.parametrize("where", ["scene", "apply_take", "capture"])
def test_blender_properties_are_generated_from_the_options(fresh_scene, where):
    rna = fresh_scene.emoca.bl_rna if where == "scene" else getattr(bpy.ops.emoca, where).get_rna_type()
    for opt in OPTIONS:
        prop = rna.properties[opt.attr]
        assert (prop.name, prop.description, prop.default) == (opt.label, opt.description, opt.default), opt.name
        if opt.items:
            assert [item.identifier for item in prop.enum_items] == [item[0] for item in opt.items]


def test_cli_arguments_are_generated_from_the_options():
    parser = cli.build_parser()
    for command, positional in (("apply", "take.npz"), ("capture", "clip.mp4")):
        args = parser.parse_args([command, positional, "--output", "out.blend"])
        assert ApplyOptions.from_object(args) == ApplyOptions()
        flags = [
            "--frame-mapping=footage_rate",
            "--start=playhead",
            "--offset=7",
            "--no-head",
            "--head-translation",
            "--no-correctives",
            "--no-emotion",
            "--camera-match",
            "--no-joint-offsets",
            "--action-mode=active",
            "--push-down",
            "--no-frame-range",
            "--action-name=Shot 1",
            "--identity=keep",
        ]
        args = parser.parse_args([command, positional, "--output", "out.blend", *flags])
        changed = ApplyOptions.from_object(args)
        assert all(getattr(changed, n) != getattr(ApplyOptions(), n) for n in NAMES)  # every flag reaches its field
        assert (changed.offset, changed.name, changed.start) == (7, "Shot 1", "playhead")
    with pytest.raises(SystemExit):
        parser.parse_args(["apply", "take.npz", "--output", "o.blend", "--start", "middle"])


def test_the_docs_table_lists_every_option_with_its_default_and_flag():
    text = (ROOT / "docs" / "headless.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (`[^`]*`) \|", text, flags=re.M))
    assert list(rows) == NAMES
    for opt in OPTIONS:
        assert rows[opt.name] == f"`{json.dumps(opt.default).replace('true', 'True').replace('false', 'False')}`"
        assert f"| `{opt.flag}" in text, opt.flag


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"start": "middle"}, "start 'middle'"),
        ({"frame_mapping": "fast"}, "'resample' or 'footage_rate'"),
        ({"action_mode": "append"}, "action_mode"),
        ({"offset": 1.5}, "offset 1.5"),
        ({"emotion": "yes"}, "emotion 'yes'"),
        ({"camera": True}, "unknown apply option 'camera'"),
    ],
)
def test_bad_options_are_config_invalid_and_change_nothing(rig_file, make_take, fresh_scene, changes, needle):
    rig = build_rig(rig_file)
    path, _ = make_take(n_frames=5)
    before = state(fresh_scene)
    with pytest.raises(EmocaError) as err:
        api.apply_take(rig, path, **changes)
    assert err.value.code == "config_invalid" and needle in err.value.message
    assert state(fresh_scene) == before


def test_capture_refuses_a_bad_apply_option_before_starting_the_backend(tmp_path):
    footage = tmp_path / "clip.mp4"
    footage.write_bytes(b"never decoded")
    with pytest.raises(EmocaError) as err:
        api.capture(footage, output=tmp_path, python=str(tmp_path / "no-python"), start="middle", verbose=False)
    assert err.value.code == "config_invalid"  # not asset_missing: the backend was never started


def test_options_record_and_keywords_combine(rig_file, make_take, fresh_scene):
    rig = build_rig(rig_file)
    path, _ = make_take(n_frames=6, name="combined")
    fresh_scene.frame_current = 40
    action = api.apply_take(rig, path, ApplyOptions(start="playhead", name="Mine"), offset=2, frame_range=False)
    assert action.name == "Mine" and action["emoca_start_frame"] == 42.0
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, 250)


def test_apply_operator_reads_every_option_from_the_panel(rig_file, make_take, fresh_scene):
    build_rig(rig_file)
    path, _ = make_take(n_frames=6, name="panel")
    s = fresh_scene.emoca
    s.action_name, s.offset, s.frame_range, s.emotion = "From Panel", 5, False, False
    assert bpy.ops.emoca.apply_take(filepath=str(path), rig_name="FLAME_rig", use_scene_settings=True) == {"FINISHED"}
    action = bpy.data.actions["From Panel"]
    assert action["emoca_start_frame"] == 6.0
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, 250)
    assert "emoca_valence" not in bpy.data.objects["FLAME_rig"]


def test_apply_operator_reports_code_message_and_hint(rig_file, tmp_path):
    build_rig(rig_file)
    with pytest.raises(RuntimeError) as err:
        bpy.ops.emoca.apply_take(filepath=str(tmp_path / "missing.npz"), rig_name="FLAME_rig")
    assert re.search(r"\[input_missing\] .*missing\.npz.* \(.+\)", str(err.value)), str(err.value)


# ------------------------------------------------------------------ the asset status the preferences show
def test_status_document_is_read_and_anything_else_refused():
    document = {
        "format": "emoca-assets-status",
        "version": 1,
        "assets": [
            {"key": "flame2020", "path": "/a/generic_model.pkl", "present": True, "valid": True, "optional": False,
             "message": "valid", "description": "FLAME"},
            {"key": "emoca_v2", "path": "/a/EMOCA_v2", "present": True, "valid": False, "optional": False,
             "message": "no cfg.yaml", "description": "EMOCA v2"},
            {"key": "emotion", "path": "/a/ResNet50", "present": False, "valid": None, "optional": True,
             "message": "", "description": "emotion network"},
        ],
    }  # fmt: skip
    report = preferences.format_status(preferences.read_status(json.dumps(document))).splitlines()
    assert report == [
        "flame2020: found - /a/generic_model.pkl",
        "emoca_v2: invalid - no cfg.yaml; EMOCA v2; /a/EMOCA_v2",
        "emotion: MISSING (optional) - emotion network; /a/ResNet50",
    ]
    for text in (
        "not json",
        json.dumps({"assets": []}),
        json.dumps([{"key": "x"}]),
        json.dumps(dict(document, version=0)),
    ):
        with pytest.raises(EmocaError) as err:
            preferences.read_status(text)
        assert err.value.code == "protocol"


# ------------------------------------------------------------------ progress text
def test_progress_text_for_events_and_jobs():
    assert progress.event_line({"type": "progress", "stage": "detect", "done": 3, "total": 10, "eta": 4.2}) == (
        "detect: 3/10 eta 4s"
    )
    assert progress.event_line({"type": "warning", "message": "dark frames"}) == "dark frames"
    assert progress.event_line({"type": "result", "id": "x"}) is None
    job = bpy.context.window_manager.emoca_job
    job.stage, job.progress, job.fps, job.eta = "reconstruct", 0.5, 12.5, -1.0
    assert progress.capture_text(job) == "reconstruct 50%, 12.5 fps"
    train = bpy.context.window_manager.emoca_train_job
    train.epoch, train.step, train.total, train.loss, train.eta = 1, 5, -1, -1.0, 30.0
    assert progress.train_text(train) == "epoch 1, step 5, ETA 30 s"
