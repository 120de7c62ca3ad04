"""A texture taken from the footage (docs/likeness.md "Texture"): the visible face unwrapped into the rig's UVs.

For every frame used: the posed mesh is drawn in the frame's camera (backend.render's rasterizer: the z-buffer
says what is visible), each texel of the UV layout is placed on the posed surface (where its UV falls on a
triangle, by the triangle's barycentric coordinates), and the frame is sampled there (bilinear) when the texel
is visible and faces the camera. The samples are accumulated over the clip, each weighted by
``max(0, (cos - min_facing) / (1 - min_facing)) ** facing_power`` of the angle between the surface normal and the
direction to the camera, so the texture at a texel is mostly what the frames that saw it face-on showed. A texel
is visible when its depth is within ``depth_tolerance`` of the nearest surface drawn at every pixel of the 3x3
block around it (so samples next to an occluding edge or the silhouette, which would mix two surfaces or the
background, are dropped).

Then the unseen texels are filled: first from their mirror image (the texel nearest to the texel's rest position
reflected across the head's plane of symmetry, x = 0 in both heads' model space, when it lies within
:data:`MIRROR_DISTANCE` and was seen), then by a smooth push-pull fill (weighted averages over a pyramid of
halved resolutions, pushed back down with bilinear upsampling) over everything still empty, UV islands' margins
included, so that filtering across a seam in Blender meets plausible colour.

Light (``delight``): the footage's shading is estimated and divided out. The light is taken as fixed in the
camera's frame over the clip (a still camera and lights, the head moving), a grey irradiance of the surface
normal n (camera frame: x right, y up, z towards the camera) in the nine second-order spherical harmonics
``s(n) = B(n) . L``; a sample of texel t in frame k is ``albedo(t) * s(n_kt)``. L is fitted on a fixed subset of
:data:`SHADING_TEXELS` texels by alternating least squares (albedos given L, then L given albedos, ridge towards a
uniform light), normalised so that a surface facing the camera gets ``s = 1``; every texel's albedo is then its
least-squares value ``sum(w c s) / sum(w s^2)`` over its samples (from per-texel sums of ``w c B`` and
``w B B^T``, so one pass over the footage suffices). The texture is thus the colour a surface shows when it faces
the camera under the clip's light (the light's overall level and colour cannot be told from the skin's). When the
head hardly turns, each texel is seen under one normal and the light is not observable; the ridge then keeps it
uniform (the same as no de-lighting).

Colour: frames are sRGB; samples are accumulated in linear RGB and the albedo is written sRGB-encoded (8-bit
PNG, the base colour Blender reads as sRGB). The coverage PNG (8-bit grey) is the
accumulated weight, 255 at :data:`FULL_WEIGHT` (about two face-on views) or more, 0 where the texel was never
seen (mirrored or filled).

Layout: an image spans ``uv_range`` = ((u0, u1), (v0, v1)): the FLAME UV square ((0, 1), (0, 1)) or the ICT
rig's face and back-of-head tiles ((0, 2), (0, 1)); image row 0 is v1 (top), the texel (row i, column j) has its
centre at u = u0 + (u1 - u0) (j + 0.5) / W, v = v1 - (v1 - v0) (i + 0.5) / H.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from backend.render.rasterize import rasterize

FULL_WEIGHT = 2.0
SHADING_TEXELS = 6000  # texels whose samples fit the light
SHADING_RIDGE = 0.05  # pull of the light towards uniform (per coefficient, relative to the data)
MIN_SHADING = 0.05  # irradiance floor when dividing
MIRROR_DISTANCE = 0.004  # metres: a mirror texel farther than this from the reflected point is not the mirror


@dataclass(frozen=True)
class TextureOptions:
    """How the texture is unwrapped (module docstring)."""

    texels: int = 512  # texels per unit of v (the image is texels * (u1 - u0) wide, texels high)
    min_facing: float = 0.2  # cosines below this get no weight
    facing_power: float = 2.0
    depth_tolerance: float = 0.004  # metres (in the camera's depth units)
    delight: bool = True
    mirror: bool = True
    fill: bool = True


@dataclass(frozen=True)
class UvLayout:
    """A textured mesh's UV layout: triangles (T, 3) vertex ids, their corner UVs (T, 3, 2), which triangles
    carry the texture (T,) bool, and the image's span ``uv_range`` ((u0, u1), (v0, v1))."""

    faces: np.ndarray
    uvs: np.ndarray
    textured: np.ndarray
    uv_range: tuple[tuple[float, float], tuple[float, float]]

    def image_size(self, texels: int) -> tuple[int, int]:
        """(W, H) of the image at ``texels`` per unit of v."""
        (u0, u1), (v0, v1) = self.uv_range
        return round(texels * (u1 - u0) / (v1 - v0)), texels


