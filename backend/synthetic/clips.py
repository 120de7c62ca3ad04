"""Real encoded test footage (PyAV, libx264) with known ground truth, built from public-domain stills.

Faces: the astronaut (Eileen Collins, NASA, public domain; ``skimage.data.astronaut()``) and Grace Hopper (US Navy,
public domain; matplotlib's ``sample_data/grace_hopper.jpg``). A face is a feathered ellipse cut around the face
in the still, moved over a static textured background by a known similarity transform per frame:
``transforms[t]`` maps still pixels (x = column, y = row) to frame pixels, so any point found on the still (for
example by a landmark detector) has a ground-truth position in every frame.

MP4 files are written with ``movflags=faststart`` (index first, like phone footage) so that a truncated copy still
decodes up to the cut.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError

# Face boxes (x0, y0, x1, y1) in the stills, from mediapipe landmarks on them (rounded outward); the face centre
# is the box centre. Used only to place the faces, the tests compare against the transforms.
ASTRONAUT_FACE_BOX = (178.0, 70.0, 272.0, 178.0)
GRACE_HOPPER_FACE_BOX = (172.0, 132.0, 357.0, 334.0)


@dataclass
class SyntheticClip:
    """A written clip and its ground truth. ``transforms``: (N, F, 3, 3) still -> frame, per frame and face."""

    path: Path
    fps: float
    size: tuple[int, int]  # (width, height) of the displayed frames
    times: np.ndarray  # (N,) presentation times, seconds
    transforms: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3, 3)))
    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))  # (N, F, 2) face centres in frames
    face_names: list[str] = field(default_factory=list)
    rotation: int = 0  # clockwise display rotation stored in the container

    @property
    def n_frames(self) -> int:
        return len(self.times)


# ---------------------------------------------------------------------------------------------------------------
# stills and compositing


def astronaut_image() -> np.ndarray:
    """(512, 512, 3) uint8 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def grace_hopper_image() -> np.ndarray:
    """(600, 512, 3) uint8 RGB."""
    import matplotlib.cbook as cbook

    from backend.footage.video import read_image

    image = read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if image is None:  # pragma: no cover - matplotlib always ships it
        raise FileNotFoundError("matplotlib sample data grace_hopper.jpg")
    return image


