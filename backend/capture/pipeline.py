"""Capture: footage in, one take file per tracked face out (docs/formats.md#take-file).

Pipeline (streaming, bounded memory)::

    reader thread: decode (PyAV) -> detect + landmark (mediapipe tracking mode) -> track -> crop (224x224)
        |  bounded queue of FrameItem (frame index, PTS time, one FaceObs per face: crop, crop->frame transform,
        v  detector landmarks, confidence)
    main thread: gather crops across frames into batches -> reconstructor (+ emotion) in micro-batches
        -> rows appended to one TakeWriter per track (chunk files on disk)
    finalise: pick the track(s), fill short gaps (flagged), smooth (raw_* kept), write NAME.npz atomically

Track strategy (why one pass): the final choice of 'largest' needs the whole clip, so every track is encoded
and the unselected writers are discarded at finalisation. Against the alternative (a detection pass storing
boxes, then a second decode+crop+encode pass) this decodes once and detects once; its only cost is network time
spent on extra faces in multi-face clips, which the two-pass design would spend on a second decode of every
frame instead. Memory stays bounded either way: frames live only in the bounded queue, rows go to disk every
``chunk_rows`` rows, and a track that appears late costs nothing for the frames before it (TakeWriter.skip).
The only per-frame state kept in memory is (frame index, time): 16 bytes a frame.

Cancelling (``cancel`` event) is checked between frames in the reader and between micro-batches in the main
thread; micro-batches are small on CPU so a cancel lands within a second. Nothing named ``.npz`` is left.
"""

from __future__ import annotations

import concurrent.futures
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from backend import __version__
from backend.take.writer import TakeWriter
from emoca_contract.errors import EmocaError
from emoca_contract.take import SMOOTHED_KEYS, base_meta

Progress = Callable[[int, int, str, float | None, float | None], None]
Warn = Callable[[str], None]

CROP_SIZE = 224
# Channels filled across short gaps (backend.take.smoothing.interpolate_gaps: linear, slerp for rotations).
# Detector outputs (confidence, detected_landmarks) stay zero there: they were not observed.
INTERPOLATED_KEYS = (
    "shape",
    "exp",
    "global_pose",
    "jaw_pose",
    "cam",
    "crop",
    "landmarks",
    "valence",
    "arousal",
    "expression",
    "tex",
    "light",
)
# With --face all, tracks seen in fewer frames than this are dropped (a false detection is not a performer).
ALL_MIN_FRAMES = 3
# CPU forward passes run in slices of this many crops (bounds the work an abandoned pass does after a cancel).
CPU_MICRO_BATCH = 8


@dataclass
class CaptureOptions:
    """Everything that decides a capture (a capture is a pure function of footage, options and assets).

    ``face``: 'largest' (the track with the largest mean face box over the clip), 'all' (one take per track
    seen in at least ALL_MIN_FRAMES frames) or a track number. ``frames``: a FrameRange or "A:B:S".
    ``max_gap``: interior runs of at most this many missing frames are interpolated and flagged (0 = never).
    ``batch_size`` None = 32 on CPU, 128 on CUDA.
    """

    model: str | None = None
    flame: str | None = None
    emotion: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    face: str | int = "largest"
    detector: str = "mediapipe"
    smoothing: Any = None  # backend.take.smoothing.SmoothingOptions; None = its defaults
    frames: Any = None  # FrameRange | str | None
    max_gap: int = 5
    preview: str | None = None
    plot: str | None = None
    detail: bool = False
    queue_frames: int | None = None  # reader look-ahead; None = 2 batches

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptureOptions:
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
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["smoothing"] = _smoothing_meta(self.smoothing)
        d["frames"] = None if self.frames is None else getattr(self.frames, "text", lambda: str(self.frames))()
        return d


