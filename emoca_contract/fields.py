"""Typed option records: a plain-data mapping (a protocol request's ``options``, a config section) checked
against a dataclass's field types before the dataclass is built. numpy-free, stdlib only.

The types are the dataclass's own annotations, read with :func:`typing.get_type_hints`, in the wire type language
of :mod:`.protocol` (``int`` is never a bool, ``float`` takes ints, ``X | None`` allows null, a class that is not
a JSON type matches only its own instances). Every problem is an ``EmocaError('config_invalid')`` that names the
option and what was expected, so a malformed option never reaches the code that uses it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from .errors import EmocaError
from .protocol import type_problem


def field_types(cls: type, names: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dataclass ``cls``'s field name -> resolved type annotation. ``names`` resolves annotations that name
    classes the defining module imports only for type checking (e.g. ``{"FrameRange": FrameRange}``)."""
    hints = typing.get_type_hints(cls, localns=dict(names or {}))
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_fields(schema: type | Mapping[str, Any], data: Any, where: str = "option") -> dict[str, Any]:
    """``data`` (a mapping of option name -> value) checked against ``schema`` (a dataclass, or a mapping of
    name -> wire type); returns a plain dict copy. Raises EmocaError('config_invalid') for a ``data`` that is not
    a mapping, an unknown name, or a value of the wrong type, naming ``where`` + the option and what it expects."""
    types = field_types(schema) if isinstance(schema, type) else dict(schema)
    if not isinstance(data, Mapping):
        raise EmocaError("config_invalid", f"{where}s must be an object of name: value, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in types)
    if unknown:
        raise EmocaError("config_invalid", f"unknown {where}(s) {unknown[:10]}; known: {sorted(types)}")
    for name, value in data.items():
        problem = type_problem(value, types[name])
        if problem:
            raise EmocaError("config_invalid", f"{where} {name!r}: {problem}")
    return dict(data)
