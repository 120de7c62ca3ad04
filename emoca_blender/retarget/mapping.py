"""The retarget mapping: which source channel drives which shape keys, how, and which bones (stdlib + contract).

A :class:`Mapping` is a list of :class:`Entry` (one source channel -> one target key, with gain, offset and
clamp; a channel drives several keys through several entries) and the :class:`BoneSettings` (armature, head and
jaw bones, axes). A key driven by several entries gets the sum of their values. Each entry's value is
``clip(gain * channel + offset, clamp_min, clamp_max)``; the sum is clipped to the key's slider range when keyed.

:func:`auto_mapping` builds one by name (:mod:`.naming`); presets are JSON files (docs/retarget.md "Presets") that
travel between characters with the same key names::

    {"format": "emoca-retarget-preset", "version": 1, "name": "My character",
     "entries": [{"source": "mouthSmileLeft", "target": "CC_Mouth_Smile_L", "gain": 1.0, "offset": 0.0,
                  "clamp": [0.0, 1.0]}, ...],
     "bones": {"armature": "", "head_bone": "head", "head_axes": "X,Y,Z", "jaw_bone": "jaw",
               "jaw_axes": "X,Y,Z", "jaw_open_axis": "X", "jaw_open_gain": 0.35}}

Every problem in a preset is ``EmocaError('input_corrupt')`` (or ``input_missing``) naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from emoca_contract.errors import EmocaError

from .bones import parse_axes, parse_axis
from .naming import NameMatch, match_names

PRESET_FORMAT = "emoca-retarget-preset"
PRESET_VERSION = 1
PRESET_HINT = "Save the preset again from the Retarget panel, or fix the field named in the message."


@dataclass(frozen=True)
class Entry:
    """One source channel driving one target shape key: ``clip(gain * value + offset, clamp_min, clamp_max)``."""

    source: str
    target: str
    gain: float = 1.0
    offset: float = 0.0
    clamp_min: float = 0.0
    clamp_max: float = 1.0

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "gain": self.gain, "offset": self.offset,
                "clamp": [self.clamp_min, self.clamp_max]}  # fmt: skip


@dataclass(frozen=True)
class BoneSettings:
    """Which bones the head and jaw drive, in which axes (docs/retarget.md "Bones"); empty names drive nothing.

    ``armature``: the armature object's name (empty: the one deforming the target mesh, else its parent).
    ``head_axes``/``jaw_axes``: the bone axes the take's X, Y, Z turn about (``"X,Y,Z"``, ``"X,-Z,Y"``; the take's
    frame: +X the performer's left, +Y up, +Z out of the face). ``jaw_open_axis``/``jaw_open_gain``: for takes
    without a jaw rotation (open takes), the jaw turns ``jaw_open_gain * jawOpen`` radians about this bone axis.
    """

    armature: str = ""
    head_bone: str = ""
    head_axes: str = "X,Y,Z"
    jaw_bone: str = ""
    jaw_axes: str = "X,Y,Z"
    jaw_open_axis: str = "X"
    jaw_open_gain: float = 0.35

    def check(self, where: str = "bones") -> None:
        """Raise config_invalid when an axis setting does not parse, the gain is not finite or the bones clash."""
        parse_axes(self.head_axes, f"{where}.head_axes")
        parse_axes(self.jaw_axes, f"{where}.jaw_axes")
        parse_axis(self.jaw_open_axis, f"{where}.jaw_open_axis")
        if not math.isfinite(self.jaw_open_gain):
            raise EmocaError("config_invalid", f"{where}.jaw_open_gain {self.jaw_open_gain!r}: expected a number")
        if self.head_bone and self.head_bone == self.jaw_bone:
            raise EmocaError("config_invalid", f"{where}: the head and the jaw both drive bone {self.head_bone!r}",
                             "Pick different bones for the head and the jaw.")  # fmt: skip


@dataclass(frozen=True)
class Mapping:
    """Entries (source channel -> target key) and bone settings; ``name`` says what it is for (presets)."""

    entries: tuple[Entry, ...] = ()
    bones: BoneSettings = field(default_factory=BoneSettings)
    name: str = ""

    def sources(self) -> list[str]:
        return list(dict.fromkeys(e.source for e in self.entries))

    def targets(self) -> list[str]:
        return list(dict.fromkeys(e.target for e in self.entries))

    def with_bones(self, **changes: Any) -> Mapping:
        """The same entries with some bone settings changed (unknown names are config_invalid)."""
        known = {f.name for f in fields(BoneSettings)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise EmocaError("config_invalid", f"unknown bone setting {unknown[0]!r}", f"Known: {', '.join(known)}.")
        return replace(self, bones=replace(self.bones, **changes))


def auto_mapping(
    sources: Iterable[str], targets: Iterable[str], swap_sides: bool = False, bones: BoneSettings | None = None
) -> tuple[Mapping, NameMatch]:
    """A mapping by name: every matched channel drives its key with gain 1, offset 0, clamp [0, 1]."""
    report = match_names(sources, targets, swap_sides)
    entries = tuple(Entry(m.source, m.target) for m in report.matches)
    return Mapping(entries=entries, bones=bones or BoneSettings()), report


# ---------------------------------------------------------------------------------------------- presets
def to_json(mapping: Mapping) -> dict[str, Any]:
    """The preset document of ``mapping``."""
    return {
        "format": PRESET_FORMAT,
        "version": PRESET_VERSION,
        "name": mapping.name,
        "entries": [e.as_json() for e in mapping.entries],
        "bones": asdict(mapping.bones),
    }


def _bad(where: str, what: str) -> EmocaError:
    return EmocaError("input_corrupt", f"{where}: {what}", PRESET_HINT)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(where, f"{value!r} is not a finite number"[:200])
    return float(value)


def _text(value: Any, where: str, empty: bool = False) -> str:
    if not isinstance(value, str) or not (empty or value.strip()):
        raise _bad(where, f"{value!r} is not a {'' if empty else 'non-empty '}string"[:200])
    return value


def entry_from_json(item: Any, where: str) -> Entry:
    """One preset entry (see the module docstring) -> :class:`Entry`."""
    if not isinstance(item, dict):
        raise _bad(where, f"an entry is a {type(item).__name__}, expected an object")
    clamp = item.get("clamp", [0.0, 1.0])
    if not isinstance(clamp, list) or len(clamp) != 2:
        raise _bad(f"{where}.clamp", f"{clamp!r} is not [min, max]"[:200])
    lo, hi = _number(clamp[0], f"{where}.clamp"), _number(clamp[1], f"{where}.clamp")
    if lo > hi:
        raise _bad(f"{where}.clamp", f"min {lo:g} is above max {hi:g}")
    return Entry(
        source=_text(item.get("source"), f"{where}.source"),
        target=_text(item.get("target"), f"{where}.target"),
        gain=_number(item.get("gain", 1.0), f"{where}.gain"),
        offset=_number(item.get("offset", 0.0), f"{where}.offset"),
        clamp_min=lo,
        clamp_max=hi,
    )


def bones_from_json(item: Any, where: str) -> BoneSettings:
    """The preset's ``bones`` object -> :class:`BoneSettings` (missing fields: the defaults)."""
    if not isinstance(item, dict):
        raise _bad(where, f"is a {type(item).__name__}, expected an object")
    known = {f.name: f.default for f in fields(BoneSettings)}
    unknown = sorted(set(item) - set(known))
    if unknown:
        raise _bad(where, f"unknown field {unknown[0]!r} (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for name, default in known.items():
        value = item.get(name, default)
        values[name] = _number(value, f"{where}.{name}") if isinstance(default, float) else \
            _text(value, f"{where}.{name}", empty=True)  # fmt: skip
    bones = BoneSettings(**values)
    try:
        bones.check(where)
    except EmocaError as exc:
        raise _bad(where, exc.message) from None
    return bones


def from_json(doc: Any, where: str = "preset") -> Mapping:
    """A preset document -> :class:`Mapping`, every field checked."""
    if not isinstance(doc, dict) or doc.get("format") != PRESET_FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise EmocaError("input_unsupported", f"{where}: format {fmt!r}, expected {PRESET_FORMAT!r} (not a preset)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= PRESET_VERSION:
        raise EmocaError("input_unsupported", f"{where}: preset version {version!r}; this add-on reads version "
                         f"{PRESET_VERSION}", "Update the add-on to the version that saved the preset.")  # fmt: skip
    entries = doc.get("entries", [])
    if not isinstance(entries, list):
        raise _bad(f"{where}.entries", "is not a list")
    return Mapping(
        entries=tuple(entry_from_json(item, f"{where}.entries[{i}]") for i, item in enumerate(entries)),
        bones=bones_from_json(doc.get("bones", {}), f"{where}.bones"),
        name=_text(doc.get("name", ""), f"{where}.name", empty=True),
    )


def load_preset(path: str | os.PathLike) -> Mapping:
    """Read a preset file (JSON, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("input_missing", f"retarget preset not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(str(path), f"not JSON ({str(exc)[:200]})") from exc
    return from_json(doc, str(path))


def save_preset(mapping: Mapping, path: str | os.PathLike) -> Path:
    """Write ``mapping`` as a preset file (atomically: a ``.partial`` renamed into place); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(to_json(mapping), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
