"""The plain-torch rasterizer against analytic cases and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.render.rasterize import Rasterizer, rasterize  # noqa: E402
from backend.render.renderer import render_mesh, world2uv  # noqa: E402
from backend.render.shading import SH_CONSTANTS, sh_basis, vertex_normals  # noqa: E402

pytestmark = pytest.mark.torch


def _centres(n: int) -> np.ndarray:
    return -1 + (2 * np.arange(n) + 1) / n


def test_triangle_coverage_and_barycentrics_analytic():
    tri = np.array([[-0.71, -0.53, 0.2], [0.63, -0.11, 0.4], [-0.23, 0.77, 0.6]])
    n = 24
    frag = rasterize(torch.tensor(tri[None], dtype=torch.float64), torch.tensor([[0, 1, 2]]), n)
    xs = _centres(n)
    for i, y in enumerate(xs):  # row i is y (down), column j is x (right)
        for j, x in enumerate(xs):
            # independent reference: solve [a b c; 1 1 1] w = [x y 1]
            m = np.vstack([tri[:, :2].T, np.ones(3)])
            w = np.linalg.solve(m, np.array([x, y, 1.0]))
            inside = bool((w >= 0).all())
            assert bool(frag.mask[0, i, j]) == inside, (i, j, w)
            if inside:
                np.testing.assert_allclose(frag.bary_coords[0, i, j].numpy(), w, atol=1e-9)
                assert frag.zbuf[0, i, j].item() == pytest.approx(float(w @ tri[:, 2]), abs=1e-9)
            else:
                assert frag.face_index[0, i, j] == -1 and frag.zbuf[0, i, j] == -1
    assert 60 < int(frag.mask.sum()) < 24 * 24 / 2


def test_pixel_convention_x_right_y_down():
    # a small triangle in the top-left quadrant (x < 0, y < 0) must land in the top-left of the image
    tri = torch.tensor([[[-0.9, -0.9, 0.0], [-0.5, -0.9, 0.0], [-0.9, -0.5, 0.0]]])
    m = rasterize(tri, torch.tensor([[0, 1, 2]]), 20).mask[0]
    rows, cols = torch.nonzero(m, as_tuple=True)
    assert rows.max() < 10 and cols.max() < 10 and m.sum() > 3


def test_depth_test_nearer_face_wins_in_any_order():
    near = [[-0.8, -0.8, 0.1], [0.8, -0.8, 0.1], [0.0, 0.8, 0.1]]
    far = [[-0.9, -0.9, 0.5], [0.9, -0.9, 0.5], [0.0, 0.9, 0.5]]
    verts = torch.tensor([near + far])
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        f = torch.tensor(faces)
        frag = rasterize(verts, f, 32)
        near_idx = faces.index([0, 1, 2])
        centre = frag.face_index[0, 16, 16].item()
        assert centre == near_idx
        assert frag.zbuf[0, 16, 16].item() == pytest.approx(0.1)
        # where only the far one covers (its base, at the top of the image), the far one is drawn
        assert frag.face_index[0, 2, 16].item() == 1 - near_idx


def test_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    verts = torch.rand(2, 60, 3, generator=g) * 2 - 1
    faces = torch.randint(0, 60, (80, 3), generator=g)
    a = rasterize(verts, faces, 40)
    b = rasterize(verts, faces, 40, max_candidates=50)
    assert torch.equal(a.face_index, b.face_index)
    torch.testing.assert_close(a.bary_coords, b.bary_coords)


def _uv_sphere(n_lat: int = 40, n_lon: int = 80, r: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    lat = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)[1:-1]
    lon = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=torch.float64)[:-1]
    T, P = torch.meshgrid(lat, lon, indexing="ij")
    v = torch.stack([torch.sin(T) * torch.cos(P), torch.cos(T), torch.sin(T) * torch.sin(P)], -1).reshape(-1, 3)
    v = torch.cat([v, torch.tensor([[0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64)]) * r
    faces = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, b, c], [b, d, c]]  # counter-clockwise seen from outside
    top, bot = len(v) - 2, len(v) - 1
    for j in range(n_lon):
        faces.append([top, (j + 1) % n_lon, j])
        last = (n_lat - 2) * n_lon
        faces.append([bot, last + j, last + (j + 1) % n_lon])
    return v, torch.tensor(faces)


def test_sphere_normals_match_analytic():
    r = 0.8
    world, faces = _uv_sphere(r=r)
    proj = world * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # project() with s=1: y, z negated
    n = 64
    out = render_mesh(
        proj[None],
        faces,
        torch.zeros(len(world), 2),
        faces,
        torch.ones(1, 3, 4, 4, dtype=torch.float64),
        None,
        image_size=n,
    )
    mask = out["alpha_images"][0, 0] > 0
    xs = torch.tensor(_centres(n))
    Y, X = torch.meshgrid(xs, xs, indexing="ij")
    inner = (X**2 + Y**2) < (0.95 * r) ** 2
    assert bool((mask | ~inner).all()) and not bool((mask & ((X**2 + Y**2) > (1.02 * r) ** 2)).any())
    # model space: x = X, y = -Y (image y is down), z = +sqrt(r^2 - x^2 - y^2) towards the camera
    ref = torch.stack([X, -Y, torch.sqrt((r**2 - X**2 - Y**2).clamp(min=0))], 0) / r
    got = out["normal_images"][0]
    cos = (got * ref).sum(0)[inner]
    angle = torch.rad2deg(torch.acos(cos.clamp(-1, 1)))
    assert angle.mean() < 1.0 and angle.max() < 4.0, (angle.mean(), angle.max())
    # the vertex normals of the sphere are radial
    vn = vertex_normals(world[None], faces)[0]
    assert torch.rad2deg(torch.acos((vn * world / r).sum(-1).clamp(-1, 1))).max() < 1.5  # faceting near the poles


def test_sh_constants_are_irradiance_band_factors_times_orthonormal_sh():
    # Numerically integrate over the sphere: dividing band 1 by 2pi/3 and band 2 by pi/4 (band 0: none)
    # must leave orthonormal real spherical harmonics.
    n_t, n_p = 400, 800
    t = (torch.arange(n_t, dtype=torch.float64) + 0.5) * math.pi / n_t
    p = (torch.arange(n_p, dtype=torch.float64) + 0.5) * 2 * math.pi / n_p
    T, P = torch.meshgrid(t, p, indexing="ij")
    nrm = torch.stack([torch.sin(T) * torch.cos(P), torch.sin(T) * torch.sin(P), torch.cos(T)], 0)
    dw = torch.sin(T) * (math.pi / n_t) * (2 * math.pi / n_p)
    band = torch.tensor([1.0] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5, dtype=torch.float64)
    Y = sh_basis(nrm[None], dim=1)[0] / band[:, None, None]
    gram = torch.einsum("ahw,bhw,hw->ab", Y, Y, dw)
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=2e-4, rtol=0)
    assert SH_CONSTANTS[0] == pytest.approx(1 / math.sqrt(4 * math.pi))


def test_gradcheck_wrt_vertex_positions():
    # Two triangles; the pixel centres are far (> 1e-3) from every edge, so coverage is stable under the
    # finite-difference step and the rasterizer is smooth in the vertex positions (gradients via barycentrics).
    verts = torch.tensor(
        [[[-0.61, -0.57, 0.3], [0.58, -0.49, 0.2], [-0.52, 0.63, 0.4], [0.66, 0.55, 0.1]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attrs = torch.tensor([[0.3, 1.0], [0.9, -0.2], [0.1, 0.5], [0.7, 0.8]], dtype=torch.float64)

    def f(v):
        frag = rasterize(v, faces, 10)
        from backend.render.rasterize import interpolate_face_attributes

        img = interpolate_face_attributes(frag.face_index, frag.bary_coords, attrs[None][:, faces])
        return img.sum(-1) + frag.zbuf

    assert torch.autograd.gradcheck(f, (verts,), eps=1e-6, atol=1e-6)
    # and the full textured, SH-lit render (normals, grid_sample, shading)
    tex = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    uv = torch.tensor([[0.13, 0.17], [0.81, 0.21], [0.19, 0.86], [0.77, 0.83]], dtype=torch.float64)
    light = torch.zeros(1, 9, 3, dtype=torch.float64)
    light[:, 0] = 2.0
    light[:, 1:4] = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)[:, None]

    def g(v):
        v3 = v.clone()
        v3[..., 2] = v3[..., 2] + torch.tensor([0.0, 0.1, -0.1, 0.05], dtype=torch.float64)
        return render_mesh(v3, faces, uv, faces, tex, light, image_size=8)["images"]

    assert torch.autograd.gradcheck(g, (verts,), eps=1e-6, atol=1e-5)


def test_gradient_flows_through_barycentrics_not_coverage():
    verts = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [-0.5, 0.5, 0.0]]], requires_grad=True)
    frag = rasterize(verts, torch.tensor([[0, 1, 2]]), 16)
    frag.bary_coords[..., 1].sum().backward()
    assert verts.grad is not None and verts.grad[..., :2].abs().sum() > 0
    assert verts.grad[..., 2].abs().sum() == 0  # barycentrics do not depend on depth


def test_world2uv_reproduces_uv_coordinates():
    uv = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attrs = torch.cat([uv, torch.zeros(4, 1)], 1)[None]
    m = world2uv(attrs, faces, uv, faces, uv_size=20)
    # pixel (row i, col j): u = (j + .5)/20, v = 1 - (i + .5)/20
    i, j = 5, 12
    assert m[0, 0, i, j].item() == pytest.approx((j + 0.5) / 20, abs=1e-5)
    assert m[0, 1, i, j].item() == pytest.approx(1 - (i + 0.5) / 20, abs=1e-5)
    assert m[0, 0, 0, 0] == 0  # outside the layout


def test_rasterizer_module_layout():
    verts = torch.tensor([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [-0.5, 0.5, 0.0]]])
    out = Rasterizer(image_size=12)(verts, torch.tensor([[0, 1, 2]]), torch.ones(1, 1, 3, 2))
    assert out.shape == (1, 3, 12, 12)
    torch.testing.assert_close(out[:, 0], out[:, 2])  # attribute 1 inside, 0 outside == coverage channel


@pytest.mark.gpu
def test_cuda_matches_cpu():
    world, faces = _uv_sphere()
    verts = (world * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))[None].float().repeat(4, 1, 1)
    a = rasterize(verts, faces, 224)
    b = rasterize(verts.cuda(), faces.cuda(), 224)
    assert torch.equal(a.face_index, b.face_index.cpu())
    torch.testing.assert_close(a.bary_coords, b.bary_coords.cpu(), atol=1e-4, rtol=0)


def test_equal_depths_go_to_the_lowest_face_index_whatever_the_chunking():
    # the same triangle three times (indices 1, 3 and 4) over a smaller nearer one (2) and a far one (0)
    big = [[-0.9, -0.9, 0.5], [0.9, -0.9, 0.5], [0.0, 0.9, 0.5]]
    small = [[-0.2, -0.2, 0.1], [0.2, -0.2, 0.1], [0.0, 0.2, 0.1]]
    far = [[-1.0, -1.0, 0.9], [1.0, -1.0, 0.9], [0.0, 1.0, 0.9]]
    verts = torch.tensor([far + big + small])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [3, 4, 5], [3, 4, 5]])
    for max_candidates in (1 << 22, 7, 1):
        fi = rasterize(verts, faces, 24, max_candidates=max_candidates).face_index[0]
        assert set(torch.unique(fi).tolist()) <= {-1, 0, 1, 2}, max_candidates
        assert fi[12, 12] == 2 and (fi == 1).sum() > 100 and (fi == 0).sum() > 0, max_candidates


def test_interpolation_at_covered_pixels_equals_the_dense_formula():
    g = torch.Generator().manual_seed(3)
    verts = torch.rand(2, 40, 3, generator=g, dtype=torch.float64) * 2 - 1
    faces = torch.randint(0, 40, (60, 3), generator=g)
    frag = rasterize(verts, faces, 32)
    attrs = torch.randn(2, 60, 3, 4, generator=g, dtype=torch.float64)
    from backend.render.rasterize import interpolate_face_attributes

    got = interpolate_face_attributes(frag.face_index, frag.bary_coords, attrs)
    b = torch.arange(2)[:, None, None].expand_as(frag.face_index)
    corner = attrs[b, frag.face_index.clamp(min=0)]  # (2, H, W, 3, 4)
    dense = (frag.bary_coords[..., None] * corner).sum(-2) * frag.mask[..., None]
    torch.testing.assert_close(got, dense, rtol=0, atol=1e-12)
    assert bool(frag.mask.any()) and bool((got[~frag.mask] == 0).all())
