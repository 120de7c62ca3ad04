"""The Retarget panel's operators (thin: matching, mapping and writing live in the other modules of the package).

Retarget changes the scene in ONE call (:func:`~.run.retarget`: validate everything, then write, rolled back on a
failure), so one Ctrl-Z undoes it; it shows progress on the cursor. Auto Match, the entry buttons and Load Preset
change only the panel's settings (undoable too). Errors reach the user as ``EmocaError.report()``. Operator
properties are Blender's annotations holding ``bpy.props`` calls: no types for the type checker (``valid-type``).
"""

# mypy: disable-error-code="valid-type"
from __future__ import annotations

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.livelink import write_csv

from . import landmark_ops
from .mapping import auto_mapping, load_preset, save_preset
from .options import RetargetOptions
from .props import mapping_from_settings, settings_from_mapping
from .run import retarget
from .sources import load_take, source_curves
from .write import shape_keys, target_mesh


def panel_target(context):
    """The panel's character, else the active object (checked: a mesh with shape keys)."""
    settings = context.scene.emoca_retarget
    return target_mesh(settings.target or context.active_object)


def panel_take(context, path: str = "") -> str:
    """The take to retarget: ``path``, else the panel's (made absolute); input_missing when none is chosen."""
    chosen = path or context.scene.emoca_retarget.take
    if not chosen:
        raise EmocaError("input_missing", "no take chosen", "Pick a take (.npz) or a Live Link Face CSV (.csv).")
    return bpy.path.abspath(chosen)


def match_panel(context) -> list[str]:
    """Auto Match: the panel's mapping made by name for its character (the take's channels, or the 52 ARKit
    names without a take); the panel's bone settings stay. Returns the report's lines."""
    settings = context.scene.emoca_retarget
    mesh = panel_target(context)
    options = RetargetOptions.from_object(settings)
    sources = list(ARKIT_NAMES)
    if settings.take:
        take = load_take(panel_take(context), fps=options.csv_fps or None, angles=options.angles)
        # a FLAME take through the ARKit map gives ARKit channels: match them without asking for the map
        by_map = take.kind == "flame" and options.flame_channels == "map"
        sources = list(ARKIT_NAMES) if by_map else source_curves(take).names
    mapping, report = auto_mapping(sources, list(shape_keys(mesh)), options.swap_sides)
    settings_from_mapping(settings, mapping, bones=False)
    settings.target = mesh
    settings.report = "\n".join(report.lines())
    return report.lines()


class EMOCA_OT_retarget_match(bpy.types.Operator):
    """Match the take's channels to the character's shape keys by name (mouthSmile_L, CC_Mouth_Smile_L, ...)"""

    bl_idname = "emoca.retarget_match"
    bl_label = "Auto Match"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            lines = match_panel(context)
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        self.report({"INFO"}, lines[0])
        return {"FINISHED"}


class EMOCA_OT_retarget(bpy.types.Operator):
    """Key the character's shape keys (and head and jaw bones) from the take through the panel's mapping"""

    bl_idname = "emoca.retarget"
    bl_label = "Retarget"
    bl_options = {"REGISTER", "UNDO"}

    take_path: StringProperty(name="Take", default="", description="Empty: the panel's take")

    def execute(self, context):
        settings = context.scene.emoca_retarget
        wm = context.window_manager
        wm.progress_begin(0, 100)
        try:
            take = panel_take(context, self.take_path)
            options = RetargetOptions.from_object(settings)
            by_name = options.method == "names"  # the landmark solve keys the character's keys by their own names
            if by_name and not len(settings.entries):
                match_panel(context)  # no mapping yet: match by name first, and show it
            result = retarget(
                panel_target(context),
                take,
                mapping_from_settings(settings) if by_name else None,
                options,
                scene=context.scene,
                progress=lambda fraction, text: wm.progress_update(int(fraction * 100)),
            )
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        settings.report = "\n".join(result.report)
        name = result.action.name if result.action is not None else "no Action"
        self.report({"INFO"}, f"Retargeted {result.n_frames} frames onto {result.mesh.name} as {name}")
        return {"FINISHED"}


