"""The FLAME layer as a torch module: buffers only, no hidden state (emoca.md 3.1, 3.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backend.flame import lbs as L
from backend.flame.data import FlameData
from backend.flame.landmarks import LandmarkEmbedding, MediapipeEmbedding

NECK_KIN_CHAIN = (1, 0)  # neck, then root: the rotation that decides the contour's yaw bin


@dataclass
class FlameOutput:
    """All in model space (metres). vertices (B, V, 3), joints (B, 5, 3), landmarks2d (B, 68, 3) with the
    dynamic contour, landmarks3d (B, 68, 3) the static 68-point set, landmarks_mp (B, 105, 3) or None."""

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks2d: torch.Tensor | None
    landmarks3d: torch.Tensor | None
    landmarks_mp: torch.Tensor | None


def vertices2landmarks(vertices: torch.Tensor, faces: torch.Tensor, lmk_faces: torch.Tensor,
                       lmk_bary: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Points on the surface. vertices (B, V, 3), faces (F, 3), lmk_faces (B, L), lmk_bary (B, L, 3) -> (B, L, 3)."""
    B, n_lmk = lmk_faces.shape
    tri = faces[lmk_faces.reshape(-1)].reshape(B, n_lmk, 3)  # vertex ids (B, L, 3)
    batch = torch.arange(B, device=vertices.device).view(B, 1, 1)
    corners = vertices[batch, tri]  # (B, L, 3, 3): corner k, xyz
    return torch.einsum("blk,blkc->blc", lmk_bary, corners)


def yaw_degrees(rot: torch.Tensor) -> torch.Tensor:
    """Yaw (about +Y) of rotation matrices (B, 3, 3), degrees: atan2(-R[2,0], sqrt(R00^2 + R10^2))."""
    return torch.rad2deg(torch.atan2(-rot[:, 2, 0], torch.sqrt(rot[:, 0, 0] ** 2 + rot[:, 1, 0] ** 2)))


def dynamic_bin_torch(yaw: torch.Tensor, convention: str = "deca") -> torch.Tensor:
    """The rule of landmarks.dynamic_bin on a tensor of yaw degrees (B,) -> (B,) int64."""
    if convention == "ringnet":
        yaw = -yaw
    y = torch.clamp(torch.round(yaw), max=39.0)
    idx = torch.where(y >= 0, y, 39.0 - y)
    return torch.clamp(idx, max=78.0).long()


