"""Renders of the synthetic test head (not FLAME) with a known performance: test clips and training crops.

The head (`backend.synthetic.head.synthetic_head`, textured with `synthetic_texture()`) goes through the FLAME
layer, the weak-perspective camera of `backend.flame.camera.project` (normalised 224 crop coords) and our
rasterizer. For clips, crop pixels u = (x + 1) * 224 / 2 are mapped into the frame by a known crop -> frame
similarity ``crop`` (3x3, the take file's ``crop``), so ground truth is available in crop AND frame terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from backend.flame.camera import CROP_SIZE, crop_to_frame
from backend.render.renderer import render_mesh
from backend.render.shading import light_from_direction

N_TRACKED = 7  # the meaningful leading expression components of the synthetic head (EXPRESSION_NAMES)


@dataclass
class HeadRig:
    """The synthetic head ready to render: FLAME layer, topology, texture (1, 3, H, W) in [0,1]."""

    flame: torch.nn.Module
    faces: torch.Tensor
    uvs: torch.Tensor
    uv_faces: torch.Tensor
    texture: torch.Tensor
    n_shape: int
    n_exp: int
    name: str


_RIG_CACHE: dict[int, HeadRig] = {}


def head_rig(seed: int = 0) -> HeadRig:
    """The synthetic head (cached per seed)."""
    if seed not in _RIG_CACHE:
        from backend.flame.layer import FLAME
        from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding, synthetic_texture

        head = synthetic_head(seed)
        flame = FLAME(head, landmark_embedding=synthetic_landmark_embedding(head)).eval()
        tex = torch.from_numpy(np.ascontiguousarray(synthetic_texture())).permute(2, 0, 1)[None].float() / 255.0
        _RIG_CACHE[seed] = HeadRig(
            flame=flame,
            faces=torch.as_tensor(head.faces).long(),
            uvs=torch.as_tensor(head.uvs).float(),
            uv_faces=torch.as_tensor(head.uv_faces).long(),
            texture=tex,
            n_shape=head.n_shape,
            n_exp=head.n_exp,
            name=head.name,
        )
    return _RIG_CACHE[seed]


def default_light(batch: int = 1) -> torch.Tensor:
    """A soft white light from the upper front-left: (B, 9, 3)."""
    return light_from_direction((-0.3, 0.4, 1.0), ambient=0.75, directional=0.35, batch=batch)


def _flame_forward(rig: HeadRig, shape, exp, pose):
    return rig.flame(shape, exp, pose)


def render_crops(
    flame_params: dict,
    seed: int = 0,
    image_size: int = CROP_SIZE,
    light: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render 224 crops of the synthetic head (training data with known parameters).

    flame_params: exp (B, n_exp or fewer; zero-padded), pose (B, 6) [global | jaw] axis-angle, cam (B, 3)
    [s, tx, ty]; optional shape (B, n_shape). light (B, 9, 3) (default: `default_light`), background
    (B, 3, S, S) in [0,1] (default black). Returns images (B, 3, S, S) in [0,1], alpha (B, 1, S, S),
    landmarks2d (B, 68, 2) in normalised crop coords, vertices (B, V, 3) projected.
    """
    from backend.flame.camera import project

    rig = head_rig(seed)
    exp = torch.as_tensor(flame_params["exp"]).float()
    B = exp.shape[0]
    if exp.shape[1] < rig.n_exp:
        exp = torch.cat([exp, exp.new_zeros(B, rig.n_exp - exp.shape[1])], 1)
    pose = torch.as_tensor(flame_params["pose"]).float()
    cam = torch.as_tensor(flame_params["cam"]).float()
    shape = flame_params.get("shape")
    shape = torch.zeros(B, rig.n_shape) if shape is None else torch.as_tensor(shape).float()
    with torch.no_grad():
        out = _flame_forward(rig, shape, exp, pose)
        verts = project(out.vertices, cam)
        lmk = project(out.landmarks2d, cam)[..., :2] if out.landmarks2d is not None else None
        light = default_light(B) if light is None else light
        r = render_mesh(
            verts, rig.faces, rig.uvs, rig.uv_faces, rig.texture, light, image_size=image_size, background=background
        )
    return {"images": r["images"].clamp(0, 1), "alpha": r["alpha_images"], "landmarks2d": lmk, "vertices": verts}


