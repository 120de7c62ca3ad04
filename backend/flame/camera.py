"""The crop-space convention: the crop size, weak-perspective projection, and the 2D maps between normalised
crop coordinates, crop pixels and frame pixels (emoca.md 3.3, docs/formats.md conventions).

Conventions (the one place they are written as code):
- ``CROP_SIZE`` (224): the side of the square crop the networks see.
- Crop pixels (u, v): the pixel-index convention (integer = pixel centre, the crop spans 0..223, +u right,
  +v down); frame pixels use the same convention.
- Normalised crop coordinates (x, y) in [-1, 1], +y down: ``u = (x + 1) * 224 / 2``, with no half-pixel term
  (the official projection's formula; the half-pixel difference to the pixel-index convention is inherited).
- A take's ``crop`` (3, 3) maps homogeneous crop pixels to frame pixels: ``frame = crop @ [u, v, 1]``.

Works on numpy arrays and torch tensors alike (torch is not imported here unless a tensor comes in).
"""

from __future__ import annotations

import numpy as np

CROP_SIZE = 224


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


def normalized_to_crop_pixels(xy, size: int = CROP_SIZE):
    """Normalised crop coordinates [-1, 1] -> crop pixels: u = (x + 1) * size / 2 (same for v)."""
    return (xy + 1.0) * (size / 2.0)


def crop_pixels_to_normalized(uv, size: int = CROP_SIZE):
    """Inverse of normalized_to_crop_pixels: x = u * 2 / size - 1."""
    return uv * (2.0 / size) - 1.0


def transform_points(points, T):
    """Apply 3x3 homogeneous transforms to 2D points.

    points (..., N, 2) or (2,) (or (..., N, >2): only the first two columns are used), T (3, 3) or batched
    (..., 3, 3) matching the leading dimensions. Returns (..., N, 2) of the same kind (numpy float64 or torch in
    the points' dtype).
    """
    xy = points[..., :2]
    if _is_torch(points):
        import torch

        T = torch.as_tensor(T, dtype=xy.dtype, device=xy.device)
        ones = torch.ones_like(xy[..., :1])
        h = torch.cat([xy, ones], dim=-1) @ T.transpose(-1, -2)
    else:
        xy = np.asarray(xy, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        h = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1) @ np.swapaxes(T, -1, -2)
    return h[..., :2] / h[..., 2:3]


def crop_to_frame(points, crop, size: int = CROP_SIZE):
    """Normalised crop coordinates -> frame pixels: ``u = (x + 1) * size / 2``, then ``frame = crop @ [u, v, 1]``.

    points (B, N, 2) (or (B, N, >2): x, y used), crop (B, 3, 3) crop pixels -> frame pixels (a take's ``crop``).
    Returns (B, N, 2) frame pixels (numpy float64, or torch).
    """
    xy = points[..., :2] if _is_torch(points) else np.asarray(points, np.float64)[..., :2]
    return transform_points(normalized_to_crop_pixels(xy, size), crop)
