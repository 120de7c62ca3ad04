"""Operators (thin: the logic lives in rig.py, apply.py and client.py).

Every operator that changes the scene has ``bl_options={'REGISTER', 'UNDO'}`` and changes it in ONE call
(the capture's modal step that receives the result), so one Ctrl-Z undoes it. Capture writes nothing into the
scene until the take is finished and validated; Esc cancels the backend and leaves the scene untouched.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

from . import properties
from .apply import apply_take
from .client import BackendProcess, CaptureJob, TrainJob, run_request
from .preferences import backend_python, capture_options, get_prefs
from .rig import build_rig, find_rig, remove_rig


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
        clip = getattr(space, "clip", None) if space is not None else None
        clip = clip or (bpy.data.movieclips[0] if len(bpy.data.movieclips) == 1 else None)
        if clip is None:
            raise EmocaError("input_missing", "no active Movie Clip", "Open footage in the Clip Editor.")
        return bpy.path.abspath(clip.filepath, library=clip.library)
    path = settings.sequence_dir if settings.source == "SEQUENCE" else settings.footage
    if not path:
        raise EmocaError("input_missing", "no footage chosen", "Pick a video file or an image folder.")
    return bpy.path.abspath(path)


def apply_kwargs(settings) -> dict:
    return {
        k: getattr(settings, k)
        for k in (
            "frame_mapping",
            "start",
            "offset",
            "head_rotation",
            "correctives",
            "emotion",
            "camera_match",
            "action_mode",
            "push_down",
        )
    }


def rig_from_backend(python: str, output: str, flame: str | None = None) -> str:
    """Blocking: ask the backend for a rig file (the synthetic test head when no FLAME file is set)."""
    fields = {"output": output}
    if flame:
        fields["flame"] = flame
    result = run_request(python, "export_rig", timeout=300, **fields)
    files = result.get("files") or [output]
    return files[0]


class EMOCA_OT_import_rig(bpy.types.Operator, ImportHelper):
    """Build the FLAME head rig (mesh, shape keys, armature) from a rig file or from the backend"""

    bl_idname = "emoca.import_rig"
    bl_label = "Import FLAME Rig"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    use_backend: BoolProperty(
        name="Export With Backend",
        default=False,
        description="Ask the backend to export the rig from the FLAME file in the preferences",
    )
    name: StringProperty(name="Name", default="FLAME")

    def invoke(self, context, event):
        if self.use_backend:
            return self.execute(context)
        return ImportHelper.invoke(self, context, event)

    def execute(self, context):
        try:
            path = self.filepath
            if self.use_backend:
                prefs = get_prefs(context)
                flame = bpy.path.abspath(prefs.flame_path) if prefs is not None and prefs.flame_path else None
                path = rig_from_backend(
                    backend_python(context), str(Path(tempfile.mkdtemp(prefix="emoca_rig_")) / "rig.npz"), flame
                )
            arm = build_rig(path, name=self.name, context=context)
        except EmocaError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.scene.emoca.rig = arm
        self.report({"INFO"}, f"Imported {arm.name}")
        return {"FINISHED"}


class _ApplyOptions:
    frame_mapping: EnumProperty(name="Frame Mapping", items=properties.FRAME_MAPPING, default="resample")
    start: EnumProperty(name="Start", items=properties.START, default="one")
    offset: IntProperty(name="Offset", default=0)
    head_rotation: BoolProperty(name="Head Rotation", default=True)
    correctives: BoolProperty(name="Pose Correctives", default=True)
    emotion: BoolProperty(name="Emotion Curves", default=True)
    camera_match: BoolProperty(name="Camera Match", default=False)
    action_mode: EnumProperty(name="Write To", items=properties.ACTION_MODE, default="new")
    push_down: BoolProperty(name="Push Down Previous", default=False)
    rig_name: StringProperty(name="Rig", default="", description="Armature to animate (empty: the panel's rig)")
    use_scene_settings: BoolProperty(name="Use Panel Settings", default=False, options={"HIDDEN", "SKIP_SAVE"})

    def apply_options(self, context) -> dict:
        if self.use_scene_settings:
            return apply_kwargs(context.scene.emoca)
        return {
            k: getattr(self, k)
            for k in (
                "frame_mapping",
                "start",
                "offset",
                "head_rotation",
                "correctives",
                "emotion",
                "camera_match",
                "action_mode",
                "push_down",
            )
        }


class EMOCA_OT_apply_take(bpy.types.Operator, ImportHelper, _ApplyOptions):
    """Apply a take file (.npz) to the FLAME rig: expression, jaw, head, correctives and emotion keys"""

    bl_idname = "emoca.apply_take"
    bl_label = "Apply Take"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    def execute(self, context):
        rig = target_rig(context, self.rig_name)
        if rig is None:
            self.report({"ERROR"}, "No FLAME rig: import one first or pick it as the target rig")
            return {"CANCELLED"}
        try:
            action = apply_take(
                rig, bpy.path.abspath(self.filepath), scene=context.scene, **self.apply_options(context)
            )
        except EmocaError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Applied take as {action.name}")
        return {"FINISHED"}


class EMOCA_OT_capture(bpy.types.Operator, _ApplyOptions):
    """Capture the footage with the backend, then key the rig in one step (Esc cancels; nothing is written)"""

    bl_idname = "emoca.capture"
    bl_label = "Capture"
    bl_options = {"REGISTER", "UNDO"}

    input: StringProperty(name="Footage", default="", description="Empty: the footage chosen in the panel")
    output_dir: StringProperty(
        name="Take Folder",
        default="",
        subtype="DIR_PATH",
        description="Where takes are written (empty: a temporary folder)",
    )

    _timer = None
    _proc: BackendProcess | None = None

    # ---- shared
    def _prepare(self, context):
        self.footage = bpy.path.abspath(self.input) if self.input else footage_path(context)
        if not os.path.exists(self.footage):
            raise EmocaError("input_missing", f"footage not found: {self.footage}")
        out_dir = Path(bpy.path.abspath(self.output_dir) if self.output_dir else tempfile.mkdtemp(prefix="emoca_"))
        out_dir.mkdir(parents=True, exist_ok=True)
        settings = context.scene.emoca
        self.capture_fields = {
            "input": self.footage,
            "output": str(out_dir if settings.face == "all" else out_dir / (Path(self.footage).stem + ".npz")),
            "options": capture_options(settings, context),
        }
        self.rig_dir = out_dir
        self.rig = target_rig(context, self.rig_name)
        self.rig_name_resolved = self.rig.name if self.rig is not None else ""

    def _finish_apply(self, context, take_files: list[str], rig_file: str | None):
        if not take_files:
            raise EmocaError(
                "no_face",
                f"the capture of {self.footage} wrote no take",
                "Check the footage, the frame range and the face option.",
            )
        take = read_take(take_files[0])  # validate before anything is added to the scene
        if self.rig_name_resolved:
            rig = bpy.data.objects[self.rig_name_resolved]  # look up by name: no RNA pointers across modal steps
            action = apply_take(rig, take, scene=context.scene, **self.apply_options(context))
        else:
            rig = build_rig(rig_file, context=context)
            try:
                action = apply_take(rig, take, scene=context.scene, **self.apply_options(context))
            except EmocaError:
                remove_rig(rig)
                raise
            context.scene.emoca.rig = rig
        extra = f" ({len(take_files) - 1} more takes in {Path(take_files[0]).parent})" if len(take_files) > 1 else ""
        self.report({"INFO"}, f"Captured {Path(self.footage).name} -> {action.name}{extra}")
        return {"FINISHED"}

    @staticmethod
    def _takes(result: dict) -> list[str]:
        return [f for f in result.get("files", []) if str(f).endswith(".npz")]

    # ---- blocking path (background mode, scripts: bpy.ops.emoca.capture())
    def execute(self, context):
        try:
            self._prepare(context)
            python = backend_python(context)
            result = run_request(python, "capture", on_event=_print_progress, **self.capture_fields)
            rig_file = None
            if self.rig is None:
                prefs = get_prefs(context)
                flame = bpy.path.abspath(prefs.flame_path) if prefs is not None and prefs.flame_path else None
                rig_file = rig_from_backend(python, str(self.rig_dir / "rig.npz"), flame)
            return self._finish_apply(context, self._takes(result), rig_file)
        except EmocaError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

    # ---- modal path (the UI): the CaptureJob state machine, stepped by a 0.1 s timer
    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if context.window_manager.emoca_job.running:
            self.report({"WARNING"}, "A capture is already running")
            return {"CANCELLED"}
        try:
            self._prepare(context)
            self._proc = BackendProcess(backend_python(context))
            prefs = get_prefs(context)
            flame = bpy.path.abspath(prefs.flame_path) if prefs is not None and prefs.flame_path else None
            self.job = CaptureJob(
                self._proc,
                self.capture_fields,
                rig_output=None if self.rig_name_resolved else str(self.rig_dir / "rig.npz"),
                flame=flame,
            )
            self.job.start()
        except EmocaError as exc:
            if self._proc is not None:
                self._proc.close(timeout=1)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        wm = context.window_manager
        job = wm.emoca_job
        job.running, job.progress, job.stage, job.fps, job.eta = True, 0.0, "starting", 0.0, -1.0
        job.message = f"Capturing {Path(self.footage).name} (Esc cancels)"
        wm.progress_begin(0, 1000)
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self.job.cancel()
            self._stop(context, "Capture cancelled; the scene is unchanged")
            self.report({"WARNING"}, "Capture cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        n_warnings = len(self.job.warnings)
        state = self.job.step()
        for message in self.job.warnings[n_warnings:]:
            self.report({"WARNING"}, message)
        job = context.window_manager.emoca_job
        job.progress, job.stage, job.fps = self.job.progress, self.job.stage, self.job.fps
        job.eta = float(self.job.eta) if self.job.eta is not None else -1.0
        context.window_manager.progress_update(int(job.progress * 1000))
        if state in ("failed", "cancelled"):
            self._stop(context, f"Capture {state}: {self.job.error.message if self.job.error else ''}")
            self.report({"ERROR"}, str(self.job.error))
            return {"CANCELLED"}
        if state == "done":
            return self._complete(context, self.job.rig_file)
        for area in context.screen.areas if context.screen else []:
            if area.type in ("VIEW_3D", "CLIP_EDITOR"):
                area.tag_redraw()
        return {"RUNNING_MODAL"}

    def _complete(self, context, rig_file):
        self._stop(context, "")
        try:
            return self._finish_apply(context, self.job.take_files, rig_file)
        except EmocaError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}

    def _stop(self, context, message: str) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if self._proc is not None:
            self._proc.close(timeout=3)
            self._proc = None
        job = wm.emoca_job
        job.running = False
        job.message = message

    def cancel(self, context):  # Blender quits or the file is reloaded mid-capture
        self._stop(context, "")


def _print_progress(event: dict) -> None:
    if event.get("type") == "progress":
        eta = event.get("eta")
        loss = event.get("loss")
        print(
            f"[emoca] {event.get('stage')}: {event.get('done')}/{event.get('total')}"
            + (f" epoch {event['epoch']}" if "epoch" in event else "")
            + (f" loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            + (f" eta {eta:.0f}s" if isinstance(eta, (int, float)) else ""),
            flush=True,
        )
    elif event.get("type") in ("warning", "log"):
        print(f"[emoca] {event.get('message')}", flush=True)


# ---------------------------------------------------------------------------------------------------- training
def default_run_dir(config: str, blend_path: str = "") -> Path:
    """Where a run goes when no output folder is set: ``emoca_runs/<config>`` beside the .blend, else in home."""
    base = Path(blend_path).parent if blend_path else Path.home()
    return base / "emoca_runs" / config


def train_request(settings, blend_path: str = "") -> tuple[str, list[str]]:
    """(config, overrides) of the ``train`` request for the Train panel's settings (``Scene.emoca_train``).

    The output folder is always passed as an absolute path: the backend runs in its own working directory.
    """
    if settings.config == "CUSTOM":
        if not settings.config_path:
            raise EmocaError(
                "input_missing", "no training config file chosen", "Pick a config YAML or one of the shipped configs."
            )
        config = bpy.path.abspath(settings.config_path)
        if not os.path.isfile(config):
            raise EmocaError(
                "input_missing",
                f"training config not found: {config}",
                "Expected a YAML file (see backend/training/configs/ for examples).",
            )
    else:
        config = next((str(p) for p in properties.shipped_configs() if p.stem == settings.config), settings.config)
    name = Path(config).stem
    out = Path(bpy.path.abspath(settings.output_dir)) if settings.output_dir else default_run_dir(name, blend_path)
    overrides = [f"output_dir={out}"]
    if settings.data_dir:
        data = bpy.path.abspath(settings.data_dir)
        if not os.path.isdir(data):
            raise EmocaError(
                "input_missing", f"training data folder not found: {data}", "Expected a folder of images and/or videos."
            )
        overrides.append(f"data.train={data}")
    if settings.max_epochs > 0:
        overrides.append(f"learning.max_epochs={settings.max_epochs}")
    if settings.max_steps > 0:
        overrides.append(f"learning.max_steps={settings.max_steps}")
    try:
        extra = shlex.split(settings.overrides)
    except ValueError as exc:
        raise EmocaError("config_invalid", f"overrides {settings.overrides!r}: {exc}") from None
    bad = [o for o in extra if "=" not in o]
    if bad:
        raise EmocaError(
            "config_invalid",
            f"override {bad[0]!r} is not key=value",
            "Write overrides as key=value separated by spaces, e.g. learning.lr=1e-4.",
        )
    return config, overrides + extra


def sync_train_job(job_props, job: TrainJob) -> None:
    """Copy the TrainJob's progress into ``WindowManager.emoca_train_job`` (what the panel draws)."""
    job_props.progress, job_props.stage = job.progress, job.stage
    job_props.epoch, job_props.step, job_props.total = job.epoch, job.global_step, job.total
    job_props.loss = job.loss if job.loss is not None else -1.0
    job_props.eta = float(job.eta) if isinstance(job.eta, (int, float)) else -1.0


