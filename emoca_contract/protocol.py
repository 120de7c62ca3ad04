"""The stdio protocol between the Blender add-on and the backend (stdlib only: the add-on imports it too).

One JSON object per line. Every message has ``type`` and ``version`` (PROTOCOL_VERSION); requests carry an
``id`` that the events answering them repeat. Anything the backend prints that is not protocol goes to stderr.
See docs/formats.md#protocol.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1

REQUEST_TYPES = ("capture", "export_rig", "train", "status", "cancel")
EVENT_TYPES = ("progress", "log", "warning", "result", "error")

# Required fields per message type (beyond type/version).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "capture": ("id", "input", "output"),
    "export_rig": ("id", "output"),
    "train": ("id", "config"),
    "status": ("id",),
    "cancel": ("id",),
    "progress": ("id", "done", "total", "stage"),
    "log": ("message",),
    "warning": ("message",),
    "result": ("id", "files"),
    "error": ("code", "message"),
}


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


def make(type_: str, **fields: Any) -> dict:
    """Build a message dict of ``type_`` with the protocol version, checking required fields."""
    if type_ not in REQUIRED_FIELDS:
        raise ProtocolError(f"unknown message type {type_!r}")
    msg = {"type": type_, "version": PROTOCOL_VERSION, **fields}
    validate(msg)
    return msg


def validate(msg: Any) -> dict:
    """Raise ProtocolError unless ``msg`` is a well-formed message of this protocol version."""
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    type_ = msg.get("type")
    if type_ not in REQUIRED_FIELDS:
        raise ProtocolError(f"unknown message type {type_!r}")
    if msg.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {msg.get('version')!r} is not supported (this side speaks {PROTOCOL_VERSION})"
        )
    missing = [k for k in REQUIRED_FIELDS[type_] if k not in msg]
    if missing:
        raise ProtocolError(f"{type_} message lacks {', '.join(missing)}")
    return msg


def encode(msg: dict) -> str:
    """One line of JSON (no embedded newlines), terminated by a newline."""
    return json.dumps(msg, ensure_ascii=True, separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> dict:
    """Parse and validate one line."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {line[:80]!r}") from exc
    return validate(msg)


def progress(
    id_: str, done: int, total: int, stage: str, fps: float | None = None, eta: float | None = None, **extra: Any
) -> dict:
    return make("progress", id=id_, done=done, total=total, stage=stage, fps=fps, eta=eta, **extra)


def error(code: str, message: str, hint: str | None = None, id_: str | None = None) -> dict:
    return make("error", id=id_, code=code, message=message, hint=hint)
