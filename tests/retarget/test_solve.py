"""The landmark solve's numerics (emoca_contract.landmark_solve): the bounded solver against scipy's, the smoothness
term, the alignment and proportions, the take's neutral, and known key weights recovered from landmark motion on a
face of other proportions and orientation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import lsq_linear

from emoca_contract import landmark_solve as S
from emoca_contract.rotations import axis_angle_to_matrix


def problem(m: int = 90, k: int = 14, n: int = 40, seed: int = 0):
    """An ill-conditioned system (two nearly equal columns, scales over 3 decades) and targets from weights in
    and outside [0, 1]."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(m, k)) @ np.diag(np.geomspace(1.0, 1e-3, k))
    a[:, 3] = a[:, 2] * 0.999 + 1e-4 * rng.normal(size=m)
    w = rng.normal(0.4, 0.6, (n, k))
    return a, w @ a.T + 1e-3 * rng.normal(size=(n, m))


def scipy_smoothed(a, b, lo, hi, ridge, smooth):
    """The smoothed problem as one sparse bounded least squares for scipy."""
    n, k = len(b), a.shape[1]
    aug = sparse.vstack([sparse.csr_matrix(a), np.sqrt(ridge) * sparse.eye(k)])
    diff = sparse.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n))
    big = sparse.vstack([sparse.kron(sparse.eye(n), aug), np.sqrt(smooth) * sparse.kron(diff, sparse.eye(k))])
    rhs = np.concatenate([np.concatenate([bb, np.zeros(k)]) for bb in b] + [np.zeros((n - 1) * k)])
    res = lsq_linear(big.tocsr(), rhs, bounds=(lo, hi), tol=1e-13, lsmr_tol=1e-14, max_iter=20000)
    return res.x.reshape(n, k)


def objective(a, b, w, ridge, smooth):
    return 0.5 * ((w @ a.T - b) ** 2).sum() + 0.5 * ridge * (w**2).sum() + 0.5 * smooth * ((w[1:] - w[:-1]) ** 2).sum()


def test_the_bounded_solver_finds_scipys_optimum_frame_by_frame():
    a, b = problem()
    ridge = 1e-6
    ours = S.bounded_lsq(a, b, 0.0, 1.0, ridge=ridge)
    aug = np.vstack([a, np.sqrt(ridge) * np.eye(a.shape[1])])
    pad = np.zeros(a.shape[1])
    ref = np.array([lsq_linear(aug, np.r_[bb, pad], bounds=(0, 1), method="bvls", tol=1e-13).x for bb in b])
    assert ((ours >= 0) & (ours <= 1)).all()
    assert (ours == 0).any() and (ours == 1).any()  # both bounds are active somewhere
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_per_key_bounds_and_no_ridge_on_a_full_rank_system():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(30, 5))
    w = rng.uniform(-2, 2, (8, 5))
    lo, hi = np.array([-1, 0, 0, -0.5, 0.2]), np.array([1, 1, 0.5, 0.5, 2.0])
    ours = S.bounded_lsq(a, w @ a.T, lo, hi)
    ref = np.array([lsq_linear(a, bb, bounds=(lo, hi), method="bvls", tol=1e-13).x for bb in w @ a.T])
    np.testing.assert_allclose(ours, ref, atol=1e-7)
    inside = (w >= lo) & (w <= hi)
    np.testing.assert_allclose(ours[inside.all(1)], w[inside.all(1)], atol=1e-7)  # feasible weights come back


def test_the_smoothed_solver_finds_scipys_optimum():
    a, b = problem(n=25, seed=1)
    ridge, smooth = 1e-6, 0.05
    ours = S.bounded_lsq(a, b, 0.0, 1.0, ridge=ridge, smoothness=smooth)
    ref = scipy_smoothed(a, b, 0.0, 1.0, ridge, smooth)
    assert objective(a, b, ours, ridge, smooth) <= objective(a, b, ref, ridge, smooth) * (1 + 1e-9)
    np.testing.assert_allclose(ours, ref, atol=5e-4)


def test_smoothness_steadies_noisy_weights_and_long_takes_are_solved_in_windows():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 6))
    n = 2 * S.WINDOW + 77  # several overlapping windows
    t = np.arange(n) / 30.0
    w = 0.5 + 0.4 * np.sin(2 * np.pi * 0.3 * t[:, None] + np.arange(6))
    b = w @ a.T + 0.6 * rng.normal(size=(n, 60))
    rough = S.bounded_lsq(a, b, 0.0, 1.0)
    smooth = S.bounded_lsq(a, b, 0.0, 1.0, smoothness=1000.0)  # about 16 x the squared column norm
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.3 * np.abs(np.diff(rough, axis=0)).mean()
    assert np.abs(smooth - w).mean() < np.abs(rough - w).mean()
    # windows agree with one solve where they overlap: no seam (the largest step is a smooth curve's)
    assert np.abs(np.diff(smooth, axis=0)).max() < 0.1


