"""Small helpers shared by the capture tests (real PyAV footage)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_clip(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Encode (N, H, W, 3) uint8 RGB frames as H.264 (constant rate, PTS = index)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "16", "preset": "veryfast"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def gap_clip(path: Path, n: int = 20, gap: tuple[int, ...] = (8, 9), tail: int = 3):
    """The astronaut clip with the face removed in ``gap`` frames and the last ``tail`` frames (background only).

    Returns (path, still->frame transforms (N, 3, 3)).
    """
    from backend.synthetic.clips import background, render_astronaut_frames

    frames, tforms = render_astronaut_frames(n, (640, 360), "pan")
    bg = background((640, 360), 0)
    for i in (*gap, *range(n - tail, n)):
        frames[i] = bg
    return write_clip(path, frames), tforms


def crop_centres(crop: np.ndarray) -> np.ndarray:
    """(N, 3, 3) crop->frame transforms -> (N, 2) frame position of the crop centre."""
    c = np.array([111.5, 111.5, 1.0])
    p = crop.astype(np.float64) @ c
    return p[:, :2] / p[:, 2:3]
