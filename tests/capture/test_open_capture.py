"""The open model end to end: real PyAV footage, the real Face Landmarker (vendored bundle), the real fer emotion
network. The footage moves by known similarity transforms (the astronaut clip) or renders a known head
performance (backend.synthetic.render_clip), so the take's pose and translation are checked against the truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.capture.options import CaptureOptions, capture_kind
from backend.capture.pipeline import capture
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.take import FLAME_KEYS, KEYS_BY_KIND, SMOOTHED_BY_KIND, read_take

from .helpers import gap_clip

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
N_CLIP = 20
GAP = (8, 9)  # interior gap: face absent, within max_gap -> interpolated
TAIL = 3  # frames 17..19: face absent at the end -> invalid


@pytest.fixture(scope="module")
def nets():
    from backend.capture.networks import load_networks

    return load_networks(CaptureOptions(device="cpu", model="open"), "cpu", lambda m: None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("open") / "prise ouverte é 顔"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def gap_take(folder, nets):
    """The astronaut panning, rolling and zooming; no face in frames 8-9 and 17-19; preview and plot too."""
    from backend.synthetic.clips import ASTRONAUT_FACE_BOX

    clip, tforms = gap_clip(folder / "astronaute.mp4", N_CLIP, GAP, TAIL)
    opts = CaptureOptions(
        device="cpu",
        model="open",
        max_gap=3,
        preview=str(folder / "aperçu.mp4"),
        plot=str(folder / "émotion.png"),
    )
    warnings: list[str] = []
    paths = capture(clip, folder / "prise.npz", opts, warn=warnings.append, networks=nets)
    box = ASTRONAUT_FACE_BOX
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1.0])
    return {
        "paths": paths,
        "take": read_take(paths[0]),
        "clip": clip,
        "centres": (tforms @ centre)[:, :2],  # (N, 2) true face centre, frame pixels
        "scales": np.sqrt(np.abs(np.linalg.det(tforms[:, :2, :2]))),  # (N,) the face's zoom
        "angles": np.arctan2(tforms[:, 0, 1], tforms[:, 0, 0]),  # (N,) counter-clockwise on screen, radians
        "warnings": warnings,
    }


def test_open_take_has_its_kind_and_no_flame_codes(gap_take):
    take = gap_take["take"]
    assert take.kind == "open" and take.meta["version"] == 2
    n = N_CLIP
    for key, (shape, dtype) in KEYS_BY_KIND["open"].items():
        arr = take[key]
        assert arr.dtype == np.dtype(dtype), key
        sizes = {"N": n, "A": len(ARKIT_NAMES), "K": 478, "C": len(take.classes)}
        assert arr.shape == tuple(sizes.get(s, s) if isinstance(s, str) else s for s in shape), key
    assert not set(FLAME_KEYS) & set(take.arrays)  # an open take never carries FLAME codes
    assert take.arkit_names == list(ARKIT_NAMES)
    assert take.meta["arkit"]["unobserved"] == ["tongueOut"] and "Face Landmarker" in take.meta["arkit"]["source"]
    assert take.meta["model"]["kind"] == "open" and "Face Landmarker" in take.meta["model"]["name"]
    assert "ARKit" in take.meta["emotion"]["model"]  # the expression estimate was fused in, and says so
    assert not any("untrained" in f.lower() for f in take.meta["fallbacks"])


def test_gaps_are_filled_or_left_empty_never_invented(gap_take):
    take = gap_take["take"]
    rows = take["frame"]
    seen = ~np.isin(rows, GAP) & (rows < N_CLIP - TAIL)
    gap, tail = np.isin(rows, GAP), rows >= N_CLIP - TAIL
    assert take["valid"][seen].all() and not take["interpolated"][seen].any()
    assert take["valid"][gap].all() and take["interpolated"][gap].all()
    # the detector's own outputs are not made up in the gap: no score, no landmarks
    assert (take["confidence"][gap] == 0).all() and not take["detected_landmarks"][gap].any()
    # filled pose lies between its neighbours (slerp); translation and scores are filled too
    i = np.flatnonzero(gap)
    for key in ("translation", "arkit"):
        lo, hi, mid = take[key][i[0] - 1], take[key][i[-1] + 1], take[key][i]
        assert np.all(mid >= np.minimum(lo, hi) - 1e-2) and np.all(mid <= np.maximum(lo, hi) + 1e-2), key
    # no face at the end: invalid rows of zeros, never a made-up pose
    assert not take["valid"][tail].any()
    for key in take.arrays:
        if key not in ("frame", "time", "valid", "interpolated"):
            assert not take[key][tail].any(), key


def test_confidence_is_the_detectors_real_score(gap_take):
    take = gap_take["take"]
    observed = take["valid"] & ~take["interpolated"]
    conf = take["confidence"][observed]
    assert (conf > 0.5).all() and (conf <= 1).all()
    assert np.unique(conf).size > conf.size // 2  # measured per frame, not a constant


def test_arkit_scores_read_the_smile(gap_take):
    take = gap_take["take"]
    v = take["valid"]
    arkit = take["arkit"][v]
    assert (arkit >= 0).all() and (arkit <= 1).all()
    assert not arkit[:, ARKIT_INDEX["tongueOut"]].any()
    # the astronaut smiles broadly in every frame
    for name in ("mouthSmileLeft", "mouthSmileRight"):
        assert np.median(arkit[:, ARKIT_INDEX[name]]) > 0.5, name
    assert np.median(arkit[:, ARKIT_INDEX["jawOpen"]]) < 0.5


def test_pose_and_translation_follow_the_known_motion(gap_take):
    """The clip pans the face left to right, bobs it up and down, zooms it and rolls it (counter-clockwise on
    screen = a positive rotation about the camera frame's +z, which points at the viewer)."""
    take = gap_take["take"]
    observed = take["valid"] & ~take["interpolated"]
    rows = take["frame"][observed]
    t, pose = take["raw_translation"][observed], take["raw_global_pose"][observed]
    centres, scales, angles = gap_take["centres"][rows], gap_take["scales"][rows], gap_take["angles"][rows]
    assert (t[:, 2] < 0).all()  # in front of the camera, which looks down -z
    assert np.corrcoef(t[:, 0], centres[:, 0])[0, 1] > 0.95  # x right
    assert np.corrcoef(t[:, 1], centres[:, 1])[0, 1] < -0.8  # y up (frame rows grow downwards)
    assert np.corrcoef(-t[:, 2], scales)[0, 1] < -0.9  # a larger face is nearer
    roll = pose[:, 2] - np.median(pose[:, 2] - angles)  # the photo's own small roll removed
    assert np.corrcoef(roll, angles)[0, 1] > 0.95
    assert np.abs(np.degrees(roll - angles)).max() < 3.0


def test_smoothing_covers_the_open_channels_and_can_be_redone(gap_take, folder):
    from backend.take.smoothing import SmoothingOptions, resmooth_take, smooth_channels

    take = gap_take["take"]
    keys = SMOOTHED_BY_KIND["open"]
    raw = {k: take["raw_" + k] for k in keys}
    meta = take.meta["smoothing"]
    opts = SmoothingOptions(meta["method"], meta["strength"])
    redo = smooth_channels(raw, take["valid"], take.fps, opts, times=take["time"], interpolated=take["interpolated"])
    for k in keys:
        np.testing.assert_allclose(redo[k], take[k], atol=1e-4, err_msg=k)
    # smoothing did something (the detector's points are filtered over observed runs only, which are too short
    # here for the zero-phase filter: tests/capture/test_smoothing_2d.py checks them on a longer run)
    for k in ("arkit", "global_pose", "translation", "crop"):
        assert not np.array_equal(take[k], take["raw_" + k]), k
    off = read_take(resmooth_take(gap_take["paths"][0], folder / "brut.npz", SmoothingOptions("off")))
    for k in keys:
        np.testing.assert_array_equal(off[k], take["raw_" + k], err_msg=k)


def test_preview_draws_the_landmarks_and_the_plot_has_the_arkit_panel(gap_take, folder):
    import av
    import cv2

    from backend.footage.video import open_footage

    with av.open(str(folder / "aperçu.mp4")) as c:
        preview = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with open_footage(gap_take["clip"]) as footage:
        source = [f.image for f in footage]
    assert len(preview) == N_CLIP and preview[0].shape == (360, 640, 3)
    valid = gap_take["take"]["valid"]
    # pixels the overlay changed (far beyond the encoder's noise): the dots and axes where there is a face
    drawn = [int((np.abs(p.astype(np.int16) - s.astype(np.int16)).max(-1) > 80).sum()) for p, s in zip(preview, source)]
    assert min(d for d, v in zip(drawn, valid) if v) > 100
    assert max(d for d, v in zip(drawn, valid) if not v) < 20  # the plain frame where there is none
    png = cv2.imdecode(np.fromfile(str(folder / "émotion.png"), np.uint8), cv2.IMREAD_COLOR)
    assert png is not None and png.shape[0] >= 800  # three panels: valence/arousal, classes, ARKit scores
    assert not [p.name for p in folder.iterdir() if "partial" in p.name or p.name.startswith(".")]


def test_the_model_words_choose_the_path(tmp_path, monkeypatch):
    from tests.assets import helpers as H

    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path / "none"))
    assert capture_kind(CaptureOptions()) == "open"  # nothing installed: the open model is the default
    assert capture_kind(CaptureOptions(model="untrained")) == "flame"
    root = tmp_path / "assets"
    H.write_model_folder(root / "EMOCA" / "models", "EMOCA_v2_mp")
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(root))
    assert capture_kind(CaptureOptions()) == "flame"  # an installed EMOCA model is the default
    assert capture_kind(CaptureOptions(model="open")) == "open"  # unless the open model is asked for


