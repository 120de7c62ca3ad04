"""The one writer of retargeted keys: shape-key curves and bone rotations on any character, validated first.

:func:`write_key_curves` is what every retarget path writes through (name-based retargeting in :mod:`.run`, the
landmark-driven solve): ``{key name: values (K,)}`` on the target mesh's shape keys and ``{bone name: quaternions
(K, 4)}`` on its armature's pose bones, at scene frames (K,). Everything is checked before the scene is touched
(:func:`plan_key_write`: the object is an editable mesh with shape keys, every key and bone exists, every value is
finite and has K rows, frames increase); then the keys are written in bulk (:mod:`..animation`) and, if writing
fails half-way, every Action created or assigned is put back (:func:`roll_back`). Called from an operator with
``UNDO``, the whole write is one undo step.

Where keys go: the mesh's shape-key datablock (Key) gets ``key_blocks["NAME"].value``; the armature object gets
``pose.bones["NAME"].rotation_*`` in each bone's own rotation mode (quaternion, Euler in its order, axis-angle).
On 4.4+ both are slots of ONE Action; on 4.2/4.3 each ID has its own (``<name>`` for the armature, ``<name>_shapes``
for the Key). ``action_mode``: "new" (a new Action; the previous one keeps a fake user) or "active" (the IDs'
current Actions, keys inside the replaced frame range replaced, others kept). Names are escaped in data paths, so
any key or bone name works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

from emoca_contract.errors import EmocaError

from .. import animation
from ..options import ACTION_MODE, check_choice
from .bones import ROTATION_MODES, rotation_channel

SHAPES_GROUP = "Retarget"


def find_armature(mesh_obj: bpy.types.Object, name: str = "") -> bpy.types.Object | None:
    """The armature whose bones a retarget keys: the object named ``name``, else the one deforming the mesh (an
    Armature modifier), else the mesh's armature parent; None when there is none."""
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "ARMATURE":
            raise EmocaError("config_invalid", f"no armature object named {name!r}",
                             "Pick the character's armature, or leave it empty to use the mesh's.")  # fmt: skip
        return obj
    for mod in mesh_obj.modifiers:
        if mod.type == "ARMATURE" and mod.object is not None:
            return mod.object
    parent = mesh_obj.parent
    return parent if parent is not None and parent.type == "ARMATURE" else None


def shape_keys(mesh_obj: bpy.types.Object) -> dict[str, tuple[float, float]]:
    """The mesh's shape keys other than the reference (Basis) key: name -> slider range (min, max)."""
    key = mesh_obj.data.shape_keys if mesh_obj.type == "MESH" else None
    if key is None:
        return {}
    return {kb.name: (kb.slider_min, kb.slider_max) for kb in key.key_blocks if kb != key.reference_key}


def target_mesh(target_object: Any) -> bpy.types.Object:
    """The mesh a retarget keys: ``target_object`` when it is a mesh with shape keys, else (an armature) its only
    child mesh with shape keys. config_invalid otherwise."""
    obj = target_object
    if not isinstance(obj, bpy.types.Object):
        raise EmocaError("config_invalid", f"{obj!r} is not a Blender object", "Pass the character's mesh object.")
    if obj.type == "ARMATURE":
        meshes = [c for c in obj.children if c.type == "MESH" and c.data.shape_keys is not None]
        if len(meshes) != 1:
            raise EmocaError("config_invalid", f"armature {obj.name!r} has {len(meshes)} child meshes with shape "
                             "keys", "Pick the mesh whose shape keys the take should drive.")  # fmt: skip
        obj = meshes[0]
    if obj.type != "MESH" or obj.data.shape_keys is None or len(obj.data.shape_keys.key_blocks) < 2:
        raise EmocaError("config_invalid", f"{obj.name!r} is not a mesh with shape keys",
                         "Pick the character's face mesh (the one with the expression shape keys).")  # fmt: skip
    if obj.library is not None or obj.data.library is not None or obj.data.shape_keys.library is not None:
        raise EmocaError("config_invalid", f"{obj.name!r} is linked from another file and cannot be keyed here",
                         "Make it local (Object > Relations > Make Local) or an override first.")  # fmt: skip
    return obj


