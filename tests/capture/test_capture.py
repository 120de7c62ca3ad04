"""Capture end to end on the EMOCA path: real PyAV footage, real MediaPipe, real torch (untrained network: numbers
are not meaningful, the plumbing is). The open model's captures: tests/capture/test_open_capture.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from backend.capture.options import CaptureOptions, output_paths
from backend.capture.pipeline import capture
from emoca_contract.errors import EmocaError
from emoca_contract.take import SMOOTHED_KEYS, TAKE_KEYS, read_take

from .helpers import crop_centres, gap_clip

pytestmark = pytest.mark.torch

N_CLIP = 20
GAP = (8, 9)  # interior gap: face absent, within max_gap -> interpolated
TAIL = 3  # frames 17..19: face absent at the end -> invalid


@pytest.fixture(scope="module")
def nets():
    """The networks, loaded once for the module (capture() loads them itself when not given)."""
    import warnings

    from backend.capture.networks import load_networks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "UNTRAINED network": expected here
        return load_networks(CaptureOptions(device="cpu", model="untrained"), "cpu", lambda m: None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("capture") / "prise de vue é 顔"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def gap_capture(folder, nets):
    """Frames 1..19 of a clip whose face vanishes in frames 8-9 and 17-19; preview and plot too."""
    from backend.synthetic.clips import ASTRONAUT_FACE_BOX

    clip, tforms = gap_clip(folder / "astronaute.mp4", N_CLIP, GAP, TAIL)
    events, warnings = [], []
    opts = CaptureOptions(
        device="cpu",
        batch_size=8,
        frames="1:20",
        max_gap=3,
        preview=str(folder / "aperçu.mp4"),
        plot=str(folder / "émotion.png"),
    )
    paths = capture(
        clip, folder / "prise.npz", opts, progress=lambda *a: events.append(a), warn=warnings.append, networks=nets
    )
    centre = np.array(
        [(ASTRONAUT_FACE_BOX[0] + ASTRONAUT_FACE_BOX[2]) / 2, (ASTRONAUT_FACE_BOX[1] + ASTRONAUT_FACE_BOX[3]) / 2, 1.0]
    )
    truth = (tforms @ centre)[:, :2]
    return {
        "paths": paths,
        "take": read_take(paths[0]),
        "events": events,
        "warnings": warnings,
        "clip": clip,
        "truth": truth,
        "folder": folder,
    }


def test_take_has_every_contract_field(gap_capture):
    take = gap_capture["take"]
    assert gap_capture["paths"] == [gap_capture["folder"] / "prise.npz"]
    n = N_CLIP - 1
    sizes = {"N": n, "K": 478, "C": len(take.meta["emotion"]["classes"])}
    for key, (shape, dtype) in TAKE_KEYS.items():
        arr = take[key]
        assert arr.dtype == np.dtype(dtype), key
        want = tuple(sizes.get(s, arr.shape[i]) if isinstance(s, str) else s for i, s in enumerate(shape))
        assert arr.shape == want, key
    assert take["exp"].shape[1] == 50 and take["shape"].shape[1] == 100
    for key in TAKE_KEYS:
        assert np.isfinite(take[key].astype(np.float64)).all(), key
    meta = take.meta
    assert meta["source"]["fps"] == 25.0 and (meta["source"]["width"], meta["source"]["height"]) == (640, 360)
    assert meta["source"]["frames"] == [1, 20, 1] and meta["source"]["frame_count"] == N_CLIP
    assert meta["track"]["selection"] == "largest" and meta["track"]["n_tracks"] >= 1
    assert meta["model"]["trained"] is False and meta["model"]["device"] == "cpu"
    assert any("untrained" in f.lower() for f in meta["fallbacks"])  # honest about what it ran
    assert "estimated" in meta["emotion"]["valence_arousal"]
    assert meta["smoothing"]["method"] == "butterworth"
    assert meta["backend_version"] and meta["created"]


def test_frames_and_times_come_from_the_container(gap_capture):
    take = gap_capture["take"]
    np.testing.assert_array_equal(take["frame"], np.arange(1, N_CLIP))
    np.testing.assert_allclose(take["time"], np.arange(1, N_CLIP) / 25.0, atol=1e-6)


def test_face_is_followed_and_gaps_are_flagged(gap_capture):
    take, truth = gap_capture["take"], gap_capture["truth"]
    rows = take["frame"]
    seen = ~np.isin(rows, GAP) & (rows < N_CLIP - TAIL)
    gap = np.isin(rows, GAP)
    tail = rows >= N_CLIP - TAIL
    assert take["valid"][seen].all() and not take["interpolated"][seen].any()
    assert (take["confidence"][seen] > 0).all() and (take["confidence"][seen] <= 1).all()
    # interior gap: filled, flagged, detector outputs left empty (not observed)
    assert take["valid"][gap].all() and take["interpolated"][gap].all()
    assert (take["confidence"][gap] == 0).all() and not take["detected_landmarks"][gap].any()
    # gap at the end: invalid rows of zeros, never invented
    assert not take["valid"][tail].any() and not take["interpolated"][tail].any()
    for key in TAKE_KEYS:
        if key not in ("frame", "time", "valid", "interpolated"):
            assert not take[key][tail].any(), key
    # the crop sits on the face: its centre is near the true face centre in every observed frame
    centres = crop_centres(take["crop"][seen])
    err = np.linalg.norm(centres - truth[rows[seen]], axis=1)
    assert err.max() < 25, err
    # interpolated crops lie between their neighbours
    i = np.flatnonzero(gap)
    lo, hi = crop_centres(take["crop"][[i[0] - 1]]), crop_centres(take["crop"][[i[-1] + 1]])
    mid = crop_centres(take["crop"][i])
    assert np.all(mid >= np.minimum(lo, hi) - 1e-3) and np.all(mid <= np.maximum(lo, hi) + 1e-3)
    # detector landmarks are frame pixels around the face
    det = take["detected_landmarks"][seen]
    assert np.linalg.norm(det.mean(1) - truth[rows[seen]], axis=1).max() < 30


def test_emotion_and_model_landmarks_are_consistent(gap_capture):
    take = gap_capture["take"]
    v = take["valid"]
    np.testing.assert_allclose(take["expression"][v].sum(1), 1.0, atol=1e-4)
    np.testing.assert_allclose(take["raw_expression"][v].sum(1), 1.0, atol=1e-4)
    assert (np.abs(take["valence"][v]) <= 1).all() and (np.abs(take["arousal"][v]) <= 1).all()
    # the model's landmarks are frame pixels (mapped through ``crop``), finite and varying with the face
    assert take["landmarks"][v].std() > 0


def test_an_emoca_take_records_the_detectors_arkit_scores_and_real_confidence(gap_capture):
    from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES

    take = gap_capture["take"]
    assert take.kind == "flame" and take.arkit_names == list(ARKIT_NAMES)
    assert take.meta["arkit"]["unobserved"] == ["tongueOut"]
    v = take["valid"]
    arkit = take["arkit"][v]
    assert arkit.shape[1] == 52 and (arkit >= 0).all() and (arkit <= 1).all()
    assert np.median(arkit[:, ARKIT_INDEX["mouthSmileLeft"]]) > 0.5  # the astronaut smiles
    assert "raw_arkit" in take and "ARKit" in take.meta["emotion"]["model"]  # smoothed, and fused into emotion
    observed = v & ~take["interpolated"]
    assert np.unique(take["confidence"][observed]).size > observed.sum() // 2  # measured per frame


def test_smoothing_can_be_redone_from_raw(gap_capture):
    from backend.take.smoothing import SmoothingOptions, smooth_channels

    take = gap_capture["take"]
    meta = take.meta["smoothing"]
    raw = {k: take["raw_" + k] for k in SMOOTHED_KEYS}
    redo = smooth_channels(
        raw,
        take["valid"],
        take.fps,
        SmoothingOptions(meta["method"], meta["strength"]),
        times=take["time"],
        interpolated=take["interpolated"],
    )
    for k in SMOOTHED_KEYS:
        np.testing.assert_allclose(redo[k], take[k], atol=1e-5, err_msg=k)
    assert not np.allclose(take["exp"], take["raw_exp"])  # smoothing did something
    off = smooth_channels(raw, take["valid"], take.fps, SmoothingOptions("off"))
    np.testing.assert_array_equal(off["exp"], take["raw_exp"])


def test_progress_and_extras(gap_capture):
    import av
    import cv2

    events = gap_capture["events"]
    stages = [e[2] for e in events]
    assert "encode" in stages and stages[-1] == "done"
    done = [e[0] for e in events if e[2] == "encode"]
    assert done == sorted(done) and done[-1] == N_CLIP - 1
    with av.open(str(gap_capture["folder"] / "aperçu.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == N_CLIP - 1 and frames[0].shape == (360, 640, 3)
    png = cv2.imdecode(np.fromfile(str(gap_capture["folder"] / "émotion.png"), np.uint8), cv2.IMREAD_COLOR)
    assert png is not None and png.shape[0] > 100
    leftovers = [p.name for p in gap_capture["folder"].iterdir() if "partial" in p.name or p.name.startswith(".")]
    assert leftovers == []


def test_output_paths():
    assert output_paths("a/out.npz", "clip.mp4", [0], "largest")[0].name == "out.npz"
    assert [p.name for p in output_paths("a/out.npz", "clip.mp4", [0, 3], "all")] == [
        "out_track0.npz",
        "out_track3.npz",
    ]
    assert output_paths("a/folder", "x/clip.mov", [1], 1)[0].as_posix() == "a/folder/clip.npz"


def test_no_face_and_missing_track(tmp_path, nets):
    from backend.synthetic.clips import make_no_face_clip

    clip = make_no_face_clip(tmp_path / "vide.mp4", n_frames=10)
    (tmp_path / "out").mkdir()  # there before: a failed capture removes only the folders it made
    with pytest.raises(EmocaError) as e:
        capture(clip.path, tmp_path / "out" / "t.npz", CaptureOptions(device="cpu"), networks=nets)
    assert e.value.code == "no_face" and "vide.mp4" in e.value.message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    src, _ = gap_clip(tmp_path / "a.mp4", n=6, gap=(), tail=0)
    with pytest.raises(EmocaError) as e:
        capture(src, tmp_path / "out" / "t.npz", CaptureOptions(device="cpu", face=4), networks=nets)
    assert e.value.code == "face_not_found"
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_video(tmp_path, nets):
    from backend.synthetic.clips import make_astronaut_clip, truncate_file

    clip = make_astronaut_clip(tmp_path / "full.mp4", n_frames=20)
    broken = truncate_file(clip.path, tmp_path / "cut.mp4", 0.2)
    with pytest.raises(EmocaError) as e:
        capture(broken, tmp_path / "t.npz", CaptureOptions(device="cpu"), networks=nets)
    assert e.value.code == "input_corrupt" and "cut.mp4" in e.value.message
    half = truncate_file(clip.path, tmp_path / "half.mp4", 0.5)
    warnings: list[str] = []
    paths = capture(half, tmp_path / "t.npz", CaptureOptions(device="cpu"), warn=warnings.append, networks=nets)
    take = read_take(paths[0])
    assert 0 < take.n_frames < 20 and take["valid"].all()
    assert any("truncated" in w for w in warnings) and any("truncated" in w for w in take.meta["warnings"])


def test_cancel_mid_run_leaves_nothing(tmp_path, nets):
    from backend.synthetic.clips import make_astronaut_clip

    clip = make_astronaut_clip(tmp_path / "long.mp4", n_frames=40, size=(320, 180), face_height=70)
    out = tmp_path / "out"
    out.mkdir()  # there before: a cancelled capture removes only the folders it made
    cancel = threading.Event()
    seen: list[tuple] = []

    def progress(done, total, stage, fps, eta):
        seen.append((done, total, stage))
        if stage == "encode" and done > 0 and not cancel.is_set():
            cancel.set()
            seen.append(("cancel", time.perf_counter()))

    with pytest.raises(EmocaError) as e:
        capture(
            clip.path,
            out / "t.npz",
            CaptureOptions(device="cpu", batch_size=4),
            progress=progress,
            cancel=cancel,
            networks=nets,
        )
    assert e.value.code == "cancelled"
    assert cancel.is_set()
    encoded = [s[0] for s in seen if s[-1] == "encode"]
    assert max(encoded) < 40  # it stopped early, not after finishing
    assert list(out.iterdir()) == []  # no take, no partial file, no parts folder


@pytest.mark.slow
def test_two_faces_all_tracks_follow_their_faces(tmp_path, nets):
    from backend.synthetic.clips import make_two_faces_clip

    clip = make_two_faces_clip(tmp_path / "deux.mp4", n_frames=30)
    paths = capture(
        clip.path, tmp_path / "deux.npz", CaptureOptions(device="cpu", face="all", max_gap=0), networks=nets
    )
    assert [p.name for p in paths] == ["deux_track0.npz", "deux_track1.npz"]
    owners = []
    for p in paths:
        take = read_take(p)
        assert take.n_frames == 30 and take.meta["track"]["n_tracks"] == 2
        v = take["valid"]
        assert v.sum() >= 20  # seen in most frames (the faces overlap for a few)
        centres = crop_centres(take["crop"][v])
        d = np.linalg.norm(centres[:, None] - clip.centers[v], axis=-1)  # (frames, 2 faces)
        owner = int(np.argmin(d.mean(0)))
        # in every frame the track sits on the same face, before and after the crossing
        assert (d[:, owner] < d[:, 1 - owner]).all(), d
        assert d[:, owner].max() < 40
        owners.append(owner)
    assert sorted(owners) == [0, 1]


@pytest.mark.slow
def test_several_faces_with_largest_says_which_was_kept(tmp_path, nets):
    from backend.synthetic.clips import make_two_faces_clip

    clip = make_two_faces_clip(tmp_path / "deux.mp4", n_frames=20)
    said: list[str] = []
    paths = capture(
        clip.path, tmp_path / "une.npz", CaptureOptions(device="cpu", face="largest"), networks=nets, warn=said.append
    )
    assert len(paths) == 1
    note = [m for m in said if "faces were tracked" in m]
    assert len(note) == 1 and note[0].startswith("2 faces") and "face 'all'" in note[0]
    take = read_take(paths[0])
    assert note[0] in take.meta["warnings"]  # the take records the choice too
    assert f"track {take.meta['track']['id']}" in note[0]
