"""Weak-perspective projection and 2D transforms (numpy and torch agree)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.flame.camera import normalized_to_crop_pixels, project, transform_points


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
