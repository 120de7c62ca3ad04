"""``python -m backend demo``: the main job end to end on the built-in defaults (what ``make demo`` runs).

1. Render a clip with known ground truth: the open ICT-FaceKit head (MIT, bundled) performing
   :data:`backend.synthetic.ict_clip.DEMO_PERFORMANCE` (jaw open, smile, blink, brow raise, a head turn either
   way and a nod), drawn by the project's rasterizer and encoded with PyAV.
2. Export the rig: the open ICT head, or FLAME when the licensed EMOCA/FLAME files are installed.
3. Capture the clip into a take with what a user's capture would run: the open model (MediaPipe's Face
   Landmarker: ARKit scores and head pose) unless an EMOCA/DECA model is installed, then EMOCA; the preview
   video and the emotion plot.
4. Open real Blender headless (the bpy module, in a child process): import the rig, apply the take with the
   emotion curves and a camera that sees what the render's camera saw, save ``demo.blend``, and list what got
   keyed.
5. Print what was used and the recovered-vs-true figures (:func:`recovery`).

Everything goes into the output folder (:data:`OUTPUTS`; a rerun replaces those files and touches nothing else
there), the render's ground truth included (``demo_truth.npz``). docs/capture.md, "The demo", says which
channels the performance drives and why, and how the performer is painted.

Recovered vs true (no fitting of any kind: the take's values as captured, in the render's camera frame):
``arkit_error`` is the mean absolute ARKit weight error over the frames with a face and the channels the
performance drives; ``arkit_error_if_neutral`` the same for answering neutral (every weight 0), and
``open_arkit_error_ratio`` their ratio (0 = perfect, 1 = no better than neutral). ``head_error_deg_mean`` /
``_max``: the angle between the captured and the rendered head rotation, per frame with a face.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emoca_contract.errors import EmocaError

ROOT = Path(__file__).resolve().parents[2]
# The clip's frame (W, H): the face about 190 px tall, which the Face Landmarker reads as well as at 640x480
# (the same scores within 0.05 on every driven channel) for half the render time.
SIZE = (480, 360)
FPS = 25.0
# Everything the demo writes into its folder (a rerun replaces these and touches nothing else there).
OUTPUTS = ("demo_clip.mp4", "demo_truth.npz", "demo_rig.npz", "demo_take.npz", "demo_preview.mp4", "demo_emotion.png",
           "demo.blend", "demo_summary.json")  # fmt: skip

# Runs in the child process (the bpy module): argv[1] is a JSON job (rig, take, blend, kind, camera). It prints
# DEMO_BLENDER + what it keyed, or DEMO_ERROR + the EmocaError the add-on raised.
BLENDER_SCRIPT = r"""
import json, sys
import bpy
from emoca_blender import api
from emoca_blender.animation import fcurves_for
from emoca_contract.errors import EmocaError

job = json.loads(sys.argv[1])
bpy.ops.wm.read_factory_settings(use_empty=True)
flame = job["kind"] == "flame"
try:
    rig = api.import_rig(job["rig"])
    action = api.apply_take(rig, job["take"], emotion=True, camera_match=flame, frame_mapping="footage_rate")
except EmocaError as err:
    print("DEMO_ERROR" + json.dumps(err.to_dict()))
    sys.exit(1)
scene = bpy.context.scene
cam = job["camera"]
if not flame:  # the render's pinhole: in the rig's frame at (0, 0, distance), looking down -Z, +Y up
    data = bpy.data.cameras.new("demo_camera")
    data.sensor_fit, data.sensor_width = "HORIZONTAL", 36.0
    data.lens = cam["focal"] * 36.0 / cam["width"]
    data.clip_start, data.clip_end = 0.01, 100.0
    obj = bpy.data.objects.new("demo_camera", data)
    scene.collection.objects.link(obj)
    obj.parent, obj.location = rig, (0.0, 0.0, cam["distance"])
    scene.camera = obj
    scene.render.resolution_x, scene.render.resolution_y = cam["width"], cam["height"]
    clip = bpy.data.movieclips.load(cam["clip"], check_existing=True)
    clip.frame_start = scene.frame_start
    bg = data.background_images.new()
    bg.source, bg.clip, data.show_background_images = "MOVIE_CLIP", clip, True
