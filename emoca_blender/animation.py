"""Actions and fast keyframe writing over Blender's three animation API regimes.

* 4.2 / 4.3 (legacy): one Action per animated ID; F-curves in ``action.fcurves``.
* 4.4 / 4.5: slotted Actions: ``action -> layer -> keyframe strip -> channelbag(slot)``; ``action.fcurves`` is a
  proxy for the first slot only, so we never use it.
* 5.0+: ``Action.fcurves`` is gone; channelbags only.

An ID animates only when its ``animation_data.action_slot`` is set on 4.4+, so :func:`assign_action` always
assigns one. Keys are written in bulk (``keyframe_points.add`` + ``foreach_set``), never with ``keyframe_insert``.
"""

from __future__ import annotations

from collections.abc import Mapping

import bpy
import numpy as np

SLOTTED: bool = bpy.app.version >= (4, 4, 0)

_INTERP = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items
_HANDLE = bpy.types.Keyframe.bl_rna.properties["handle_left_type"].enum_items


def new_action(name: str) -> bpy.types.Action:
    """A new Action kept with a fake user (a take survives even when nothing uses it)."""
    action = bpy.data.actions.new(name)
    action.use_fake_user = True
    return action


def ensure_slot(action: bpy.types.Action, id_data: bpy.types.ID):
    """The slot of ``action`` for ``id_data`` (4.4+), created when missing; None on the legacy API."""
    if not SLOTTED:
        return None
    for slot in action.slots:
        if slot.target_id_type == id_data.id_type and slot.name_display == id_data.name:
            return slot
    return action.slots.new(id_type=id_data.id_type, name=id_data.name)


def assign_action(id_data: bpy.types.ID, action: bpy.types.Action | None):
    """Make ``action`` the active action of ``id_data`` and (4.4+) assign its slot; return the slot."""
    anim = id_data.animation_data or id_data.animation_data_create()
    anim.action = action
    if action is None or not SLOTTED:
        return None
    slot = ensure_slot(action, id_data)
    if anim.action_slot != slot:
        anim.action_slot = slot
    return slot


def ensure_action(id_data: bpy.types.ID, name: str, action: bpy.types.Action | None = None) -> bpy.types.Action:
    """The action that animates ``id_data``: ``action`` if given (4.4+: shared, one slot per ID), else a new one.

    On the legacy API an Action belongs to one ID type, so sharing one between an Object and its shape-key Key
    is impossible there: callers pass ``action`` only when :data:`SLOTTED`.
    """
    if action is None:
        action = new_action(name)
    assign_action(id_data, action)
    return action


class Channels:
    """The F-curves of one ID inside one Action (legacy ``action.fcurves`` or a slot's channelbag)."""

    def __init__(self, action: bpy.types.Action, id_data: bpy.types.ID):
        self.action = action
        if SLOTTED:
            slot = ensure_slot(action, id_data)
            layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
            strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
            self.bag = strip.channelbag(slot, ensure=True)
            self.fcurves = self.bag.fcurves
        else:
            self.bag = action
            self.fcurves = action.fcurves

    def find(self, data_path: str, index: int = 0):
        return self.fcurves.find(data_path, index=index)

    def ensure(self, data_path: str, index: int = 0, group: str | None = None):
        fc = self.fcurves.find(data_path, index=index)
        if fc is not None:
            return fc
        if not SLOTTED:
            return self.fcurves.new(data_path, index=index, action_group=group or "")
        try:  # 5.0: group_name argument
            return self.fcurves.new(data_path, index=index, group_name=group or "")
        except TypeError:  # 4.4/4.5: create, then group by hand
            fc = self.fcurves.new(data_path, index=index)
            if group:
                grp = self.bag.groups.get(group) or self.bag.groups.new(group)
                fc.group = grp
            return fc


def fcurves_for(action: bpy.types.Action, id_data: bpy.types.ID) -> Channels:
    """The F-curve collection of ``id_data`` in ``action`` (works on 4.2 to 5.x)."""
    return Channels(action, id_data)


def _get(kp, attr: str, n: int, width: int, dtype) -> np.ndarray:
    buf = np.empty(n * width, dtype=dtype)
    kp.foreach_get(attr, buf)
    return buf.reshape(n, width) if width > 1 else buf


