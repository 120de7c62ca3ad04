"""Face tracks: ids stay with their faces through a crossing; selection of the tracks to capture."""

from __future__ import annotations

import numpy as np
import pytest

from backend.footage.detect import MediaPipeDetector
from backend.footage.track import FaceTracker, TrackSummary, box_iou, select_tracks
from backend.footage.video import open_footage
from emoca_contract.errors import EmocaError


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def _box(cx, cy, s=100.0):
    return [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]


def test_crossing_boxes_keep_their_ids():
    """Two equal boxes cross head-on on the same line; at the crossing frame they coincide. Right after it, each
    track's last box is equally far from both faces: only the constant-velocity prediction tells them apart
    (this test fails with prediction disabled)."""
    tracker = FaceTracker()
    ids_a, ids_b = [], []
    for t in range(40):
        xa, xb = 100 + 12 * t, 580 - 12 * t  # they meet at t = 20
        boxes = [_box(xb, 200), _box(xa, 200)] if t % 2 else [_box(xa, 200), _box(xb, 200)]
        ids = tracker.update(t, boxes)
        ia, ib = (ids[1], ids[0]) if t % 2 else (ids[0], ids[1])
        ids_a.append(ia)
        ids_b.append(ib)
    assert set(ids_a) == {ids_a[0]} and set(ids_b) == {ids_b[0]} and ids_a[0] != ids_b[0]
    assert [s.n_frames for s in tracker.summary()] == [40, 40]


def test_short_occlusion_keeps_the_id_long_one_starts_a_new_track():
    tracker = FaceTracker(max_age=5)
    first = tracker.update(0, [_box(100, 100)])[0]
    for t in range(1, 10):
        assert tracker.update(t, [_box(100 + 5 * t, 100)]) == [first]
    for t in range(10, 14):  # unseen for 4 frames, still moving
        assert tracker.update(t, []) == []
    assert tracker.update(14, [_box(100 + 5 * 14, 100)]) == [first]  # predicted position matches
    for t in range(15, 22):
        tracker.update(t, [])
    later = tracker.update(22, [_box(100 + 5 * 22, 100)])[0]
    assert later != first
    assert [s.id for s in tracker.summary()] == [first, later]


def test_real_faces_crossing_keep_their_ids(two_faces_clip):
    """mediapipe in tracking mode on the two-face clip: every detection's track must stay with one ground-truth
    face (by nearest GT centre) for the whole clip, including after the occlusion at the crossing."""
    tracker = FaceTracker()
    owner: dict[int, set[int]] = {}
    n_det = 0
    with MediaPipeDetector(max_faces=4) as det, open_footage(two_faces_clip.path) as footage:
        for frame in footage:
            dets = det.detect(frame.image)
            ids = tracker.update(frame.index, dets)
            for d, tid in zip(dets, ids):
                dist = np.linalg.norm(two_faces_clip.centers[frame.index] - d.center, axis=1)
                assert dist.min() < 15.0  # the detection is on a face
                owner.setdefault(tid, set()).add(int(np.argmin(dist)))
                n_det += 1
    assert n_det > 1.6 * two_faces_clip.n_frames  # both faces seen most of the time
    assert len(owner) == 2, f"tracks: {owner}"
    assert sorted(min(v) for v in owner.values()) == [0, 1] and all(len(v) == 1 for v in owner.values())
    summary = tracker.summary()
    assert all(s.first_frame == 0 and s.last_frame == two_faces_clip.n_frames - 1 for s in summary)


def _summary():
    return [
        TrackSummary(0, 0, 99, 100, 5000.0, 1.0),
        TrackSummary(1, 10, 99, 90, 9000.0, 1.0),
        TrackSummary(2, 50, 52, 3, 20000.0, 1.0),
    ]


def test_select_tracks():
    s = _summary()
    assert select_tracks(s, "largest") == [2]
    assert select_tracks(s, "all") == [0, 1, 2]
    assert select_tracks(s, "all", min_frames=10) == [0, 1]
    assert select_tracks(s, 1) == [1]
    assert select_tracks(s, "0") == [0]


def test_select_tracks_errors():
    with pytest.raises(EmocaError) as e:
        select_tracks(_summary(), 3)
    assert e.value.code == "face_not_found" and "3 face track" in e.value.message
    with pytest.raises(EmocaError) as e:
        select_tracks([], "largest")
    assert e.value.code == "no_face"
    with pytest.raises(EmocaError) as e:
        select_tracks(_summary(), "biggest")
    assert e.value.code == "config_invalid"
