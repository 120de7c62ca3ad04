"""The performer's likeness on a rig (docs/likeness.md "In Blender"): the identity key, the texture as base colour,
the detail material; and the backend's ``likeness`` request as a job (:class:`LikenessJob`).

What the backend made lies beside the take, named by its sidecar ``NAME.likeness.json``
(``emoca_contract.take.read_likeness``; docs/formats.md "Likeness sidecar"). This module only reads those files
and changes the rig; :func:`use_likeness` does all of it in one call, each part validated before the scene is
touched.

Identity: ONE shape key named after the clip (the identity's ``name``) at 1.0 replaces the rig's identity keys
(a FLAME rig's ``Shape000..`` basis keys or its baked ``Shape``; an open rig's previous identity key). FLAME
identities are coefficients over the rig's ``Shape000..`` keys (or, once those are gone, the identity file's
per-vertex offsets); open (ICT) identities are per-vertex offsets. The bones' rest heads move with the
identity: FLAME's exactly (the rig keeps ``joint_shapedirs`` = J_regressor @ shapedirs, rig.py), an open rig's
by the weighted mean identity offset over each bone's vertex group. The rig's own data records ``identity_name``,
``identity_file`` and ``identity_coefficients``; a second take of the same performer reuses the key
(apply option ``identity``: "auto" keeps a rig's identity, "take" replaces it, "keep" never touches it).

Texture: the albedo PNG (sRGB) through the mesh's ``UVMap`` and a Mapping node that maps the sidecar's
``uv_range`` onto the image: a FLAME rig gets a material ``<mesh>_likeness``, the open rig's skin materials
(``*_Skin``, ``*_Lips``, ``*_Brows``: the polygons the texture covers) get it as their base colour.

Detail (FLAME rigs): the 16-bit displacement sequence as an image sequence node (Non-Color) into a Displacement
node (midlevel and scale from the sidecar: metres along the normal) into the material's Displacement (bump,
``Material.displacement_method``), linked only while the rig mesh's ``emoca_detail`` checkbox is on (off by
default). Frame sync: every scene frame the applied take covers shows the map of the take row nearest it under the
take's frame mapping (:func:`detail_schedule`); Blender's image user shows file
``clamp(scene - frame_start + 1, 0, frame_duration) + frame_offset``, so ``frame_offset`` is set (or keyed,
constant interpolation, when the take's frames are not evenly spaced on the scene) to land on that file.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.take import LIKENESS_HINT, Take, likeness_path, read_identity, read_likeness

from . import animation
from .client import BackendJob
from .options import ApplyOptions
from .rig_parts import find_rig, rig_info, rig_kind, rig_mesh, set_rig_info

SHAPE_KEY = re.compile(r"^Shape(\d{3})?$")  # a FLAME rig's identity basis keys and its baked identity key
TEXTURED_GROUPS = ("Skin", "Lips", "Brows")  # the open rig's materials over ICT's textured UV tiles
LIKENESS_MATERIAL = "{}_likeness"
NODE_UV, NODE_RANGE, NODE_ALBEDO = "EMOCA UV", "EMOCA UV Range", "EMOCA Albedo"
NODE_DETAIL, NODE_DISPLACEMENT = "EMOCA Detail", "EMOCA Displacement"
DETAIL_PROP = "emoca_detail"  # the rig mesh's checkbox (properties.py registers it on Object)
UV_MAP = "UVMap"
HEADS = {"flame": "flame", "ict": "open"}  # the sidecar's texture head -> the rig kind it fits


def _rig(rig) -> bpy.types.Object:
    arm = find_rig(rig)
    if arm is None:
        raise EmocaError("config_invalid", f"{getattr(rig, 'name', rig)!r} is not an EMOCA rig",
                         "Import a rig with Import Rig and select its armature.")  # fmt: skip
    return arm


def read_sidecar(take_path: str | os.PathLike) -> dict[str, Any]:
    """The take's likeness sidecar, checked; EmocaError('input_missing') when the take has none."""
    side = read_likeness(take_path)
    if side is None:
        raise EmocaError("input_missing", f"{take_path}: no likeness beside the take ({likeness_path(take_path).name})",
                         "Make it first: Make Likeness in the panel, api.likeness(...), or "
                         "python -m backend likeness TAKE VIDEO.")  # fmt: skip
    return side