def write_keys(
    fcurve,
    frames: np.ndarray,
    values: np.ndarray,
    interpolation: str = "LINEAR",
    replace_range: tuple[float, float] | None = None,
) -> None:
    """Write keys (frames (K,), values (K,)) into ``fcurve`` in bulk.

    Existing keys inside ``replace_range`` (inclusive, default: [frames.min(), frames.max()]) are removed;
    keys outside it are kept with their interpolation and handles.
    """
    frames = np.asarray(frames, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    kp = fcurve.keyframe_points
    n_old = len(kp)
    if n_old:
        lo, hi = replace_range if replace_range is not None else (frames.min(), frames.max())
        co = _get(kp, "co", n_old, 2, np.float32)
        keep = (co[:, 0] < lo - 1e-4) | (co[:, 0] > hi + 1e-4)
        kept: dict[str, np.ndarray] = {
            "co": co[keep],
            "interpolation": _get(kp, "interpolation", n_old, 1, np.int32)[keep],
            "handle_left_type": _get(kp, "handle_left_type", n_old, 1, np.int32)[keep],
            "handle_right_type": _get(kp, "handle_right_type", n_old, 1, np.int32)[keep],
            "handle_left": _get(kp, "handle_left", n_old, 2, np.float32)[keep],
            "handle_right": _get(kp, "handle_right", n_old, 2, np.float32)[keep],
        }
        kp.clear()
    else:
        kept = {}
    n_new = len(frames)
    n_kept = len(kept["co"]) if kept else 0
    kp.add(n_new + n_kept)
    co = np.empty((n_new + n_kept, 2), np.float32)
    co[:n_new, 0] = frames
    co[:n_new, 1] = values
    # a plain list is Blender's fast path for enum properties (a numpy int buffer is converted item by item)
    interp = [_INTERP[interpolation].value] * (n_new + n_kept)
    if n_kept:
        co[n_new:] = kept["co"]
        interp[n_new:] = kept["interpolation"].tolist()
    kp.foreach_set("co", co.ravel())
    kp.foreach_set("interpolation", interp)
    if n_kept:
        auto = np.full(n_new + n_kept, _HANDLE["AUTO_CLAMPED"].value, np.int32)
        for attr in ("handle_left_type", "handle_right_type"):
            buf = auto.copy()
            buf[n_new:] = kept[attr]
            kp.foreach_set(attr, buf)
        for attr in ("handle_left", "handle_right"):
            buf = np.repeat(co[:, :1], 2, axis=1).astype(np.float32)
            buf[:, 1] = co[:, 1]
            buf[n_new:] = kept[attr]
            kp.foreach_set(attr, buf.ravel())
    if n_kept or interpolation != "LINEAR" or np.any(np.diff(frames) <= 0):
        fcurve.update()  # sorts by frame, removes duplicates, recomputes auto handles
    # else: sorted, unique, LINEAR keys: handles do not shape the curve, so the (costly) update is skipped, as
    # Blender's own anim_utils does; Blender recomputes handles when someone edits the keys.


ChannelSpec = tuple  # (frames (K,), values (K,) or (K, C)[, first array_index])


def write_channels(
    action: bpy.types.Action,
    id_data: bpy.types.ID,
    channels: Mapping[str, ChannelSpec],
    group: str | Mapping[str, str] | None = None,
    interpolation: str = "LINEAR",
    replace_range: tuple[float, float] | None = None,
) -> int:
    """Write many channels of ``id_data`` into ``action``; return the number of keys written.

    ``channels`` maps a data path to ``(frames, values[, array_index])``: values (K,) write one F-curve at
    ``array_index`` (default 0); values (K, C) write C F-curves at indices array_index..array_index+C-1
    (e.g. a quaternion). ``group`` names the F-curve group (one name, or data path -> name).
    """
    bag = fcurves_for(action, id_data)
    total = 0
    for path, spec in channels.items():
        frames, values = spec[0], np.asarray(spec[1])
        first = int(spec[2]) if len(spec) > 2 and spec[2] is not None else 0
        cols = values.reshape(len(values), -1)
        grp = group.get(path) if isinstance(group, Mapping) else group
        for c in range(cols.shape[1]):
            fc = bag.ensure(path, first + c, grp)
            write_keys(fc, frames, cols[:, c], interpolation, replace_range)
            total += len(frames)
    return total


def push_down(id_data: bpy.types.ID) -> None:
    """Move the active action of ``id_data`` onto a new NLA track (Blender's "Push Down")."""
    anim = id_data.animation_data
    if anim is None or anim.action is None:
        return
    action = anim.action
    slot = anim.action_slot if SLOTTED else None
    track = anim.nla_tracks.new()
    track.name = action.name
    start = int(action.frame_range[0])
    strip = track.strips.new(action.name, start, action)
    if SLOTTED and slot is not None:
        strip.action_slot = slot
    anim.action = None
