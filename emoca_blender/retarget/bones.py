"""Bone rotations for retargeting (numpy + the contract): axis remaps, the jaw from ``jawOpen``, rotation modes.

Conventions: quaternions (..., 4) are (w, x, y, z) as Blender's ``rotation_quaternion`` (emoca_contract.rotations).
A take's rotations are in its camera frame (+X the performer's left, +Y up, +Z out of the face); a pose bone turns
in its own rest axes. An axis setting names, for the take's X, Y and Z in turn, the bone axis it becomes:
``"X,Y,Z"`` (the default) suits a bone pointing up the neck with roll 0 in a character facing -Y (Blender's front
view): its local X is the character's left, Y is up and Z points out of the face, as in the take; ``"X,-Z,Y"``
turns the take's up into the bone's -Z. The remapped rotation is P R P^T for the signed permutation P, which is a
rotation whatever P's handedness. Euler angles follow Blender: order "XYZ" turns about X first, so R = Rz Ry Rx.
"""

from __future__ import annotations

import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.rotations import continuous, quat_to_matrix

AXES = "XYZ"
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
ROTATION_MODES = (*EULER_ORDERS, "QUATERNION", "AXIS_ANGLE")


def parse_axis(text: str, where: str = "axis") -> np.ndarray:
    """``"X"``, ``"-Y"``, ``"+Z"`` -> the signed unit vector (3,); config_invalid otherwise."""
    t = str(text).strip().upper()
    sign = -1.0 if t.startswith("-") else 1.0
    t = t.lstrip("+-")
    if len(t) != 1 or t not in AXES:
        raise EmocaError("config_invalid", f"{where} {text!r}: expected an axis X, Y or Z with an optional sign (-Z)")
    v = np.zeros(3)
    v[AXES.index(t)] = sign
    return v


def parse_axes(text: str, where: str = "axes") -> np.ndarray:
    """``"X,-Z,Y"`` -> the signed permutation P (3, 3) with P @ (take axis i) = (bone axis); its columns are the
    bone axes the take's X, Y, Z become. config_invalid unless it names each of X, Y, Z once."""
    parts = [p for p in str(text).replace(" ", "").split(",")]
    if len(parts) != 3:
        raise EmocaError("config_invalid", f"{where} {text!r}: expected three axes such as X,Y,Z or X,-Z,Y")
    cols = [parse_axis(p, where) for p in parts]
    p = np.stack(cols, 1)
    if not np.allclose(np.abs(p).sum(0), 1) or not np.allclose(np.abs(p).sum(1), 1):
        raise EmocaError("config_invalid", f"{where} {text!r}: each of X, Y and Z must appear once")
    return p


def remap_quats(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) of rotations R in the take's axes -> those of P R P^T in the bone's axes."""
    q = np.asarray(q, np.float64)
    out = q.copy()
    out[..., 1:] = np.linalg.det(p) * np.einsum("ij,...j->...i", p, q[..., 1:])
    return out


def axis_quats(angle: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Angles (K,) radians about one unit axis (3,) -> quaternions (K, 4)."""
    half = np.asarray(angle, np.float64) / 2
    return np.concatenate([np.cos(half)[:, None], np.sin(half)[:, None] * np.asarray(axis)[None, :]], 1)


def jaw_open_quats(jaw_open: np.ndarray, axis: str, gain: float) -> np.ndarray:
    """The jaw's rotation from an ARKit ``jawOpen`` curve (K,): ``gain * jawOpen`` radians about ``axis``."""
    return axis_quats(gain * np.asarray(jaw_open, np.float64), parse_axis(axis, "jaw_open_axis"))


def quat_to_euler(q: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """Quaternions (K, 4) -> Euler angles (K, 3) in Blender's ``order`` (angles about X, Y, Z), unwrapped in time."""
    if order not in EULER_ORDERS:
        raise EmocaError("config_invalid", f"Euler order {order!r}: expected one of {EULER_ORDERS}")
    m = quat_to_matrix(np.asarray(q, np.float64))
    a, b, c = (AXES.index(ch) for ch in order)  # R = R_c @ R_b @ R_a
    s = 1.0 if order in ("XYZ", "YZX", "ZXY") else -1.0  # even permutations of XYZ
    angles = np.empty((len(m), 3))
    angles[:, b] = np.arcsin(np.clip(-s * m[:, c, a], -1.0, 1.0))
    angles[:, a] = np.arctan2(s * m[:, c, b], m[:, c, c])
    angles[:, c] = np.arctan2(s * m[:, b, a], m[:, a, a])
    return np.unwrap(angles, axis=0) if len(angles) > 1 else angles


def quat_to_blender_axis_angle(q: np.ndarray) -> np.ndarray:
    """Quaternions (K, 4) -> Blender's ``rotation_axis_angle`` (K, 4): (angle, x, y, z), axis +Y at no rotation."""
    q = continuous(np.asarray(q, np.float64))  # continuous in time: angles past pi rather than axis flips
    s = np.linalg.norm(q[:, 1:], axis=1)
    angle = 2 * np.arctan2(s, q[:, 0])
    axis = np.where(s[:, None] > 1e-9, q[:, 1:] / np.maximum(s, 1e-12)[:, None], [0.0, 1.0, 0.0])
    return np.concatenate([angle[:, None], axis], 1)


def rotation_channel(q: np.ndarray, mode: str) -> tuple[str, np.ndarray]:
    """The pose-bone property and values (K, C) that key rotations ``q`` (K, 4) for a bone in ``mode``."""
    if mode == "QUATERNION":
        return "rotation_quaternion", continuous(q)
    if mode == "AXIS_ANGLE":
        return "rotation_axis_angle", quat_to_blender_axis_angle(q)
    return "rotation_euler", quat_to_euler(q, mode)
