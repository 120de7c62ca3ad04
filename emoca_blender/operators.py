"""Operators (thin: the logic lives in rig.py, apply.py, training.py and client.py; the job loop in modal.py).

Every operator that changes the scene has ``bl_options={'REGISTER', 'UNDO'}`` and changes it in ONE call
(the capture's last step, which applies the finished take), so one Ctrl-Z undoes it. Capture writes nothing into
the scene until the take is finished and validated; Esc cancels the backend and leaves the scene untouched.
Errors reach the user as ``EmocaError.report()``: ``[code] message (hint)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

from .apply import apply_take
from .client import BackendProcess, CaptureJob, TrainJob, run_request
from .likeness import LikenessJob, use_likeness
from .likeness import request_fields as likeness_fields
from .modal import BackendJobOperator, CaptureJobOperator, TrainJobOperator
from .options import ApplyOptions
from .preferences import backend_python, capture_options, flame_file, get_prefs
from .progress import capture_text, train_text
from .properties import DEFAULT_TAKE_DIR, with_apply_options
from .retarget import ops as retarget_ops
from .rig import build_rig, find_rig, remove_rig
from .takes import capture_targets, take_folder
from .training import train_request

# Typed for the checker only, as modal.py's bases (a subscripted Generic base makes Blender 4.2 crash on exit).
if TYPE_CHECKING:
    LikenessJobOperator = BackendJobOperator[LikenessJob]
else:
    LikenessJobOperator = BackendJobOperator


def target_rig(context, name: str = ""):
    """The rig named ``name``, else the scene's target rig, else the active object's rig."""
    if name:
        return find_rig(bpy.data.objects.get(name))
    settings = context.scene.emoca
    return find_rig(settings.rig) or find_rig(context.active_object)


def footage_path(context) -> str:
    """The footage chosen in the panel: a file, the active Movie Clip, or an image folder."""
    settings = context.scene.emoca
    if settings.source == "CLIP":
        space = context.space_data
        clip = getattr(space, "clip", None) if space is not None else None  # only the Clip Editor has one
        clip = clip or (bpy.data.movieclips[0] if len(bpy.data.movieclips) == 1 else None)
        if clip is None:
            raise EmocaError("input_missing", "no active Movie Clip", "Open footage in the Clip Editor.")
        return bpy.path.abspath(clip.filepath, library=clip.library)
    path = settings.sequence_dir if settings.source == "SEQUENCE" else settings.footage
    if not path:
        raise EmocaError("input_missing", "no footage chosen", "Pick a video file or an image folder.")
    return bpy.path.abspath(path)


HEADS = [
    ("DEFAULT", "Default", "FLAME when a FLAME file is set or installed, else the open ICT-FaceKit head"),
    ("ict", "Open Head (ICT)", "The open ICT-FaceKit head with ARKit-named shape keys (MIT; not FLAME)"),
    ("flame", "FLAME", "FLAME from the file in the preferences or the installed assets"),
    ("synthetic", "Synthetic Test Head", "The synthetic test head (not FLAME), for tests"),
]


def rig_from_backend(python: str, output: str, flame: str | None = None, head: str | None = None) -> str:
    """Blocking: ask the backend for a rig file (FLAME when a FLAME file is set or installed, else the open head,
    unless ``head`` names one)."""
    fields: dict[str, Any] = {"output": output, **({"flame": flame} if flame else {})}
    fields.update({"head": head} if head else {})
    result = run_request(python, "export_rig", timeout=300, **fields)
    return str((result.get("files") or [output])[0])


class EMOCA_OT_import_rig(bpy.types.Operator, ImportHelper):
    """Build the FLAME head rig (mesh, shape keys, armature) from a rig file or from the backend"""

    bl_idname = "emoca.import_rig"
    bl_label = "Import FLAME Rig"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"}, description="Rig files")
    use_backend: BoolProperty(
        name="Export With Backend",
        default=False,
        description="Ask the backend to export the rig from the FLAME file in the preferences",
    )
    name: StringProperty(
        name="Name", default="", description="The mesh's name (the armature: <name>_rig); empty: the rig's own"
    )
    head: EnumProperty(name="Head", items=HEADS, default="DEFAULT", description="Which head the backend exports")

    def invoke(self, context, event):
        if self.use_backend:
            return self.execute(context)
        return ImportHelper.invoke(self, context, event)

    def execute(self, context):
        try:
            path = self.filepath
            if self.use_backend:
                output = str(Path(tempfile.mkdtemp(prefix="emoca_rig_")) / "rig.npz")
                head = None if self.head == "DEFAULT" else self.head
                flame = flame_file(context) if head in (None, "flame") else None
                path = rig_from_backend(backend_python(context), output, flame, head)
            arm = build_rig(path, name=self.name or None, context=context)
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        context.scene.emoca.rig = arm
        self.report({"INFO"}, f"Imported {arm.name}")
        return {"FINISHED"}


@with_apply_options
class ApplyOptionProps:
    """Operator properties: every apply option (generated from ApplyOptions), the rig, and where options come from."""

    rig_name: StringProperty(name="Rig", default="", description="Armature to animate (empty: the panel's rig)")
    use_scene_settings: BoolProperty(
        name="Use Panel Settings",
        default=False,
        options={"HIDDEN", "SKIP_SAVE"},
        description="Read the apply options from the scene's EMOCA settings (the panel's buttons set this)",
    )

    def apply_options(self, context) -> ApplyOptions:
        return ApplyOptions.from_object(context.scene.emoca if self.use_scene_settings else self)


class EMOCA_OT_apply_take(bpy.types.Operator, ImportHelper, ApplyOptionProps):
    """Apply a take file (.npz) to the FLAME rig: expression, jaw, head, correctives and emotion keys"""

    bl_idname = "emoca.apply_take"
    bl_label = "Apply Take"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"}, description="Take files")

    def execute(self, context):
        rig = target_rig(context, self.rig_name)
        if rig is None:
            self.report({"ERROR"}, "No FLAME rig: import one first or pick it as the target rig")
            return {"CANCELLED"}
        try:
            action = apply_take(rig, bpy.path.abspath(self.filepath), self.apply_options(context), scene=context.scene)
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        self.report({"INFO"}, f"Applied take as {action.name}")
        return {"FINISHED"}


class EMOCA_OT_capture(bpy.types.Operator, CaptureJobOperator, ApplyOptionProps):
    """Capture the footage with the backend, then key the rig in one step (Esc cancels; nothing is written)"""

    bl_idname = "emoca.capture"
    bl_label = "Capture"
    bl_options = {"REGISTER", "UNDO"}

    job_props = "emoca_job"
    job_noun = "Capture"
    cancelled_message = "Capture cancelled; the scene is unchanged"
    redraw_areas = ("VIEW_3D", "CLIP_EDITOR")

    input: StringProperty(name="Footage", default="", description="Empty: the footage chosen in the panel")
    output_dir: StringProperty(
        name="Take Folder",
        default="",
        subtype="DIR_PATH",
        description="Where takes are written (empty: the panel's Take Folder, by default takes/ beside the .blend)",
    )

    def prepare(self, context) -> str:
        self.footage = bpy.path.abspath(self.input) if self.input else footage_path(context)
        if not os.path.exists(self.footage):
            raise EmocaError("input_missing", f"footage not found: {self.footage}")
        settings = context.scene.emoca
        setting = self.output_dir or settings.take_dir or DEFAULT_TAKE_DIR
        out_dir = take_folder(setting if setting.startswith("//") else bpy.path.abspath(setting), bpy.data.filepath)
        options = capture_options(settings, context)
        take_output, rig_output = capture_targets(self.footage, out_dir, options.get("face"))
        out_dir.mkdir(parents=True, exist_ok=True)
        self.capture_fields = {"input": self.footage, "output": str(take_output), "options": options}
        rig = target_rig(context, self.rig_name)
        if rig is None:
            rig_output.parent.mkdir(parents=True, exist_ok=True)
        # the rig is looked up again by name when the take is applied: no RNA pointers across modal steps
        self.rig_object = rig.name if rig is not None else ""
        self.rig_output = "" if rig is not None else str(rig_output)  # no rig: the backend exports one
        return f"Capturing {Path(self.footage).name} into {out_dir} (Esc cancels)"

    def make_job(self, context, proc: BackendProcess) -> CaptureJob:
        return CaptureJob(proc, self.capture_fields, rig_output=self.rig_output or None, flame=flame_file(context))

    def progress_text(self, props) -> str:
        return capture_text(props)

    def job_done(self, context, props) -> set[str]:
        takes = self.job.take_files
        if not takes:
            raise EmocaError(
                "no_face",
                f"the capture of {self.footage} wrote no take",
                "Check the footage, the frame range and the face option.",
            )
        take = read_take(takes[0])  # validate before anything is added to the scene
        options = self.apply_options(context)
        if self.rig_object:
            action = apply_take(bpy.data.objects[self.rig_object], take, options, scene=context.scene)
        else:
            if self.job.rig_file is None:
                raise EmocaError("internal", "the backend finished the capture without exporting the rig")
            rig = build_rig(self.job.rig_file, context=context)
            try:
                action = apply_take(rig, take, options, scene=context.scene)
            except EmocaError:
                remove_rig(rig)
                raise
            context.scene.emoca.rig = rig
        more = f" ({len(takes) - 1} more takes in {Path(takes[0]).parent})" if len(takes) > 1 else ""
        props.message = f"Captured {Path(self.footage).name} -> {action.name}{more}"
        self.report({"INFO"}, props.message)
        return {"FINISHED"}


class LikenessProps:
    """Operator properties of the likeness operators: the take, the footage, what to put on which rig."""

    take: StringProperty(name="Take", default="", description="The take (.npz); empty: the panel's")
    video: StringProperty(name="Footage", default="", description="For the texture; empty: the take's")
    identity: BoolProperty(name="Identity", default=True, description="Bake the performer's identity as one key")
    texture: BoolProperty(name="Texture", default=True, description="The texture as the rig's base colour")
    detail: BoolProperty(name="Detail Maps", default=False, description="The detail displacement maps (FLAME)")
    identity_take: StringProperty(
        name="Identity From", default="", description="Another take whose identity to bake (empty: this take's)"
    )
    rig_name: StringProperty(name="Rig", default="", description="The rig (empty: the panel's target rig)")
    use_scene_settings: BoolProperty(
        name="Use Panel Settings", default=False, options={"HIDDEN", "SKIP_SAVE"},
        description="Read the take and what to make from the Likeness panel (the panel's buttons set this)",
    )  # fmt: skip

    def likeness_request(self, context) -> dict[str, Any]:
        """{rig, take, video, identity, texture, detail, identity_take} from the panel or the operator, checked."""
        src = context.scene.emoca_likeness if self.use_scene_settings else self
        rig = target_rig(context, self.rig_name)
        if rig is None:
            raise EmocaError("config_invalid", "no EMOCA rig: import one, or pick it as the target rig")
        take = bpy.path.abspath(src.take)
        if not src.take or not os.path.isfile(take):
            raise EmocaError("input_missing", f"take not found: {take or '(none chosen)'}", "Pick a take (.npz).")
        return {"rig": rig.name, "take": take, "video": bpy.path.abspath(src.video) if src.video else None,
                "identity": src.identity, "texture": src.texture, "detail": src.detail,
                "identity_take": bpy.path.abspath(src.identity_take) if src.identity_take else None}  # fmt: skip


def put_likeness(context, request: dict[str, Any]) -> str:
    """Put a take's likeness files on the request's rig (one undo step); the report line."""
    result = use_likeness(bpy.data.objects[request["rig"]], request["take"], request["identity"], request["texture"],
                          request["detail"], identity_from=request["identity_take"], scene=context.scene,
                          context=context)  # fmt: skip
    parts = [f"identity key {result.identity_key!r}"] if result.identity_key else []
    parts += [f"texture on {len(result.materials)} material(s)"] if result.materials else []
    parts += ["detail maps (tick Detail to see them)"] if result.detail_image else []
    return f"Likeness of {Path(request['take']).stem} on {request['rig']}: {', '.join(parts)}"


class EMOCA_OT_likeness(bpy.types.Operator, LikenessJobOperator, LikenessProps):
    """Make the performer's likeness with the backend (identity, texture, detail maps) and put it on the rig
    (Esc cancels; the rig is unchanged until it is done)"""

    bl_idname = "emoca.likeness"
    bl_label = "Make Likeness"
    bl_options = {"REGISTER", "UNDO"}

    job_props = "emoca_likeness_job"
    job_noun = "Likeness"
    cancelled_message = "Likeness cancelled; the rig is unchanged"

    def prepare(self, context) -> str:
        self.request = self.likeness_request(context)
        r = self.request
        self.fields = likeness_fields(r["take"], r["video"], r["identity"], r["texture"],
                                      r["detail"], flame=flame_file(context))  # fmt: skip
        return f"Making the likeness of {Path(r['take']).stem} (Esc cancels)"

    def make_job(self, context, proc: BackendProcess) -> LikenessJob:
        return LikenessJob(proc, self.fields)

    def progress_text(self, props) -> str:
        return f"likeness: {props.stage} {props.progress * 100:.0f}%"

    def job_done(self, context, props) -> set[str]:
        props.message = put_likeness(context, self.request)
        self.report({"INFO"}, props.message)
        return {"FINISHED"}


class EMOCA_OT_use_likeness(bpy.types.Operator, LikenessProps):
    """Put a take's existing likeness files (NAME.likeness.json beside it) on the rig, without the backend"""

    bl_idname = "emoca.use_likeness"
    bl_label = "Use Likeness Files"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            message = put_likeness(context, self.likeness_request(context))
        except EmocaError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        context.window_manager.emoca_likeness_job.message = message
        self.report({"INFO"}, message)
        return {"FINISHED"}


