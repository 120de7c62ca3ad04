"""Build the FLAME rig in Blender from a rig file (docs/formats.md#rig-file).

Layout (names are a contract, docs/formats.md and design.md):
* armature object ``<name>_rig`` rotated +90 degrees about X (FLAME is +Y up, Blender +Z up); its data keeps
  FLAME space, and every bone has an identity rest orientation (head at the joint, tail along +Y, roll 0), so a
  pose bone's rotation IS FLAME's local axis-angle rotation of that joint, unchanged;
* mesh object ``<name>`` (FLAME space, UVs when the rig has them), a child of the armature with an Armature
  modifier and one vertex group per joint from the skinning weights;
* shape keys: ``Basis`` (template), identity (``Shape`` = the baked identity at value 1 when the rig has
  ``shape``, else ``Shape000..`` at 0), ``Exp000..`` (slider -10..10), ``Pose000..Pose035`` (slider -2..2).

The armature also stores, as ID properties, how the joints move with expression (``emoca_joint_expdirs``,
J_regressor @ expdirs, 5x3xn_exp), so takes can key the small bone offsets FLAME's expression-dependent
joints imply (see apply.py).
"""

from __future__ import annotations

import json
import math
import os

import bpy
import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.rig import JOINT_NAMES, read_rig, validate_rig

EXP_SLIDER = 10.0  # Blender's widest slider range; real coefficients stay well inside it
POSE_SLIDER = 2.0  # entries of (R - I) lie in [-2, 2]


def _key_coords(obj, name: str, coords: np.ndarray, slider: tuple[float, float], value: float = 0.0):
    kb = obj.shape_key_add(name=name, from_mix=False)
    kb.data.foreach_set("co", np.ascontiguousarray(coords, dtype=np.float32).ravel())
    kb.slider_min, kb.slider_max = slider
    kb.value = value
    return kb


def _link(obj, context) -> None:
    collection = context.collection if context is not None and context.collection else None
    (collection or bpy.context.scene.collection).objects.link(obj)


