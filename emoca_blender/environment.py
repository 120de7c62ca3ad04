"""The backend's Python environment: which interpreter runs the backend, whether it works, how one is made.

Conventions:
* The backend never runs on Blender's own Python in silence: that interpreter has none of torch, PyAV or
  MediaPipe. The interpreter is, in order, the one configured (preferences, then ``$EMOCA_BACKEND_PYTHON``), the
  environment *Create Backend Environment* made (only once its installation finished: :func:`mark_ready`), else
  the interpreter running ``bpy`` when that is not Blender's (``bpy`` as a module inside the backend's venv);
  nothing found is ``EmocaError('backend_missing')`` with the fix in the hint.
* "Works" means: the interpreter imports numpy, torch, av and mediapipe, and the bundled ``backend`` package
  reports the add-on's version (:func:`probe_command` runs that check in the interpreter itself; Blender's
  Python never imports any of them).
* The environment made here lives in the extension's user folder and mirrors the Makefile's ``env`` target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import bpy

from emoca_contract.errors import EmocaError

from .client import requirements_dir

PACKAGE = __package__ or "emoca_blender"
READY_MARKER = ".emoca_ready"  # written when every installation step succeeded
PROBE_MODULES = ("numpy", "torch", "av", "mediapipe")  # what the backend cannot run without
PROBE_MISSING_STATUS = 3  # the probe's exit status when something is missing

# Runs in the backend's interpreter (stdlib only until it imports the modules it checks): one JSON line.
PROBE = f"""
import importlib, json, sys
found, missing = {{}}, {{}}
for name in {PROBE_MODULES!r}:
    try:
        found[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as exc:
        missing[name] = f"{{type(exc).__name__}}: {{exc}}"
try:
    from backend import __version__ as backend
except Exception as exc:
    backend, missing["backend"] = None, f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"python": sys.version.split()[0], "executable": sys.executable, "found": found,
                  "missing": missing, "backend": backend}}))
sys.exit({PROBE_MISSING_STATUS} if missing else 0)
"""


def env_dir() -> Path:
    """Where the backend venv lives: the extension's user folder (or a user data folder in a dev checkout).
    Nothing is created here: only Create Backend Environment makes the folder."""
    try:
        return Path(bpy.utils.extension_path_user(PACKAGE, path="backend_env", create=False))
    except (ValueError, RuntimeError, TypeError):  # not installed as an extension
        return Path(bpy.utils.user_resource("DATAFILES", path=f"{PACKAGE}/backend_env", create=False))


def venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def mark_ready(root: Path) -> None:
    """Record that the environment at ``root`` finished installing (its interpreter may now run the backend)."""
    (root / READY_MARKER).write_text("ready\n", encoding="utf-8")


def clear_ready(root: Path) -> None:
    """Forget that ``root`` was ready (before it is installed into again)."""
    (root / READY_MARKER).unlink(missing_ok=True)


def created_python(root: Path) -> Path | None:
    """The interpreter of the environment made at ``root``, or None when it is missing or never finished."""
    python = venv_python(root)
    return python if python.exists() and (root / READY_MARKER).is_file() else None


def own_python(binary_path: str | None = None, executable: str | None = None) -> str | None:
    """The interpreter running ``bpy`` when it may run the backend: None inside the Blender application
    (``binary_path`` set: ``executable`` is Blender's bundled Python), the interpreter itself when ``bpy`` is a
    module (the backend's venv in a checkout)."""
    binary_path = bpy.app.binary_path if binary_path is None else binary_path
    return None if binary_path else (executable if executable is not None else sys.executable)


def choose_backend_python(configured: str, from_env: str, created: Path | None, own: str | None) -> str:
    """The first of: the configured interpreter (preferences), ``$EMOCA_BACKEND_PYTHON``, the environment made
    by Create Backend Environment, ``own`` (:func:`own_python`); none: ``backend_missing``."""
    for candidate in (configured, from_env, str(created) if created is not None else "", own or ""):
        if candidate:
            return candidate
    raise EmocaError(
        "backend_missing",
        "no backend environment: none is set in the preferences (Backend Python) or $EMOCA_BACKEND_PYTHON, and "
        "Create Backend Environment has not finished one (Blender's own Python cannot run the backend)",
    )


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


def probe_command(python: str) -> list[str]:
    """The command that checks ``python`` can run the backend (run it with client.backend_env(), in the
    backend's parent folder); :func:`read_probe` reads its output."""
    return [python, "-c", PROBE]


def read_probe(stdout: str, returncode: int, python: str, expected_version: str) -> dict[str, Any]:
    """The probe's report (python, executable, found, missing, backend) when ``python`` can run this add-on's
    backend; otherwise ``backend_missing`` naming what is missing, or the version that does not match."""
    try:
        report = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict) or returncode not in (0, PROBE_MISSING_STATUS):
        raise EmocaError("backend_missing", f"{python} could not be run as the backend's Python (status "
                         f"{returncode}): {stdout.strip()[-300:] or 'no output'}")  # fmt: skip
    missing = dict(report.get("missing") or {})
    if missing:
        names = ", ".join(missing)
        detail = "; ".join(f"{k}: {v}" for k, v in missing.items())[:400]
        raise EmocaError("backend_missing", f"the backend environment {python} lacks {names} ({detail})")
    if report.get("backend") != expected_version:
        raise EmocaError(
            "backend_missing",
            f"{python} runs backend {report.get('backend')!r}, but this add-on is {expected_version!r}",
            "Reinstall the extension (its zip bundles the matching backend), then press Check again.",
        )
    return report


def probe_line(report: dict[str, Any]) -> str:
    """The Check report's first line for a working environment."""
    found = report["found"]
    modules = ", ".join(f"{name} {found[name]}" for name in PROBE_MODULES if name in found)
    return f"backend: ok - Python {report['python']} ({report['executable']}); {modules}; backend {report['backend']}"
