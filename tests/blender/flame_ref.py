"""An independent numpy statement of FLAME's forward pass (docs/formats.md rig layout), for checking Blender.

Linear blend skinning with pose correctives: identity + expression blend shapes, joints regressed from the
shaped mesh, correctives from (R_j - I) of joints 1..4, rigid transforms down the kinematic chain.
"""

from __future__ import annotations

import numpy as np


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    aa = np.asarray(aa, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.maximum(angle, 1e-12)
    theta = angle[..., None]
    kx = np.zeros(aa.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    kx[..., 1, 0], kx[..., 2, 0], kx[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def flame_forward(rig: dict, exp: np.ndarray, pose: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
    """Vertices (V,3) for one frame. pose (5,3) axis-angle: root (global), neck, jaw, eye_L, eye_R."""
    v = np.asarray(rig["v_template"], np.float64)
    if shape is not None:
        v = v + np.asarray(rig["shapedirs"], np.float64)[:, :, : len(shape)] @ shape
    v = v + np.asarray(rig["expdirs"], np.float64)[:, :, : len(exp)] @ np.asarray(exp, np.float64)
    joints = np.asarray(rig["J_regressor"], np.float64) @ v
    rot = rodrigues(np.asarray(pose, np.float64).reshape(5, 3))
    feat = (rot[1:] - np.eye(3)).reshape(-1)
    v_posed = v + np.asarray(rig["posedirs"], np.float64) @ feat
    parents = [int(p) for p in rig["parents"]]
    world: list[np.ndarray] = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rot[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0)
        world.append(local if parents[j] < 0 else world[parents[j]] @ local)
    skin = np.stack(world)
    skin[:, :3, 3] -= np.einsum("jab,jb->ja", skin[:, :3, :3], joints)
    per_vertex = np.einsum("vj,jab->vab", np.asarray(rig["weights"], np.float64), skin)
    return np.einsum("vab,vb->va", per_vertex[:, :3, :3], v_posed) + per_vertex[:, :3, 3]