class EMOCA_OT_retarget_entry_add(bpy.types.Operator):
    """Add a mapping entry (a channel driving one more shape key)"""

    bl_idname = "emoca.retarget_entry_add"
    bl_label = "Add Entry"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.emoca_retarget
        current = settings.entries[settings.active_entry] if len(settings.entries) else None
        item = settings.entries.add()
        if current is not None:  # the new entry starts as the active one's twin: one channel, another key
            item.source, item.gain, item.offset = current.source, current.gain, current.offset
            item.clamp_min, item.clamp_max = current.clamp_min, current.clamp_max
        settings.active_entry = len(settings.entries) - 1
        return {"FINISHED"}


class EMOCA_OT_retarget_entry_remove(bpy.types.Operator):
    """Remove the active mapping entry"""

    bl_idname = "emoca.retarget_entry_remove"
    bl_label = "Remove Entry"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.emoca_retarget.entries) > 0

    def execute(self, context):
        settings = context.scene.emoca_retarget
        settings.entries.remove(settings.active_entry)
        settings.active_entry = max(0, min(settings.active_entry, len(settings.entries) - 1))
        return {"FINISHED"}


class EMOCA_OT_retarget_preset_save(bpy.types.Operator, ExportHelper):
    """Save the panel's mapping and bone settings as a preset (.json) for characters with the same key names"""

    bl_idname = "emoca.retarget_preset_save"
    bl_label = "Save Preset"

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"}, description="Presets")

    def execute(self, context):
        settings = context.scene.emoca_retarget
        try:
            path = save_preset(mapping_from_settings(settings), bpy.path.abspath(self.filepath))
        except (EmocaError, OSError) as exc:
            self.report({"ERROR"}, exc.report() if isinstance(exc, EmocaError) else f"cannot write the preset: {exc}")
            return {"CANCELLED"}
        settings.preset = str(path)
        self.report({"INFO"}, f"Saved {len(settings.entries)} entries to {path}")
        return {"FINISHED"}


class EMOCA_OT_retarget_preset_load(bpy.types.Operator, ImportHelper):
    """Load a mapping preset (.json): its entries and bone settings replace the panel's"""

    bl_idname = "emoca.retarget_preset_load"
    bl_label = "Load Preset"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"}, description="Presets")

    def execute(self, context):
        settings = context.scene.emoca_retarget
        try:
            mapping = load_preset(bpy.path.abspath(self.filepath))
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        settings_from_mapping(settings, mapping)
        settings.preset = bpy.path.abspath(self.filepath)
        target = settings.target
        keys = shape_keys(target) if target is not None else {}
        missing = [t for t in mapping.targets() if keys and t not in keys]
        settings.report = f"preset {mapping.name or self.filepath}: {len(mapping.entries)} entries" + (
            f"\nkeys the character lacks (skipped when retargeting): {', '.join(missing)}" if missing else ""
        )
        level = "WARNING" if missing else "INFO"
        self.report({level}, settings.report.splitlines()[-1])
        return {"FINISHED"}


class EMOCA_OT_export_live_link(bpy.types.Operator, ExportHelper):
    """Write the panel's take as a Live Link Face CSV (ARKit curves, head and eye angles)"""

    bl_idname = "emoca.export_live_link"
    bl_label = "Export Live Link CSV"

    filename_ext = ".csv"
    filter_glob: StringProperty(default="*.csv", options={"HIDDEN"}, description="CSV files")

    def execute(self, context):
        try:
            options = RetargetOptions.from_object(context.scene.emoca_retarget)
            take = load_take(panel_take(context), fps=options.csv_fps or None, angles=options.angles)
            path = write_csv(take, bpy.path.abspath(self.filepath))
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {path}")
        return {"FINISHED"}


CLASSES = (
    *landmark_ops.CLASSES,
    EMOCA_OT_retarget_match,
    EMOCA_OT_retarget,
    EMOCA_OT_retarget_entry_add,
    EMOCA_OT_retarget_entry_remove,
    EMOCA_OT_retarget_preset_save,
    EMOCA_OT_retarget_preset_load,
    EMOCA_OT_export_live_link,
)
