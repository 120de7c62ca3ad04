"""The picture in docs/likeness.md: a textured rig rendered in Blender beside its footage frame.

    .venv/bin/python -m tests.blender.likeness_picture docs/images/likeness_rig.png [--frames 0 12]

The known-likeness clip (backend.synthetic.ict_likeness: the ICT head with a known identity and a painted texture)
is captured with the open path (PyAV, the Face Landmarker), its likeness made (``backend.likeness.run``: identity
and texture), the ICT rig built in Blender (bpy), the take applied (head rotation, ARKit keys) and the likeness put
on it (``emoca_blender.likeness.use_likeness``); Cycles renders the rig through the clip's own camera (its focal
length, the head placed where the clip put it; the head's rotation, expression and identity are the recovered
ones) beside the footage frame, one row per frame.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np


def footage_frames(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """The clip's frames ``wanted`` (H, W, 3) uint8 RGB."""
    from backend.footage.video import FrameRange, open_footage

    out = {}
    with open_footage(path, FrameRange(min(wanted), max(wanted) + 1)) as footage:
        for frame in footage:
            if frame.index in wanted:
                out[frame.index] = frame.image
    return out


def make_likeness(folder: Path, n_frames: int) -> dict:
    """The clip, its open take and its likeness files; the clip's truth (camera, head translation)."""
    from backend.capture.options import CaptureOptions
    from backend.capture.pipeline import capture
    from backend.likeness.run import LikenessOptions, likeness
    from backend.synthetic.ict_likeness import write_likeness_clip

    truth = write_likeness_clip(folder / "performer.mp4", n_frames=n_frames)
    take = capture(truth["path"], folder / "performer.npz", CaptureOptions(device="cpu", model="open"))[0]
    likeness(take, truth["path"], options=LikenessOptions())
    return {**truth, "take": Path(take)}


def setup_render(scene, truth: dict, samples: int) -> None:
    """Cycles (CPU) through the clip's pinhole camera (at the origin, the rig's frame: looking down -Z, +Y up,
    which the rig's +90 degree turn about X makes Blender's +Y and +Z), a soft key light and a grey world."""
    import bpy

    w, h = truth["size"]
    cam = bpy.data.objects.new("footage camera", bpy.data.cameras.new("footage camera"))
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)
    cam.data.sensor_fit, cam.data.sensor_width = "HORIZONTAL", 36.0
    cam.data.lens = truth["focal"] * 36.0 / w
    cam.data.clip_start = 0.01
    light = bpy.data.objects.new("key", bpy.data.lights.new("key", "AREA"))
    light.data.energy, light.data.size = 6.0, 0.6
    light.location, light.rotation_euler = (0.3, -0.2, 0.35), (math.radians(60), 0.0, math.radians(40))
    for obj in (cam, light):
        scene.collection.objects.link(obj)
    scene.camera = cam
    scene.world = bpy.data.worlds.new("grey")
    scene.world.color = (0.3, 0.32, 0.36)  # about the clip's background
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = w, h, 100
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"


def render_rig(truth: dict, frames: list[int], folder: Path, samples: int) -> dict[int, np.ndarray]:
    """The ICT rig with the take applied and the likeness on, rendered at the clip's ``frames`` (0-based)."""
    import bpy

    import emoca_blender
    from backend.ict.data import load_ict
    from backend.ict.rig import build_open_rig, write_open_rig
    from emoca_blender.apply import apply_take
    from emoca_blender.likeness import use_likeness
    from emoca_blender.rig import build_rig

    emoca_blender.register()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = int(truth["fps"])
    arm = build_rig(write_open_rig(folder / "ict_rig.npz", build_open_rig(load_ict())))
    apply_take(arm, truth["take"], frame_mapping="footage_rate")
    use_likeness(arm, truth["take"], identity=True, texture=True)
    setup_render(scene, truth, samples)
    out = {}
    for f in frames:
        t = np.asarray(truth["translation"][f], np.float64)
        arm.location = (t[0], -t[2], t[1])  # the rig's frame turned +90 degrees about X
        scene.frame_set(1 + f)
        scene.render.filepath = str(folder / f"rig_{f}.png")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(scene.render.filepath)
        px = np.array(image.pixels[:]).reshape(image.size[1], image.size[0], 4)[::-1, :, :3]
        out[f] = np.clip(np.rint(px * 255), 0, 255).astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> int:
    import cv2

    ap = argparse.ArgumentParser(prog="python -m tests.blender.likeness_picture")
    ap.add_argument("output", type=Path)
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 14])
    ap.add_argument("--n-frames", type=int, default=24)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--scale", type=float, default=0.75, help="the picture's size over the clip's (two columns)")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="likeness_picture_"))
    truth = make_likeness(folder, args.n_frames)
    rig = render_rig(truth, args.frames, folder, args.samples)
    clip = footage_frames(truth["path"], args.frames)
    rows = [np.concatenate([clip[f], np.full((clip[f].shape[0], 8, 3), 255, np.uint8), rig[f]], 1) for f in
            args.frames]  # fmt: skip
    gap = np.full((8, rows[0].shape[1], 3), 255, np.uint8)
    picture = np.concatenate([x for r in rows for x in (r, gap)][:-1], 0)
    size = (round(picture.shape[1] * args.scale), round(picture.shape[0] * args.scale))
    picture = cv2.resize(np.ascontiguousarray(picture[..., ::-1]), size, interpolation=cv2.INTER_AREA)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
