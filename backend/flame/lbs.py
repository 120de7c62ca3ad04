"""Linear blend skinning for FLAME, one pure torch function per step (emoca.md 3.1).

B = batch, V = vertices, J = joints (5), K = blend-shape coefficients, P = 9 * (J - 1) pose features (36).
All functions are differentiable, device/dtype-agnostic and keep no state.
"""

from __future__ import annotations

import torch


def blend_shapes(coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Linear shape offsets. coeffs (B, K), dirs (V, 3, K) -> (B, V, 3)."""
    return torch.einsum("bk,vck->bvc", coeffs, dirs)


def vertices2joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint locations regressed from vertices. J_regressor (J, V), vertices (B, V, 3) -> (B, J, 3)."""
    return torch.einsum("jv,bvc->bjc", J_regressor, vertices)


def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N, 3) -> rotation matrices (N, 3, 3): R = I + sin(t) K + (1 - cos(t)) K^2.

    The angle is sqrt(|r|^2 + 1e-16) so that r = 0 gives exactly I with a finite (zero) gradient.
    """
    angle = torch.sqrt((rot_vecs * rot_vecs).sum(dim=1, keepdim=True) + 1e-16)  # (N, 1)
    axis = rot_vecs / angle
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)
    sin = torch.sin(angle).unsqueeze(-1)
    cos = torch.cos(angle).unsqueeze(-1)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device).unsqueeze(0)
    return eye + sin * K + (1.0 - cos) * torch.bmm(K, K)


def pose_features(rot_mats: torch.Tensor) -> torch.Tensor:
    """Pose-corrective features (R_j - I) of the non-root joints, row-major. rot_mats (B, J, 3, 3) -> (B, P)."""
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).reshape(rot_mats.shape[0], -1)


def rigid_transforms(
    rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kinematic chain.

    rot_mats (B, J, 3, 3) local joint rotations, joints (B, J, 3) rest joint positions, parents (J,) with -1
    for the root (each parent listed before its children).
    Returns posed joints (B, J, 3) and the skinning transforms (B, J, 4, 4) that map a rest-pose point to its
    posed position under joint j alone (world transform with the rest joint position removed).
    """
    B, J = joints.shape[:2]
    parent_list = [int(p) for p in parents.tolist()]
    rel = joints.clone()
    for j, p in enumerate(parent_list):
        if p >= 0:
            rel[:, j] = joints[:, j] - joints[:, p]
    local = torch.zeros(B, J, 4, 4, dtype=joints.dtype, device=joints.device)
    local[:, :, :3, :3] = rot_mats
    local[:, :, :3, 3] = rel
    local[:, :, 3, 3] = 1.0
    world = [local[:, 0]]
    for j in range(1, J):
        world.append(torch.matmul(world[parent_list[j]], local[:, j]))
    world_t = torch.stack(world, dim=1)  # (B, J, 4, 4)
    posed_joints = world_t[:, :, :3, 3]
    # remove the rest joint position: A = W * T(-J_rest)
    offset = torch.einsum("bjik,bjk->bji", world_t[:, :, :3, :3], joints)
    skinning = world_t.clone()
    skinning[:, :, :3, 3] = posed_joints - offset
    return posed_joints, skinning


def skin(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Blend the joint transforms per vertex.

    vertices (B, V, 3), weights (V, J), transforms (B, J, 4, 4) -> (B, V, 3).
    """
    T = torch.einsum("vj,bjmn->bvmn", weights, transforms)  # (B, V, 4, 4)
    return torch.einsum("bvmn,bvn->bvm", T[:, :, :3, :3], vertices) + T[:, :, :3, 3]


def lbs(
    coeffs: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    dirs: torch.Tensor,
    posedirs: torch.Tensor,
    J_regressor: torch.Tensor,
    parents: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole FLAME deformation.

    coeffs (B, K) shape|expression coefficients, pose (B, J*3) axis-angle per joint, v_template (V, 3),
    dirs (V, 3, K), posedirs (V, 3, P), J_regressor (J, V), parents (J,), weights (V, J).
    Returns vertices (B, V, 3) and posed joints (B, J, 3).
    """
    B = coeffs.shape[0]
    v_shaped = v_template.unsqueeze(0) + blend_shapes(coeffs, dirs)
    joints = vertices2joints(J_regressor, v_shaped)
    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).reshape(B, -1, 3, 3)
    v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_features(rot_mats), posedirs)
    posed_joints, transforms = rigid_transforms(rot_mats, joints, parents)
    return skin(v_posed, weights, transforms), posed_joints
