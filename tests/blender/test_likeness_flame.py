"""FLAME-layout detail sequences read by the Blender material (issue 14): the 16-bit displacement PNGs in FLAME's
UV layout that ``python -m backend likeness --detail`` writes, rendered through the rig's likeness material by
Cycles at given scene frames: the right file on every frame, the right value at every place (row 0 is v = 1).

The known-maps sequence (tests/likeness/helpers.py, written with the backend's own map writer, numpy only) runs
under Blender 4.2 and 5.0; a sequence written by an official-layout EMOCA model with random weights (FLAME
layout files, tests/fixtures) needs torch (5.0), as do the operator and ``api.likeness`` through the backend.
"""

from __future__ import annotations

import numpy as np
import pytest

from emoca_blender.apply import apply_take
from emoca_blender.likeness import use_likeness
from emoca_blender.rig import build_rig, rig_info, rig_mesh
from tests.likeness.helpers import write_detail_sequence_files

from .test_likeness import identity_keys, key_co, render_detail

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
PIXELS = 16


def sample(map_: np.ndarray, pixels: int = PIXELS) -> np.ndarray:
    """``map_`` (H, W), row 0 at v = 1, sampled bilinearly (edges extended) at the render's pixel centres:
    (pixels, pixels) with row 0 at v = (0.5) / pixels, as Blender stores a render."""
    h, w = map_.shape
    uv = (np.arange(pixels) + 0.5) / pixels
    x = np.clip(uv * w - 0.5, 0, w - 1)
    y = np.clip((1 - uv) * h - 0.5, 0, h - 1)  # image rows from the top
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = map_[y0][:, x0] * (1 - fx) + map_[y0][:, x1] * fx
    bottom = map_[y1][:, x0] * (1 - fx) + map_[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def metres(value: np.ndarray, detail: dict) -> np.ndarray:
    """What a displacement node with the sidecar's midlevel and scale makes of an image value."""
    return (value - detail["midlevel"]) * detail["scale"]


def test_the_material_reads_the_flame_layout_sequence_frame_by_frame_and_place_by_place(rig_file_unbaked,
                                                                                        tmp_path):  # fmt: skip
    made = write_detail_sequence_files(tmp_path / "prise", n_frames=6)  # frames 20, 21, 23, 24, 26, 27
    arm = build_rig(rig_file_unbaked)
    apply_take(arm, made["take"], frame_mapping="footage_rate")  # scene frames 1, 2, 4, 5, 7, 8
    use_likeness(arm, made["take"], identity=False, texture=False, detail=True, show_detail=True)
    from emoca_contract.take import read_likeness

    detail = read_likeness(made["take"])["detail"]
    scene_frames = [1, 2, 4, 5, 7, 8]
    rendered = render_detail(rig_mesh(arm), scene_frames, PIXELS)
    for image, want in zip(rendered, made["maps"]):
        np.testing.assert_allclose(metres(image, detail), sample(want), atol=2e-6)  # metres
    ramp = metres(rendered[0], detail)[:, -1] - metres(rendered[0], detail)[:, 0]
    assert (ramp > 0.0008).all()  # rising with u, as written (column 0 is u = 0)


@pytest.fixture(scope="module")
def flame_layout(tmp_path_factory):
    """Official-layout FLAME files with random weights (5023 vertices, head_template.obj UVs) and an EMOCA model
    folder with the detail stage (cfg.yaml + checkpoint), as tests/likeness/test_detail.py makes them."""
    import shutil

    from backend.flame.io import load_flame
    from backend.flame.rig import write_rig
    from tests.fixtures import checkpoints as ck
    from tests.fixtures import flame_files as ff

    root = tmp_path_factory.mktemp("flame_layout")
    geometry = root / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    ff.write_flame_pkl(geometry / "generic_model.pkl", n_vertices=5023, n_faces=9976)
    ff.write_landmark_embedding(geometry / "landmark_embedding.npy", n_faces=9976)
    flame = load_flame(geometry / "generic_model.pkl", cache_dir=root / "cache")
    ff.write_head_template_obj(geometry / "head_template.obj", flame.v_template, flame.faces)
    from backend.flame.io import read_obj_uvs

    flame.uvs, flame.uv_faces = read_obj_uvs(geometry / "head_template.obj", flame.faces)
    folder = ck.write_emoca_folder(root / "EMOCA" / "models", ck.random_network_state(seed=0), flame, name="EMOCA")
    rig = write_rig(root / "flame_rig.npz", flame, None)
    yield {"flame": geometry / "generic_model.pkl", "model": folder, "rig": rig}
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.torch
@pytest.mark.slow
def test_a_random_weight_emoca_models_sequence_is_read_by_the_material(flame_layout, tmp_path):
    import cv2

    from backend.likeness.run import LikenessOptions, likeness
    from tests.likeness.helpers import detail_take, write

    take_path = write(detail_take(4), tmp_path / "random.npz")
    options = LikenessOptions(identity=False, texture=False, detail=True, model=str(flame_layout["model"]),
                              flame=str(flame_layout["flame"]), device="cpu")  # fmt: skip
    likeness(take_path, None, options=options)
    arm = build_rig(flame_layout["rig"])
    assert len(rig_mesh(arm).data.uv_layers) == 1
    apply_take(arm, take_path, frame_mapping="footage_rate")
    use_likeness(arm, take_path, identity=False, texture=False, detail=True)
    from emoca_contract.take import read_likeness

    detail = read_likeness(take_path)["detail"]
    rendered = render_detail(rig_mesh(arm), [1, 4], PIXELS)
    for image, frame in zip(rendered, [detail["frames"][0], detail["frames"][2]]):  # scene 1, 4: frames 20, 23
        written = cv2.imread(detail["pattern_path"] % frame, cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint16 and written.shape == (256, 256)
        np.testing.assert_allclose(image, sample(written / 65535.0), atol=2e-5)


@pytest.mark.torch
def test_the_operator_makes_the_identity_with_the_backend_and_bakes_it(rig_file_unbaked, make_take, head,
                                                                       monkeypatch):  # fmt: skip
    import sys

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    take_path, take = make_take(name="operator performer")
    arm = build_rig(rig_file_unbaked)
    bpy.context.scene.emoca.rig = arm
    result = bpy.ops.emoca.likeness(take=str(take_path), texture=False)
    assert result == {"FINISHED"}
    mesh_obj = rig_mesh(arm)
    assert identity_keys(mesh_obj) == ["operator performer"]
    shape = np.asarray(take["shape"][0], np.float64)  # every frame holds the same shape: the robust mean is it
    want = np.asarray(head.v_template, np.float64) + np.asarray(head.shapedirs, np.float64) @ shape
    np.testing.assert_allclose(key_co(mesh_obj, "operator performer"), want, atol=2e-5)
    assert rig_info(arm)["identity_file"].endswith("operator performer_identity.npz")
    assert "Likeness of operator performer" in bpy.context.window_manager.emoca_likeness_job.message


@pytest.mark.torch
def test_api_likeness_cancelled_leaves_the_rig_and_the_take_folder_as_they_were(rig_file_unbaked, make_take,
                                                                                monkeypatch):  # fmt: skip
    import sys

    from emoca_blender import api
    from emoca_contract.errors import EmocaError

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    take_path, _ = make_take(name="cancelled performer")
    arm = build_rig(rig_file_unbaked)
    before = identity_keys(rig_mesh(arm))
    with pytest.raises(EmocaError) as err:
        api.likeness(arm, take_path, texture=False, verbose=False, cancel=lambda: True)
    assert err.value.code == "cancelled"
    assert identity_keys(rig_mesh(arm)) == before
    assert sorted(p.name for p in take_path.parent.iterdir()) == [take_path.name]


@pytest.mark.torch
def test_the_command_line_makes_the_likeness_with_the_backend(rig_file_unbaked, make_take, tmp_path, monkeypatch):
    import sys

    from emoca_blender import cli

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    take_path, _ = make_take(name="cli backend")
    out = tmp_path / "made.blend"
    argv = ["likeness", str(take_path), "--rig", str(rig_file_unbaked), "--no-texture", "--output", str(out)]
    assert cli.main(argv) == 0
    assert (take_path.parent / "cli backend_identity.npz").is_file()
    bpy.ops.wm.open_mainfile(filepath=str(out))
    assert identity_keys(bpy.data.objects["FLAME"]) == ["cli backend"]
    argv = ["likeness", str(take_path), "--rig", str(rig_file_unbaked), "--output", str(out)]  # no footage here
    assert cli.main(argv) == 1


@pytest.mark.torch
@pytest.mark.slow
def test_the_operator_textures_the_open_rig_from_its_footage(tmp_path, monkeypatch):
    """The known-likeness clip captured with the open path, then Make Likeness on the ICT rig: the backend's
    identity and texture, the key and the skin's base colour in Blender."""
    import sys

    from backend.capture.options import CaptureOptions
    from backend.capture.pipeline import capture
    from backend.ict.data import load_ict
    from backend.ict.rig import build_open_rig, write_open_rig
    from backend.synthetic.ict_likeness import write_likeness_clip
    from emoca_blender.likeness import NODE_ALBEDO

    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    truth = write_likeness_clip(tmp_path / "acteur.mp4", n_frames=8)
    take = capture(truth["path"], tmp_path / "acteur.npz", CaptureOptions(device="cpu", model="open"))[0]
    arm = build_rig(write_open_rig(tmp_path / "ict.npz", build_open_rig(load_ict())))
    bpy.context.scene.emoca.rig = arm
    assert bpy.ops.emoca.likeness(take=str(take), video=str(truth["path"])) == {"FINISHED"}
    mesh_obj = rig_mesh(arm)
    assert rig_info(arm)["identity_name"] == "acteur" and mesh_obj.data.shape_keys.key_blocks["acteur"].value == 1.0
    skin = next(m for m in mesh_obj.data.materials if m.name.endswith("_Skin"))
    image = skin.node_tree.nodes[NODE_ALBEDO].image
    assert image is not None and image.size[:] == (1024, 512)
    assert bpy.path.abspath(image.filepath).endswith("acteur_albedo.png")
