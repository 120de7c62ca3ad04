"""The performer's likeness on a rig in real Blender (emoca_blender/likeness.py): one identity key named after the
clip (FLAME: from the rig's identity basis, joints regressed again; open: ICT offsets), shared by several takes of
one performer; the albedo as base colour through the UV map; the detail sequence as a bump material whose image
sequence follows the applied take's frame mapping (rendered with Cycles at given scene frames).

The likeness files are written here with numpy, Blender and the backend's numpy-only identity writer, in the
sidecar format of docs/formats.md, so these tests run under Blender 4.2 (no torch) too.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from backend.likeness.identity import Identity, write_identity
from emoca_blender import cli
from emoca_blender.apply import apply_take
from emoca_blender.likeness import (
    LIKENESS_MATERIAL,
    NODE_ALBEDO,
    NODE_DETAIL,
    NODE_DISPLACEMENT,
    Mapping,
    detail_schedule,
    use_likeness,
)
from emoca_blender.rig import build_rig, rig_info, rig_mesh
from emoca_contract.errors import EmocaError
from emoca_contract.take import likeness_path

from .test_apply import set_fps
from .test_rig import evaluated_vertices

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
SCALE, MIDLEVEL = 0.025, 0.5  # the detail sequence's encoding (docs/likeness.md "Detail")


# ---------------------------------------------------------------------------------------------- likeness files
def sidecar(take_path: Path, **sections) -> Path:
    """Write (merge) the take's likeness sidecar (docs/formats.md "Likeness sidecar")."""
    path = likeness_path(take_path)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.update({"format": "emoca-likeness", "version": 1, "take": take_path.name, **sections})
    path.write_text(json.dumps(doc))
    return path


def identity_files(take_path: Path, kind: str, name: str, coefficients, offsets=None) -> Path:
    file = take_path.with_name(take_path.stem + "_identity.npz")
    identity = Identity(kind, name, np.asarray(coefficients, np.float32), offsets, {"frames": 10})
    write_identity(file, identity, "flame" if kind == "flame" else "ict")
    section = {"file": file.name, "name": name, "kind": kind, "coefficients": [float(c) for c in coefficients]}
    sidecar(take_path, identity=section)
    return file


def save_png(path: Path, pixels: np.ndarray) -> Path:
    """A PNG of ``pixels``: (H, W) uint16 grey or (H, W, 3) uint8 RGB, top row first (written with zlib: the
    exact values, no colour management in between)."""
    pixels = np.asarray(pixels)
    h, w = pixels.shape[:2]
    depth, colour = (16, 0) if pixels.dtype == np.uint16 else (8, 2)
    rows = pixels.astype(">u2" if depth == 16 else "u1").reshape(h, -1).view(np.uint8).reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def texture_files(take_path: Path, head: str, uv_range) -> Path:
    albedo = take_path.with_name(take_path.stem + "_albedo.png")
    ramp = np.broadcast_to(np.linspace(0, 255, 8).astype(np.uint8), (8, 8))
    save_png(albedo, np.stack([ramp, ramp.T, np.full((8, 8), 128, np.uint8)], -1))  # red ramps along u
    coverage = save_png(take_path.with_name(take_path.stem + "_coverage.png"), np.full((8, 8, 3), 255, np.uint8))
    sidecar(take_path, texture={"albedo": albedo.name, "coverage": coverage.name, "size": [8, 8], "head": head,
                                "colorspace": "sRGB", "uv_range": uv_range})  # fmt: skip
    return albedo


def detail_value(frame: int) -> float:
    """The flat map value (0..1 of the 16-bit range) written for take frame ``frame``: distinct per frame."""
    return 0.2 + 0.013 * (frame % 40)


