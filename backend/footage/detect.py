"""Face detection and landmarks: MediaPipe's Face Landmarker (offline default: 478 points, the 52 ARKit blendshape
scores and the face's pose) or face_alignment's FAN (68 points, when its weights are installed).

``Detection.landmarks`` are frame pixels (x = column, y = row; the pixel-index convention of cv2/skimage, where
integer coordinates are pixel centres), float32 (K, 2).

The Face Landmarker runs the vendored bundle ``backend/vendor/mediapipe/face_landmarker_v2_with_blendshapes.task``
(:func:`landmarker_bundle`; Apache-2.0, its LICENSE beside it): a face detector, FaceMesh-V2 (478 landmarks with
irises) and the blendshape model. Footage runs in VIDEO mode (``tracking=True``: the landmarks of one frame seed
the next; timestamps are the frames' presentation times in milliseconds, strictly increasing), stills in IMAGE
mode (``tracking=False``: every image on its own).

Scores. The landmarker's Python result carries no per-face probability, so a MediaPipe detection's ``score`` is
measured on the same frame by the bundle's own face detector (``face_detector.tflite``, BlazeFace short range)
run as ``vision.FaceDetector``: the probability it gives the box that best overlaps the face's landmark box
(IoU >= :data:`MATCH_IOU`), or 0.0 when it sees no face there above :data:`SCORE_FLOOR` while the landmarker
still tracks one (a strongly turned or occluded face). Of two landmarker faces that are one face (a stale track
beside a fresh detection after a fast move, :data:`DUPLICATE_IOU`) the better scored is kept. FAN detections
carry the s3fd box confidence.

ARKit scores (``Detection.arkit``, (52,) float32 in ``emoca_contract.arkit.ARKIT_NAMES`` order): MediaPipe's
blendshape scores by name, its ``_neutral`` dropped; ``tongueOut`` is never estimated (0, listed in
:data:`UNOBSERVED_ARKIT`). ``Detection.transform`` is MediaPipe's 4x4 facial transformation matrix (canonical face
model -> its metric camera space, centimetres; backend.capture.open turns it into the take's pose).

MEDIAPIPE_TO_68 / IBUG68_FLIP (mediapipe -> iBUG-68 correspondence) live in backend.flame.landmarks, shared
with the synthetic head's landmark embedding so detected and model landmarks follow one convention.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.flame.landmarks import IBUG68_FLIP, MEDIAPIPE_TO_68  # noqa: F401  (re-exported)
from backend.footage.track import box_iou
from backend.paths import torch_hub_checkpoints
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError

FAN_FILES = {
    "2DFAN-4": "2DFAN4-11f355bf06.pth.tar",
    "s3fd": "s3fd-619a316812.pth",
}
BUNDLE_NAME = "face_landmarker_v2_with_blendshapes.task"
VENDOR_DIR = Path(__file__).resolve().parents[1] / "vendor" / "mediapipe"  # the bundle and its LICENSE
BUNDLE_DETECTOR = "face_detector.tflite"  # the bundle's face detector, run on its own for the scores
# The detector's boxes down to this probability are kept for scoring (the landmarker's own threshold stays
# ``min_confidence``): a tracked face the detector barely sees gets its low score, not 0.
SCORE_FLOOR = 0.05
# A detector box belongs to a face when it overlaps the face's landmark box at least this much (the detector's
# box spans brows to chin, the landmarks' forehead to chin and ear to ear: a frontal face overlaps about 0.6).
MATCH_IOU = 0.25
# Two landmarker faces whose landmark boxes overlap this much are one face: in VIDEO mode, after a fast move, the
# landmarker can keep the stale tracked face beside the freshly detected one (seen at IoU 0.76); the one the
# detector confirms (the higher score) is kept.
DUPLICATE_IOU = 0.5
# ARKit channels MediaPipe's blendshape model never estimates (held at 0 in every take).
UNOBSERVED_ARKIT: tuple[str, ...] = ("tongueOut",)
# The vertical field of view of the perspective camera MediaPipe's face geometry assumes (its default
# environment): the pose in ``Detection.transform`` is metric under this camera.
CAMERA_VFOV_DEG = 63.0
ARKIT_SOURCE = "MediaPipe Face Landmarker v2 blendshapes (face_landmarker_v2_with_blendshapes.task)"


@dataclass
class Detection:
    """One face in one frame. landmarks: (K, 2) float32 frame pixels (K = 478 mediapipe, 68 FAN).

    ``arkit`` (52,) float32 ARKit scores in ARKIT_NAMES order and ``transform`` (4, 4) float32 MediaPipe's facial
    transformation matrix (cm): the Face Landmarker's, None for FAN."""

    landmarks: np.ndarray
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) frame pixels: the landmarks' extent
    kind: str  # 'mediapipe' | 'fan'
    arkit: np.ndarray | None = None
    transform: np.ndarray | None = None

    def landmarks68(self) -> np.ndarray:
        """(68, 2) iBUG-68-style points (exact for FAN, MEDIAPIPE_TO_68 for mediapipe)."""
        if self.kind == "mediapipe":
            return self.landmarks[MEDIAPIPE_TO_68]
        return self.landmarks

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float64)


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# ---------------------------------------------------------------------------------------------------------------
# MediaPipe Face Landmarker


