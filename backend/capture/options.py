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
from emoca_contract.fields import check_fields, field_types

if TYPE_CHECKING:
    from backend.footage.video import FrameRange

# progress(done, total, stage, fps, eta) and warn(message): the callbacks a capture reports through
Progress = Callable[[int, int, str, float | None, float | None], None]
Warn = Callable[[str], None]

# batch_size None means this many crops per network batch
DEFAULT_BATCH = {"cpu": 32, "cuda": 128}
# The ``model`` words that are not folders: the open model, and an untrained EMOCA on the synthetic head.
OPEN_MODEL = "open"
UNTRAINED_MODEL = "untrained"
# The reconstructor's precisions (backend.models.reconstructor.PRECISIONS; a test keeps the two equal).
PRECISIONS = ("fp32", "bf16", "auto")
# The options that do not decide a take's contents (where it runs and how fast, the extras beside it): left out of
# the take's ``meta.options``, so a take captured with other values of these is still complete for a batch's resume.
NOT_DECISIVE = ("batch_size", "queue_frames", "preview", "plot")


@dataclass
class CaptureOptions:
    """Everything that decides a capture (a capture is a pure function of footage, options and assets).

    ``face``: 'largest' (the track with the largest mean face box over the clip), 'all' (one take per track
    seen in at least ALL_MIN_FRAMES frames) or a track number. ``frames``: a FrameRange, "A:B:S" or (A, B, S).
    ``max_gap``: interior runs of at most this many missing frames are interpolated and flagged (0 = never).
    ``batch_size`` None = 32 on CPU, 128 on CUDA. ``smoothing`` None = SmoothingOptions' defaults.
    ``model``: None = the installed EMOCA/DECA model, else the open model (:func:`capture_kind`); "open" = the
    open model (MediaPipe's ARKit scores and head pose) even when EMOCA is installed; "untrained" = an untrained
    EMOCA network on the synthetic test head (tests, plumbing); anything else = an EMOCA/DECA model folder.
    ``precision``: one of :data:`PRECISIONS` for the reconstructor (auto = bf16 where it is native, else fp32).
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
    precision: str = "auto"  # one of PRECISIONS (a str: the protocol's type language has no Literal)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CaptureOptions:
        """Options by name as the protocol sends them, each checked against its field's type first
        (``emoca_contract.fields.check_fields``: EmocaError 'config_invalid' naming the option);
        ``smooth``/``smooth_strength`` build the smoothing."""
        from backend.footage.video import FrameRange

        schema = {**field_types(cls, {"FrameRange": FrameRange}), "smooth": str | None, "smooth_strength": float | None}
        d = check_fields(schema, {} if d is None else d, "capture option")
        smooth = d.pop("smooth", None)
        strength = d.pop("smooth_strength", None)
        frames = d.get("frames")
        if isinstance(frames, (list, tuple)) and not 1 <= len(frames) <= 3:
            raise EmocaError("config_invalid", f"capture option 'frames': {frames!r} is not [start, stop, step]")
        parse_frames(frames)  # values too, before any work: "a:b", negative frames, step 0
        parse_face(d.get("face", "largest"))
        check_precision(d.get("precision", "auto"))
        if strength is not None and not 0 <= strength <= 1:  # float() of a 400-digit JSON int would overflow
            raise EmocaError("config_invalid", f"capture option 'smooth_strength' is {strength!r}: use 0 to 1")
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


def decisive_options(options: CaptureOptions) -> dict[str, Any]:
    """The options that decide a take's contents, as plain values: the take's ``meta.options`` (a batch skips a
    clip whose take has the same ones: backend.capture.batch). Everything but :data:`NOT_DECISIVE`; ``face`` as
    :func:`parse_face` reads it, ``frames`` as "A:B:S", smoothing as its take metadata."""
    d = options.to_dict()
    d["face"] = parse_face(d["face"])
    d["frames"] = parse_frames(options.frames).text()
    d["smoothing"] = smoothing_meta(options.smoothing if options.smoothing is not None else SmoothingOptions())
    return {k: v for k, v in d.items() if k not in NOT_DECISIVE}


def network_key(options: CaptureOptions, device: str) -> tuple:
    """What decides which networks a capture loads (:func:`backend.capture.networks.load_networks`): clips of one
    batch with equal keys share one set of loaded networks."""
    return (
        capture_kind(options),
        options.model,
        options.flame,
        options.emotion,
        device,
        options.precision,
        bool(options.detail),
        detector_gives_arkit(options.detector),
        options.batch_size,
    )


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


def capture_kind(options: CaptureOptions) -> str:
    """The take kind a capture writes: "open" (the open model) or "flame" (an EMOCA/DECA network).

    The ``model`` words decide, else an explicit folder means EMOCA, else the installed EMOCA/DECA model
    (backend.assets.resolve_capture) when there is one, else the open model."""
    if options.model == OPEN_MODEL:
        return "open"
    if options.model is not None:
        return "flame"
    from backend.assets import resolve_capture

    return "flame" if resolve_capture(None, options.flame).model is not None else "open"


def detector_gives_arkit(detector: str) -> bool:
    """Whether the detector named ``detector`` gives ARKit scores and a pose (the Face Landmarker does, FAN not)."""
    return str(detector).lower() in ("auto", "mediapipe")


def check_detector(kind: str, detector: str) -> None:
    """The open model reads MediaPipe's blendshapes and pose: EmocaError config_invalid for another detector."""
    if kind == "open" and not detector_gives_arkit(detector):
        raise EmocaError(
            "config_invalid",
            f"the open model needs the mediapipe detector (its ARKit scores and head pose), not {detector!r}",
            "Use --detector mediapipe, or an EMOCA model (--model DIR) with --detector fan.",
        )


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS, else EmocaError config_invalid (before any footage is read)."""
    if precision not in PRECISIONS:
        raise EmocaError("config_invalid", f"precision {precision!r}: use {', '.join(PRECISIONS)}")
    return precision


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
