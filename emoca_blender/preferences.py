"""Add-on preferences: the backend interpreter, asset locations, device, capture defaults, and the setup actions.

The setup actions, each a :class:`~.steps.StepRun` (progress, log and Stop where the buttons are; one at a time):
* *Create Backend Environment* makes a venv in the extension's user folder and installs the bundled backend's
  pinned requirements exactly as the Makefile's ``env`` target does (``-c constraints.txt -r backend.txt``, then
  ``--no-deps -r nodeps.txt``): about 2.5 GB from PyPI, so only with Blender's *Allow Online Access* on (the
  manifest declares the ``network`` permission for it). On failure the pip log is shown (and kept in the Text
  datablock ``EMOCA pip log``); the environment is used only once every step finished.
* *Check* tests the environment first (environment.probe_command: torch, av, mediapipe, the backend's version),
  then lists the FLAME/model paths set here and every installed asset (``assets status --json``), saying which
  installed ones the paths set here replace.
* *Import Assets* runs the backend's ``assets import`` on the picked zips/folders/files, then shows the status.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from emoca_contract import __version__
from emoca_contract.errors import EmocaError

from . import client, environment
from .steps import SetupOperator, Step, StepRun

PACKAGE = __package__
DEVICES = [
    ("auto", "Auto", "CUDA when available, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("cpu", "CPU", "The processor"),
]
STATUS_TIMEOUT_S = 300.0  # the probe imports torch and mediapipe; a cold disk makes that slow


def get_prefs(context=None):
    """The add-on preferences, or None when the add-on is not registered as an add-on (e.g. plain import)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE) if context.preferences else None
    return addon.preferences if addon is not None else None


def backend_python(context=None) -> str:
    """The interpreter that runs the backend (environment.choose_backend_python): the preference, then
    $EMOCA_BACKEND_PYTHON, the finished created environment, the interpreter running bpy when it is not
    Blender's; none of them: EmocaError('backend_missing')."""
    prefs = get_prefs(context)
    configured = bpy.path.abspath(prefs.backend_python) if prefs is not None and prefs.backend_python else ""
    return environment.choose_backend_python(
        configured,
        os.environ.get("EMOCA_BACKEND_PYTHON", ""),
        environment.created_python(environment.env_dir()),
        environment.own_python(),
    )


def smoothing_options(strength: float) -> dict:
    """The backend's smoothing options for a 0..1 strength slider (0 = off: the raw values)."""
    # Explicit method both ways: the scene's setting must override the preferences' default in either direction.
    return {"smooth": "off"} if strength <= 0 else {"smooth": "butterworth", "smooth_strength": float(strength)}


def flame_file(context=None) -> str | None:
    """The FLAME model file set in the preferences (absolute), or None: the backend's default."""
    prefs = get_prefs(context)
    return bpy.path.abspath(prefs.flame_path) if prefs is not None and prefs.flame_path else None


def capture_options(settings=None, context=None, **overrides) -> dict:
    """The capture request's ``options`` from the preferences' defaults, the scene settings and ``overrides``."""
    prefs = get_prefs(context)
    opts: dict = {}
    if prefs is not None:
        if prefs.emoca_model:
            opts["model"] = bpy.path.abspath(prefs.emoca_model)
        if prefs.flame_path:
            opts["flame"] = bpy.path.abspath(prefs.flame_path)
        if prefs.emotion_path:
            opts["emotion"] = bpy.path.abspath(prefs.emotion_path)
        opts["device"] = prefs.device
        opts["batch_size"] = prefs.batch_size
        opts.update(smoothing_options(prefs.smooth))
    if settings is not None:
        opts["face"] = settings.face_track if settings.face == "TRACK" else settings.face
        opts.update(smoothing_options(settings.smooth))
        end = "" if settings.frame_end < 0 else str(settings.frame_end + 1)
        if settings.frame_start or end or settings.frame_step != 1:
            opts["frames"] = f"{settings.frame_start}:{end}:{settings.frame_step}"
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


