"""Weak-perspective projection and 2D point transforms (emoca.md 3.3, docs/formats.md conventions).

Works on numpy arrays and torch tensors alike (torch is not imported here).
"""

from __future__ import annotations

import numpy as np


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def project(points, cam):
    """Orthographic projection into normalised crop coordinates (+x right, +y down).

    points (B, N, 3) model space, cam (B, 3) = [s, tx, ty]:
    x' = s (x + tx), y' = s (y + ty), z' = s z, then y' and z' are negated. Returns (B, N, 3).
    """
    s = cam[:, None, 0:1]
    t = cam[:, None, 1:3]
    xy = s * (points[..., :2] + t)
    z = s * points[..., 2:3]
    if _is_torch(points):
        import torch

        return torch.cat([xy[..., :1], -xy[..., 1:2], -z], dim=-1)
    return np.concatenate([xy[..., :1], -xy[..., 1:2], -z], axis=-1)


def normalized_to_crop_pixels(xy, size: int = 224):
    """Normalised crop coordinates [-1, 1] -> crop pixels: u = (x + 1) * size / 2 (same for v)."""
    return (xy + 1.0) * (size / 2.0)


def crop_pixels_to_normalized(uv, size: int = 224):
    """Inverse of normalized_to_crop_pixels."""
    return uv * (2.0 / size) - 1.0


def transform_points(points, T):
    """Apply 3x3 homogeneous transforms to 2D points.

    points (..., N, 2) (or (..., N, >2): only the first two columns are used), T (3, 3) or batched
    (..., 3, 3) matching the leading dimensions. Returns (..., N, 2) of the same kind (numpy or torch).
    """
    xy = points[..., :2]
    if _is_torch(points):
        import torch

        T = torch.as_tensor(T, dtype=xy.dtype, device=xy.device)
        ones = torch.ones_like(xy[..., :1])
        h = torch.cat([xy, ones], dim=-1) @ T.transpose(-1, -2)
    else:
        T = np.asarray(T, dtype=np.float64)
        h = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1) @ np.swapaxes(T, -1, -2)
    return h[..., :2] / h[..., 2:3]
