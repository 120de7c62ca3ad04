"""All registered properties of the add-on, in one place.

* ``Scene.emoca`` (saved with the .blend, undoable): capture and apply options.
* ``WindowManager.emoca_job`` (not saved, not undone): the running job's progress, drawn by the panels.
* ``Scene.emoca_train``: the Train panel's settings; ``WindowManager.emoca_train_job``: the training's progress
  (epoch/step/loss) and its result (the run folder capture can load).
"""

from __future__ import annotations

from pathlib import Path

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


PREFERRED_CONFIGS = ("tiny_cpu", "emoca_v1", "emoca_v2", "emotion_resnet50")
CONFIG_HINTS = {
    "tiny_cpu": "Minutes on a CPU on renders of the synthetic test head: checks an install (not capture-loadable)",
    "emoca_v1": "EMOCA v1 coarse stage (emotion, eye/lip/mouth, photometric losses); needs a DECA/EMOCA model",
    "emoca_v2": "EMOCA v2 (mediapipe landmark losses); needs a DECA/EMOCA model and FLAME",
    "emotion_resnet50": "The emotion recognition network (ResNet-50) on AffectNet-style data",
}


def shipped_configs() -> list[Path]:
    """The backend's shipped training configs (``<backend>/training/configs/*.yaml``), preferred ones first."""
    from emoca_contract.errors import EmocaError

    from .client import backend_root

    try:
        found = sorted((backend_root() / "training" / "configs").glob("*.yaml"))
    except EmocaError:
        return []
    rank = {name: i for i, name in enumerate(PREFERRED_CONFIGS)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def config_items() -> list[tuple[str, str, str]]:
    items = [(p.stem, p.stem, CONFIG_HINTS.get(p.stem, str(p))) for p in shipped_configs()]
    return items + [("CUSTOM", "Custom File", "A training config YAML of your own")]


CONFIG_ITEMS = config_items()  # static: the shipped configs do not change while Blender runs


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
    camera_match: BoolProperty(
        name="Camera Match", default=False, description="An orthographic camera with the footage as background"
    )
    action_mode: EnumProperty(name="Write To", items=ACTION_MODE, default="new")
    push_down: BoolProperty(
        name="Push Down Previous", default=False, description="Move the rig's previous Action onto an NLA track"
    )


class EmocaJob(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(default="")
    fps: FloatProperty(default=0.0)
    eta: FloatProperty(default=-1.0)
    message: StringProperty(default="")
    check_report: StringProperty(default="")
    env_log: StringProperty(default="")


class EmocaTrainSettings(bpy.types.PropertyGroup):
    config: EnumProperty(
        name="Config",
        items=CONFIG_ITEMS,
        default=CONFIG_ITEMS[0][0],
        description="A shipped training config, or a YAML file of your own",
    )
    config_path: StringProperty(name="Config File", subtype="FILE_PATH", description="Training config YAML")
    data_dir: StringProperty(
        name="Data Folder",
        subtype="DIR_PATH",
        description="Images and/or videos to train on (data.train; empty: the config's)",
    )
    output_dir: StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        description="The run folder (an EMOCA model folder); empty: emoca_runs/<config> "
        "beside the .blend, else in your home folder",
    )
    max_epochs: IntProperty(name="Max Epochs", default=0, min=0, description="0: the config's")
    max_steps: IntProperty(name="Max Steps", default=0, min=0, description="0: the config's")
    overrides: StringProperty(
        name="Overrides",
        default="",
        description="More key=value overrides, space separated (e.g. trainer.devices=2 learning.lr=1e-4)",
    )


class EmocaTrainJob(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    stop_requested: BoolProperty(default=False, description="Set by the Stop button; the training operator stops")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(default="")
    epoch: IntProperty(name="Epoch", default=0)
    step: IntProperty(name="Step", default=0)
    total: IntProperty(name="Total Steps", default=-1)
    loss: FloatProperty(name="Loss", default=-1.0, description="-1: none yet")
    eta: FloatProperty(default=-1.0)
    message: StringProperty(default="")
    model_folder: StringProperty(name="Trained Model", subtype="DIR_PATH", default="")
    checkpoint: StringProperty(name="Checkpoint", subtype="FILE_PATH", default="")
    capture_loadable: BoolProperty(default=True)


CLASSES = (EmocaSettings, EmocaJob, EmocaTrainSettings, EmocaTrainJob)


def register_properties() -> None:
    bpy.types.Scene.emoca = PointerProperty(type=EmocaSettings)
    bpy.types.Scene.emoca_train = PointerProperty(type=EmocaTrainSettings)
    bpy.types.WindowManager.emoca_job = PointerProperty(type=EmocaJob)
    bpy.types.WindowManager.emoca_train_job = PointerProperty(type=EmocaTrainJob)


def unregister_properties() -> None:
    del bpy.types.WindowManager.emoca_train_job
    del bpy.types.WindowManager.emoca_job
    del bpy.types.Scene.emoca_train
    del bpy.types.Scene.emoca