@dataclass
class KeyWrite:
    """A validated write: what :func:`write_planned` writes (decided before the scene is touched)."""

    mesh: bpy.types.Object
    key: bpy.types.Key
    armature: bpy.types.Object | None
    frames: np.ndarray  # (K,)
    shape_channels: dict[str, tuple]  # data path -> (frames, values (K,))
    bone_channels: dict[str, tuple]  # data path -> (frames, values (K, C))
    bone_groups: dict[str, str]  # data path -> bone name
    action_name: str
    action_mode: str
    replace_range: tuple[float, float]
    info: dict[str, Any]


@dataclass
class WrittenActions:
    """The Actions a write keyed: the Key's (shape keys) and the armature's (bones); the same one on 4.4+."""

    key_action: bpy.types.Action | None
    armature_action: bpy.types.Action | None
    n_keys: int = 0


@dataclass
class Undo:
    """What to put back if writing fails half-way (validation comes first, so this is a last resort)."""

    created: list = field(default_factory=list)  # Actions made by the write
    assigned: list = field(default_factory=list)  # (ID, its previous Action)
    scene: list = field(default_factory=list)  # (struct, attribute, previous value): frame range, rate


def _frames(frames: Any) -> np.ndarray:
    f = np.asarray(frames, np.float64)
    if f.ndim != 1 or not len(f) or not np.isfinite(f).all() or np.any(np.diff(f) <= 0):
        raise EmocaError("config_invalid", "frames must be a non-empty, finite, strictly increasing 1-D array")
    return f


def _values(name: str, values: Any, n: int, width: int | None = None) -> np.ndarray:
    v = np.asarray(values, np.float64)
    shape = (n,) if width is None else (n, width)
    if v.shape != shape or not np.isfinite(v).all():
        raise EmocaError("config_invalid", f"{name}: values of shape {v.shape}, expected {shape} finite numbers")
    return v


