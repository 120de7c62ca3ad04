"""The Retarget panel's settings (``Scene.emoca_retarget``, saved with the .blend, undoable) and their mapping.

The settings hold the character (a mesh with shape keys), the take, the editable mapping (one
:class:`RetargetEntryProps` per entry: source channel -> target key, gain, offset, clamp), the bone settings
(armature, head and jaw bones, axes) and every retarget option (generated from
:data:`~.options.RETARGET_OPTIONS`), plus the last report. :func:`mapping_from_settings` and
:func:`settings_from_mapping` convert between them and a :class:`~.mapping.Mapping` (what presets store).

Properties are declared as Blender does (annotations holding ``bpy.props`` calls, kept as strings by ``from
__future__ import annotations`` and evaluated by Blender at each registration: a pointer property with a poll
function made once at import and registered crashes Blender 4.2 when Python exits). Such annotations are no types
the type checker can read, hence the module's ``valid-type`` setting.
"""

# mypy: disable-error-code="valid-type"
from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .mapping import BoneSettings, Entry, Mapping
from .options import RETARGET_OPTIONS

AXIS_ITEMS = [(a, a, f"The bone's {a.lstrip('-')} axis" + (", negative" if a.startswith("-") else ""))
              for a in ("X", "Y", "Z", "-X", "-Y", "-Z")]  # fmt: skip
AXIS_IDS = {item[0] for item in AXIS_ITEMS}
# Paths the user may make relative to the .blend (//): Blender 5.0 asks such properties to say so (and warns
# otherwise); 4.2 has no such flag.
RELATIVE = {"PATH_SUPPORTS_BLEND_RELATIVE"} if "is_path_supports_blend_relative" in \
    bpy.types.Property.bl_rna.properties else set()  # fmt: skip


def option_properties() -> dict[str, Any]:
    """One Blender property per retarget option, named by the option's ``attr``."""
    props: dict[str, Any] = {}
    for opt in RETARGET_OPTIONS:
        common = {"name": opt.label, "description": opt.description, "default": opt.default}
        if opt.items:
            props[opt.attr] = EnumProperty(items=list(opt.items), **common)
        elif isinstance(opt.default, bool):
            props[opt.attr] = BoolProperty(**common)
        elif isinstance(opt.default, int):
            props[opt.attr] = IntProperty(min=0 if opt.name == "csv_fps" else -(2**30), **common)
        elif isinstance(opt.default, float):
            props[opt.attr] = FloatProperty(min=0.0, soft_max=1.0, **common)
        else:
            props[opt.attr] = StringProperty(**common)
    return props


def _has_shape_keys(self, obj) -> bool:
    return obj.type == "MESH" and obj.data.shape_keys is not None


def _is_armature(self, obj) -> bool:
    return obj.type == "ARMATURE"


def with_options(cls: type) -> type:
    """Class decorator: declare every retarget option as a Blender property of ``cls`` (before it registers)."""
    cls.__annotations__ = {**option_properties(), **cls.__dict__.get("__annotations__", {})}
    return cls


class RetargetEntryProps(bpy.types.PropertyGroup):
    """One mapping entry: a source channel driving one target shape key."""

    source: StringProperty(name="Channel", description="The take's channel (an ARKit name such as jawOpen)")
    target: StringProperty(name="Shape Key", description="The character's shape key this channel drives")
    gain: FloatProperty(name="Gain", default=1.0, description="The channel is multiplied by this")
    offset: FloatProperty(name="Offset", default=0.0, description="Added after the gain")
    clamp_min: FloatProperty(name="Min", default=0.0, description="The entry's value is clamped to at least this")
    clamp_max: FloatProperty(name="Max", default=1.0, description="The entry's value is clamped to at most this")


