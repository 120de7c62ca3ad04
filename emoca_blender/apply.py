"""Apply a take to a rig: validate everything, then write one take's keys in one go.

A take's kind must match the rig's: a FLAME take (``exp``, jaw and head pose) keys a FLAME rig, an open take (the
52 ARKit scores, head rotation and translation) keys an open rig (the ICT head); anything else is
``config_invalid`` (retargeting across kinds is not done here).

FLAME takes, which ID gets what (names follow the clip, ``EMOCA_<clip>``):
* the rig's shape-key datablock (Key): ``Exp000..`` values and the jaw's pose correctives ``Pose009..Pose017``;
* the armature object: ``pose.bones["jaw"]`` rotation (quaternion from FLAME's axis-angle) and location (the
  joint's shift with expression, see below), ``pose.bones["root"]`` rotation/location for the head (FLAME's
  global pose rotates about the root joint, so the head goes on ``root``, not ``neck``), and the emotion
  curves as ID properties ``emoca_valence``, ``emoca_arousal``, ``emoca_expr_<Class>``;
* with camera match, an orthographic camera (object location, camera data ortho_scale), the scene's camera
  and render size set to the footage's, the footage as the camera's background (a Movie Clip).
On 4.4+ all of these are slots of ONE Action; on 4.2/4.3 each ID needs its own Action (``EMOCA_<clip>`` for
the armature, ``EMOCA_<clip>_shapes`` for the Key, ``EMOCA_<clip>_camera``). Source metadata is stored on
every Action as ID properties (``emoca_*``); Actions keep a fake user.

Open takes: each ``arkit`` column keys the shape key of the same ARKit name (channels the rig has no key for,
such as ``tongueOut`` on the ICT head, are skipped and named in the Action's ``emoca_unkeyed_channels``; the
rig's drivers turn the eyes and the jaw bone from those keys); the head rotation (``global_pose``, camera frame,
which is the rig's frame with the face towards the camera) keys the rig's head bone (rig_info's ``head_bone``) as a
quaternion; with ``head_translation`` the head's movement (``translation`` minus its first valid row, metres)
keys the rig's root bone location; the emotion curves as for FLAME takes. Pose correctives, joint offsets and
camera match are FLAME options: correctives and joint offsets do nothing here, camera match is config_invalid.

Joint offsets: FLAME regresses its joints from the expression-deformed mesh, so a joint moves slightly with
expression. A pose bone location of (I - R) @ delta (delta = J_regressor @ expdirs @ exp) reproduces FLAME's
rotation about the moved joint exactly with bones that stay at the rest joints.

Identity (option ``identity``, likeness.py): when the take has a likeness identity (its ``NAME.likeness.json``),
it is baked into the rig as one shape key named after the clip, after the keys are written: "auto" only into a
rig without an identity (a second take of the performer reuses the key), "take" replacing the rig's, "keep" never.

Frame mapping: ``resample`` keys every scene frame covered by the take, at scene time
t0 + (frame - base) / scene_fps, interpolating linearly between source rows (quaternions by slerp);
``footage_rate`` sets the scene rate to the footage's and keys source row i at base + frame[i] - frame[0].
``base`` = 1 (``start='one'``) or the playhead (``start='playhead'``), plus ``offset``. Scene frames whose
source rows are invalid get no key; existing keys outside the take's frame span are left alone. With
``frame_range`` the scene plays the scene frames the take covers: its first to its last keyable frame.

Validate, then write: :func:`plan_write` reads and checks everything the write needs (the take, the rig's keys
and bones, the footage's size, rate and path for camera match, one custom property per emotion class) without
touching the scene; :func:`_write` only writes, recording each change so an unexpected failure rolls back all
of it (objects, camera data, Movie Clips, Actions, the scene's camera, render size, rate and range).

The options (frame mapping, start, which channels, where the keys go) are one :class:`~.options.ApplyOptions`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_quat, continuous, quat_to_matrix, slerp
from emoca_contract.take import MAX_FPS, MAX_SIDE, MIN_FPS, Take

from . import animation
from .likeness import bake_identity, identity_on_apply
from .options import FRAME_MAPPING, ApplyOptions, check_choice
from .rig_parts import EXPR_PREFIX, ensure_prop, find_rig, prop_name, prop_path, rig_info, rig_kind, rig_mesh
from .takes import read_take_file

JAW_POSE_KEYS = [f"Pose{9 + i:03d}" for i in range(9)]  # (R_jaw - I), row-major; joints neck, jaw, eye_L, eye_R
EMOTION_GROUP = "Emotion"
SHAPES_GROUP = {"flame": "Expression", "open": "ARKit"}
# The channels sampled by linear interpolation, per take kind (rotations are slerped).
LERPED = {"flame": ("exp", "valence", "arousal", "expression", "cam", "crop"),
          "open": ("arkit", "translation", "valence", "arousal", "expression")}  # fmt: skip
MAX_PROP_BYTES = 63  # Blender's limit on a custom property's name


# ---------------------------------------------------------------- planning (numpy only)
@dataclass
class TakePlan:
    """What will be keyed: K scene frames and the values there (float64)."""

    frames: np.ndarray  # (K,)
    span: tuple[float, float]  # scene frames covered by the take (keys inside are replaced)
    rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # (i0, i1, w): the source rows each key interpolates
    values: dict[str, np.ndarray] = field(default_factory=dict)
    fps: float | None = None  # scene rate to set (footage_rate) or None


def mapping_rows(take: Take, mode: str, base: float, scene_fps: float):
    """Scene frames to key and the source rows behind each: (frames, i0, i1, w, span)."""
    times = take["time"].astype(np.float64)
    valid = take["valid"].astype(bool)
    n = len(times)
    if mode == "footage_rate":
        rel = (take["frame"] - take["frame"][0]).astype(np.float64)
        idx = np.nonzero(valid)[0]
        return base + rel[idx], idx, idx, np.zeros(len(idx)), (base, base + rel[-1])
    check_choice("frame_mapping", mode, FRAME_MAPPING)
    end = base + (times[-1] - times[0]) * scene_fps
    frames = np.arange(math.ceil(base - 1e-6), math.floor(end + 1e-6) + 1, dtype=np.float64)
    tau = times[0] + (frames - base) / scene_fps
    i0 = np.clip(np.searchsorted(times, tau + 1e-9, side="right") - 1, 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    dt = times[i1] - times[i0]
    w = np.where(dt > 0, (tau - times[i0]) / np.where(dt > 0, dt, 1), 0.0)
    w = np.where(w < 1e-6, 0.0, w)
    snap = w > 1 - 1e-6
    i0 = np.where(snap, i1, i0)
    w = np.where(snap, 0.0, w)
    ok = valid[i0] & ((w == 0) | valid[i1])
    return frames[ok], i0[ok], i1[ok], w[ok], (base, end)


def plan_take(
    take: Take,
    mode: str = "resample",
    base: float = 1.0,
    scene_fps: float = 24.0,
    joint_expdirs: np.ndarray | None = None,
) -> TakePlan:
    """Sample every channel of ``take`` at the scene frames to key (pure numpy; see module docstring)."""
    fps = None
    if mode == "footage_rate":
        fps = take.fps
        if not fps or fps <= 0:
            raise EmocaError(
                "config_invalid",
                f"{take.path}: meta.source.fps is missing; cannot use the footage's frame rate",
                "Use frame mapping 'resample'.",
            )
    frames, i0, i1, w, span = mapping_rows(take, mode, base, scene_fps)
    if len(frames) == 0:
        raise EmocaError("input_empty", f"{take.path}: no valid frame of the take falls on a scene frame")

    def lerp(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        ww = w.reshape((-1,) + (1,) * (a.ndim - 1))
        return (1 - ww) * a[i0] + ww * a[i1]

    def rot(aa: np.ndarray) -> np.ndarray:
        q = axis_angle_to_quat(aa)
        return continuous(slerp(q[i0], q[i1], w))

    values = {k: lerp(take[k]) for k in LERPED[take.kind] if k in take}
    values["head"] = rot(take["global_pose"])
    if take.kind == "flame":
        values["jaw"] = rot(take["jaw_pose"])
        values.update(flame_extras(values, joint_expdirs))
    elif "translation" in values:
        first = int(np.nonzero(take["valid"])[0][0])
        values["head_move"] = values["translation"] - np.asarray(take["translation"][first], np.float64)
    return TakePlan(frames=frames, span=span, rows=(i0, i1, w), values=values, fps=fps)


def flame_extras(values: dict[str, np.ndarray], joint_expdirs: np.ndarray | None) -> dict[str, np.ndarray]:
    """The jaw's pose correctives (K, 9) and, with the rig's joint expdirs, the joint offsets (see module
    docstring) from the sampled jaw and head quaternions and expression."""
    r_jaw = quat_to_matrix(values["jaw"])
    out = {"jaw_correctives": (r_jaw - np.eye(3)).reshape(-1, 9)}
    if joint_expdirs is not None:
        n = min(joint_expdirs.shape[2], values["exp"].shape[1])
        delta = np.einsum("jck,nk->njc", joint_expdirs[:, :, :n], values["exp"][:, :n])  # (K,5,3)
        r_head = quat_to_matrix(values["head"])
        out["jaw_offset"] = delta[:, 2] - np.einsum("nij,nj->ni", r_jaw, delta[:, 2])
        out["head_offset"] = delta[:, 0] - np.einsum("nij,nj->ni", r_head, delta[:, 0])
        out["delta_root"] = delta[:, 0]
    return out


def fps_to_scene(fps: float) -> tuple[int, float]:
    """Blender's (fps, fps_base) for a rate: 29.97 -> (30, 1.001), 25 -> (25, 1.0)."""
    n = round(fps)
    for base in (1.0, 1.001):
        if abs(n / base - fps) < 1e-3:
            return n, base
    return n, n / fps


