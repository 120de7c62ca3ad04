"""The stdio protocol between the Blender add-on and the backend (stdlib only: the add-on imports it too).

One JSON object per line. Every message has ``type`` and ``version`` (PROTOCOL_VERSION); requests carry an
``id`` that the events answering them repeat. Anything the backend prints that is not protocol goes to stderr.
See docs/formats.md#protocol.

Field types: :data:`FIELDS` lists every message type's fields once, each with its wire type written as a Python
annotation over JSON's values: ``str``, ``int`` (never a bool), ``float`` (an int or a float, never a bool),
``bool``, ``None`` (null), ``list[T]``, ``tuple[T, ...]`` (a JSON array), ``dict[str, T]`` (an object), unions
``A | B`` and ``Any``; any other class matches its own instances only (what a Python caller may pass, never a
JSON value). :func:`validate` (and so :func:`decode` and :func:`make`) checks every field a message carries with
:func:`type_problem`; fields a type does not list are passed through unchecked (request-specific results, newer
minor additions). ``emoca_contract.fields`` applies the same checker to a dataclass's fields (capture options).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Union, get_args, get_origin

PROTOCOL_VERSION = 1

REQUEST_TYPES = ("capture", "export_rig", "train", "status", "cancel", "arkit_map", "face_landmarks", "likeness")
EVENT_TYPES = ("progress", "log", "warning", "result", "error")


class Field(NamedTuple):
    """One field of a message: its wire type and whether every message of the type must carry it."""

    want: Any
    required: bool = True


ID = str | int  # a request id (the add-on sends strings; JSON-RPC style numbers are accepted)
_OPTIONAL_PATH = Field(str | None, required=False)
_OPTIONAL_INT = Field(int | None, required=False)
_OPTIONAL_STR = Field(str | None, required=False)

# message type -> field -> Field (beyond type/version): the one table of the protocol's fields and their types.
FIELDS: dict[str, dict[str, Field]] = {
    "capture": {
        "id": Field(ID),
        "input": Field(str),
        "output": Field(str),
        "options": Field(dict[str, Any] | None, required=False),  # checked as capture options by the backend
        # a batch (docs/capture.md): the clips are ``input`` (which may itself be a folder, a glob or a manifest)
        # and ``inputs``; ``output`` is then the folder of their takes
        "inputs": Field(list[str] | None, required=False),
        "jobs": _OPTIONAL_INT,
        "overwrite": Field(bool | None, required=False),
        "ray": _OPTIONAL_STR,  # "local", "auto" or a cluster's address
        "ray_return": Field(bool | None, required=False),
    },
    "export_rig": {
        "id": Field(ID),
        "output": Field(str),
        "head": _OPTIONAL_STR,
        "flame": _OPTIONAL_PATH,
        "landmarks": _OPTIONAL_PATH,
        "shape_from": _OPTIONAL_PATH,
        "identity_from": Field(list[str] | None, required=False),  # takes of one performer (docs/likeness.md)
        "n_shape": _OPTIONAL_INT,
        "n_exp": _OPTIONAL_INT,
    },
    "train": {"id": Field(ID), "config": Field(str), "overrides": Field(list[str] | None, required=False)},
    "status": {"id": Field(ID)},
    "arkit_map": {  # the FLAME <-> ARKit map (retargeting): built once per FLAME model, cached
        "id": Field(ID),
        "head": _OPTIONAL_STR,
        "flame": _OPTIONAL_PATH,
        "landmarks": _OPTIONAL_PATH,
        "n_exp": _OPTIONAL_INT,
        "force": Field(bool | None, required=False),
    },
    "face_landmarks": {"id": Field(ID), "image": Field(str)},  # the detector on one image (a character's render)
    "likeness": {  # identity, texture, detail maps from a take and its footage (docs/likeness.md)
        "id": Field(ID),
        "take": Field(str),
        "video": _OPTIONAL_PATH,
        "output": _OPTIONAL_PATH,
        "identity": Field(bool | None, required=False),
        "texture": Field(bool | None, required=False),
        "detail": Field(bool | None, required=False),
        "identity_from": Field(list[str] | None, required=False),
        "flame": _OPTIONAL_PATH,
        "model": _OPTIONAL_PATH,
        "device": _OPTIONAL_STR,
        "texels": _OPTIONAL_INT,
        "frames": _OPTIONAL_INT,  # every n-th confident frame for the texture
        "focal": Field(float | None, required=False),
        "delight": Field(bool | None, required=False),
    },
    "cancel": {"id": Field(ID)},
    "progress": {
        "id": Field(ID),
        "done": Field(int),
        "total": Field(int),
        "stage": Field(str),
        "fps": Field(float | None, required=False),
        "eta": Field(float | None, required=False),
    },
    "log": {"id": Field(ID | None, required=False), "level": Field(str | None, required=False), "message": Field(str)},
    "warning": {
        "id": Field(ID | None, required=False),
        "code": Field(str | None, required=False),
        "message": Field(str),
    },
    "result": {"id": Field(ID), "files": Field(list[str])},
    "error": {
        "id": Field(ID | None, required=False),
        "code": Field(str),
        "message": Field(str),
        "hint": Field(str | None, required=False),
    },
}
# Required fields per message type (beyond type/version), derived from FIELDS.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    type_: tuple(name for name, f in fields.items() if f.required) for type_, fields in FIELDS.items()
}


class ProtocolError(ValueError):
    """A line that is not a valid protocol message (reported with the error code ``protocol``)."""

    code = "protocol"


# --------------------------------------------------------------------------------------------------------------
# the wire types

_UNIONS = (Union, type(int | str))
_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
    dict: "an object",
    list: "a list",
    tuple: "a list",
}


def type_problem(value: Any, want: Any) -> str | None:
    """Why ``value`` is not of the wire type ``want`` ("expected ..., got ..."); None when it is."""
    if matches(value, want):
        return None
    return f"expected {describe(want)}, got {_show(value)}"


def matches(value: Any, want: Any) -> bool:
    """Whether ``value`` is of the wire type ``want`` (see the module docstring for the type language)."""
    if want is Any:
        return True
    if want is None or want is type(None):
        return value is None
    origin, args = get_origin(want), get_args(want)
    if origin in _UNIONS:
        return any(matches(value, w) for w in args)
    if origin is not None:
        return _matches_generic(value, origin, args)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is tuple:
        return isinstance(value, (list, tuple))
    if isinstance(want, type):
        return isinstance(value, want)
    raise TypeError(f"{want!r} is not a wire type")  # a bug in a field table, not in the message


def _matches_generic(value: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    """``list[T]``, ``tuple[T, ...]`` / ``tuple[A, B]`` (JSON arrays) and ``dict[str, T]``."""
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, w) for v, w in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and matches(v, args[1]) for k, v in value.items())
    raise TypeError(f"{origin!r} is not a wire type")


def describe(want: Any) -> str:
    """The wire type ``want`` in words: ``int | None`` -> "an integer or null"."""
    if want is Any:
        return "any value"
    if want is None:
        return "null"
    origin, args = get_origin(want), get_args(want)
    if origin in _UNIONS:
        return " or ".join(dict.fromkeys(describe(w) for w in args))  # tuple[int, ...] | list[int]: said once
    if origin in (list, tuple) and args:
        if origin is list or args[-1] is Ellipsis:
            return f"a list (each {describe(args[0])})"
        return f"a list of {len(args)} ({', '.join(describe(w) for w in args)})"
    if origin is dict:
        return "an object"
    if want in _NAMES:
        return _NAMES[want]
    return f"a {getattr(want, '__name__', str(want))}"


_KINDS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null",
                           dict: "object", list: "list"}  # fmt: skip


def _show(value: Any) -> str:
    """A value for a message: its JSON kind and a short repr ("string 'abc'")."""
    return f"{_KINDS.get(type(value), type(value).__name__)} {_short(value)}"


# --------------------------------------------------------------------------------------------------------------
# messages


def make(type_: str, **fields: Any) -> dict:
    """Build a message dict of ``type_`` with the protocol version, checking required fields and types."""
    if type_ not in FIELDS:
        raise ProtocolError(f"unknown message type {type_!r}")
    msg = {"type": type_, "version": PROTOCOL_VERSION, **fields}
    validate(msg)
    return msg


def validate(msg: Any) -> dict:
    """Raise ProtocolError unless ``msg`` is a well-formed message of this protocol version: a known type, the
    version, every required field, and every field of :data:`FIELDS` it carries of its wire type."""
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    type_ = msg.get("type")
    if not isinstance(type_, str) or type_ not in FIELDS:
        raise ProtocolError(f"unknown message type {_short(type_)}")
    version = msg.get("version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {_short(version)} is not supported (this side speaks {PROTOCOL_VERSION})"
        )
    missing = [k for k in REQUIRED_FIELDS[type_] if k not in msg]
    if missing:
        raise ProtocolError(f"{type_} message lacks {', '.join(missing)}")
    for name, field in FIELDS[type_].items():
        problem = type_problem(msg[name], field.want) if name in msg else None
        if problem:
            raise ProtocolError(f"{type_} message field {name!r}: {problem}")
    return msg


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def encode(msg: dict) -> str:
    """One line of JSON (no embedded newlines), terminated by a newline."""
    return json.dumps(msg, ensure_ascii=True, separators=(",", ":")) + "\n"


def decode(line: str | bytes) -> dict:
    """Parse and validate one line; anything that is not a valid message raises ProtocolError."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int over Python's digit limit, deep nesting
        raise ProtocolError(f"not JSON: {line[:80]!r} ({str(exc)[:80]})") from exc
    return validate(msg)


def progress(
    id_: str, done: int, total: int, stage: str, fps: float | None = None, eta: float | None = None, **extra: Any
) -> dict:
    return make("progress", id=id_, done=done, total=total, stage=stage, fps=fps, eta=eta, **extra)


def error(code: str, message: str, hint: str | None = None, id_: str | None = None) -> dict:
    return make("error", id=id_, code=code, message=message, hint=hint)