STATUS_FORMAT = "emoca-assets-status"  # the ``assets status --json`` document (docs/assets.md), version 1+
# The preferences' asset paths: (label, how the path must look, what it replaces among the installed assets).
PREFERENCE_PATHS = {
    "flame": ("FLAME Model", "a file", "capture and Import Rig use the FLAME Model set in the preferences"),
    "model": ("EMOCA Model Folder", "a folder with cfg.yaml (or a deca_model.tar)",
              "capture uses the EMOCA Model Folder set in the preferences"),
    "emotion": ("Emotion Network", "a file or folder", "capture uses the Emotion Network set in the preferences"),
}  # fmt: skip


def preference_paths(prefs) -> dict[str, str]:
    """The asset paths set in the preferences (absolute; "" where unset): keys of PREFERENCE_PATHS."""
    if prefs is None:
        return dict.fromkeys(PREFERENCE_PATHS, "")
    values = {"flame": prefs.flame_path, "model": prefs.emoca_model, "emotion": prefs.emotion_path}
    return {k: bpy.path.abspath(v) if v else "" for k, v in values.items()}


def _path_fits(kind: str, path: Path) -> bool:
    if kind == "flame":
        return path.is_file()
    if kind == "model":
        return (path / "cfg.yaml").is_file() or (path.is_file() and path.suffix == ".tar")
    return path.exists()


def preference_lines(paths: dict[str, str]) -> list[str]:
    """One Check line per asset path set in the preferences: ``found - path`` or ``MISSING - what it must be``."""
    lines = []
    for kind, path in paths.items():
        if not path:
            continue
        label, shape, _ = PREFERENCE_PATHS[kind]
        state = "found - " if _path_fits(kind, Path(path)) else f"MISSING - expected {shape}: "
        lines.append(f"{label} (preferences): {state}{path}")
    return lines


def replaced_assets(document: dict, paths: dict[str, str]) -> dict[str, str]:
    """Installed asset key -> why it is not what capture uses: the path set in the preferences replaces it."""
    out: dict[str, str] = {}
    for item in document["assets"]:
        if paths.get("flame") and item["key"] in ("flame2020", "flame2023"):
            out[item["key"]] = PREFERENCE_PATHS["flame"][2]
        elif paths.get("model") and item.get("group") == "capture_model":
            out[item["key"]] = PREFERENCE_PATHS["model"][2]
        elif paths.get("emotion") and "emotion" in item.get("required_for", ()):
            out[item["key"]] = PREFERENCE_PATHS["emotion"][2]
    return out


def read_status(text: str) -> dict:
    """The ``assets status --json`` document; anything else raises EmocaError('protocol')."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EmocaError("protocol", f"`assets status --json` wrote no JSON ({exc}): {text[:200]!r}") from None
    found = (document.get("format"), document.get("version")) if isinstance(document, dict) else (None, None)
    if found[0] != STATUS_FORMAT or not isinstance(found[1], int) or found[1] < 1:
        raise EmocaError(
            "protocol", f"`assets status --json` wrote {found[0]!r} version {found[1]!r}, not {STATUS_FORMAT!r}"
        )
    return document


def format_status(document: dict, replaced: dict[str, str] | None = None) -> str:
    """One line per asset: ``key: found - path``, else ``key: MISSING`` or ``key: invalid`` (`` (optional)``
    where the asset is) followed by what it is and where it goes; ``replaced`` (key -> why) is appended."""
    lines = []
    for item in document["assets"]:
        usable = item["present"] and item["valid"] is not False
        word = "found" if usable else ("invalid" if item["present"] else "MISSING")
        if not usable and item["optional"]:
            word += " (optional)"
        parts = [item["path"]] if usable else [item["message"], item["description"], item["path"]]
        parts.append((replaced or {}).get(item["key"], ""))
        detail = "; ".join(str(p) for p in parts if p)
        lines.append(f"{item['key']}: {word}" + (f" - {detail}" if detail else ""))
    return "\n".join(lines)


def check_lines(document: dict, paths: dict[str, str]) -> list[str]:
    """The Check report after its first (environment) line: the preferences' paths, the assets folder, what
    capture, rigs and emotion will use, then every asset."""
    caps = document.get("capabilities", {})
    lines = preference_lines(paths)
    lines.append(f"assets folder: {document.get('root')} (from {document.get('root_source')})")
    lines += [f"{name}: {caps[name]['message']}" for name in ("capture", "rig", "emotion") if name in caps]
    return lines + format_status(document, replaced_assets(document, paths)).splitlines()


def missing_line(exc: EmocaError) -> str:
    """The Check report's first line when the environment cannot run the backend."""
    return f"backend: MISSING - {exc.message} ({exc.hint})".replace("\n", " ")


