"""The apply options: every option of applying a take to a rig, listed once (Blender-free: stdlib + the contract).

:class:`ApplyOptions` is the one list. Each field carries its default and, in its metadata, how it is shown
(label, description, enum items, ...); :data:`OPTIONS` completes that into one :class:`Option` per field, and
everything else is generated from those:
* the Blender properties of ``Scene.emoca`` and of the apply/capture operators (properties.py),
* the ``blender -c emoca`` arguments (:func:`add_arguments`, :meth:`ApplyOptions.from_object`, cli.py),
* the apply options ``api.capture`` tells apart from capture options (:meth:`ApplyOptions.split`),
* what ``apply.apply_take`` takes (an ApplyOptions, or keyword arguments that build one).

Conventions: a field's type is the type of its default (bool, int or str); a field with ``items`` is an enum
whose value is one of the items' ids; bad values raise ``EmocaError('config_invalid')`` when the record is built.
Blender properties and argparse dests are named by ``Option.attr``: the field's name, except ``name``, which is
``action_name`` there (every Blender PropertyGroup has a ``name`` of its own).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emoca_contract.errors import EmocaError

EnumItems = tuple[tuple[str, str, str], ...]  # (id, label, description): Blender's EnumProperty items

FRAME_MAPPING: EnumItems = (
    ("resample", "Scene Rate", "Resample the take to the scene's frame rate, by time"),
    ("footage_rate", "Footage Rate", "Set the scene's frame rate to the footage's; one key per source frame"),
)
START: EnumItems = (
    ("one", "Frame 1", "The take's first frame lands on frame 1 (plus the offset)"),
    ("playhead", "Playhead", "The take's first frame lands on the current frame (plus the offset)"),
)
ACTION_MODE: EnumItems = (
    ("new", "New Action", "One new Action per take, named after the clip"),
    ("active", "Active Action", "Replace the take's frame range in the rig's current Action; keys outside stay"),
)

IDENTITY: EnumItems = (
    ("auto", "From Take", "Bake the take's likeness identity into a rig that has none; a rig with one keeps it"),
    ("take", "Replace", "Bake the take's likeness identity, replacing the rig's"),
    ("keep", "Keep", "Leave the rig's identity as it is"),
)


@dataclass(frozen=True)
class Option:
    """One apply option as every surface shows it (:data:`OPTIONS`, built from the ApplyOptions fields)."""

    name: str  # the ApplyOptions field: the keyword of api.apply_take / api.capture
    default: Any  # bool, int or str: the option's type
    label: str
    description: str
    items: EnumItems = ()  # an enum: the value is one of the ids
    expand: bool = False  # the panel draws the choices as a row of buttons
    attr: str = ""  # the Blender property and argparse dest (the name, unless Blender has that name already)
    flag: str = ""  # the command-line flag: --<attr>, or --no-<attr> for a bool defaulting to True


def option(default: Any, label: str, description: str, **how: Any) -> Any:
    """A dataclass field that is an option: its default, panel label, description and how it is shown
    (:class:`Option`'s other fields); read back by :func:`options_of`."""
    return field(default=default, metadata={"option": {"label": label, "description": description, **how}})


@dataclass(frozen=True)
class ApplyOptions:
    """How a take is keyed onto a rig (the module docstring of apply.py says what each does)."""

    frame_mapping: str = option(
        "resample", "Frame Mapping", "How the take's frames map onto scene frames", items=FRAME_MAPPING
    )
    start: str = option("one", "Start", "Where the take's first frame lands", items=START, expand=True)
    offset: int = option(0, "Offset", "Frames added to the start")
    head_rotation: bool = option(True, "Head Rotation", "Key the head's rotation (FLAME: root bone; open rigs: head)",
                                  flag="--no-head")  # fmt: skip
    head_translation: bool = option(
        False, "Head Movement", "Open takes: key the head's movement (metres, from its first frame) on the root bone"
    )
    correctives: bool = option(True, "Pose Correctives", "Key the jaw's pose corrective shape keys (Pose009..)")
    emotion: bool = option(True, "Emotion Curves", "Key valence, arousal and the expression classes' probabilities")
    camera_match: bool = option(False, "Camera Match", "An orthographic camera with the footage as background")
    joint_offsets: bool = option(
        True, "Joint Offsets", "Key the small bone locations that FLAME's expression-dependent joints imply"
    )
    action_mode: str = option("new", "Write To", "A new Action, or the rig's current one", items=ACTION_MODE)
    push_down: bool = option(False, "Push Down Previous", "Move the rig's previous Action onto an NLA track")
    frame_range: bool = option(True, "Set Frame Range", "Set the scene's start/end frames to the take's frames")
    name: str = option("", "Action Name", "The Action's name (empty: EMOCA_<clip>)", attr="action_name")
    identity: str = option("auto", "Identity", "The performer's identity key from the take's likeness "
                            "(NAME.likeness.json; docs/likeness.md)", items=IDENTITY)  # fmt: skip

    def __post_init__(self) -> None:
        for opt in OPTIONS:
            check_value(opt, getattr(self, opt.name))

    @classmethod
    def build(cls, options: ApplyOptions | None = None, **changes: Any) -> ApplyOptions:
        """``options`` (default: the defaults) with ``changes``; an unknown name raises config_invalid."""
        unknown = sorted(set(changes) - set(cls.names()))
        if unknown:
            raise EmocaError(
                "config_invalid",
                f"unknown apply option {unknown[0]!r}",
                f"Apply options are: {', '.join(cls.names())}.",
            )
        return dataclasses.replace(options or cls(), **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(opt.name for opt in OPTIONS)

    @classmethod
    def from_object(cls, source: Any) -> ApplyOptions:
        """The options read from a Blender PropertyGroup or operator, or an argparse Namespace (by ``attr``)."""
        return cls(**{opt.name: getattr(source, opt.attr) for opt in OPTIONS})

    @classmethod
    def split(cls, options: Mapping[str, Any]) -> tuple[ApplyOptions, dict[str, Any]]:
        """(the apply options among ``options``, the others): how ``api.capture`` tells them apart."""
        names = set(cls.names())
        ours = {k: v for k, v in options.items() if k in names}
        return cls.build(**ours), {k: v for k, v in options.items() if k not in names}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def options_of(cls: type) -> tuple[Option, ...]:
    """The :class:`Option` of every field of the options dataclass ``cls`` (made with :func:`option`), in order."""
    out = []
    for f in dataclasses.fields(cls):
        how = dict(f.metadata["option"])
        attr = how.pop("attr", "") or f.name
        dashed = attr.replace("_", "-")
        flag = how.pop("flag", "") or (f"--no-{dashed}" if f.default is True else f"--{dashed}")
        out.append(Option(name=f.name, default=f.default, attr=attr, flag=flag, **how))
    return tuple(out)


OPTIONS: tuple[Option, ...] = options_of(ApplyOptions)  # every apply option, in the order the panel draws them


def check_choice(name: str, value: Any, items: EnumItems) -> None:
    """Raise config_invalid unless ``value`` is one of the ids of ``items``."""
    ids = [item[0] for item in items]
    if value not in ids:
        raise EmocaError("config_invalid", f"{name} {value!r}: expected {' or '.join(repr(i) for i in ids)}")


def check_value(opt: Option, value: Any) -> None:
    """Raise config_invalid unless ``value`` fits the option (an enum id, else the type of the default)."""
    if opt.items:
        check_choice(opt.name, value, opt.items)
        return
    kind = type(opt.default)
    if type(value) is not kind:  # exact: a bool is not an int here, an int is not a bool
        raise EmocaError(
            "config_invalid", f"{opt.name} {value!r}: expected a {kind.__name__} (like the default {opt.default!r})"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every apply option to ``parser`` (:func:`add_option_arguments`)."""
    add_option_arguments(parser, OPTIONS)


def add_option_arguments(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    """Add each option to ``parser`` (dest: the option's ``attr``; default: the option's default)."""
    for opt in options:
        if isinstance(opt.default, bool):
            action = "store_false" if opt.default else "store_true"
            parser.add_argument(opt.flag, dest=opt.attr, action=action, help=opt.description)
        elif opt.items:
            choices = [item[0] for item in opt.items]
            parser.add_argument(opt.flag, dest=opt.attr, choices=choices, default=opt.default, help=opt.description)
        else:
            kind = type(opt.default)
            parser.add_argument(opt.flag, dest=opt.attr, type=kind, default=opt.default, help=opt.description)
