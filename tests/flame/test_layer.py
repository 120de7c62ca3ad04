"""The torch FLAME layer against an independent numpy computation from the LBS math (emoca.md 3.1, 3.2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from backend.flame.landmarks import LandmarkEmbedding
from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def head():
    return synthetic_head(seed=3)


@pytest.fixture(scope="module")
def embedding(head):
    return synthetic_landmark_embedding(head)


def _layer(head, embedding=None):
    from backend.flame.layer import FLAME

    return FLAME(head, embedding)


def _run(layer, shape, exp, pose, **kw):
    import torch

    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in kw.items()}
    out = layer(torch.tensor(shape, dtype=torch.float32), torch.tensor(exp, dtype=torch.float32),
                torch.tensor(pose, dtype=torch.float32), **t)  # fmt: skip
    return out


def reference_lbs(head, shape, exp, full_pose):
    """Numpy LBS written from the math, per joint in world terms (no 4x4 matrices, scipy's Rodrigues).

    v_shaped = T + S [shape|exp]; J = R v_shaped; G_j = G_parent R_j; p_j = p_parent + G_parent (J_j - J_parent);
    v_posed = v_shaped + P vec(R_1..4 - I); v' = sum_j w_j (G_j (v_posed - J_j) + p_j).
    """
    S = np.concatenate([head.shapedirs[:, :, : len(shape)], head.expdirs[:, :, : len(exp)]], axis=2).astype(np.float64)
    v = head.v_template.astype(np.float64) + S @ np.concatenate([shape, exp])
    J = head.J_regressor.astype(np.float64) @ v
    R = Rotation.from_rotvec(full_pose.reshape(5, 3)).as_matrix()
    feat = (R[1:] - np.eye(3)).reshape(-1)
    v = v + head.posedirs.astype(np.float64) @ feat
    G, p = [R[0]], [J[0]]
    for j in range(1, 5):
        q = head.parents[j]
        G.append(G[q] @ R[j])
        p.append(p[q] + G[q] @ (J[j] - J[q]))
    out = np.zeros_like(v)
    for j in range(5):
        out += head.weights[:, j : j + 1] * ((v - J[j]) @ G[j].T + p[j])
    return out, np.array(p)


def test_zero_parameters_give_the_template(head):
    out = _run(_layer(head), np.zeros((2, 100)), np.zeros((2, 50)), np.zeros((2, 6)))
    np.testing.assert_allclose(out.vertices.numpy(), np.broadcast_to(head.v_template, (2, *head.v_template.shape)),
                               atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(out.joints[0].numpy(), head.J_regressor @ head.v_template, atol=1e-6)
    assert out.landmarks2d is None and out.landmarks_mp is None


def test_matches_independent_numpy_lbs(head):
    rng = np.random.default_rng(7)
    B = 3
    shape = rng.normal(size=(B, 100))
    exp = rng.normal(size=(B, 50)) * 1.5
    pose = rng.normal(size=(B, 6)) * 0.3
    neck = rng.normal(size=(B, 3)) * 0.2
    eyes = rng.normal(size=(B, 6)) * 0.2
    out = _run(_layer(head), shape, exp, pose, neck_pose=neck, eye_pose=eyes)
    for b in range(B):
        full = np.concatenate([pose[b, :3], neck[b], pose[b, 3:], eyes[b]])
        ref_v, ref_j = reference_lbs(head, shape[b], exp[b], full)
        np.testing.assert_allclose(out.vertices[b].numpy(), ref_v, atol=1e-5)
        np.testing.assert_allclose(out.joints[b].numpy(), ref_j, atol=1e-5)


def test_fewer_components_are_a_prefix(head):
    rng = np.random.default_rng(1)
    shape, exp, pose = rng.normal(size=(1, 20)), rng.normal(size=(1, 7)), rng.normal(size=(1, 6)) * 0.2
    out = _run(_layer(head), shape, exp, pose)
    padded = _run(_layer(head), np.pad(shape, ((0, 0), (0, 80))), np.pad(exp, ((0, 0), (0, 43))), pose)
    np.testing.assert_allclose(out.vertices.numpy(), padded.vertices.numpy(), atol=1e-7)
    with pytest.raises(ValueError):
        _run(_layer(head), np.zeros((1, 101)), np.zeros((1, 50)), np.zeros((1, 6)))


def test_jaw_moves_only_jaw_weighted_vertices(head):
    still = dataclasses.replace(head, posedirs=np.zeros_like(head.posedirs))  # correctives move everything
    pose = np.zeros((1, 6))
    pose[0, 3] = 0.3  # open the jaw about +X
    out = _run(_layer(still), np.zeros((1, 100)), np.zeros((1, 50)), pose).vertices[0].numpy()
    moved = np.linalg.norm(out - head.v_template, axis=1)
    jaw = head.weights[:, 2] > 0
    assert jaw.sum() > 20
    assert moved[~jaw].max() < 1e-7
    assert moved[head.weights[:, 2] > 0.9].min() > 1e-3
    # opening the jaw moves the chin down
    chin = int(np.argmin(np.where(jaw, head.v_template[:, 1], np.inf)))
    assert out[chin, 1] < head.v_template[chin, 1]


def _bary_points(vertices, faces, f, b):
    return np.einsum("lk,lkc->lc", b, vertices[faces[f]])


def test_dynamic_contour_follows_yaw_bins(head):
    rng = np.random.default_rng(2)
    n_faces = len(head.faces)
    bary = rng.random((79, 17, 3))
    emb = LandmarkEmbedding(
        static_faces=rng.integers(0, n_faces, 51), static_bary=rng.dirichlet(np.ones(3), 51),
        dynamic_faces=rng.integers(0, n_faces, (79, 17)), dynamic_bary=bary / bary.sum(-1, keepdims=True),
        full_faces=rng.integers(0, n_faces, 68), full_bary=rng.dirichlet(np.ones(3), 68),
    )  # fmt: skip
    layer = _layer(head, emb)
    pose = np.zeros((3, 6))
    pose[0, 1] = np.deg2rad(30)
    pose[1, 1] = np.deg2rad(-30)
    pose[2, 1] = np.deg2rad(-30)
    neck = np.zeros((3, 3))
    neck[2, 1] = np.deg2rad(60)  # the neck adds to the root: net +30
    out = _run(layer, np.zeros((3, 100)), np.zeros((3, 50)), pose, neck_pose=neck)
    faces = head.faces
    for b, expected_bin in enumerate([30, 69, 30]):
        v = out.vertices[b].numpy().astype(np.float64)
        want = _bary_points(v, faces, emb.dynamic_faces[expected_bin], emb.dynamic_bary[expected_bin])
        np.testing.assert_allclose(out.landmarks2d[b, :17].numpy(), want, atol=1e-6)
        static = _bary_points(v, faces, emb.static_faces, emb.static_bary)
        np.testing.assert_allclose(out.landmarks2d[b, 17:].numpy(), static, atol=1e-6)
        full = _bary_points(v, faces, emb.full_faces, emb.full_bary)
        np.testing.assert_allclose(out.landmarks3d[b].numpy(), full, atol=1e-6)
    # the RingNet convention indexes with the negated yaw
    ring = _layer(head, dataclasses.replace(emb, convention="ringnet"))
    out = _run(ring, np.zeros((1, 100)), np.zeros((1, 50)), pose[:1])
    v = out.vertices[0].numpy().astype(np.float64)
    want = _bary_points(v, faces, emb.dynamic_faces[69], emb.dynamic_bary[69])
    np.testing.assert_allclose(out.landmarks2d[0, :17].numpy(), want, atol=1e-6)


def test_gradients_are_finite_at_zero_pose(head, embedding):
    import torch

    layer = _layer(head, embedding)
    pose = torch.zeros(2, 6, requires_grad=True)
    exp = torch.zeros(2, 50, requires_grad=True)
    out = layer(torch.zeros(2, 100), exp, pose)
    (out.vertices.sum() + out.landmarks2d.sum()).backward()
    assert torch.isfinite(pose.grad).all() and torch.isfinite(exp.grad).all()
    assert exp.grad.abs().sum() > 0


def test_batch_rodrigues_matches_scipy():
    import torch

    from backend.flame.lbs import batch_rodrigues

    r = np.random.default_rng(0).normal(size=(20, 3))
    r[0] = 0.0
    r[1] = [1e-9, 0, 0]
    got = batch_rodrigues(torch.tensor(r, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(r).as_matrix(), atol=1e-12)


@pytest.mark.gpu
def test_cuda_matches_cpu(head, embedding):
    import torch

    layer = _layer(head, embedding)
    rng = np.random.default_rng(0)
    args = [torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in ((4, 100), (4, 50), (4, 6))]
    cpu = layer(*args)
    gpu = layer.to("cuda")(*[a.cuda() for a in args])
    np.testing.assert_allclose(gpu.vertices.cpu().numpy(), cpu.vertices.numpy(), atol=1e-5)
    np.testing.assert_allclose(gpu.landmarks2d.cpu().numpy(), cpu.landmarks2d.numpy(), atol=1e-5)