def _shape_channels(mesh, curves: Mapping[str, Any], frames: np.ndarray) -> dict[str, tuple]:
    keys = shape_keys(mesh)
    missing = [k for k in curves if k not in keys]
    if missing:
        raise EmocaError("config_invalid", f"{mesh.name!r} has no shape key {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                         "Check the mapping's target keys against the character's shape keys.")  # fmt: skip
    out = {}
    for name, values in curves.items():
        out[f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'] = (frames, _values(name, values, len(frames)))
    return out


def _bone_channels(armature, bones: Mapping[str, Any], frames: np.ndarray) -> tuple[dict, dict]:
    if bones and armature is None:
        raise EmocaError("config_invalid", f"bones {sorted(bones)} to key but the character has no armature",
                         "Pick the armature, or clear the head and jaw bones.")  # fmt: skip
    channels, groups = {}, {}
    for bone, quats in bones.items():
        pose_bone = armature.pose.bones.get(bone)
        if pose_bone is None:
            raise EmocaError("config_invalid", f"armature {armature.name!r} has no bone {bone!r}",
                             "Pick the bone from the armature's bones.")  # fmt: skip
        if pose_bone.rotation_mode not in ROTATION_MODES:
            raise EmocaError("config_invalid", f"bone {bone!r}: rotation mode {pose_bone.rotation_mode!r}")
        prop, values = rotation_channel(_values(bone, quats, len(frames), 4), pose_bone.rotation_mode)
        path = f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{prop}'
        channels[path], groups[path] = (frames, values), bone
    return channels, groups


def plan_key_write(
    target_object: Any,
    frames: Any,
    curves: Mapping[str, Any],
    bones: Mapping[str, Any] | None = None,
    *,
    armature: bpy.types.Object | None = None,
    action_name: str = "EMOCA_retarget",
    action_mode: str = "new",
    replace_range: tuple[float, float] | None = None,
    info: Mapping[str, Any] | None = None,
) -> KeyWrite:
    """Check a write against the scene (which is only read) and decide it; see :func:`write_key_curves`."""
    mesh = target_mesh(target_object)
    check_choice("action_mode", action_mode, ACTION_MODE)
    f = _frames(frames)
    if not curves and not bones:
        raise EmocaError("config_invalid", "nothing to write: no key curves and no bone rotations")
    if armature is None and bones:
        armature = find_armature(mesh)
    if armature is not None and armature.library is not None:
        raise EmocaError("config_invalid", f"armature {armature.name!r} is linked from another file",
                         "Make it local or an override first.")  # fmt: skip
    bone_channels, groups = _bone_channels(armature, bones or {}, f)
    if not action_name.strip():
        raise EmocaError("config_invalid", "the Action's name is empty")
    return KeyWrite(
        mesh=mesh,
        key=mesh.data.shape_keys,
        armature=armature if bone_channels else None,
        frames=f,
        shape_channels=_shape_channels(mesh, curves, f),
        bone_channels=bone_channels,
        bone_groups=groups,
        action_name=action_name,
        action_mode=action_mode,
        replace_range=replace_range or (float(f[0]), float(f[-1])),
        info=dict(info or {}),
    )


def _action_for(id_data, name: str, mode: str, shared, undo: Undo):
    """The Action ``id_data`` is keyed into (``shared``: the one new Action of this write on 4.4+)."""
    anim = id_data.animation_data
    current = anim.action if anim is not None else None
    if mode == "active" and current is not None:
        return current, shared
    if current is not None:
        current.use_fake_user = True  # replaced, not deleted: the previous Action stays in the file
    action = shared if (animation.SLOTTED and shared is not None) else None
    if action is None:
        action = animation.new_action(name)
        undo.created.append(action)
    undo.assigned.append((id_data, current))
    animation.assign_action(id_data, action)
    return action, (action if animation.SLOTTED else shared)


def write_planned(w: KeyWrite, undo: Undo) -> WrittenActions:
    """Write a planned write (raises only on a Blender failure; the caller rolls back with ``undo``)."""
    shared = None
    key_action = arm_action = None
    n = 0
    if w.shape_channels:
        name = w.action_name if animation.SLOTTED else w.action_name + "_shapes"
        key_action, shared = _action_for(w.key, name, w.action_mode, shared, undo)
        n += animation.write_channels(key_action, w.key, w.shape_channels, SHAPES_GROUP, replace_range=w.replace_range)
    if w.bone_channels and w.armature is not None:
        arm_action, shared = _action_for(w.armature, w.action_name, w.action_mode, shared, undo)
        n += animation.write_channels(arm_action, w.armature, w.bone_channels, w.bone_groups,
                                      replace_range=w.replace_range)  # fmt: skip
    for action in {a for a in (key_action, arm_action) if a is not None}:
        for k, value in w.info.items():
            action[k] = value
    return WrittenActions(key_action=key_action, armature_action=arm_action, n_keys=n)


def roll_back(undo: Undo) -> None:
    """Put back what a failed write changed: Action assignments, new Actions, scene settings."""
    for id_data, previous in reversed(undo.assigned):
        animation.assign_action(id_data, previous)
    for action in undo.created:
        bpy.data.actions.remove(action)
    for struct, attr, value in reversed(undo.scene):
        setattr(struct, attr, value)


def write_key_curves(
    target_object: Any,
    frames: Any,
    curves: Mapping[str, Any],
    bones: Mapping[str, Any] | None = None,
    **options: Any,
) -> WrittenActions:
    """Key shape-key curves ``{name: values (K,)}`` and bone rotations ``{bone: quaternions (K, 4)}`` at scene
    ``frames`` (K,) on ``target_object`` (a mesh with shape keys, or an armature with one such child mesh).

    ``options``: ``armature`` (default: the mesh's), ``action_name``, ``action_mode`` ("new" or "active"),
    ``replace_range`` (scene frames whose old keys are replaced; default the frames' span), ``info`` (ID
    properties stored on the Actions). Everything is validated first: bad input raises EmocaError and changes
    nothing; a failure while writing is rolled back.
    """
    write = plan_key_write(target_object, frames, curves, bones, **options)
    undo = Undo()
    try:
        return write_planned(write, undo)
    except Exception:
        roll_back(undo)
        raise
