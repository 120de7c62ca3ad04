"""Identity estimates: FLAME's robust mean over confident frames, the open fit of ICT's modes, the file."""

from __future__ import annotations

import numpy as np
import pytest

from emoca_contract.errors import EmocaError

from .helpers import embedded_points, open_take_from_points

pytestmark = pytest.mark.torch


def flame_take(n: int = 60, seed: int = 0):
    from backend.synthetic.take import make_synthetic_take

    rng = np.random.default_rng(seed)
    take = make_synthetic_take(n, seed=seed)
    truth = rng.normal(0, 1, 100)
    take.arrays["shape"] = (truth + 0.05 * rng.normal(size=(n, 100))).astype(np.float32)
    return take, truth


def test_the_flame_identity_rejects_outlier_frames_by_median_and_mad():
    from backend.likeness.identity import IdentityOptions, flame_identity

    take, truth = flame_take()
    bad = np.arange(0, 60, 7)  # 9 frames where the network saw something else (a hand, another face)
    take.arrays["shape"][bad] += np.random.default_rng(1).normal(0, 3, (len(bad), 100)).astype(np.float32)
    ident = flame_identity([take], IdentityOptions())
    plain = take["shape"].mean(0)
    assert ident.kind == "flame" and ident.coefficients.shape == (100,) and ident.offsets is None
    assert ident.meta["rejected"] == len(bad) and ident.meta["frames"] == 60
    err = np.abs(ident.coefficients - truth).max()
    assert err < 0.05  # the inliers' noise
    assert np.abs(plain - truth).max() > 5 * err  # what a plain mean would have baked


def test_only_confident_observed_frames_count():
    from backend.likeness.identity import IdentityOptions, flame_identity

    take, truth = flame_take()
    take.arrays["shape"][:10] = 5.0  # low confidence, interpolated and invalid rows: never part of the identity
    take.arrays["confidence"][:4] = 0.2
    take.arrays["interpolated"][4:7] = True
    take.arrays["valid"][7:10] = False
    ident = flame_identity([take], IdentityOptions(min_confidence=0.5))
    assert ident.meta["frames"] == 50 and ident.meta["rejected"] == 0
    assert np.abs(ident.coefficients - truth).max() < 0.05


def test_several_takes_share_one_identity_and_offsets_come_from_the_basis():
    from backend.likeness.identity import flame_identity

    a, truth = flame_take(seed=0)
    b, _ = flame_take(seed=0)
    b.arrays["shape"] = b.arrays["shape"][::-1].copy()
    basis = np.random.default_rng(2).normal(0, 1e-3, (30, 3, 100))
    ident = flame_identity([a, b], shapedirs=basis, name="performer")
    assert ident.name == "performer" and ident.meta["frames"] == 120 and len(ident.meta["takes"]) == 2
    np.testing.assert_allclose(ident.offsets, basis @ ident.coefficients, rtol=1e-5, atol=1e-9)


def test_bad_takes_for_an_identity_are_clear_errors():
    from backend.likeness.identity import flame_identity, open_identity
    from backend.synthetic.take import make_synthetic_open_take

    take, _ = flame_take()
    with pytest.raises(EmocaError) as e:
        open_identity([take])
    assert e.value.code == "config_invalid" and "one kind" in e.value.message
    with pytest.raises(EmocaError) as e:
        flame_identity([take, make_synthetic_open_take(5)])
    assert e.value.code == "config_invalid"
    take.arrays["valid"][:] = False
    with pytest.raises(EmocaError) as e:
        flame_identity([take])
    assert e.value.code == "input_empty"


def test_the_landmark_error_ignores_a_similarity_and_measures_shape():
    from backend.ict.data import load_ict
    from backend.likeness.identity import landmark_error
    from backend.synthetic.ict_likeness import KNOWN_IDENTITY, identity_offsets

    v = load_ict().vertices
    truth = identity_offsets(KNOWN_IDENTITY)
    assert landmark_error(truth, truth) < 1e-12
    scaled = (v + truth) * 1.1 + [0.01, 0.0, -0.02] - v  # the same face, larger and elsewhere
    assert landmark_error(scaled, truth) < 1e-9
    assert landmark_error(np.zeros_like(truth), truth) > 0.01  # the mean head is another face


@pytest.mark.slow
def test_the_open_fit_recovers_an_identity_from_perfect_detections():
    """The solver on detections a perfect detector would give (the embedded points of a known performer, so the
    point model is the surface's own motion): the identity, the focal length and the offset rotation come back
    (up to the prior's small pull)."""
    from backend.likeness.identity import IdentityOptions, landmark_error, open_identity
    from backend.synthetic.ict_likeness import KNOWN_IDENTITY, identity_offsets

    k, size, focal = 12, (640, 480), 768.0
    a = np.linspace(0, 2 * np.pi, k, endpoint=False)
    rot = np.stack([0.2 * np.sin(2 * a), 0.45 * np.sin(a), 0.05 * np.cos(a)], 1)
    trans = np.stack([0.02 * np.sin(a), 0.01 * np.cos(a), -0.6 + 0.03 * np.sin(a)], 1)
    pts = embedded_points(KNOWN_IDENTITY, rot, trans, focal, size)
    take = open_take_from_points(pts, rot, np.zeros((k, 52)), size)
    fit = open_identity([take], IdentityOptions(prior=0.1, modes="surface"))
    truth = identity_offsets(KNOWN_IDENTITY)
    assert landmark_error(fit.identity.offsets, truth) < 0.001 < 0.01 < landmark_error(0 * truth, truth)
    assert abs(fit.focal[0] - focal) < 5.0 and np.degrees(np.abs(fit.offset)).max() < 0.5
    assert fit.error < 0.001
    np.testing.assert_allclose(fit.identity.coefficients[: len(KNOWN_IDENTITY)], KNOWN_IDENTITY, atol=0.15)


def test_the_identity_file_round_trips_through_the_contract_reader(tmp_path):
    from backend.likeness.identity import Identity, write_identity
    from emoca_contract.take import read_identity

    ident = Identity("open", "clip é", np.arange(40, dtype=np.float32), np.ones((7, 3), np.float32), {"frames": 3})
    path = write_identity(tmp_path / "x_identity.npz", ident, "ict")
    back = read_identity(path)
    np.testing.assert_array_equal(back["coefficients"], ident.coefficients)
    np.testing.assert_array_equal(back["offsets"], ident.offsets)
    assert back["meta"]["name"] == "clip é" and back["meta"]["kind"] == "open" and back["meta"]["frames"] == 3
    assert not list(tmp_path.glob("*.partial"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EmocaError) as e:
        read_identity(tmp_path / "bad.npz")
    assert e.value.code == "input_corrupt"
    np.savez(tmp_path / "nan.npz", coefficients=np.array([np.nan], np.float32), meta=np.array(
        '{"format": "emoca-identity", "kind": "flame"}'))  # fmt: skip
    with pytest.raises(EmocaError) as e:
        read_identity(tmp_path / "nan.npz")
    assert e.value.code == "input_corrupt"