@dataclass(frozen=True)
class TexelMap:
    """Where the texels lie on the mesh: for the M texels inside a textured triangle, their flat image index
    (M,) into H * W, the triangle (M,) (into the layout's faces), barycentric coordinates (M, 3); size (W, H)."""

    index: np.ndarray
    triangle: np.ndarray
    bary: np.ndarray
    size: tuple[int, int]

    def corners(self, faces: np.ndarray) -> np.ndarray:
        """The texels' triangle corners as vertex ids (M, 3)."""
        return faces[self.triangle]


@dataclass
class Accumulator:
    """Running sums over frames: weight (M,) and weighted linear colour (M, 3); with de-lighting also the sums of
    ``w c B(n)`` (M, 3, 9) and ``w B B^T`` (M, 9, 9), and the shading subset's samples (lists of (K, Q) weights,
    (K, Q, 3) colours, (K, Q, 3) normals) at the texels ``subset`` (Q,)."""

    weight: np.ndarray
    color: np.ndarray
    color_basis: np.ndarray | None = None
    gram: np.ndarray | None = None
    subset: np.ndarray | None = None
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    frames: int = 0

    @classmethod
    def empty(cls, m: int, delight: bool) -> Accumulator:
        if not delight:
            return cls(np.zeros(m), np.zeros((m, 3)))
        subset = np.unique(np.linspace(0, m - 1, min(m, SHADING_TEXELS)).astype(np.int64))
        return cls(np.zeros(m), np.zeros((m, 3)), np.zeros((m, 3, 9), np.float32), np.zeros((m, 9, 9), np.float32),
                   subset)  # fmt: skip


@dataclass(frozen=True)
class PosedFrames:
    """K frames of a posed mesh in their cameras: screen (K, V, 2) frame pixels, depth (K, V) (smaller is nearer,
    metres), unit normals (K, V, 3) and unit directions to the camera (K, V, 3) in one frame of reference."""

    screen: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    towards: np.ndarray