# ----------------------------------------------------------------------------------------------- the clip
def performance(n_frames: int, fps: float = 25.0, seed: int = 0) -> dict[str, np.ndarray]:
    """The known track: smooth curves (sums of slow sines) for exp (N, 50), jaw (N, 3), global pose (N, 3).

    Expression components 0..6 (jaw_open, smile, brow_raise, eye_close, lip_pucker, frown, brow_furrow) move
    with amplitude ~1.2; the rest stay 0. Head: yaw +-18 deg, pitch +-8 deg, roll +-5 deg; jaw opens 0..0.2 rad.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    exp = np.zeros((n_frames, 50), np.float32)
    for k in range(N_TRACKED):
        f1, f2 = rng.uniform(0.15, 0.6, 2)
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        exp[:, k] = 0.9 * np.sin(2 * math.pi * f1 * t + p1) + 0.4 * np.sin(2 * math.pi * f2 * t + p2)
    jaw = np.zeros((n_frames, 3), np.float32)
    jaw[:, 0] = 0.1 + 0.1 * np.sin(2 * math.pi * 0.4 * t + 0.5)
    glob = np.zeros((n_frames, 3), np.float32)
    glob[:, 1] = np.deg2rad(18) * np.sin(2 * math.pi * 0.25 * t)  # yaw
    glob[:, 0] = np.deg2rad(8) * np.sin(2 * math.pi * 0.33 * t + 1.0)  # pitch
    glob[:, 2] = np.deg2rad(5) * np.sin(2 * math.pi * 0.2 * t + 2.0)  # roll
    return {"exp": exp, "jaw_pose": jaw, "global_pose": glob}


def _placement(n_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Per-frame crop -> frame similarity (N, 3, 3): the crop square (side ~0.7 H) pans slowly left of centre."""
    w, h = size
    out = np.zeros((n_frames, 3, 3))
    for i in range(n_frames):
        a = i / max(n_frames - 1, 1)
        side = 0.72 * h * (1.0 + 0.06 * math.sin(2 * math.pi * a))
        k = side / CROP_SIZE
        cx = 0.33 * w + 0.08 * w * math.sin(2 * math.pi * a)
        cy = 0.5 * h + 0.04 * h * math.cos(2 * math.pi * a)
        out[i] = [[k, 0, cx - k * CROP_SIZE / 2], [0, k, cy - k * CROP_SIZE / 2], [0, 0, 1]]
    return out


