"""Spherical-harmonics shading, normals, UV texture sampling (plain torch; emoca.md §1.5).

SH lighting (DECA/EMOCA `add_SHlight`): 9 basis functions of the unit normal n = (x, y, z):
    1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1
each multiplied by a constant; shading(n) = sum_k light[k] * SH_CONSTANTS[k] * basis_k(n), per RGB channel,
and image = albedo * shading * alpha.

Derivation of SH_CONSTANTS (Ramamoorthi & Hanrahan 2001, "An efficient representation for irradiance
environment maps"): irradiance E(n) = sum_lm A_l L_lm Y_lm(n) with the clamped-cosine band factors
A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4, and the real SH in Cartesian form
    Y_00 = 1/sqrt(4 pi)
    Y_1m = sqrt(3/(4 pi)) * (x, y, z)
    Y_2m = sqrt(15/(4 pi)) * (xy, xz, yz) = 3 sqrt(5/(12 pi)) * (...)
    Y_22 = sqrt(15/(16 pi)) (x^2 - y^2) = (3/2) sqrt(5/(12 pi)) (x^2 - y^2)
    Y_20 = sqrt(5/(16 pi)) (3 z^2 - 1) = (1/2) sqrt(5/(4 pi)) (3 z^2 - 1)
The constants are the Y normalisations times the band factors A_1, A_2 for bands 1 and 2; band 0 keeps the
bare 1/sqrt(4 pi) (the original's convention: c0 = 1/sqrt(4 pi), the missing factor pi is absorbed by the
learned light coefficients, so official light codes must be shaded with exactly these constants).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_PI = math.pi
SH_CONSTANTS: tuple[float, ...] = (
    1.0 / math.sqrt(4 * _PI),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (3 / 2) * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (1 / 2) * math.sqrt(5 / (4 * _PI)),
)


def sh_basis(normals: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The 9 SH basis functions (times SH_CONSTANTS) of unit normals.

    normals (B, 3, H, W) with the xyz axis at ``dim`` -> (B, 9, H, W) (the 9 stacked at ``dim``).
    """
    x, y, z = normals.unbind(dim)
    ones = torch.ones_like(x)
    basis = [ones, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1]
    c = torch.tensor(SH_CONSTANTS, dtype=normals.dtype, device=normals.device)
    out = torch.stack(basis, dim)
    shape = [1] * out.dim()
    shape[dim] = 9
    return out * c.view(shape)


def sh_shading(normal_images: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """SH irradiance per pixel. normal_images (B, 3, H, W), light (B, 9, 3) -> shading (B, 3, H, W)."""
    basis = sh_basis(normal_images, dim=1)  # (B, 9, H, W)
    return torch.einsum("bkhw,bkc->bchw", basis, light)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised (area-weighted) face normals. verts (B, V, 3), faces (F, 3) -> (B, F, 3)."""
    v = verts[:, faces]
    return torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit vertex normals: the area-weighted sum of adjacent face normals. (B, V, 3), (F, 3) -> (B, V, 3)."""
    fn = face_normals(verts, faces)  # (B, F, 3)
    B, V = verts.shape[:2]
    out = verts.new_zeros(B, V, 3)
    for k in range(3):
        out = out.index_add(1, faces[:, k], fn)
    return out / out.norm(dim=-1, keepdim=True).clamp(min=eps)


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """Texture coordinates (u right, v UP, [0,1], OBJ convention) -> grid_sample coords (x right, y down)."""
    return torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)


def sample_texture(texture: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup. texture (B, C, Ht, Wt), grid (B, H, W, 2) in [-1,1] -> (B, C, H, W)."""
    return F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)


def light_from_direction(direction, ambient: float = 0.6, directional: float = 0.5, batch: int = 1) -> torch.Tensor:
    """A simple white SH light (B, 9, 3): ambient plus a cosine lobe from ``direction`` (x right, y up, z out).

    Irradiance of a directional light d: E(n) = A_0 + A_1 (n . d) in band 0/1, so the band-1 coefficients are
    proportional to d; band-0 gives the ambient level. Used for the synthetic clip, not by the networks.
    """
    d = torch.as_tensor(direction, dtype=torch.float32)
    d = d / d.norm()
    light = torch.zeros(9, 3)
    light[0] = ambient / SH_CONSTANTS[0]
    light[1:4] = (directional / SH_CONSTANTS[1]) * d[:, None]
    return light[None].repeat(batch, 1, 1)
