"""What decides a capture: :class:`CaptureOptions`, the words that build them (face, smoothing, device) and
where the takes go (:func:`output_paths`).

A capture is a pure function of footage, options and assets; everything here is checked before any footage is
read, so bad options fail fast with an EmocaError ``config_invalid`` / ``device_unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.take.smoothing import SmoothingOptions, smoothing_meta
from emoca_contract.errors import EmocaError

if TYPE_CHECKING:
    from backend.footage.video import FrameRange

# progress(done, total, stage, fps, eta) and warn(message): the callbacks a capture reports through
Progress = Callable[[int, int, str, float | None, float | None], None]
Warn = Callable[[str], None]

# batch_size None means this many crops per network batch
DEFAULT_BATCH = {"cpu": 32, "cuda": 128}


@dataclass
class CaptureOptions:
    """Everything that decides a capture (a capture is a pure function of footage, options and assets).

    ``face``: 'largest' (the track with the largest mean face box over the clip), 'all' (one take per track
    seen in at least ALL_MIN_FRAMES frames) or a track number. ``frames``: a FrameRange, "A:B:S" or (A, B, S).
    ``max_gap``: interior runs of at most this many missing frames are interpolated and flagged (0 = never).
    ``batch_size`` None = 32 on CPU, 128 on CUDA. ``smoothing`` None = SmoothingOptions' defaults.
    """

    model: str | None = None
    flame: str | None = None
    emotion: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    face: str | int = "largest"
    detector: str = "mediapipe"
    smoothing: SmoothingOptions | None = None
    frames: FrameRange | str | tuple[int, ...] | list[int] | None = None
    max_gap: int = 5
    preview: str | None = None
    plot: str | None = None
    detail: bool = False
    queue_frames: int | None = None  # reader look-ahead; None = 2 batches

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CaptureOptions:
        """Options by name as the protocol sends them (``smooth``/``smooth_strength`` build the smoothing)."""
        d = dict(d or {})
        smooth = d.pop("smooth", None)
        strength = d.pop("smooth_strength", None)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise EmocaError("config_invalid", f"unknown capture option(s) {unknown}; known: {sorted(names)}")
        opts = cls(**d)
        if smooth is not None or strength is not None:
            opts.smoothing = make_smoothing(smooth, strength)
        return opts

    def to_dict(self) -> dict:
        """Plain values (smoothing as its take metadata, frames as "A:B:S")."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["smoothing"] = smoothing_meta(self.smoothing)
        d["frames"] = _frames_text(self.frames)
        return d


def _frames_text(frames: Any) -> str | None:
    if frames is None or isinstance(frames, str):
        return frames
    if isinstance(frames, (list, tuple)):
        return ":".join("" if v is None else str(v) for v in frames)
    return frames.text()


def make_smoothing(method: str | None, strength: float | None = None) -> SmoothingOptions:
    """SmoothingOptions from the command-line words (off|butterworth|one_euro, strength in [0, 1])."""
    kwargs: dict[str, Any] = {}
    if method is not None:
        kwargs["method"] = str(method)
    if strength is not None:
        kwargs["strength"] = float(strength)
    return SmoothingOptions(**kwargs)


def resolve_device(device: str) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> the torch device to run on (auto = CUDA when PyTorch sees one)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EmocaError("device_unavailable", "--device cuda was asked for but PyTorch sees no CUDA GPU")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EmocaError("config_invalid", f"device {device!r}: use auto, cpu or cuda")
    return device


def batch_size(options: CaptureOptions, device: str) -> int:
    """Crops per network batch: the option, else DEFAULT_BATCH for the device kind."""
    batch = int(options.batch_size or DEFAULT_BATCH["cuda" if device.startswith("cuda") else "cpu"])
    if batch < 1:
        raise EmocaError("config_invalid", f"batch size {batch}: must be >= 1")
    return batch


def parse_face(face: str | int) -> str | int:
    """'largest' | 'all' | a track number (int or digits) -> 'largest' | 'all' | int."""
    if isinstance(face, int):
        return face
    text = str(face).strip().lower()
    if text in ("largest", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise EmocaError("config_invalid", f"--face {face!r}: use largest, all or a track number") from None


def parse_frames(frames: FrameRange | str | tuple[int, ...] | list[int] | None) -> FrameRange:
    """The ``frames`` option as a FrameRange (None = every frame)."""
    from backend.footage.video import FrameRange

    if frames is None or isinstance(frames, str):
        return FrameRange.parse(frames)
    if isinstance(frames, (list, tuple)):
        return FrameRange(*frames)
    return frames


def output_paths(output: str | Path, input_path: str | Path, track_ids: list[int], face: str | int) -> list[Path]:
    """Where each selected track goes: OUT.npz for one face, OUT_track<id>.npz for 'all'.

    An ``output`` that is an existing folder (or has no .npz suffix) receives ``<input stem>[_track<id>].npz``.
    """
    out = Path(output)
    if out.is_dir() or out.suffix.lower() != ".npz":
        out = out / (Path(input_path).stem + ".npz")
    if face == "all":
        return [out.with_name(f"{out.stem}_track{t}.npz") for t in track_ids]
    return [out]


def parts_location(output: str | Path, input_path: str | Path) -> tuple[Path, str]:
    """(folder, stem) for the per-track chunk files: beside OUT.npz, or in the output folder."""
    out = Path(output)
    if out.is_dir() or out.suffix.lower() != ".npz":
        return out, Path(input_path).stem
    return out.parent, out.stem