def test_bad_open_options_fail_before_anything_is_written(tmp_path, nets):
    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "c.mp4", n_frames=3, size=(320, 180), face_height=70).path
    out = tmp_path / "out"
    with pytest.raises(EmocaError) as e:
        capture(clip, out / "t.npz", CaptureOptions(device="cpu", model="open", detector="fan"))
    assert e.value.code == "config_invalid" and "mediapipe" in e.value.message
    with pytest.raises(EmocaError) as e:
        capture(clip, out / "t.npz", CaptureOptions(device="cpu", precision="fp8"), networks=nets)
    assert e.value.code == "config_invalid" and "fp8" in e.value.message
    assert not out.exists() or not list(out.iterdir())


def test_footage_without_a_face_writes_nothing(tmp_path, nets):
    from backend.synthetic.clips import make_no_face_clip

    clip = make_no_face_clip(tmp_path / "vide.mp4", n_frames=6)
    with pytest.raises(EmocaError) as e:
        capture(clip.path, tmp_path / "out" / "t.npz", CaptureOptions(device="cpu", model="open"), networks=nets)
    assert e.value.code == "no_face" and "vide.mp4" in e.value.message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_writes_an_open_take(tmp_path):
    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "clip é.mp4", n_frames=8, size=(320, 180), face_height=80).path
    out = tmp_path / "t.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "capture", str(clip), "-o", str(out), "--model", "open", "--smooth", "off",
         "--precision", "fp32", "--progress", "none", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    take = read_take(out)
    assert take.kind == "open" and take["valid"].all() and take.meta["smoothing"]["method"] == "off"
    np.testing.assert_array_equal(take["arkit"], take["raw_arkit"])


