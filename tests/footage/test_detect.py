"""Real MediaPipe Face Landmarker (the vendored bundle) on real encoded footage with ground-truth motion: landmarks,
ARKit scores, pose, the measured per-face score; FAN's offline failure mode."""

from __future__ import annotations

import numpy as np
import pytest

from backend.flame.camera import transform_points
from backend.footage.detect import (
    BUNDLE_NAME,
    FAN_FILES,
    IBUG68_FLIP,
    MEDIAPIPE_TO_68,
    UNOBSERVED_ARKIT,
    FanDetector,
    MediaPipeDetector,
    distinct_faces,
    landmarker_bundle,
    make_detector,
    match_scores,
)
from backend.footage.video import open_footage
from backend.synthetic import clips as synthetic
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError


def test_mediapipe_tracks_the_astronaut_within_a_few_pixels(astronaut_clip, mp_reference):
    """Tracking mode finds the face in > 90% of frames; its 478 points land where the ground-truth similarity
    puts the still's points (reference = static detection on the still, moved by the clip's transform)."""
    found, medians, scores = 0, [], []
    with MediaPipeDetector(max_faces=2, tracking=True) as det, open_footage(astronaut_clip.path) as footage:
        for frame in footage:
            dets = det.detect(frame.image, frame.time)
            if not dets:
                continue
            found += 1
            assert len(dets) == 1
            d = dets[0]
            assert d.kind == "mediapipe" and d.landmarks.shape == (478, 2) and d.landmarks.dtype == np.float32
            assert 0.5 < d.score <= 1.0  # the bundle's face detector on this frame: a clear face
            scores.append(d.score)
            gt = transform_points(mp_reference, astronaut_clip.transforms[frame.index, 0])
            err = np.linalg.norm(d.landmarks - gt, axis=1)
            medians.append(np.median(err))
            x0, y0, x1, y1 = d.box
            assert x0 < gt[:, 0].mean() < x1 and y0 < gt[:, 1].mean() < y1
    assert found > 0.9 * astronaut_clip.n_frames
    # face height is ~120 px: a few px is a few percent of the face
    assert max(medians) < 3.0 and float(np.mean(medians)) < 2.0
    # a measured score: it changes with the frame (a constant would be a placeholder, not a measurement)
    assert len(set(scores)) > len(scores) // 2 and np.std(scores) > 1e-3


def test_landmarker_gives_arkit_scores_and_a_pose():
    """On the astronaut photo (a broad smile, facing the camera): 52 scores in ARKit's order with both smiles
    high, tongueOut never estimated; a rigid pose in front of the camera, near frontal."""
    img = synthetic.astronaut_image()
    with MediaPipeDetector(max_faces=1, tracking=False) as det:
        (d,) = det.detect(img)
    assert d.arkit is not None and d.arkit.shape == (len(ARKIT_NAMES),) and d.arkit.dtype == np.float32
    assert (d.arkit >= 0).all() and (d.arkit <= 1).all()
    assert all(d.arkit[ARKIT_INDEX[n]] == 0 for n in UNOBSERVED_ARKIT)
    smile = min(d.arkit[ARKIT_INDEX["mouthSmileLeft"]], d.arkit[ARKIT_INDEX["mouthSmileRight"]])
    assert smile > 0.5 and smile > d.arkit[ARKIT_INDEX["mouthFrownLeft"]] + 0.3
    top = {ARKIT_NAMES[i] for i in np.argsort(-d.arkit)[:4]}
    assert {"mouthSmileLeft", "mouthSmileRight"} <= top
    m = d.transform
    assert m is not None and m.shape == (4, 4)
    r = m[:3, :3].astype(np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-3)  # a rotation (no scale, no shear)
    assert np.linalg.det(r) > 0
    assert m[2, 3] < -10  # centimetres in front of the camera (it looks down -z)
    assert np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))) < 30  # a roughly frontal photo


def test_score_matching_is_one_box_per_face():
    faces = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]], np.float64)
    boxes = np.array([[21, 1, 29, 10], [1, 1, 9, 10]], np.float64)
    np.testing.assert_allclose(match_scores(faces, boxes, np.array([0.7, 0.9], np.float32)), [0.9, 0.7, 0.0])
    # one detector box overlapping two faces serves only the better-overlapping one
    shared = np.array([[2, 0, 12, 10]], np.float64)
    np.testing.assert_allclose(match_scores(faces, shared, np.array([0.8], np.float32)), [0.8, 0.0, 0.0])
    assert match_scores(faces, np.zeros((0, 4)), np.zeros(0, np.float32)).tolist() == [0.0, 0.0, 0.0]


def test_a_fast_move_gives_one_face_not_a_stale_twin(clip_dir):
    """A 6-frame pan moves the face ~30 px a frame: VIDEO mode once kept the stale tracked face beside the fresh
    detection (IoU 0.76, score 0); one face per frame, with its detector's score, is what comes out."""
    clip = synthetic.make_astronaut_clip(clip_dir / "fast.mp4", n_frames=6)
    with MediaPipeDetector(tracking=True) as det, open_footage(clip.path) as footage:
        found = [det.detect(f.image, f.time) for f in footage]
    assert [len(d) for d in found] == [1] * 6
    assert all(d[0].score > 0.5 for d in found)
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [30, 0, 40, 10]], np.float64)
    assert distinct_faces(boxes, np.array([0.0, 0.9, 0.0])) == [1, 2]
    assert distinct_faces(boxes, np.array([0.5, 0.5, 0.5])) == [0, 2]


def test_missing_bundle_names_its_path(tmp_path):
    with pytest.raises(EmocaError) as e:
        landmarker_bundle(tmp_path)
    assert e.value.code == "asset_missing" and str(tmp_path / BUNDLE_NAME) in e.value.message
    assert landmarker_bundle().is_file() and landmarker_bundle().parent.name == "mediapipe"
    assert (landmarker_bundle().parent / "LICENSE").is_file()  # Apache-2.0: the licence travels with it


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


def test_starting_the_landmarker_prints_no_native_noise_but_keeps_real_errors():
    """MediaPipe's native start-up lines (glog I/W, TF Lite's delegate notice) go straight to fd 2; a user reads
    them as errors. A fresh process that starts a detector and detects once must print none of them, while
    what the filter passes on (an error line, any other text) is kept."""
    import subprocess
    import sys

    from backend.footage.detect import keep_native_lines

    code = (
        "import numpy as np\n"
        "from backend.footage.detect import make_detector\n"
        "d = make_detector('mediapipe')\n"
        "d.detect(np.zeros((120, 160, 3), np.uint8), 0.0)\n"
        "print('detected')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "detected" in done.stdout
    noisy = [line for line in done.stderr.splitlines() if "TensorFlow Lite" in line or line[:5] in ("I0000", "W0000")]
    assert noisy == [], noisy
    text = "I0000 00:00:17.1 1 a.cc:1] GPU suport\nE0000 00:00:17.2 1 b.cc:2] model failed\nprogress 3/9\n"
    assert keep_native_lines(text) == "E0000 00:00:17.2 1 b.cc:2] model failed\nprogress 3/9\n"
