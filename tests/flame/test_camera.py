"""Weak-perspective projection and 2D transforms (numpy and torch agree); the crop -> frame mapping."""

from __future__ import annotations

import numpy as np
import pytest

from backend.flame.camera import (
    CROP_SIZE,
    crop_pixels_to_normalized,
    crop_to_frame,
    normalized_to_crop_pixels,
    project,
    transform_points,
)


def test_project_numpy_by_hand():
    pts = np.array([[[0.1, 0.2, 0.3], [-0.05, 0.0, -0.1]]])
    cam = np.array([[8.0, 0.01, -0.02]])
    out = project(pts, cam)
    # x = 8 * (0.1 + 0.01) = 0.88; y = -8 * (0.2 - 0.02) = -1.44; z = -8 * 0.3
    np.testing.assert_allclose(out[0, 0], [0.88, -1.44, -2.4])
    np.testing.assert_allclose(out[0, 1], [-0.32, 0.16, 0.8])


def test_points_above_centre_land_above_in_the_image():
    out = project(np.array([[[0.0, 0.05, 0.0]]]), np.array([[5.0, 0.0, 0.0]]))
    v = normalized_to_crop_pixels(out[..., 1])
    assert v[0, 0] < 112  # +Y up in FLAME space -> smaller row in the crop


def test_normalized_to_crop_pixels():
    np.testing.assert_allclose(normalized_to_crop_pixels(np.array([-1.0, 0.0, 1.0])), [0.0, 112.0, 224.0])
    np.testing.assert_allclose(normalized_to_crop_pixels(np.array([0.5]), size=100), [75.0])


def test_transform_points_numpy_batched():
    T = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, -5.0], [0.0, 0.0, 1.0]])
    pts = np.array([[1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_allclose(transform_points(pts, T), [[12.0, -3.0], [10.0, 1.0]])
    Tb = np.stack([T, np.eye(3)])
    out = transform_points(np.stack([pts, pts]), Tb)
    np.testing.assert_allclose(out[1], pts)


def test_crop_to_frame_is_the_documented_mapping():
    """docs/formats.md: u = (x + 1) * 224 / 2 (no half-pixel term), then frame = crop @ [u, v, 1]."""
    assert CROP_SIZE == 224
    crop = np.array(
        [
            [[2.0, 0.0, 10.0], [0.0, 2.0, 20.0], [0.0, 0.0, 1.0]],
            [[0.0, -1.0, 300.0], [1.0, 0.0, 5.0], [0.0, 0.0, 1.0]],  # a quarter turn
        ]
    )
    pts = np.array([[[-1.0, -1.0], [0.0, 0.5]], [[1.0, 0.0], [0.0, 0.0]]])
    out = crop_to_frame(pts, crop)
    # (-1, -1) -> crop pixel (0, 0) -> (10, 20); (0, 0.5) -> (112, 168) -> (234, 356)
    np.testing.assert_allclose(out[0], [[10.0, 20.0], [234.0, 356.0]])
    # (1, 0) -> (224, 112) -> (-112 + 300, 224 + 5); (0, 0) -> (112, 112) -> (188, 117)
    np.testing.assert_allclose(out[1], [[188.0, 229.0], [188.0, 117.0]])
    # and back: frame -> crop pixels through the inverse, then normalised
    back = crop_pixels_to_normalized(transform_points(out, np.linalg.inv(crop)))
    np.testing.assert_allclose(back, pts, atol=1e-12)
    # extra columns (x, y, z from project) are ignored
    np.testing.assert_allclose(crop_to_frame(np.concatenate([pts, np.ones((2, 2, 1))], -1), crop), out)


@pytest.mark.torch
def test_torch_matches_numpy():
    import torch

    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2, 7, 3))
    cam = rng.normal(size=(2, 3))
    np.testing.assert_allclose(project(torch.tensor(pts), torch.tensor(cam)).numpy(), project(pts, cam), atol=1e-12)
    T = rng.normal(size=(2, 3, 3))
    T[:, 2] = [0, 0, 1]
    np.testing.assert_allclose(
        transform_points(torch.tensor(pts[..., :2]), torch.tensor(T)).numpy(), transform_points(pts[..., :2], T)
    )
    crop = rng.normal(size=(2, 3, 3))
    crop[:, 2] = [0, 0, 1]
    np.testing.assert_allclose(
        crop_to_frame(torch.tensor(pts), torch.tensor(crop)).numpy(), crop_to_frame(pts, crop), atol=1e-9
    )