def detail_files(take_path: Path, frames) -> Path:
    """A detail sequence ``NAME_detail/%06d.png`` (16-bit grey), one flat map per take frame."""
    folder = take_path.with_name(take_path.stem + "_detail")
    folder.mkdir()
    for f in frames:
        save_png(folder / f"{int(f):06d}.png", np.full((4, 4), round(detail_value(int(f)) * 65535), np.uint16))
    sidecar(take_path, detail={"pattern": f"{folder.name}/%06d.png", "frames": [int(f) for f in frames],
                               "scale": SCALE, "midlevel": MIDLEVEL, "size": [4, 4], "bits": 16})  # fmt: skip
    return folder


# ---------------------------------------------------------------------------------------------- identity (FLAME)
@pytest.fixture
def flame_rig(rig_file_unbaked):
    return build_rig(rig_file_unbaked)


def shaped(head, coefficients) -> np.ndarray:
    return np.asarray(head.v_template, np.float64) + np.asarray(head.shapedirs, np.float64) @ coefficients


def bone_heads(arm) -> np.ndarray:
    return np.array([arm.data.bones[n].head_local[:] for n in ("root", "neck", "jaw", "eye_L", "eye_R")])


def key_co(mesh_obj, name: str) -> np.ndarray:
    key = mesh_obj.data.shape_keys.key_blocks[name]
    co = np.empty(len(key.data) * 3, np.float32)
    key.data.foreach_get("co", co)
    return co.reshape(-1, 3)


def identity_keys(mesh_obj) -> list[str]:
    return [kb.name for kb in mesh_obj.data.shape_keys.key_blocks if not kb.name.startswith(("Exp", "Pose", "Basis"))]


def test_a_flame_identity_becomes_one_key_named_after_the_clip_and_moves_the_joints(flame_rig, make_take, head):
    take_path, _ = make_take(name="performer a")
    coeffs = np.random.default_rng(3).normal(0, 1.0, 100)
    identity_files(take_path, "flame", "performer a", coeffs)
    result = use_likeness(flame_rig, take_path, texture=False)
    mesh_obj = rig_mesh(flame_rig)
    assert result.identity_key == "performer a" and identity_keys(mesh_obj) == ["performer a"]
    kb = mesh_obj.data.shape_keys.key_blocks["performer a"]
    assert kb.value == 1.0 and (kb.slider_min, kb.slider_max) == (0.0, 1.0)
    want = shaped(head, coeffs)
    np.testing.assert_allclose(evaluated_vertices(mesh_obj), want, atol=2e-5)  # rest pose: the performer's head
    joints = np.asarray(head.J_regressor, np.float64) @ want
    np.testing.assert_allclose(bone_heads(flame_rig), joints, atol=2e-5)
    assert rig_info(flame_rig)["identity_name"] == "performer a"


def test_takes_of_one_performer_share_the_key_and_another_can_replace_it(flame_rig, make_take, head):
    rng = np.random.default_rng(5)
    first, second = rng.normal(0, 1.0, (2, 100))
    path_a, _ = make_take(name="shot a")
    path_b, _ = make_take(name="shot b", seed=1)
    identity_files(path_a, "flame", "shot a", first)
    offsets = (shaped(head, second) - np.asarray(head.v_template, np.float64)).astype(np.float32)
    identity_files(path_b, "flame", "shot b", second, offsets)  # as the backend writes it, knowing the head
    mesh_obj = rig_mesh(flame_rig)
    apply_take(flame_rig, path_a)  # identity "auto": the rig has none, the take's is baked
    assert identity_keys(mesh_obj) == ["shot a"]
    apply_take(flame_rig, path_b)  # the same performer's next take: the key is reused
    assert identity_keys(mesh_obj) == ["shot a"]
    np.testing.assert_allclose(key_co(mesh_obj, "shot a"), shaped(head, first), atol=2e-5)
    apply_take(flame_rig, path_b, identity="keep")
    assert identity_keys(mesh_obj) == ["shot a"]
    bpy.context.scene.frame_set(1)
    apply_take(flame_rig, path_b, identity="take")  # the basis keys are gone: the file's offsets bake it
    assert identity_keys(mesh_obj) == ["shot b"]
    np.testing.assert_allclose(key_co(mesh_obj, "shot b"), shaped(head, second), atol=2e-5)
    joints = np.asarray(head.J_regressor, np.float64) @ shaped(head, second)
    np.testing.assert_allclose(bone_heads(flame_rig), joints, atol=2e-5)  # regressed again, not added up


