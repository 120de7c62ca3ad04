"""`blender -c emoca ...` commands (the callback registered with register_cli_command) and the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emoca_blender import cli

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]


def test_import_rig_then_apply_to_blend_files(rig_file, make_take, tmp_path):
    path, take = make_take(n_frames=12, name="cli take")
    first = tmp_path / "rig.blend"
    assert cli.main(["import-rig", str(rig_file), "--output", str(first)]) == 0
    assert first.is_file()
    second = tmp_path / "out" / "animated.blend"
    assert (
        cli.main(
            [
                "apply",
                str(path),
                "--blend",
                str(first),
                "--output",
                str(second),
                "--frame-mapping",
                "footage_rate",
                "--offset",
                "10",
            ]
        )
        == 0
    )
    bpy.ops.wm.open_mainfile(filepath=str(second))
    action = bpy.data.actions["EMOCA_cli take"]
    assert action["emoca_start_frame"] == 11.0
    bpy.context.scene.frame_set(11 + 4)
    key = bpy.data.objects["FLAME"].data.shape_keys
    assert key.key_blocks["Exp003"].value == pytest.approx(float(take["exp"][4, 3]), abs=1e-5)


def test_cli_failure_is_status_1_with_the_message(tmp_path, capsys, rig_file):
    blend = tmp_path / "rig.blend"
    assert cli.main(["import-rig", str(rig_file), "--output", str(blend)]) == 0
    code = cli.main(["apply", str(tmp_path / "nope.npz"), "--blend", str(blend), "--output", str(tmp_path / "x.blend")])
    assert code == 1
    err = capsys.readouterr().err
    assert "nope.npz" in err and "input_missing" in err
    assert not (tmp_path / "x.blend").exists()
    assert cli.main(["--help"]) == 0


def test_cli_command_is_registered(addon):
    assert cli._HANDLE is not None


def test_bench_prints_its_two_numbers():
    out = subprocess.run(
        [sys.executable, "-m", "emoca_blender.bench", "--frames", "400", "--insert-frames", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    values = dict(line.split(": ") for line in out.stdout.strip().splitlines())
    assert float(values["blender_apply_seconds"]) > 0 and float(values["blender_apply_speedup"]) > 0
    assert "extrapolated" in out.stderr


@pytest.mark.torch
@pytest.mark.slow
def test_capture_to_blend_in_one_call(tmp_path):
    """`blender -c emoca capture clip.mp4 --output scene.blend`: backend capture + exported rig + keys, saved."""
    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "one call.mp4", n_frames=5).path
    blend = tmp_path / "scene.blend"
    assert (
        cli.main(
            ["capture", str(clip), "--output", str(blend), "--frame-mapping", "footage_rate", "--device", "cpu"]
            + ["--model", "untrained"]  # the EMOCA path onto the FLAME rig (the default without assets is open)
        )
        == 0
    )
    take_path = tmp_path / "scene_takes" / "one call.npz"
    assert take_path.is_file()
    take = np.load(take_path, allow_pickle=False)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    assert bpy.context.scene.render.fps == 25
    rig = bpy.data.objects["FLAME_rig"]
    assert bpy.data.actions["EMOCA_one call"]["emoca_take"] == str(take_path)
    row = int(np.nonzero(take["valid"])[0][-1])
    bpy.context.scene.frame_set(1 + row)
    key = bpy.data.objects["FLAME"].data.shape_keys
    assert key.key_blocks["Exp005"].value == pytest.approx(float(take["exp"][row, 5]), abs=1e-5)
    assert rig["emoca_valence"] == pytest.approx(float(take["valence"][row]), abs=1e-5)
