"""All registered properties of the add-on, in one place.

* ``Scene.emoca`` (saved with the .blend, undoable): capture options (where takes go, which face) and the apply
  options.
* ``WindowManager.emoca_job`` (not saved, not undone): the running capture's progress, drawn by the panels.
* ``WindowManager.emoca_setup_job``: the running setup (create the environment, import assets, check) and the
  last check's report, drawn by the preferences.
* ``Scene.emoca_retarget``: the Retarget panel's character, take, mapping and options (declared in
  retarget/props.py, registered here).
* ``Scene.emoca_likeness``: the Likeness panel's take, footage and what to make; ``WindowManager.
  emoca_likeness_job``: the likeness request's progress; ``Object.emoca_detail``: a rig mesh's detail checkbox
  (likeness.py: links its detail maps into its material).
* ``Scene.emoca_train``: the Train panel's settings; ``WindowManager.emoca_train_job``: the training's progress
  (epoch/step/loss) and its result (the run folder capture can load).

The apply options are declared nowhere here: :func:`with_apply_options` generates them from
:class:`~.options.ApplyOptions` (for ``Scene.emoca`` and the apply/capture operators). Both job groups share
:class:`JobProgress`, the fields the modal-job mixin (modal.py) writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from emoca_contract.errors import EmocaError

from .client import backend_root
from .likeness import detail_update
from .options import OPTIONS
from .retarget import props as retarget_props
from .rig_parts import is_rig

SOURCE = [
    ("FILE", "Video File", "A video file or an image"),
    ("CLIP", "Movie Clip", "The active Movie Clip of the Clip Editor"),
    ("SEQUENCE", "Image Sequence", "A folder of numbered images"),
]
FACE = [
    ("largest", "Largest", "The largest face in the shot"),
    ("all", "All Faces", "One take per face track"),
    ("TRACK", "Track", "The face track numbered by Track (0: the first; a capture of All Faces lists them)"),
]
DEFAULT_TAKE_DIR = "//takes/"  # beside the .blend


PREFERRED_CONFIGS = ("tiny_cpu", "emoca_v1", "emoca_v2", "emotion_resnet50")
CONFIG_HINTS = {
    "tiny_cpu": "Minutes on a CPU on renders of the synthetic test head: checks an install (not capture-loadable)",
    "emoca_v1": "EMOCA v1 coarse stage (emotion, eye/lip/mouth, photometric losses); needs a DECA/EMOCA model",
    "emoca_v2": "EMOCA v2 (mediapipe landmark losses); needs a DECA/EMOCA model and FLAME",
    "emotion_resnet50": "The emotion recognition network (ResNet-50) on AffectNet-style data",
}


def shipped_configs() -> list[Path]:
    """The backend's shipped training configs (``<backend>/training/configs/*.yaml``), preferred ones first."""
    try:
        found = sorted((backend_root() / "training" / "configs").glob("*.yaml"))
    except EmocaError:  # no backend folder (a broken install): offer only a custom file
        return []
    rank = {name: i for i, name in enumerate(PREFERRED_CONFIGS)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def config_items() -> list[tuple[str, str, str]]:
    """The Config menu: the shipped configs, then a custom file."""
    items = [(p.stem, p.stem, CONFIG_HINTS.get(p.stem, str(p))) for p in shipped_configs()]
    return items + [("CUSTOM", "Custom File", "A training config YAML of your own")]


CONFIG_ITEMS = config_items()  # static: the shipped configs do not change while Blender runs


def apply_option_properties() -> dict[str, Any]:
    """One Blender property per apply option (:data:`~.options.OPTIONS`), named by the option's ``attr``."""
    props: dict[str, Any] = {}
    for opt in OPTIONS:
        common = {"name": opt.label, "description": opt.description, "default": opt.default}
        if opt.items:
            props[opt.attr] = EnumProperty(items=list(opt.items), **common)
        elif isinstance(opt.default, bool):
            props[opt.attr] = BoolProperty(**common)
        elif isinstance(opt.default, int):
            props[opt.attr] = IntProperty(**common)
        else:
            props[opt.attr] = StringProperty(**common)
    return props


def with_apply_options(cls: type) -> type:
    """Class decorator: declare every apply option as a Blender property of ``cls`` (before it is registered)."""
    cls.__annotations__ = {**apply_option_properties(), **cls.__dict__.get("__annotations__", {})}
    return cls


def _is_rig(self, obj) -> bool:
    return is_rig(obj)


@with_apply_options
class EmocaSettings(bpy.types.PropertyGroup):
    """The scene's EMOCA settings: the footage, how it is captured, where takes go, and how they are applied"""

    source: EnumProperty(name="Footage", items=SOURCE, default="FILE", description="Where the footage comes from")
    footage: StringProperty(name="Footage File", subtype="FILE_PATH", description="A video file or an image")
    sequence_dir: StringProperty(name="Image Folder", subtype="DIR_PATH", description="A folder of numbered images")
    frame_start: IntProperty(name="First Frame", default=0, min=0, description="First source frame (0-based)")
    frame_end: IntProperty(name="Last Frame", default=-1, min=-1, description="Last source frame (-1: to the end)")
    frame_step: IntProperty(name="Step", default=1, min=1, description="Capture every n-th source frame")
    face: EnumProperty(name="Face", items=FACE, default="largest", description="Which face (track) to capture")
    face_track: IntProperty(
        name="Track", default=0, min=0, description="The face track a capture of Face 'Track' takes (0: the first)"
    )
    smooth: FloatProperty(name="Smoothing", default=0.5, min=0.0, max=1.0, description="0 = raw, 1 = strong")
    rig: PointerProperty(
        name="Target Rig", type=bpy.types.Object, poll=_is_rig, description="The FLAME rig a capture animates"
    )
    take_dir: StringProperty(
        name="Take Folder",
        subtype="DIR_PATH",
        default=DEFAULT_TAKE_DIR,
        description="Where captures write their takes (rigs go into its rigs/ folder); //: beside the .blend, "
        "which must then be saved",
    )


class JobProgress:
    """The progress fields every backend job shows (written by the modal-job mixin, modal.py)."""

    running: BoolProperty(name="Running", default=False, description="A job is running")
    stop_requested: BoolProperty(
        name="Stop Requested", default=False, description="Set by a Stop button; the job's operator stops"
    )
    progress: FloatProperty(
        name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR", description="How far the job is"
    )
    stage: StringProperty(name="Stage", default="", description="What the backend is doing")
    fps: FloatProperty(name="Rate", default=0.0, description="Frames (or steps) per second")
    eta: FloatProperty(name="ETA", default=-1.0, description="Seconds left (-1: unknown)")
    message: StringProperty(name="Message", default="", description="The last job's outcome, shown in the panel")


class EmocaJob(bpy.types.PropertyGroup, JobProgress):
    """The running (or last) capture's progress and outcome"""


class SetupProgress(bpy.types.PropertyGroup, JobProgress):
    """The running (or last) setup: creating the backend environment, importing assets, checking them"""

    check_report: StringProperty(
        name="Report", default="", description="The last check or import: the backend, then one line per asset"
    )
    log: StringProperty(name="Log", default="", description="The end of the log of a failed setup (pip's output)")


class EmocaLikenessSettings(bpy.types.PropertyGroup):
    """The Likeness panel's settings: which take (and footage), what to make and put on the rig"""

    take: StringProperty(name="Take", subtype="FILE_PATH", description="The take (.npz) whose likeness to make")
    video: StringProperty(
        name="Footage", subtype="FILE_PATH", description="The take's footage, for the texture (empty: the take's own)"
    )
    identity: BoolProperty(name="Identity", default=True, description="Bake the performer's identity as one key")
    texture: BoolProperty(name="Texture", default=True, description="A texture from the footage as base colour")
    detail: BoolProperty(
        name="Detail Maps", default=False, description="EMOCA's per-frame detail displacement (FLAME, --detail takes)"
    )
    identity_take: StringProperty(
        name="Identity From",
        subtype="FILE_PATH",
        description="Another take of the performer whose likeness identity to bake (empty: this take's)",
    )


class EmocaLikenessJob(bpy.types.PropertyGroup, JobProgress):
    """The running (or last) likeness request's progress and outcome"""


class EmocaTrainSettings(bpy.types.PropertyGroup):
    """The Train panel's settings: which config, on what data, into which folder, for how long"""

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


class EmocaTrainJob(bpy.types.PropertyGroup, JobProgress):
    """The running (or last) training's progress and the run folder it made"""

    epoch: IntProperty(name="Epoch", default=0, description="The current epoch")
    step: IntProperty(name="Step", default=0, description="The current global step")
    total: IntProperty(name="Total Steps", default=-1, description="-1: unknown")
    loss: FloatProperty(name="Loss", default=-1.0, description="-1: none yet")
    model_folder: StringProperty(
        name="Trained Model", subtype="DIR_PATH", default="", description="The finished run's model folder"
    )
    checkpoint: StringProperty(
        name="Checkpoint", subtype="FILE_PATH", default="", description="The finished run's best checkpoint"
    )
    capture_loadable: BoolProperty(
        name="Capture Loadable", default=True, description="False: a test network capture cannot load"
    )


CLASSES = (EmocaSettings, EmocaJob, SetupProgress, EmocaTrainSettings, EmocaTrainJob, EmocaLikenessSettings,
           EmocaLikenessJob, *retarget_props.CLASSES)  # fmt: skip


def register_properties() -> None:
    bpy.types.Scene.emoca = PointerProperty(type=EmocaSettings)
    bpy.types.Scene.emoca_train = PointerProperty(type=EmocaTrainSettings)
    bpy.types.WindowManager.emoca_job = PointerProperty(type=EmocaJob)
    bpy.types.WindowManager.emoca_setup_job = PointerProperty(type=SetupProgress)
    bpy.types.WindowManager.emoca_train_job = PointerProperty(type=EmocaTrainJob)
    bpy.types.Scene.emoca_likeness = PointerProperty(type=EmocaLikenessSettings)
    bpy.types.WindowManager.emoca_likeness_job = PointerProperty(type=EmocaLikenessJob)
    bpy.types.Object.emoca_detail = BoolProperty(
        name="Detail", default=False, update=detail_update,
        description="Show the take's detail displacement maps on the rig (its likeness material's bump)",
    )  # fmt: skip
    retarget_props.register_properties()


def unregister_properties() -> None:
    retarget_props.unregister_properties()
    del bpy.types.Object.emoca_detail
    del bpy.types.WindowManager.emoca_likeness_job
    del bpy.types.Scene.emoca_likeness
    del bpy.types.WindowManager.emoca_train_job
    del bpy.types.WindowManager.emoca_setup_job
    del bpy.types.WindowManager.emoca_job
    del bpy.types.Scene.emoca_train
    del bpy.types.Scene.emoca
