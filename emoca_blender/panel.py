"""Panels: the 3D Viewport sidebar ('EMOCA' tab) and the Clip Editor (footage = the active Movie Clip)."""

from __future__ import annotations

import bpy

from .likeness import has_detail
from .options import OPTIONS
from .progress import capture_text, train_text
from .retarget import panel as retarget_panel
from .rig_parts import find_rig


def _draw_job(layout, context) -> bool:
    job = context.window_manager.emoca_job
    if job.running:
        layout.progress(factor=job.progress, text=capture_text(job))
        layout.label(text="Esc cancels", icon="CANCEL")
    elif job.message:
        layout.label(text=job.message, icon="INFO")
    return job.running


def _draw_capture(layout, context, clip=None) -> None:
    """The capture options and button; in the Clip Editor the footage is the editor's Movie Clip."""
    s = context.scene.emoca
    col = layout.column()
    if clip is None:
        col.prop(s, "source")
        if s.source == "FILE":
            col.prop(s, "footage")
        elif s.source == "SEQUENCE":
            col.prop(s, "sequence_dir")
    row = col.row(align=True)
    row.prop(s, "frame_start")
    row.prop(s, "frame_end")
    row.prop(s, "frame_step")
    row = col.row(align=True)
    row.prop(s, "face")
    if s.face == "TRACK":
        row.prop(s, "face_track")
    col.prop(s, "smooth", slider=True)
    col.prop(s, "take_dir")
    if s.take_dir.startswith("//") and not bpy.data.filepath:
        col.label(text="Save the .blend first: takes go beside it", icon="ERROR")
    col.prop(s, "rig")
    running = _draw_job(col, context)
    row = col.row()
    row.enabled = not running
    op = row.operator("emoca.capture", icon="REC")
    op.use_scene_settings = True
    if clip is not None:
        op.input = bpy.path.abspath(clip.filepath, library=clip.library)


def _draw_apply(layout, context) -> None:
    """Every apply option (options.ApplyOptions, in its order) and the Apply Take button."""
    s = context.scene.emoca
    col = layout.column()
    for opt in OPTIONS:
        if opt.expand:
            col.row(align=True).prop(s, opt.attr, expand=True)
        else:
            col.prop(s, opt.attr)
    op = col.operator("emoca.apply_take", icon="IMPORT")
    op.use_scene_settings = True


class _Sidebar:
    """Where every EMOCA panel lives: the 'EMOCA' tab of an editor's sidebar (the 3D Viewport's by default)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EMOCA"


class _Subpanel(_Sidebar):
    """A closed-by-default subpanel of the 3D Viewport's EMOCA panel."""

    bl_parent_id = "EMOCA_PT_view3d"
    bl_options = {"DEFAULT_CLOSED"}


class EMOCA_PT_view3d(_Sidebar, bpy.types.Panel):
    bl_label = "EMOCA Face Capture"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator("emoca.import_rig", icon="ARMATURE_DATA")
        op = row.operator("emoca.import_rig", text="From Backend", icon="CONSOLE")
        op.use_backend = True
        _draw_capture(layout.box(), context)


class EMOCA_PT_view3d_apply(_Subpanel, bpy.types.Panel):
    bl_label = "Apply Options"

    def draw(self, context):
        _draw_apply(self.layout, context)


def _draw_likeness(layout, context) -> None:
    """The Likeness panel: the take and footage, what to make, Make (backend) / Use Files, progress, and the rig
    mesh's Detail checkbox."""
    s = context.scene.emoca_likeness
    job = context.window_manager.emoca_likeness_job
    col = layout.column()
    col.enabled = not job.running
    col.prop(s, "take")
    col.prop(s, "video")
    row = col.row(align=True)
    row.prop(s, "identity", toggle=True)
    row.prop(s, "texture", toggle=True)
    row.prop(s, "detail", toggle=True)
    col.prop(s, "identity_take")
    row = col.row(align=True)
    row.operator("emoca.likeness", icon="USER").use_scene_settings = True
    row.operator("emoca.use_likeness", text="Use Files", icon="FILE_IMAGE").use_scene_settings = True
    if job.running:
        layout.progress(factor=job.progress, text=f"{job.stage} {job.progress * 100:.0f}%")
        layout.label(text="Esc cancels", icon="CANCEL")
    elif job.message:
        layout.label(text=job.message, icon="INFO")
    arm = find_rig(context.scene.emoca.rig) or find_rig(getattr(context, "active_object", None))  # as target_rig
    mesh_obj = next((c for c in arm.children if c.type == "MESH"), None) if arm is not None else None
    if mesh_obj is not None and has_detail(mesh_obj):
        layout.prop(mesh_obj, "emoca_detail")


def _draw_train(layout, context) -> None:
    """The Train panel: settings, a progress bar with epoch/step/loss and Stop, then the finished run."""
    s = context.scene.emoca_train
    job = context.window_manager.emoca_train_job
    col = layout.column()
    col.enabled = not job.running
    col.prop(s, "config")
    if s.config == "CUSTOM":
        col.prop(s, "config_path")
    col.prop(s, "data_dir")
    col.prop(s, "output_dir")
    row = col.row(align=True)
    row.prop(s, "max_epochs")
    row.prop(s, "max_steps")
    col.prop(s, "overrides")
    if job.running:
        layout.progress(factor=job.progress, text=train_text(job))
        layout.operator("emoca.train_stop", icon="CANCEL")
        return
    layout.operator("emoca.train", icon="PLAY")
    if job.message:
        layout.label(text=job.message, icon="INFO")
    if job.model_folder:
        box = layout.box()
        box.label(text=f"Model: {job.model_folder}", icon="FILE_FOLDER")
        if job.checkpoint:
            box.label(text=f"Checkpoint: {bpy.path.basename(job.checkpoint)}", icon="FILE")
        if not job.capture_loadable:
            box.label(text="Test config: capture cannot load this model", icon="ERROR")
        box.operator("emoca.use_trained_model", text="Use as capture model", icon="CHECKMARK")


class EMOCA_PT_view3d_train(_Subpanel, bpy.types.Panel):
    bl_label = "Train"

    def draw(self, context):
        _draw_train(self.layout, context)


class EMOCA_PT_view3d_likeness(_Subpanel, bpy.types.Panel):
    bl_label = "Likeness"

    def draw(self, context):
        _draw_likeness(self.layout, context)


class EMOCA_PT_clip(_Sidebar, bpy.types.Panel):
    bl_label = "EMOCA Face Capture"
    bl_space_type = "CLIP_EDITOR"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "clip", None) is not None

    def draw(self, context):
        layout = self.layout
        clip = context.space_data.clip
        layout.label(text=clip.name, icon="SEQUENCE")
        _draw_capture(layout, context, clip=clip)
        _draw_apply(layout.box(), context)


CLASSES = (EMOCA_PT_view3d, EMOCA_PT_view3d_apply, EMOCA_PT_view3d_likeness, EMOCA_PT_view3d_train, EMOCA_PT_clip,
           *retarget_panel.CLASSES)  # fmt: skip