def landmarker_bundle(folder: Path = VENDOR_DIR) -> Path:
    """The vendored Face Landmarker bundle; EmocaError('asset_missing') naming the path when it is absent."""
    path = Path(folder) / BUNDLE_NAME
    if not path.is_file():
        raise EmocaError(
            "asset_missing",
            f"the MediaPipe Face Landmarker bundle is missing: {path}",
            "It ships with the project (backend/vendor/mediapipe/); restore it from the repository or the release.",
        )
    return path


def bundle_member(bundle: Path, name: str) -> bytes:
    """One model file of the bundle (a zip of .tflite files)."""
    try:
        with zipfile.ZipFile(bundle) as z:
            return z.read(name)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise EmocaError("asset_invalid", f"{bundle}: no readable {name} in the bundle ({exc})") from None


def arkit_scores(categories: list[Any]) -> np.ndarray:
    """MediaPipe blendshape categories (``category_name``, ``score``) -> (52,) float32 in ARKIT_NAMES order;
    ``_neutral`` dropped, channels it does not report (tongueOut) 0."""
    out = np.zeros(len(ARKIT_NAMES), np.float32)
    for c in categories:
        i = ARKIT_INDEX.get(c.category_name)
        if i is not None:
            out[i] = c.score
    return out


def match_scores(boxes: np.ndarray, detector_boxes: np.ndarray, detector_scores: np.ndarray) -> np.ndarray:
    """(F, 4) face landmark boxes, (D, 4) detector boxes and (D,) scores -> (F,) the score of each face's detector
    box: greedy by IoU (each detector box serves one face), 0 where none overlaps by MATCH_IOU."""
    out = np.zeros(len(boxes), np.float32)
    if not len(boxes) or not len(detector_boxes):
        return out
    iou = box_iou(boxes, detector_boxes)
    for _ in range(min(iou.shape)):
        f, d = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[f, d] < MATCH_IOU:
            break
        out[f] = detector_scores[d]
        iou[f, :] = -1.0
        iou[:, d] = -1.0
    return out


def distinct_faces(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """Indices of the faces to keep, in their order: of faces overlapping by DUPLICATE_IOU or more (landmark boxes
    (F, 4)), only the best scored (the first on ties)."""
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i)):
        if all(iou[i, j] < DUPLICATE_IOU for j in keep):
            keep.append(i)
    return sorted(keep)


def _detector_boxes(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """vision.FaceDetector result -> ((D, 4) boxes x0, y0, x1, y1 frame pixels, (D,) scores)."""
    boxes, scores = [], []
    for d in result.detections:
        b = d.bounding_box
        boxes.append((b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height))
        scores.append(d.categories[0].score if d.categories else 0.0)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float32)