bpy.ops.wm.save_as_mainfile(filepath=job["blend"])
mesh = next(o for o in rig.children if o.type == "MESH")
key = mesh.data.shape_keys
def paths(idd):
    ad = idd.animation_data
    return [fc.data_path for fc in fcurves_for(ad.action, idd).fcurves] if ad and ad.action else []
arm_paths, key_paths = paths(rig), paths(key)
print("DEMO_BLENDER" + json.dumps({
    "action": action.name, "frames": [scene.frame_start, scene.frame_end],
    "fps": round(scene.render.fps / scene.render.fps_base, 3),
    "shape_keys": len(key.key_blocks) - 1,  # besides the Basis
    "keyed_shape_keys": sorted({p.split('"')[1] for p in key_paths if p.startswith("key_blocks[")}),
    "keyed_bones": sorted({p.split('"')[1] for p in arm_paths if p.startswith("pose.bones[")}),
    "keyed_properties": sorted({p[2:-2] for p in arm_paths if p.startswith('["')}),
    "blender": bpy.app.version_string,
}))
"""


@dataclass(frozen=True)
class DemoPlan:
    """What this run uses: ``kind`` "open" (the open model on the ICT head) or "flame" (installed EMOCA on
    FLAME), and the FLAME file for the rig (None for the ICT head)."""

    kind: str
    flame_path: str | None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument(
        "--fps",
        type=float,
        default=FPS,
        help="frame rate of the rendered performance (the same sequence in fewer frames renders faster)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-blender", action="store_true", help="stop after the capture (no .blend)")


def _say(msg: str) -> None:
    print(msg, flush=True)


def _assets_summary() -> dict:
    """What the capture will use, from `assets status` (cheap validation)."""
    from backend import assets

    statuses = assets.status(validate=True)
    caps = assets.capabilities(statuses)
    by = {s.key: s for s in statuses}
    flame = by.get("flame2020")
    return {
        "root": str(assets.assets_root()),
        "capture": caps["capture"],
        "emotion": caps["emotion"],
        "flame_path": str(flame.path) if flame is not None and flame.usable and caps["capture"]["trained"] else None,
    }


def prepare_output(out: Path) -> Path:
    """The demo's folder, created, with the files of an earlier run removed (nothing else in it is touched).
    EmocaError config_invalid when it is a file."""
    if out.exists() and not out.is_dir():
        raise EmocaError("config_invalid", f"--output {out} is a file", "Give a folder (created when missing).")
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    return out


def plan_for(info: dict) -> DemoPlan:
    """The installed EMOCA model and FLAME when the licensed files are there, else the open model and head."""
    if info["capture"]["trained"]:
        return DemoPlan("flame", info["flame_path"])
    return DemoPlan("open", None)


def used_lines(info: dict, plan: DemoPlan) -> list[str]:
    """What the run uses, said plainly (printed before any work)."""
    if plan.kind == "open":
        capture = (
            "open model: MediaPipe Face Landmarker v2 with blendshapes (Apache-2.0, bundled): 52 ARKit "
            "blendshape scores and the head pose per frame; no licensed file needed"
        )
        head = "ICT-FaceKit face model (MIT, bundled): the open rig, ARKit-named shape keys"
    else:
        capture = f"EMOCA (licensed, installed): {info['capture']['message']}"
        head = f"FLAME (licensed, installed): {info['flame_path']}"
    return [
        f"assets:  {info['root']}" + ("" if info["capture"]["trained"] else "  (no licensed EMOCA/FLAME files)"),
        f"capture: {capture}",
        f"head:    {head}",
        f"emotion: {info['emotion']['message']}",
        "clip:    rendered here: the ICT head performing a known sequence (ground truth kept)",
    ]


# ---------------------------------------------------------------------------------------------- recovered vs true
def rotation_error_deg(recovered: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Angle (N,) in degrees of R(recovered) R(true)^T for axis-angle rotations (N, 3): the rotation between
    the two, whatever the axis."""
    from emoca_contract.rotations import axis_angle_to_matrix

    r = axis_angle_to_matrix(np.asarray(recovered, np.float64)) @ np.swapaxes(
        axis_angle_to_matrix(np.asarray(true, np.float64)), -1, -2
    )
    cos = (np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def arkit_recovery(recovered: np.ndarray, true: np.ndarray, channels: list[str]) -> dict[str, Any]:
    """ARKit weights recovered vs true, (F, 52) each over the F frames with a face, on ``channels``: the mean
    absolute error, that of answering neutral (all 0), their ratio, and per channel its true peak, the recovered
    value at that frame, and both errors."""
    from emoca_contract.arkit import ARKIT_INDEX

    cols = [ARKIT_INDEX[c] for c in channels]
    rec, tru = recovered[:, cols].astype(np.float64), true[:, cols].astype(np.float64)
    err, neutral = float(np.abs(rec - tru).mean()), float(np.abs(tru).mean())
    peak = tru.argmax(0)
    per = {
        c: {
            "true_peak": float(tru[peak[i], i]),
            "recovered_at_peak": float(rec[peak[i], i]),
            "error": float(np.abs(rec[:, i] - tru[:, i]).mean()),
            "error_if_neutral": float(np.abs(tru[:, i]).mean()),
        }
        for i, c in enumerate(channels)
    }
    return {
        "channels": channels,
        "arkit_error": err,
        "arkit_error_if_neutral": neutral,
        "open_arkit_error_ratio": err / neutral if neutral > 0 else float("nan"),
        "per_channel": per,
    }


def recovery(take_path: Path, truth: dict, channels: list[str]) -> dict[str, Any]:
    """Recovered vs true for a take of the rendered clip (module docstring): frames with a face, the ARKit
    figures where the take has ``arkit`` (:func:`arkit_recovery`), the head rotation error in degrees."""
    from emoca_contract.take import read_take

    take = read_take(take_path)
    a = take.arrays
    seen = a["valid"] & ~a["interpolated"]
    frames = a["frame"][a["valid"]]
    out: dict[str, Any] = {
        "kind": take.meta["kind"],
        "frames_total": int(truth["n_frames"]),
        "frames_with_face": int(seen.sum()),
        "face_fraction": float(seen.sum() / truth["n_frames"]),
    }
    if "arkit" in a:
        out.update(arkit_recovery(a["arkit"][a["valid"]], truth["arkit"][frames], channels))
    head = rotation_error_deg(a["global_pose"][a["valid"]], truth["global_pose"][frames])
    out.update(head_error_deg_mean=float(head.mean()), head_error_deg_max=float(head.max()))
    return out


# ---------------------------------------------------------------------------------------------- the steps
def render_step(out: Path, fps: float) -> tuple[dict, list[str]]:
    """Render and encode the performance at ``fps`` (``demo_clip.mp4``) and keep its ground truth
    (``demo_truth.npz``: arkit (N, 52) in ARKit order, global_pose (N, 3) axis-angle radians and translation
    (N, 3) metres in the camera frame, landmarks2d (N, 68, 2) frame pixels, fps, focal in pixels):
    (the ground truth of write_ict_clip, the driven channels)."""
    from backend.synthetic.ict_clip import DEMO_PERFORMANCE, PERFORMER, driven_channels, perform, write_ict_clip
    from emoca_contract.arkit import ARKIT_NAMES

    arkit, turn = perform(DEMO_PERFORMANCE, fps)
    truth = write_ict_clip(out / "demo_clip.mp4", arkit, turn, fps=fps, size=SIZE, look=PERFORMER)
    channels = driven_channels(DEMO_PERFORMANCE)
    keep = {k: truth[k] for k in ("arkit", "global_pose", "translation", "landmarks2d", "fps", "focal")}
    np.savez_compressed(out / "demo_truth.npz", **keep, arkit_names=np.array(ARKIT_NAMES), driven=np.array(channels))
    return truth, channels


def rig_step(out: Path, plan: DemoPlan) -> dict:
    """Export the rig the take keys: the ICT head for the open model, FLAME for EMOCA."""
    from backend.rigs.export import export_rig

    head = "ict" if plan.kind == "open" else None
    return export_rig(out / "demo_rig.npz", flame=plan.flame_path, head=head, note=lambda m: _say("      " + m))


def _progress_printer(say: Callable[[str], None]) -> Callable[[int, int, str, float | None, float | None], None]:
    last = [0.0]

    def progress(done: int, total: int, stage: str, fps: float | None, eta: float | None) -> None:
        if time.perf_counter() - last[0] > 2 or done == total:
            last[0] = time.perf_counter()
            say(f"      {stage}: {done}/{total}" + (f"  {fps:.1f} frames/s" if fps else ""))

    return progress


def capture_clip(clip: Path, take: Path, kind: str, device: str, say: Callable[[str], None] = _say) -> Path:
    """Capture the clip into ``take`` with the open model (``kind`` "open") or the installed EMOCA ("flame")."""
    from backend.capture.pipeline import CaptureOptions, capture

    opts = CaptureOptions(model="open" if kind == "open" else None, device=device)
    capture(clip, take, opts, progress=_progress_printer(say), warn=lambda m: say("      warning: " + m))
    return take


def views_step(out: Path, take: Path, clip: Path, flame_path: str | None) -> Any:
    """The preview video and the emotion plot of the take; returns the take."""
    from backend.take.plot import plot_emotion
    from backend.take.preview import write_preview
    from emoca_contract.take import read_take

    t = read_take(take)
    plot_emotion(t, out / "demo_emotion.png")
    write_preview(t, clip, out / "demo_preview.mp4", flame_path)
    return t


def blender_step(rig: Path, take: Path, blend: Path, kind: str, camera: dict) -> dict:
    """Build ``blend`` in real Blender (a child process running the bpy module); what it keyed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    job = {"rig": str(rig), "take": str(take), "blend": str(blend), "kind": kind, "camera": camera}
    proc = subprocess.run(
        [sys.executable, "-c", BLENDER_SCRIPT, json.dumps(job)], capture_output=True, text=True, env=env, timeout=900
    )
    lines = proc.stdout.splitlines()
    error = next((ln for ln in lines if ln.startswith("DEMO_ERROR")), None)
    if error is not None:  # the add-on's own error (a take that does not fit the rig, ...): passed on as it is
        raise EmocaError.from_dict(json.loads(error[len("DEMO_ERROR") :]))
    line = next((ln for ln in lines if ln.startswith("DEMO_BLENDER")), None)
    if proc.returncode != 0 or line is None:
        raise EmocaError("internal", "the Blender step failed:\n" + (proc.stderr or proc.stdout)[-3000:])
    return json.loads(line[len("DEMO_BLENDER") :])


def render_camera(truth: dict) -> dict:
    """The render's camera for the Blender step: focal length in pixels, frame size, the head's distance
    (metres, along the camera's axis) and the clip for the background."""
    w, h = truth["size"]
    return {"focal": float(truth["focal"]), "width": int(w), "height": int(h),
            "distance": -float(truth["translation"][0, 2]), "clip": str(truth["path"])}  # fmt: skip


def emotion_curves(keyed_properties: list[str]) -> list[str]:
    """The emotion curves among an armature's keyed custom properties: valence, arousal and one per class
    (``emoca_expr_<Class>``), not the rig's other ``emoca_*`` properties."""
    return [p for p in keyed_properties if p in ("emoca_valence", "emoca_arousal") or p.startswith("emoca_expr_")]


# ---------------------------------------------------------------------------------------------- the printout
def recovery_lines(errors: dict) -> list[str]:
    """The recovered-vs-true figures, one per line."""
    lines = [
        f"frames with a face: {errors['frames_with_face']}/{errors['frames_total']} ({errors['face_fraction']:.0%})"
    ]
    if "arkit_error" in errors:
        source = "" if errors["kind"] == "open" else " (the detector's, recorded beside EMOCA's FLAME codes)"
        lines.append(
            f"ARKit weights{source} on the {len(errors['channels'])} driven channels: mean abs error "
            f"{errors['arkit_error']:.3f}, answering neutral {errors['arkit_error_if_neutral']:.3f} -> "
            f"open_arkit_error_ratio {errors['open_arkit_error_ratio']:.2f} (0 = perfect, 1 = no better than neutral)"
        )
        for name, c in errors["per_channel"].items():
            lines.append(
                f"  {name:18s} true peak {c['true_peak']:.2f}, recovered there {c['recovered_at_peak']:.2f}; "
                f"mean abs error {c['error']:.3f} (neutral {c['error_if_neutral']:.3f})"
            )
    lines.append(
        f"head rotation error: mean {errors['head_error_deg_mean']:.1f} deg, max {errors['head_error_deg_max']:.1f} "
        "deg (no fitting: the take's pose against the rendered head's, same camera frame)"
    )
    return lines


def blender_line(blend: Path, b: dict) -> str:
    """What demo.blend holds, counted honestly."""
    return (
        f"blender:  {blend}  (Blender {b['blender']}, action {b['action']}, frames {b['frames'][0]}-"
        f"{b['frames'][1]} at {b['fps']:g} fps; {len(b['keyed_shape_keys'])} of {b['shape_keys']} shape keys keyed, "
        f"bones keyed: {', '.join(b['keyed_bones']) or 'none'}; {len(b['emotion_curves'])} emotion curves: "
        "valence, arousal and one per class)"
    )


def results_lines(truth: dict, rig_info: dict, t: Any, errors: dict, blend: Path, blender: dict | None) -> list[str]:
    """The printout after the work: where everything is, what made it, recovered vs true."""
    out = blend.parent
    w, h = truth["size"]
    lines = [
        "",
        "== results ==",
        f"clip:     {truth['path']}  ({truth['n_frames']} frames at {truth['fps']:g} fps, {w}x{h}, {truth['head']}); "
        f"ground truth {out / 'demo_truth.npz'}",
        f"rig:      {rig_info['files'][0]}  ({rig_info['model']})",
        f"take:     {out / 'demo_take.npz'}  ({t.meta['kind']}; {t.meta['model'].get('name')}, "
        f"device {t.meta['model'].get('device')})",
        f"preview:  {out / 'demo_preview.mp4'}",
        f"emotion:  {out / 'demo_emotion.png'}  ({t.meta['emotion'].get('model')})",
    ]
    if blender:
        lines.append(blender_line(blend, blender))
    return [*lines, "recovered vs true:", *("  " + line for line in recovery_lines(errors))]


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = prepare_output(Path(args.output).resolve())

    _say("== EMOCA for Blender demo ==")
    info = _assets_summary()
    plan = plan_for(info)
    for line in used_lines(info, plan):
        _say(line)

    _say(f"[1/4] rendering the performance at {args.fps:g} fps, {SIZE[0]}x{SIZE[1]}")
    truth, channels = render_step(out, args.fps)
    clip = Path(truth["path"])
    _say("[2/4] exporting the rig")
    rig_info = rig_step(out, plan)
    rig = Path(rig_info["files"][0])
    _say("[3/4] capturing the clip" + (" with the open model" if plan.kind == "open" else " with EMOCA"))
    take = capture_clip(clip, out / "demo_take.npz", plan.kind, args.device)
    t = views_step(out, take, clip, plan.flame_path)

    blend, blender = out / "demo.blend", None
    if not args.no_blender:
        _say("[4/4] Blender (headless): importing the rig, applying the take, saving demo.blend")
        blender = blender_step(rig, take, blend, plan.kind, render_camera(truth))
        blender["emotion_curves"] = emotion_curves(blender["keyed_properties"])

    errors = recovery(take, truth, channels)
    for line in results_lines(truth, rig_info, t, errors, blend, blender):
        _say(line)
    summary = {
        "assets": info,
        "plan": {"kind": plan.kind, "flame_path": plan.flame_path, "head": rig_info["model"]},
        "model": t.meta["model"],
        "emotion_model": t.meta["emotion"].get("model"),
        "errors": errors,
        "blender": blender,
        "seconds": time.perf_counter() - t0,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    _say(f"done in {time.perf_counter() - t0:.0f} s; summary: {out / 'demo_summary.json'}")
    return 0
