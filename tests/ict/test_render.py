"""The ICT head rendered with the project's rasterizer and read back by the real Face Landmarker: which side is
"Left", the main channels' response, a head turn's sign, and the encoded clip's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from emoca_contract.arkit import ARKIT_INDEX
from emoca_contract.rotations import quat_to_axis_angle

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def scores(*weights: dict[str, float], rotation=None) -> np.ndarray:
    from backend.synthetic.ict_clip import arkit_matrix, detect, render_frames

    arkit = np.concatenate([arkit_matrix(w, 1) for w in weights])
    found = detect(render_frames(arkit, rotation, size=(512, 512)))
    assert np.isfinite(found["arkit"][:, ARKIT_INDEX["jawOpen"]]).all(), "the detector lost the face"
    return found["arkit"]


def col(name: str) -> int:
    return ARKIT_INDEX[name]


@pytest.mark.parametrize("stem", ["mouthSmile", "eyeLookOut", "mouthUpperUp"])
def test_the_rigs_left_keys_move_the_side_the_detector_calls_left(stem):
    left, right = scores({stem + "Left": 1.0}, {stem + "Right": 1.0})
    assert left[col(stem + "Left")] > left[col(stem + "Right")] + 0.1
    assert right[col(stem + "Right")] > right[col(stem + "Left")] + 0.1


@pytest.mark.parametrize(
    "weights, channels, rise",
    [
        ({"jawOpen": 1.0}, ["jawOpen"], 0.5),
        ({"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, ["mouthSmileLeft", "mouthSmileRight"], 0.3),
        ({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, ["eyeBlinkLeft", "eyeBlinkRight"], 0.2),
        ({"browInnerUp": 1.0}, ["browInnerUp"], 0.3),
        ({"mouthPucker": 1.0}, ["mouthPucker"], 0.5),
    ],
)
def test_the_main_channels_are_detected_rising_with_their_weight(weights, channels, rise):
    neutral, half, full = scores({}, {k: 0.5 * v for k, v in weights.items()}, weights)
    idx = [col(c) for c in channels]
    assert full[idx].mean() > neutral[idx].mean() + rise
    assert neutral[idx].mean() <= half[idx].mean() + 0.02 <= full[idx].mean() + 0.04  # no fall with the weight


@pytest.mark.parametrize("axis, degrees", [(1, 20.0), (1, -20.0), (0, 12.0), (0, -12.0), (2, 15.0)])
def test_a_head_turn_reads_back_with_its_sign(axis, degrees):
    from backend.synthetic.ict_clip import detect, render_frames

    rotation = np.zeros((1, 3))
    rotation[0, axis] = np.deg2rad(degrees)
    r = detect(render_frames(np.zeros((1, 52)), rotation, size=(512, 512)))["rotation"][0]
    u, _, vt = np.linalg.svd(r)  # the landmarker's matrix may carry a scale; keep its rotation
    q = _matrix_to_quat(u @ vt)
    got = np.rad2deg(quat_to_axis_angle(q))
    assert np.sign(got[axis]) == np.sign(degrees) and abs(got[axis] - degrees) < 5.0, got
    assert np.abs(np.delete(got, axis)).max() < 4.0, got


def _matrix_to_quat(m: np.ndarray) -> np.ndarray:
    w = np.sqrt(max(1.0 + np.trace(m), 1e-12)) / 2
    return np.array([w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)])


def test_a_clip_is_encoded_with_its_ground_truth(tmp_path):
    import av

    from backend.synthetic.ict_clip import arkit_matrix, detect, write_ict_clip

    n = 6
    arkit = arkit_matrix({"jawOpen": np.linspace(0, 1, n)}, n)
    rotation = np.zeros((n, 3), np.float32)
    rotation[:, 1] = np.deg2rad(np.linspace(-10, 10, n))
    truth = write_ict_clip(tmp_path / "ict é.mp4", arkit, rotation, fps=25, size=(320, 240))
    with av.open(str(truth["path"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == n and frames[0].shape == (240, 320, 3)
    np.testing.assert_array_equal(truth["arkit"], arkit)
    np.testing.assert_array_equal(truth["global_pose"], rotation)
    lmk = truth["landmarks2d"]
    assert lmk.shape == (n, 68, 2) and (lmk > 0).all() and (lmk[..., 0] < 320).all() and (lmk[..., 1] < 240).all()
    # the chin (landmark 8) drops as the jaw opens; the nose tip (30) follows the turn towards +x
    assert lmk[-1, 8, 1] > lmk[0, 8, 1] + 5 and lmk[-1, 30, 0] > lmk[0, 30, 0] + 5
    found = detect(np.stack(frames))["arkit"][:, col("jawOpen")]
    assert np.isfinite(found).all() and found[-1] > found[0] + 0.4