# What MediaPipe's native code prints on the process's stderr when a graph starts: glog INFO/WARNING lines
# ("I0000 00:00:..." / "W0000 ..."), TF Lite's delegate notice and absl's preamble. Users read them as errors.
NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:|INFO: Created TensorFlow Lite|WARNING: All log messages before absl)"
)


def keep_native_lines(text: str) -> str:
    """What of MediaPipe's native stderr output is worth showing: every line but the start-up noise."""
    return "".join(line for line in text.splitlines(keepends=True) if not NATIVE_NOISE.match(line))


@contextlib.contextmanager
def quiet_native_start() -> Iterator[None]:
    """Run a MediaPipe graph's creation with the process's stderr (fd 2: native code writes there directly,
    not through ``sys.stderr``) caught, then pass on every line but the start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = keep_native_lines(caught.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class MediaPipeDetector:
    """MediaPipe's Face Landmarker (478 points, ARKit scores, pose) with a measured per-face score (module doc).

    ``tracking=True``: VIDEO mode, landmarks of the previous frame seed the next one (fast, steady): give
    ``detect`` the frame's time. ``tracking=False``: IMAGE mode, every image on its own (stills)."""

    kind = "mediapipe"
    n_landmarks = 478

    def __init__(self, max_faces: int = 4, tracking: bool = True, min_confidence: float = 0.5):
        self.max_faces = int(max_faces)
        self.tracking = bool(tracking)
        self.min_confidence = float(min_confidence)
        self.bundle = landmarker_bundle()
        self._detector_model = bundle_member(self.bundle, BUNDLE_DETECTOR)
        self._landmarker: Any = None
        self._detector: Any = None
        self._last_ms = -1
        self.reset()

    def _open(self) -> tuple[Any, Any]:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        mode = vision.RunningMode.VIDEO if self.tracking else vision.RunningMode.IMAGE
        with quiet_native_start():
            return self._create(vision, BaseOptions, mode)

    def _create(self, vision: Any, BaseOptions: Any, mode: Any) -> tuple[Any, Any]:  # noqa: N803  (MediaPipe's class)
        landmarker = vision.FaceLandmarker.create_from_options(
            vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(self.bundle)),
                running_mode=mode,
                num_faces=self.max_faces,
                min_face_detection_confidence=self.min_confidence,
                min_face_presence_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
        )
        detector = vision.FaceDetector.create_from_options(
            vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=self._detector_model),
                running_mode=mode,
                min_detection_confidence=SCORE_FLOOR,
            )
        )
        return landmarker, detector

    def _timestamp(self, time_s: float | None) -> int:
        """VIDEO mode's strictly increasing millisecond timestamp for a frame at ``time_s`` (None: 1/30 s on)."""
        ms = self._last_ms + 33 if time_s is None else int(round(float(time_s) * 1000.0))
        self._last_ms = max(ms, self._last_ms + 1)
        return self._last_ms

    def detect(self, image: np.ndarray, time_s: float | None = None) -> list[Detection]:
        """image: (H, W, 3) uint8 RGB (``time_s``: its presentation time, for VIDEO mode) -> detections, in
        MediaPipe's order."""
        import mediapipe as mp

        if self._landmarker is None:
            raise RuntimeError("MediaPipeDetector is closed")
        h, w = image.shape[:2]
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        if self.tracking:
            ms = self._timestamp(time_s)
            faces = self._landmarker.detect_for_video(frame, ms)
            found = self._detector.detect_for_video(frame, ms)
        else:
            faces = self._landmarker.detect(frame)
            found = self._detector.detect(frame)
        points = [
            np.array([(p.x, p.y) for p in face], np.float32) * np.array([w, h], np.float32)
            for face in faces.face_landmarks
        ]
        boxes = [landmark_box(p) for p in points]
        box_array = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = match_scores(box_array, *_detector_boxes(found))
        return [
            Detection(
                pts,
                float(scores[i]),
                boxes[i],
                "mediapipe",
                arkit=arkit_scores(faces.face_blendshapes[i]),
                transform=np.asarray(faces.facial_transformation_matrixes[i], np.float32).reshape(4, 4),
            )
            for i, pts in ((i, points[i]) for i in distinct_faces(box_array, scores))
        ]

    __call__ = detect

    def reset(self) -> None:
        """Forget the tracked faces and the timestamps (start of a new clip)."""
        self.close()
        self._landmarker, self._detector = self._open()
        self._last_ms = -1

    def close(self) -> None:
        for task in (self._landmarker, self._detector):
            if task is not None:
                task.close()
        self._landmarker = self._detector = None

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------------
# FAN


