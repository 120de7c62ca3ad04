"""The Retarget subpanel of the 3D Viewport's EMOCA tab and its mapping list.

Top to bottom: character and take; Auto Match and the mapping (one row per entry: channel -> shape key; the
active entry's gain, offset and clamp below the list); presets; the bones (armature, head and jaw, axes); the
options; Retarget; the last report.
"""

from __future__ import annotations

import bpy

from .options import RETARGET_OPTIONS
from .write import find_armature

REPORT_LINES = 14  # the report lines the panel shows (the whole report is on the Action)
MATCH_OPTIONS = ("swap_sides", "method")  # drawn beside Auto Match or at the top, not with the other options


class EMOCA_UL_retarget_entries(bpy.types.UIList):
    """The mapping's entries: channel -> shape key"""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "source", text="", emboss=False)
        row.label(icon="FORWARD")
        target = context.scene.emoca_retarget.target
        if target is not None and target.data.shape_keys is not None:
            row.prop_search(item, "target", target.data.shape_keys, "key_blocks", text="")
        else:
            row.prop(item, "target", text="", emboss=False)


def _draw_mapping(layout, settings) -> None:
    row = layout.row(align=True)
    row.operator("emoca.retarget_match", icon="VIEWZOOM")
    row.prop(settings, "swap_sides", toggle=True)
    row = layout.row()
    row.template_list("EMOCA_UL_retarget_entries", "", settings, "entries", settings, "active_entry", rows=6)
    col = row.column(align=True)
    col.operator("emoca.retarget_entry_add", icon="ADD", text="")
    col.operator("emoca.retarget_entry_remove", icon="REMOVE", text="")
    if 0 <= settings.active_entry < len(settings.entries):
        entry = settings.entries[settings.active_entry]
        sub = layout.row(align=True)
        sub.prop(entry, "gain")
        sub.prop(entry, "offset")
        sub = layout.row(align=True)
        sub.prop(entry, "clamp_min")
        sub.prop(entry, "clamp_max")
    row = layout.row(align=True)
    row.operator("emoca.retarget_preset_load", icon="FILEBROWSER")
    row.operator("emoca.retarget_preset_save", icon="FILE_TICK")


def _draw_bones(layout, settings) -> None:
    layout.label(text="Bones", icon="BONE_DATA")
    layout.prop(settings, "armature")
    arm = settings.armature or (find_armature(settings.target) if settings.target is not None else None)
    for bone, axes in (("head_bone", "head_axes"), ("jaw_bone", "jaw_axes")):
        if arm is not None:
            layout.prop_search(settings, bone, arm.data, "bones")
        else:
            layout.prop(settings, bone)
        layout.prop(settings, axes)
    row = layout.row(align=True)
    row.prop(settings, "jaw_open_axis")
    row.prop(settings, "jaw_open_gain")


def _draw_report(layout, settings) -> None:
    lines = settings.report.splitlines()
    if not lines:
        return
    box = layout.box()
    for line in lines[:REPORT_LINES]:
        box.label(text=line)
    if len(lines) > REPORT_LINES:
        box.label(text=f"... {len(lines) - REPORT_LINES} more lines (the Action's emoca_retarget_report)")


class EMOCA_PT_view3d_retarget(bpy.types.Panel):
    """Retarget a take onto any character's shape keys and bones"""

    bl_label = "Retarget"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EMOCA"
    bl_parent_id = "EMOCA_PT_view3d"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.emoca_retarget
        layout.prop(settings, "target")
        layout.prop(settings, "take")
        layout.row().prop(settings, "method", expand=True)
        if settings.method == "landmarks":  # any keys: the solve needs the character's face landmarks
            layout.operator("emoca.retarget_landmarks", icon="EMPTY_AXIS")
        else:
            _draw_mapping(layout.box(), settings)
        _draw_bones(layout.box(), settings)
        box = layout.box()
        for opt in RETARGET_OPTIONS:
            if opt.name in MATCH_OPTIONS:
                continue
            if opt.expand:
                box.row(align=True).prop(settings, opt.attr, expand=True)
            else:
                box.prop(settings, opt.attr)
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("emoca.retarget", icon="MOD_SHRINKWRAP")
        layout.operator("emoca.export_live_link", icon="EXPORT")
        _draw_report(layout, settings)


CLASSES = (EMOCA_UL_retarget_entries, EMOCA_PT_view3d_retarget)