def section(side: dict[str, Any], name: str, take_path: str | os.PathLike) -> dict[str, Any]:
    """One section (identity, texture, detail) of a sidecar whose files are on disk."""
    part = side.get(name)
    if not isinstance(part, dict) or not part.get("present"):
        what = "is not in" if not isinstance(part, dict) else "names files missing from"
        raise EmocaError("input_missing", f"{take_path}: the {name} {what} the take's likeness",
                         f"Make it: python -m backend likeness TAKE VIDEO --{name}.")  # fmt: skip
    return part


# ---------------------------------------------------------------------------------------------- identity
@dataclass
class IdentityPlan:
    """A bake, decided before the rig is touched: the key's name and coordinates (V, 3) in rig space, the keys
    it replaces, the bones' new rest heads (rig space) and what the rig records."""

    name: str
    coords: np.ndarray
    drop: list[str]
    heads: dict[str, np.ndarray]
    file: str
    coefficients: list[float]
    notes: list[str] = field(default_factory=list)


def key_coords(kb) -> np.ndarray:
    """A shape key's coordinates (V, 3) float64."""
    out = np.empty(len(kb.data) * 3, np.float32)
    kb.data.foreach_get("co", out)
    return out.reshape(-1, 3).astype(np.float64)


def current_identity(arm) -> str | None:
    """The name of the rig's identity key (baked by a likeness or by the rig file), None when it has none."""
    info = rig_info(arm)
    keys = rig_mesh(arm).data.shape_keys
    names = [info.get("identity_name")]
    if rig_kind(arm) == "flame":
        names.append("Shape")
    else:
        names.append(_json(info.get("meta")).get("identity_name"))
    return next((n for n in names if n and keys is not None and n in keys.key_blocks), None)


def _json(text: Any) -> dict[str, Any]:
    """A JSON object from text (the rig's ``meta``), {} for anything else."""
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def plan_identity(arm, identity_file: str | os.PathLike) -> IdentityPlan:
    """Read an identity file and decide its bake onto ``arm`` (the scene is only read)."""
    data = read_identity(identity_file)
    meta, coeffs = data["meta"], np.asarray(data["coefficients"], np.float64)
    kind = rig_kind(arm)
    if meta["kind"] != kind:
        raise EmocaError("config_invalid", f"{identity_file}: a {meta['kind']} identity cannot be baked into the "
                         f"{kind} rig {arm.name!r}", "Use a take of the rig's kind (FLAME or open).")  # fmt: skip
    mesh_obj = rig_mesh(arm)
    keys = mesh_obj.data.shape_keys
    if keys is None:
        raise EmocaError("config_invalid", f"{mesh_obj.name}: the rig mesh has no shape keys",
                         "Import the rig again (Import Rig).")  # fmt: skip
    basis = key_coords(keys.reference_key)
    offsets = data.get("offsets")
    previous = current_identity(arm)
    old = key_coords(keys.key_blocks[previous]) - basis if previous else np.zeros_like(basis)
    if offsets is not None and np.asarray(offsets).shape != basis.shape:
        offsets = None  # another head's vertices (a FLAME take on the synthetic head's rig, ...): coefficients
    if kind == "flame":
        delta, drop = flame_delta(keys, basis, coeffs, offsets, identity_file)
        heads, notes = flame_heads(arm, coeffs)
    else:
        if offsets is None:
            raise EmocaError("config_invalid", f"{identity_file}: the open identity's offsets do not fit the rig "
                             f"{arm.name!r} ({len(basis)} vertices)", "Bake it into the open ICT rig.")  # fmt: skip
        delta, drop, notes = np.asarray(offsets, np.float64), [], []
        heads = open_heads(arm, mesh_obj, delta - old)
    drop += [previous] if previous and previous not in drop else []
    name = str(meta.get("name") or Path(identity_file).stem)
    if name in keys.key_blocks and name not in drop:
        name = f"{name} identity"
    return IdentityPlan(name, basis + delta, drop, heads, str(identity_file), [float(c) for c in coeffs], notes)


