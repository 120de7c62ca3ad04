"""Face tracks: stable ids for the faces of a clip, and which tracks to capture.

Association per frame (Hungarian, scipy.optimize.linear_sum_assignment) between the live tracks' *predicted*
boxes (constant velocity since their last sighting) and the new detections, on the cost
``(1 - IoU) + center_weight * |centre difference| / predicted box size``. Pairs over ``max_cost`` stay unmatched:
unmatched detections start new tracks, a track unseen for more than ``max_age`` frames ends. Predicting with
the velocity is what keeps two faces that cross (and briefly overlap) on their own ids: at the crossing the
boxes overlap both ways, but each track's prediction is still nearer its own face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emoca_contract.errors import EmocaError


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) against (M, 4) boxes (x0, y0, x1, y1) -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class TrackSummary:
    """One face track over the clip."""

    id: int
    first_frame: int
    last_frame: int
    n_frames: int  # frames where it was detected
    mean_area: float  # mean box area (frame pixels^2) over those frames
    mean_score: float

    def to_dict(self) -> dict:
        return dict(
            id=self.id,
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            n_frames=self.n_frames,
            mean_area=self.mean_area,
            mean_score=self.mean_score,
        )


@dataclass
class _Track:
    id: int
    box: np.ndarray  # (4,) last observed
    last_frame: int
    first_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per frame
    hits: int = 1
    area_sum: float = 0.0
    score_sum: float = 0.0

    def predict(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.last_frame)


class FaceTracker:
    """Feed ``update(frame_index, boxes, scores)`` once per processed frame in increasing order; it returns the
    track id of each box. ``summary()`` lists every track seen, in order of first appearance (= id order)."""

    def __init__(
        self, max_age: int = 12, max_cost: float = 1.6, center_weight: float = 1.0, velocity_smoothing: float = 0.5
    ):
        self.max_age = int(max_age)
        self.max_cost = float(max_cost)
        self.center_weight = float(center_weight)
        self.velocity_smoothing = float(velocity_smoothing)  # weight of the newest velocity estimate
        self._live: list[_Track] = []
        self._all: list[_Track] = []
        self._next_id = 0

    def cost_matrix(self, frame: int, boxes: np.ndarray) -> np.ndarray:
        """(live tracks, boxes) association costs at ``frame``."""
        if not self._live or len(boxes) == 0:
            return np.zeros((len(self._live), len(boxes)))
        pred = np.stack([t.predict(frame) for t in self._live])
        iou = box_iou(pred, boxes)
        pc = (pred[:, :2] + pred[:, 2:]) / 2
        bc = (boxes[:, :2] + boxes[:, 2:]) / 2
        scale = np.sqrt(np.clip((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]), 1.0, None))
        dist = np.linalg.norm(pc[:, None] - bc[None], axis=-1) / scale[:, None]
        return (1.0 - iou) + self.center_weight * dist

    def update(self, frame: int, boxes, scores: Sequence[float] | None = None) -> list[int]:
        """boxes: (M, 4) (x0, y0, x1, y1) frame pixels (or Detections) -> M track ids."""
        from scipy.optimize import linear_sum_assignment

        if len(boxes) and hasattr(boxes[0], "box"):
            scores = [d.score for d in boxes] if scores is None else scores
            boxes = [d.box for d in boxes]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        score_of = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64)  # (M,)
        # retire tracks unseen for too long before matching
        self._live = [t for t in self._live if frame - t.last_frame <= self.max_age]
        ids = [-1] * len(boxes)
        cost = self.cost_matrix(frame, boxes)
        if cost.size:
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] <= self.max_cost:
                    self._assign(self._live[r], frame, boxes[c], score_of[c])
                    ids[c] = self._live[r].id
        for c in range(len(boxes)):
            if ids[c] < 0:
                t = _Track(
                    self._next_id, boxes[c].copy(), frame, frame, area_sum=_area(boxes[c]), score_sum=float(score_of[c])
                )
                self._next_id += 1
                self._live.append(t)
                self._all.append(t)
                ids[c] = t.id
        return ids

    def _assign(self, t: _Track, frame: int, box: np.ndarray, score: float) -> None:
        dt = max(frame - t.last_frame, 1)
        v = (box - t.box) / dt
        a = self.velocity_smoothing if t.hits > 1 else 1.0
        t.velocity = a * v + (1 - a) * t.velocity
        t.box = box.copy()
        t.last_frame = frame
        t.hits += 1
        t.area_sum += _area(box)
        t.score_sum += float(score)

    def summary(self) -> list[TrackSummary]:
        return [
            TrackSummary(t.id, t.first_frame, t.last_frame, t.hits, t.area_sum / t.hits, t.score_sum / t.hits)
            for t in sorted(self._all, key=lambda t: t.id)
        ]


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def select_tracks(tracks: Sequence[TrackSummary], face: str | int = "largest", min_frames: int = 1) -> list[int]:
    """Track ids to capture. ``face``: 'largest' (largest mean box area over the clip), 'all' (every track seen
    in at least ``min_frames`` frames, in listed order), or K (int or digit string): the K-th track as listed
    by ``tracks`` (0-based). Raises EmocaError 'no_face' (no track) or 'face_not_found' (bad K)."""
    tracks = list(tracks)
    if not tracks:
        raise EmocaError("no_face", "no face was found in the footage")
    if isinstance(face, str) and face.strip().lstrip("-").isdigit():
        face = int(face)
    if face == "largest":
        return [max(tracks, key=lambda t: (t.mean_area, t.n_frames)).id]
    if face == "all":
        kept = [t.id for t in tracks if t.n_frames >= min_frames]
        return kept or [max(tracks, key=lambda t: t.n_frames).id]
    if isinstance(face, int) and not isinstance(face, bool):
        if 0 <= face < len(tracks):
            return [tracks[face].id]
        raise EmocaError(
            "face_not_found",
            f"face {face} does not exist: the footage has {len(tracks)} face track(s), numbered 0..{len(tracks) - 1}",
        )
    raise EmocaError(
        "config_invalid",
        f"face selection {face!r} is not 'largest', 'all' or a track number",
        "Use --face largest, --face all or --face K (K = track number).",
    )
