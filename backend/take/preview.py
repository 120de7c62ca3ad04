"""The preview of a take (``--preview``): what was captured, drawn over the footage. The emotion curves
(``--plot``) are backend.take.plot.

FLAME takes: the preview places the head exactly as the add-on does: FLAME vertices -> weak-perspective ``cam``
(normalised crop coordinates, y flipped; backend.flame.camera.project) -> crop pixels -> ``crop`` (3x3) -> frame
pixels (backend.flame.camera.crop_to_frame). It draws the front-facing triangles as a wireframe (cv2, one call per
frame) and the model's 68 landmarks as dots.

Open takes have no mesh: the preview draws the detector's 478 landmarks (``detected_landmarks``) as dots and the
head's axes from ``global_pose`` and ``translation`` (x red, y green, z blue, 5 cm long, from the face's origin),
projected by the pinhole camera MediaPipe's pose assumes (backend.footage.detect.CAMERA_VFOV_DEG, principal point
at the frame centre): a pose that drifts from the face shows at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.flame.camera import crop_to_frame, project
from backend.footage.detect import CAMERA_VFOV_DEG
from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_matrix
from emoca_contract.take import Take, read_take

AXIS_LENGTH_M = 0.05  # the drawn head axes of an open take
AXIS_COLORS = ((255, 60, 60), (60, 255, 60), (80, 120, 255))  # x, y, z (RGB)


def project_to_frame(vertices: np.ndarray, cam: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """(B, V, 3) FLAME-space points, (B, 3) cam [s, tx, ty], (B, 3, 3) crop->frame -> (B, V, 2) frame pixels."""
    return crop_to_frame(project(vertices, cam), crop)


def _load_flame(flame: Any, take: Take):
    """A FlameData: given, loaded from a path, or the synthetic test head when the take says it used one."""
    if flame is not None and not isinstance(flame, (str, os.PathLike)):
        return flame
    if flame is not None:
        from backend.flame.io import load_flame

        return load_flame(Path(flame))
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


@dataclass
class _Overlay:
    """What draws a take over its footage: the take, its head model (faces (F, 3)), the row of each source frame."""

    take: Take
    flame: Any
    faces: np.ndarray
    row_of: dict[int, int]

    def draw(self, frames: list) -> list[np.ndarray]:
        """The frames' (H, W, 3) uint8 images, with the mesh drawn where the take has a valid row."""
        valid = self.take["valid"]
        found = [self.row_of.get(f.index) for f in frames]
        rows = np.array([r for r in found if r is not None and valid[r]], np.int64)
        pts2d: dict[int, np.ndarray] = {}
        if len(rows):
            verts = take_vertices(self.take, self.flame, rows)
            proj = project_to_frame(verts, self.take["cam"][rows], self.take["crop"][rows])
            pts2d = dict(zip(rows.tolist(), proj))
        return [
            draw_overlay(f.image, pts2d[r], self.faces, self.take["landmarks"][r]) if r in pts2d else f.image
            for f, r in zip(frames, found)
        ]


def camera_project(points: np.ndarray, size: tuple[int, int], vfov_deg: float = CAMERA_VFOV_DEG) -> np.ndarray:
    """(..., 3) points in the take's camera frame (metres; x right, y up, z towards the viewer, the camera at the
    origin looking down -z) -> (..., 2) frame pixels (W, H = ``size``) through a pinhole camera of vertical field
    of view ``vfov_deg`` centred on the frame."""
    w, h = size
    f = (h / 2.0) / np.tan(np.radians(vfov_deg) / 2.0)
    p = np.asarray(points, np.float64)
    depth = np.maximum(-p[..., 2], 1e-6)  # in front of the camera: z < 0
    return np.stack([w / 2.0 + f * p[..., 0] / depth, h / 2.0 - f * p[..., 1] / depth], -1)


