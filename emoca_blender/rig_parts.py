"""What every rig is built from, and how a built rig is recognised: linking objects, vertex groups, bones with an
identity rest, skinning, the emotion holder's properties, and the rig's own data. Both builders use it: the FLAME
rig (:mod:`.rig`) and the open rig (:mod:`.open_rig`).

The rig's own data (:func:`rig_info`) is ONE group property ``_emoca`` on the armature's DATA, not on the
object: the object's custom properties are only what a user animates or drives (the emotion curves
``emoca_valence``, ``emoca_arousal``, ``emoca_expr_<Class>``). The group holds ``kind`` ("flame" or "open"),
``n_exp``, ``mesh`` (the mesh object's name), ``meta`` (the rig file's meta, JSON), ``source`` (the rig file),
``model``, and per kind: FLAME rigs ``joint_expdirs`` (how the joints move with expression, J_regressor @ expdirs,
5x3xn_exp flattened, so takes can key the small bone offsets FLAME's expression-dependent joints imply, see
apply.py) and ``joint_shapedirs`` (J_regressor @ shapedirs, 5x3xn_shape: how the joints move with identity);
open rigs ``head_bone`` and ``translation_bone``. Both record the baked identity, when there is one:
``identity_name`` (its shape key), ``identity_coefficients`` and, once baked from a likeness, ``identity_file``
(likeness.py).
"""

from __future__ import annotations

import math
from typing import Any

import bpy
import numpy as np

from emoca_contract.errors import EmocaError

RIG_INFO = "_emoca"  # the group property on the armature data that makes an armature an EMOCA rig
EXPR_PREFIX = "emoca_expr_"


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
    """The custom property holding an emotion class's probability: ``emoca_expr_<Class>``, the class name as it
    is (one property per class: a take's class names are unique, so no two classes share a property)."""
    return EXPR_PREFIX + cls


def prop_path(name: str) -> str:
    """The data path of custom property ``name`` (quotes and backslashes in the name escaped)."""
    return f'["{bpy.utils.escape_identifier(name)}"]'


def set_rig_info(arm, **info: Any) -> None:
    """Store the rig's own data (see the module docstring) on the armature's data."""
    arm.data[RIG_INFO] = info


# Rigs built by the first release (in .blend files users keep) held their data as object properties.
LEGACY_INFO = {"n_exp": "emoca_n_exp", "mesh": "emoca_mesh", "meta": "emoca_rig_meta", "source": "emoca_rig_source",
               "model": "emoca_model", "joint_expdirs": "emoca_joint_expdirs", "kind": "emoca_rig_kind"}  # fmt: skip


def _plain(value: Any) -> Any:
    return value.to_list() if hasattr(value, "to_list") else value.to_dict() if hasattr(value, "to_dict") else value


def rig_info(arm) -> dict[str, Any]:
    """The rig's own data (see the module docstring) as plain Python values; read-only for first-release rigs,
    whose data sits in object properties (they keep working unchanged)."""
    if RIG_INFO in arm.data:
        return arm.data[RIG_INFO].to_dict()
    info = {key: _plain(arm[prop]) for key, prop in LEGACY_INFO.items() if prop in arm}
    info.setdefault("kind", "flame")
    return info


def is_rig(obj) -> bool:
    """Whether ``obj`` is the armature of a rig built by :func:`build_rig` (this release's or the first's)."""
    if not (isinstance(obj, bpy.types.Object) and obj.type == "ARMATURE"):
        return False
    return RIG_INFO in obj.data or LEGACY_INFO["n_exp"] in obj


def ensure_prop(arm, name: str, lo: float, hi: float, description: str) -> None:
    """An animatable float custom property on ``arm`` (created at 0 if missing) with its UI range."""
    if name not in arm:
        arm[name] = 0.0
    ui = arm.id_properties_ui(name)
    ui.update(min=lo, max=hi, soft_min=lo, soft_max=hi, description=description, default=0.0)


def rig_kind(arm: bpy.types.Object) -> str:
    """ "flame" or "open": what kind of rig ``arm`` is."""
    return str(rig_info(arm)["kind"])


def rig_mesh(arm: bpy.types.Object) -> bpy.types.Object:
    """The rig mesh driven by ``arm`` (the child with an Armature modifier pointing at it)."""
    for child in arm.children:
        if child.type == "MESH" and any(m.type == "ARMATURE" and m.object == arm for m in child.modifiers):
            return child
    name = rig_info(arm).get("mesh")
    obj = bpy.data.objects.get(name) if name else None
    if obj is None or obj.type != "MESH":
        raise EmocaError(
            "config_invalid",
            f"{arm.name}: no rig mesh is driven by this armature",
            "Pick the armature created by Import Rig.",
        )
    return obj


def find_rig(obj: Any) -> bpy.types.Object | None:
    """The rig armature for ``obj`` (the armature itself, or the armature parent of a rig mesh); None for
    anything else (another object, None, a path: build a rig file with :func:`build_rig`)."""
    if not isinstance(obj, bpy.types.Object):
        return None
    if is_rig(obj):
        return obj
    return obj.parent if is_rig(obj.parent) else None