def build_rig(rig: str | os.PathLike | dict, name: str = "FLAME", context=None) -> bpy.types.Object:
    """Build the rig (see module docstring) and return the armature object."""
    context = context or bpy.context
    data = read_rig(rig) if not isinstance(rig, dict) else validate_rig(rig)
    v_template = np.asarray(data["v_template"], np.float64)
    faces = np.asarray(data["faces"], np.int64)
    shapedirs = np.asarray(data["shapedirs"], np.float64)
    expdirs = np.asarray(data["expdirs"], np.float64)
    posedirs = np.asarray(data["posedirs"], np.float64)
    joints = np.asarray(data["joints"], np.float64)
    parents = [int(p) for p in np.asarray(data["parents"]).ravel()]
    weights = np.asarray(data["weights"], np.float64)
    names = [str(n) for n in np.asarray(data.get("joint_names", JOINT_NAMES)).ravel()]
    meta = data["meta"]

    # --- mesh (FLAME space) ---
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(v_template.tolist(), [], faces.tolist())
    if data.get("uvs") is not None and data.get("uv_faces") is not None:
        uvs = np.asarray(data["uvs"], np.float32)
        uv_faces = np.asarray(data["uv_faces"], np.int64)
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", uvs[uv_faces].reshape(-1).astype(np.float32))
    mesh.update()
    mesh_obj = bpy.data.objects.new(name, mesh)

    # --- shape keys ---
    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    shape = data.get("shape")
    if shape is not None:
        shape = np.asarray(shape, np.float64).ravel()
        identity = v_template + shapedirs[:, :, : shape.size] @ shape
        _key_coords(mesh_obj, "Shape", identity, (0.0, 1.0), value=1.0)
    else:
        for i in range(shapedirs.shape[2]):
            _key_coords(mesh_obj, f"Shape{i:03d}", v_template + shapedirs[:, :, i], (-EXP_SLIDER, EXP_SLIDER))
    for i in range(expdirs.shape[2]):
        _key_coords(mesh_obj, f"Exp{i:03d}", v_template + expdirs[:, :, i], (-EXP_SLIDER, EXP_SLIDER))
    for i in range(posedirs.shape[2]):
        _key_coords(mesh_obj, f"Pose{i:03d}", v_template + posedirs[:, :, i], (-POSE_SLIDER, POSE_SLIDER))
    mesh_obj.data.shape_keys.name = f"{name}_keys"

    # --- vertex groups (one per joint), grouped by equal weights to keep the number of calls small ---
    for j, joint in enumerate(names):
        vg = mesh_obj.vertex_groups.new(name=joint)
        w = weights[:, j].astype(np.float32)
        nz = np.nonzero(w > 0)[0]
        values, inverse = np.unique(w[nz], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        splits = np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1]
        for value, idx in zip(values, np.split(nz[order], splits)):
            vg.add(idx.tolist(), float(value), "REPLACE")

    # --- armature: identity rest orientations, bone heads at the joints ---
    arm_data = bpy.data.armatures.new(f"{name}_rig")
    arm = bpy.data.objects.new(f"{name}_rig", arm_data)
    arm.rotation_mode = "XYZ"
    arm.rotation_euler = (math.pi / 2, 0.0, 0.0)
    _link(arm, context)
    _link(mesh_obj, context)
    extent = float(np.ptp(v_template, axis=0).max()) or 1.0
    length = 0.1 * extent
    view_layer = context.view_layer if context is not None and context.view_layer else bpy.context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = arm
    with bpy.context.temp_override(active_object=arm, object=arm, view_layer=view_layer):
        bpy.ops.object.mode_set(mode="EDIT")
        bones = []
        for j, joint in enumerate(names):
            eb = arm_data.edit_bones.new(joint)
            eb.head = joints[j].tolist()
            eb.tail = (joints[j] + np.array([0.0, length * (0.5 if j > 2 else 1.0), 0.0])).tolist()
            eb.roll = 0.0
            eb.use_deform = True
            bones.append(eb)
        for j, p in enumerate(parents):
            if p >= 0:
                bones[j].parent = bones[p]
                bones[j].use_connect = False
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = prev_active
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"

    mesh_obj.parent = arm
    mod = mesh_obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False

    # --- metadata for takes and for people ---
    j_exp = np.einsum("jv,vck->jck", np.asarray(data["J_regressor"], np.float64), expdirs)
    arm["emoca_joint_expdirs"] = j_exp.astype(np.float32).ravel().tolist()
    arm["emoca_n_exp"] = int(expdirs.shape[2])
    arm["emoca_mesh"] = mesh_obj.name
    arm["emoca_rig_meta"] = json.dumps(meta)
    arm["emoca_rig_source"] = str(data.get("source_path", ""))
    arm["emoca_model"] = str(meta.get("model", ""))
    return arm


def rig_mesh(arm: bpy.types.Object) -> bpy.types.Object:
    """The FLAME mesh driven by ``arm`` (the child with an Armature modifier pointing at it)."""
    for child in arm.children:
        if child.type == "MESH" and any(m.type == "ARMATURE" and m.object == arm for m in child.modifiers):
            return child
    name = arm.get("emoca_mesh")
    obj = bpy.data.objects.get(name) if name else None
    if obj is None or obj.type != "MESH":
        raise EmocaError(
            "config_invalid",
            f"{arm.name}: no FLAME mesh is driven by this armature",
            "Pick the armature created by Import FLAME rig.",
        )
    return obj


def find_rig(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The rig armature for ``obj`` (the armature itself, or the armature parent of a rig mesh)."""
    if obj is None:
        return None
    if obj.type == "ARMATURE" and "emoca_n_exp" in obj:
        return obj
    if obj.parent is not None and obj.parent.type == "ARMATURE" and "emoca_n_exp" in obj.parent:
        return obj.parent
    return None


def remove_rig(arm: bpy.types.Object) -> None:
    """Delete a rig built by :func:`build_rig` (armature, mesh and their data)."""
    mesh_obj = next((c for c in arm.children if c.type == "MESH"), None)
    datablocks = [arm.data] + ([mesh_obj.data] if mesh_obj is not None else [])
    for obj in ([mesh_obj] if mesh_obj is not None else []) + [arm]:
        bpy.data.objects.remove(obj)
    for data in datablocks:
        if data.users == 0:
            (bpy.data.armatures if isinstance(data, bpy.types.Armature) else bpy.data.meshes).remove(data)
