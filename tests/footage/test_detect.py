"""Real mediapipe FaceMesh on real encoded footage with ground-truth motion; FAN's offline failure mode."""

from __future__ import annotations

import numpy as np
import pytest

from backend.flame.camera import transform_points
from backend.footage.detect import (
    FAN_FILES,
    IBUG68_FLIP,
    MEDIAPIPE_TO_68,
    FanDetector,
    MediaPipeDetector,
    make_detector,
)
from backend.footage.video import open_footage
from backend.synthetic import clips as synthetic
from emoca_contract.errors import EmocaError


def test_mediapipe_tracks_the_astronaut_within_a_few_pixels(astronaut_clip, mp_reference):
    """Tracking mode finds the face in > 90% of frames; its 478 points land where the ground-truth similarity
    puts the still's points (reference = static detection on the still, moved by the clip's transform)."""
    found, medians = 0, []
    with MediaPipeDetector(max_faces=2, tracking=True) as det, open_footage(astronaut_clip.path) as footage:
        for frame in footage:
            dets = det.detect(frame.image)
            if not dets:
                continue
            found += 1
            assert len(dets) == 1
            d = dets[0]
            assert d.kind == "mediapipe" and d.landmarks.shape == (478, 2) and d.landmarks.dtype == np.float32
            assert d.score == 1.0
            gt = transform_points(mp_reference, astronaut_clip.transforms[frame.index, 0])
            err = np.linalg.norm(d.landmarks - gt, axis=1)
            medians.append(np.median(err))
            x0, y0, x1, y1 = d.box
            assert x0 < gt[:, 0].mean() < x1 and y0 < gt[:, 1].mean() < y1
    assert found > 0.9 * astronaut_clip.n_frames
    # face height is ~120 px: a few px is a few percent of the face
    assert max(medians) < 3.0 and float(np.mean(medians)) < 2.0


def test_no_face_clip_gives_no_detections(clip_dir):
    clip = synthetic.make_no_face_clip(clip_dir / "noface.mp4", n_frames=8)
    with MediaPipeDetector() as det, open_footage(clip.path) as footage:
        assert sum(len(det.detect(f.image)) for f in footage) == 0


def test_static_mode_finds_both_faces(two_faces_clip):
    with open_footage(two_faces_clip.path, "0:1") as footage:
        image = next(iter(footage)).image
    with MediaPipeDetector(max_faces=4, tracking=False) as det:
        dets = det.detect(image)
    assert len(dets) == 2
    centers = sorted((d.center for d in dets), key=lambda c: c[0])
    gt = sorted(two_faces_clip.centers[0], key=lambda c: c[0])
    for c, g in zip(centers, gt):
        assert np.linalg.norm(c - g) < 10.0


def test_mediapipe_to_68_table_is_mirror_consistent():
    """Mirror the face: the 68 points of the mirrored face must be the mirrored points of the original with
    iBUG's left/right permutation. A table with a left/right mix-up fails this by tens of pixels."""
    assert MEDIAPIPE_TO_68.shape == (68,) and len(set(MEDIAPIPE_TO_68.tolist())) == 68
    assert MEDIAPIPE_TO_68.max() < 478
    assert np.array_equal(IBUG68_FLIP[IBUG68_FLIP], np.arange(68))
    img = synthetic.astronaut_image()
    with MediaPipeDetector(max_faces=1, tracking=False) as det:
        p = det.detect(img)[0].landmarks68()
        q = det.detect(np.ascontiguousarray(img[:, ::-1]))[0].landmarks68()
    mirrored = p[IBUG68_FLIP].copy()
    mirrored[:, 0] = img.shape[1] - 1 - mirrored[:, 0]
    err = np.linalg.norm(q - mirrored, axis=1)
    assert err.mean() < 3.0 and err.max() < 8.0
    # and the layout is iBUG's: chin (8) lowest jaw point, right eye (36-41) left of the left eye (42-47) in the
    # image, mouth below the nose tip
    assert p[8, 1] == p[:17, 1].max()
    assert p[36:42, 0].mean() < p[42:48, 0].mean()
    assert p[48:68, 1].mean() > p[30, 1] > p[27, 1]


def test_fan_without_weights_names_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(EmocaError) as e:
        FanDetector()
    assert e.value.code == "asset_missing"
    for name in FAN_FILES.values():
        assert name in e.value.message and name in e.value.hint
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in e.value.hint
    with pytest.raises(EmocaError):
        make_detector("fan")


def test_make_detector_names():
    det = make_detector("auto", max_faces=2)
    try:
        assert isinstance(det, MediaPipeDetector) and det.max_faces == 2 and det.tracking
    finally:
        det.close()
    with pytest.raises(EmocaError) as e:
        make_detector("dlib")
    assert e.value.code == "config_invalid"