class EMOCA_OT_train(bpy.types.Operator):
    """Train EMOCA's expression encoder with the backend (Esc or Stop ends it; the run folder can then be used
    as the capture model)"""

    bl_idname = "emoca.train"
    bl_label = "Train"
    bl_options = {"REGISTER"}  # changes no scene data: nothing to undo

    _timer = None
    _proc: BackendProcess | None = None
    job: TrainJob | None = None

    def _begin(self, context) -> None:
        config, overrides = train_request(context.scene.emoca_train, bpy.data.filepath)
        self._proc = BackendProcess(backend_python(context))
        self.job = TrainJob(self._proc, config, overrides)
        self.job.start()
        props = context.window_manager.emoca_train_job
        props.running, props.stop_requested = True, False
        props.progress, props.stage, props.epoch, props.step, props.total = 0.0, "starting", 0, 0, -1
        props.loss, props.eta, props.model_folder, props.checkpoint = -1.0, -1.0, "", ""
        props.message = f"Training {Path(config).stem} (Esc or Stop ends it)"

    def _tick(self, context) -> str:
        n_warnings = len(self.job.warnings)
        state = self.job.step()
        for message in self.job.warnings[n_warnings:]:
            self.report({"WARNING"}, message)
        sync_train_job(context.window_manager.emoca_train_job, self.job)
        return state

    def _end(self, context, state: str):
        """Close the backend, record the result in the job properties and report; returns the operator result."""
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
            wm.progress_end()
        if self._proc is not None:
            self._proc.close(timeout=3)
            self._proc = None
        props = wm.emoca_train_job
        props.running, props.stop_requested = False, False
        if state == "done":
            props.model_folder, props.checkpoint = self.job.model_folder, self.job.checkpoint or ""
            props.capture_loadable = self.job.capture_loadable is not False
            props.message = f"Trained: {self.job.model_folder}"
            self.report({"INFO"}, f"Training finished: {self.job.model_folder}")
            return {"FINISHED"}
        if state == "cancelled":
            props.message = "Training stopped (checkpoints written so far stay in the output folder)"
            self.report({"WARNING"}, "Training stopped")
        else:
            props.message = f"Training failed: {self.job.error.message if self.job.error else ''}".splitlines()[0]
            self.report({"ERROR"}, str(self.job.error))
        return {"CANCELLED"}

    # ---- blocking path (background mode, scripts: bpy.ops.emoca.train())
    def execute(self, context):
        if context.window_manager.emoca_train_job.running:
            self.report({"WARNING"}, "A training is already running")
            return {"CANCELLED"}
        try:
            self._begin(context)
        except EmocaError as exc:
            return self._fail_start(context, exc)
        props = context.window_manager.emoca_train_job
        state, printed = "running", 0
        while state == "running":
            time.sleep(0.1)
            state = self._tick(context)
            if props.stop_requested:
                self.job.cancel()
                state = self.job.state
            if self.job.n_progress > printed and state == "running":
                printed = self.job.n_progress
                _print_train(props)
        return self._end(context, state)

    def _fail_start(self, context, exc: EmocaError):
        if self._proc is not None:
            self._proc.close(timeout=1)
            self._proc = None
        context.window_manager.emoca_train_job.running = False
        self.report({"ERROR"}, str(exc))
        return {"CANCELLED"}

    # ---- modal path (the UI): stepped by a 0.1 s timer
    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if context.window_manager.emoca_train_job.running:
            self.report({"WARNING"}, "A training is already running")
            return {"CANCELLED"}
        try:
            self._begin(context)
        except EmocaError as exc:
            return self._fail_start(context, exc)
        wm = context.window_manager
        wm.progress_begin(0, 1000)
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        props = context.window_manager.emoca_train_job
        if event.type == "ESC" or props.stop_requested:
            self.job.cancel()
            return self._end(context, "cancelled")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._tick(context)
        context.window_manager.progress_update(int(props.progress * 1000))
        if state != "running":
            return self._end(context, state)
        for area in context.screen.areas if context.screen else []:
            if area.type == "VIEW_3D":
                area.tag_redraw()
        return {"RUNNING_MODAL"}

    def cancel(self, context):  # Blender quits or the file is reloaded mid-training
        if self.job is not None:
            self.job.cancel()
        self._end(context, "cancelled")


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


def _print_train(props) -> None:
    loss = f" loss {props.loss:.4f}" if props.loss >= 0 else ""
    total = f"/{props.total}" if props.total > 0 else ""
    print(f"[emoca] train: epoch {props.epoch} step {props.step}{total}{loss}", flush=True)


CLASSES = (
    EMOCA_OT_import_rig,
    EMOCA_OT_apply_take,
    EMOCA_OT_capture,
    EMOCA_OT_train,
    EMOCA_OT_train_stop,
    EMOCA_OT_use_trained_model,
)
