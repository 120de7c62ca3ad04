"""User-facing errors of the add-on (stdlib only).

Mirrors ``backend.errors.BackendError`` (same codes, docs/troubleshooting.md) without importing the backend:
the add-on runs inside Blender's Python, which has none of the backend's dependencies.
"""

from __future__ import annotations

HINTS: dict[str, str] = {
    "input_missing": "Check the path; the file or folder does not exist.",
    "input_unsupported": "Use a video file (mp4, mov, mkv, ...), an image sequence folder or an image.",
    "input_corrupt": "The file could not be read; capture the take again.",
    "input_empty": "The take has no valid frames in the chosen range.",
    "asset_missing": "Set the backend and asset paths in the add-on preferences and press Check.",
    "asset_invalid": "The file is not in the expected layout; export it again with `python -m backend export-rig`.",
    "cancelled": "The job was cancelled; nothing was written.",
    "protocol": "The backend's answer was not understood; update the add-on and backend together.",
    "config_invalid": "Fix the option named in the message.",
    "internal": "This is a bug; please report it with the log.",
}


class EmocaError(Exception):
    """A failure the user can act on: a stable ``code`` (shared with the backend), a message and a hint."""

    def __init__(self, code: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint if hint is not None else HINTS.get(code, "")

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" + (f" ({self.hint})" if self.hint else "")
