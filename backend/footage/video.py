"""Footage decoding: videos (PyAV), image sequences and single images, as a stream of RGB frames.

Every frame comes out as ``Frame(index, time, image)``: ``index`` is the 0-based position of the frame in
presentation order, ``time`` its presentation time in seconds (from the container's timestamps, so variable
frame rate footage keeps its real timing), ``image`` an HxWx3 uint8 RGB array with the container's rotation
already applied (frame space of docs/formats.md is the displayed picture).

Failures a user can cause raise :class:`emoca_contract.errors.EmocaError` (``input_missing``, ``input_unsupported``,
``input_corrupt``, ``input_empty``). A corrupt packet or frame in the middle of a video, a corrupt image in a
sequence, or a truncated file, is not fatal: it is reported through ``on_warning(message)``, counted in
``Footage.n_errors`` and skipped; or, opened with ``empty_frames=True`` (capture: one take row per source frame), a
frame known to exist that cannot be decoded comes out as an empty frame (``Frame.decoded`` False, an image of
0x0 pixels): a corrupt image of a sequence, a corrupt frame, and the frames of a constant-rate video whose packets
were lost (their indices are known from the timestamps around them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emoca_contract.errors import EmocaError

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm"})
DEFAULT_IMAGE_FPS = 25.0
# The image of a frame that exists but cannot be decoded (Footage opened with empty_frames=True).
EMPTY_IMAGE = np.zeros((0, 0, 3), np.uint8)
EMPTY_IMAGE.flags.writeable = False
# Only seek when the start is this far in: below it, decoding forward from 0 is cheap and always exact.
SEEK_MIN_FRAMES = 250
# Leading bytes of containers we know (used to tell "corrupt video" from "not a video at all").
_CONTAINER_MAGIC = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (4, b"skip"),  # MP4 / MOV
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"\x00\x00\x01\xba"),
    (0, b"\x00\x00\x01\xb3"),  # MPEG-PS / MPEG video
    (0, b"G"),  # MPEG-TS sync byte (weak, checked together with the extension)
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x30\x26\xb2\x75"),  # FLV, Ogg, ASF/WMV
    (0, b"\x00\x00\x00\x01"),
    (0, b"\x00\x00\x01"),  # raw H.264/HEVC Annex B
)
# FFmpeg "decodes" any text file as ANSI art (the tty demuxer): that is not footage.
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf", "text", "srt", "subrip", "ass", "webvtt"})
Warn = Callable[[str], None]


@dataclass(frozen=True)
class FrameRange:
    """Frames ``start, start+step, ...`` below ``stop`` (None = to the end), like a Python slice of the footage."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop < 0):
            raise EmocaError(
                "config_invalid",
                f"frame range {self.text()!r}: frame numbers must be >= 0",
                "Use START:STOP:STEP with non-negative frame numbers, e.g. 0:300:2.",
            )
        if self.step < 1:
            raise EmocaError(
                "config_invalid",
                f"frame range {self.text()!r}: step must be >= 1",
                "Use START:STOP:STEP with STEP >= 1, e.g. 0:300:2.",
            )

    @classmethod
    def parse(cls, text: str | None) -> FrameRange:
        """Parse ``"A:B:S"`` (each part optional: ``"10:"``, ``"::2"``, ``":100"``, ``"5"`` = from frame 5)."""
        if text is None or not text.strip():
            return cls()
        parts = [p.strip() for p in text.strip().split(":")]
        if len(parts) > 3:
            raise EmocaError(
                "config_invalid",
                f"frame range {text!r} has more than three parts",
                "Use START:STOP:STEP, e.g. 0:300:2 (each part optional).",
            )
        try:
            vals = [int(p) if p else None for p in parts]
        except ValueError:
            raise EmocaError(
                "config_invalid",
                f"frame range {text!r} is not START:STOP:STEP with integers",
                "Use START:STOP:STEP, e.g. 0:300:2 (each part optional).",
            ) from None
        vals += [None] * (3 - len(vals))
        start, stop, step = vals
        return cls(start or 0, stop, 1 if step is None else step)

    def contains(self, index: int) -> bool:
        if index < self.start or (self.stop is not None and index >= self.stop):
            return False
        return (index - self.start) % self.step == 0

    def past_end(self, index: int) -> bool:
        return self.stop is not None and index >= self.stop

    def text(self) -> str:
        return f"{self.start}:{'' if self.stop is None else self.stop}:{self.step}"

    def as_list(self) -> list:
        """``[start, stop, step]`` as stored in the take's ``meta.source.frames`` (stop may be None)."""
        return [self.start, self.stop, self.step]


