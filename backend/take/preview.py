"""Pictures of a take: the captured mesh drawn over the footage (``--preview``) and the emotion curves (``--plot``).

The preview places the head exactly as the add-on does: FLAME vertices -> weak-perspective ``cam`` (normalised
crop coordinates, y flipped) -> crop pixels -> ``crop`` (3x3) -> frame pixels. It draws the front-facing
triangles as a wireframe (cv2, one call per frame) and the model's 68 landmarks as dots.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.take import Take, read_take

CROP_SIZE = 224


def project_to_frame(vertices: np.ndarray, cam: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """(B, V, 3) FLAME-space points, (B, 3) cam [s, tx, ty], (B, 3, 3) crop->frame -> (B, V, 2) frame pixels."""
    s = cam[:, None, 0:1]
    x = s[..., 0] * (vertices[..., 0] + cam[:, None, 1])
    y = -s[..., 0] * (vertices[..., 1] + cam[:, None, 2])
    u = (x + 1.0) * CROP_SIZE / 2.0
    v = (y + 1.0) * CROP_SIZE / 2.0
    hom = np.stack([u, v, np.ones_like(u)], -1)
    out = np.einsum("bij,bvj->bvi", crop, hom)
    return out[..., :2] / out[..., 2:3]


def _load_flame(flame: Any, take: Take):
    """A FlameData: given, loaded from a path, or the synthetic test head when the take says it used one."""
    if flame is not None and not isinstance(flame, (str, os.PathLike)):
        return flame
    if flame is not None:
        from backend.flame.io import load_flame

        return load_flame(flame)
    model_flame = str(take.meta.get("model", {}).get("flame", ""))
    if "FLAME" in model_flame and "not FLAME" not in model_flame:
        from backend.assets import resolve_capture
        from backend.flame.io import load_flame

        installed = resolve_capture().flame  # the take was captured on FLAME: draw FLAME, never a stand-in
        if installed is None:
            raise EmocaError(
                "asset_missing",
                f"the take was captured with {model_flame}; pass its FLAME file "
                "to draw the preview (none is installed)",
            )
        return load_flame(installed)
    from backend.synthetic.head import synthetic_head

    return synthetic_head()


def take_vertices(take: Take, flame, rows: np.ndarray) -> np.ndarray:
    """(len(rows), V, 3) FLAME-space vertices of the given take rows (torch FLAME layer, zero neck/eyes)."""
    import torch

    from backend.flame.layer import FLAME

    layer = _layer_cache.get(id(flame))
    if layer is None:
        layer = _layer_cache.setdefault(id(flame), FLAME(flame).eval())
    n_shape = flame.shapedirs.shape[2]
    n_exp = flame.expdirs.shape[2]

    def fit(a: np.ndarray, n: int) -> torch.Tensor:
        out = np.zeros((a.shape[0], n), np.float32)
        k = min(n, a.shape[1])
        out[:, :k] = a[:, :k]
        return torch.from_numpy(out)

    shape = fit(take["shape"][rows], n_shape)
    exp = fit(take["exp"][rows], n_exp)
    pose = torch.from_numpy(np.concatenate([take["global_pose"][rows], take["jaw_pose"][rows]], 1))
    with torch.no_grad():
        out = layer(shape, exp, pose)
    return out.vertices.numpy()


_layer_cache: dict[int, Any] = {}


def _front_faces(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangles whose projected winding faces the viewer (image y down flips the sign)."""
    a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    return faces[cross < 0]


def draw_overlay(
    image: np.ndarray, points: np.ndarray, faces: np.ndarray, landmarks: np.ndarray | None, color=(80, 255, 120)
) -> np.ndarray:
    """Wireframe of the front-facing triangles (and landmark dots) blended over an RGB uint8 image."""
    import cv2

    overlay = image.copy()
    front = _front_faces(points, faces)
    if len(front) == 0:  # the winding convention of this mesh may be the other way
        front = faces
    polys = np.round(points[front] * 4).astype(np.int32)  # 2 fractional bits (shift=2)
    cv2.polylines(overlay, list(polys), True, color, 1, cv2.LINE_AA, shift=2)
    out = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)
    if landmarks is not None:
        for x, y in np.round(landmarks).astype(int):
            cv2.circle(out, (int(x), int(y)), 2, (255, 80, 80), -1, cv2.LINE_AA)
    return out