@with_options
class RetargetSettings(bpy.types.PropertyGroup):
    """The Retarget panel: character, take, mapping, bones, options and the last report."""

    target: PointerProperty(
        name="Character",
        type=bpy.types.Object,
        poll=_has_shape_keys,
        description="The mesh whose shape keys the take drives",
    )
    take: StringProperty(
        name="Take",
        subtype="FILE_PATH",
        options=RELATIVE,
        description="A take (.npz) or a Live Link Face CSV (.csv) to retarget",
    )
    preset: StringProperty(
        name="Preset",
        subtype="FILE_PATH",
        options=RELATIVE,
        description="The mapping preset (.json) last loaded or saved",
    )
    mapping_name: StringProperty(name="Mapping Name", description="Saved in presets: what the mapping is for")
    entries: CollectionProperty(type=RetargetEntryProps, description="The mapping: channel -> shape key")
    active_entry: IntProperty(name="Active Entry", default=0, min=0, description="The entry shown below")
    armature: PointerProperty(
        name="Armature",
        type=bpy.types.Object,
        poll=_is_armature,
        description="The armature with the head and jaw bones (empty: the mesh's)",
    )
    head_bone: StringProperty(name="Head Bone", description="Turned by the take's head rotation (empty: none)")
    head_axes: StringProperty(
        name="Head Axes", default="X,Y,Z", description="The bone axes the take's X (left), Y (up), Z (forward) become"
    )
    jaw_bone: StringProperty(name="Jaw Bone", description="Turned by the take's jaw or jawOpen (empty: none)")
    jaw_axes: StringProperty(
        name="Jaw Axes", default="X,Y,Z", description="FLAME takes: the bone axes the jaw rotation's X, Y, Z become"
    )
    jaw_open_axis: EnumProperty(
        name="Jaw Open Axis",
        items=AXIS_ITEMS,
        default="X",
        description="Takes without a jaw rotation: the bone axis jawOpen turns about",
    )
    jaw_open_gain: FloatProperty(
        name="Jaw Open Angle", default=0.35, subtype="ANGLE", description="The jaw's turn at jawOpen = 1"
    )
    report: StringProperty(name="Report", description="What the last match or retarget found")  # fmt: skip


def mapping_from_settings(settings) -> Mapping:
    """The panel's mapping as a :class:`~.mapping.Mapping` (entries without a channel or key are left out)."""
    entries = tuple(
        Entry(e.source.strip(), e.target, e.gain, e.offset, e.clamp_min, e.clamp_max)
        for e in settings.entries
        if e.source.strip() and e.target
    )
    bones = BoneSettings(
        armature=settings.armature.name if settings.armature is not None else "",
        head_bone=settings.head_bone,
        head_axes=settings.head_axes,
        jaw_bone=settings.jaw_bone,
        jaw_axes=settings.jaw_axes,
        jaw_open_axis=settings.jaw_open_axis,
        jaw_open_gain=float(settings.jaw_open_gain),
    )
    return Mapping(entries=entries, bones=bones, name=settings.mapping_name)


def settings_from_mapping(settings, mapping: Mapping, bones: bool = True) -> None:
    """Show ``mapping`` in the panel: its entries replace the panel's; with ``bones``, its bone settings too."""
    settings.entries.clear()
    for entry in mapping.entries:
        item = settings.entries.add()
        item.source, item.target, item.gain, item.offset = entry.source, entry.target, entry.gain, entry.offset
        item.clamp_min, item.clamp_max = entry.clamp_min, entry.clamp_max
    settings.active_entry = 0
    settings.mapping_name = mapping.name
    if not bones:
        return
    b = mapping.bones
    arm = bpy.data.objects.get(b.armature) if b.armature else None
    settings.armature = arm if arm is not None and arm.type == "ARMATURE" else None
    settings.head_bone, settings.head_axes, settings.jaw_bone, settings.jaw_axes = (
        b.head_bone, b.head_axes, b.jaw_bone, b.jaw_axes)  # fmt: skip
    axis = b.jaw_open_axis.strip().upper().lstrip("+")
    settings.jaw_open_axis = axis if axis in AXIS_IDS else "X"
    settings.jaw_open_gain = b.jaw_open_gain


CLASSES = (RetargetEntryProps, RetargetSettings)


def register_properties() -> None:
    bpy.types.Scene.emoca_retarget = PointerProperty(type=RetargetSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.emoca_retarget
