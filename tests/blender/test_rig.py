"""Import FLAME rig: counts, names, rest orientations, skinning, and deformation equal to FLAME's LBS."""

from __future__ import annotations

import numpy as np
import pytest

from backend.take.writer import write_take
from emoca_blender.apply import apply_take
from emoca_blender.rig import build_rig, rig_mesh
from emoca_contract.errors import EmocaError

from .conftest import BAKED_SHAPE, load_rig_arrays
from .flame_ref import flame_forward

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender


def evaluated_vertices(obj) -> np.ndarray:
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64)


def test_build_rig_counts_and_names(rig_file_unbaked):
    data = load_rig_arrays(rig_file_unbaked)
    arm = build_rig(rig_file_unbaked)
    mesh = rig_mesh(arm)
    assert arm.type == "ARMATURE" and mesh.name == "FLAME" and mesh.parent == arm
    assert len(mesh.data.vertices) == data["v_template"].shape[0]
    assert len(mesh.data.polygons) == data["faces"].shape[0]
    names = mesh.data.shape_keys.key_blocks.keys()
    n_shape, n_exp = data["shapedirs"].shape[2], data["expdirs"].shape[2]
    assert names[0] == "Basis"
    assert names[1 : 1 + n_shape] == [f"Shape{i:03d}" for i in range(n_shape)]
    assert names[1 + n_shape : 1 + n_shape + n_exp] == [f"Exp{i:03d}" for i in range(n_exp)]
    assert names[1 + n_shape + n_exp :] == [f"Pose{i:03d}" for i in range(36)]
    kb = mesh.data.shape_keys.key_blocks
    assert (kb["Exp000"].slider_min, kb["Exp000"].slider_max) == (-10.0, 10.0)
    assert (kb["Pose010"].slider_min, kb["Pose010"].slider_max) == (-2.0, 2.0)
    assert [b.name for b in arm.data.bones] == ["root", "neck", "jaw", "eye_L", "eye_R"]
    parents = [b.parent.name if b.parent else None for b in arm.data.bones]
    assert parents == [None, "root", "neck", "neck", "neck"]
    assert sorted(mesh.vertex_groups.keys()) == sorted(["root", "neck", "jaw", "eye_L", "eye_R"])
    mods = [m for m in mesh.modifiers if m.type == "ARMATURE"]
    assert len(mods) == 1 and mods[0].object == arm
    # UVs: one per face corner, equal to the rig's per-face UV indices
    uv = np.empty(len(mesh.data.loops) * 2, np.float32)
    mesh.data.uv_layers["UVMap"].data.foreach_get("uv", uv)
    np.testing.assert_allclose(uv.reshape(-1, 2), data["uvs"][data["uv_faces"]].reshape(-1, 2), atol=1e-7)
    # a shape key holds template + its basis column
    co = np.empty(len(mesh.data.vertices) * 3, np.float32)
    kb["Exp003"].data.foreach_get("co", co)
    np.testing.assert_allclose(co.reshape(-1, 3), data["v_template"] + data["expdirs"][:, :, 3], atol=1e-6)