def background(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A static, textured, face-free background (H, W, 3) uint8: gradients plus smooth blobs."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([60 + 80 * xx / w, 90 + 40 * yy / h, 120 - 50 * xx / w], axis=-1)
    noise = rng.normal(0, 1, (max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * 18
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def similarity(
    center_src: tuple[float, float], center_dst: tuple[float, float], scale: float, angle_deg: float
) -> np.ndarray:
    """(3, 3) map: rotate by ``angle_deg`` (counter-clockwise on screen) and scale about ``center_src``, then move
    it to ``center_dst``."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    # screen y points down, so a counter-clockwise turn on screen is [[c, s], [-s, c]]
    m = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    t_src = np.array([[1, 0, -center_src[0]], [0, 1, -center_src[1]], [0, 0, 1.0]])
    t_dst = np.array([[1, 0, center_dst[0]], [0, 1, center_dst[1]], [0, 0, 1.0]])
    return t_dst @ m @ t_src


def face_alpha(shape: tuple[int, ...], box: tuple[float, float, float, float], margin: float = 1.45) -> np.ndarray:
    """(H, W) float32 feathered ellipse around ``box`` (scaled by ``margin``), 1 inside, 0 outside, for an image
    of shape (H, W[, C])."""
    import cv2

    h, w = shape[:2]
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = (x1 - x0) / 2 * margin, (y1 - y0) / 2 * margin
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    alpha = np.clip((1.0 - r) / 0.12, 0.0, 1.0)
    return cv2.GaussianBlur(alpha, (0, 0), 2.0)


def composite(frame: np.ndarray, still: np.ndarray, alpha: np.ndarray, tform: np.ndarray) -> np.ndarray:
    """Paste ``still`` (weighted by ``alpha``) into ``frame`` through the still -> frame map ``tform``."""
    import cv2

    h, w = frame.shape[:2]
    warped = cv2.warpAffine(still, tform[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = cv2.warpAffine(alpha, tform[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    return (frame.astype(np.float32) * (1 - a) + warped.astype(np.float32) * a + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# encoding


class VideoWriter:
    """The one PyAV writer of every generated clip: RGB frames in, libx264 (or another codec) out, optional explicit
    PTS and rotation. A context manager: leaving it flushes and closes (only closes when leaving on an error)."""

    def __init__(
        self,
        path: str | os.PathLike,
        size: tuple[int, int],
        fps: float,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        crf: int = 16,
        gop: int = 12,
        rotation: int = 0,
        time_base: Fraction | None = None,
        faststart: bool = True,
    ):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mp4 = self.path.suffix.lower() in {".mp4", ".mov", ".m4v"}
        opts = {"movflags": "faststart"} if mp4 and faststart else {}
        self.container = av.open(str(self.path), "w", options=opts)
        rate = Fraction(fps).limit_denominator(1001)
        stream = self.container.add_stream(codec, rate=rate)
        if not isinstance(stream, av.VideoStream):
            self.container.close()
            raise EmocaError("config_invalid", f"{codec!r} is not a video codec", "Use e.g. libx264, mpeg4 or ffv1.")
        self.stream: av.VideoStream = stream
        w, h = size
        self.stream.width, self.stream.height = w, h
        self.stream.pix_fmt = pix_fmt
        if codec.startswith("libx26"):
            self.stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop)}
        if time_base is not None:
            self.stream.codec_context.time_base = time_base
            self.stream.time_base = time_base
        if rotation:
            # PyAV takes counter-clockwise degrees; ours are the clockwise display rotation
            self.stream.set_display_rotation(-int(rotation))
        self.pix_fmt = pix_fmt

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.pix_fmt != "rgb24":
            frame = frame.reformat(format=self.pix_fmt)
        if pts is not None:
            frame.pts = pts
            frame.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, _value, _tb) -> None:
        if kind is None:
            self.close()
        else:
            self.container.close()


def _pan_motion(n: int, size: tuple[int, int], motion: str, phase: float = 0.0) -> list[tuple]:
    """Per-frame (cx, cy, scale, angle_deg) of a face: 'static', 'pan' (across, with mild zoom and roll)."""
    w, h = size
    out = []
    for t in range(n):
        u = t / max(n - 1, 1)
        if motion == "static":
            out.append((w * 0.5, h * 0.5, 1.0, 0.0))
        elif motion == "pan":
            cx = w * (0.35 + 0.3 * u)
            cy = h * (0.5 + 0.06 * np.sin(2 * np.pi * u + phase))
            scale = 1.0 + 0.15 * np.sin(np.pi * u)
            angle = 10.0 * np.sin(2 * np.pi * u + phase)
            out.append((cx, cy, scale, angle))
        else:
            raise ValueError(f"unknown motion {motion!r} (use 'static' or 'pan')")
    return out


def render_astronaut_frames(
    n_frames: int = 48,
    size: tuple[int, int] = (640, 360),
    motion: str = "pan",
    face_height: float = 120.0,
    seed: int = 0,
):
    """Display frames (N, H, W, 3) uint8 and their still -> frame transforms (N, 3, 3), without encoding."""
    still = astronaut_image()
    box = ASTRONAUT_FACE_BOX
    alpha = face_alpha(still.shape[:2], box)
    center = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    base_scale = face_height / (box[3] - box[1])
    bg = background(size, seed)
    frames, tforms = [], []
    for cx, cy, s, ang in _pan_motion(n_frames, size, motion):
        m = similarity(center, (cx, cy), base_scale * s, ang)
        frames.append(composite(bg, still, alpha, m))
        tforms.append(m)
    return np.stack(frames), np.stack(tforms)


def make_astronaut_clip(
    path: str | os.PathLike,
    n_frames: int = 48,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    motion: str = "pan",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    codec: str = "libx264",
    face_height: float = 120.0,
) -> SyntheticClip:
    """The astronaut's face moving over a background. ``rotation`` (clockwise degrees) is stored as the
    container's display rotation: the encoded pictures are turned the other way, so the displayed frames (and
    the ground truth) are the same for every rotation."""
    from backend.footage.video import rotate_image

    frames, tforms = render_astronaut_frames(n_frames, size, motion, face_height)
    enc_size = (size[1], size[0]) if rotation % 180 == 90 else size
    writer = VideoWriter(path, enc_size, fps, codec=codec, pix_fmt=pix_fmt, rotation=rotation)
    for f in frames:
        writer.write(rotate_image(f, -rotation))
    writer.close()
    centers = np.stack([(m @ [*_box_center(ASTRONAUT_FACE_BOX), 1.0])[:2] for m in tforms])
    return SyntheticClip(
        Path(path), fps, size, np.arange(n_frames) / fps, tforms[:, None], centers[:, None], ["astronaut"], rotation
    )


def _box_center(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def make_two_faces_clip(
    path: str | os.PathLike,
    n_frames: int = 50,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    face_height: float = 110.0,
    vertical_offset: float = 50.0,
) -> SyntheticClip:
    """The astronaut (left to right) and Grace Hopper (right to left, in front) cross mid-clip; their faces
    overlap for a few frames. ``centers[t, k]``: ground-truth face centre, k = 0 astronaut, 1 Grace Hopper."""
    w, h = size
    stills = [astronaut_image(), grace_hopper_image()]
    boxes = [ASTRONAUT_FACE_BOX, GRACE_HOPPER_FACE_BOX]
    alphas = [face_alpha(s.shape[:2], b) for s, b in zip(stills, boxes)]
    scales = [face_height / (b[3] - b[1]) for b in boxes]
    bg = background(size, seed=1)
    writer = VideoWriter(path, size, fps)
    tforms = np.zeros((n_frames, 2, 3, 3))
    centers = np.zeros((n_frames, 2, 2))
    for t in range(n_frames):
        u = t / max(n_frames - 1, 1)
        pos = [
            (w * (0.15 + 0.7 * u), h * 0.5 - vertical_offset / 2),
            (w * (0.85 - 0.7 * u), h * 0.5 + vertical_offset / 2),
        ]
        frame = bg
        for k in range(2):
            m = similarity(_box_center(boxes[k]), pos[k], scales[k], 5.0 * np.sin(2 * np.pi * u + k))
            frame = composite(frame, stills[k], alphas[k], m)
            tforms[t, k] = m
            centers[t, k] = pos[k]
        writer.write(frame)
    writer.close()
    return SyntheticClip(
        Path(path), fps, size, np.arange(n_frames) / fps, tforms, centers, ["astronaut", "grace_hopper"]
    )


def make_no_face_clip(
    path: str | os.PathLike, n_frames: int = 24, size: tuple[int, int] = (320, 180), fps: float = 25.0
) -> SyntheticClip:
    """Background with a moving coloured disc: no face anywhere."""
    import cv2

    bg = background(size, seed=2)
    writer = VideoWriter(path, size, fps)
    for t in range(n_frames):
        f = bg.copy()
        cv2.circle(f, (int(20 + t * (size[0] - 40) / max(n_frames, 1)), size[1] // 2), 25, (230, 200, 40), -1)
        writer.write(f)
    writer.close()
    return SyntheticClip(Path(path), fps, size, np.arange(n_frames) / fps)


# ---------------------------------------------------------------------------------------------------------------
# counter clips: each frame shows its own index in coarse grey blocks, so a decoded frame can be identified


COUNTER_BLOCKS = 3  # digits in base 16 -> up to 4096 distinct frames


def counter_image(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """(H, W, 3) uint8: the index written as base-16 digits in vertical bands (level = 16*digit + 8)."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    band = w // COUNTER_BLOCKS
    for k in range(COUNTER_BLOCKS):
        digit = (index // 16**k) % 16
        img[:, k * band : (k + 1) * band] = 16 * digit + 8
    return img


def read_counter(image: np.ndarray) -> int:
    """Inverse of :func:`counter_image` on a decoded (lossy) frame: the centre of each band, rounded."""
    h, w = image.shape[:2]
    band = w // COUNTER_BLOCKS
    value = 0
    for k in range(COUNTER_BLOCKS):
        patch = image[h // 4 : 3 * h // 4, k * band + band // 4 : k * band + 3 * band // 4]
        digit = int(np.clip(np.round((float(patch.mean()) - 8.0) / 16.0), 0, 15))
        value += digit * 16**k
    return value


def make_counter_clip(
    path: str | os.PathLike,
    n_frames: int = 60,
    size: tuple[int, int] = (64, 48),
    fps: float = 25.0,
    gop: int = 25,
    pix_fmt: str = "yuv420p",
    faststart: bool = True,
) -> SyntheticClip:
    """A tiny constant-rate clip whose frame i shows ``counter_image(i)``. ``faststart=False`` puts the MP4
    index at the end (PyAV's default), where a truncated copy cannot be opened at all."""
    writer = VideoWriter(path, size, fps, pix_fmt=pix_fmt, gop=gop, crf=10, faststart=faststart)
    for i in range(n_frames):
        writer.write(counter_image(i, size))
    writer.close()
    return SyntheticClip(Path(path), fps, size, np.arange(n_frames) / fps)


def make_vfr_clip(
    path: str | os.PathLike,
    durations_ms: tuple[int, ...] = (40, 40, 20, 80, 33, 67, 40, 100, 20),
    n_frames: int = 30,
    size: tuple[int, int] = (64, 48),
) -> SyntheticClip:
    """Variable frame rate: frame i lasts ``durations_ms[i % len]`` ms (explicit PTS, time base 1/1000).
    Frames show their index (``read_counter``). ``times`` are the written presentation times."""
    tb = Fraction(1, 1000)
    writer = VideoWriter(path, size, 25.0, time_base=tb, gop=10, crf=10)
    pts, times = 0, []
    for i in range(n_frames):
        writer.write(counter_image(i, size), pts=pts)
        times.append(pts / 1000.0)
        pts += durations_ms[i % len(durations_ms)]
    writer.close()
    times_a = np.asarray(times)
    return SyntheticClip(Path(path), n_frames / (pts / 1000.0), size, times_a)


def make_10bit_clip(path: str | os.PathLike, n_frames: int = 12, size: tuple[int, int] = (320, 180)) -> SyntheticClip:
    """The astronaut clip encoded as 10-bit 4:2:0 H.264 (yuv420p10le)."""
    return make_astronaut_clip(path, n_frames=n_frames, size=size, pix_fmt="yuv420p10le")


def make_audio_only(path: str | os.PathLike, seconds: float = 0.5, rate: int = 16000) -> Path:
    """A WAV file with a sine tone and no video stream."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = "mono"
        n = int(seconds * rate)
        tone = (np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = rate
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def truncate_file(src: str | os.PathLike, dst: str | os.PathLike, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a download or copy cut short)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def make_image_sequence(
    folder: str | os.PathLike,
    n_frames: int = 8,
    size: tuple[int, int] = (320, 180),
    pattern: str = "frame_%04d.png",
    start_number: int = 1,
) -> SyntheticClip:
    """Astronaut frames written as numbered images (cv2.imencode + tofile: non-ASCII folders work)."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames, tforms = render_astronaut_frames(n_frames, size, "pan", face_height=120.0 * size[1] / 360.0)
    ext = os.path.splitext(pattern)[1] or ".png"
    for i, f in enumerate(frames):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        assert ok
        buf.tofile(str(folder / (pattern % (i + start_number))))
    centers = np.stack([(m @ [*_box_center(ASTRONAUT_FACE_BOX), 1.0])[:2] for m in tforms])
    return SyntheticClip(
        folder / pattern, 25.0, size, np.arange(n_frames) / 25.0, tforms[:, None], centers[:, None], ["astronaut"]
    )