def flame_delta(keys, basis: np.ndarray, coeffs: np.ndarray, offsets, where) -> tuple[np.ndarray, list[str]]:
    """A FLAME identity's offsets (V, 3) from the rig's ``Shape000..`` keys (else the file's offsets) and the
    identity keys the bake removes."""
    basis_keys = sorted(kb.name for kb in keys.key_blocks if SHAPE_KEY.match(kb.name) and kb.name != "Shape")
    drop = basis_keys + (["Shape"] if "Shape" in keys.key_blocks else [])
    if basis_keys:
        n = min(len(basis_keys), len(coeffs))
        dirs = np.stack([key_coords(keys.key_blocks[k]) - basis for k in basis_keys[:n]], -1)  # (V, 3, n)
        return dirs @ coeffs[:n], drop
    if offsets is not None:
        return np.asarray(offsets, np.float64), drop
    raise EmocaError("config_invalid", f"{where}: the rig has no identity basis keys (Shape000..) and the identity "
                     "file no offsets for its vertices", "Import the rig without a baked identity, or make the "
                     "likeness with the rig's FLAME model (--flame).")  # fmt: skip


def flame_heads(arm, coeffs: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    """FLAME's joints for the identity: the template's joints plus joint_shapedirs @ coefficients."""
    info = rig_info(arm)
    stored = info.get("joint_shapedirs")
    if not stored:
        return {}, [f"{arm.name}: built by an older release (no joint_shapedirs): the bones stay where they are"]
    names = [b.name for b in arm.data.bones][:5]
    js = np.asarray(stored, np.float64).reshape(len(names), 3, -1)
    heads = np.array([np.asarray(arm.data.bones[n].head_local, np.float64) for n in names])
    now = np.asarray(info.get("identity_coefficients") or [], np.float64)
    template = heads - js[:, :, : len(now)] @ now[: js.shape[2]]
    n = min(js.shape[2], len(coeffs))
    return {name: template[j] + js[j, :, :n] @ coeffs[:n] for j, name in enumerate(names)}, []


def group_weights(mesh_obj) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each vertex group's (vertex indices, weights)."""
    out: dict[str, tuple[list[int], list[float]]] = {vg.name: ([], []) for vg in mesh_obj.vertex_groups}
    names = {vg.index: vg.name for vg in mesh_obj.vertex_groups}
    for v in mesh_obj.data.vertices:
        for g in v.groups:
            idx, w = out[names[g.group]]
            idx.append(v.index)
            w.append(g.weight)
    return {k: (np.asarray(i, np.int64), np.asarray(w, np.float64)) for k, (i, w) in out.items()}


def open_heads(arm, mesh_obj, change: np.ndarray) -> dict[str, np.ndarray]:
    """An open rig's bones moved by the weighted mean change of identity offsets over their vertex groups."""
    heads = {}
    for name, (idx, w) in group_weights(mesh_obj).items():
        if name in arm.data.bones and len(idx) and w.sum() > 0:
            shift = (change[idx] * w[:, None]).sum(0) / w.sum()
            heads[name] = np.asarray(arm.data.bones[name].head_local, np.float64) + shift
    return heads


def bake_identity(arm, plan: IdentityPlan, context=None) -> str:
    """Replace the rig's identity keys with the plan's one key at 1.0, move the bones, record it; the key's name."""
    mesh_obj = rig_mesh(arm)
    blocks = mesh_obj.data.shape_keys.key_blocks
    for name in plan.drop:
        if name in blocks:
            mesh_obj.shape_key_remove(blocks[name])
    kb = mesh_obj.shape_key_add(name=plan.name, from_mix=False)
    kb.data.foreach_set("co", np.ascontiguousarray(plan.coords, np.float32).ravel())
    kb.slider_min, kb.slider_max, kb.value = 0.0, 1.0, 1.0
    move_heads(arm, plan.heads, context)
    info = rig_info(arm)
    info.update(identity_name=kb.name, identity_file=plan.file, identity_coefficients=plan.coefficients)
    set_rig_info(arm, **info)
    mesh_obj.data.update()
    return kb.name


def move_heads(arm, heads: dict[str, np.ndarray], context=None) -> None:
    """Move bones' rest heads (and tails with them) to ``heads`` (rig space), in edit mode."""
    if not heads:
        return
    context = context or bpy.context
    view_layer = context.view_layer if context.view_layer else bpy.context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = arm
    with bpy.context.temp_override(active_object=arm, object=arm, view_layer=view_layer):
        bpy.ops.object.mode_set(mode="EDIT")
        for name, head in heads.items():
            eb = arm.data.edit_bones[name]
            step = np.asarray(head, np.float64) - np.asarray(eb.head, np.float64)
            eb.tail = (np.asarray(eb.tail, np.float64) + step).tolist()
            eb.head = np.asarray(head, np.float64).tolist()
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = prev_active


def identity_on_apply(arm, take: Take, choice: str) -> IdentityPlan | None:
    """The bake an applied take asks for (apply option ``identity``): its likeness identity, unless the choice is
    "keep", or "auto" and the rig has an identity already (several takes of one performer share it)."""
    if choice == "keep" or take.path is None:
        return None
    side = read_likeness(take.path)
    part = side.get("identity") if side else None
    if not isinstance(part, dict) or not part.get("present"):
        return None
    if choice == "auto" and current_identity(arm) is not None:
        return None
    return plan_identity(arm, part["file_path"])


# ---------------------------------------------------------------------------------------------- materials
def likeness_material(mesh_obj) -> bpy.types.Material:
    """The FLAME rig's likeness material ``<mesh>_likeness``, made when missing and put in the mesh's first
    material slot (every face of the rig uses it)."""
    name = LIKENESS_MATERIAL.format(mesh_obj.name)
    mat = mesh_obj.data.materials.get(name)
    if mat is None:
        mat = bpy.data.materials.new(name)
        if len(mesh_obj.data.materials):
            mesh_obj.data.materials[0] = mat
        else:
            mesh_obj.data.materials.append(mat)
    if mat.node_tree is None:  # 4.x: a new material has no nodes until asked (5.0 always has them)
        mat.use_nodes = True
    return mat


def _node(tree, name: str, kind: str, location: tuple[float, float]):
    node = tree.nodes.get(name)
    if node is None:
        node = tree.nodes.new(kind)
        node.name = node.label = name
        node.location = location
    return node


def _output(tree):
    return next(n for n in tree.nodes if n.type == "OUTPUT_MATERIAL")


def _bsdf(tree):
    node = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if node is None:
        node = tree.nodes.new("ShaderNodeBsdfPrincipled")
        tree.links.new(node.outputs[0], _output(tree).inputs["Surface"])
    return node


def uv_nodes(tree, uv_range: list[list[float]], y: float):
    """UV Map -> Mapping from ``uv_range`` ([[u0, u1], [v0, v1]]) onto the image's 0..1; the Mapping node."""
    (u0, u1), (v0, v1) = uv_range
    uv = _node(tree, NODE_UV + f" {y:g}", "ShaderNodeUVMap", (-900, y))
    uv.uv_map = UV_MAP
    mapping = _node(tree, NODE_RANGE + f" {y:g}", "ShaderNodeMapping", (-700, y))
    mapping.vector_type = "POINT"
    mapping.inputs["Scale"].default_value = (1 / (u1 - u0), 1 / (v1 - v0), 1.0)
    mapping.inputs["Location"].default_value = (-u0 / (u1 - u0), -v0 / (v1 - v0), 0.0)
    tree.links.new(uv.outputs["UV"], mapping.inputs["Vector"])
    return mapping


def load_image(path: str, colorspace: str) -> bpy.types.Image:
    """An image file (reloaded when already loaded: a likeness made again replaces its files)."""
    image = bpy.data.images.load(path, check_existing=True)
    image.reload()
    image.colorspace_settings.name = colorspace
    return image


def texture_materials(arm, part: dict[str, Any], take_path) -> list[bpy.types.Material]:
    """The materials the texture goes into, checked against the rig (its kind and UVs)."""
    mesh_obj, kind = rig_mesh(arm), rig_kind(arm)
    head = str(part.get("head", ""))
    if HEADS.get(head) != kind:
        raise EmocaError("config_invalid", f"{take_path}: the texture was made for the {head or '?'} head; rig "
                         f"{arm.name!r} is a {kind} rig", "Texture a rig of the take's head.")  # fmt: skip
    if UV_MAP not in mesh_obj.data.uv_layers:
        raise EmocaError("config_invalid", f"{mesh_obj.name}: the rig has no UVs ({UV_MAP}) for a texture",
                         "Export the FLAME rig with FLAME's head_template.obj beside generic_model.pkl.")  # fmt: skip
    if kind == "flame":
        return [likeness_material(mesh_obj)]
    mats = [m for m in mesh_obj.data.materials if m is not None and m.name.endswith(tuple("_" + g for g in
            TEXTURED_GROUPS))]  # fmt: skip
    if not mats:
        raise EmocaError("config_invalid", f"{mesh_obj.name}: no skin material ({', '.join(TEXTURED_GROUPS)})",
                         "Import the open rig again (Import Rig).")  # fmt: skip
    return mats


def set_texture(arm, part: dict[str, Any], take_path) -> list[str]:
    """The albedo as the base colour of the rig's textured materials; their names."""
    mats = texture_materials(arm, part, take_path)
    image = load_image(part["albedo_path"], "sRGB")
    for mat in mats:
        tree = mat.node_tree
        if tree is None:
            mat.use_nodes = True
            tree = mat.node_tree
        mapping = uv_nodes(tree, part["uv_range"], 300)
        tex = _node(tree, NODE_ALBEDO, "ShaderNodeTexImage", (-450, 300))
        tex.image, tex.interpolation, tex.extension = image, "Linear", "EXTEND"
        tree.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
        tree.links.new(tex.outputs["Color"], _bsdf(tree).inputs["Base Color"])
    return [m.name for m in mats]


# ---------------------------------------------------------------------------------------------- detail
@dataclass(frozen=True)
class Mapping:
    """How the take lies on the scene: ``mode`` (resample | footage_rate), ``base`` (the scene frame of its first
    row) and the scene rate (resample)."""

    mode: str
    base: float
    fps: float


def take_mapping(arm, take: Take, scene, options: ApplyOptions | None = None) -> Mapping:
    """The frame mapping of ``take`` on ``arm``: the one it was applied with (its Action's ``emoca_*``), else the
    mapping ``options`` (default: the defaults) would give it now."""
    anim = arm.animation_data
    action = anim.action if anim is not None else None
    fps = scene.render.fps / scene.render.fps_base
    if action is not None and take.path is not None and _same(action.get("emoca_take"), take.path):
        return Mapping(str(action["emoca_frame_mapping"]), float(action["emoca_start_frame"]), fps)
    opts = options or ApplyOptions()
    base = float((1 if opts.start == "one" else scene.frame_current) + opts.offset)
    return Mapping(opts.frame_mapping, base, fps)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a) and Path(str(a)).resolve() == Path(str(b)).resolve()
    except OSError:
        return False


