"""Face detection and landmarks: mediapipe FaceMesh (offline default, 478 points) or face_alignment's FAN (68).

``Detection.landmarks`` are frame pixels (x = column, y = row; the pixel-index convention of cv2/skimage, where
integer coordinates are pixel centres), float32 (K, 2).

Scores. mediapipe's FaceMesh solution exposes no per-face probability: it only returns faces whose detection
(``min_detection_confidence``) and landmark presence (``min_tracking_confidence``) passed ``min_confidence``.
So a mediapipe detection's ``score`` is 1.0 ("passed the detector's threshold"), stated plainly rather than
invented. FAN detections carry the s3fd box confidence.

MEDIAPIPE_TO_68 / IBUG68_FLIP (mediapipe -> iBUG-68 correspondence) live in backend.flame.landmarks, shared
with the synthetic head's landmark embedding so detected and model landmarks follow one convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.flame.landmarks import IBUG68_FLIP, MEDIAPIPE_TO_68  # noqa: F401  (re-exported)
from backend.paths import torch_hub_checkpoints
from emoca_contract.errors import EmocaError

FAN_FILES = {
    "2DFAN-4": "2DFAN4-11f355bf06.pth.tar",
    "s3fd": "s3fd-619a316812.pth",
}


@dataclass
class Detection:
    """One face in one frame. landmarks: (K, 2) float32 frame pixels (K = 478 mediapipe, 68 FAN)."""

    landmarks: np.ndarray
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) frame pixels: the landmarks' extent
    kind: str  # 'mediapipe' | 'fan'

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


class MediaPipeDetector:
    """mediapipe 0.10.21 FaceMesh (478 points, irises refined). ``tracking=True``: video mode, landmarks of the
    previous frame seed the next one (fast, steady); ``tracking=False``: every image on its own (stills)."""

    kind = "mediapipe"
    n_landmarks = 478

    def __init__(self, max_faces: int = 4, tracking: bool = True, min_confidence: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - pinned in requirements
            raise EmocaError(
                "asset_missing",
                f"mediapipe is not installed ({e})",
                "Install mediapipe==0.10.21 with --no-deps (see requirements/).",
            ) from None
        self.max_faces = int(max_faces)
        self.tracking = bool(tracking)
        self.min_confidence = float(min_confidence)
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not self.tracking,
            max_num_faces=self.max_faces,
            refine_landmarks=True,
            min_detection_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        """image: (H, W, 3) uint8 RGB -> detections, in mediapipe's order."""
        if self._mesh is None:
            raise RuntimeError("MediaPipeDetector is closed")
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        out = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32)
            pts *= np.array([w, h], dtype=np.float32)
            out.append(Detection(pts, 1.0, landmark_box(pts), "mediapipe"))
        return out

    __call__ = detect

    def reset(self) -> None:
        """Forget the tracked faces (start of a new clip)."""
        import mediapipe as mp

        self.close()
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not self.tracking,
            max_num_faces=self.max_faces,
            refine_landmarks=True,
            min_detection_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
        )

    def close(self) -> None:
        mesh, self._mesh = getattr(self, "_mesh", None), None
        if mesh is not None:
            mesh.close()

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fan_checkpoint_dir() -> Path:
    """Where face_alignment looks for its weights: ``$TORCH_HOME/hub/checkpoints`` (torch's own rule)."""
    return torch_hub_checkpoints()


def missing_fan_files() -> list[Path]:
    d = fan_checkpoint_dir()
    return [d / name for name in FAN_FILES.values() if not (d / name).is_file()]


class FanDetector:
    """face_alignment 1.5 (s3fd face boxes + 2DFAN-4, 68 iBUG points), the detector of the official EMOCA demos.
    Needs its weights offline in ``$TORCH_HOME/hub/checkpoints``; raises EmocaError('asset_missing') if not."""

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

    def detect(self, image: np.ndarray) -> list[Detection]:
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
    """'auto' and 'mediapipe' -> MediaPipeDetector; 'fan' -> FanDetector (only when asked for: slow on CPU)."""
    name = (name or "auto").lower()
    if name in ("auto", "mediapipe"):
        return MediaPipeDetector(max_faces=max_faces, tracking=tracking, min_confidence=min_confidence)
    if name == "fan":
        return FanDetector(device=device, min_confidence=min_confidence, max_faces=max_faces)
    raise EmocaError("config_invalid", f"unknown detector {name!r}", "Use 'auto', 'mediapipe' or 'fan'.")