def test_bones_have_identity_rest_at_joints_and_weights_match(rig_file):
    data = load_rig_arrays(rig_file)
    arm = build_rig(rig_file)
    mesh = rig_mesh(arm)
    for j, bone in enumerate(arm.data.bones):
        m = np.array(bone.matrix_local)
        np.testing.assert_allclose(m[:3, :3], np.eye(3), atol=1e-6)  # pose rotation == FLAME rotation
        np.testing.assert_allclose(m[:3, 3], data["joints"][j], atol=1e-6)
    # armature object turns FLAME +Y up into Blender +Z up
    np.testing.assert_allclose(np.array(arm.matrix_world)[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-6)
    weights = np.zeros_like(data["weights"])
    index = {g.index: g.name for g in mesh.vertex_groups}
    order = ["root", "neck", "jaw", "eye_L", "eye_R"]
    for v in mesh.data.vertices:
        for g in v.groups:
            weights[v.index, order.index(index[g.group])] = g.weight
    np.testing.assert_allclose(weights, data["weights"], atol=1e-6)
    # the baked identity key is on at 1.0 and equals template + shapedirs @ shape
    kb = mesh.data.shape_keys.key_blocks["Shape"]
    co = np.empty(len(mesh.data.vertices) * 3, np.float32)
    kb.data.foreach_get("co", co)
    expect = data["v_template"] + data["shapedirs"] @ BAKED_SHAPE
    np.testing.assert_allclose(co.reshape(-1, 3), expect, atol=1e-6)
    assert kb.value == 1.0


def test_rest_mesh_is_the_shaped_template(rig_file):
    data = load_rig_arrays(rig_file)
    arm = build_rig(rig_file)
    got = evaluated_vertices(rig_mesh(arm))
    np.testing.assert_allclose(got, flame_forward(data, np.zeros(50), np.zeros((5, 3)), BAKED_SHAPE), atol=1e-6)


def _pose_take(make_take, jaw, head, exp):
    path, take = make_take(n_frames=3, name="pose")
    take.arrays["jaw_pose"][1] = jaw
    take.arrays["global_pose"][1] = head
    take.arrays["exp"][1] = exp
    return write_take(path, take.arrays, take.meta)


@pytest.mark.parametrize("with_exp", [False, True], ids=["jaw_only", "jaw_head_and_expression"])
def test_jaw_deforms_like_flame_lbs(rig_file, make_take, with_exp):
    """Evaluated mesh (shape keys + correctives + armature) equals FLAME's forward pass (numpy statement)."""
    data = load_rig_arrays(rig_file)
    rng = np.random.default_rng(3)
    jaw = np.array([0.25, 0.03, -0.02], np.float32)
    head = np.array([0.1, -0.3, 0.05], np.float32) if with_exp else np.zeros(3, np.float32)
    exp = rng.normal(0, 1.0, 50).astype(np.float32) if with_exp else np.zeros(50, np.float32)
    path = _pose_take(make_take, jaw, head, exp)
    arm = build_rig(rig_file)
    apply_take(arm, path, frame_mapping="footage_rate")
    bpy.context.scene.frame_set(2)  # take row 1
    got = evaluated_vertices(rig_mesh(arm))
    pose = np.zeros((5, 3))
    pose[0], pose[2] = head, jaw
    want = flame_forward(data, exp, pose, BAKED_SHAPE)
    size = np.ptp(data["v_template"], axis=0).max()
    assert np.abs(got - want).max() <= 1e-5 * size
    rest = flame_forward(data, np.zeros(50), np.zeros((5, 3)), BAKED_SHAPE)
    assert np.abs(want - rest).max() > 100 * 1e-5 * size  # the pose really moves the mesh


@pytest.mark.torch
def test_jaw_deforms_like_backend_flame_layer(rig_file, make_take, head):
    """The same check against the backend's own torch FLAME layer."""
    torch = pytest.importorskip("torch")
    from backend.flame.layer import FLAME

    layer = FLAME(head.truncated(n_shape=100, n_exp=50))
    jaw = np.array([0.3, -0.04, 0.02], np.float32)
    glob = np.array([-0.05, 0.2, 0.0], np.float32)
    exp = np.random.default_rng(5).normal(0, 1.0, 50).astype(np.float32)
    path = _pose_take(make_take, jaw, glob, exp)
    arm = build_rig(rig_file)
    apply_take(arm, path, frame_mapping="footage_rate")
    bpy.context.scene.frame_set(2)
    got = evaluated_vertices(rig_mesh(arm))
    with torch.no_grad():
        out = layer(
            torch.from_numpy(BAKED_SHAPE)[None],
            torch.from_numpy(exp)[None],
            torch.from_numpy(np.concatenate([glob, jaw]))[None],
        )
    want = out.vertices[0].double().numpy()
    size = np.ptp(head.v_template, axis=0).max()
    assert np.abs(got - want).max() <= 1e-5 * size


def test_bad_rig_file_is_refused_with_a_clear_error(tmp_path, rig_file):
    data = load_rig_arrays(rig_file)
    bad = tmp_path / "bad.npz"
    data.pop("weights")
    import json

    data["meta"] = np.array(json.dumps(data["meta"]))
    np.savez(bad, **data)
    n_objects = len(bpy.data.objects)
    with pytest.raises(EmocaError, match="weights"):
        build_rig(bad)
    assert len(bpy.data.objects) == n_objects
    with pytest.raises(EmocaError, match="not found"):
        build_rig(tmp_path / "missing.npz")


def test_remove_rig_deletes_everything_it_built(rig_file):
    from emoca_blender.rig import remove_rig

    def counts():
        return len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.armatures)

    before = counts()
    arm = build_rig(rig_file)
    assert counts() == (before[0] + 2, before[1] + 1, before[2] + 1)
    remove_rig(arm)
    assert counts() == before