def test_the_identity_from_another_take_and_bad_sources_are_refused_before_any_change(flame_rig, make_take):
    path_a, _ = make_take(name="shot a")
    path_b, _ = make_take(name="shot b", seed=1)
    coeffs = np.random.default_rng(1).normal(0, 1.0, 100)
    identity_files(path_b, "flame", "shot b", coeffs)
    mesh_obj = rig_mesh(flame_rig)
    before = identity_keys(mesh_obj)
    with pytest.raises(EmocaError) as err:
        use_likeness(flame_rig, path_a, texture=False)  # no likeness beside shot a
    assert err.value.code == "input_missing" and identity_keys(mesh_obj) == before
    sidecar(path_a)
    with pytest.raises(EmocaError) as err:
        use_likeness(flame_rig, path_a, texture=True, identity_from=path_b)  # shot a has no texture
    assert err.value.code == "input_missing" and identity_keys(mesh_obj) == before
    result = use_likeness(flame_rig, path_a, texture=False, identity_from=path_b)
    assert result.identity_key == "shot b" and identity_keys(mesh_obj) == ["shot b"]
    identity_files(path_a, "open", "shot a", [0.0], np.zeros((len(mesh_obj.data.vertices), 3), np.float32))
    with pytest.raises(EmocaError) as err:
        use_likeness(flame_rig, path_a, texture=False)
    assert err.value.code == "config_invalid" and "open identity" in err.value.message


# ---------------------------------------------------------------------------------------------- identity (open)
@pytest.fixture(scope="module")
def ict_rig_data():
    from backend.ict.data import load_ict
    from backend.ict.rig import build_open_rig

    return build_open_rig(load_ict())


def smooth_offsets(verts: np.ndarray, seed: int) -> np.ndarray:
    """A smooth identity change (millimetres) over the head."""
    rng = np.random.default_rng(seed)
    k = rng.normal(0, 20.0, (3, 3))
    return 0.002 * np.sin(verts @ k.T + rng.uniform(0, 6, 3))


def test_an_open_identity_is_one_key_and_the_shapes_still_add_only_their_deltas(ict_rig_data, tmp_path):
    from backend.ict.rig import pose_rig, write_open_rig

    arm = build_rig(write_open_rig(tmp_path / "ict.npz", ict_rig_data))
    take_path = open_take(tmp_path, "ict performer")
    offsets = smooth_offsets(np.asarray(ict_rig_data["v_template"], np.float64), 2).astype(np.float32)
    identity_files(take_path, "open", "ict performer", np.zeros(40), offsets)
    mesh_obj = rig_mesh(arm)
    eye = np.array(arm.data.bones["eye_L"].head_local[:])
    result = use_likeness(arm, take_path, texture=False)
    assert result.identity_key == "ict performer"
    names = ict_rig_data["shape_names"].tolist()
    keys = mesh_obj.data.shape_keys.key_blocks
    keys["jawOpen"].value = 1.0
    values = np.zeros((1, len(names)))
    values[0, names.index("jawOpen")] = 1.0
    baked = {**ict_rig_data, "identity": offsets}
    want = pose_rig(baked, values)[0]
    got = evaluated_vertices(mesh_obj)
    np.testing.assert_allclose(got, want, atol=2e-5)
    group = mesh_obj.vertex_groups["eye_L"].index
    idx = [v.index for v in mesh_obj.data.vertices if any(g.group == group and g.weight > 0 for g in v.groups)]
    moved = np.array(arm.data.bones["eye_L"].head_local[:]) - eye
    assert np.linalg.norm(moved) > 1e-5
    np.testing.assert_allclose(moved, offsets[idx].mean(0), atol=2e-4)  # eye groups: the eyeballs, weight 1


