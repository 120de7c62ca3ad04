"""Plain functions for scripts and pipelines (``blender -b --python script.py``, or ``import bpy`` as a module).

    from emoca_blender import api          # in an installed extension: from bl_ext.<repo>.emoca_blender import api
    rig = api.import_rig("rig.npz")
    action = api.apply_take(rig, "take.npz", frame_mapping="footage_rate")
    result = api.capture("clip.mp4")       # runs the backend, then builds a rig and applies the take
    run = api.train("emoca_v1", "learning.max_steps=100")   # run.model_folder: what capture(model=...) loads

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
from . import preferences
from .client import rig_request_for_take, run_request, train_result_paths
from .options import ApplyOptions
from .progress import print_event
from .rig import build_rig, find_rig, read_rig

__all__ = [
    "ApplyOptions",
    "CaptureResult",
    "EmocaError",
    "TrainResult",
    "apply_take",
    "capture",
    "export_rig",
    "import_rig",
    "read_rig",
    "train",
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
    """Capture ``footage`` with the backend and apply the (first) take to ``rig`` (built when None).

    ``cancel``: polled every 0.1 s; returning True cancels the capture (EmocaError code ``cancelled``; nothing is
    written and the scene is untouched). ``options``: the capture request's options (model, device, batch_size,
    face, smooth, frames, ...) and the apply options (:class:`ApplyOptions`: frame_mapping, start, offset, ...),
    told apart by name.
    """
    footage = Path(footage)
    if not footage.exists():
        raise EmocaError("input_missing", f"footage not found: {footage}")
    apply_opts, options = ApplyOptions.split(options)
    out_dir = Path(output) if output else Path(tempfile.mkdtemp(prefix="emoca_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir if options.get("face") == "all" else out_dir / (footage.stem + ".npz")
    if isinstance(options.get("face"), str) and options["face"].isdigit():
        options["face"] = int(options["face"])
    if isinstance(options.get("smooth"), (int, float)):  # a 0..1 strength, as in the panel
        options.update(preferences.smoothing_options(options.pop("smooth")))
    capture_opts = preferences.capture_options(None, None, **options)
    if flame:
        capture_opts["flame"] = str(flame)
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
    rig_file = None
    arm = find_rig(rig) if rig is not None else None
    if rig is not None and arm is None:
        if isinstance(rig, (str, os.PathLike)):
            arm = build_rig(rig)
        else:
            raise EmocaError("config_invalid", f"{rig!r} is not an EMOCA rig (an armature from import_rig)")
    if arm is None:
        head = rig_request_for_take(takes[0], capture_opts.get("flame"))
        rig_file = export_rig(out_dir / "rig.npz", flame=head.get("flame"), python=py, head=head["head"])
        arm = build_rig(rig_file)
    action = _apply.apply_take(arm, takes[0], apply_opts)
    return CaptureResult(rig=arm, action=action, takes=takes, rig_file=rig_file, events=events.seen)


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
