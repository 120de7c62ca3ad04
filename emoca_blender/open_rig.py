"""Build an open head rig in Blender (docs/formats.md "Open rig", docs/rig.md): the ICT head and its kind.

Layout (names are a contract, docs/rig.md):
* armature object ``<name>_rig`` turned +90 degrees about X (the rig is +Y up, Blender +Z up); its data keeps
  the rig's space and every bone has an identity rest orientation (head at the joint, tail along +Y, roll 0), so
  a pose rotation is a rotation about the joint in the rig's axes. Bones named by ``meta.drivers`` turn in Euler
  XYZ, the others in quaternions; only ``meta.deform_bones`` deform;
* mesh object ``<name>``: the rig's polygons (built in bulk: vertices, loops and polygons by ``foreach_set``),
  smooth shaded, UVs ``UVMap``, one material per group (Principled base colour, and the same colour for the
  viewport), one vertex group per deforming bone, an Armature modifier;
* shape keys: ``Basis``, the baked identity (``meta.identity_name``, at 1) when the rig has one, then one key per
  shape named exactly as the rig names it (ARKit's channel names), slider 0..1;
* drivers (``meta.drivers``): a bone channel = sum(coefficient * shape-key value), written as a simple
  expression (Blender evaluates those itself: they run with Python auto-run off);
* the emotion holder: ``emoca_valence``, ``emoca_arousal`` and ``emoca_expr_<Class>`` custom properties on the
  armature, ready for drivers before a take is applied.
The rig's own data (rig_parts.rig_info, on the armature data) says ``kind`` "open" (apply.py keys open takes only on
such rigs); its ``head_bone`` and ``translation_bone`` name the bones a take's head rotation and translation go
to.
"""

from __future__ import annotations

import json
from typing import Any

import bpy
import numpy as np

from emoca_contract.take import FER_CLASSES_DEFAULT

from .rig_parts import (
    add_bones,
    add_vertex_groups,
    ensure_prop,
    link_objects,
    new_armature,
    prop_name,
    set_rig_info,
    skin,
)

EMOTION_RANGES = {"emoca_valence": (-1.0, 1.0, "Valence (negative to positive)"),
                  "emoca_arousal": (-1.0, 1.0, "Arousal (calm to excited)")}  # fmt: skip


def build_mesh(name: str, data: dict[str, Any]) -> bpy.types.Mesh:
    """The mesh of polygons with UVs and material slots' indices, in bulk (no per-vertex Python)."""
    verts = np.asarray(data["v_template"], np.float32)
    corners = np.asarray(data["poly_vertices"], np.int32)
    sizes = np.asarray(data["poly_sizes"], np.int32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(len(corners))
    mesh.loops.foreach_set("vertex_index", corners)
    mesh.polygons.add(len(sizes))
    mesh.polygons.foreach_set("loop_start", np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32))
    mesh.update(calc_edges=True)
    uvs = np.asarray(data["uvs"], np.float32)[np.asarray(data["poly_uvs"], np.int64)]
    mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", uvs.ravel())
    mesh.polygons.foreach_set("material_index", np.asarray(data["poly_materials"], np.int32))
    mesh.shade_smooth()
    return mesh


def add_materials(mesh: bpy.types.Mesh, name: str, data: dict[str, Any]) -> None:
    """One material per group, ``<name>_<group>``: Principled base colour (linear RGBA) and viewport colour."""
    for group, color in zip(np.asarray(data["material_names"]), np.asarray(data["material_colors"], np.float64)):
        mat = bpy.data.materials.new(f"{name}_{group}")
        mat.diffuse_color = tuple(float(c) for c in color)
        if mat.node_tree is None:  # 4.x: a new material has no nodes until asked (5.0 always has them)
            mat.use_nodes = True
        bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
        bsdf.inputs["Base Color"].default_value = tuple(float(c) for c in color)
        bsdf.inputs["Roughness"].default_value = 0.55 if group in ("Skin", "Lips", "Brows") else 0.3
        mesh.materials.append(mat)


def add_shape_keys(mesh_obj, data: dict[str, Any]) -> None:
    """``Basis``, the baked identity when present (at 1), one key per shape (slider 0..1). Every key is relative to
    ``Basis`` (the mean head): a shape key is the template plus its delta, so the identity adds once, whatever
    the shapes' values (as backend.ict.rig.pose_rig: template + identity + sum of value * delta)."""
    base = np.asarray(data["v_template"], np.float64)
    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    if data.get("identity") is not None:
        _key(mesh_obj, identity_key_name(data), base + np.asarray(data["identity"], np.float64), 1.0)
    for shape, delta in zip(np.asarray(data["shape_names"]), np.asarray(data["shape_deltas"], np.float64)):
        _key(mesh_obj, str(shape), base + delta, 0.0)


