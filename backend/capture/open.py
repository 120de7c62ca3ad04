"""The open capture model: a take's face columns from MediaPipe's Face Landmarker, with no licensed file.

Per face and frame the detector (backend.footage.detect.MediaPipeDetector) already gives the 52 ARKit blendshape
scores and MediaPipe's 4x4 facial transformation matrix; this module turns the matrix into the take's pose.

Conventions. The matrix maps the canonical face model (centimetres, +y up, the face looking along +z) into
MediaPipe's metric camera space: centimetres, x right, y up, z towards the viewer (the camera at the origin
looks down -z), a perspective camera with a 63 degree vertical field of view (the Face Landmarker's default
environment: backend.footage.detect.CAMERA_VFOV_DEG). That is the take's camera frame (docs/formats.md, "Take
file"), so no axis changes:

* ``global_pose`` = the rotation part as axis-angle (radians; projected onto the nearest rotation first);
  zero = the face looking straight into the camera.
* ``translation`` = the translation part / 100: the canonical face's origin in metres. Its scale is that of
  MediaPipe's average canonical face under the assumed field of view, so metres are approximate (a small or far
  face and a large or near one differ only by the size MediaPipe assumes).
"""

from __future__ import annotations

import numpy as np

from emoca_contract.arkit import ARKIT_NAMES

CM_PER_M = 100.0


def rotation_part(matrices: np.ndarray) -> np.ndarray:
    """(B, 4, 4) transforms -> (B, 3, 3) the nearest rotations to their upper-left blocks (SVD, det +1)."""
    u, _, vt = np.linalg.svd(np.asarray(matrices, np.float64)[:, :3, :3])
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= d[:, None]  # a reflection would flip one axis: make it a rotation
    return u @ vt


def matrix_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """(B, 3, 3) rotation matrices -> (B, 3) axis-angle (radians, angle in [0, pi])."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_rotvec().reshape(-1, 3)


def pose_from_matrices(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4, 4) MediaPipe facial transformation matrices (cm) -> (global_pose (B, 3) axis-angle, translation
    (B, 3) metres), both float32 in the take's camera frame (module docstring)."""
    m = np.asarray(matrices, np.float64).reshape(-1, 4, 4)
    pose = matrix_to_axis_angle(rotation_part(m))
    return pose.astype(np.float32), (m[:, :3, 3] / CM_PER_M).astype(np.float32)


def open_rows(arkit: np.ndarray, matrices: np.ndarray) -> dict[str, np.ndarray]:
    """(B, 52) ARKit scores and (B, 4, 4) transforms -> the open take's face columns for B faces."""
    pose, translation = pose_from_matrices(matrices)
    return {
        "arkit": np.clip(np.asarray(arkit, np.float32), 0.0, 1.0),
        "global_pose": pose,
        "translation": translation,
    }


def arkit_meta(source: str, unobserved: tuple[str, ...]) -> dict:
    """The take's ``meta.arkit``: column names (ARKit's order), where they came from, what is never estimated."""
    return {"names": list(ARKIT_NAMES), "source": source, "unobserved": list(unobserved)}


def open_model_meta(device: str) -> dict:
    """The take's ``meta.model`` for the open model (no network of ours; the detector is the model)."""
    return {
        "name": "MediaPipe Face Landmarker v2 with blendshapes (open)",
        "kind": "open",
        "trained": True,
        "device": device,
    }
