"""Rotation conventions shared by the backend (smoothing, gap filling) and the add-on (bone keys): numpy only.

Conventions: axis-angle vectors (..., 3) in radians (the take's ``global_pose``/``jaw_pose``, FLAME's pose);
unit quaternions (..., 4) ordered (w, x, y, z) as Blender's ``rotation_quaternion``; rotation matrices (..., 3, 3)
act on column vectors. q and -q are the same rotation; :func:`continuous` picks signs along time so that
component-wise interpolation (Blender's F-curves, filters) follows the shorter arc.
"""

from __future__ import annotations

import numpy as np


def axis_angle_to_quat(r: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 4) unit quaternions (w, x, y, z)."""
    r = np.asarray(r, np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = angle / 2
    # sin(a/2)/a -> 1/2 as a -> 0 (Taylor: 1/2 - a^2/48)
    k = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return np.concatenate([np.cos(half), r * k], axis=-1)


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (normalised here) -> (..., 3) axis-angle with the angle in [0, pi]."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(s, q[..., :1])
    k = np.where(s > 1e-8, angle / np.maximum(s, 1e-12), 2.0 + (2.0 / 3.0) * s**2)
    return q[..., 1:] * k


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    w, x, y, z = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def axis_angle_to_matrix(r: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices (Rodrigues)."""
    return quat_to_matrix(axis_angle_to_quat(r))


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation between (..., 4) unit quaternions along the shorter arc.

    ``t``: a scalar or an array of the leading shape (...,): 0 gives q0, 1 gives q1.
    """
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    dot = (q0 * q1).sum(axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    theta = np.arccos(np.abs(dot).clip(-1, 1))
    sin = np.sin(theta)
    near = sin <= 1e-6  # nearly equal: linear interpolation, then normalise
    w0 = np.where(near, 1 - t, np.sin((1 - t) * theta) / np.where(near, 1.0, sin))
    w1 = np.where(near, t, np.sin(t * theta) / np.where(near, 1.0, sin))
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def continuous(q: np.ndarray) -> np.ndarray:
    """(N, ..., 4) quaternions along time: signs flipped so each lies in the hemisphere of the previous one."""
    q = np.array(q, np.float64)
    if len(q) > 1:
        flips = np.cumsum((q[1:] * q[:-1]).sum(axis=-1) < 0, axis=0) % 2 == 1
        q[1:][flips] *= -1
    return q
