"""`blender -c emoca capture A.mp4 B.mp4 ... --output-dir DIR` and ``api.capture_batch`` (issue 15): one backend
batch, then each take applied into its own .blend, or as its own Action in one .blend. Real Blender (the bpy
module), the real backend in its own process, real clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emoca_contract.take import read_take

from .test_batch import make_batch_clips

bpy = pytest.importorskip("bpy")
pytestmark = [pytest.mark.blender, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def addon():
    import emoca_blender
    from emoca_blender import cli

    registered = cli._HANDLE is not None  # the Blender tests' session may have registered it already
    if not registered:
        emoca_blender.register()
    yield
    if not registered:
        emoca_blender.unregister()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_batch_clips(tmp_path_factory.mktemp("blend_batch") / "clips", n_good=2, frames=6)


def _key_value(mesh: str, key: str) -> float:
    return float(bpy.data.objects[mesh].data.shape_keys.key_blocks[key].value)


def test_each_clip_gets_its_own_blend_and_a_failed_clip_is_reported(tmp_path, clips, addon, capsys):
    from emoca_blender import cli

    bpy.ops.wm.read_factory_settings(use_empty=True)
    footage = [str(clips["clip00"]), str(clips["clip01"]), str(clips["noface"])]
    code = cli.main(["capture", *footage, "--output-dir", str(tmp_path), "--device", "cpu", "--model", "open",
                     "--frame-mapping", "footage_rate"])  # fmt: skip
    assert code == 1  # one clip failed; the others were saved
    err = capsys.readouterr().err
    assert "no_face" in err and "noface" in err
    assert sorted(p.name for p in tmp_path.glob("*.blend")) == ["clip00.blend", "clip01.blend"]
    for name in ("clip00", "clip01"):
        take_path = tmp_path / "takes" / f"{name}.npz"
        take = read_take(take_path)
        bpy.ops.wm.open_mainfile(filepath=str(tmp_path / f"{name}.blend"))
        assert [a.name for a in bpy.data.actions if a.name.startswith("EMOCA_")] == [f"EMOCA_{name}"]
        assert bpy.data.actions[f"EMOCA_{name}"]["emoca_take"] == str(take_path)
        row = int(np.nonzero(take["valid"])[0][-1])
        bpy.context.scene.frame_set(1 + row)
        mesh = next(o.name for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys)
        names = list(take.meta["arkit"]["names"])
        col = names.index("jawOpen")
        assert _key_value(mesh, "jawOpen") == pytest.approx(float(take["arkit"][row, col]), abs=1e-4)
    assert (tmp_path / "takes" / "rigs" / "ict_rig.npz").is_file()  # one rig exported for the batch


def test_one_blend_keys_every_clip_as_its_own_action(tmp_path, clips, addon):
    from emoca_blender import api

    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = api.capture_batch([str(clips["clip00"]), str(clips["clip01"])], tmp_path, one_blend=True,
                               device="cpu", model="open", verbose=False)  # fmt: skip
    assert result.failed == [] and result.blends == []
    assert result.actions == ["EMOCA_clip00", "EMOCA_clip01"]
    assert [Path(t).name for t in result.takes] == ["clip00.npz", "clip01.npz"]
    rigs = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(rigs) == 1  # one rig, two actions
    assert all(bpy.data.actions[name].use_fake_user for name in result.actions)  # both kept in the saved file
    assert result.report["totals"]["done"] == 2
    # run again: the backend skips the complete takes, the actions are made again from them
    again = api.capture_batch([str(clips["clip00"])], tmp_path, one_blend=True, device="cpu", model="open",
                              verbose=False)  # fmt: skip
    assert again.report["totals"]["skipped"] == 1 and again.takes == result.takes[:1]