def identity_key_name(data: dict[str, Any]) -> str:
    """The baked identity's shape key: ``meta.identity_name`` (the clip's), else ``identity``."""
    return str(data["meta"].get("identity_name") or "identity")


def _key(mesh_obj, name: str, coords: np.ndarray, value: float) -> None:
    kb = mesh_obj.shape_key_add(name=name, from_mix=False)
    kb.data.foreach_set("co", np.ascontiguousarray(coords, dtype=np.float32).ravel())
    kb.slider_min, kb.slider_max = 0.0, 1.0
    kb.value = value


def driver_expression(terms: dict[str, float]) -> str:
    """A simple expression over variables ``v0, v1, ...`` (one per term, in order): ``0.441352*v0 - ...``."""
    parts = [f"{float(c):.6f}*v{i}" for i, c in enumerate(terms.values())]
    return " + ".join(parts).replace("+ -", "- ") or "0.0"


def add_drivers(arm, key: bpy.types.Key, drivers: list[dict[str, Any]]) -> None:
    """Each ``meta.drivers`` entry as a driver on the pose bone's channel reading shape-key values."""
    for d in drivers:
        fcurve = arm.pose.bones[d["bone"]].driver_add(d["channel"], d["index"])
        for mod in list(fcurve.modifiers):  # some versions add a generator; the value must be the expression's
            fcurve.modifiers.remove(mod)
        drv = fcurve.driver
        drv.type = "SCRIPTED"
        for i, shape in enumerate(d["terms"]):
            var = drv.variables.new()
            var.name, var.type = f"v{i}", "SINGLE_PROP"
            var.targets[0].id_type = "KEY"
            var.targets[0].id = key
            var.targets[0].data_path = f'key_blocks["{shape}"].value'
        drv.expression = driver_expression(d["terms"])


def add_emotion_holder(arm) -> None:
    """The emotion curves' custom properties (valence, arousal, one per default class) at 0."""
    for prop, (lo, hi, text) in EMOTION_RANGES.items():
        ensure_prop(arm, prop, lo, hi, text + ", EMOCA take")
    for cls in FER_CLASSES_DEFAULT:
        ensure_prop(arm, prop_name(cls), 0.0, 1.0, f"Probability of '{cls}', EMOCA take")


def build_open_rig(data: dict[str, Any], name: str, context) -> bpy.types.Object:
    """Build the open rig (see module docstring) from validated rig arrays; return the armature object."""
    meta = data["meta"]
    mesh = build_mesh(name, data)
    add_materials(mesh, name, data)
    mesh_obj = bpy.data.objects.new(name, mesh)
    add_shape_keys(mesh_obj, data)
    mesh.shape_keys.name = f"{name}_keys"
    names = [str(n) for n in np.asarray(data["joint_names"])]
    deform = list(meta.get("deform_bones", names))
    add_vertex_groups(mesh_obj, names, np.asarray(data["weights"], np.float64), only_used=True)

    arm = new_armature(name)
    link_objects(context, arm, mesh_obj)
    joints = np.asarray(data["joints"], np.float64)
    length = 0.05 * (float(np.ptp(np.asarray(data["v_template"]), axis=0).max()) or 1.0)
    parents = [int(p) for p in np.asarray(data["parents"])]
    add_bones(arm, context, names, joints, parents, [length] * len(names), [n in deform for n in names])
    driven = {d["bone"] for d in meta.get("drivers", [])}
    for pb in arm.pose.bones:
        pb.rotation_mode = "XYZ" if pb.name in driven else "QUATERNION"
    skin(mesh_obj, arm)
    add_drivers(arm, mesh.shape_keys, meta.get("drivers", []))
    add_emotion_holder(arm)

    set_rig_info(
        arm,
        kind="open",
        n_exp=0,  # no FLAME expression coefficients
        mesh=mesh_obj.name,
        meta=json.dumps(meta),
        source=str(data.get("source_path", "")),
        model=str(meta.get("model", "")),
        head_bone=str(meta.get("head_bone", "head")),
        translation_bone=str(meta.get("translation_bone", "root")),
        identity_name=identity_key_name(data) if data.get("identity") is not None else "",
    )
    return arm
