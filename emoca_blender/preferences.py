"""Add-on preferences: the backend interpreter, asset locations, device, capture defaults, environment set-up.

``Create backend environment`` makes a venv in the extension's user folder and installs the bundled backend's
pinned requirements exactly as the Makefile's ``env`` target does (``-c constraints.txt -r backend.txt``, then
``--no-deps -r nodeps.txt``), running pip as subprocesses from a modal operator with progress; on failure the
pip log is shown (and kept in the Text datablock ``EMOCA pip log``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from emoca_contract.errors import EmocaError

from .client import backend_env, backend_root, requirements_dir

PACKAGE = __package__
DEVICES = [
    ("auto", "Auto", "CUDA when available, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("cpu", "CPU", "The processor"),
]


def get_prefs(context=None):
    """The add-on preferences, or None when the add-on is not registered as an add-on (e.g. plain import)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE) if context.preferences else None
    return addon.preferences if addon is not None else None


def env_dir() -> Path:
    """Where the backend venv lives: the extension's user folder (or a user data folder in a dev checkout)."""
    try:
        return Path(bpy.utils.extension_path_user(PACKAGE, path="backend_env", create=True))
    except (ValueError, RuntimeError, TypeError):
        return Path(bpy.utils.user_resource("DATAFILES", path=f"{PACKAGE}/backend_env", create=True))


def venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def backend_python(context=None) -> str:
    """The interpreter that runs the backend: preferences, $EMOCA_BACKEND_PYTHON, the created venv, else ours."""
    prefs = get_prefs(context)
    if prefs is not None and prefs.backend_python:
        return bpy.path.abspath(prefs.backend_python)
    if os.environ.get("EMOCA_BACKEND_PYTHON"):
        return os.environ["EMOCA_BACKEND_PYTHON"]
    try:
        venv = venv_python(env_dir())
        if venv.exists():
            return str(venv)
    except Exception:  # noqa: BLE001 - no user folder (bpy module in tests): fall through
        pass
    return sys.executable


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
        opts["face"] = int(settings.face) if settings.face.isdigit() else settings.face
        opts.update(smoothing_options(settings.smooth))
        end = "" if settings.frame_end < 0 else str(settings.frame_end + 1)
        if settings.frame_start or end or settings.frame_step != 1:
            opts["frames"] = f"{settings.frame_start}:{end}:{settings.frame_step}"
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


STATUS_FORMAT = "emoca-assets-status"  # the ``assets status --json`` document (docs/assets.md), version 1+


def check_assets(python: str) -> str:
    """Run ``python -m backend assets status --json``; return a readable found/missing report."""
    try:
        out = subprocess.run(
            [python, "-m", "backend", "assets", "status", "--json"],
            cwd=str(backend_root().parent),
            env=backend_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmocaError("asset_missing", f"could not run the backend with {python}: {exc}") from exc
    if out.returncode != 0:
        raise EmocaError("asset_missing", f"`assets status` failed ({out.returncode}): {out.stderr.strip()[-400:]}")
    return format_status(read_status(out.stdout))


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


def format_status(document: dict) -> str:
    """One line per asset: ``key: found - path``, else ``key: MISSING`` or ``key: invalid`` (`` (optional)``
    where the asset is) followed by what it is and where it goes."""
    lines = []
    for item in document["assets"]:
        usable = item["present"] and item["valid"] is not False
        word = "found" if usable else ("invalid" if item["present"] else "MISSING")
        if not usable and item["optional"]:
            word += " (optional)"
        parts = [item["path"]] if usable else [item["message"], item["description"], item["path"]]
        detail = "; ".join(str(p) for p in parts if p)
        lines.append(f"{item['key']}: {word}" + (f" - {detail}" if detail else ""))
    return "\n".join(lines)


def env_steps(base_python: str, target: Path) -> list[list[str]]:
    """The commands that build the backend venv (mirrors the Makefile's ``env`` target)."""
    req = requirements_dir()
    py = str(venv_python(target))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(req / "constraints.txt")]
    return [
        [base_python, "-m", "venv", str(target)],
        pip + ["-r", str(req / "backend.txt")],
        pip + ["--no-deps", "-r", str(req / "nodeps.txt")],
    ]