def test_an_open_rig_file_with_an_identity_adds_it_once(ict_rig_data, tmp_path):
    """A rig file that bakes an identity (export-rig --identity-from): the shapes on top add only their deltas."""
    from backend.ict.rig import pose_rig, write_open_rig

    offsets = smooth_offsets(np.asarray(ict_rig_data["v_template"], np.float64), 4).astype(np.float32)
    data = {**ict_rig_data, "identity": offsets, "meta": {**ict_rig_data["meta"], "identity_name": "clip z"}}
    arm = build_rig(write_open_rig(tmp_path / "ict_baked.npz", data))
    mesh_obj = rig_mesh(arm)
    names = ict_rig_data["shape_names"].tolist()
    values = np.zeros((1, len(names)))
    for name, v in (("jawOpen", 0.8), ("mouthSmileLeft", 0.5)):
        mesh_obj.data.shape_keys.key_blocks[name].value = v
        values[0, names.index(name)] = v
    np.testing.assert_allclose(evaluated_vertices(mesh_obj), pose_rig(data, values)[0], atol=2e-5)
    assert rig_info(arm)["identity_name"] == "clip z"


# ---------------------------------------------------------------------------------------------- texture
def albedo_chain(mat) -> tuple:
    """(image, mapping scale, mapping location) feeding the material's base colour through the UV map."""
    tree = mat.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    tex = bsdf.inputs["Base Color"].links[0].from_node
    assert tex.name == NODE_ALBEDO
    mapping = tex.inputs["Vector"].links[0].from_node
    uv = mapping.inputs["Vector"].links[0].from_node
    assert uv.type == "UVMAP" and uv.uv_map == "UVMap"
    return tex.image, tuple(mapping.inputs["Scale"].default_value), tuple(mapping.inputs["Location"].default_value)


def test_the_albedo_is_the_flame_rigs_base_colour_through_its_uvs(flame_rig, make_take):
    take_path, _ = make_take(name="textured")
    albedo = texture_files(take_path, "flame", [[0.0, 1.0], [0.0, 1.0]])
    result = use_likeness(flame_rig, take_path, identity=False)
    mesh_obj = rig_mesh(flame_rig)
    mat = mesh_obj.data.materials[0]
    assert result.materials == [mat.name] == [LIKENESS_MATERIAL.format(mesh_obj.name)]
    image, scale, location = albedo_chain(mat)
    assert Path(bpy.path.abspath(image.filepath)).resolve() == albedo.resolve()
    assert image.colorspace_settings.name == "sRGB" and image.size[:] == (8, 8)
    np.testing.assert_allclose(scale, (1, 1, 1))
    np.testing.assert_allclose(location, (0, 0, 0))
    px = np.array(image.pixels[:]).reshape(8, 8, 4)
    assert px[0, 7, 0] > 0.9 and px[0, 0, 0] < 0.1  # the file's own pixels (u ramps in red)


def open_take(folder: Path, name: str) -> Path:
    from backend.synthetic.take import make_synthetic_open_take
    from backend.take.writer import write_take

    take = make_synthetic_open_take(8)
    take.meta["source"].update(path=f"/footage/{name}.mp4")
    return Path(write_take(folder / f"{name}.npz", take.arrays, take.meta))


