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
pairs, which bounds memory whatever the mix of tiny and image-sized triangles. Only the (face, pixel) pairs
inside a face are kept (about the covered area times the depth complexity), and one scatter-min over all of
them is the depth test; attributes are interpolated at covered pixels only.
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


def _inside(tri: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Whether pixel centres (cx, cy) (n, K) lie in triangles tri (n, 3, 2) (pixel units), edges included:
    each edge function has the sign of the signed area (the barycentrics' signs, without the division)."""
    x0, y0 = tri[:, 0, 0:1], tri[:, 0, 1:2]
    x1, y1 = tri[:, 1, 0:1], tri[:, 1, 1:2]
    x2, y2 = tri[:, 2, 0:1], tri[:, 2, 1:2]
    sign = torch.sign((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))
    inside = ((x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)) * sign >= 0
    inside &= ((x0 - x2) * (cy - y2) - (y0 - y2) * (cx - x2)) * sign >= 0
    inside &= ((x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)) * sign >= 0
    return inside


def _face_boxes(fv: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Per face (packed b*F+f): corners in pixel units px, py (B*F, 3), depth z (B*F, 3), the box of pixel
    centres it may cover x_lo, x_hi, y_lo, y_hi (B*F,), and whether it can cover any (valid, (B*F,) bool)."""
    px = _to_pixels(fv[..., 0], width).reshape(-1, 3)
    py = _to_pixels(fv[..., 1], height).reshape(-1, 3)
    z = fv[..., 2].reshape(-1, 3)
    x_lo = torch.ceil(px.amin(-1)).clamp(min=0)
    x_hi = torch.floor(px.amax(-1)).clamp(max=width - 1)
    y_lo = torch.ceil(py.amin(-1)).clamp(min=0)
    y_hi = torch.floor(py.amax(-1)).clamp(max=height - 1)
    area = (px[:, 1] - px[:, 0]) * (py[:, 2] - py[:, 0]) - (px[:, 2] - px[:, 0]) * (py[:, 1] - py[:, 0])
    valid = (x_hi >= x_lo) & (y_hi >= y_lo) & (area.abs() > 1e-12) & torch.isfinite(area)
    return px, py, z, x_lo, x_hi, y_lo, y_hi, valid


@torch.no_grad()
def _visible_faces(fv: torch.Tensor, height: int, width: int, max_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer pass (no gradients): the nearest covering face per pixel; equal depths go to the lowest face
    index, whatever the chunking.

    fv (B, F, 3, 3) face corners in normalised coords -> (face index (B, H*W) int64 with -1 = none,
    depth (B, H*W)). Faces are enumerated over their own boxes, grouped by box side (one sort), in chunks of at
    most ``max_candidates`` (face, pixel) pairs; only the pairs inside a face are kept, then ONE scatter-min
    over all of them picks the depth and a second the face.
    """
    B, F = fv.shape[:2]
    dev = fv.device
    npix = height * width
    px, py, z, x_lo, x_hi, y_lo, y_hi, valid = _face_boxes(fv, height, width)
    flat = torch.nonzero(valid, as_tuple=False).squeeze(1)  # packed b*F+f
    zbuf = torch.full((B * npix,), float("inf"), device=dev, dtype=fv.dtype)
    fbuf = torch.full((B * npix,), -1, device=dev, dtype=torch.long)
    if flat.numel() == 0:
        return fbuf.view(B, npix), zbuf.view(B, npix)
    side = torch.maximum(x_hi[flat] - x_lo[flat], y_hi[flat] - y_lo[flat]).long() + 1  # square box side
    side, order = torch.sort(side, stable=True)
    flat = flat[order]
    sizes, counts = torch.unique_consecutive(side, return_counts=True)
    pix_parts, z_parts, f_parts = [], [], []
    start = 0
    for s, count in zip(sizes.tolist(), counts.tolist()):  # few distinct sizes: one box shape per group
        group = flat[start : start + count]
        start += count
        offs = torch.arange(s, device=dev, dtype=fv.dtype)
        oy, ox = (o.reshape(-1) for o in torch.meshgrid(offs, offs, indexing="ij"))
        per_chunk = max(1, max_candidates // (s * s))
        for a in range(0, group.numel(), per_chunk):
            ids = group[a : a + per_chunk]
            cx = x_lo[ids, None] + ox  # (n, s*s) pixel centres of each face's box
            cy = y_lo[ids, None] + oy
            tri = torch.stack([px[ids], py[ids]], dim=-1)  # (n, 3, 2)
            inside = (cx <= x_hi[ids, None]) & (cy <= y_hi[ids, None]) & _inside(tri, cx, cy)
            n_idx, k_idx = torch.nonzero(inside, as_tuple=True)
            qx, qy = cx[n_idx, k_idx], cy[n_idx, k_idx]
            pix_parts.append((ids[n_idx] // F) * npix + qy.long() * width + qx.long())
            w, _ = _edge_barycentrics(tri[n_idx], qx[:, None], qy[:, None])  # depth only where inside
            z_parts.append((w[:, 0] * z[ids[n_idx]]).sum(-1))
            f_parts.append(ids[n_idx] % F)
    pix, zz, fid = torch.cat(pix_parts), torch.cat(z_parts), torch.cat(f_parts)
    zbuf.scatter_reduce_(0, pix, zz, "amin")
    win = zz == zbuf[pix]  # the nearest; ties -> lowest face index (deterministic)
    big = torch.iinfo(torch.long).max
    fbuf = torch.full_like(fbuf, big).scatter_reduce_(0, pix[win], fid[win], "amin")
    fbuf = torch.where(fbuf == big, torch.full_like(fbuf, -1), fbuf)
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
    Only covered pixels are computed (one (1, 3) x (3, D) product each); empty ones stay exactly 0.
    """
    B, H, W = face_index.shape
    D = face_attrs.shape[-1]
    dtype = torch.promote_types(bary.dtype, face_attrs.dtype)
    flat = face_index.view(B, H * W)
    b, p = torch.nonzero(flat >= 0, as_tuple=True)
    corners = face_attrs.to(dtype)[b, flat[b, p]]  # (N, 3, D)
    w = bary.to(dtype).view(B, H * W, 3)[b, p]  # (N, 3)
    vals = torch.bmm(w.unsqueeze(1), corners).squeeze(1)  # (N, D)
    return face_attrs.new_zeros(B, H * W, D, dtype=dtype).index_put((b, p), vals).view(B, H, W, D)


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