class FLAME(nn.Module):
    """FLAME from numpy data; forward(shape, exp, pose[, neck_pose, eye_pose]) -> FlameOutput.

    shape (B, ns) and exp (B, ne) may have fewer components than the bases (they are used as a prefix, as
    DECA keeps 100 + 50). pose (B, 6) = [global | jaw] axis-angle; neck_pose (B, 3) and eye_pose (B, 6) are
    zero unless given. Full pose = [global | neck | jaw | eye_L | eye_R].
    """

    # Buffers (registered in __init__; declared here for the type checker). Landmark ones exist only with an
    # embedding (has_landmarks / has_mediapipe).
    v_template: torch.Tensor  # (V, 3)
    shapedirs: torch.Tensor  # (V, 3, n_shape)
    expdirs: torch.Tensor  # (V, 3, n_exp)
    posedirs: torch.Tensor  # (V, 3, 36)
    J_regressor: torch.Tensor  # (J, V)
    lbs_weights: torch.Tensor  # (V, J)
    parents: torch.Tensor  # (J,) int64
    faces: torch.Tensor  # (F, 3) int64
    lmk_faces_idx: torch.Tensor  # (51,) int64
    lmk_bary_coords: torch.Tensor  # (51, 3)
    dynamic_lmk_faces_idx: torch.Tensor  # (79 yaw bins, 17) int64
    dynamic_lmk_bary_coords: torch.Tensor  # (79, 17, 3)
    full_lmk_faces_idx: torch.Tensor  # (68,) int64
    full_lmk_bary_coords: torch.Tensor  # (68, 3)
    lmk_faces_idx_mediapipe: torch.Tensor  # (K,) int64
    lmk_bary_coords_mediapipe: torch.Tensor  # (K, 3)

    def __init__(
        self,
        flame_data: FlameData,
        landmark_embedding: LandmarkEmbedding | None = None,
        mediapipe_embedding: MediapipeEmbedding | None = None,
    ):
        super().__init__()
        f32 = torch.float32
        self.name = flame_data.name

        def buf(name: str, array, dtype=f32):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array), dtype=dtype))

        buf("v_template", flame_data.v_template)
        buf("shapedirs", flame_data.shapedirs)
        buf("expdirs", flame_data.expdirs)
        buf("posedirs", flame_data.posedirs)
        buf("J_regressor", flame_data.J_regressor)
        buf("lbs_weights", flame_data.weights)
        buf("parents", flame_data.parents, torch.long)
        buf("faces", flame_data.faces, torch.long)
        self.convention = "deca"
        if landmark_embedding is not None:
            landmark_embedding.validate(len(flame_data.faces))
            self.convention = landmark_embedding.convention
            buf("lmk_faces_idx", landmark_embedding.static_faces, torch.long)
            buf("lmk_bary_coords", landmark_embedding.static_bary)
            buf("dynamic_lmk_faces_idx", landmark_embedding.dynamic_faces, torch.long)
            buf("dynamic_lmk_bary_coords", landmark_embedding.dynamic_bary)
            buf("full_lmk_faces_idx", landmark_embedding.full_faces, torch.long)
            buf("full_lmk_bary_coords", landmark_embedding.full_bary)
        self.has_landmarks = landmark_embedding is not None
        self.has_mediapipe = mediapipe_embedding is not None
        if mediapipe_embedding is not None:
            buf("lmk_faces_idx_mediapipe", mediapipe_embedding.faces, torch.long)
            buf("lmk_bary_coords_mediapipe", mediapipe_embedding.bary)

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_exp(self) -> int:
        return int(self.expdirs.shape[2])

    def _bases(self, n_shape: int, n_exp: int) -> torch.Tensor:
        if n_shape > self.n_shape or n_exp > self.n_exp:
            raise ValueError(
                f"{n_shape} shape / {n_exp} expression coefficients given, the model has {self.n_shape} / {self.n_exp}"
            )
        return torch.cat([self.shapedirs[:, :, :n_shape], self.expdirs[:, :, :n_exp]], dim=2)

    def dynamic_bins(self, full_rot: torch.Tensor) -> torch.Tensor:
        """Contour table per sample from the composed neck-chain rotation. full_rot (B, J, 3, 3) -> (B,)."""
        rel = torch.eye(3, dtype=full_rot.dtype, device=full_rot.device).expand(full_rot.shape[0], 3, 3)
        for j in NECK_KIN_CHAIN:
            rel = torch.matmul(full_rot[:, j], rel)
        return dynamic_bin_torch(yaw_degrees(rel), self.convention)

    def forward(
        self,
        shape: torch.Tensor,
        exp: torch.Tensor,
        pose: torch.Tensor,
        neck_pose: torch.Tensor | None = None,
        eye_pose: torch.Tensor | None = None,
    ) -> FlameOutput:
        B = shape.shape[0]
        dtype, device = self.v_template.dtype, self.v_template.device
        shape, exp, pose = (t.to(device=device, dtype=dtype) for t in (shape, exp, pose))
        zeros = pose.new_zeros
        neck = zeros(B, 3) if neck_pose is None else neck_pose.to(device=device, dtype=dtype)
        eyes = zeros(B, 6) if eye_pose is None else eye_pose.to(device=device, dtype=dtype)
        full_pose = torch.cat([pose[:, :3], neck, pose[:, 3:6], eyes], dim=1)  # (B, 15)
        coeffs = torch.cat([shape, exp], dim=1)
        dirs = self._bases(shape.shape[1], exp.shape[1])
        vertices, joints = L.lbs(coeffs, full_pose, self.v_template, dirs, self.posedirs, self.J_regressor,
                                 self.parents, self.lbs_weights)  # fmt: skip
        lmk2d = lmk3d = lmk_mp = None
        if self.has_landmarks:
            rot = L.batch_rodrigues(full_pose.reshape(-1, 3)).reshape(B, -1, 3, 3)
            bins = self.dynamic_bins(rot)
            dyn_faces = self.dynamic_lmk_faces_idx[bins]  # (B, 17)
            dyn_bary = self.dynamic_lmk_bary_coords[bins]  # (B, 17, 3)
            faces2d = torch.cat([dyn_faces, self.lmk_faces_idx.expand(B, -1)], dim=1)
            bary2d = torch.cat([dyn_bary, self.lmk_bary_coords.expand(B, -1, -1)], dim=1)
            lmk2d = vertices2landmarks(vertices, self.faces, faces2d, bary2d)
            lmk3d = vertices2landmarks(vertices, self.faces, self.full_lmk_faces_idx.expand(B, -1),
                                       self.full_lmk_bary_coords.expand(B, -1, -1))  # fmt: skip
        if self.has_mediapipe:
            lmk_mp = vertices2landmarks(vertices, self.faces, self.lmk_faces_idx_mediapipe.expand(B, -1),
                                        self.lmk_bary_coords_mediapipe.expand(B, -1, -1))  # fmt: skip
        return FlameOutput(vertices, joints, lmk2d, lmk3d, lmk_mp)
