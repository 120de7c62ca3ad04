"""Retarget a take onto a character: plan everything (the scene is only read), then write in one go.

:func:`retarget` is what the panel's operator, ``api.retarget`` and ``blender -c emoca retarget`` run:
1. read the take (``.npz``, or a Live Link Face ``.csv``) and its source curves (:mod:`.sources`);
2. the mapping: the one given (a :class:`~.mapping.Mapping`, a preset path or a preset document), else one made
   by name from the take's channels and the character's shape keys (:func:`~.mapping.auto_mapping`);
3. the scene frames to key and the take rows behind each (the apply step's frame mapping, ``apply.mapping_rows``:
   ``resample`` by time at the scene's rate, or ``footage_rate``), then the key curves and bone rotations
   (:mod:`.engine`) and the write (:func:`~.write.plan_key_write`), all validated;
4. write: the scene's rate (footage_rate) and frame range, then the keys (:func:`~.write.write_planned`); a
   failure part-way puts everything back.
The result carries the Actions and a report (what matched, what was skipped and why), also stored on the Actions
as ``emoca_retarget_report`` with the mapping used (``emoca_retarget_mapping``, a preset document).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import bpy
import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.take import Take

from ..apply import fps_to_scene, mapping_rows
from .engine import CurvePlan, plan_curves
from .mapping import BoneSettings, Mapping, auto_mapping, from_json, load_preset, to_json
from .methods import take_source
from .naming import NameMatch
from .options import RetargetOptions
from .sources import SourceCurves, load_take
from .write import KeyWrite, Undo, WrittenActions, find_armature, plan_key_write, roll_back, shape_keys, target_mesh
from .write import write_planned as _write_keys

MappingLike = Mapping | str | os.PathLike | dict | None
Progress = Callable[[float, str], None]


@dataclass
class RetargetResult:
    """A finished retarget: the keyed mesh and armature, the Actions, the mapping used and the report."""

    mesh: bpy.types.Object
    armature: bpy.types.Object | None
    actions: WrittenActions
    mapping: Mapping
    report: list[str] = field(default_factory=list)
    n_frames: int = 0

    @property
    def action(self) -> bpy.types.Action | None:
        """The Action holding the shape keys (on 4.4+ also the bones)."""
        return self.actions.key_action or self.actions.armature_action


@dataclass
class RetargetPlan:
    """Everything the write step needs, decided and checked before the scene is touched."""

    scene: bpy.types.Scene
    write: KeyWrite
    curves: CurvePlan
    mapping: Mapping
    report: list[str]
    fps: float | None  # the scene rate to set (footage_rate), else None
    span: tuple[float, float]
    frame_range: bool


def resolve_mapping(
    mapping: MappingLike, source: SourceCurves, keys: list[str], swap_sides: bool, bones: dict[str, Any]
) -> tuple[Mapping, NameMatch | None]:
    """The mapping to use: ``mapping`` as given (a preset path or document is read), else one made by name;
    ``bones`` (bone settings by name) over its bone settings."""
    if mapping is None:
        made, match = auto_mapping(source.names, keys, swap_sides)
        return made.with_bones(**bones), match
    if isinstance(mapping, Mapping):
        return mapping.with_bones(**bones), None
    if isinstance(mapping, dict):
        return from_json(mapping).with_bones(**bones), None
    if isinstance(mapping, (str, os.PathLike)):
        return load_preset(mapping).with_bones(**bones), None
    raise EmocaError("config_invalid", f"mapping {mapping!r}: expected a Mapping, a preset path or None"[:200])


def split_changes(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword changes -> (retarget options, bone settings); a name that is neither is config_invalid."""
    bone_names = {f.name for f in fields(BoneSettings)}
    unknown = sorted(set(changes) - bone_names - set(RetargetOptions.names()))
    if unknown:
        raise EmocaError("config_invalid", f"unknown retarget option {unknown[0]!r}",
                         f"Options: {', '.join(RetargetOptions.names())}; bone settings: "
                         f"{', '.join(sorted(bone_names))}.")  # fmt: skip
    bones = {k: v for k, v in changes.items() if k in bone_names}
    return {k: v for k, v in changes.items() if k not in bone_names}, bones


def check_source(source: SourceCurves, take: Take) -> SourceCurves:
    """Source curves given by a caller (a conversion, a solve) must have one row per take row and one name per
    column; internal otherwise (a caller's bug)."""
    values = np.asarray(source.values)
    n = take.n_frames
    if values.ndim != 2 or values.shape != (n, len(source.names)):
        raise EmocaError("internal", f"source curves of shape {values.shape} for {len(source.names)} names and a "
                         f"take of {n} rows")  # fmt: skip
    for name, rot in (("head", source.head), ("jaw", source.jaw)):
        if rot is not None and np.shape(rot) != (n, 3):
            raise EmocaError("internal", f"source {name} rotation of shape {np.shape(rot)}, expected ({n}, 3)")
    return source


def _frame_rows(take: Take, options: RetargetOptions, scene) -> tuple[np.ndarray, tuple, tuple, float | None]:
    """Scene frames (K,), the rows behind them, the span and the scene rate to set (apply's frame mapping)."""
    base = float((1 if options.start == "one" else scene.frame_current) + options.offset)
    fps = None
    if options.frame_mapping == "footage_rate":
        fps = take.fps
        if not fps:
            raise EmocaError("config_invalid", f"{take.path}: the take has no frame rate (meta.source.fps)",
                             "Use frame mapping 'resample'.")  # fmt: skip
    rate = fps or scene.render.fps / scene.render.fps_base
    frames, i0, i1, w, span = mapping_rows(take, options.frame_mapping, base, rate)
    if not len(frames):
        raise EmocaError("input_empty", f"{take.path}: no valid frame of the take falls on a scene frame")
    return frames, (i0, i1, w), span, fps