def test_the_albedo_textures_the_open_rigs_skin_over_its_uv_range(ict_rig_data, tmp_path):
    from backend.ict.rig import write_open_rig

    arm = build_rig(write_open_rig(tmp_path / "ict.npz", ict_rig_data))
    take_path = open_take(tmp_path, "ict textured")
    texture_files(take_path, "ict", [[0.0, 2.0], [0.0, 1.0]])
    result = use_likeness(arm, take_path, identity=False)
    assert sorted(m.rsplit("_", 1)[1] for m in result.materials) == ["Brows", "Lips", "Skin"]
    for name in result.materials:
        _, scale, location = albedo_chain(bpy.data.materials[name])
        np.testing.assert_allclose(scale, (0.5, 1, 1))
        np.testing.assert_allclose(location, (0, 0, 0))
    untouched = [m for m in rig_mesh(arm).data.materials if m.name not in result.materials]
    assert untouched and all(NODE_ALBEDO not in m.node_tree.nodes for m in untouched)  # eyes, teeth keep colours
    other = open_take(tmp_path, "made for flame")
    texture_files(other, "flame", [[0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(EmocaError) as err:
        use_likeness(arm, other, identity=False)
    assert err.value.code == "config_invalid" and "flame head" in err.value.message


# ---------------------------------------------------------------------------------------------- detail
def render_detail(mesh_obj, frames, pixels: int = 4) -> list[np.ndarray]:
    """The detail image at scene ``frames`` as Cycles renders the likeness material's image node: a copy of the
    material, its detail shown as emission on a plane whose UVs span 0..1 and that fills a ``pixels`` square
    orthographic view; each pixel is sampled at its centre (u = (column + 0.5) / pixels, v likewise, rows from
    the bottom). Returns one (pixels, pixels) array per frame."""
    scene = bpy.context.scene
    mat = mesh_obj.data.materials[0].copy()
    tree = mat.node_tree
    emission = tree.nodes.new("ShaderNodeEmission")
    tree.links.new(tree.nodes[NODE_DETAIL].outputs["Color"], emission.inputs["Color"])
    out = next(n for n in tree.nodes if n.type == "OUTPUT_MATERIAL")
    tree.links.new(emission.outputs[0], out.inputs["Surface"])
    me = bpy.data.meshes.new("plane")
    me.from_pydata([(-1, -1, 50), (1, -1, 50), (1, 1, 50), (-1, 1, 50)], [], [(0, 1, 2, 3)])
    me.uv_layers.new(name="UVMap").data.foreach_set("uv", [0, 0, 1, 0, 1, 1, 0, 1])
    me.materials.append(mat)
    plane = bpy.data.objects.new("plane", me)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    cam.data.type, cam.data.ortho_scale, cam.location = "ORTHO", 2.0, (0, 0, 52)
    for obj in (plane, cam):
        scene.collection.objects.link(obj)
    scene.camera = cam
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.device, scene.cycles.use_denoising = 1, "CPU", False  # the value as it is
    scene.cycles.filter_width = 0.01  # every sample at the pixel's centre
    scene.render.resolution_x = scene.render.resolution_y = pixels
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    settings = scene.render.image_settings
    settings.file_format, settings.color_depth, settings.color_mode = "OPEN_EXR", "32", "RGB"
    images = []
    for f in frames:
        scene.frame_set(int(f))
        scene.render.filepath = str(Path(bpy.app.tempdir or "/tmp") / f"detail_{f}.exr")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(scene.render.filepath, check_existing=False)
        images.append(np.array(image.pixels[:]).reshape(pixels, pixels, 4)[..., 0])
        bpy.data.images.remove(image)
    return images


@pytest.mark.parametrize("mapping", ["footage_rate", "resample"])
def test_the_detail_sequence_follows_the_applied_takes_frames(flame_rig, make_take, fresh_scene, mapping):
    take_path, take = make_take(n_frames=12, fps=30.0, name="detailed", frame0=5)
    detail_files(take_path, take["frame"])
    set_fps(fresh_scene, 24)
    apply_take(flame_rig, take_path, frame_mapping=mapping)
    result = use_likeness(flame_rig, take_path, identity=False, texture=False, detail=True)
    mesh_obj = rig_mesh(flame_rig)
    assert result.detail_image and mesh_obj.emoca_detail is False
    scene_frames = [2, 4, 9]
    if mapping == "footage_rate":  # 30 fps scene, one take frame per scene frame from frame 1
        rows = [s - 1 for s in scene_frames]
    else:  # 24 fps scene: scene frame s is at (s - 1) / 24 s: the row nearest that time
        rows = [int(np.floor((s - 1) * 30 / 24 + 0.5)) for s in scene_frames]
    want = [detail_value(int(take["frame"][r])) for r in rows]
    got = [image.mean() for image in render_detail(mesh_obj, scene_frames)]
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_a_stepped_take_keys_the_sequences_offset_and_the_checkbox_switches_the_bump(rig_file_unbaked, make_take):
    from backend.take.writer import write_take

    arm = build_rig(rig_file_unbaked)
    take_path, take = make_take(n_frames=8, fps=30.0, name="stepped")
    arrays = dict(take.arrays)
    arrays["frame"] = np.arange(8) * 3 + 2  # every 3rd source frame from 2
    take_path = Path(write_take(take_path, arrays, take.meta))
    detail_files(take_path, arrays["frame"])
    apply_take(arm, take_path, frame_mapping="footage_rate")  # rows on scene frames 1, 4, 7, ...
    use_likeness(arm, take_path, identity=False, texture=False, detail=True)
    mesh_obj = rig_mesh(arm)
    tree = mesh_obj.data.materials[0].node_tree
    socket = next(n for n in tree.nodes if n.type == "OUTPUT_MATERIAL").inputs["Displacement"]
    assert not socket.is_linked  # off by default
    mesh_obj.emoca_detail = True
    assert socket.links[0].from_node.name == NODE_DISPLACEMENT
    disp = tree.nodes[NODE_DISPLACEMENT]
    assert disp.inputs["Scale"].default_value == pytest.approx(SCALE)
    assert disp.inputs["Midlevel"].default_value == pytest.approx(MIDLEVEL)
    assert mesh_obj.data.materials[0].displacement_method == "BUMP"
    got = [image.mean() for image in render_detail(mesh_obj, [1, 2, 4, 6, 7])]
    want = [detail_value(f) for f in (2, 2, 5, 8, 8)]  # the nearest row (a tie: the earlier one)
    np.testing.assert_allclose(got, want, atol=2e-3)
    mesh_obj.emoca_detail = False
    assert not socket.is_linked


def test_detail_schedule_is_the_nearest_row_under_either_mapping():
    frames, times = np.array([10, 11, 12, 13]), np.array([0.0, 0.04, 0.08, 0.12])
    scene, files = detail_schedule(frames, times, Mapping("footage_rate", 5.0, 24.0))
    assert scene.tolist() == [5, 6, 7, 8] and files.tolist() == [10, 11, 12, 13]
    scene, files = detail_schedule(frames, times, Mapping("resample", 1.0, 50.0))  # rows at 1, 3, 5, 7
    assert scene.tolist() == list(range(1, 8)) and files.tolist() == [10, 10, 11, 11, 12, 12, 13]


def test_detail_needs_a_flame_rig_with_the_takes_frames(flame_rig, make_take):
    take_path, take = make_take(n_frames=6, name="short")
    detail_files(take_path, take["frame"] + 1)  # maps for other frames than the take's
    with pytest.raises(EmocaError) as err:
        use_likeness(flame_rig, take_path, identity=False, texture=False, detail=True)
    assert err.value.code == "input_corrupt" and "frames" in err.value.message


# ---------------------------------------------------------------------------------------------- command line
def test_the_command_line_puts_existing_likeness_files_on_a_rig(rig_file_unbaked, make_take, tmp_path):
    take_path, _ = make_take(name="cli performer")
    coeffs = np.random.default_rng(9).normal(0, 1.0, 100)
    identity_files(take_path, "flame", "cli performer", coeffs)
    texture_files(take_path, "flame", [[0.0, 1.0], [0.0, 1.0]])
    out = tmp_path / "likeness.blend"
    argv = ["likeness", str(take_path), "--rig", str(rig_file_unbaked), "--existing", "--output", str(out)]
    assert cli.main(argv) == 0
    bpy.ops.wm.open_mainfile(filepath=str(out))
    mesh_obj = bpy.data.objects["FLAME"]
    assert identity_keys(mesh_obj) == ["cli performer"]
    assert mesh_obj.data.materials[0].node_tree.nodes[NODE_ALBEDO].image is not None
    assert cli.main(["likeness", str(tmp_path / "none.npz"), "--rig", str(rig_file_unbaked), "--existing",
                     "--output", str(out)]) == 1  # fmt: skip
