"""Textured, SH-lit rendering of FLAME-topology meshes (DECA/EMOCA `SRenderY`, emoca.md §1.5), plain torch.

Input vertices are already projected to normalised crop coordinates by `backend.flame.camera.project`
(x right, y down, z negated: smaller = nearer). Weak perspective is a rotation-free similarity plus the y/z
flip (a 180 degree rotation about x), so model-space normals are the projected normals with y and z negated;
SH shading uses model-space normals, as the original does.
"""

from __future__ import annotations

import torch

from backend.render.rasterize import Fragments, interpolate_face_attributes, rasterize
from backend.render.shading import sample_texture, sh_shading, uv_to_grid, vertex_normals

__all__ = ["render_mesh", "world2uv", "render_attributes"]

_FLIP_YZ = (1.0, -1.0, -1.0)


def _as_long(x, device) -> torch.Tensor:
    return torch.as_tensor(x, device=device).long()


def render_attributes(
    verts: torch.Tensor, faces: torch.Tensor, vertex_attrs: torch.Tensor, image_size: int | tuple[int, int] = 224
) -> tuple[torch.Tensor, Fragments]:
    """Rasterize per-vertex attributes. verts (B,V,3), faces (F,3), vertex_attrs (B,V,D) -> ((B,D,H,W), frags)."""
    frag = rasterize(verts, faces, image_size)
    vals = interpolate_face_attributes(frag.face_index, frag.bary_coords, vertex_attrs[:, faces])
    return vals.permute(0, 3, 1, 2), frag


def render_mesh(
    vertices: torch.Tensor,
    faces,
    uvcoords,
    uvfaces,
    texture: torch.Tensor,
    light: torch.Tensor | None = None,
    image_size: int | tuple[int, int] = 224,
    uv_mask: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render textured meshes in the crop.

    vertices (B, V, 3) projected normalised crop coords; faces (F, 3); uvcoords (VT, 2) in [0,1] (v up);
    uvfaces (F, 3); texture (B, 3, Ht, Wt) albedo in [0,1]; light (B, 9, 3) SH coefficients or None (then the
    albedo is shown unlit); uv_mask (1 or B, 1, Hu, Wu) optional UV-space mask (e.g. the face-eye mask) sampled
    into ``mask_images``; background (B, 3, H, W) optional (default black, as in EMOCA's training).
    Returns images (B,3,H,W) = albedo * shading * alpha (+ background), albedo_images, alpha_images (B,1,H,W),
    normal_images (model-space unit normals, B,3,H,W), shading_images, grid (B,H,W,2) UV lookup,
    transformed_normals (B,V,3), pos_mask (B,1,H,W) (visible-facing pixels), mask_images (B,1,H,W),
    depth (B,1,H,W), fragments.
    """
    dev = vertices.device
    B = vertices.shape[0]
    faces = _as_long(faces, dev)
    uvfaces = _as_long(uvfaces, dev)
    uv = torch.as_tensor(uvcoords, device=dev, dtype=vertices.dtype)
    if texture.dim() != 4 or texture.shape[0] not in (1, B):
        raise ValueError(f"texture must be (B, C, H, W) with B={B}, got {tuple(texture.shape)}")
    frag = rasterize(vertices, faces, image_size)
    alpha = frag.mask[:, None].to(vertices.dtype)

    tnormals = vertex_normals(vertices, faces)  # projected space
    flip = torch.tensor(_FLIP_YZ, device=dev, dtype=vertices.dtype).view(1, 3, 1, 1)
    face_uv = uv_to_grid(uv)[uvfaces][None].expand(B, -1, -1, -1)  # (B, F, 3, 2)
    attrs = torch.cat([face_uv, tnormals[:, faces]], dim=-1)  # (B, F, 3, 5)
    vals = interpolate_face_attributes(frag.face_index, frag.bary_coords, attrs).permute(0, 3, 1, 2)
    grid = vals[:, 0:2].permute(0, 2, 3, 1)
    tex = texture.expand(B, -1, -1, -1) if texture.shape[0] == 1 else texture
    albedo = sample_texture(tex, grid) * alpha
    tn_img = vals[:, 2:5]
    # model-space normals: the flip commutes with the (linear) interpolation, and a sign flip is exact
    normal_images = tn_img * flip
    normal_images = normal_images / normal_images.norm(dim=1, keepdim=True).clamp(min=1e-8) * alpha
    pos_mask = (tn_img[:, 2:3] < -0.05).to(vertices.dtype) * alpha
    if light is not None:
        shading = sh_shading(normal_images, light.to(vertices.dtype))
        images = albedo * shading
    else:
        shading = torch.ones_like(albedo)
        images = albedo
    images = images * alpha
    if background is not None:
        images = images + background * (1 - alpha)
    if uv_mask is not None:
        um = uv_mask.to(vertices.dtype).expand(B, -1, -1, -1)
        mask_images = sample_texture(um, grid) * alpha
    else:
        mask_images = alpha
    depth = torch.where(frag.mask, frag.zbuf, torch.zeros_like(frag.zbuf))[:, None]
    return {
        "images": images,
        "albedo_images": albedo,
        "alpha_images": alpha,
        "normal_images": normal_images,
        "shading_images": shading * alpha,
        "grid": grid,
        "transformed_normals": tnormals,
        "pos_mask": pos_mask,
        "mask_images": mask_images,
        "depth": depth,
        "fragments": frag,
    }


def world2uv(vertex_attrs: torch.Tensor, faces, uvcoords, uvfaces, uv_size: int = 256) -> torch.Tensor:
    """Rasterize per-vertex attributes into UV space (the UV rasterizer, 256 by default).

    vertex_attrs (B, V, C) (e.g. model-space vertices or normals); uvcoords (VT, 2) in [0,1] (v up) ->
    (B, C, uv_size, uv_size), image row 0 = v 1 (the texture image orientation). Zero outside the UV layout.
    """
    dev = vertex_attrs.device
    B = vertex_attrs.shape[0]
    faces = _as_long(faces, dev)
    uvfaces = _as_long(uvfaces, dev)
    uv = torch.as_tensor(uvcoords, device=dev, dtype=vertex_attrs.dtype)
    g = uv_to_grid(uv)
    uv_verts = torch.cat([g, torch.zeros_like(g[:, :1])], dim=-1)[None].expand(B, -1, -1)
    frag = rasterize(uv_verts, uvfaces, uv_size)
    vals = interpolate_face_attributes(frag.face_index, frag.bary_coords, vertex_attrs[:, faces])
    return vals.permute(0, 3, 1, 2)