@dataclass
class FootageInfo:
    """What the footage is. ``width``/``height`` are after rotation; ``frame_count`` is estimated for videos.

    ``rotation`` is the clockwise rotation in degrees (0, 90, 180, 270) applied to decoded frames to display
    them (the convention of the classic ``rotate`` tag; a phone's portrait video usually reads 90).
    ``time_base`` is the stream's time base as "num/den" (None for images).
    """

    path: str
    kind: str  # 'video' | 'images' | 'image'
    fps: float
    width: int
    height: int
    frame_count: int
    rotation: int = 0
    duration: float = 0.0
    time_base: str | None = None
    codec: str = ""
    pix_fmt: str = ""
    bit_depth: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Frame:
    index: int  # 0-based source frame index (presentation order)
    time: float  # presentation time, seconds
    image: np.ndarray  # (H, W, 3) uint8 RGB, rotation applied; (0, 0, 3) for a frame that cannot be decoded

    @property
    def decoded(self) -> bool:
        """False for an empty frame: it exists in the footage but could not be decoded (``empty_frames``)."""
        return self.image.size > 0


# ---------------------------------------------------------------------------------------------------------------
# small pure helpers


def natural_key(name: str) -> list:
    """Sort key that orders ``f2.png`` before ``f10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def rotate_image(image: np.ndarray, clockwise_degrees: int) -> np.ndarray:
    """Rotate an (H, W, C) image clockwise by a multiple of 90 degrees (contiguous result)."""
    k = (-(int(clockwise_degrees) // 90)) % 4  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def normalize_rotation(degrees: float) -> int:
    """Snap any angle to the nearest of 0, 90, 180, 270 (display matrices hold only these in practice)."""
    return int(round(float(degrees) / 90.0)) % 4 * 90


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any cv2-decoded image (gray, BGR, BGRA; 8 or 16 bit) -> (H, W, 3) uint8 RGB."""
    import cv2

    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float64) * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """Read an image file as (H, W, 3) uint8 RGB, or None if it cannot be decoded.

    np.fromfile + cv2.imdecode instead of cv2.imread, which fails on non-ASCII paths on some platforms.
    IMREAD_COLOR applies the JPEG EXIF orientation; ANYDEPTH keeps 16-bit PNGs exact until we scale them.
    """
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    return None if image is None else to_rgb8(image)


def _printf_regex(pattern: str) -> re.Pattern | None:
    """``frame_%04d.png`` -> a regex with one integer group, or None if the name has no printf field."""
    m = re.search(r"%(0?\d*)d", pattern)
    if m is None:
        return None
    return re.compile(re.escape(pattern[: m.start()]) + r"(\d+)" + re.escape(pattern[m.end() :]) + r"\Z")