def test_the_precision_option_reaches_the_reconstructor():
    from backend.capture.options import PRECISIONS
    from backend.models.reconstructor import PRECISIONS as MODEL_PRECISIONS

    assert tuple(PRECISIONS) == tuple(MODEL_PRECISIONS)
    assert CaptureOptions.from_dict({"precision": "fp32", "model": "open"}).precision == "fp32"


@pytest.mark.slow
def test_head_rotation_follows_a_rendered_performance(tmp_path, nets):
    """The synthetic head (not FLAME) turns, nods and rolls by known angles; the open take's rotation follows on
    every axis with the same sign (a mirrored axis would anti-correlate), up to the constant offset between the
    head's neutral and MediaPipe's canonical face."""
    from scipy.spatial.transform import Rotation

    from backend.synthetic.render_clip import render_head_clip
    from emoca_contract.rotations import axis_angle_to_matrix

    truth = render_head_clip(tmp_path / "tête.mp4", n_frames=30, second_face=False)
    take = read_take(capture(truth["path"], tmp_path / "t.npz", CaptureOptions(device="cpu"), networks=nets)[0])
    v = take["valid"] & ~take["interpolated"]
    assert v.sum() >= 27
    r = axis_angle_to_matrix(take["raw_global_pose"][v].astype(np.float64))
    g = axis_angle_to_matrix(truth["global_pose"][v].astype(np.float64))
    offset = Rotation.from_matrix(np.transpose(g, (0, 2, 1)) @ r).mean().as_matrix()  # r = g @ offset
    recovered = Rotation.from_matrix(r @ offset.T).as_rotvec()
    true = Rotation.from_matrix(g).as_rotvec()
    for axis in range(3):
        assert np.corrcoef(recovered[:, axis], true[:, axis])[0, 1] > 0.8, axis
    err = np.degrees(Rotation.from_matrix(r @ offset.T @ np.transpose(g, (0, 2, 1))).magnitude())
    assert np.mean(err) < 8.0


@pytest.mark.slow
def test_two_faces_each_get_an_open_take_over_a_frame_range(tmp_path, nets):
    from backend.synthetic.clips import make_two_faces_clip

    from .helpers import crop_centres

    clip = make_two_faces_clip(tmp_path / "deux.mp4", n_frames=30)
    opts = CaptureOptions(device="cpu", model="open", face="all", max_gap=0, frames="2:30:2")
    paths = capture(clip.path, tmp_path / "deux.npz", opts, networks=nets)
    assert [p.name for p in paths] == ["deux_track0.npz", "deux_track1.npz"]
    owners = []
    for p in paths:
        take = read_take(p)
        assert take.kind == "open" and take["frame"].tolist() == list(range(2, 30, 2))
        v = take["valid"]
        assert v.sum() >= 10
        centres = crop_centres(take["crop"][v])
        d = np.linalg.norm(centres[:, None] - clip.centers[take["frame"][v]], axis=-1)  # (frames, 2 faces)
        owner = int(np.argmin(d.mean(0)))
        assert (d[:, owner] < d[:, 1 - owner]).all(), d  # the track stays on its face through the crossing
        owners.append(owner)
    assert sorted(owners) == [0, 1]