class EMOCA_OT_train(bpy.types.Operator, TrainJobOperator):
    """Train EMOCA's expression encoder with the backend (Esc or Stop ends it; the run folder can then be used
    as the capture model)"""

    bl_idname = "emoca.train"
    bl_label = "Train"
    bl_options = {"REGISTER"}  # changes no scene data: nothing to undo

    job_props = "emoca_train_job"
    job_noun = "Training"
    cancelled_message = "Training stopped (checkpoints written so far stay in the output folder)"

    def prepare(self, context) -> str:
        self.request = train_request(context.scene.emoca_train, bpy.data.filepath)
        return f"Training {Path(self.request[0]).stem} (Esc or Stop ends it)"

    def make_job(self, context, proc: BackendProcess) -> TrainJob:
        config, overrides = self.request
        return TrainJob(proc, config, overrides)

    def progress_text(self, props) -> str:
        return "train: " + train_text(props)

    def sync(self, props, job: TrainJob) -> None:
        super().sync(props, job)
        props.epoch, props.step, props.total = job.epoch, job.global_step, job.total
        props.loss = job.loss if job.loss is not None else -1.0
        props.model_folder, props.checkpoint = job.model_folder or "", job.checkpoint or ""

    def job_done(self, context, props) -> set[str]:
        props.capture_loadable = self.job.capture_loadable is not False
        props.message = f"Trained: {self.job.model_folder}"
        self.report({"INFO"}, f"Training finished: {self.job.model_folder}")
        return {"FINISHED"}