def detail_schedule(frames: np.ndarray, times: np.ndarray, mapping: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(scene frames (K,) int, the detail file number shown on each (K,) int): every scene frame the take covers,
    showing the row nearest it (ties: the earlier) under the mapping of apply.py (footage_rate: row i on
    base + frame[i] - frame[0]; resample: on base + (time[i] - time[0]) * fps)."""
    frames = np.asarray(frames, np.int64)
    if mapping.mode == "footage_rate":
        pos = mapping.base + (frames - frames[0]).astype(np.float64)
    else:
        pos = mapping.base + (np.asarray(times, np.float64) - float(times[0])) * mapping.fps
    scene = np.arange(math.ceil(pos[0] - 1e-6), math.floor(pos[-1] + 1e-6) + 1, dtype=np.int64)
    after = np.clip(np.searchsorted(pos, scene - 1e-6), 0, len(pos) - 1)
    before = np.maximum(after - 1, 0)
    nearest = np.where(np.abs(pos[before] - scene) <= np.abs(pos[after] - scene), before, after)
    return scene, frames[nearest]


def image_offsets(scene: np.ndarray, files: np.ndarray) -> np.ndarray:
    """The image user's ``frame_offset`` per scene frame that shows ``files`` (frame_start = scene[0])."""
    return files - (scene - scene[0] + 1)


def set_detail(arm, part: dict[str, Any], take: Take, mapping: Mapping, show: bool = False) -> str:
    """The detail sequence on the FLAME rig's likeness material, frame-synchronised; the image's name."""
    mesh_obj = rig_mesh(arm)
    if rig_kind(arm) != "flame":
        raise EmocaError("config_invalid", f"{arm.name}: detail maps are in FLAME's UV layout; this is an open rig",
                         "Use a FLAME rig (EMOCA takes).")  # fmt: skip
    if UV_MAP not in mesh_obj.data.uv_layers:
        raise EmocaError("config_invalid", f"{mesh_obj.name}: the rig has no UVs ({UV_MAP}) for the detail maps",
                         "Export the FLAME rig with FLAME's head_template.obj beside generic_model.pkl.")  # fmt: skip
    rows = np.asarray(part["frames"], np.int64)
    if len(rows) != take.n_frames or not np.array_equal(rows, take["frame"]):
        raise EmocaError("input_corrupt", f"{take.path}: the detail maps' frames are not the take's frames",
                         LIKENESS_HINT)  # fmt: skip
    scene, files = detail_schedule(take["frame"], take["time"], mapping)
    mat = likeness_material(mesh_obj)
    tree = mat.node_tree
    mapping_node = uv_nodes(tree, [[0.0, 1.0], [0.0, 1.0]], -300)
    image = load_image(part["pattern_path"] % int(rows[0]), "Non-Color")
    image.source = "SEQUENCE"
    tex = _node(tree, NODE_DETAIL, "ShaderNodeTexImage", (-450, -300))
    tex.image, tex.interpolation, tex.extension = image, "Linear", "EXTEND"
    tree.links.new(mapping_node.outputs["Vector"], tex.inputs["Vector"])
    sync_sequence(tree, tex, scene, files)
    disp = _node(tree, NODE_DISPLACEMENT, "ShaderNodeDisplacement", (-200, -300))
    disp.inputs["Midlevel"].default_value = float(part["midlevel"])
    disp.inputs["Scale"].default_value = float(part["scale"])
    disp.space = "OBJECT"
    tree.links.new(tex.outputs["Color"], disp.inputs["Height"])
    mat.displacement_method = "BUMP"
    mesh_obj[DETAIL_PROP] = bool(show)
    show_detail(mesh_obj, bool(show))
    return image.name


def sync_sequence(tree, tex, scene: np.ndarray, files: np.ndarray) -> None:
    """Set the image user so scene frame ``scene[k]`` shows file ``files[k]``: a fixed offset, else one key per
    scene frame (constant interpolation)."""
    user = tex.image_user
    user.frame_start, user.frame_duration = int(scene[0]), int(len(scene))
    user.use_auto_refresh, user.use_cyclic = True, False
    offsets = image_offsets(scene, files)
    path = f'nodes["{tex.name}"].image_user.frame_offset'
    action = tree.animation_data.action if tree.animation_data is not None else None
    if action is not None:  # a likeness used again: the new take's schedule replaces the old one
        bag = animation.fcurves_for(action, tree)
        old = bag.find(path)
        if old is not None:
            bag.fcurves.remove(old)
    if np.all(offsets == offsets[0]):
        user.frame_offset = int(offsets[0])
        return
    action = animation.ensure_action(tree, f"EMOCA_detail_{tree.name}", action)
    animation.write_channels(action, tree, {path: (scene.astype(np.float64), offsets.astype(np.float64))}, "Detail",
                             interpolation="CONSTANT")  # fmt: skip


def show_detail(mesh_obj, on: bool) -> None:
    """Link (on) or unlink the detail's Displacement into the likeness material's output."""
    mat = mesh_obj.data.materials.get(LIKENESS_MATERIAL.format(mesh_obj.name))
    tree = mat.node_tree if mat is not None else None
    disp = tree.nodes.get(NODE_DISPLACEMENT) if tree is not None else None
    if tree is None or disp is None:
        return
    socket = _output(tree).inputs["Displacement"]
    for link in list(socket.links):
        tree.links.remove(link)
    if on:
        tree.links.new(disp.outputs["Displacement"], socket)


def has_detail(mesh_obj) -> bool:
    """Whether the rig mesh's likeness material holds detail maps (what the Detail checkbox switches)."""
    mat = mesh_obj.data.materials.get(LIKENESS_MATERIAL.format(mesh_obj.name))
    return mat is not None and mat.node_tree is not None and NODE_DISPLACEMENT in mat.node_tree.nodes


def detail_update(self, context) -> None:
    """The ``emoca_detail`` checkbox's update: show or hide the detail."""
    show_detail(self, bool(self.emoca_detail))


# ---------------------------------------------------------------------------------------------- all of it
@dataclass
class LikenessResult:
    """What :func:`use_likeness` changed: the identity key, the textured materials, the detail image."""

    rig: bpy.types.Object
    identity_key: str | None = None
    materials: list[str] = field(default_factory=list)
    detail_image: str | None = None
    sidecar: Path | None = None
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def use_likeness(
    rig,
    take_path: str | os.PathLike,
    identity: bool = True,
    texture: bool = True,
    detail: bool = False,
    identity_from: str | os.PathLike | None = None,
    show_detail: bool = False,
    scene=None,
    context=None,
    options: ApplyOptions | None = None,
) -> LikenessResult:
    """Put a take's likeness (its sidecar's files) on ``rig``: the identity key (from ``identity_from``'s
    likeness, another take of the performer, when given), the texture, the detail material (``show_detail``:
    its checkbox on). Everything is read and checked before the rig is changed."""
    from .takes import read_take_file

    arm = _rig(rig)
    scene = scene or bpy.context.scene
    take = read_take_file(take_path)
    if take.kind != rig_kind(arm):
        raise EmocaError("config_invalid", f"{take_path}: a {take.kind} take's likeness does not fit the "
                         f"{rig_kind(arm)} rig {arm.name!r}", "Use a rig of the take's kind.")  # fmt: skip
    side = read_sidecar(take_path)
    plan = None
    if identity:
        source = identity_from or take_path
        part = section(side if identity_from is None else read_sidecar(source), "identity", source)
        plan = plan_identity(arm, part["file_path"])
    tex = section(side, "texture", take_path) if texture else None
    if tex is not None:
        texture_materials(arm, tex, take_path)
    det = section(side, "detail", take_path) if detail else None
    result = LikenessResult(arm, sidecar=likeness_path(take_path))
    if plan is not None:
        result.identity_key = bake_identity(arm, plan, context)
        result.notes += plan.notes
    if tex is not None:
        result.materials = set_texture(arm, tex, take_path)
    if det is not None:
        result.detail_image = set_detail(arm, det, take, take_mapping(arm, take, scene, options), show_detail)
    return result


# ---------------------------------------------------------------------------------------------- the backend job
class LikenessJob(BackendJob):
    """The backend's ``likeness`` request as a state machine (the Likeness operator's modal loop steps it):
    ``done`` sets ``result`` (the result event: ``sidecar``, ``files``, the sections)."""

    def __init__(self, proc, fields: dict[str, Any]):
        super().__init__(proc)
        self.fields = fields
        self.result: dict[str, Any] = {}

    def start(self) -> None:
        self.req_id = self.proc.request("likeness", **self.fields)
        self.state = "running"

    def _handle(self, ev: dict) -> None:
        etype, eid = ev.get("type"), ev.get("id")
        if etype == "progress" and eid == self.req_id:
            total = max(int(ev.get("total") or 0), 1)
            self.progress = min(float(ev.get("done") or 0) / total, 1.0)
            self.stage = str(ev.get("stage", ""))
        elif etype == "result" and eid == self.req_id:
            self.result, self.progress, self.state = dict(ev), 1.0, "done"


def request_fields(take_path: str | os.PathLike, video: str | os.PathLike | None, identity: bool, texture: bool,
                   detail: bool, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The ``likeness`` request's fields (docs/formats.md); ``video`` defaults to the take's footage; ``extra``:
    flame, model, device, texels, frames, focal, delight, identity_from, output (None: left out)."""
    from .takes import read_take_file

    if not (identity or texture or detail):
        raise EmocaError("config_invalid", "nothing to make: ask for the identity, the texture and/or the detail")
    take = read_take_file(take_path)
    if texture and video is None:
        video = take.meta.get("source", {}).get("path") or None
    if texture and (video is None or not Path(video).is_file()):
        raise EmocaError("input_missing", f"the texture needs the take's footage; {video or 'none'} is not a file",
                         "Give the footage the take was captured from.")  # fmt: skip
    fields: dict[str, Any] = {"take": str(Path(take_path).resolve()), "identity": identity, "texture": texture,
                              "detail": detail}  # fmt: skip
    if video is not None and texture:
        fields["video"] = str(Path(video).resolve())
    for key, value in extra.items():
        if value is not None:
            fields[key] = [str(v) for v in value] if key == "identity_from" else value
    return fields