def status_step(python: str) -> Step:
    return Step("Listing the assets", [python, "-m", "backend", "assets", "status", "--json"], capture=True,
                timeout=STATUS_TIMEOUT_S)  # fmt: skip


def backend_run(steps: list[Step], log_path: Path | None = None, **hooks: Any) -> StepRun:
    """Steps that run the bundled backend (its folder as the working directory, its environment)."""
    return StepRun(steps, log_path=log_path, env=client.backend_env(), cwd=str(client.backend_root().parent), **hooks)


def existing_python(context) -> str:
    python = backend_python(context)
    if not Path(python).exists():
        raise EmocaError("backend_missing", f"backend Python not found: {python}")
    return python


ENV_LABELS = (
    "Creating the virtual environment",
    "Installing PyTorch, PyAV and the backend's other requirements (about 2.5 GB)",
    "Installing MediaPipe and the packages that are installed without dependencies",
)


def online_access_error() -> EmocaError:
    where = " (turned off on Blender's command line: --offline-mode)" if bpy.app.online_access_override else ""
    return EmocaError(
        "online_access_off",
        f"Blender's Allow Online Access is off{where}: Create Backend Environment downloads about 2.5 GB of "
        "Python packages (PyTorch, PyAV, MediaPipe, ...) from PyPI",
    )