class EMOCA_OT_train_stop(bpy.types.Operator):
    """Stop the running training (the backend ends it; checkpoints written so far stay)"""

    bl_idname = "emoca.train_stop"
    bl_label = "Stop"

    @classmethod
    def poll(cls, context):
        return context.window_manager.emoca_train_job.running

    def execute(self, context):
        context.window_manager.emoca_train_job.stop_requested = True
        return {"FINISHED"}


class EMOCA_OT_use_trained_model(bpy.types.Operator):
    """Use the trained run folder as the EMOCA model of the next captures (sets the add-on preference)"""

    bl_idname = "emoca.use_trained_model"
    bl_label = "Use as Capture Model"

    folder: StringProperty(
        name="Model Folder",
        subtype="DIR_PATH",
        default="",
        description="Empty: the folder of the last finished training",
    )

    def execute(self, context):
        props = context.window_manager.emoca_train_job
        folder = bpy.path.abspath(self.folder) if self.folder else props.model_folder
        if not folder or not os.path.isdir(folder):
            self.report({"ERROR"}, f"No trained model folder{f' at {folder}' if folder else ''}: train first")
            return {"CANCELLED"}
        prefs = get_prefs(context)
        if prefs is None:
            self.report({"ERROR"}, "The add-on preferences are not available (the add-on is not enabled)")
            return {"CANCELLED"}
        prefs.emoca_model = folder
        if not self.folder and not props.capture_loadable:
            self.report(
                {"WARNING"},
                f"{Path(folder).name} was trained with a test config that capture cannot "
                "load (tiny_cpu); captures will fail until another model is set",
            )
        else:
            self.report({"INFO"}, f"Captures now use {folder}")
        return {"FINISHED"}


CLASSES = (
    EMOCA_OT_import_rig,
    EMOCA_OT_apply_take,
    EMOCA_OT_capture,
    EMOCA_OT_train,
    EMOCA_OT_train_stop,
    EMOCA_OT_use_trained_model,
    EMOCA_OT_likeness,
    EMOCA_OT_use_likeness,
    *retarget_ops.CLASSES,
)
