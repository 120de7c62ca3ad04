"""The capture's front end: decode (PyAV) -> detect + landmark (+ ARKit scores and pose) -> track -> crop, into a
bounded queue.

Each frame becomes one :class:`FrameItem` (row in the take, source frame index, presentation time, one
:class:`FaceObs` per face; none for a frame the footage could not decode); the queue ends with :data:`END`. The
crop is the one recipe of backend.footage.crop.face_crop. :func:`read_items` is the one loop over a clip's frames;
:class:`Reader` runs it in a thread, and stops between frames when any of its stop events is set.

A :class:`FrontEnd` is what the capture pipeline sees of that: the footage's ``info``, the frames skipped
(``n_errors``), the tracks (``summary()``), the detector's kind, and ``start``/``stop``/``close``.
:class:`LocalFrontEnd` runs the reader thread in this process (a single capture, a Ray worker);
backend.capture.workers runs the same loop in a worker process (batch capture, ``--jobs N``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from backend.footage.crop import face_crop, invert

# the end-of-footage marker the reader puts last (after an error too)
END = object()


@dataclass
class FaceObs:
    """One face in one frame, as the reader hands it over."""

    track: int
    crop: np.ndarray  # (224, 224, 3) uint8 RGB
    tform: np.ndarray  # (3, 3) float32 crop pixels -> frame pixels (the take's ``crop``)
    landmarks: np.ndarray  # (K, 2) float32 detector landmarks, frame pixels
    score: float  # the detector's confidence in [0, 1] (backend.footage.detect)
    arkit: np.ndarray | None = None  # (52,) float32 ARKit scores (MediaPipe), None for FAN
    transform: np.ndarray | None = None  # (4, 4) float32 MediaPipe facial transformation matrix (cm), None for FAN


@dataclass
class FrameItem:
    pos: int  # row in the take
    index: int  # source frame index
    time: float  # presentation time, s
    faces: list[FaceObs] = field(default_factory=list)


def process_frame(
    image: np.ndarray, detector: Any, tracker: Any, index: int = 0, time_s: float | None = None
) -> list[FaceObs]:
    """Detect the faces in one (H, W, 3) uint8 frame shown at ``time_s`` seconds (the tracking detector's clock),
    give them track ids, crop each (backend.footage.crop).

    The box comes from the 68-point (sub)set of the landmarks, the rule the networks were trained with.
    """
    detections = detector.detect(image, time_s)
    ids = tracker.update(index, detections)
    faces = []
    for det, tid in zip(detections, ids):
        crop, tform = face_crop(image, det.landmarks68(), "kpt68")
        faces.append(
            FaceObs(
                int(tid),
                crop,
                invert(tform).astype(np.float32),
                np.asarray(det.landmarks, np.float32)[:, :2],
                float(det.score),
                det.arkit,
                det.transform,
            )
        )
    return faces


class Reader(threading.Thread):
    """Decode, detect, track and crop in a thread; FrameItems go into the bounded queue ``out``.

    ``stats`` receives decode_s and detect_crop_s; an exception is kept in ``error`` for the main thread.
    """

    def __init__(
        self,
        footage: Iterable,
        detector: Any,
        tracker: Any,
        out: queue.Queue,
        stops: tuple[threading.Event, ...],
        stats: dict,
    ):
        super().__init__(name="capture-reader", daemon=True)
        self.footage, self.detector, self.tracker = footage, detector, tracker
        self.out, self.stops, self.stats = out, stops, stats
        self.error: BaseException | None = None

    def stopped(self) -> bool:
        return any(e.is_set() for e in self.stops)

    def _put(self, item: object) -> bool:
        while not self.stopped():
            try:
                self.out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            if self.stopped():
                return
            for item in read_items(self.footage, self.detector, self.tracker, self.stats):
                if not self._put(item) or self.stopped():  # stopped: before the next frame is decoded
                    return
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self._put(END)


def read_items(footage: Iterable, detector: Any, tracker: Any, stats: dict) -> Iterator[FrameItem]:
    """The clip's frames as FrameItems, in order (row ``pos`` = 0, 1, ...); ``stats`` gets decode_s and
    detect_crop_s once the footage is read to its end."""
    t_read = t_det = 0.0
    it = iter(footage)
    pos = 0
    while True:
        t0 = time.perf_counter()
        frame = next(it, None)
        if frame is None:
            break
        t1 = time.perf_counter()
        # a frame that could not be decoded keeps its row, without faces (an invalid row of the take)
        faces = process_frame(frame.image, detector, tracker, frame.index, frame.time) if frame.decoded else []
        t_read += t1 - t0
        t_det += time.perf_counter() - t1
        yield FrameItem(pos, frame.index, frame.time, faces)
        pos += 1
    stats.update(decode_s=t_read, detect_crop_s=t_det)


def stop_reader(reader: Reader, q: queue.Queue) -> None:
    """Wait for the reader to end, draining the queue so that a blocked put returns."""
    while reader.is_alive():
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            pass
        reader.join(timeout=0.05)


class FrontEnd(Protocol):
    """What the capture pipeline needs of a clip's front end (decode, detect, track, crop), wherever it runs."""

    info: Any  # backend.footage.video.FootageInfo (fps, width, height, frame_count, kind, rotation, time_base)
    detector_kind: str  # the detector's ``kind``: the take's meta.detector

    @property
    def n_errors(self) -> int:
        """Frames the footage could not decode (so far; final once the queue ended)."""
        ...

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the front end early (raised by the pipeline after END)."""
        ...

    def summary(self) -> list:
        """The tracks seen (backend.footage.track.TrackSummary), final once the queue ended."""
        ...

    def start(self, out: queue.Queue, stops: tuple[threading.Event, ...], stats: dict) -> None:
        """Begin putting FrameItems (then END) into ``out``; stop between frames when any of ``stops`` is set."""
        ...

    def stop(self, out: queue.Queue) -> None:
        """Wait for the front end to end (``out`` drained meanwhile, so that a blocked put returns)."""
        ...

    def close(self) -> None:
        """Release what it holds (footage, detector, worker)."""
        ...


# (input, frames, detector name, warn) -> an opened front end: errors in the footage are raised here, before any
# network runs
FrontEndFactory = Callable[[Any, Any, str, Callable[[str], None]], FrontEnd]


class LocalFrontEnd:
    """The front end in this process: its own detector, footage and tracker, and the :class:`Reader` thread."""

    def __init__(self, input_path: Any, frames: Any, detector: str, warn: Callable[[str], None]):
        from backend.footage.detect import make_detector
        from backend.footage.track import FaceTracker
        from backend.footage.video import open_footage

        self.detector = make_detector(detector)
        try:
            # empty_frames: an image that cannot be decoded still gets its (invalid) row
            self.footage = open_footage(input_path, frames, on_warning=warn, empty_frames=True)
        except BaseException:
            self.detector.close()
            raise
        self.tracker = FaceTracker()
        self.info = self.footage.info
        self.detector_kind: str = self.detector.kind
        self.reader: Reader | None = None

    @property
    def n_errors(self) -> int:
        return int(getattr(self.footage, "n_errors", 0))

    @property
    def error(self) -> BaseException | None:
        return None if self.reader is None else self.reader.error

    def summary(self) -> list:
        return self.tracker.summary()

    def start(self, out: queue.Queue, stops: tuple[threading.Event, ...], stats: dict) -> None:
        self.reader = Reader(self.footage, self.detector, self.tracker, out, stops, stats)
        self.reader.start()

    def stop(self, out: queue.Queue) -> None:
        if self.reader is not None:
            stop_reader(self.reader, out)

    def close(self) -> None:
        self.footage.close()
        self.detector.close()
