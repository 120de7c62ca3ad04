"""All registered properties of the add-on, in one place.

* ``Scene.emoca`` (saved with the .blend, undoable): capture and apply options.
* ``WindowManager.emoca_job`` (not saved, not undone): the running job's progress, drawn by the panels.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

FRAME_MAPPING = [
    ("resample", "Scene Rate", "Resample the take to the scene's frame rate, by time"),
    ("footage_rate", "Footage Rate", "Set the scene's frame rate to the footage's; one key per source frame"),
]
START = [
    ("one", "Frame 1", "The take's first frame lands on frame 1 (plus the offset)"),
    ("playhead", "Playhead", "The take's first frame lands on the current frame (plus the offset)"),
]
SOURCE = [
    ("FILE", "Video File", "A video file or an image"),
    ("CLIP", "Movie Clip", "The active Movie Clip of the Clip Editor"),
    ("SEQUENCE", "Image Sequence", "A folder of numbered images"),
]
FACE = [
    ("largest", "Largest", "The largest face in the shot"),
    ("all", "All Faces", "One take per face track"),
    ("0", "Track 0", "The first face track"),
    ("1", "Track 1", "The second face track"),
]
ACTION_MODE = [
    ("new", "New Action", "One new Action per take, named after the clip"),
    ("active", "Active Action", "Replace the take's frame range in the rig's current Action; keys outside stay"),
]


def _is_rig(self, obj) -> bool:
    return obj.type == "ARMATURE" and "emoca_n_exp" in obj


class EmocaSettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Footage", items=SOURCE, default="FILE")
    footage: StringProperty(name="Footage File", subtype="FILE_PATH")
    sequence_dir: StringProperty(name="Image Folder", subtype="DIR_PATH")
    frame_start: IntProperty(name="First Frame", default=0, min=0, description="First source frame (0-based)")
    frame_end: IntProperty(name="Last Frame", default=-1, min=-1, description="Last source frame (-1: to the end)")
    frame_step: IntProperty(name="Step", default=1, min=1)
    face: EnumProperty(name="Face", items=FACE, default="largest")
    smooth: FloatProperty(name="Smoothing", default=0.5, min=0.0, max=1.0, description="0 = raw, 1 = strong")
    rig: PointerProperty(name="Target Rig", type=bpy.types.Object, poll=_is_rig)
    take_path: StringProperty(name="Take", subtype="FILE_PATH", description="A take file (.npz) to apply")
    rig_path: StringProperty(name="Rig File", subtype="FILE_PATH", description="A rig file (.npz)")
    frame_mapping: EnumProperty(name="Frame Mapping", items=FRAME_MAPPING, default="resample")
    start: EnumProperty(name="Start", items=START, default="one")
    offset: IntProperty(name="Offset", default=0, description="Frames added to the start")
    head_rotation: BoolProperty(name="Head Rotation", default=True)
    correctives: BoolProperty(name="Pose Correctives", default=True)
    emotion: BoolProperty(name="Emotion Curves", default=True)
    camera_match: BoolProperty(name="Camera Match", default=False,
                               description="An orthographic camera with the footage as background")
    action_mode: EnumProperty(name="Write To", items=ACTION_MODE, default="new")
    push_down: BoolProperty(name="Push Down Previous", default=False,
                            description="Move the rig's previous Action onto an NLA track")


class EmocaJob(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(default="")
    fps: FloatProperty(default=0.0)
    eta: FloatProperty(default=-1.0)
    message: StringProperty(default="")
    check_report: StringProperty(default="")
    env_log: StringProperty(default="")


CLASSES = (EmocaSettings, EmocaJob)


def register_properties() -> None:
    bpy.types.Scene.emoca = PointerProperty(type=EmocaSettings)
    bpy.types.WindowManager.emoca_job = PointerProperty(type=EmocaJob)


def unregister_properties() -> None:
    del bpy.types.WindowManager.emoca_job
    del bpy.types.Scene.emoca
