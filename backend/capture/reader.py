"""The capture's reader thread: decode (PyAV) -> detect + landmark (+ ARKit scores and pose) -> track -> crop,
into a bounded queue.

Each frame becomes one :class:`FrameItem` (row in the take, source frame index, presentation time, one
:class:`FaceObs` per face); the queue ends with :data:`END`. The crop is the one recipe of
backend.footage.crop.face_crop. The reader stops between frames when any of its stop events is set.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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
            t_read = t_det = 0.0
            pos = 0
            it = iter(self.footage)
            while not self.stopped():
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                t1 = time.perf_counter()
                faces = process_frame(frame.image, self.detector, self.tracker, frame.index, frame.time)
                t_read += t1 - t0
                t_det += time.perf_counter() - t1
                if not self._put(FrameItem(pos, frame.index, frame.time, faces)):
                    return
                pos += 1
            self.stats.update(decode_s=t_read, detect_crop_s=t_det)
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self._put(END)


def stop_reader(reader: Reader, q: queue.Queue) -> None:
    """Wait for the reader to end, draining the queue so that a blocked put returns."""
    while reader.is_alive():
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            pass
        reader.join(timeout=0.05)
