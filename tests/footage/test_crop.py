"""The EMOCA crop recipe (emoca.md 4.1) against skimage, the library the official code uses."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import SimilarityTransform, estimate_transform, warp

from backend.flame.camera import transform_points
from backend.footage.crop import (
    box_from_landmarks,
    crop_transform,
    crops_to_tensor,
    estimate_similarity,
    face_crop,
    invert,
    warp_crop,
)
from backend.synthetic import clips as synthetic


def test_kpt68_box_rule():
    # a 100 x 60 landmark extent at (50..150, 20..80)
    pts = np.array([[50, 20], [150, 80], [100, 50], [70, 30]], float)
    center, size = box_from_landmarks(pts, "kpt68")
    np.testing.assert_allclose(center, [100, 50])
    assert size == pytest.approx((100 + 60) / 2 * 1.1)
    for kind in ("fan", "mediapipe"):
        c2, s2 = box_from_landmarks(pts, kind)
        np.testing.assert_allclose(c2, center)
        assert s2 == pytest.approx(size)


def test_bbox_rule_shifts_the_centre_down():
    center, size = box_from_landmarks(np.array([50, 20, 150, 80]), "bbox")
    assert size == pytest.approx(80.0)
    np.testing.assert_allclose(center, [100, 50 + 0.12 * 80])


def _official_tform(center, size, scale=1.25):
    side = int(size * scale)
    src = np.array(
        [
            [center[0] - side / 2, center[1] - side / 2],
            [center[0] - side / 2, center[1] + side / 2],
            [center[0] + side / 2, center[1] - side / 2],
        ]
    )
    return estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]])).params


@pytest.mark.parametrize("center, size", [((300.3, 170.7), 151.37), ((40.0, 30.0), 80.0), ((1000.5, 10.2), 333.3)])
def test_crop_transform_equals_skimage_estimate(center, size):
    t = crop_transform(np.array(center), size)
    np.testing.assert_allclose(t, _official_tform(center, size), atol=1e-9)
    # the square's corners land on the crop corners; int() truncation of the side is honoured
    side = int(size * 1.25)
    tl = transform_points(np.array([center[0] - side / 2, center[1] - side / 2]), t)
    br = transform_points(np.array([center[0] + side / 2, center[1] + side / 2]), t)
    np.testing.assert_allclose(tl, [0, 0], atol=1e-9)
    np.testing.assert_allclose(br, [223, 223], atol=1e-9)


def test_similarity_estimator_matches_skimage_with_rotation_and_noise():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(7, 2)) * 40 + 100
    r = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]) * 1.7
    dst = src @ r.T + [12, -5] + rng.normal(size=(7, 2))
    np.testing.assert_allclose(
        estimate_similarity(src, dst), estimate_transform("similarity", src, dst).params, atol=1e-9
    )


def _skimage_crop(image, tform, order=1):
    return warp(image, SimilarityTransform(matrix=tform).inverse, output_shape=(224, 224), order=order) * 255.0


def test_warp_matches_skimage_on_noise():
    """Uniform noise is the worst case for cv2's 1/32-px position quantisation; tolerance: mean < 1 level."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    for t in (
        crop_transform(np.array([300.3, 170.7]), 151.37),
        estimate_similarity(rng.normal(size=(4, 2)) * 50 + 200, rng.normal(size=(4, 2)) * 50 + 110),
    ):  # rotated, arbitrary scale
        ours = warp_crop(image, t).astype(np.float64)
        ref = _skimage_crop(image, t)
        assert ours.shape == (224, 224, 3)
        diff = np.abs(ours - ref)
        assert diff.mean() < 1.0 and diff.max() <= 255 / 32 + 1
        # and it is a real comparison: a half-pixel shift of the transform is far off
        shifted = t.copy()
        shifted[:2, 2] += 0.5
        assert np.abs(warp_crop(image, shifted).astype(np.float64) - ref).mean() > 10 * diff.mean()


def test_warp_matches_skimage_on_a_face_including_outside_the_frame():
    image = synthetic.astronaut_image()
    for center, size in (((225.4, 124.2), 116.3), ((20.0, 490.0), 150.0)):  # the second runs off the image
        t = crop_transform(np.array(center), size)
        diff = np.abs(warp_crop(image, t).astype(np.float64) - _skimage_crop(image, t))
        assert diff.mean() < 0.5


def test_round_trip_frame_crop_frame():
    rng = np.random.default_rng(1)
    t = crop_transform(np.array([321.7, 190.2]), 143.9)
    pts = rng.uniform(0, 640, (50, 2))
    back = transform_points(transform_points(pts, t), invert(t))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # the take stores crop -> frame: the crop's centre pixel maps back to the box centre
    np.testing.assert_allclose(transform_points(np.array([111.5, 111.5]), invert(t)), [321.7, 190.2], atol=1e-9)


def test_crop_of_a_frame_centres_the_face(astronaut_clip, mp_reference):
    """Landmarks moved into crop space by the same transform fall where the official recipe puts a face:
    centred, spanning about 1 / (1.1 * 1.25) of the crop."""
    from backend.footage.video import open_footage

    with open_footage(astronaut_clip.path, "20:21") as footage:
        frame = next(iter(footage))
    lm = transform_points(mp_reference, astronaut_clip.transforms[20, 0])
    crop, t = face_crop(frame.image, lm, "mediapipe")
    in_crop = transform_points(lm, t)
    lo, hi = in_crop.min(axis=0), in_crop.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [111.5, 111.5], atol=2.0)
    assert ((hi - lo).mean()) == pytest.approx(223 / (1.1 * 1.25), rel=0.05)
    # crop pixels sample the frame where the inverse transform says
    u, v = 111, 111
    x, y = transform_points(np.array([u, v], float), invert(t))
    assert np.abs(crop[v, u].astype(int) - frame.image[int(round(y)), int(round(x))].astype(int)).max() < 40


def test_crops_to_tensor():
    crops = np.zeros((2, 224, 224, 3), np.uint8)
    crops[1, 10, 20] = (255, 0, 51)
    x = crops_to_tensor(crops)
    assert x.shape == (2, 3, 224, 224) and x.dtype == np.float32
    assert x[1, :, 10, 20].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert x.min() == 0.0 and x.max() == 1.0
    assert crops_to_tensor([crops[0]]).shape == (1, 3, 224, 224)
