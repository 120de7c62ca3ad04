"""``python -m backend demo``: the main job end to end on the built-in defaults (what ``make demo`` runs).

1. Render a short clip: the synthetic test head performing a known expression/jaw/head track, with the
   public-domain astronaut photo composited in as a second face (exercises tracking).
2. Export the rig (FLAME when the user installed it, otherwise the synthetic test head, said so).
3. Capture the clip into a take (every face tracked; the rendered head's track is kept), with the preview video
   and the emotion plot.
4. Open real Blender headless (the bpy module, in a child process), import the rig, apply the take with emotion
   curves and a matched camera, save ``demo.blend``.
5. Print where everything is, which assets were used, and the recovered-vs-true error.

Honest by construction: with no licensed assets the capture network is UNTRAINED and the demo says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError

ROOT = Path(__file__).resolve().parents[2]

BLENDER_SCRIPT = r"""
import json, sys
import bpy
from emoca_blender import api

rig_path, take_path, blend_path = sys.argv[1:4]
bpy.ops.wm.read_factory_settings(use_empty=True)
rig = api.import_rig(rig_path)
action = api.apply_take(rig, take_path, emotion=True, camera_match=True)
bpy.ops.wm.save_as_mainfile(filepath=blend_path)
mesh = next(o for o in rig.children if o.type == "MESH")
emotion = sorted(k for k in rig.keys() if k.startswith("emoca_"))
print("DEMO_BLENDER" + json.dumps({
    "action": action.name, "frames": [bpy.context.scene.frame_start, bpy.context.scene.frame_end],
    "shape_keys": len(mesh.data.shape_keys.key_blocks), "emotion_properties": emotion,
    "blender": bpy.app.version_string,
}))
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--frames", type=int, default=75, help="length of the generated clip (frames at 25 fps)")
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


def _track_matching_head(takes: list[Path], head_box: np.ndarray) -> Path:
    """The take whose tracked landmarks lie inside the rendered head's box most often."""
    from emoca_contract.take import read_take

    def score(p: Path) -> float:
        t = read_take(p)
        valid = t.arrays["valid"]
        frames = t.arrays["frame"]
        lmk = t.arrays["landmarks"].mean(1)  # (N, 2) landmark centroid in frame px
        box = head_box[frames]
        inside = np.all((lmk >= box[:, :2]) & (lmk <= box[:, 2:]), axis=1)
        return float((inside & valid).mean())

    return max(takes, key=score)


def recovery_errors(take_path: Path, truth: dict, same_model: bool) -> dict:
    """Recovered vs true: 2D landmark error always; parameter errors where the capture model is the clip's model."""
    from emoca_contract.take import read_take

    t = read_take(take_path)
    a = t.arrays
    valid = a["valid"] & ~a["interpolated"]
    f = a["frame"][valid]
    gt_lmk = truth["landmarks2d"][f]
    box = truth["head_box"][f]
    face_size = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
    lmk_err = np.linalg.norm(a["landmarks"][valid] - gt_lmk, axis=-1).mean(1) / face_size
    errors = {
        "frames_valid": int(valid.sum()),
        "frames_total": int(len(valid)),
        "landmark_error_pct_of_face": float(100 * lmk_err.mean()),
    }
    if same_model:

        def ang(x):
            return np.degrees(np.linalg.norm(x, axis=-1))

        exp_t, exp_r = truth["exp"][f], a["raw_exp"][valid]
        errors.update(
            {
                "exp_rmse": float(np.sqrt(((exp_r - exp_t) ** 2).mean())),
                "exp_rmse_if_neutral": float(np.sqrt((exp_t**2).mean())),  # the error of always answering 0
                "jaw_error_deg": float(ang(a["raw_jaw_pose"][valid] - truth["jaw_pose"][f]).mean()),
                "head_error_deg": float(ang(a["raw_global_pose"][valid] - truth["global_pose"][f]).mean()),
            }
        )
    return errors


def _blender_step(rig: Path, take: Path, blend: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", BLENDER_SCRIPT, str(rig), str(take), str(blend)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DEMO_BLENDER")), None)
    if proc.returncode != 0 or line is None:
        raise EmocaError("internal", "the Blender step failed:\n" + (proc.stderr or proc.stdout)[-3000:])
    return json.loads(line[len("DEMO_BLENDER") :])


