"""The retarget options, listed once (stdlib + the contract), as :mod:`..options` lists the apply options.

:class:`RetargetOptions` is the one list: how the take's frames land in the scene and which channels are keyed.
Each field carries its default and, in its metadata, how it is shown; :data:`RETARGET_OPTIONS` completes that into
one :class:`~..options.Option` per field, from which the panel's properties (props.py), the ``blender -c emoca
retarget`` arguments (:func:`add_arguments`) and ``api.retarget``'s keywords are made. What is specific to a
character (the mapping, its bones and axes) is not an option: it lives in the mapping (mapping.py, presets).
Bad values raise ``EmocaError('config_invalid')`` when the record is built.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from emoca_contract.errors import EmocaError

from ..options import (
    ACTION_MODE,
    FRAME_MAPPING,
    START,
    EnumItems,
    Option,
    add_option_arguments,
    check_value,
    option,
    options_of,
)

ANGLES: EnumItems = (
    ("radians", "Radians", "The CSV's head angles are radians (the Live Link Face app's export)"),
    ("degrees", "Degrees", "The CSV's head angles are degrees"),
)
METHODS: EnumItems = (
    ("names", "By Name", "The take's ARKit channels drive the keys they match by name (or the mapping's)"),
    ("landmarks", "Landmarks", "Any shape keys: the weights that reproduce the take's face landmark motion "
     "(detect the character's landmarks first)"),
)  # fmt: skip
FLAME_CHANNELS: EnumItems = (
    ("map", "FLAME Expression", "A FLAME take's expression and jaw through the FLAME <-> ARKit map"),
    ("detector", "Detector Scores", "A FLAME take's own detector ARKit scores, when it stored them"),
)


@dataclass(frozen=True)
class RetargetOptions:
    """How a take is retargeted onto a character (docs/retarget.md "Options")."""

    frame_mapping: str = option(
        "resample", "Frame Mapping", "How the take's frames map onto scene frames", items=FRAME_MAPPING
    )
    start: str = option("one", "Start", "Where the take's first frame lands", items=START, expand=True)
    offset: int = option(0, "Offset", "Frames added to the start")
    head: bool = option(True, "Head Bone", "Key the head bone (when one is picked) from the take's head rotation",
                         flag="--no-head")  # fmt: skip
    jaw: bool = option(True, "Jaw Bone", "Key the jaw bone (when one is picked) from the take's jaw or jawOpen",
                        flag="--no-jaw")  # fmt: skip
    swap_sides: bool = option(
        False, "Swap Sides", "Auto Match reads the character's left keys as right and right as left"
    )
    action_mode: str = option("new", "Write To", "A new Action, or the character's current one", items=ACTION_MODE)
    frame_range: bool = option(True, "Set Frame Range", "Set the scene's start/end frames to the take's frames")
    name: str = option("", "Action Name", "The Action's name (empty: EMOCA_<clip>_retarget)", attr="action_name")
    csv_fps: int = option(0, "CSV Rate", "A Live Link CSV's timecode rate (0: guess from the file)")
    angles: str = option("radians", "CSV Angles", "The unit of a Live Link CSV's head angles", items=ANGLES)
    method: str = option("names", "Method", "How the take reaches the character's keys", items=METHODS)
    flame_channels: str = option("map", "FLAME Channels", "Where a FLAME take's ARKit channels come from",
                                  items=FLAME_CHANNELS)  # fmt: skip
    arkit_map: str = option("", "ARKit Map", "A FLAME <-> ARKit map file (empty: the backend's, built once per "
                             "FLAME model)")  # fmt: skip
    smoothness: float = option(0.05, "Smoothness", "Landmark solve: how steady each key's curve is held across "
                                "frames (0: every frame on its own)")  # fmt: skip

    def __post_init__(self) -> None:
        for opt in RETARGET_OPTIONS:
            check_value(opt, getattr(self, opt.name))
        if self.csv_fps < 0:
            raise EmocaError("config_invalid", f"csv_fps {self.csv_fps}: expected 0 (guess) or a frame rate")
        if not self.smoothness >= 0:
            raise EmocaError("config_invalid", f"smoothness {self.smoothness}: expected a number >= 0")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(opt.name for opt in RETARGET_OPTIONS)

    @classmethod
    def build(cls, options: RetargetOptions | None = None, **changes: Any) -> RetargetOptions:
        """``options`` (default: the defaults) with ``changes``; an unknown name raises config_invalid."""
        unknown = sorted(set(changes) - set(cls.names()))
        if unknown:
            raise EmocaError("config_invalid", f"unknown retarget option {unknown[0]!r}",
                             f"Retarget options are: {', '.join(cls.names())}.")  # fmt: skip
        return dataclasses.replace(options or cls(), **changes)

    @classmethod
    def from_object(cls, source: Any) -> RetargetOptions:
        """The options read from a Blender PropertyGroup or an argparse Namespace (by each option's ``attr``)."""
        return cls(**{opt.name: getattr(source, opt.attr) for opt in RETARGET_OPTIONS})


RETARGET_OPTIONS: tuple[Option, ...] = options_of(RetargetOptions)  # in the order the panel draws them


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every retarget option to ``parser`` (dest: the option's ``attr``; default: the option's default)."""
    add_option_arguments(parser, RETARGET_OPTIONS)