def _looks_like_container(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(16)
    for offset, magic in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if magic == b"G" and path.suffix.lower() not in {".ts", ".mts", ".m2ts"}:
                continue
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# the footage object


class Footage:
    """An open piece of footage: ``.info`` and an iterator of :class:`Frame` (iterate once). A context manager."""

    def __init__(self, info: FootageInfo, frames: FrameRange, on_warning: Warn | None, empty_frames: bool = False):
        self.info = info
        self.frames = frames
        self._on_warning = on_warning
        self.empty_frames = empty_frames  # an undecodable frame comes out empty instead of being skipped
        self.warnings: list[str] = []
        self.n_errors = 0  # corrupt packets/frames/images skipped
        self.n_yielded = 0
        self.n_decoded = 0  # frames decoded, in range or not (seeking keeps it small for late starts)
        self._iter: Iterator[Frame] | None = None

    # subclasses implement _generate(); the first frame is pulled at open time to fail early
    def _generate(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fate(self) -> str:
        """What becomes of a frame that cannot be decoded, for the warning."""
        return "an invalid row" if self.empty_frames else "skipped"

    def _warn(self, message: str, error: bool = True) -> None:
        if error:
            self.n_errors += 1
        self.warnings.append(message)
        if self._on_warning is not None:
            self._on_warning(message)

    def _start(self) -> None:
        gen = self._generate()
        try:
            first = next(gen)
        except StopIteration:
            self.close()
            raise EmocaError(
                "input_empty",
                f"{self.info.path}: no frames in range {self.frames.text()} "
                f"(the footage has about {self.info.frame_count} frames)",
            ) from None
        except BaseException:
            self.close()
            raise

        def chain() -> Iterator[Frame]:
            yield first
            yield from gen

        self._iter = chain()

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._iter is None:
            raise StopIteration
        frame = next(self._iter)
        self.n_yielded += 1
        return frame

    def close(self) -> None:
        self._iter = None

    def __enter__(self) -> Footage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass
class _DecodeCounts:
    """Running counts of one decode pass: frames decoded, and undecodable packets before the first frame."""

    decoded: int = 0
    errors_before_first: int = 0


def frame_time(pts: int | None, t0: int, time_base: Fraction, last_time: float | None, fps: float) -> float:
    """Presentation time (s) of a frame: from its timestamp; without one, one frame after the last (0 first)."""
    if pts is not None:
        return float((pts - t0) * time_base)
    if last_time is not None:
        return last_time + 1.0 / fps
    return 0.0


def stream_list(container: InputContainer) -> str:
    """The container's streams in words, e.g. ``audio (pcm_s16le), subtitle (mov_text)``, or ``none``."""
    names = [
        f"{s.type} ({s.codec_context.name})" if s.codec_context is not None else str(s.type) for s in container.streams
    ]
    return ", ".join(names) or "none"


class _VideoFootage(Footage):
    def __init__(self, path: Path, frames: FrameRange, on_warning: Warn | None, empty_frames: bool = False):
        import av

        try:
            container = av.open(str(path), metadata_errors="ignore")
        except av.error.FFmpegError as e:
            if _looks_like_container(path):
                raise EmocaError(
                    "input_corrupt",
                    f"{path}: the video container is damaged ({e.strerror or e}); "
                    "a truncated MP4 whose index sits at the end cannot be read",
                ) from None
            raise EmocaError(
                "input_unsupported",
                f"{path}: not a video, image sequence or image that can be read ({e.strerror or e})",
            ) from None
        text_codec = container.streams.video and container.streams.video[0].codec_context.name in _TEXT_CODECS
        if not container.streams.video or text_codec:
            streams = stream_list(container)  # before closing: a closed container lists none
            container.close()
            raise EmocaError(
                "input_unsupported",
                f"{path}: the file has no video stream "
                f"(streams: {streams}{'; text is not footage' if text_codec else ''})",
            )
        self._container: InputContainer | None = container  # None once closed
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: decode is the first bottleneck of capture
        self._stream = stream
        cc = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0) or DEFAULT_IMAGE_FPS
        tb = stream.time_base
        duration = 0.0
        if stream.duration is not None and tb is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0
        frame_count = int(stream.frames) if stream.frames else int(round(duration * fps))
        pix_fmt = cc.pix_fmt or ""
        bit_depth = 8
        try:
            fmt = av.VideoFormat(pix_fmt) if pix_fmt else None
            if fmt is not None and fmt.components:
                bit_depth = int(fmt.components[0].bits)
        except (ValueError, av.error.FFmpegError):
            pass
        rotation = 0
        tag = stream.metadata.get("rotate")  # old muxers; newer FFmpeg exposes a display matrix instead
        if tag:
            try:
                rotation = normalize_rotation(float(tag))
            except ValueError:
                pass
        self._tag_rotation = rotation
        info = FootageInfo(
            path=str(path),
            kind="video",
            fps=fps,
            width=cc.width,
            height=cc.height,
            frame_count=frame_count,
            rotation=rotation,
            duration=duration,
            time_base=f"{tb.numerator}/{tb.denominator}" if tb is not None else None,
            codec=cc.name or "",
            pix_fmt=pix_fmt,
            bit_depth=bit_depth,
        )
        super().__init__(info, frames, on_warning, empty_frames)
        self._start()

    def close(self) -> None:
        super().close()
        c = getattr(self, "_container", None)
        if c is not None:
            self._container = None
            c.close()

    def _frame_rotation(self, frame) -> int:
        # PyAV's frame.rotation is the display matrix angle, counter-clockwise; ours is clockwise.
        try:
            ccw = frame.rotation
        except Exception:
            ccw = 0
        return normalize_rotation(-ccw) if ccw else self._tag_rotation

    def _is_cfr(self) -> bool:
        s = self._stream
        avg, base = s.average_rate, s.base_rate
        return bool(avg and base and s.time_base is not None and abs(float(avg) - float(base)) <= 1e-3 * float(base))

    def _seek_start(self, cfr: bool) -> None:
        """Seek to the keyframe before ``frames.start`` on constant-rate footage (indices then come from the
        timestamps, index = round(time * fps), which only holds at constant rate); otherwise decode from 0."""
        s, container = self._stream, self._container
        start, rate, tb = self.frames.start, s.average_rate, s.time_base
        if not cfr or start < SEEK_MIN_FRAMES or container is None or rate is None or tb is None:
            return
        target = int((Fraction(start - 2) / Fraction(rate)) / tb) + (s.start_time or 0)
        try:
            container.seek(target, stream=s, backward=True, any_frame=False)
        except Exception:
            container.seek(s.start_time or 0, stream=s)

    def _generate(self) -> Iterator[Frame]:
        s = self._stream
        tb = s.time_base or Fraction(1, 1)
        t0 = s.start_time or 0
        fps = self.info.fps
        # Constant rate: index from the timestamp, so a skipped corrupt packet leaves a hole instead of shifting
        # every later index. Variable rate: index = decode count (the only definition there is).
        cfr = self._is_cfr()
        self._seek_start(cfr)
        counts = _DecodeCounts()
        index = 0
        last_time: float | None = None
        rot_known = False
        for vf in self._decoded_frames(counts):
            time = frame_time(vf.pts, t0, tb, last_time, fps)
            expected = index
            if cfr and vf.pts is not None:
                index = max(int(round(time * fps)), index)
            if last_time is not None and self.empty_frames:
                yield from self._lost(expected, index, fps)
            last_time = time
            i = index
            index += 1
            if vf.is_corrupt:
                self._warn(f"{self.info.path}: frame {i} is corrupt, {self._fate()}")
                if self.empty_frames and self.frames.contains(i):
                    yield Frame(i, time, EMPTY_IMAGE)
                continue
            counts.decoded += 1
            self.n_decoded += 1
            if self.frames.past_end(i):
                return
            if not self.frames.contains(i):
                continue
            rot = self._frame_rotation(vf)
            if not rot_known or rot != self.info.rotation:
                self._set_rotation(rot, vf)
                rot_known = True
            yield Frame(i, time, rotate_image(vf.to_ndarray(format="rgb24"), rot))
        self._check_decoded(counts, index)

    def _lost(self, first: int, stop: int, fps: float) -> Iterator[Frame]:
        """Empty frames for the source frames ``first .. stop-1`` of the range, whose packets were lost (a
        constant-rate stream's timestamps jumped over them)."""
        wanted = [j for j in range(first, stop) if self.frames.contains(j)]
        if wanted:
            self._warn(
                f"{self.info.path}: frames {first} to {stop - 1} could not be decoded: invalid rows", error=False
            )
        for j in wanted:
            yield Frame(j, j / fps, EMPTY_IMAGE)

    def _decoded_frames(self, counts: _DecodeCounts) -> Iterator[VideoFrame]:
        """The stream's decoded PyAV frames; a corrupt packet is warned about and skipped, a read error ends the
        stream (truncated file), and 25 undecodable packets before the first frame stop it (see _check_decoded).
        ``counts.decoded`` is kept by the consumer; ``counts.errors_before_first`` is counted here."""
        import av

        if self._container is None:
            return  # closed: nothing more to read
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as e:
                self._warn(
                    f"{self.info.path}: reading stopped after {counts.decoded} frames ({e.strerror or e}); "
                    "the file may be truncated"
                )
                return
            try:
                out = packet.decode()
            except av.error.FFmpegError as e:
                if counts.decoded == 0:
                    counts.errors_before_first += 1
                    if counts.errors_before_first >= 25:
                        return  # reported as input_corrupt by _check_decoded
                self._warn(
                    f"{self.info.path}: skipped a corrupt packet after {counts.decoded} decoded frames "
                    f"({e.strerror or e})"
                )
                continue
            yield from out

    def _check_decoded(self, counts: _DecodeCounts, n_indexed: int) -> None:
        """After the last packet: nothing decodable is input_corrupt; fewer frames than declared, a warning."""
        if counts.decoded == 0 and counts.errors_before_first:
            raise EmocaError(
                "input_corrupt",
                f"{self.info.path}: no frame can be decoded ({counts.errors_before_first} corrupt packets at the "
                "start)",
            )
        if self.info.frame_count and counts.decoded and n_indexed < self.info.frame_count:
            self._warn(
                f"{self.info.path}: the stream declares {self.info.frame_count} frames but only {n_indexed} "
                "could be decoded; the file may be truncated",
                error=False,
            )

    def _set_rotation(self, rot: int, vf) -> None:
        self.info.rotation = rot
        w, h = vf.width, vf.height
        self.info.width, self.info.height = (h, w) if rot in (90, 270) else (w, h)


class _ImageFootage(Footage):
    def __init__(
        self,
        files: list[Path],
        kind: str,
        label: str,
        frames: FrameRange,
        fps: float,
        on_warning: Warn | None,
        empty_frames: bool = False,
    ):
        self._files = files
        first = read_image(files[0]) if files and kind == "image" else None
        if kind == "image" and first is None:
            raise EmocaError("input_corrupt", f"{label}: the image cannot be decoded")
        info = FootageInfo(
            path=label,
            kind=kind,
            fps=float(fps),
            width=0,
            height=0,
            frame_count=len(files),
            duration=len(files) / float(fps),
            codec="image",
            pix_fmt="rgb24",
        )
        super().__init__(info, frames, on_warning, empty_frames)
        self._first = first
        self._start()

    def _generate(self) -> Iterator[Frame]:
        fps = self.info.fps
        any_ok = False
        for i, f in enumerate(self._files):
            if self.frames.past_end(i):
                return
            if not self.frames.contains(i):
                continue
            image = self._first if (i == 0 and self._first is not None) else read_image(f)
            if image is None:
                if not any_ok and i == self.frames.start:
                    raise EmocaError("input_corrupt", f"{f}: the first image of the sequence cannot be decoded")
                self._warn(f"{f}: cannot be decoded, {self._fate()}")
                if self.empty_frames:
                    yield Frame(i, i / fps, EMPTY_IMAGE)
                continue
            self.n_decoded += 1
            if not any_ok:
                self.info.height, self.info.width = image.shape[:2]
                any_ok = True
            yield Frame(i, i / fps, image)


def _sequence_files(path: Path) -> list[Path] | None:
    """Files of an image sequence given as a folder or a printf pattern; None if ``path`` is neither."""
    if path.is_dir():
        files = [
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        ]
        return sorted(files, key=lambda p: natural_key(p.name))
    rx = _printf_regex(path.name)
    if rx is None or not path.parent.is_dir():
        return None
    numbered = []
    for p in path.parent.iterdir():
        m = rx.match(p.name)
        if m and p.is_file():
            numbered.append((int(m.group(1)), p))
    return [p for _, p in sorted(numbered)]


def open_footage(
    path: str | os.PathLike,
    frames: FrameRange | str | None = None,
    on_warning: Warn | None = None,
    fps: float = DEFAULT_IMAGE_FPS,
    empty_frames: bool = False,
) -> Footage:
    """Open a video file, an image-sequence folder, a printf pattern (``shots/frame_%04d.png``) or one image.

    ``fps`` is used for image sequences only (their times are index / fps). ``empty_frames``: a frame that exists
    but cannot be decoded comes out empty (``Frame.decoded`` False) instead of being skipped. Raises EmocaError:
    input_missing, input_unsupported, input_corrupt, input_empty (nothing in ``frames``).
    """
    frames = FrameRange.parse(frames) if isinstance(frames, str) or frames is None else frames
    path = Path(path)
    files = _sequence_files(path)
    if files is not None:
        if not files:
            if path.is_dir():
                raise EmocaError(
                    "input_empty", f"{path}: the folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            raise EmocaError("input_missing", f"{path}: no file matches the pattern {path.name!r}")
        return _ImageFootage(files, "images", str(path), frames, fps, on_warning, empty_frames)
    if not path.exists():
        raise EmocaError("input_missing", f"{path}: no such file or folder")
    if not path.is_file():
        raise EmocaError("input_unsupported", f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise EmocaError("input_corrupt", f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _ImageFootage([path], "image", str(path), frames, fps, on_warning, empty_frames)
    return _VideoFootage(path, frames, on_warning, empty_frames)


def probe(path: str | os.PathLike) -> FootageInfo:
    """FootageInfo of ``path`` (decodes the first frame to learn the rotation and to check it decodes)."""
    with open_footage(path) as f:
        return f.info
