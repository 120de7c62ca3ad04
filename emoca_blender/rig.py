"""Build a head rig in Blender from a rig file (docs/formats.md#rig-file): the FLAME rig here, an open rig
(``meta.kind = "open"``, e.g. the ICT head) in :mod:`.open_rig`; :func:`build_rig` reads the file and builds
either.

FLAME layout (names are a contract, docs/formats.md and design.md):
* armature object ``<name>_rig`` rotated +90 degrees about X (FLAME is +Y up, Blender +Z up); its data keeps
  FLAME space, and every bone has an identity rest orientation (head at the joint, tail along +Y, roll 0), so a
  pose bone's rotation IS FLAME's local axis-angle rotation of that joint, unchanged;
* mesh object ``<name>`` (FLAME space, UVs when the rig has them), a child of the armature with an Armature
  modifier and one vertex group per joint from the skinning weights;
* shape keys: ``Basis`` (template), identity (``Shape`` = the baked identity at value 1 when the rig has
  ``shape``, else ``Shape000..`` at 0), ``Exp000..`` (slider -10..10), ``Pose000..Pose035`` (slider -2..2).

The rig's own data and the helpers both builds share live in :mod:`.rig_parts` (re-exported here for scripts:
``emoca_blender.rig.rig_info(arm)``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import bpy
import numpy as np

from emoca_contract.rig import JOINT_NAMES, read_rig, validate_rig

from .open_rig import build_open_rig
from .rig_parts import (
    EXPR_PREFIX,
    LEGACY_INFO,
    RIG_INFO,
    add_bones,
    add_vertex_groups,
    ensure_prop,
    find_rig,
    is_rig,
    link_objects,
    new_armature,
    prop_name,
    prop_path,
    rig_info,
    rig_kind,
    rig_mesh,
    set_rig_info,
    skin,
)

# what scripts read from this module (docs/rig.md), defined in .rig_parts
__all__ = [
    "build_flame_rig",
    "build_rig",
    "read_rig",
    "remove_rig",
    "RIG_INFO",
    "EXPR_PREFIX",
    "LEGACY_INFO",
    "add_bones",
    "add_vertex_groups",
    "ensure_prop",
    "find_rig",
    "is_rig",
    "link_objects",
    "new_armature",
    "prop_name",
    "prop_path",
    "rig_info",
    "rig_kind",
    "rig_mesh",
    "set_rig_info",
    "skin",
]

EXP_SLIDER = 10.0  # Blender's widest slider range; real coefficients stay well inside it
POSE_SLIDER = 2.0  # entries of (R - I) lie in [-2, 2]
DEFAULT_NAMES = {"flame": "FLAME", "open": "Head"}  # the mesh's name when neither caller nor rig names it


def _key_coords(obj, name: str, coords: np.ndarray, slider: tuple[float, float], value: float = 0.0):
    kb = obj.shape_key_add(name=name, from_mix=False)
    kb.data.foreach_set("co", np.ascontiguousarray(coords, dtype=np.float32).ravel())
    kb.slider_min, kb.slider_max = slider
    kb.value = value
    return kb


def build_rig(rig: str | os.PathLike | dict, name: str | None = None, context=None) -> bpy.types.Object:
    """Build the rig a rig file (or its arrays) describes, FLAME or open; return the armature object. ``name``:
    the mesh's name (the armature is ``<name>_rig``); default: the rig's ``meta.name``, else FLAME / Head."""
    context = context or bpy.context
    data = read_rig(rig) if not isinstance(rig, dict) else validate_rig(rig)
    kind = data["meta"]["kind"]
    name = name or str(data["meta"].get("name") or DEFAULT_NAMES[kind])
    if kind == "open":
        return build_open_rig(data, name, context)
    return build_flame_rig(data, name, context)


def build_flame_rig(data: dict[str, Any], name: str, context) -> bpy.types.Object:
    """Build the FLAME rig (see module docstring) from validated rig arrays; return the armature object."""
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

    # --- vertex groups (one per joint) ---
    add_vertex_groups(mesh_obj, names, weights)

    # --- armature: identity rest orientations, bone heads at the joints ---
    arm = new_armature(name)
    link_objects(context, arm, mesh_obj)
    length = 0.1 * (float(np.ptp(v_template, axis=0).max()) or 1.0)
    add_bones(arm, context, names, joints, parents, [length * (0.5 if j > 2 else 1.0) for j in range(len(names))])
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
    skin(mesh_obj, arm)

    # --- the rig's own data, for takes and for people ---
    j_regressor = np.asarray(data["J_regressor"], np.float64)
    j_exp = np.einsum("jv,vck->jck", j_regressor, expdirs)
    j_shape = np.einsum("jv,vck->jck", j_regressor, shapedirs)  # how the joints move with identity (likeness.py)
    set_rig_info(
        arm,
        kind="flame",
        n_exp=int(expdirs.shape[2]),
        mesh=mesh_obj.name,
        meta=json.dumps(meta),
        source=str(data.get("source_path", "")),
        model=str(meta.get("model", "")),
        joint_expdirs=j_exp.astype(np.float32).ravel().tolist(),
        joint_shapedirs=j_shape.astype(np.float32).ravel().tolist(),
        identity_coefficients=[] if shape is None else [float(c) for c in shape],
        identity_name="Shape" if shape is not None else "",
    )
    return arm


def remove_rig(arm: bpy.types.Object) -> None:
    """Delete a rig built by :func:`build_rig` (armature, mesh and their data)."""
    mesh_obj = next((c for c in arm.children if c.type == "MESH"), None)
    datablocks = [arm.data] + ([mesh_obj.data] if mesh_obj is not None else [])
    for obj in ([mesh_obj] if mesh_obj is not None else []) + [arm]:
        bpy.data.objects.remove(obj)
    for data in datablocks:
        if data.users == 0:
            (bpy.data.armatures if isinstance(data, bpy.types.Armature) else bpy.data.meshes).remove(data)