def head_axes(global_pose: np.ndarray, translation: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(3,) axis-angle and (3,) metres -> (4, 2) frame pixels: the head's origin, then the ends of its x, y, z axes."""
    r = axis_angle_to_matrix(np.asarray(global_pose, np.float64)[None])[0]
    ends = np.asarray(translation, np.float64)[None] + AXIS_LENGTH_M * r.T  # rows: R @ e_x, R @ e_y, R @ e_z
    return camera_project(np.concatenate([np.asarray(translation, np.float64)[None], ends]), size)


def draw_points(image: np.ndarray, landmarks: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    """The detector's landmarks as dots (and the head axes from ``axes`` (4, 2), origin first) over an RGB image."""
    import cv2

    out = image.copy()
    for x, y in np.round(landmarks).astype(int):
        cv2.circle(out, (int(x), int(y)), 1, (80, 255, 120), -1, cv2.LINE_AA)
    if axes is not None and np.isfinite(axes).all():
        o = tuple(int(v) for v in np.round(axes[0]))
        for end, color in zip(axes[1:], AXIS_COLORS):
            cv2.line(out, o, tuple(int(v) for v in np.round(end)), color, 2, cv2.LINE_AA)
    return out


@dataclass
class _PointsOverlay:
    """What draws an open take over its footage: its landmarks and head axes where the take has a valid row."""

    take: Take
    row_of: dict[int, int]

    def draw(self, frames: list) -> list[np.ndarray]:
        out = []
        valid = self.take["valid"]
        for f in frames:
            r = self.row_of.get(f.index)
            if r is None or not valid[r]:
                out.append(f.image)
                continue
            h, w = f.image.shape[:2]
            axes = head_axes(self.take["global_pose"][r], self.take["translation"][r], (w, h))
            points = self.take["detected_landmarks"][r]
            if self.take["interpolated"][r]:  # no detector landmarks there (zeros): only the axes are drawn
                points = points[:0]
            out.append(draw_points(f.image, points, axes))
        return out


def _add_stream(container: Any, fps: float, shape: tuple[int, ...]) -> Any:
    """An H.264 stream for frames of ``shape`` (H, W, 3), cut to even sides (yuv420p needs them)."""
    h, w = shape[:2]
    stream = container.add_stream("libx264", rate=_rate(fps))
    stream.width, stream.height = w - w % 2, h - h % 2
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "20", "preset": "veryfast"}
    return stream


def _encode_footage(
    container: Any,
    footage: Any,
    overlay: _Overlay | _PointsOverlay,
    fps: float,
    batch: int,
    cancel: threading.Event | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Draw and encode every footage frame, ``batch`` frames per FLAME pass; then flush the encoder."""
    stream = None
    buf: list = []
    for i, frame in enumerate(footage):
        if cancel is not None and cancel.is_set():
            raise EmocaError("cancelled", "preview cancelled")
        if stream is None:
            stream = _add_stream(container, fps, frame.image.shape)
        buf.append(frame)
        if len(buf) >= batch:
            _encode(container, stream, overlay.draw(buf))
            buf.clear()
            if progress is not None:
                progress(i + 1)
    if stream is None:
        return
    _encode(container, stream, overlay.draw(buf))
    for packet in stream.encode():
        container.mux(packet)


def write_preview(
    take: Take | str | os.PathLike,
    video_in: str | os.PathLike,
    out_mp4: str | os.PathLike,
    flame: Any = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 32,
) -> Path:
    """Render the take (a FLAME take's mesh, an open take's landmarks and head axes) over the footage frames
    into ``out_mp4`` (H.264 via PyAV); returns the path.

    Frames are matched by source index (``take['frame']``); invalid rows show the plain frame. Written to
    ``out_mp4 + '.partial'`` and renamed when complete.
    """
    import av

    from backend.footage.video import FrameRange, open_footage

    if not isinstance(take, Take):
        take = read_take(take)
    row_of = {int(f): i for i, f in enumerate(take["frame"])}
    overlay: _Overlay | _PointsOverlay
    if take.kind == "open":
        overlay = _PointsOverlay(take, row_of)
    else:
        flame = _load_flame(flame, take)
        overlay = _Overlay(take, flame, np.asarray(flame.faces, np.int64), row_of)
    source = take.meta.get("source", {})
    rng = FrameRange(*source["frames"]) if source.get("frames") else None
    fps = float(source.get("fps") or 25.0)
    out_path = Path(out_mp4)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(out_path) + ".partial")
    container = None
    try:
        container = av.open(str(tmp), "w", format="mp4")
        with open_footage(video_in, rng) as footage:
            _encode_footage(container, footage, overlay, fps, batch, cancel, progress)
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


def _encode(container: Any, stream: Any, images: list[np.ndarray]) -> None:
    """Encode (H, W, 3) uint8 RGB images (cut to the stream's size) and mux their packets."""
    import av

    for image in images:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width]), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
