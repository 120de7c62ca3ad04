"""Build a head rig in Blender from a rig file (docs/formats.md#rig-file): the FLAME rig here, an open rig
(``meta.kind = "open"``, e.g. the ICT head) in :mod:`.open_rig`; :func:`build_rig` reads the file and builds
either. The helpers both builds share (linking, vertex groups, bones with identity rest, the emotion holder's
properties) live here.

FLAME layout (names are a contract, docs/formats.md and design.md):
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
import re
from typing import Any

import bpy
import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.rig import JOINT_NAMES, read_rig, validate_rig

EXP_SLIDER = 10.0  # Blender's widest slider range; real coefficients stay well inside it
POSE_SLIDER = 2.0  # entries of (R - I) lie in [-2, 2]
DEFAULT_NAMES = {"flame": "FLAME", "open": "Head"}  # the mesh's name when neither caller nor rig names it


def _key_coords(obj, name: str, coords: np.ndarray, slider: tuple[float, float], value: float = 0.0):
    kb = obj.shape_key_add(name=name, from_mix=False)
    kb.data.foreach_set("co", np.ascontiguousarray(coords, dtype=np.float32).ravel())
    kb.slider_min, kb.slider_max = slider
    kb.value = value
    return kb


def _link(obj, context) -> None:
    collection = context.collection if context is not None and context.collection else None
    (collection or bpy.context.scene.collection).objects.link(obj)


def link_objects(context, *objects) -> None:
    """Link objects into the context's collection (else the scene's)."""
    for obj in objects:
        _link(obj, context)


def add_vertex_groups(mesh_obj, names: list[str], weights: np.ndarray, only_used: bool = False) -> None:
    """One vertex group per name from weights (V, J), vertices grouped by equal weight to keep the calls few;
    ``only_used``: skip names whose column is all zero."""
    for j, joint in enumerate(names):
        w = weights[:, j].astype(np.float32)
        nz = np.nonzero(w > 0)[0]
        if only_used and not len(nz):
            continue
        vg = mesh_obj.vertex_groups.new(name=joint)
        values, inverse = np.unique(w[nz], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        splits = np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1]
        for value, idx in zip(values, np.split(nz[order], splits)):
            vg.add(idx.tolist(), float(value), "REPLACE")


def add_bones(arm, context, names: list[str], joints: np.ndarray, parents: list[int], lengths: list[float],
              deform: list[bool] | None = None) -> None:  # fmt: skip
    """Edit bones with identity rest orientation: head at the joint, tail +Y by the length, roll 0."""
    view_layer = context.view_layer if context is not None and context.view_layer else bpy.context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = arm
    with bpy.context.temp_override(active_object=arm, object=arm, view_layer=view_layer):
        bpy.ops.object.mode_set(mode="EDIT")
        bones = []
        for j, joint in enumerate(names):
            eb = arm.data.edit_bones.new(joint)
            eb.head = joints[j].tolist()
            eb.tail = (joints[j] + np.array([0.0, lengths[j], 0.0])).tolist()
            eb.roll = 0.0
            eb.use_deform = True if deform is None else deform[j]
            bones.append(eb)
        for j, p in enumerate(parents):
            if p >= 0:
                bones[j].parent = bones[p]
                bones[j].use_connect = False
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = prev_active


def new_armature(name: str) -> bpy.types.Object:
    """An armature object ``<name>_rig`` turned +90 degrees about X: the rig's +Y up becomes Blender's +Z up."""
    arm = bpy.data.objects.new(f"{name}_rig", bpy.data.armatures.new(f"{name}_rig"))
    arm.rotation_mode = "XYZ"
    arm.rotation_euler = (math.pi / 2, 0.0, 0.0)
    return arm


def skin(mesh_obj, arm) -> None:
    """Parent the mesh to the armature with an Armature modifier over its vertex groups."""
    mesh_obj.parent = arm
    mod = mesh_obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False


def prop_name(cls: str) -> str:
    """The custom property holding an emotion class's probability: ``emoca_expr_<Class>``."""
    return "emoca_expr_" + re.sub(r"\W+", "_", cls).strip("_")


def ensure_prop(arm, name: str, lo: float, hi: float, description: str) -> None:
    """An animatable float custom property on ``arm`` (created at 0 if missing) with its UI range."""
    if name not in arm:
        arm[name] = 0.0
    ui = arm.id_properties_ui(name)
    ui.update(min=lo, max=hi, soft_min=lo, soft_max=hi, description=description, default=0.0)


def build_rig(rig: str | os.PathLike | dict, name: str | None = None, context=None) -> bpy.types.Object:
    """Build the rig a rig file (or its arrays) describes, FLAME or open; return the armature object. ``name``:
    the mesh's name (the armature is ``<name>_rig``); default: the rig's ``meta.name``, else FLAME / Head."""
    context = context or bpy.context
    data = read_rig(rig) if not isinstance(rig, dict) else validate_rig(rig)
    kind = data["meta"]["kind"]
    name = name or str(data["meta"].get("name") or DEFAULT_NAMES[kind])
    if kind == "open":
        from .open_rig import build_open_rig  # open_rig builds on this module's helpers

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

    # --- metadata for takes and for people ---
    j_exp = np.einsum("jv,vck->jck", np.asarray(data["J_regressor"], np.float64), expdirs)
    arm["emoca_joint_expdirs"] = j_exp.astype(np.float32).ravel().tolist()
    arm["emoca_n_exp"] = int(expdirs.shape[2])
    arm["emoca_rig_kind"] = "flame"
    arm["emoca_mesh"] = mesh_obj.name
    arm["emoca_rig_meta"] = json.dumps(meta)
    arm["emoca_rig_source"] = str(data.get("source_path", ""))
    arm["emoca_model"] = str(meta.get("model", ""))
    return arm


def rig_kind(arm: bpy.types.Object) -> str:
    """ "flame" or "open": what kind of rig ``arm`` is (rigs built before open rigs existed are FLAME rigs)."""
    return str(arm.get("emoca_rig_kind", "flame"))


def rig_mesh(arm: bpy.types.Object) -> bpy.types.Object:
    """The rig mesh driven by ``arm`` (the child with an Armature modifier pointing at it)."""
    for child in arm.children:
        if child.type == "MESH" and any(m.type == "ARMATURE" and m.object == arm for m in child.modifiers):
            return child
    name = arm.get("emoca_mesh")
    obj = bpy.data.objects.get(name) if name else None
    if obj is None or obj.type != "MESH":
        raise EmocaError(
            "config_invalid",
            f"{arm.name}: no rig mesh is driven by this armature",
            "Pick the armature created by Import Rig.",
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