def prepare_env(target: Path) -> None:
    """Before installing into ``target``: its folder exists, and it no longer counts as ready until done."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        environment.clear_ready(target)


class EMOCA_OT_create_env(bpy.types.Operator, SetupOperator):
    """Create a Python environment for the backend and install its pinned requirements (downloads about 2.5 GB;
    needs Blender's Allow Online Access)"""

    bl_idname = "emoca.create_env"
    bl_label = "Create Backend Environment"
    setup_noun = "Backend environment creation"

    def make_run(self, context) -> StepRun:
        if not bpy.app.online_access:
            raise online_access_error()
        self.target = environment.env_dir()
        commands = environment.env_steps(sys.executable, self.target)
        return backend_run(
            [Step(label, command) for label, command in zip(ENV_LABELS, commands)],
            log_path=self.target.parent / "backend_env_pip.log",
            before=lambda: prepare_env(self.target),
            after=lambda: environment.mark_ready(self.target),
        )

    def failed(self, context, props, run: StepRun) -> EmocaError:
        log = run.log_tail(2000)
        text = bpy.data.texts.get("EMOCA pip log") or bpy.data.texts.new("EMOCA pip log")
        text.from_string(log)
        props.log = log[-2000:]
        return EmocaError(
            "backend_missing",
            f"creating the backend environment failed: {run.failure} (log: {run.log_path})",
            "See the pip log below (also the Text 'EMOCA pip log'); check the network and that about 2.5 GB are "
            "free, then press Create Backend Environment again: it continues where it stopped.",
        )

    def finish(self, context, props, run: StepRun) -> set[str]:
        prefs = get_prefs(context)
        if prefs is not None:
            prefs.backend_python = str(environment.venv_python(self.target))
        props.message = "Backend environment ready: press Check"
        self.report({"INFO"}, props.message)
        return {"FINISHED"}


class EMOCA_OT_check_assets(bpy.types.Operator, SetupOperator):
    """Test the backend environment (torch, PyAV, MediaPipe, the backend's version), then list the paths set in
    the preferences and which assets (FLAME, EMOCA model, emotion network) are installed"""

    bl_idname = "emoca.check_assets"
    bl_label = "Check"
    setup_noun = "Check"

    def make_run(self, context) -> StepRun:
        try:
            self.python = existing_python(context)
        except EmocaError as exc:
            context.window_manager.emoca_setup_job.check_report = missing_line(exc)
            raise
        self.paths = preference_paths(get_prefs(context))
        probe = Step("Checking the backend environment", environment.probe_command(self.python), capture=True,
                     timeout=STATUS_TIMEOUT_S)  # fmt: skip
        return backend_run([probe, status_step(self.python)])

    def _probe(self, run: StepRun) -> dict:
        return environment.read_probe(run.outputs[0], run.returncodes[0], self.python, __version__)

    def failed(self, context, props, run: StepRun) -> EmocaError:
        if not run.returncodes:  # the interpreter could not be started
            error = EmocaError("backend_missing", f"{self.python} could not be run: {run.failure}")
        elif len(run.returncodes) == 1:  # the probe: what is missing
            try:
                self._probe(run)
                error = EmocaError("internal", f"the environment check failed: {run.failure}")
            except EmocaError as exc:
                error = exc
        else:
            error = client.cli_error(run.errors[1], "`assets status`")
        props.check_report = missing_line(error) if error.code == "backend_missing" else f"error: {error.report()}"
        return error

    def finish(self, context, props, run: StepRun) -> set[str]:
        try:
            probe = self._probe(run)
        except EmocaError as exc:
            props.check_report = missing_line(exc)
            raise
        props.check_report = "\n".join([environment.probe_line(probe), *check_lines(read_status(run.outputs[1]),
                                                                                   self.paths)])  # fmt: skip
        props.message = "Check done"
        self.report({"INFO"}, "Asset check done")
        return {"FINISHED"}


def import_paths(directory: str, names: list[str]) -> list[str]:
    """The picked files (``names`` in ``directory``), or the picked folder itself when no file was picked."""
    if not directory and not names:
        raise EmocaError("input_missing", "nothing was picked to import", "Pick the downloaded zips or folders.")
    paths = [str(Path(directory) / n) for n in names if n] or [directory]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise EmocaError("input_missing", f"not found: {missing[0]}")
    return paths


class EMOCA_OT_import_assets(bpy.types.Operator, SetupOperator):
    """Import the downloaded asset zips, folders or files (FLAME, EMOCA/DECA models, emotion networks) into the
    assets folder with the backend, then show what is installed"""

    bl_idname = "emoca.import_assets"
    bl_label = "Import Assets"
    setup_noun = "Asset import"

    filter_glob: StringProperty(
        default="*.zip;*.pkl;*.npy;*.npz;*.tar;*.ckpt;*.pt;*.pth;*.obj;*.png;*.yaml",
        options={"HIDDEN"},
        description="The kinds of files the official downloads contain",
    )
    files: CollectionProperty(
        type=bpy.types.OperatorFileListElement,
        options={"HIDDEN", "SKIP_SAVE"},
        description="The picked files (none: the picked folder is imported whole)",
    )
    directory: StringProperty(
        subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"}, description="The folder the files were picked in"
    )
    force: BoolProperty(
        name="Replace Installed", default=False, description="Replace assets that are already installed and valid"
    )

    def invoke(self, context, event):
        if context.window_manager.emoca_setup_job.running:
            return self.execute(context)  # refuses: a setup is running
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def make_run(self, context) -> StepRun:
        paths = import_paths(bpy.path.abspath(self.directory) if self.directory else "", [f.name for f in self.files])
        python = existing_python(context)
        command = [python, "-m", "backend", "assets", "import", *paths, *(["--force"] if self.force else [])]
        label = f"Importing {len(paths)} item(s)"
        return backend_run([Step(label, command, capture=True), status_step(python)])

    def failed(self, context, props, run: StepRun) -> EmocaError:
        what = "`assets import`" if len(run.returncodes) <= 1 else "`assets status`"
        text = run.errors[-1] if run.errors else run.failure
        error = client.cli_error(text, what)
        props.check_report = f"error: {error.report()}"
        return error

    def finish(self, context, props, run: StepRun) -> set[str]:
        document = read_status(run.outputs[1])
        placed = [line.strip() for line in run.outputs[0].splitlines() if line.startswith("  ")]
        lines = [f"imported: {len(placed)} file(s) into {document.get('root')}", *format_status(document).splitlines()]
        props.check_report = "\n".join(lines)
        props.message = f"Imported {len(placed)} file(s)"
        self.report({"INFO"}, props.message)
        return {"FINISHED"}


class EMOCA_OT_setup_stop(bpy.types.Operator):
    """Stop the running setup (its running command is ended and no further step starts)"""

    bl_idname = "emoca.setup_stop"
    bl_label = "Stop"

    @classmethod
    def poll(cls, context):
        return context.window_manager.emoca_setup_job.running

    def execute(self, context):
        context.window_manager.emoca_setup_job.stop_requested = True
        return {"FINISHED"}


def _draw_report(layout, setup) -> None:
    if setup.check_report:
        box = layout.box()
        for line in setup.check_report.splitlines():
            bad = "MISSING" in line or "invalid" in line or line.startswith("error")
            box.label(text=line, icon="ERROR" if bad else "CHECKMARK")
    if setup.log:
        box = layout.box()
        box.label(text="pip log (last lines):", icon="ERROR")
        for line in setup.log.splitlines()[-15:]:
            box.label(text=line)


def draw_preferences(layout, prefs, context) -> None:
    """The preferences: the interpreter and how to make one, the asset paths, Import Assets and Check; while a
    setup runs, its progress and Stop where its buttons are."""
    setup = context.window_manager.emoca_setup_job
    col = layout.column()
    col.prop(prefs, "backend_python")
    if setup.running:
        col.progress(factor=setup.progress, text=setup.stage)
        col.operator("emoca.setup_stop", icon="CANCEL")
    else:
        col.operator("emoca.create_env", icon="CONSOLE")
        if not bpy.app.online_access:
            col.label(text="Needs Allow Online Access (Preferences > System > Network): it downloads 2.5 GB",
                      icon="INFO")  # fmt: skip
    col.separator()
    for name in ("flame_path", "emoca_model", "emotion_path", "device", "batch_size", "smooth"):
        col.prop(prefs, name)
    if not setup.running:
        row = col.row(align=True)
        row.operator("emoca.import_assets", icon="IMPORT")
        row.operator("emoca.check_assets", icon="CHECKMARK")
    if setup.message:
        col.label(text=setup.message, icon="INFO")
    _draw_report(col, setup)


class EmocaPreferences(bpy.types.AddonPreferences):
    """EMOCA for Blender's preferences: the backend environment, the asset paths, the device, capture defaults"""

    bl_idname = PACKAGE

    backend_python: StringProperty(
        name="Backend Python", subtype="FILE_PATH", description="Interpreter of the backend environment (torch etc.)"
    )
    flame_path: StringProperty(name="FLAME Model", subtype="FILE_PATH", description="generic_model.pkl (FLAME 2020)")
    emoca_model: StringProperty(
        name="EMOCA Model Folder",
        subtype="DIR_PATH",
        description="A folder with cfg.yaml and checkpoints/ (empty: the backend's default)",
    )
    emotion_path: StringProperty(
        name="Emotion Network",
        subtype="FILE_PATH",
        description="Empty: the bundled 7-class network (valence/arousal estimated)",
    )
    device: EnumProperty(name="Device", items=DEVICES, default="auto", description="Where the networks run")
    batch_size: IntProperty(
        name="Batch Size", default=32, min=1, max=1024, description="Frames per network batch (lower: less memory)"
    )
    smooth: FloatProperty(
        name="Default Smoothing",
        default=0.5,
        min=0.0,
        max=1.0,
        description="Smoothing when a capture does not set it (0 = raw, 1 = strong)",
    )

    def draw(self, context):
        draw_preferences(self.layout, self, context)


CLASSES = (EMOCA_OT_create_env, EMOCA_OT_check_assets, EMOCA_OT_import_assets, EMOCA_OT_setup_stop, EmocaPreferences)