def report_lines(source: SourceCurves, mapping: Mapping, match: NameMatch | None, curves: CurvePlan) -> list[str]:
    """The report for people: where the channels come from, what matched, what was skipped, clipped or driven."""
    lines = [f"source: {source.note}"]
    if source.unobserved:
        lines.append(f"not observed in the take (not keyed): {', '.join(source.unobserved)}")
    lines += match.lines() if match is not None else [f"mapping {mapping.name or '(unnamed)'}: "
                                                      f"{len(mapping.entries)} entries"]  # fmt: skip
    lines.append(f"keyed {len(curves.keys)} shape keys from {len(curves.used)} entries")
    lines += [f"skipped: {s}" for s in curves.skipped]
    lines += [f"clipped to the slider range: {k} ({n} frames)" for k, n in curves.clipped.items()]
    lines += [f"bone {b}: rotation keyed" for b in curves.bones]
    return lines


def plan_retarget(
    target_object: Any,
    take_path: str | os.PathLike | Take,
    mapping: MappingLike,
    options: RetargetOptions,
    scene,
    bones: dict[str, Any] | None = None,
    source: SourceCurves | None = None,
) -> RetargetPlan:
    """Read and check everything a retarget needs and decide every key (the scene is only read)."""
    mesh = target_mesh(target_object)
    take = load_take(take_path, fps=options.csv_fps or None, angles=options.angles)
    if source is not None:
        source = check_source(source, take)
    else:  # the option method (and flame_channels) decides: by name, through the ARKit map, or a landmark solve
        source, mapping = take_source(mesh, take, options, mapping)
    keys = shape_keys(mesh)
    chosen, match = resolve_mapping(mapping, source, list(keys), options.swap_sides, bones or {})
    chosen.bones.check()
    frames, rows, span, fps = _frame_rows(take, options, scene)
    curves = plan_curves(source, rows, chosen, keys, head=options.head, jaw=options.jaw)
    armature = find_armature(mesh, chosen.bones.armature) if curves.bones else None
    report = report_lines(source, chosen, match, curves)
    info = {
        "emoca_take": str(take.path or ""),
        "emoca_take_kind": take.kind,
        "emoca_source": str(take.meta.get("source", {}).get("path", "")),
        "emoca_frame_mapping": options.frame_mapping,
        "emoca_frame_span": [float(span[0]), float(span[1])],
        "emoca_retarget_source": source.note,
        "emoca_retarget_mapping": json.dumps(to_json(chosen)),
        "emoca_retarget_report": "\n".join(report),
    }
    write = plan_key_write(
        mesh,
        frames,
        curves.keys,
        curves.bones,
        armature=armature,
        action_name=options.name or f"EMOCA_{take.clip_name}_retarget",
        action_mode=options.action_mode,
        replace_range=span,
        info=info,
    )
    return RetargetPlan(scene, write, curves, chosen, report, fps, span, options.frame_range)


def _scene_changes(plan: RetargetPlan, undo: Undo) -> None:
    """The scene's rate (footage_rate) and frame range, each remembered in ``undo`` before it changes."""
    scene = plan.scene
    if plan.fps:
        undo.scene += [(scene.render, "fps", scene.render.fps), (scene.render, "fps_base", scene.render.fps_base)]
        scene.render.fps, scene.render.fps_base = fps_to_scene(plan.fps)
    if plan.frame_range:
        undo.scene += [(scene, "frame_start", scene.frame_start), (scene, "frame_end", scene.frame_end)]
        # the range ends on the last frame the take covers (a key lands on every whole scene frame of the span)
        start, end = int(math.floor(plan.span[0])), int(math.floor(plan.span[1] + 1e-6))
        scene.frame_start, scene.frame_end = start, max(start, end)


def retarget(
    target_object: Any,
    take_path: str | os.PathLike | Take,
    mapping: MappingLike = None,
    options: RetargetOptions | None = None,
    *,
    scene: bpy.types.Scene | None = None,
    progress: Progress | None = None,
    source: SourceCurves | None = None,
    **changes: Any,
) -> RetargetResult:
    """Retarget a take (``.npz``, Live Link ``.csv`` or a Take) onto ``target_object`` (a mesh with shape keys, or
    an armature with one such child mesh); see the module docstring.

    ``mapping``: a :class:`~.mapping.Mapping`, a preset path or document, or None (match by name). ``options``:
    a :class:`~.options.RetargetOptions`; ``changes``: options by name over it, and bone settings by name
    (``head_bone="Head"``, see :class:`~.mapping.BoneSettings`) over the mapping's. ``progress(fraction, text)``
    is told how far it is. ``source``: source curves to use instead of the take's own (a conversion of the take,
    a landmark solve; one row per take row). Bad input raises EmocaError and changes nothing.
    """
    tell = progress or (lambda fraction, text: None)
    tell(0.0, "reading the take")
    option_changes, bones = split_changes(changes)
    plan = plan_retarget(target_object, take_path, mapping, RetargetOptions.build(options, **option_changes),
                         scene or bpy.context.scene, bones, source)  # fmt: skip
    tell(0.5, f"writing {len(plan.write.frames)} frames")
    # ---- nothing above touched the scene; from here on, write (and roll back on an unexpected failure)
    undo = Undo()
    try:
        _scene_changes(plan, undo)
        actions = _write_keys(plan.write, undo)
    except Exception:
        roll_back(undo)
        raise
    tell(1.0, "done")
    return RetargetResult(
        mesh=plan.write.mesh,
        armature=plan.write.armature,
        actions=actions,
        mapping=plan.mapping,
        report=plan.report,
        n_frames=len(plan.write.frames),
    )