def _to_frame_ndc(verts: torch.Tensor, crop: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Projected crop coords (B, V, 3) -> normalised frame coords (the one crop-to-frame mapping, then [-1, 1])."""
    w, h = size
    uf = crop_to_frame(verts, torch.as_tensor(crop, dtype=verts.dtype))
    xf = uf[..., 0] * (2.0 / w) - 1.0
    yf = uf[..., 1] * (2.0 / h) - 1.0
    return torch.stack([xf, yf, verts[..., 2]], -1)


def render_head_clip(
    path: str | Path,
    n_frames: int = 48,
    fps: float = 25,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    second_face: bool = True,
    crf: int = 16,
) -> dict:
    """Write an H.264 clip of the synthetic head performing `performance()` and return the ground truth.

    Returns dict: path, fps, size, n_frames, exp (N, 50), jaw_pose (N, 3), global_pose (N, 3), pose (N, 6),
    shape (100,) zeros, cam (N, 3) [s, tx, ty] in crop terms, crop (N, 3, 3) crop px -> frame px (crop px =
    (x + 1) * 224 / 2 of the normalised crop coords), landmarks2d (N, 68, 2) frame px, head_box (N, 4) frame px,
    second_face_box (4,) or None, head (the model's honest name).
    """
    import av

    from backend.flame.camera import project
    from backend.synthetic.clips import astronaut_image, background, composite, face_alpha, similarity

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rig = head_rig(seed)
    perf = performance(n_frames, fps, seed)
    crop = _placement(n_frames, size)
    t = np.arange(n_frames) / fps
    cam = np.stack([np.full(n_frames, 8.5), 0.01 * np.sin(2 * math.pi * 0.3 * t), 0.005 + 0.01 * np.cos(t)], 1)
    cam = cam.astype(np.float32)
    pose = np.concatenate([perf["global_pose"], perf["jaw_pose"]], 1)
    bg = background(size, seed)
    second_box = None
    if second_face:
        still = astronaut_image()
        box = (178.0, 70.0, 272.0, 178.0)  # the astronaut's face in the still (mediapipe extent, rounded out)
        alpha2 = face_alpha(still.shape[:2], box)
        tform2 = similarity(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), (0.8 * w, 0.45 * h), 0.9, 0.0)
        bg = composite(bg, still, alpha2, tform2)
        corners = np.array([[box[0], box[1], 1], [box[2], box[3], 1]]) @ tform2.T
        second_box = np.array([*corners[0, :2], *corners[1, :2]], np.float32)
    bg_t = torch.from_numpy(bg).permute(2, 0, 1)[None].float() / 255.0

    container = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"crf": str(crf), "preset": "veryfast", "g": "12"}
    lmk_frame = np.zeros((n_frames, 68, 2), np.float32)
    boxes = np.zeros((n_frames, 4), np.float32)
    chunk = 8
    try:
        for s in range(0, n_frames, chunk):
            sl = slice(s, min(s + chunk, n_frames))
            B = sl.stop - sl.start
            with torch.no_grad():
                out = _flame_forward(
                    rig, torch.zeros(B, rig.n_shape), torch.from_numpy(perf["exp"][sl]), torch.from_numpy(pose[sl])
                )
                verts = project(out.vertices, torch.from_numpy(cam[sl]))
                fverts = _to_frame_ndc(verts, crop[sl], size)
                r = render_mesh(
                    fverts,
                    rig.faces,
                    rig.uvs,
                    rig.uv_faces,
                    rig.texture,
                    default_light(B),
                    image_size=(h, w),
                    background=bg_t.expand(B, -1, -1, -1),
                )
                lmk = project(out.landmarks2d, torch.from_numpy(cam[sl]))[..., :2]
                lf = _to_frame_ndc(torch.cat([lmk, torch.zeros_like(lmk[..., :1])], -1), crop[sl], size)
            lmk_frame[sl] = ((lf[..., :2] + 1) * torch.tensor([w / 2, h / 2])).numpy()
            vpx = ((fverts[..., :2] + 1) * torch.tensor([w / 2, h / 2])).numpy()
            boxes[sl] = np.concatenate([vpx.min(1), vpx.max(1)], 1)
            frames = (r["images"].clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy()
            for img in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return {
        "path": path,
        "fps": float(fps),
        "size": (w, h),
        "n_frames": n_frames,
        "exp": perf["exp"],
        "jaw_pose": perf["jaw_pose"],
        "global_pose": perf["global_pose"],
        "pose": pose.astype(np.float32),
        "shape": np.zeros(rig.n_shape, np.float32),
        "cam": cam,
        "crop": crop,
        "landmarks2d": lmk_frame,
        "head_box": boxes,
        "second_face_box": second_box,
        "head": rig.name,
    }


def detection_rate(path: str | Path, head_boxes: np.ndarray) -> float:
    """Fraction of frames where mediapipe finds a face whose centre lies inside the rendered head's box."""
    import av

    from backend.footage.detect import MediaPipeDetector

    hits = 0
    n = 0
    with MediaPipeDetector(max_faces=2, tracking=False) as det, av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            img = frame.to_ndarray(format="rgb24")
            x0, y0, x1, y1 = head_boxes[i]
            ok = any(x0 <= d.center[0] <= x1 and y0 <= d.center[1] <= y1 for d in det.detect(img))
            hits += int(ok)
            n += 1
    return hits / max(n, 1)
