"""Error codes shared by the command line, the stdio protocol and the Blender add-on (stdlib only).

Every failure a user can cause (bad footage, missing assets, unsafe files, malformed takes) is raised as an
:class:`EmocaError` with a stable code, a human message and a hint that says what to do. The backend raises it,
the protocol carries it (``error`` events), the add-on raises the same class with the same codes.
docs/troubleshooting.md lists every code with its fix; a test checks the two agree.
"""

from __future__ import annotations

# code -> default hint. Keep in sync with docs/troubleshooting.md (tests/test_protocol.py checks it).
ERROR_CODES: dict[str, str] = {
    "input_missing": "Check the path; the file or folder does not exist.",
    "input_unsupported": "Use a video file (mp4, mov, mkv, ...), an image sequence folder or an image.",
    "input_corrupt": "The file could not be decoded; re-export or re-encode the footage.",
    "input_empty": "The footage has no frames in the chosen range; check the frame range.",
    "no_face": "No face was found; check lighting, framing and that the face is not too small.",
    "face_not_found": "The chosen face track does not exist; list the tracks or capture 'largest'.",
    "asset_missing": "Run `python -m backend assets status` to see what is missing and where it goes.",
    "asset_invalid": "The file is not in the expected official layout; re-download or re-import it.",
    "unsafe_file": "The file contains objects that are not plain data; it was refused for safety.",
    "checkpoint_mismatch": "The checkpoint does not fit this network; check the model folder and cfg.yaml.",
    "flame_mismatch": "The checkpoint was trained with a different FLAME model than the one configured.",
    "device_unavailable": "Choose --device cpu or install a CUDA build of PyTorch.",
    "cancelled": "The job was cancelled; nothing was written.",
    "worker_lost": "A capture worker process died on this clip (a crash, out of memory, a lost machine) as often as "
    "it was retried; check the clip and the machine's memory, then run the batch again: finished takes are skipped.",
    "output_busy": "Another capture is writing the same output; wait for it to finish or choose another output.",
    "output_unwritable": "Choose an output folder you can write to, with free space; a take already there is "
    "left as it was.",
    "protocol": "The request was not understood; update the add-on and backend together.",
    "config_invalid": "Fix the configuration value named in the message.",
    "download_failed": "Check your credentials and network, then run the command again (it resumes).",
    "backend_missing": "Press Create Backend Environment in the add-on's preferences (Edit > Preferences > "
    "Add-ons > EMOCA for Blender), or set Backend Python to an interpreter with the backend's requirements.",
    "online_access_off": "Allow Online Access in Edit > Preferences > System > Network, then press the button "
    "again; or create the environment yourself (docs/install.md) and set Backend Python.",
    "internal": "This is a bug; please report it with the log.",
}


class EmocaError(Exception):
    """A user-facing failure with a stable ``code`` (a key of ERROR_CODES), a ``message`` and a ``hint``."""

    def __init__(self, code: str, message: str, hint: str | None = None):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint if hint is not None else ERROR_CODES[code]

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def report(self) -> str:
        """One line for a UI report: code, message and hint."""
        return f"[{self.code}] {self.message}" + (f" ({self.hint})" if self.hint else "")

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    @classmethod
    def from_dict(cls, event: dict, extra: str = "") -> EmocaError:
        """The error an ``error`` event describes (an unknown code becomes ``internal``, keeping the message)."""
        code = str(event.get("code") or "internal")
        message = str(event.get("message") or "backend error") + (f"\n{extra}" if extra else "")
        hint = event.get("hint")
        if code not in ERROR_CODES:
            return cls("internal", f"[{code}] {message}", None if hint is None else str(hint))
        return cls(code, message, None if hint is None else str(hint))
