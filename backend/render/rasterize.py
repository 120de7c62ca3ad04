"""A differentiable mesh rasterizer in plain torch (PyTorch3D's `rasterize_meshes` cannot be installed here).

Settings are the official ones (emoca.md §1.5): one face per pixel, barycentric interpolation of attributes,
z-buffer depth test (smallest z wins), blur radius 0, perspective_correct False, no back-face culling.

Coordinates (our crop convention, identical to `backend.flame.camera.project`): normalised crop coordinates,
+x right, +y down, both in [-1, 1] across the image; z is depth with SMALLER = NEARER (project() negates z so
that the face looking +Z in model space gets the smallest z). Pixel (row i, column j) has its centre at
x = -1 + (2j + 1) / W, y = -1 + (2i + 1) / H, i.e. the crop-pixel coordinate u = (x + 1) * W / 2 of a
projected landmark falls inside pixel floor(u). The original negates x and y to reach PyTorch3D's NDC (+x left,
+y up) and adds +10 to z so that depth is positive; both are internal to PyTorch3D and have no effect on the
image in our convention (only z order matters here, and orthographic depth needs no clipping).

Gradients: like PyTorch3D with blur 0, gradients reach vertex positions through the barycentric coordinates
(and so through every interpolated attribute and the interpolated depth), never through coverage (which face
covers a pixel is a discrete choice made under no_grad).

Efficiency: faces are processed vectorised, each over the pixel centres of its own bounding box; faces are
grouped by bounding-box size so that a chunk never enumerates more than ``max_candidates`` (face, pixel)
pairs, which bounds memory whatever the mix of tiny and image-sized triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Fragments", "Rasterizer", "rasterize", "barycentric_at_pixels", "interpolate_face_attributes"]


@dataclass
class Fragments:
    """The output of :func:`rasterize` (PyTorch3D's layout with faces_per_pixel = 1, squeezed).

    pix_to_face (B, H, W) int64: index into the (B*F) packed faces (b * F + f), -1 where nothing is drawn
    face_index (B, H, W) int64: index f into ``faces`` (per mesh), -1 for background
    bary_coords (B, H, W, 3): screen-space barycentrics of the pixel centre (differentiable), 0 for background
    zbuf (B, H, W): interpolated depth of the visible face (differentiable), -1 for background
    mask (B, H, W) bool: pixel covered
    """

    pix_to_face: torch.Tensor
    face_index: torch.Tensor
    bary_coords: torch.Tensor
    zbuf: torch.Tensor
    mask: torch.Tensor


def _to_pixels(xy: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised coordinate -> continuous pixel index whose integer values are pixel centres."""
    return (xy + 1.0) * (size / 2.0) - 0.5


def _edge_barycentrics(fv: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentrics of points (px, py) w.r.t. triangles fv.

    fv (..., 3, 2) triangle corners in pixel units; px, py (..., K) -> (w (..., K, 3), signed area (...,)).
    Works for both windings (divides by the signed area).
    """
    x0, y0 = fv[..., 0, 0:1], fv[..., 0, 1:2]
    x1, y1 = fv[..., 1, 0:1], fv[..., 1, 1:2]
    x2, y2 = fv[..., 2, 0:1], fv[..., 2, 1:2]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)  # (..., 1)
    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    w = torch.stack([w0, w1, w2], dim=-1) / area.unsqueeze(-1)
    return w, area.squeeze(-1)


@torch.no_grad()
def _visible_faces(fv: torch.Tensor, height: int, width: int, max_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer pass (no gradients): the nearest covering face per pixel.

    fv (B, F, 3, 3) face corners in normalised coords -> (face index (B, H*W) int64 with -1 = none,
    depth (B, H*W)).
    """
    B, F = fv.shape[:2]
    dev = fv.device
    px = _to_pixels(fv[..., 0], width)
    py = _to_pixels(fv[..., 1], height)
    z = fv[..., 2]
    x_lo = torch.ceil(px.amin(-1)).clamp(min=0)
    x_hi = torch.floor(px.amax(-1)).clamp(max=width - 1)
    y_lo = torch.ceil(py.amin(-1)).clamp(min=0)
    y_hi = torch.floor(py.amax(-1)).clamp(max=height - 1)
    area = (px[..., 1] - px[..., 0]) * (py[..., 2] - py[..., 0]) - (px[..., 2] - px[..., 0]) * (py[..., 1] - py[..., 0])
    valid = (x_hi >= x_lo) & (y_hi >= y_lo) & (area.abs() > 1e-12) & torch.isfinite(area)
    flat = torch.nonzero(valid.reshape(-1), as_tuple=False).squeeze(1)  # packed b*F+f
    npix = height * width
    zbuf = torch.full((B * npix,), float("inf"), device=dev, dtype=fv.dtype)
    fbuf = torch.full((B * npix,), -1, device=dev, dtype=torch.long)
    if flat.numel() == 0:
        return fbuf.view(B, npix), zbuf.view(B, npix)
    side = torch.maximum(x_hi - x_lo, y_hi - y_lo).reshape(-1)[flat].long() + 1  # square box side
    big = torch.iinfo(torch.long).max
    for s in torch.unique(side).tolist():  # few distinct sizes: group faces whose boxes have the same side
        group = flat[side == s]
        per_chunk = max(1, max_candidates // (s * s))
        offs = torch.arange(s, device=dev)
        oy, ox = torch.meshgrid(offs, offs, indexing="ij")
        oy, ox = oy.reshape(-1).to(fv.dtype), ox.reshape(-1).to(fv.dtype)
        for start in range(0, group.numel(), per_chunk):
            ids = group[start : start + per_chunk]
            b = ids // F
            xl, xh = x_lo.reshape(-1)[ids, None], x_hi.reshape(-1)[ids, None]
            yl, yh = y_lo.reshape(-1)[ids, None], y_hi.reshape(-1)[ids, None]
            cx = xl + ox  # (n, s*s)
            cy = yl + oy
            tri = torch.stack([px.reshape(-1, 3)[ids], py.reshape(-1, 3)[ids]], dim=-1)  # (n, 3, 2)
            w, _ = _edge_barycentrics(tri, cx, cy)
            inside = (cx <= xh) & (cy <= yh) & (w >= 0).all(-1)
            zc = (w * z.reshape(-1, 3)[ids][:, None, :]).sum(-1)
            n_idx, k_idx = torch.nonzero(inside, as_tuple=True)
            if n_idx.numel() == 0:
                continue
            pix = b[n_idx] * npix + cy[n_idx, k_idx].long() * width + cx[n_idx, k_idx].long()
            zz = zc[n_idx, k_idx]
            fid = (ids % F)[n_idx]
            cz = torch.full_like(zbuf, float("inf")).scatter_reduce_(0, pix, zz, "amin")
            win = zz == cz[pix]  # nearest in this chunk; ties -> lowest face index (deterministic)
            cf = torch.full_like(fbuf, big).scatter_reduce_(0, pix[win], fid[win], "amin")
            better = cz < zbuf
            zbuf = torch.where(better, cz, zbuf)
            fbuf = torch.where(better, cf, fbuf)
    return fbuf.view(B, npix), zbuf.view(B, npix)


def barycentric_at_pixels(
    verts: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Differentiable screen-space barycentrics of every pixel centre w.r.t. its visible face.

    verts (B, V, 3) normalised coords, faces (F, 3), face_index (B, H, W) (-1 = none) -> (B, H, W, 3).
    """
    B = verts.shape[0]
    covered = face_index >= 0
    out = verts.new_zeros(B, height, width, 3)
    b, i, j = torch.nonzero(covered, as_tuple=True)
    if b.numel() == 0:
        return out
    tri = verts[b[:, None], faces[face_index[b, i, j]]][..., :2]  # (N, 3, 2)
    tri = torch.stack([_to_pixels(tri[..., 0], width), _to_pixels(tri[..., 1], height)], dim=-1)
    w, _ = _edge_barycentrics(tri, j.to(verts.dtype)[:, None], i.to(verts.dtype)[:, None])
    return out.index_put((b, i, j), w[:, 0, :])


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size: int | tuple[int, int] = 224,
    max_candidates: int = 1 << 22,
) -> Fragments:
    """Rasterize a batch of meshes sharing one topology.

    verts (B, V, 3) in normalised crop coords (x right, y down, smaller z nearer), faces (F, 3) int64.
    Returns :class:`Fragments` at (H, W) = image_size.
    """
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B, V, 3), got {tuple(verts.shape)}")
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    faces = faces.to(verts.device).long()
    B, F = verts.shape[0], faces.shape[0]
    fv = verts.detach()[:, faces]  # (B, F, 3, 3)
    face_index, _ = _visible_faces(fv, H, W, max_candidates)
    face_index = face_index.view(B, H, W)
    mask = face_index >= 0
    bary = barycentric_at_pixels(verts, faces, face_index, H, W)
    zf = verts[..., 2][:, faces]  # (B, F, 3)
    zbuf = interpolate_face_attributes(face_index, bary, zf[..., None])[..., 0]
    zbuf = torch.where(mask, zbuf, torch.full_like(zbuf, -1.0))
    offsets = (torch.arange(B, device=verts.device) * F).view(B, 1, 1)
    pix_to_face = torch.where(mask, face_index + offsets, torch.full_like(face_index, -1))
    return Fragments(pix_to_face=pix_to_face, face_index=face_index, bary_coords=bary, zbuf=zbuf, mask=mask)


def interpolate_face_attributes(face_index: torch.Tensor, bary: torch.Tensor, face_attrs: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-face-corner attributes at each pixel.

    face_index (B, H, W) (-1 = none), bary (B, H, W, 3), face_attrs (B, F, 3, D) -> (B, H, W, D), 0 where empty.
    """
    B, H, W = face_index.shape
    D = face_attrs.shape[-1]
    idx = face_index.clamp(min=0).view(B, H * W)
    attrs = torch.gather(face_attrs.reshape(B, -1, 3 * D), 1, idx[..., None].expand(-1, -1, 3 * D))
    attrs = attrs.view(B, H, W, 3, D)
    out = (bary[..., None] * attrs).sum(-2)
    return out * (face_index >= 0)[..., None].to(out.dtype)


class Rasterizer(torch.nn.Module):
    """Module form with the official image size (224 for images, 256 for the UV rasterizer).

    ``forward(verts (B,V,3), faces (F,3), attributes (B,F,3,D)) -> (B, D+1, H, W)``: interpolated attributes
    with the coverage mask as the last channel (the layout DECA's renderer consumes).
    """

    def __init__(self, image_size: int = 224, max_candidates: int = 1 << 22):
        super().__init__()
        self.image_size = image_size
        self.max_candidates = max_candidates

    def fragments(self, verts: torch.Tensor, faces: torch.Tensor) -> Fragments:
        return rasterize(verts, faces, self.image_size, self.max_candidates)

    def forward(self, verts: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        frag = self.fragments(verts, faces)
        vals = interpolate_face_attributes(frag.face_index, frag.bary_coords, attributes)
        out = torch.cat([vals, frag.mask[..., None].to(vals.dtype)], dim=-1)
        return out.permute(0, 3, 1, 2)