@dataclass(frozen=True)
class CameraPlan:
    """What a camera match makes, decided (and validated) before the scene is touched."""

    width: int  # the footage's size in pixels: the scene's render size
    height: int
    location: np.ndarray  # (K, 3) the camera's location per key, FLAME space
    ortho_scale: np.ndarray  # (K,)
    clip_path: str  # the footage shown behind the camera ("" when it is not a file here)
    clip_start: int  # the scene frame of the footage's first frame


def _bad_source(take: Take, what: str, hint: str = "Capture the take again, or turn Camera Match off.") -> EmocaError:
    return EmocaError("config_invalid", f"{take.path}: meta.source.{what}"[:300], hint)


def source_side(take: Take, key: str) -> int:
    """``meta.source.width`` or ``height``: a whole number of pixels, 1 to MAX_SIDE."""
    value = take.meta.get("source", {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad_source(take, f"{key} is {value!r}: camera match needs the footage's size in pixels")
    if not 1 <= value <= MAX_SIDE or value != round(value):
        raise _bad_source(take, f"{key} is {value!r}: expected a whole number of pixels from 1 to {MAX_SIDE}")
    return int(value)


def source_fps(take: Take) -> float | None:
    """``meta.source.fps`` (None when unknown: an image sequence), checked like the reader checks it."""
    value = take.meta.get("source", {}).get("fps")
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_FPS <= value <= MAX_FPS:
        raise _bad_source(take, f"fps is {value!r}: expected a frame rate from {MIN_FPS:g} to {MAX_FPS:g}",
                          "Capture the take again; the file is not a valid take.")  # fmt: skip
    return float(value)


def plan_camera(take: Take, plan: TakePlan, base: float) -> CameraPlan:
    """The camera match of a FLAME take: its size from meta.source, its track from the take's cam and crop."""
    width, height = source_side(take, "width"), source_side(take, "height")
    path = take.meta.get("source", {}).get("path")
    if path is not None and not isinstance(path, str):
        raise _bad_source(take, f"path is {path!r}: expected the footage's path as text")
    if "cam" not in plan.values or "crop" not in plan.values:
        raise EmocaError("config_invalid", f"{take.path}: camera match needs the take's 'cam' and 'crop'")
    location, scale = camera_track(width, height, plan.values["cam"], plan.values["crop"])
    if not (np.isfinite(location).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise EmocaError("config_invalid", f"{take.path}: the take's 'cam' and 'crop' give no camera "
                         "(a zero or non-finite scale)", "Turn Camera Match off for this take.")  # fmt: skip
    clip = path if path and Path(path).is_file() else ""
    return CameraPlan(width, height, location, scale, clip, int(base - int(take["frame"][0])))


def emotion_props(take: Take, classes: list[str]) -> list[tuple[int, str]]:
    """(expression column, custom property) per emotion class: one property each, names Blender can hold."""
    props = [(c, prop_name(cls)) for c, cls in enumerate(classes)]
    names = [name for _, name in props]
    if len(set(names)) != len(names) or any(len(n.encode("utf-8")) > MAX_PROP_BYTES for n in names):
        raise EmocaError("config_invalid", f"{take.path}: the emotion classes {classes} do not give one custom "
                         f"property each of at most {MAX_PROP_BYTES} bytes", "Turn Emotion Curves off for this "
                         "take.")  # fmt: skip
    if take["expression"].shape[1] != len(classes):
        raise EmocaError("config_invalid", f"{take.path}: {len(classes)} emotion classes for "
                         f"{take['expression'].shape[1]} 'expression' columns")  # fmt: skip
    return props


def scene_range(span: tuple[float, float]) -> tuple[int, int]:
    """The scene frames a take covers: from its first to its last keyable frame (not one past)."""
    return int(math.ceil(span[0] - 1e-6)), int(math.floor(span[1] + 1e-6))


# ---------------------------------------------------------------- writing
@dataclass
class _Undo:
    """What to restore if writing fails half-way (validation happens first, so this is a last resort)."""

    created: list = field(default_factory=list)
    assigned: list = field(default_factory=list)  # (id, previous action)
    objects: list = field(default_factory=list)
    cameras: list = field(default_factory=list)  # camera data made for a camera match
    clips: list = field(default_factory=list)  # Movie Clips loaded for it (not ones already in the file)
    props: list = field(default_factory=list)  # (id, name): custom properties made for the emotion curves
    fps: tuple | None = None  # (scene, fps, fps_base) before footage_rate changed it
    frame_range: tuple | None = None  # (scene, frame_start, frame_end) before the take's range was set
    scene_camera: tuple | None = None  # (scene, camera, resolution_x, resolution_y) before camera match


def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def _target_actions(ids: dict, name: str, mode: str, push: bool, undo: _Undo) -> dict:
    """Choose/create the action per ID (``ids``: role -> ID); return role -> action."""
    out: dict = {}
    shared = None
    for role, id_data in ids.items():
        anim = id_data.animation_data
        current = anim.action if anim is not None else None
        if mode == "active" and current is not None:
            out[role] = current
            if animation.SLOTTED:
                shared = shared or current
            continue
        if push and current is not None:
            animation.push_down(id_data)
        elif current is not None:
            current.use_fake_user = True  # replaced, not deleted: the previous Action stays in the file
        if animation.SLOTTED:
            if shared is None:
                shared = animation.new_action(name)
                undo.created.append(shared)
            action = shared
        else:
            suffix = {"armature": "", "key": "_shapes", "camera": "_camera"}.get(role, "_" + role)
            action = animation.new_action(name + suffix)
            undo.created.append(action)
        undo.assigned.append((id_data, current))
        animation.assign_action(id_data, action)
        out[role] = action
    for role, id_data in ids.items():  # make sure every ID has its slot assigned
        animation.assign_action(id_data, out[role])
    return out


@dataclass
class WritePlan:
    """Everything the write step needs, decided (and validated) before the scene is touched."""

    scene: bpy.types.Scene
    arm: bpy.types.Object
    key: bpy.types.Key
    take: Take
    plan: TakePlan
    options: ApplyOptions
    base: float  # the scene frame of the take's first frame
    emotion: list[tuple[int, str]]  # (expression column, custom property) per emotion class
    action_name: str
    offsets: bool  # key the joint offsets (the option is on and the rig stores its joint expdirs)
    info: dict[str, Any]  # the emoca_* ID properties every Action of the take gets (action_info)
    camera: CameraPlan | None = None  # camera match
    head_bone: str = "root"  # the bone the head rotation keys (FLAME: root; open rigs name theirs)
    translation_bone: str = ""  # the bone the head's movement keys ("" for none)
    shape_keys: list[tuple[int, str]] = field(default_factory=list)  # open takes: (arkit column, key name)
    unkeyed: list[str] = field(default_factory=list)  # open takes: ARKit channels the rig has no key for


def apply_take(
    rig,
    take_path: str | os.PathLike | Take,
    options: ApplyOptions | None = None,
    *,
    scene: bpy.types.Scene | None = None,
    **changes: Any,
) -> bpy.types.Action:
    """Apply a take to a rig (armature object or its mesh); return the armature's Action.

    ``options``: an :class:`~.options.ApplyOptions` (default: the defaults); ``changes``: apply options by name,
    over ``options`` (``apply_take(rig, path, frame_mapping="footage_rate")``). An unknown option or a bad value
    raises EmocaError('config_invalid').

    Everything is validated before the scene is touched: a bad take or rig raises EmocaError and changes nothing.
    """
    write = plan_write(rig, take_path, ApplyOptions.build(options, **changes), scene or bpy.context.scene)
    identity = identity_on_apply(write.arm, write.take, write.options.identity)  # read and checked, not baked
    # ---- nothing above touched the scene; from here on, write (and roll back on an unexpected failure)
    undo = _Undo()
    try:
        action = _write(write, undo)
    except Exception:
        _roll_back(undo)
        raise
    if identity is not None:  # last: the keys are written, the bake only swaps the identity key
        bake_identity(write.arm, identity)
    return action


def plan_write(rig, take_path: str | os.PathLike | Take, options: ApplyOptions, scene) -> WritePlan:
    """Read and check the take against the rig and the options, and plan the keys (the scene is only read)."""
    arm = find_rig(rig)
    if arm is None:
        raise EmocaError(
            "config_invalid",
            f"{getattr(rig, 'name', rig)!r} is not an EMOCA rig",
            "Import a rig with Import Rig and select its armature.",
        )
    key = rig_mesh(arm).data.shape_keys
    take = take_path if isinstance(take_path, Take) else read_take_file(take_path)
    check_kinds(take, arm)
    footage_fps = source_fps(take)
    base = float((1 if options.start == "one" else scene.frame_current) + options.offset)
    fps = footage_fps if options.frame_mapping == "footage_rate" else _scene_fps(scene)
    fields = flame_fields(take, arm, key, options) if take.kind == "flame" else open_fields(take, arm, key, options)
    joint_expdirs = fields.pop("joint_expdirs", None)
    plan = plan_take(take, options.frame_mapping, base, fps or 24.0, joint_expdirs)
    classes = take.classes or [f"class{c}" for c in range(take["expression"].shape[1])]
    write = WritePlan(
        scene=scene,
        arm=arm,
        key=key,
        take=take,
        plan=plan,
        options=options,
        base=base,
        emotion=emotion_props(take, classes) if options.emotion else [],
        action_name=options.name or f"EMOCA_{take.clip_name}",
        offsets=joint_expdirs is not None,
        info={},
        camera=plan_camera(take, plan, base) if options.camera_match else None,
        **fields,
    )
    write.info.update(action_info(write, footage_fps))
    return write


def check_kinds(take: Take, arm) -> None:
    """A take keys only a rig of its own kind (FLAME takes FLAME rigs, open takes open rigs)."""
    kind = rig_kind(arm)
    if take.kind != kind:
        hint = {
            "open": "Export and import the open head (`python -m backend export-rig --head ict`), or "
            "capture with the open path.",
            "flame": "Apply it to a FLAME rig (`export-rig --flame ...`), or capture with an EMOCA model.",
        }
        raise EmocaError("config_invalid", f"{take.path}: a {take.kind} take cannot key the {kind} rig "
                         f"{arm.name!r} (retargeting across kinds is not supported yet)", hint[take.kind])  # fmt: skip


def flame_fields(take: Take, arm, key, options: ApplyOptions) -> dict[str, Any]:
    """A FLAME take on a FLAME rig: the expression (and corrective) keys and bones must exist; the joint expdirs."""
    exp_keys = [f"Exp{i:03d}" for i in range(take.n_exp)]
    wanted = exp_keys + (JAW_POSE_KEYS if options.correctives else [])
    missing = [k for k in wanted if key is None or k not in key.key_blocks]
    if missing:
        raise EmocaError(
            "config_invalid",
            f"{take.path}: the take has {take.n_exp} expression coefficients but "
            f"rig {arm.name!r} lacks shape keys {missing[:5]}{'...' if len(missing) > 5 else ''}",
            "Import a rig with at least as many expression keys as the take.",
        )
    bones = ["jaw"] + (["root"] if options.head_rotation else [])
    if any(b not in arm.pose.bones for b in bones):
        raise EmocaError("config_invalid", f"rig {arm.name!r} lacks bones {bones}")
    joint_expdirs = None
    stored = rig_info(arm).get("joint_expdirs")
    if options.joint_offsets and stored is not None:
        joint_expdirs = np.asarray(stored, np.float64).reshape(5, 3, -1)
    return {"joint_expdirs": joint_expdirs, "head_bone": "root"}


def open_fields(take: Take, arm, key, options: ApplyOptions) -> dict[str, Any]:
    """An open take on an open rig: which ``arkit`` columns key which shape keys, and the head's bones."""
    if options.camera_match:
        raise EmocaError("config_invalid", f"{take.path}: camera match needs a FLAME take's camera",
                         "Turn camera match off for open takes.")  # fmt: skip
    names = take.arkit_names
    keys = key.key_blocks if key is not None else {}
    pairs = [(c, n) for c, n in enumerate(names) if n in keys]
    if not pairs:
        raise EmocaError("config_invalid", f"{take.path}: rig {arm.name!r} has no shape key for any of the take's "
                         "ARKit channels", "Import the open head rig (export-rig --head ict).")  # fmt: skip
    info = rig_info(arm)
    head, move = str(info.get("head_bone", "head")), str(info.get("translation_bone", "root"))
    bones = ([head] if options.head_rotation else []) + ([move] if options.head_translation else [])
    missing = [b for b in bones if b not in arm.pose.bones]
    if missing:
        raise EmocaError("config_invalid", f"rig {arm.name!r} lacks bones {missing}")
    return {
        "head_bone": head,
        "translation_bone": move if options.head_translation else "",
        "shape_keys": pairs,
        "unkeyed": [n for n in names if n not in keys],
    }


def _roll_back(undo: _Undo) -> None:
    """Put back what a failed write changed (Action assignments, new objects, camera data, Movie Clips and
    Actions, the scene's camera and render size, rate and range)."""
    for id_data, previous in undo.assigned:
        animation.assign_action(id_data, previous)
    for id_data, name in undo.props:
        if name in id_data:
            del id_data[name]
    if undo.scene_camera is not None:
        scene, camera, undo_x, undo_y = undo.scene_camera
        scene.camera = camera
        scene.render.resolution_x, scene.render.resolution_y = undo_x, undo_y
    for obj in undo.objects:
        bpy.data.objects.remove(obj)
    for cam in undo.cameras:
        bpy.data.cameras.remove(cam)
    for clip in undo.clips:
        bpy.data.movieclips.remove(clip)
    for action in undo.created:
        bpy.data.actions.remove(action)
    if undo.fps is not None:
        undo.fps[0].render.fps, undo.fps[0].render.fps_base = undo.fps[1:]
    if undo.frame_range is not None:
        undo.frame_range[0].frame_start, undo.frame_range[0].frame_end = undo.frame_range[1:]


def _write(w: WritePlan, undo: _Undo) -> bpy.types.Action:
    """Set the scene's rate and range, choose the Actions and write every channel; return the armature's Action."""
    scene, plan, options = w.scene, w.plan, w.options
    if plan.fps:
        undo.fps = (scene, scene.render.fps, scene.render.fps_base)
        scene.render.fps, scene.render.fps_base = fps_to_scene(plan.fps)
    if options.frame_range:
        undo.frame_range = (scene, scene.frame_start, scene.frame_end)
        first, last = scene_range(plan.span)
        scene.frame_start, scene.frame_end = first, max(last, first)
    ids = {"armature": w.arm, "key": w.key}
    camera = None
    if w.camera is not None:
        camera = _make_camera(w.arm, w.camera, w.action_name, scene, undo)
        ids["camera"] = camera
        ids["camera_data"] = camera.data
    actions = _target_actions(ids, w.action_name, options.action_mode, options.push_down, undo)
    _write_shape_keys(w, actions["key"])
    _write_armature(w, actions["armature"], undo)
    if camera is not None and w.camera is not None:
        f, span = plan.frames, plan.span
        loc, scale = w.camera.location, w.camera.ortho_scale
        animation.write_channels(actions["camera"], camera, {"location": (f, loc)}, "Camera", replace_range=span)
        animation.write_channels(
            actions["camera_data"], camera.data, {"ortho_scale": (f, scale)}, "Camera", replace_range=span
        )
    for action in set(actions.values()):
        for k, val in w.info.items():
            action[k] = val
    return actions["armature"]


def _write_shape_keys(w: WritePlan, action: bpy.types.Action) -> None:
    """The shape-key values on the Key datablock: FLAME's expression keys and (with correctives) the jaw's pose
    correctives, or an open take's ARKit channels."""
    f, v = w.plan.frames, w.plan.values
    if w.take.kind == "open":
        channels = {f'key_blocks["{name}"].value': (f, v["arkit"][:, c]) for c, name in w.shape_keys}
    else:
        channels = {f'key_blocks["Exp{i:03d}"].value': (f, v["exp"][:, i]) for i in range(w.take.n_exp)}
    groups = dict.fromkeys(channels, SHAPES_GROUP[w.take.kind])
    if w.take.kind == "flame" and w.options.correctives:
        for i, kname in enumerate(JAW_POSE_KEYS):
            path = f'key_blocks["{kname}"].value'
            channels[path] = (f, v["jaw_correctives"][:, i])
            groups[path] = "Correctives"
    animation.write_channels(action, w.key, channels, groups, replace_range=w.plan.span)


def _bone_channels(w: WritePlan) -> dict[str, tuple[str, np.ndarray]]:
    """Data path -> (bone group, values (K, C)) of the pose-bone channels the take keys."""
    v = w.plan.values
    out: dict[str, tuple[str, np.ndarray]] = {}
    if w.take.kind == "flame":
        out['pose.bones["jaw"].rotation_quaternion'] = ("jaw", v["jaw"])
        if w.offsets:
            out['pose.bones["jaw"].location'] = ("jaw", v["jaw_offset"])
    if w.options.head_rotation:
        out[f'pose.bones["{w.head_bone}"].rotation_quaternion'] = (w.head_bone, v["head"])
        if w.offsets:
            out[f'pose.bones["{w.head_bone}"].location'] = (w.head_bone, v["head_offset"])
    if w.translation_bone:
        out[f'pose.bones["{w.translation_bone}"].location'] = (w.translation_bone, v["head_move"])
    return out


def _emotion_prop(arm, name: str, lo: float, hi: float, description: str, undo: _Undo) -> None:
    if name not in arm:
        undo.props.append((arm, name))
    ensure_prop(arm, name, lo, hi, description)


def _write_armature(w: WritePlan, action: bpy.types.Action, undo: _Undo) -> None:
    """Jaw and head rotations (and joint offsets, or the head's movement) on the pose bones, the emotion curves
    as ID properties."""
    f, v, arm = w.plan.frames, w.plan.values, w.arm
    channels = {path: (f, values) for path, (_, values) in _bone_channels(w).items()}
    groups = {path: group for path, (group, _) in _bone_channels(w).items()}
    if w.options.emotion:
        _emotion_prop(arm, "emoca_valence", -1.0, 1.0, "Valence (negative to positive), EMOCA take", undo)
        _emotion_prop(arm, "emoca_arousal", -1.0, 1.0, "Arousal (calm to excited), EMOCA take", undo)
        channels[prop_path("emoca_valence")] = (f, v["valence"])
        channels[prop_path("emoca_arousal")] = (f, v["arousal"])
        for c, prop in w.emotion:
            cls = prop.removeprefix(EXPR_PREFIX)
            _emotion_prop(arm, prop, 0.0, 1.0, f"Probability of '{cls}', EMOCA take", undo)
            channels[prop_path(prop)] = (f, v["expression"][:, c])
        for path in channels:
            groups.setdefault(path, EMOTION_GROUP)
    animation.write_channels(action, arm, channels, groups, replace_range=w.plan.span)


def action_info(w: WritePlan, footage_fps: float | None) -> dict:
    """The source metadata every Action of the take stores as ``emoca_*`` ID properties."""
    meta = w.take.meta
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as exc:  # a Take built in memory with values JSON cannot hold
        raise EmocaError("config_invalid", f"{w.take.path}: the take's meta is not JSON ({exc})") from None
    return {
        "emoca_take": str(w.take.path),
        "emoca_source": str(meta.get("source", {}).get("path", "")),
        "emoca_source_fps": float(footage_fps or 0.0),
        "emoca_frame_mapping": w.options.frame_mapping,
        "emoca_start_frame": float(w.base),
        "emoca_frame_span": [float(w.plan.span[0]), float(w.plan.span[1])],
        "emoca_model": str(meta.get("model", {}).get("name", "")),
        "emoca_emotion_model": str(meta.get("emotion", {}).get("model", "")),
        "emoca_take_kind": w.take.kind,
        "emoca_unkeyed_channels": ", ".join(w.unkeyed),
        "emoca_meta": meta_text,
    }


def camera_track(width: float, height: float, cam: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic camera location (K,3) in FLAME space and ortho_scale (K,) framing the whole source frame of
    ``width`` x ``height`` pixels, from the sampled cam (K,3) and crop (K,3,3).

    From cam = [s, tx, ty] (x = s (X + tx), y = -s (Y + ty) in normalised crop coordinates) and crop (crop
    pixels -> frame pixels, a similarity: scale k, translation c): frame pixel u = k * 112 (x + 1) + c_u.
    """
    s, tx, ty = cam[:, 0], cam[:, 1], cam[:, 2]
    k = np.sqrt(np.abs(np.linalg.det(crop[:, :2, :2])))
    px_per_unit = k * 112.0 * s
    # frame pixels index pixel centres (docs/formats.md), so the frame's centre is at ((W - 1) / 2, (H - 1) / 2)
    x = (((width - 1) / 2 - crop[:, 0, 2]) / (k * 112.0) - 1) / s - tx
    y = (1 - ((height - 1) / 2 - crop[:, 1, 2]) / (k * 112.0)) / s - ty
    loc = np.stack([x, y, np.ones_like(x)], 1)  # 1 m in front of the face (+Z), looking down -Z
    return loc, max(width, height) / px_per_unit


def _make_camera(arm, camera: CameraPlan, name: str, scene, undo: _Undo):
    """The camera match's camera (each datablock recorded in ``undo`` as soon as it exists)."""
    cam_data = bpy.data.cameras.new(name + "_camera")
    undo.cameras.append(cam_data)
    cam_data.type = "ORTHO"
    cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
    cam = bpy.data.objects.new(name + "_camera", cam_data)
    undo.objects.append(cam)
    scene.collection.objects.link(cam)
    cam.parent = arm  # FLAME space: the camera looks down FLAME's -Z with FLAME's +Y up
    undo.scene_camera = (scene, scene.camera, scene.render.resolution_x, scene.render.resolution_y)
    scene.render.resolution_x, scene.render.resolution_y = camera.width, camera.height
    scene.camera = cam
    if camera.clip_path:
        n_clips = len(bpy.data.movieclips)
        clip = bpy.data.movieclips.load(camera.clip_path, check_existing=True)
        if len(bpy.data.movieclips) > n_clips:
            undo.clips.append(clip)
        clip.frame_start = camera.clip_start
        bg = cam_data.background_images.new()
        bg.source = "MOVIE_CLIP"
        bg.clip = clip
        cam_data.show_background_images = True
    return cam