def run(args: argparse.Namespace) -> int:
    from backend.capture.pipeline import CaptureOptions, capture
    from backend.rigs.export import export_rig
    from backend.synthetic.render_clip import render_head_clip

    t0 = time.perf_counter()
    out = Path(args.output).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    _say("== EMOCA for Blender demo ==")
    info = _assets_summary()
    trained = bool(info["capture"]["trained"])
    _say(f"assets: {info['root']}")
    _say(f"capture model: {info['capture']['message']}")
    _say(f"emotion: {info['emotion']['message']}")
    if not trained:
        _say(
            "NOTE: no licensed EMOCA/FLAME assets are installed, so the capture network is UNTRAINED (random "
            "weights on the synthetic test head, which is not FLAME). The numbers below show the pipeline "
            "working, not EMOCA's accuracy. See docs/assets.md to install the official files."
        )

    _say(f"[1/4] rendering a {args.frames}-frame clip of the synthetic test head (+ the astronaut as a 2nd face)")
    clip = out / "demo_clip.mp4"
    truth = render_head_clip(clip, n_frames=args.frames, second_face=True)

    _say("[2/4] exporting the rig")
    rig = out / "demo_rig.npz"
    # the head the EMOCA path keys: the user's FLAME, else the synthetic test head (as before the open ICT head)
    head = None if info["flame_path"] else "synthetic"
    rig_info = export_rig(rig, flame=info["flame_path"], head=head, note=lambda m: _say("      " + m))

    _say("[3/4] capturing (every face tracked; the rendered head's track is kept)")
    takes_dir = out / "takes"
    takes_dir.mkdir()
    last = [0.0]

    def progress(done, total, stage, fps, eta):
        if time.perf_counter() - last[0] > 2 or done == total:
            last[0] = time.perf_counter()
            _say(f"      {stage}: {done}/{total}" + (f"  {fps:.1f} frames/s" if fps else ""))

    # this demo shows the EMOCA path: the installed model, else the untrained network (never the open default)
    opts = CaptureOptions(face="all", device=args.device, model=None if trained else "untrained")
    takes = capture(
        clip, takes_dir / "demo_take.npz", opts, progress=progress, warn=lambda m: _say("      warning: " + m)
    )
    take = out / "demo_take.npz"
    shutil.copyfile(_track_matching_head(takes, truth["head_box"]), take)
    from backend.take.plot import plot_emotion
    from backend.take.preview import write_preview
    from emoca_contract.take import read_take

    preview, plot = out / "demo_preview.mp4", out / "demo_emotion.png"
    t = read_take(take)
    plot_emotion(t, plot)
    write_preview(t, clip, preview, info["flame_path"])

    blend = out / "demo.blend"
    blender = None
    if not args.no_blender:
        _say("[4/4] Blender (headless): importing the rig, applying the take, saving demo.blend")
        blender = _blender_step(rig, take, blend)

    errors = recovery_errors(take, truth, same_model=not trained)
    _say("")
    _say("== results ==")
    _say(f"clip:      {clip}  ({args.frames} frames, 640x360, ground truth known)")
    _say(f"rig:       {rig}  ({rig_info['model']})")
    _say(f"takes:     {', '.join(str(p) for p in takes)} -> kept {take}")
    _say(f"preview:   {preview}")
    _say(
        f"emotion:   {plot}  ({t.meta['emotion'].get('model')}; valence/arousal "
        f"{t.meta['emotion'].get('valence_arousal')})"
    )
    if blender:
        _say(
            f"blender:   {blend}  (Blender {blender['blender']}, action {blender['action']}, frames "
            f"{blender['frames'][0]}-{blender['frames'][1]}, {blender['shape_keys']} shape keys, "
            f"{len(blender['emotion_properties'])} emotion curves)"
        )
    _say(
        f"model:     {t.meta['model'].get('name')} ({'trained' if trained else 'UNTRAINED'}), "
        f"device {t.meta['model'].get('device')}"
    )
    _say(
        f"recovered vs true: {errors['frames_valid']}/{errors['frames_total']} frames with a face; "
        f"2D landmark error {errors['landmark_error_pct_of_face']:.1f}% of face size"
    )
    if "exp_rmse" in errors:
        _say(
            f"  expression RMSE {errors['exp_rmse']:.3f} (answering neutral would give "
            f"{errors['exp_rmse_if_neutral']:.3f}); jaw error {errors['jaw_error_deg']:.1f} deg; head error "
            f"{errors['head_error_deg']:.1f} deg"
            + ("  <- untrained network: expected to be poor" if not trained else "")
        )
    (out / "demo_summary.json").write_text(
        json.dumps(
            {
                "assets": info,
                "errors": errors,
                "blender": blender,
                "takes": [str(p) for p in takes],
                "seconds": time.perf_counter() - t0,
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    _say(f"done in {time.perf_counter() - t0:.0f} s; summary: {out / 'demo_summary.json'}")
    return 0