def write_preview(
    take: Take | str | os.PathLike,
    video_in: str | os.PathLike,
    out_mp4: str | os.PathLike,
    flame: Any = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 32,
) -> Path:
    """Render the take's mesh over the footage frames into ``out_mp4`` (H.264 via PyAV); returns the path.

    Frames are matched by source index (``take['frame']``); invalid rows show the plain frame. Written to
    ``out_mp4 + '.partial'`` and renamed when complete.
    """
    import av

    from backend.footage.video import FrameRange, open_footage

    if not isinstance(take, Take):
        take = read_take(take)
    flame = _load_flame(flame, take)
    faces = np.asarray(flame.faces, np.int64)
    frames = take.meta.get("source", {}).get("frames")
    rng = FrameRange(*frames) if frames else None
    fps = float(take.meta.get("source", {}).get("fps") or 25.0)
    out_path = Path(out_mp4)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(out_path) + ".partial")
    row_of = {int(f): i for i, f in enumerate(take["frame"])}
    valid = take["valid"]
    container = None
    try:
        container = av.open(str(tmp), "w", format="mp4")
        stream = None
        with open_footage(video_in, rng) as footage:
            buf: list = []

            def flush() -> None:
                rows = np.array(
                    [row_of[f.index] for f in buf if f.index in row_of and valid[row_of[f.index]]], np.int64
                )
                pts2d = {}
                if len(rows):
                    verts = take_vertices(take, flame, rows)
                    proj = project_to_frame(verts, take["cam"][rows], take["crop"][rows])
                    pts2d = {int(r): p for r, p in zip(rows, proj)}
                for f in buf:
                    r = row_of.get(f.index)
                    img = f.image
                    if r is not None and r in pts2d:
                        img = draw_overlay(img, pts2d[r], faces, take["landmarks"][r])
                    _encode(container, stream, img)
                buf.clear()

            for i, frame in enumerate(footage):
                if cancel is not None and cancel.is_set():
                    raise EmocaError("cancelled", "preview cancelled")
                if stream is None:
                    h, w = frame.image.shape[:2]
                    stream = container.add_stream("libx264", rate=_rate(fps))
                    stream.width, stream.height = w - w % 2, h - h % 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "20", "preset": "veryfast"}
                buf.append(frame)
                if len(buf) >= batch:
                    flush()
                    if progress is not None:
                        progress(i + 1)
            if buf:
                flush()
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
        container.close()
        container = None
        os.replace(tmp, out_path)
    except BaseException:
        if container is not None:
            try:
                container.close()
            except Exception:
                pass
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def _encode(container, stream, image: np.ndarray) -> None:
    import av

    image = np.ascontiguousarray(image[: stream.height, : stream.width])
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    for packet in stream.encode(frame):
        container.mux(packet)


def plot_emotion(take: Take | str | os.PathLike, out_png: str | os.PathLike, top_classes: int = 8) -> Path:
    """Valence/arousal (smoothed solid, raw faint) and the class probabilities over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    if not isinstance(take, Take):
        take = read_take(take)
    t = take["time"]
    valid = take["valid"]
    classes = take.classes or [f"class {i}" for i in range(take["expression"].shape[1])]
    va_note = take.meta.get("emotion", {}).get("valence_arousal", "")
    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)

    def masked(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64).copy()
        a[~valid] = np.nan
        return a

    for key, color in (("valence", "tab:blue"), ("arousal", "tab:red")):
        if "raw_" + key in take:
            ax1.plot(t, masked(take["raw_" + key]), color=color, alpha=0.3, lw=1)
        ax1.plot(t, masked(take[key]), color=color, lw=1.8, label=key)
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.set_ylim(-1.05, 1.05)
    ax1.set_ylabel("valence / arousal")
    ax1.legend(loc="upper right")
    title = f"{Path(str(take.meta.get('source', {}).get('path', ''))).name}: emotion"
    if va_note:
        title += f" (valence/arousal {va_note})"
    ax1.set_title(title, fontsize=9)
    probs = take["expression"]
    order = np.argsort(
        -np.nanmean(np.where(valid[:, None], probs, np.nan), axis=0) if valid.any() else np.zeros(len(classes))
    )[:top_classes]
    for c in order:
        ax2.plot(t, masked(probs[:, c]), lw=1.2, label=classes[c])
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("probability")
    ax2.set_xlabel("time (s)")
    ax2.legend(loc="upper right", fontsize=7, ncol=2)
    for ax in (ax1, ax2):  # shade frames without a face
        if (~valid).any():
            ax.fill_between(t, 0, 1, where=~valid, transform=ax.get_xaxis_transform(), color="grey", alpha=0.15, lw=0)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.png")
    fig.savefig(tmp)
    os.replace(tmp, out)
    return out