def test_bad_arguments_are_refused():
    a, b = problem(n=3)
    with pytest.raises(ValueError):
        S.bounded_lsq(a, b[:, :-1], 0.0, 1.0)
    with pytest.raises(ValueError):
        S.bounded_lsq(a, b, 1.0, 0.0)


def face(seed: int = 0, n: int = 68) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3)) * [0.05, 0.07, 0.02]
    return p - p.mean(0)


def test_similarity_recovers_a_known_transform_and_face_size_ignores_orientation():
    src = face()
    r = axis_angle_to_matrix(np.array([0.3, -1.2, 0.7]))
    dst = 2.5 * src @ r.T + [0.1, -2.0, 0.5]
    s = S.similarity(src, dst)
    assert s.scale == pytest.approx(2.5) and np.allclose(s.rotation, r) and np.allclose(s.apply(src), dst)
    assert S.face_size(dst) == pytest.approx(2.5 * S.face_size(src))
    width, height = np.ptp(src[:, 0]), np.ptp(src[:, 1])
    assert S.face_size(src) == pytest.approx(np.sqrt(width * height), rel=0.05)


def test_onto_moves_motion_with_the_rotation_scale_and_proportions():
    src = face()
    r = axis_angle_to_matrix(np.array([np.pi / 2, 0.0, 0.0]))  # a Y-up face onto a Z-up character
    stretch = np.array([1.0, 1.4, 1.0])  # the character's face is longer
    dst = 0.01 * (src * stretch) @ r.T
    mapping = S.onto(src, dst)
    # the similarity's one scale takes the mean size; the per-axis factors the rest
    np.testing.assert_allclose(mapping.align.scale * mapping.proportions, 0.01 * stretch, rtol=0.02)
    motion = np.zeros_like(src)
    motion[10] = [0.0, 0.002, 0.0]  # a point moves up the source face
    moved = mapping.motion(motion)
    np.testing.assert_allclose(moved[10], 0.01 * (r @ (motion[10] * stretch)), rtol=0.03, atol=1e-7)
    flat = S.onto(src, dst, proportions=False)
    assert np.allclose(flat.proportions, 1.0) and not np.allclose(flat.motion(motion), moved)


def test_the_take_neutral_is_its_least_expressive_frames():
    base = face()
    rng = np.random.default_rng(3)
    frames = base + 0.004 * rng.normal(size=(50, 68, 3)) + 0.01
    rest = [4, 17, 30]
    frames[rest] = base + 0.0001 * rng.normal(size=(3, 68, 3))  # the take rests near the model's neutral here
    neutral = S.take_neutral(frames, base, fraction=3 / 50)
    np.testing.assert_allclose(neutral, frames[rest].mean(0))


def test_known_key_weights_are_recovered_from_a_faces_landmark_motion_on_another_face():
    """Motion of a model face (Y up) made by known weights of its shapes, solved on a character (Z up, other size
    and proportions) whose keys are the same shapes moved into its frame: the weights come back."""
    rng = np.random.default_rng(5)
    model = face(1)
    shapes = 0.004 * rng.normal(size=(9, 68, 3))
    n = 80
    t = np.arange(n) / 30.0
    weights = np.clip(0.5 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0, 9) * t[:, None] + rng.uniform(0, 6, 9)),
                      0.0, 1.0)  # fmt: skip
    weights[:8] = 0.0  # the take starts at rest
    take = model + np.einsum("nk,klc->nlc", weights, shapes)
    r = axis_angle_to_matrix(np.array([np.pi / 2, 0.0, 0.3]))
    stretch = np.array([0.8, 1.3, 1.0])
    character = 1.7 * (model * stretch) @ r.T + [0.0, 0.2, 1.6]
    effects = 1.7 * (shapes * stretch) @ r.T
    solved = S.solve_landmarks(effects, character, take, model, options=S.SolveOptions(smoothness=0.0, ridge=1e-6))
    # the stretch leaves the similarity's rotation a little off: the motion is nearly, not exactly, the keys'
    assert np.abs(solved.weights - weights).mean() < 0.01 and solved.error_pct < 0.3
    smoothed = S.solve_landmarks(effects, character, take, model)  # the defaults: a little smoothing and ridge
    assert np.abs(smoothed.weights - weights).mean() < 0.03
    similar = 1.7 * model @ r.T  # the same proportions: exact
    exact = S.solve_landmarks(1.7 * shapes @ r.T, similar, take, model, options=S.SolveOptions(smoothness=0.0,
                              ridge=1e-9))  # fmt: skip
    assert np.abs(exact.weights - weights).max() < 1e-4