def make_smoothing(method: str | None, strength: float | None = None):
    """SmoothingOptions from the command-line words (off|butterworth|one_euro, strength in [0, 1])."""
    from backend.take.smoothing import SmoothingOptions

    kwargs: dict[str, Any] = {}
    if method is not None:
        kwargs["method"] = str(method)
    if strength is not None:
        kwargs["strength"] = float(strength)
    return SmoothingOptions(**kwargs)


def _smoothing_meta(smoothing: Any) -> dict:
    if smoothing is None:
        return {"method": "default"}
    if hasattr(smoothing, "to_meta"):
        return smoothing.to_meta()
    if hasattr(smoothing, "__dataclass_fields__"):
        return {k: v for k, v in asdict(smoothing).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    return {"method": str(smoothing)}


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EmocaError("device_unavailable", "--device cuda was asked for but PyTorch sees no CUDA GPU")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EmocaError("config_invalid", f"device {device!r}: use auto, cpu or cuda")
    return device


def parse_face(face: str | int) -> str | int:
    if isinstance(face, int):
        return face
    text = str(face).strip().lower()
    if text in ("largest", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise EmocaError("config_invalid", f"--face {face!r}: use largest, all or a track number") from None


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


# ---------------------------------------------------------------------------------------------------------------
# the reader thread


@dataclass
class FaceObs:
    """One face in one frame, as the reader hands it over."""

    track: int
    crop: np.ndarray  # (224, 224, 3) uint8 RGB
    tform: np.ndarray  # (3, 3) crop pixels -> frame pixels
    landmarks: np.ndarray  # (K, 2) detector landmarks, frame pixels
    score: float
    size: float  # crop box side in frame pixels (for 'largest')


@dataclass
class FrameItem:
    pos: int  # row in the take
    index: int  # source frame index
    time: float  # presentation time, s
    faces: list[FaceObs] = field(default_factory=list)


_END = object()


class _Reader(threading.Thread):
    """Decode, detect, track and crop in a thread; FrameItems go into a bounded queue."""

    def __init__(self, footage, detector, tracker, out: queue.Queue, stops: tuple[threading.Event, ...], stats: dict):
        super().__init__(name="capture-reader", daemon=True)
        self.footage, self.detector, self.tracker = footage, detector, tracker
        self.out, self.stops, self.stats = out, stops, stats
        self.error: BaseException | None = None

    def stopped(self) -> bool:
        return any(e.is_set() for e in self.stops)

    def _put(self, item) -> bool:
        while not self.stopped():
            try:
                self.out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            t_read = t_det = 0.0
            pos = 0
            it = iter(self.footage)
            while not self.stopped():
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                t1 = time.perf_counter()
                faces = process_frame(frame.image, self.detector, self.tracker, frame.index)
                t_read += t1 - t0
                t_det += time.perf_counter() - t1
                if not self._put(FrameItem(pos, frame.index, frame.time, faces)):
                    return
                pos += 1
            self.stats.update(decode_s=t_read, detect_crop_s=t_det)
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self._put(_END)


def process_frame(image: np.ndarray, detector, tracker, index: int = 0) -> list[FaceObs]:
    """Detect faces in one frame, give them track ids, crop each with the EMOCA recipe (backend.footage.crop).

    The box comes from the 68-point (sub)set of the landmarks, the rule the networks were trained with.
    """
    from backend.footage import crop as C

    detections = detector.detect(image)
    ids = tracker.update(index, detections)
    faces = []
    for det, tid in zip(detections, ids):
        center, size = C.box_from_landmarks(det.landmarks68(), "kpt68")
        tform = C.crop_transform(center, size)  # frame -> crop
        crop = C.warp_crop(image, tform)
        faces.append(
            FaceObs(
                int(tid),
                crop,
                C.invert(tform).astype(np.float32),
                np.asarray(det.landmarks, np.float32)[:, :2],
                float(det.score),
                float(size),
            )
        )
    return faces


# ---------------------------------------------------------------------------------------------------------------
# networks


@dataclass
class Networks:
    """The reconstructor and emotion model, plus how to call them on a batch of crops."""

    recon: Any
    emotion: Any
    device: str
    micro_batch: int
    detail: bool = False

    def run(self, crops: np.ndarray, cancel: threading.Event | None = None) -> dict[str, np.ndarray]:
        """crops (B, 224, 224, 3) uint8 RGB -> per-crop rows (numpy, float32), in micro-batches.

        The networks take (B, 3, 224, 224) float32 in [0, 1] (emoca.md 4.1.4: no mean/std); the reconstructor
        applies bf16 autocast and channels_last on CUDA itself. With ``cancel``, each micro-batch runs in a
        worker thread while this one watches the event: a cancel returns at once (the abandoned forward pass
        finishes in the background; its result is dropped), however slow one micro-batch is."""
        outs: list[dict[str, np.ndarray]] = []
        for a in range(0, len(crops), self.micro_batch):
            chunk = crops[a : a + self.micro_batch]
            if cancel is None:
                outs.append(self._forward(chunk))
                continue
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
            fut = _executor().submit(self._forward, chunk)
            while True:
                try:
                    outs.append(fut.result(timeout=0.05))
                    break
                except concurrent.futures.TimeoutError:
                    if cancel.is_set():
                        raise EmocaError("cancelled", "capture cancelled") from None
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def _forward(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        x = self.recon.to_tensor(crops)
        with torch.inference_mode():
            rec = self.recon.reconstruct(x, as_numpy=False, detail=self.detail)
            emo = self.emotion.predict(x, codes=rec) if self.emotion is not None else None
        return rows_from_outputs(rec, emo)


_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """One network thread per process: an abandoned (cancelled) pass delays the next job, never runs beside it."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-net")
    return _EXECUTOR


def _np(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.asarray(t, np.float32)


def rows_from_outputs(rec: dict, emo: dict | None) -> dict[str, np.ndarray]:
    """Network outputs -> take columns in crop space (landmarks still normalised crop coords, see _to_frame)."""
    pose = _np(rec["pose"])
    rows = {
        "shape": _np(rec["shape"]),
        "exp": _np(rec["exp"]),
        "global_pose": pose[:, :3],
        "jaw_pose": pose[:, 3:6],
        "cam": _np(rec["cam"]),
        # no landmark embedding installed: NaN here, zeros in the take (never invented)
        "landmarks_norm": (
            _np(rec["landmarks2d"])[:, :, :2]
            if rec.get("landmarks2d") is not None
            else np.full((len(pose), 68, 2), np.nan, np.float32)
        ),
    }
    for k in ("tex", "light", "detail"):
        if k in rec and rec[k] is not None:
            rows[k] = _np(rec[k]).reshape(len(pose), -1)
    if emo is not None:
        rows["valence"] = _np(emo["valence"]).reshape(-1)
        rows["arousal"] = _np(emo["arousal"]).reshape(-1)
        rows["expression"] = _np(emo["expression"])
    return rows


def landmarks_to_frame(lmk_norm: np.ndarray, tform: np.ndarray) -> np.ndarray:
    """(B, 68, 2) normalised crop coords -> (B, 68, 2) frame pixels: u = (x + 1) * 224 / 2, then ``crop @ [u,v,1]``."""
    uv = (lmk_norm + 1.0) * (CROP_SIZE / 2.0)
    hom = np.concatenate([uv, np.ones_like(uv[..., :1])], -1)
    out = np.einsum("bij,bkj->bki", tform, hom)
    return np.nan_to_num((out[..., :2] / out[..., 2:3]).astype(np.float32), nan=0.0)


def load_networks(options: CaptureOptions, device: str, warn: Warn) -> tuple[Networks, dict, dict, list[str]]:
    """Load the reconstructor and the best installed emotion network; returns (nets, model meta, emotion meta,
    fallbacks)."""
    from backend.assets import resolve_capture, resolve_emotion
    from backend.models.emotion import load_emotion_model
    from backend.models.reconstructor import FaceReconstructor

    fallbacks: list[str] = []
    found = resolve_capture(options.model, options.flame)
    recon = FaceReconstructor.from_paths(
        found.model, found.flame, device=device, landmarks=found.landmarks, mediapipe=found.mediapipe
    )
    info = recon.info
    info_d = info if isinstance(info, dict) else (asdict(info) if hasattr(info, "__dataclass_fields__") else vars(info))
    model_meta = {
        "name": str(info_d.get("name")),
        "trained": bool(info_d.get("trained")),
        "flame": str(info_d.get("flame")),
        "device": device,
    }
    notes = [str(m) for m in (info_d.get("warnings") or [])]
    fallbacks.extend(notes)
    if not model_meta["trained"] and not any("untrained" in m.lower() for m in notes):
        fallbacks.append(f"untrained network ({model_meta['name']}): the expressions are not meaningful")
    if ("not FLAME" in model_meta["flame"] or "synthetic" in model_meta["flame"].lower()) and not any(
        "not FLAME" in m for m in notes
    ):
        fallbacks.append(f"head model: {model_meta['flame']}")
    emotion_path = options.emotion if options.emotion is not None else resolve_emotion(model_meta["trained"])
    emotion = load_emotion_model(emotion_path, device=device)
    emo_meta = {"model": str(emotion.name), "classes": list(emotion.classes), "valence_arousal": str(emotion.va_source)}
    if "estimated" in emo_meta["valence_arousal"] or "circumplex" in emo_meta["valence_arousal"]:
        fallbacks.append(f"emotion: {emo_meta['model']} (valence/arousal {emo_meta['valence_arousal']})")
    for msg in fallbacks:
        warn(msg)
    micro = CPU_MICRO_BATCH if device == "cpu" else max(1, options.batch_size or 128)
    return Networks(recon, emotion, device, micro, bool(options.detail)), model_meta, emo_meta, fallbacks


class _Loader(threading.Thread):
    """load_networks in a thread; ``wait(cancel)`` returns its result or raises its error / 'cancelled'."""

    def __init__(self, options: CaptureOptions, device: str, warn: Warn, preloaded=None):
        super().__init__(name="capture-loader", daemon=True)
        self.args = (options, device, warn)
        self.result = preloaded
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.done = threading.Event()
        if preloaded is not None:
            self.done.set()

    def start(self) -> None:
        if not self.done.is_set():
            super().start()

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.result = load_networks(*self.args)
        except BaseException as exc:
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0
            self.done.set()

    def wait(self, cancel: threading.Event):
        while not self.done.wait(0.05):
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
        if self.error is not None:
            raise self.error
        return self.result


# ---------------------------------------------------------------------------------------------------------------
# progress


class _ProgressMeter:
    def __init__(self, cb: Progress | None, total: int, min_interval: float = 0.2):
        self.cb, self.total, self.min_interval = cb, max(int(total), 0), min_interval
        self.t0 = time.perf_counter()
        self.last = -1e9

    def __call__(self, done: int, stage: str, force: bool = False) -> None:
        if self.cb is None:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.min_interval:
            return
        self.last = now
        el = now - self.t0
        fps = done / el if el > 0 and done else None
        total = max(self.total, done)
        eta = (total - done) / fps if fps else None
        self.cb(done, total, stage, fps, eta)


# ---------------------------------------------------------------------------------------------------------------
# the track bookkeeping


@dataclass
class _Track:
    writer: TakeWriter
    frames: int = 0


def _select(tracker, tracks: dict[int, _Track], face: str | int, path: str) -> list[int]:
    """Track ids to write (backend.footage.track.select_tracks on the tracker's summary)."""
    from backend.footage.track import select_tracks

    summary = [t for t in tracker.summary() if t.id in tracks]
    if not summary:
        raise EmocaError("no_face", f"{path}: no face was found in any frame of the chosen range")
    try:
        return select_tracks(summary, face, min_frames=ALL_MIN_FRAMES)
    except EmocaError as exc:
        raise EmocaError(exc.code, f"{path}: {exc.message}", exc.hint) from None


def _warn_other_faces(tracker, tracks: dict[int, _Track], selected: list[int], warn: Warn) -> None:
    """Several faces in the footage and 'largest' chosen: say which one was kept and how to get the others."""
    seen = [t for t in tracker.summary() if t.id in tracks and t.n_frames >= ALL_MIN_FRAMES]
    if len(seen) > 1:
        kept = next(t for t in seen if t.id in selected)
        warn(
            f"{len(seen)} faces were tracked; captured the largest (track {kept.id}, seen in {kept.n_frames} "
            f"frames). Use face 'all' for one take per face, or a track number for another one."
        )


# ---------------------------------------------------------------------------------------------------------------
# capture


def capture(
    input: str | Path,
    output: str | Path,
    options: CaptureOptions | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    warn: Warn | None = None,
    stats: dict | None = None,
    networks: tuple[Networks, dict, dict, list[str]] | None = None,
) -> list[Path]:
    """Capture ``input`` into take file(s) at ``output``; return the paths written.

    ``progress(done, total, stage, fps, eta)`` is called at most ~5 times a second; ``warn(message)`` gets
    fallbacks and skipped frames; ``cancel`` stops the run (EmocaError 'cancelled', nothing written).
    ``stats`` (optional dict) receives timings (seconds per stage, frames, faces). ``networks``: the result of
    :func:`load_networks`, to reuse loaded networks across clips (batch capture, benchmarks).
    Errors: EmocaError input_* (footage), no_face, face_not_found, cancelled, asset_* (models).
    """
    from backend.footage.detect import make_detector
    from backend.footage.track import FaceTracker
    from backend.footage.video import FrameRange, open_footage

    options = options or CaptureOptions()
    cancel = cancel or threading.Event()
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn is not None:
            warn(msg)

    stats = stats if stats is not None else {}
    face = parse_face(options.face)
    device = resolve_device(options.device)
    batch = int(options.batch_size or (128 if device.startswith("cuda") else 32))
    if batch < 1:
        raise EmocaError("config_invalid", f"batch size {batch}: must be >= 1")
    frames = options.frames
    if frames is None or isinstance(frames, str):
        frames = FrameRange.parse(frames)
    elif isinstance(frames, (list, tuple)):
        frames = FrameRange(*frames)
    input_path = Path(input)
    t_start = time.perf_counter()

    smoothing = options.smoothing if options.smoothing is not None else make_smoothing(None)
    detector = make_detector(options.detector)
    try:
        footage = open_footage(input_path, frames, on_warning=_warn)
    except BaseException:
        detector.close()
        raise
    info = footage.info
    tracker = FaceTracker()
    total = _expected_rows(info.frame_count, frames)
    meter = _ProgressMeter(progress, total)
    meter(0, "decode", force=True)

    q: queue.Queue = queue.Queue(maxsize=max(2, options.queue_frames or 2 * batch))
    stop = threading.Event()  # ours: stops the reader on errors without touching the caller's event
    reader = _Reader(footage, detector, tracker, q, (cancel, stop), stats)
    tracks: dict[int, _Track] = {}
    index_col: list[int] = []
    time_col: list[float] = []
    parts_root = (
        Path(output) if (Path(output).is_dir() or Path(output).suffix.lower() != ".npz") else Path(output).parent
    )
    parts_root.mkdir(parents=True, exist_ok=True)
    stem = Path(output).stem if Path(output).suffix.lower() == ".npz" else input_path.stem
    pending: list[tuple[int, FaceObs]] = []  # (row, face) waiting for the network
    # Networks load in a thread while the reader decodes and detects (a clip without faces fails without
    # waiting for them; a cancel during the load is seen at once).
    loader = _Loader(options, device, warn or (lambda m: None), networks)
    nets: Networks | None = None
    model_meta: dict = {}
    emo_meta: dict = {}
    fallbacks: list[str] = []
    t_net = 0.0
    n_faces = 0
    done_rows = 0
    written: list[Path] = []

    def run_batch() -> None:
        nonlocal t_net, n_faces, done_rows, nets, model_meta, emo_meta, fallbacks
        if not pending:
            return
        if nets is None:
            nets, model_meta, emo_meta, fallbacks = loader.wait(cancel)
            stats["load_s"] = loader.seconds
        crops = np.stack([f.crop for _, f in pending])
        t0 = time.perf_counter()
        out = nets.run(crops, cancel)
        t_net += time.perf_counter() - t0
        tforms = np.stack([f.tform for _, f in pending])
        out["landmarks"] = landmarks_to_frame(out.pop("landmarks_norm"), tforms)
        for i, (row, f) in enumerate(pending):
            tr = tracks.get(f.track)
            if tr is None:
                tr = tracks[f.track] = _Track(TakeWriter(parts_root / f"{stem}.track{f.track}.npz"))
            tr.frames += 1
            tr.writer.skip(row - tr.writer.n_rows)
            r = {k: v[i] for k, v in out.items()}
            r.update(
                valid=True,
                interpolated=False,
                confidence=np.float32(f.score),
                crop=f.tform,
                detected_landmarks=f.landmarks,
            )
            tr.writer.append(r)
        n_faces += len(pending)
        done_rows = pending[-1][0] + 1
        pending.clear()

    reader.start()
    loader.start()
    try:
        while True:
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                break
            index_col.append(item.index)
            time_col.append(item.time)
            pending.extend((item.pos, f) for f in item.faces)
            if len(pending) >= batch:
                run_batch()
                meter(done_rows, "encode")
            elif not item.faces:
                done_rows = item.pos + 1
        if reader.error is not None:
            raise reader.error
        if cancel.is_set():
            raise EmocaError("cancelled", "capture cancelled")
        run_batch()
        n_rows = len(index_col)
        meter(n_rows, "encode", force=True)
        selected = _select(tracker, tracks, face, str(input_path))
        if face == "largest":
            _warn_other_faces(tracker, tracks, selected, _warn)
        paths = output_paths(output, input_path, selected, face)
        stats.update(frames=n_rows, faces=n_faces, network_s=t_net, tracks=len(tracks))
        meter.total = n_rows
        source = {
            "path": str(input_path),
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "frame_count": info.frame_count,
            "rotation": info.rotation,
            "frames": frames.as_list(),
            "kind": info.kind,
            "time_base": info.time_base,
            "skipped_frames": getattr(footage, "n_errors", 0),
        }
        for tid, path in zip(selected, paths):
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
            meter(n_rows, "write", force=True)
            tr = tracks[tid]
            meta = base_meta(
                source=source,
                track={"id": tid, "selection": face, "n_tracks": len(tracks), "frames_seen": tr.frames},
                model=model_meta,
                emotion=emo_meta,
                smoothing=_smoothing_meta(smoothing),
                gaps={"max_interpolated": int(options.max_gap)},
                fallbacks=list(fallbacks),
                warnings=warnings[:50],
                backend_version=__version__,
                detector=getattr(detector, "kind", options.detector),
            )
            written.append(
                _finalize_track(
                    tr.writer,
                    path,
                    meta,
                    np.asarray(index_col, np.int64),
                    np.asarray(time_col, np.float64),
                    smoothing,
                    int(options.max_gap),
                    info.fps,
                )
            )
        for tid, tr in tracks.items():
            if tid not in selected:
                tr.writer.abort()
        stats["total_s"] = time.perf_counter() - t_start
        _write_extras(written, input_path, options, meter, n_rows, cancel, _warn)
        meter(n_rows, "done", force=True)
        return written
    except BaseException:
        stop.set()
        _stop_reader(reader, q)
        for tr in tracks.values():
            tr.writer.abort()
        for p in written:  # cancelled or failed after some takes were final (e.g. during the preview)
            p.unlink(missing_ok=True)
        raise
    finally:
        stop.set()
        _stop_reader(reader, q)
        footage.close()
        if loader.is_alive() and not cancel.is_set():
            # an early error (no face, bad footage) must not leave torch loading in a thread while the
            # interpreter exits (C++ aborts); a cancel returns at once and lets it finish in the background
            loader.join()
        close = getattr(detector, "close", None)
        if close is not None:
            close()


def _stop_reader(reader: _Reader, q: queue.Queue) -> None:
    while reader.is_alive():
        try:
            q.get(timeout=0.05)  # unblock a put
        except queue.Empty:
            pass
        reader.join(timeout=0.05)


def _expected_rows(frame_count: int, frames) -> int:
    stop = frame_count if frames.stop is None else min(frames.stop, frame_count or frames.stop)
    return max(0, math.ceil((stop - frames.start) / frames.step))


def _finalize_track(
    writer: TakeWriter,
    path: Path,
    meta: dict,
    index: np.ndarray,
    times: np.ndarray,
    smoothing,
    max_gap: int,
    fps: float,
) -> Path:
    """Fill short gaps (flagged), smooth, write the take atomically; raw_* = the unsmoothed (gap-filled) values.

    Only the small per-frame channels are loaded whole here; detector landmarks stream from the chunk files.
    """
    from backend.take.smoothing import interpolate_gaps, smooth_channels

    n = len(index)
    writer.skip(n - writer.n_rows)
    valid = writer.column("valid")
    keys = [k for k in INTERPOLATED_KEYS if k in writer.keys()]
    cols, fill = interpolate_gaps({k: writer.column(k) for k in keys}, valid, max_gap)
    cols.update(frame=index, time=times, valid=valid | fill, interpolated=fill)
    raw = {k: cols[k] for k in SMOOTHED_KEYS}
    smoothed = smooth_channels(raw, cols["valid"], fps, smoothing, times=times)
    for k in SMOOTHED_KEYS:
        cols["raw_" + k] = raw[k]
        cols[k] = smoothed[k]
    meta["gaps"]["interpolated_frames"] = int(fill.sum())
    return writer.finalize(meta, cols, path=path)


def _write_extras(
    paths: list[Path],
    input_path: Path,
    options: CaptureOptions,
    meter,
    n_rows: int,
    cancel: threading.Event,
    warn: Warn,
) -> None:
    """--preview / --plot for the first take (they read the finished file: what the add-on will see)."""
    if not paths or not (options.preview or options.plot):
        return
    from backend.take import preview as visualize
    from emoca_contract.take import read_take

    take = read_take(paths[0])
    jobs = []
    if options.plot:
        jobs.append(("plot", lambda: visualize.plot_emotion(take, options.plot)))
    if options.preview:
        jobs.append(
            (
                "preview",
                lambda: visualize.write_preview(
                    take,
                    input_path,
                    options.preview,
                    flame=options.flame,
                    cancel=cancel,
                    progress=lambda d: meter(d, "preview"),
                ),
            )
        )
    for stage, job in jobs:
        meter(0 if stage == "preview" else n_rows, stage, force=True)
        try:
            job()
        except EmocaError as exc:
            if exc.code == "cancelled":
                raise
            warn(f"the {stage} was not written: {exc.message}")  # the takes are fine: keep them
        except Exception as exc:
            warn(f"the {stage} was not written: {type(exc).__name__}: {exc}")


def summary(paths: list[Path]) -> dict:
    """What the result event / CLI prints about the written takes."""
    from emoca_contract.take import read_take

    out = []
    for p in paths:
        t = read_take(p)
        out.append(
            {
                "path": str(p),
                "frames": t.n_frames,
                "valid": int(t["valid"].sum()),
                "track": t.meta.get("track", {}).get("id"),
            }
        )
    return {"takes": out}