def fan_checkpoint_dir() -> Path:
    """Where face_alignment looks for its weights: ``$TORCH_HOME/hub/checkpoints`` (torch's own rule)."""
    return torch_hub_checkpoints()


def missing_fan_files() -> list[Path]:
    d = fan_checkpoint_dir()
    return [d / name for name in FAN_FILES.values() if not (d / name).is_file()]


class FanDetector:
    """face_alignment 1.5 (s3fd face boxes + 2DFAN-4, 68 iBUG points), the detector of the official EMOCA demos.
    Needs its weights offline in ``$TORCH_HOME/hub/checkpoints``; raises EmocaError('asset_missing') if not.
    Gives landmarks only (no ARKit scores, no pose): the open model needs the MediaPipe detector."""

    kind = "fan"
    n_landmarks = 68

    def __init__(self, device: str = "cpu", min_confidence: float = 0.5, max_faces: int = 4):
        missing = missing_fan_files()
        if missing:
            raise EmocaError(
                "asset_missing",
                "FAN landmark detector weights are missing: " + ", ".join(str(p) for p in missing),
                f"Place {', '.join(FAN_FILES.values())} (face_alignment's 2DFAN-4 and s3fd weights) in "
                f"{fan_checkpoint_dir()} (set TORCH_HOME to move it), or use the mediapipe detector.",
            )
        import face_alignment

        self.max_faces = int(max_faces)
        self.min_confidence = float(min_confidence)
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            flip_input=False,
            face_detector="sfd",
            face_detector_kwargs={"filter_threshold": self.min_confidence},
            verbose=False,
            compile=False,
        )

    def detect(self, image: np.ndarray, time_s: float | None = None) -> list[Detection]:
        """image: (H, W, 3) uint8 RGB -> detections, most confident first (``time_s`` unused: every frame alone)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "No faces were detected."
            lmks, _, boxes = self._fa.get_landmarks_from_image(image, return_bboxes=True, return_landmark_score=True)
        if lmks is None:
            return []
        out = []
        for pts, box in zip(lmks, boxes):
            pts = np.asarray(pts, np.float32)[:, :2]
            score = float(box[4]) if len(box) > 4 else 1.0
            out.append(Detection(pts, score, landmark_box(pts), "fan"))
        out.sort(key=lambda d: -d.score)
        return out[: self.max_faces]

    __call__ = detect

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._fa = None

    def __enter__(self) -> FanDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_detector(
    name: str = "auto", max_faces: int = 4, tracking: bool = True, min_confidence: float = 0.5, device: str = "cpu"
) -> MediaPipeDetector | FanDetector:
    """'auto' and 'mediapipe' -> MediaPipeDetector (the Face Landmarker); 'fan' -> FanDetector (only when asked
    for: slow on CPU)."""
    name = (name or "auto").lower()
    if name in ("auto", "mediapipe"):
        return MediaPipeDetector(max_faces=max_faces, tracking=tracking, min_confidence=min_confidence)
    if name == "fan":
        return FanDetector(device=device, min_confidence=min_confidence, max_faces=max_faces)
    raise EmocaError("config_invalid", f"unknown detector {name!r}", "Use 'auto', 'mediapipe' or 'fan'.")