class EMOCA_OT_create_env(bpy.types.Operator):
    """Create a Python environment for the backend and install its pinned requirements (needs network)"""

    bl_idname = "emoca.create_env"
    bl_label = "Create Backend Environment"

    def _setup(self, context) -> None:
        target = env_dir()
        self.steps = env_steps(sys.executable, target)
        self.log_path = target.parent / "backend_env_pip.log"
        self.state: dict = {"step": 0, "done": False, "failed": None}  # written by the pip thread
        self._timer = None
        context.window_manager.progress_begin(0, len(self.steps))

    def _run(self, steps, log_path: Path) -> None:
        with open(log_path, "w", encoding="utf-8") as log:
            for i, cmd in enumerate(steps):
                self.state["step"] = i
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=backend_env())
                if proc.returncode != 0:
                    self.state["failed"] = f"step {i + 1} failed with status {proc.returncode}"
                    break
        self.state["done"] = True

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        self._setup(context)
        threading.Thread(target=self._run, args=(self.steps, self.log_path), daemon=True).start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        wm.emoca_job.message = "Creating the backend environment..."
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        wm = context.window_manager
        wm.progress_update(self.state["step"])
        wm.emoca_job.message = f"Backend environment: step {self.state['step'] + 1}/{len(self.steps)}"
        if not self.state["done"]:
            return {"RUNNING_MODAL"}
        return self._finish(context)

    def _finish(self, context):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
        wm.progress_end()
        log = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        if self.state["failed"]:
            text = bpy.data.texts.get("EMOCA pip log") or bpy.data.texts.new("EMOCA pip log")
            text.from_string(log)
            wm.emoca_job.env_log = log[-2000:]
            wm.emoca_job.message = "Environment creation failed: see the pip log below (Text 'EMOCA pip log')"
            self.report({"ERROR"}, f"Backend environment: {self.state['failed']} (log: {self.log_path})")
            return {"CANCELLED"}
        prefs = get_prefs(context)
        if prefs is not None:
            prefs.backend_python = str(venv_python(env_dir()))
        wm.emoca_job.env_log = ""
        wm.emoca_job.message = "Backend environment ready"
        self.report({"INFO"}, "Backend environment ready")
        return {"FINISHED"}

    def execute(self, context):
        self._setup(context)
        self._run(self.steps, self.log_path)
        return self._finish(context)


class EMOCA_OT_check_assets(bpy.types.Operator):
    """Ask the backend which assets (FLAME, EMOCA model, emotion network) are installed"""

    bl_idname = "emoca.check_assets"
    bl_label = "Check"

    def execute(self, context):
        job = context.window_manager.emoca_job
        try:
            job.check_report = check_assets(backend_python(context))
        except EmocaError as exc:
            job.check_report = f"error: {exc.report()}"
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        self.report({"INFO"}, "Asset check done")
        return {"FINISHED"}


class EmocaPreferences(bpy.types.AddonPreferences):
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
        layout = self.layout
        col = layout.column()
        row = col.row(align=True)
        row.prop(self, "backend_python")
        col.operator("emoca.create_env", icon="CONSOLE")
        col.separator()
        for name in ("flame_path", "emoca_model", "emotion_path", "device", "batch_size", "smooth"):
            col.prop(self, name)
        col.operator("emoca.check_assets", icon="CHECKMARK")
        job = context.window_manager.emoca_job
        box_text = job.check_report or ""
        if box_text:
            box = col.box()
            for line in box_text.splitlines():
                bad = "MISSING" in line or "invalid" in line or line.startswith("error")
                box.label(text=line, icon="ERROR" if bad else "CHECKMARK")
        if job.env_log:
            box = col.box()
            box.label(text="pip log (last lines):", icon="ERROR")
            for line in job.env_log.splitlines()[-15:]:
                box.label(text=line)


CLASSES = (EMOCA_OT_create_env, EMOCA_OT_check_assets, EmocaPreferences)