# ---------------------------------------------------------------------------------------------- layout
def uv_to_ndc(uv: np.ndarray, uv_range: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
    """UVs (..., 2) (v up) -> the rasterizer's normalised image coordinates (x right, y down, in [-1, 1])."""
    (u0, u1), (v0, v1) = uv_range
    return np.stack([2 * (uv[..., 0] - u0) / (u1 - u0) - 1, 1 - 2 * (uv[..., 1] - v0) / (v1 - v0)], -1)


def texel_map(layout: UvLayout, texels: int) -> TexelMap:
    """Rasterize the textured triangles in UV space: which triangle and where in it each texel centre lies."""
    keep = np.flatnonzero(layout.textured)
    w, h = layout.image_size(texels)
    xy = uv_to_ndc(layout.uvs[keep], layout.uv_range)  # (T', 3, 2)
    verts = torch.as_tensor(np.concatenate([xy, np.zeros((*xy.shape[:2], 1))], -1), dtype=torch.float64)
    frag = rasterize(verts.reshape(1, -1, 3), torch.arange(3 * len(keep)).view(-1, 3), (h, w))
    face = frag.face_index[0].reshape(-1).numpy()
    inside = np.flatnonzero(face >= 0)
    bary = frag.bary_coords[0].reshape(-1, 3).numpy()[inside]
    return TexelMap(inside, keep[face[inside]], bary, (w, h))


def texel_values(tmap: TexelMap, faces: np.ndarray, per_vertex: np.ndarray) -> np.ndarray:
    """Per-vertex values (..., V, D) at the texels (..., M, D) (barycentric interpolation)."""
    corners = tmap.corners(faces)
    return np.einsum("mi,...mid->...md", tmap.bary, per_vertex[..., corners, :])


# ---------------------------------------------------------------------------------------------- one frame
def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> linear float32 in [0, 1] (a 256-entry table)."""
    c = np.arange(256, dtype=np.float64) / 255.0
    table = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return table[np.asarray(image, np.uint8)]


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] -> sRGB-encoded values in [0, 1]."""
    c = np.clip(linear, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def front_facing(posed: PosedFrames, faces: np.ndarray) -> np.ndarray:
    """Triangles (T,) bool whose screen winding faces the camera in at least one frame (counter-clockwise seen
    from outside, screen y down): only those can be the nearest surface of a mesh closed where it is seen."""
    a, b, c = (posed.screen[:, faces[:, i]] for i in range(3))
    cross = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    return (cross < 0).any(0)


def depth_buffer(posed: PosedFrames, faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The nearest surface's depth per pixel (K, H, W); -inf where nothing is drawn (so that a sample next to the
    background never counts as visible)."""
    w, h = size
    ndc = np.concatenate([(2 * posed.screen + 1) / np.array([w, h]) - 1, posed.depth[..., None]], -1)
    front = faces[front_facing(posed, faces)]
    frag = rasterize(torch.as_tensor(ndc, dtype=torch.float32), torch.as_tensor(front).long(), (h, w))
    return torch.where(frag.mask, frag.zbuf, torch.tensor(-np.inf)).numpy()


def nearest_in_block(zbuf: np.ndarray) -> np.ndarray:
    """The minimum depth over each pixel's 3x3 block (K, H, W) (a drawn pixel beside the background: -inf)."""
    z = torch.as_tensor(zbuf)
    return (-F.max_pool2d(-z[:, None], 3, stride=1, padding=1))[:, 0].numpy()


def bilinear(images: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Sample images (K, H, W, C) at pixel positions (K, M, 2) (x, y; integers are pixel centres; clamped at the
    border) -> (K, M, C) float32."""
    h, w = images.shape[1:3]
    grid = torch.as_tensor((2 * points + 1) / np.array([w, h]) - 1, dtype=torch.float32)[:, None]  # (K, 1, M, 2)
    img = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].permute(0, 2, 1).numpy()


def facing_weight(cosine: np.ndarray, options: TextureOptions) -> np.ndarray:
    """The sample weight of a facing cosine (module docstring)."""
    t = np.clip((cosine - options.min_facing) / (1 - options.min_facing), 0.0, 1.0)
    return t**options.facing_power


def unwrap(images: np.ndarray, posed: PosedFrames, layout: UvLayout, all_faces: np.ndarray, tmap: TexelMap,
           options: TextureOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One batch of frames: (weights (K, M), linear colours (K, M, 3), unit normals (K, M, 3)) of the texels.
    ``images`` (K, H, W, 3) uint8 sRGB; ``all_faces`` (T, 3) every triangle that can occlude (the whole mesh)."""
    h, w = images.shape[1:3]
    zmin = nearest_in_block(depth_buffer(posed, all_faces, (w, h)))
    pix = texel_values(tmap, layout.faces, posed.screen)  # (K, M, 2)
    depth = texel_values(tmap, layout.faces, posed.depth[..., None])[..., 0]
    normal = texel_values(tmap, layout.faces, posed.normals)
    towards = texel_values(tmap, layout.faces, posed.towards)
    normal = normal / np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    cosine = np.einsum("kmc,kmc->km", normal, towards) / (np.linalg.norm(towards, axis=-1) + 1e-12)
    inside = (pix[..., 0] >= 0) & (pix[..., 0] <= w - 1) & (pix[..., 1] >= 0) & (pix[..., 1] <= h - 1)
    ij = np.clip(np.rint(pix[..., ::-1]).astype(np.int64), 0, [h - 1, w - 1])
    nearest = zmin[np.arange(len(images))[:, None], ij[..., 0], ij[..., 1]]
    visible = inside & (depth <= nearest + options.depth_tolerance)
    weight = np.where(visible, facing_weight(cosine, options), 0.0)
    colour = bilinear(srgb_to_linear(images), pix)
    return weight, colour, normal


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """The nine second-order spherical-harmonic polynomials of unit normals (..., 3) -> (..., 9) (unnormalised:
    the light's coefficients are fitted, so constants do not matter)."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)


def accumulate(acc: Accumulator, weight: np.ndarray, colour: np.ndarray, normal: np.ndarray) -> None:
    """Add a batch's samples (K, M), (K, M, 3), (K, M, 3) to the running sums."""
    acc.weight += weight.sum(0)
    acc.color += np.einsum("km,kmc->mc", weight, colour)
    acc.frames += len(weight)
    if acc.color_basis is None or acc.gram is None or acc.subset is None:
        return
    basis = sh_basis(normal).astype(np.float32)  # (K, M, 9)
    wb = basis * weight[..., None].astype(np.float32)
    acc.color_basis += np.einsum("kmc,kmb->mcb", colour.astype(np.float32), wb)
    acc.gram += np.einsum("kma,kmb->mab", wb, basis)
    q = acc.subset
    acc.samples.append((weight[:, q], colour[:, q], normal[:, q]))


def fit_shading(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], iterations: int = 15) -> np.ndarray:
    """The clip's light L (9,) from the subset's samples (module docstring), s((0, 0, 1)) = 1."""
    w = np.concatenate([s[0] for s in samples])  # (K, Q)
    c = np.concatenate([s[1] for s in samples])  # (K, Q, 3)
    b = sh_basis(np.concatenate([s[2] for s in samples]))  # (K, Q, 9)
    front = sh_basis(np.array([0.0, 0.0, 1.0]))
    uniform = np.eye(9)[0] / front[0]
    light = uniform.copy()
    for _ in range(iterations):
        s = np.maximum(b @ light, MIN_SHADING)  # (K, Q)
        albedo = np.einsum("kq,kqc->qc", w * s, c) / np.maximum((w * s * s).sum(0), 1e-12)[:, None]  # (Q, 3)
        design = (albedo[None, :, :, None] * b[:, :, None, :]) * np.sqrt(w)[..., None, None]  # (K, Q, 3, 9)
        target = c * np.sqrt(w)[..., None]
        a = design.reshape(-1, 9)
        ridge = SHADING_RIDGE * max(float(np.trace(a.T @ a)) / 9, 1e-12)
        light = np.linalg.solve(a.T @ a + ridge * np.eye(9), a.T @ target.ravel() + ridge * uniform)
        light = light / float(front @ light)
    return light


# ---------------------------------------------------------------------------------------------- the image
def mirror_partners(rest_points: np.ndarray) -> np.ndarray:
    """Each texel's mirror texel (M,) (-1 where none lies within :data:`MIRROR_DISTANCE` of its rest position
    (M, 3) reflected across x = 0)."""
    from scipy.spatial import cKDTree

    reflected = rest_points * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(rest_points).query(reflected, distance_upper_bound=MIRROR_DISTANCE)
    return np.where(np.isfinite(dist), idx, -1)


def delit_colours(acc: Accumulator) -> tuple[np.ndarray, np.ndarray | None]:
    """Each texel's linear colour (M, 3): its weighted mean, or with de-lighting its least-squares albedo under
    the fitted light (module docstring); and that light (9,) (None without de-lighting)."""
    mean = acc.color / np.maximum(acc.weight, 1e-12)[:, None]
    if acc.color_basis is None or acc.gram is None or not acc.samples:
        return mean, None
    light = fit_shading(acc.samples)
    num = np.einsum("mcb,b->mc", acc.color_basis.astype(np.float64), light)
    den = np.einsum("a,mab,b->m", light, acc.gram.astype(np.float64), light)
    ok = den > MIN_SHADING**2 * acc.weight
    return np.where(ok[:, None], num / np.maximum(den, 1e-12)[:, None], mean), light


def mirror_fill(weight: np.ndarray, mean: np.ndarray, partner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texels never seen (weight 0) take their mirror's colour when the mirror was seen: (filled (M,) bool,
    linear colours (M, 3), the seen ones unchanged)."""
    has = partner >= 0
    take = (weight <= 0) & has
    take[has] &= weight[partner[has]] > 0
    out = mean.copy()
    out[take] = mean[partner[take]]
    return take, out


def push_pull(image: np.ndarray, known: np.ndarray, levels: int = 12) -> np.ndarray:
    """Fill the unknown pixels of ``image`` (H, W, C) from the ``known`` (H, W) bool ones: weighted 2x2 averages
    down a pyramid, bilinear upsampling back up where a level has no value of its own (a smooth fill)."""
    img = torch.as_tensor(image, dtype=torch.float64).permute(2, 0, 1)[None]
    wgt = torch.as_tensor(known, dtype=torch.float64)[None, None]
    pyramid = [(img * wgt, wgt)]
    for _ in range(levels):
        c, w = pyramid[-1]
        if min(c.shape[-2:]) < 2:
            break
        pyramid.append((F.avg_pool2d(c, 2, ceil_mode=True) * 4, (F.avg_pool2d(w, 2, ceil_mode=True) * 4)))
    c, w = pyramid[-1]
    filled = c / w.clamp(min=1e-12)
    for c, w in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=c.shape[-2:], mode="bilinear", align_corners=False)
        alpha = w.clamp(max=1.0)
        filled = (c / w.clamp(min=1e-12)) * alpha + up * (1 - alpha)
    return filled[0].permute(1, 2, 0).numpy()


@dataclass
class TextureResult:
    """The albedo (H, W, 3) sRGB-encoded in [0, 1], coverage (H, W) in [0, 1], seen (H, W) bool (texels with
    any weight), mirrored (H, W) bool, the number of frames, and the fitted light (9,) or None."""

    albedo: np.ndarray
    coverage: np.ndarray
    seen: np.ndarray
    mirrored: np.ndarray
    frames: int
    light: np.ndarray | None = None


def finish(acc: Accumulator, tmap: TexelMap, rest_points: np.ndarray, options: TextureOptions) -> TextureResult:
    """The accumulated texels as an image: mean colours, mirrored where unseen, smoothly filled elsewhere."""
    w, h = tmap.size
    mirrored_m = np.zeros(len(acc.weight), bool)
    colour, light = delit_colours(acc)
    if options.mirror:
        mirrored_m, colour = mirror_fill(acc.weight, colour, mirror_partners(rest_points))
    known_m = (acc.weight > 0) | mirrored_m
    image = np.zeros((h * w, 3))
    known = np.zeros(h * w, bool)
    image[tmap.index], known[tmap.index] = colour, known_m
    image, known = image.reshape(h, w, 3), known.reshape(h, w)
    if options.fill and known.any():
        image = push_pull(image, known)
    seen = np.zeros(h * w, bool)
    seen[tmap.index] = acc.weight > 0
    mirrored = np.zeros(h * w, bool)
    mirrored[tmap.index] = mirrored_m
    coverage = np.zeros(h * w)
    coverage[tmap.index] = np.minimum(acc.weight / FULL_WEIGHT, 1.0)
    return TextureResult(linear_to_srgb(image), coverage.reshape(h, w), seen.reshape(h, w),
                         mirrored.reshape(h, w), acc.frames, light)  # fmt: skip


def unwrap_clip(batches: Iterable[tuple[np.ndarray, PosedFrames]], layout: UvLayout, all_faces: np.ndarray,
                rest: np.ndarray, options: TextureOptions = TextureOptions(),
                check: Callable[[int], None] | None = None) -> TextureResult:  # fmt: skip
    """The clip's texture from batches of (images (K, H, W, 3) uint8 sRGB, their posed frames); ``rest`` (V, 3)
    the rest-pose vertices (for the mirror); ``check(frames done)`` runs after each batch (progress, cancel)."""
    tmap = texel_map(layout, options.texels)
    acc = Accumulator.empty(len(tmap.index), options.delight)
    for images, posed in batches:
        accumulate(acc, *unwrap(images, posed, layout, all_faces, tmap, options))
        if check is not None:
            check(acc.frames)
    return finish(acc, tmap, texel_values(tmap, layout.faces, rest), options)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """An image (H, W) or (H, W, 3) in [0, 1] as an 8-bit PNG (atomic: ``PATH.tmp.png`` then rename)."""
    import os

    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.rint(np.asarray(image) * 255), 0, 255).astype(np.uint8)
    if data.ndim == 3:
        data = data[..., ::-1]  # cv2 writes BGR
    tmp = path.with_name(path.name + ".tmp.png")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(data))
    if not ok:
        raise OSError(f"could not encode {path}")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path


def texture_error(recovered: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference over the ``mask`` (H, W) texels and channels of two sRGB-encoded textures (H, W, 3)
    in [0, 1], as a fraction of the true texture's range there (its largest minus its smallest value)."""
    t = np.asarray(truth, np.float64)[mask]
    return float(np.abs(np.asarray(recovered, np.float64)[mask] - t).mean() / (t.max() - t.min()))
