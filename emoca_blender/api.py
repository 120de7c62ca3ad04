"""Plain functions for scripts and pipelines (``blender -b --python script.py``, or ``import bpy`` as a module).

    from emoca_blender import api          # in an installed extension: from bl_ext.<repo>.emoca_blender import api
    rig = api.import_rig("rig.npz")
    action = api.apply_take(rig, "take.npz", frame_mapping="footage_rate")
    result = api.capture("clip.mp4")       # runs the backend, then builds a rig and applies the take
    batch = api.capture_batch(["a.mp4", "shots/"], "out/")   # every clip: its take, its own out/<clip>.blend
    run = api.train("emoca_v1", "learning.max_steps=100")   # run.model_folder: what capture(model=...) loads
    result = api.retarget(bpy.data.objects["MyCharacter"], "take.npz")  # any mesh with ARKit-style shape keys
    api.likeness(rig, "take.npz", "clip.mp4")   # identity key, texture (and detail=True: maps) on the rig
    api.detect_landmarks(bpy.data.objects["Creature"])   # face landmarks for keys with any names, then:
    result = api.retarget(bpy.data.objects["Creature"], "take.npz", method="landmarks")

Everything blocks until done (no modal operators: they do not run in background mode). Errors are
:class:`emoca_contract.errors.EmocaError` with a code, a message and a hint. See docs/headless.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from emoca_contract.errors import EmocaError

from . import apply as _apply
from . import likeness as _likeness
from . import preferences
from . import takes as _takes
from .client import rig_request_for_take, run_request, train_result_paths
from .likeness import LikenessResult
from .options import ApplyOptions
from .progress import print_event
from .retarget.landmarks import Binding, DetectOptions
from .retarget.landmarks import detect_landmarks as _detect_landmarks
from .retarget.mapping import BoneSettings, Mapping, load_preset, save_preset
from .retarget.options import RetargetOptions
from .retarget.run import MappingLike, RetargetResult
from .retarget.run import retarget as _retarget
from .rig import build_rig, find_rig, read_rig
from .takes import capture_targets

__all__ = [
    "ApplyOptions",
    "BatchCaptureResult",
    "BoneSettings",
    "CaptureResult",
    "EmocaError",
    "LikenessResult",
    "Mapping",
    "RetargetOptions",
    "RetargetResult",
    "TrainResult",
    "apply_take",
    "capture",
    "capture_batch",
    "detect_landmarks",
    "export_rig",
    "import_rig",
    "likeness",
    "load_preset",
    "read_rig",
    "retarget",
    "save_preset",
    "take_files",
    "train",
    "use_likeness",
]


def _python(python: str | None) -> str:
    return python or preferences.backend_python()


@dataclass
class _EventLog:
    """The ``on_event`` of one request: keeps every event (a result's ``events``), prints them when verbose."""

    verbose: bool
    seen: list[dict] = field(default_factory=list)

    def __call__(self, event: dict) -> None:
        self.seen.append(event)
        if self.verbose:
            print_event(event)


def import_rig(rig_path: str | os.PathLike, name: str | None = None) -> bpy.types.Object:
    """Build the rig (FLAME or the open head) from a rig file (docs/formats.md#rig-file); return the armature
    object. ``name``: the mesh's name (default: the rig's own, ``FLAME`` or ``ICT``)."""
    return build_rig(rig_path, name=name)


def export_rig(
    output: str | os.PathLike, flame: str | None = None, python: str | None = None, head: str | None = None
) -> Path:
    """Ask the backend to write a rig file; return its path. ``head``: ``ict`` (the open head), ``flame`` or
    ``synthetic``; by default FLAME when a FLAME file is given or installed, else the open head."""
    fields: dict[str, Any] = {"output": str(output)}
    fields.update({"flame": str(flame)} if flame else {})
    fields.update({"head": head} if head else {})
    result = run_request(_python(python), "export_rig", on_event=print_event, **fields)
    return Path((result.get("files") or [output])[0])


def apply_take(
    rig, take_path: str | os.PathLike, options: ApplyOptions | None = None, **changes: Any
) -> bpy.types.Action:
    """Key a take onto a rig (armature or its mesh); return the armature's Action.

    ``options``: an :class:`ApplyOptions`; ``changes``: apply options by name (frame_mapping, start, offset, ...,
    see ApplyOptions) over it, and ``scene`` (default: the context's)."""
    return _apply.apply_take(rig, take_path, options, **changes)


def retarget(
    target_object, take_path: str | os.PathLike, mapping: MappingLike = None, **options: Any
) -> RetargetResult:
    """Key any character's shape keys (and head/jaw bones) from a take (.npz) or a Live Link Face CSV (.csv).

    ``target_object``: a mesh with shape keys (or an armature with one such child mesh). ``mapping``: None
    (match the take's channels to the keys by name, docs/retarget.md), a :class:`Mapping`, or a preset path or
    document (:func:`load_preset`); ``options``: retarget options by name (frame_mapping, start, offset, head, jaw,
    swap_sides, action_mode, frame_range, name, csv_fps, angles, method, flame_channels,
    arkit_map, smoothness; see :class:`RetargetOptions`), bone settings by
    name over the mapping's (armature, head_bone, head_axes, jaw_bone, jaw_axes, jaw_open_axis, jaw_open_gain;
    see :class:`BoneSettings`), ``scene``, and ``source`` (source curves to use instead of the take's own,
    ``emoca_blender.retarget.sources.SourceCurves``). Returns the Actions and the report (``result.report``: what
    matched, what was skipped)."""
    scene = options.pop("scene", None)
    return _retarget(target_object, take_path, mapping, scene=scene, **options)


def detect_landmarks(target_object, python: str | None = None, empties: bool = True, **options: Any) -> Binding:
    """Find a character's 68 face landmarks for ``retarget(..., method="landmarks")`` (docs/retarget.md "Custom
    shape keys"): its face is rendered headless, the backend's detector finds them, they are cast back onto the
    mesh and stored on it, with one empty per landmark (``empties``; move them to adjust). ``options``: ``front``
    (the world direction the face looks, default ``-Y``), ``up`` (``+Z``), ``pixels`` (768), ``engine``
    (``BLENDER_WORKBENCH`` or ``CYCLES``). Returns the landmarks' binding (triangle vertices and weights)."""
    from .retarget.write import target_mesh

    unknown = sorted(set(options) - {"front", "up", "pixels", "engine"})
    if unknown:
        raise EmocaError("config_invalid", f"unknown landmark option {unknown[0]!r}",
                         "Options: front, up, pixels, engine.")  # fmt: skip
    return _detect_landmarks(target_mesh(target_object), DetectOptions(**options), python=_python(python),
                             empties=empties)  # fmt: skip


def likeness(
    rig,
    take_path: str | os.PathLike,
    video: str | os.PathLike | None = None,
    identity: bool = True,
    texture: bool = True,
    detail: bool = False,
    identity_from: str | os.PathLike | None = None,
    show_detail: bool = False,
    python: str | None = None,
    verbose: bool = True,
    cancel: Callable[[], bool] | None = None,
    **backend: Any,
) -> LikenessResult:
    """Make a take's likeness with the backend (``python -m backend likeness``: the identity, the texture from
    ``video`` (default: the take's footage), the detail maps) and put it on ``rig`` (docs/likeness.md).

    ``identity_from``: another take of the performer whose likeness identity to bake instead (its files must
    exist). ``show_detail``: tick the rig mesh's Detail checkbox. ``backend``: the request's other fields (flame,
    model, device, texels, frames, focal, delight). ``cancel``: polled every 0.1 s; True cancels (EmocaError
    ``cancelled``, the rig untouched). Returns what changed (:class:`LikenessResult`; ``files``: what the
    backend wrote)."""
    arm = _rig_for_likeness(rig)
    fields = _likeness.request_fields(take_path, video, identity, texture, detail,
                                      **_backend_fields(backend))  # fmt: skip
    events = _EventLog(verbose)
    result = run_request(_python(python), "likeness", on_event=events, should_cancel=cancel, **fields)
    out = _likeness.use_likeness(arm, take_path, identity, texture, detail, identity_from, show_detail)
    out.files = [str(f) for f in result.get("files") or []]
    return out


def use_likeness(
    rig,
    take_path: str | os.PathLike,
    identity: bool = True,
    texture: bool = True,
    detail: bool = False,
    identity_from: str | os.PathLike | None = None,
    show_detail: bool = False,
) -> LikenessResult:
    """Put a take's existing likeness files (its ``NAME.likeness.json``) on ``rig``, without the backend."""
    return _likeness.use_likeness(_rig_for_likeness(rig), take_path, identity, texture, detail, identity_from,
                                  show_detail)  # fmt: skip


def _rig_for_likeness(rig) -> bpy.types.Object:
    arm = find_rig(rig)
    if arm is None:
        raise EmocaError("config_invalid", f"{getattr(rig, 'name', rig)!r} is not an EMOCA rig",
                         "Pass the armature import_rig made (or its mesh).")  # fmt: skip
    return arm


LIKENESS_FIELDS = ("flame", "model", "device", "texels", "frames", "focal", "delight", "output")


def _backend_fields(backend: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(backend) - set(LIKENESS_FIELDS))
    if unknown:
        raise EmocaError("config_invalid", f"unknown likeness option {unknown[0]!r}",
                         f"Options: {', '.join(LIKENESS_FIELDS)}.")  # fmt: skip
    return {k: str(v) if k in ("flame", "model", "output") and v is not None else v for k, v in backend.items()}


@dataclass
class CaptureResult:
    rig: bpy.types.Object
    action: bpy.types.Action
    takes: list[Path]
    rig_file: Path | None = None
    events: list[dict] = field(default_factory=list)


def capture(
    footage: str | os.PathLike,
    rig=None,
    output: str | os.PathLike | None = None,
    python: str | None = None,
    flame: str | None = None,
    verbose: bool = True,
    cancel: Callable[[], bool] | None = None,
    **options: Any,
) -> CaptureResult:
    """Capture ``footage`` with the backend and apply the (first) take to ``rig``.

    ``rig``: a rig armature (or its mesh), a rig file (built once the capture succeeded), or None (the backend
    exports one for the take into ``<output>/rigs/``); it is checked before anything is captured. ``output``: the
    take folder (default: a new temporary folder). ``cancel``: polled every 0.1 s; returning True cancels the
    capture (EmocaError code ``cancelled``; nothing is written and the scene is untouched). ``options``: the
    capture request's options (model, device, batch_size, face, smooth, frames, ...) and the apply options
    (:class:`ApplyOptions`: frame_mapping, start, offset, ...), told apart by name.
    """
    footage = Path(footage)
    if not footage.exists():
        raise EmocaError("input_missing", f"footage not found: {footage}")
    apply_opts, options = ApplyOptions.split(options)
    given = rig_argument(rig)
    out_dir = Path(output) if output else Path(tempfile.mkdtemp(prefix="emoca_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    capture_opts = _capture_options(options, flame)
    target, rig_output = capture_targets(footage, out_dir, capture_opts.get("face"))
    events = _EventLog(verbose)
    py = _python(python)
    result = run_request(
        py,
        "capture",
        on_event=events,
        should_cancel=cancel,
        input=str(footage),
        output=str(target),
        options=capture_opts,
    )
    takes = [Path(f) for f in result.get("files", []) if str(f).endswith(".npz")]
    if not takes:
        raise EmocaError("no_face", f"the capture of {footage} wrote no take", "Check the footage and the face option.")
    rig_file = Path(given["source_path"]) if isinstance(given, dict) else None
    if isinstance(given, dict):
        arm = build_rig(given)
    elif given is None:
        head = rig_request_for_take(takes[0], capture_opts.get("flame"))
        rig_output.parent.mkdir(parents=True, exist_ok=True)
        rig_file = export_rig(rig_output, flame=head.get("flame"), python=py, head=head["head"])
        arm = build_rig(rig_file)
    else:
        arm = given
    action = _apply.apply_take(arm, takes[0], apply_opts)
    return CaptureResult(rig=arm, action=action, takes=takes, rig_file=rig_file, events=events.seen)


def _capture_options(options: dict[str, Any], flame: str | os.PathLike | None) -> dict[str, Any]:
    """The capture request's ``options`` from the capture options by name (a face number as digits, ``smooth`` as a
    0..1 strength as in the panel) over the preferences' defaults."""
    options = dict(options)
    if isinstance(options.get("face"), str) and options["face"].isdigit():
        options["face"] = int(options["face"])
    if isinstance(options.get("smooth"), (int, float)):  # a 0..1 strength, as in the panel
        options.update(preferences.smoothing_options(options.pop("smooth")))
    capture_opts = preferences.capture_options(None, None, **options)
    if flame:
        capture_opts["flame"] = str(flame)
    return capture_opts


def rig_argument(rig) -> bpy.types.Object | dict | None:
    """What ``capture(rig=...)`` names, checked before any capture: None (the backend will export one), the rig
    armature of an object (an armature or its mesh), or a rig file's validated arrays (built after the capture,
    so a failed capture adds nothing to the scene)."""
    if rig is None:
        return None
    if isinstance(rig, (str, os.PathLike)):
        return read_rig(rig)
    arm = find_rig(rig)
    if arm is None:
        raise EmocaError(
            "config_invalid",
            f"{getattr(rig, 'name', rig)!r} is not an EMOCA rig",
            "Pass the armature import_rig made (or its mesh), a rig file, or rig=None to export one.",
        )
    return arm


@dataclass
class BatchCaptureResult:
    """A batch capture, applied: each clip that succeeded has its take(s) and its own .blend (``blends``, in clip
    order) or, with ``one_blend``, its own Action on one rig in the current file (``actions``); the clips that
    failed are in ``failed`` (name, input, error code and message); ``report`` is the backend's whole batch report
    (docs/capture.md: every clip's frames, faces, fps, warnings, errors)."""

    takes: list[Path]
    actions: list[str]
    blends: list[Path] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    rig_files: list[Path] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)


def capture_batch(
    footage: list[str | os.PathLike],
    output_dir: str | os.PathLike,
    rig=None,
    python: str | None = None,
    flame: str | None = None,
    one_blend: bool = False,
    blend: str | os.PathLike | None = None,
    jobs: int | None = None,
    overwrite: bool = False,
    ray: str | None = None,
    verbose: bool = True,
    cancel: Callable[[], bool] | None = None,
    **options: Any,
) -> BatchCaptureResult:
    """Capture every clip of ``footage`` in one backend batch (files, folders, globs or a manifest, as
    ``python -m backend capture`` takes them: docs/capture.md) into ``<output_dir>/takes/``, then apply each take:
    into its own ``<output_dir>/<clip>.blend`` (started from ``blend``, a template .blend, else an empty file: the
    file open now is replaced), or, with ``one_blend``, as its own Action (``EMOCA_<clip>``) on one rig per head
    in the current file (save it yourself). A clip that failed is listed in ``failed``; the others are applied.

    ``rig``: None (the backend exports one rig per head into ``<output_dir>/takes/rigs/``), a rig file, or (with
    ``one_blend``) a rig armature of the current file. ``jobs``/``overwrite``/``ray``: the batch's worker
    processes, redoing complete takes, and a Ray cluster (``"local"``, ``"auto"`` or an address). ``options``:
    capture options and apply options by name, as :func:`capture` takes them."""
    inputs = [str(f) for f in footage]
    if not inputs:
        raise EmocaError("input_missing", "capture_batch: no footage given")
    out_dir = Path(output_dir)
    apply_opts, options = ApplyOptions.split(options)
    given = rig_argument(rig)
    if given is not None and not isinstance(given, dict) and not one_blend:
        raise EmocaError(
            "config_invalid",
            "a rig object lives in the current file, and each clip gets its own .blend",
            "Pass a rig file (rig='rig.npz'), or one_blend=True to key every clip onto this rig.",
        )
    capture_opts = _capture_options(options, flame)
    takes_dir = out_dir / "takes"
    takes_dir.mkdir(parents=True, exist_ok=True)
    events = _EventLog(verbose)
    py = _python(python)
    fields: dict[str, Any] = {"inputs": inputs[1:], "overwrite": bool(overwrite)}  # overwrite given: a batch
    fields.update({k: v for k, v in (("jobs", jobs), ("ray", ray)) if v is not None})
    result = run_request(
        py, "capture", on_event=events, should_cancel=cancel, input=inputs[0], output=str(takes_dir),
        options=capture_opts, **fields,
    )  # fmt: skip
    clips = [c for c in result.get("clips", []) if isinstance(c, dict)]
    done = [c for c in clips if c.get("status") in ("done", "skipped") and c.get("takes")]
    batch = BatchCaptureResult(
        takes=[Path(t) for c in done for t in c["takes"]],
        actions=[],
        failed=[{k: c.get(k) for k in ("name", "input", "status", "error")} for c in clips if c not in done],
        report={k: v for k, v in result.items() if k not in ("type", "version", "id")},
        events=events.seen,
    )
    rigs = _BatchRigs(given, py, capture_opts.get("flame"), takes_dir / "rigs")
    for clip in done:
        if not one_blend:
            _open_blend(blend)
            rigs.built.clear()  # a new file: its rigs are built in it
        for take in clip["takes"]:  # one take, or one per face (face "all")
            action = _apply.apply_take(rigs.rig_for(Path(take)), take, apply_opts)
            batch.actions.append(action.name)
        if not one_blend:
            batch.blends.append(_save_blend(out_dir / f"{clip['name']}.blend"))
    batch.rig_files = rigs.files()
    return batch


@dataclass
class _BatchRigs:
    """The rigs of a batch: the given one, else one per head (exported once, built in each .blend that needs it)."""

    given: Any  # a rig armature, a rig file's arrays (rig_argument), or None
    python: str
    flame: str | None
    folder: Path
    exported: dict[tuple, Path] = field(default_factory=dict)  # (head, flame) -> rig file
    built: dict[tuple, Any] = field(default_factory=dict)  # (head, flame) -> its armature in the current file

    def rig_for(self, take: Path) -> bpy.types.Object:
        """The rig to key ``take`` onto in the current file: found there, else built (and exported first)."""
        if self.given is not None and not isinstance(self.given, dict):
            return self.given
        if isinstance(self.given, dict):
            key: tuple = ("given",)
        else:
            head = rig_request_for_take(take, self.flame)
            key = (head["head"], head.get("flame"))
            if key not in self.exported:
                self.folder.mkdir(parents=True, exist_ok=True)
                out = self.folder / f"{head['head']}_rig.npz"
                self.exported[key] = export_rig(out, flame=head.get("flame"), python=self.python, head=head["head"])
        if key not in self.built:
            self.built[key] = build_rig(self.given if isinstance(self.given, dict) else self.exported[key])
        return self.built[key]

    def files(self) -> list[Path]:
        return list(self.exported.values())


def _open_blend(blend: str | os.PathLike | None) -> None:
    """Start a clip's .blend: the template ``blend``, else an empty file."""
    if blend:
        bpy.ops.wm.open_mainfile(filepath=str(Path(blend).resolve()))
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def _save_blend(path: Path) -> Path:
    out = path.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    return out


def take_files(folder: str | os.PathLike) -> list[Path]:
    """The take files in ``folder``, sorted (rig files and other .npz files are skipped by their meta.format)."""
    return _takes.take_files(folder)


@dataclass
class TrainResult:
    """A finished training run: ``model_folder`` is the EMOCA model folder capture loads (``capture(...,
    model=str(result.model_folder))`` or the add-on preference), ``checkpoint`` its best checkpoint."""

    model_folder: Path
    checkpoint: Path | None
    events: list[dict] = field(default_factory=list)
    capture_loadable: bool | None = None  # False for test configs (tiny_cpu) whose network capture cannot load
    result: dict = field(default_factory=dict)  # the backend's whole ``result`` event (global_step, best_score...)


def train(
    config: str | os.PathLike,
    *overrides: str,
    python: str | None = None,
    verbose: bool = True,
    cancel: Callable[[], bool] | None = None,
    **kw_overrides,
) -> TrainResult:
    """Run ``python -m backend train`` through the protocol; return the run's model folder and checkpoint.

    ``config``: a YAML path or a shipped config's name (``tiny_cpu``, ``emoca_v1``, ``emoca_v2``,
    ``emotion_resnet50``). Overrides are ``key=value`` strings or keyword arguments
    (``train("cfg.yaml", **{"learning.max_steps": 10})``); a relative ``output_dir`` is made absolute here (the
    backend runs in its own folder). ``cancel``: polled every 0.1 s; True stops the training (EmocaError
    ``cancelled``).
    """
    items = list(overrides) + [f"{k}={v}" for k, v in kw_overrides.items()]
    items = [f"output_dir={Path(o.split('=', 1)[1]).absolute()}" if o.startswith("output_dir=") else o for o in items]
    config = str(Path(config).absolute()) if Path(config).is_file() else str(config)
    events = _EventLog(verbose)
    result = run_request(
        _python(python), "train", on_event=events, should_cancel=cancel, config=config, overrides=items
    )
    folder, ckpt = train_result_paths(result)
    if folder is None:
        raise EmocaError("internal", "training finished without reporting a model folder or checkpoint")
    return TrainResult(
        model_folder=Path(folder),
        checkpoint=Path(ckpt) if ckpt else None,
        events=events.seen,
        capture_loadable=result.get("capture_loadable"),
        result=result,
    )
