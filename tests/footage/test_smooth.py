"""Smoothing and gap filling on signals with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from backend.take.smoothing import (
    CUTOFF_RANGE,
    GroupOverride,
    OneEuroFilter,
    SmoothingOptions,
    butterworth,
    interpolate_gaps,
    one_euro,
    smooth_channels,
    smoothing_meta,
    take_fps,
)
from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_quat, quat_to_axis_angle

FPS = 30.0


def _noisy_sine(n=300, freq=0.5, noise=0.1, seed=0):
    t = np.arange(n) / FPS
    clean = np.sin(2 * np.pi * freq * t)
    rng = np.random.default_rng(seed)
    return t, clean, clean + rng.normal(0, noise, n)


def _jitter(x):
    return float(np.sqrt(np.mean(np.diff(np.asarray(x).reshape(len(x), -1), n=2, axis=0) ** 2)))


def test_butterworth_reduces_jitter_without_lag():
    t, clean, noisy = _noisy_sine()
    out = butterworth(noisy, None, cutoff_hz=2.0, fps=FPS)
    assert _jitter(out) < 0.2 * _jitter(noisy)
    assert np.sqrt(np.mean((out - clean) ** 2)) < 0.5 * np.sqrt(np.mean((noisy - clean) ** 2))
    # zero phase: the best alignment with the clean signal is at lag 0
    lags = range(-5, 6)
    errs = [np.mean((np.roll(out, k)[10:-10] - clean[10:-10]) ** 2) for k in lags]
    assert list(lags)[int(np.argmin(errs))] == 0


def test_butterworth_runs_per_segment_and_leaves_invalid_rows():
    _, _, noisy = _noisy_sine(n=120)
    x = np.stack([noisy, 2 * noisy], axis=1)
    valid = np.ones(120, bool)
    valid[50:55] = False  # a gap
    valid[100:105] = False  # and a short segment 105..119 of 15 frames, then nothing
    x[~valid] = 0.0
    out = butterworth(x, valid, 2.0, FPS)
    assert np.array_equal(out[~valid], x[~valid])
    # the segment before the gap is filtered exactly as if alone (no leakage across the gap)
    np.testing.assert_allclose(out[:50], butterworth(x[:50], None, 2.0, FPS))
    # a segment too short for filtfilt's padding passes through
    short = np.ones(120, bool)
    short[:112] = False  # 8 frames
    np.testing.assert_array_equal(butterworth(x, short, 2.0, FPS)[112:], x[112:])


def test_one_euro_is_causal_and_smooths():
    t, clean, noisy = _noisy_sine()
    out = one_euro(noisy, None, t, min_cutoff=1.0, beta=0.05)
    assert _jitter(out) < 0.5 * _jitter(noisy)
    # causal: changing the future does not change the past
    changed = noisy.copy()
    changed[200:] += 5.0
    out2 = one_euro(changed, None, t, min_cutoff=1.0, beta=0.05)
    np.testing.assert_array_equal(out2[:200], out[:200])
    assert not np.allclose(out2[200:], out[200:])


def test_one_euro_follows_fast_motion_with_beta():
    f_slow, f_fast = OneEuroFilter(1.0, 0.0), OneEuroFilter(1.0, 5.0)
    ramp = np.linspace(0, 10, 31)
    for i, v in enumerate(ramp):
        a = f_slow(v, i / FPS)
        b = f_fast(v, i / FPS)
    assert abs(b - ramp[-1]) < abs(a - ramp[-1])


def test_strength_mapping():
    opts = [SmoothingOptions("butterworth", s) for s in (0.0, 0.25, 0.5, 1.0)]
    for g, (loose, tight) in CUTOFF_RANGE.items():
        cut = [o.cutoff(g) for o in opts]
        assert cut[0] == pytest.approx(loose) and cut[-1] == pytest.approx(tight)
        assert cut == sorted(cut, reverse=True)
    o = SmoothingOptions("butterworth", 0.5, {"cam": GroupOverride(cutoff_hz=3.3), "exp": GroupOverride(False)})
    assert o.cutoff("cam") == 3.3 and "exp" not in o.enabled_groups()
    assert SmoothingOptions("off").enabled_groups() == []
    assert SmoothingOptions.make(groups=["pose"]).enabled_groups() == ["pose"]
    meta = o.to_meta()
    assert meta["method"] == "butterworth" and meta["groups"] == ["pose", "jaw", "cam", "emotion", "landmarks"]


@pytest.mark.parametrize("kwargs", [dict(method="gauss"), dict(strength=1.5), dict(groups={"nose": GroupOverride()})])
def test_options_validation(kwargs):
    with pytest.raises(EmocaError) as e:
        SmoothingOptions(**kwargs)
    assert e.value.code == "config_invalid"


def test_smooth_channels_by_group():
    n = 200
    t, clean, noisy = _noisy_sine(n)
    rng = np.random.default_rng(5)
    arrays = {
        "exp": np.stack([noisy] * 4, axis=1).astype(np.float32),
        "cam": np.stack([noisy] * 3, axis=1).astype(np.float32),
        "expression": np.abs(rng.normal(0.2, 0.05, (n, 7))).astype(np.float32),
        "shape": rng.normal(size=(n, 100)).astype(np.float32),  # not a smoothed channel
    }
    valid = np.ones(n, bool)
    valid[80:90] = False
    opts = SmoothingOptions("butterworth", 0.7, {"cam": GroupOverride(enabled=False)})
    out = smooth_channels(arrays, valid, FPS, opts)
    assert out["exp"].dtype == np.float32 and out["exp"].shape == (n, 4)
    assert _jitter(out["exp"][:80]) < 0.3 * _jitter(arrays["exp"][:80])
    np.testing.assert_array_equal(out["cam"], arrays["cam"])
    assert out["shape"] is arrays["shape"]
    np.testing.assert_array_equal(out["exp"][80:90], arrays["exp"][80:90])
    probs = out["expression"][valid]
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    off = smooth_channels(arrays, valid, FPS, SmoothingOptions("off"))
    np.testing.assert_array_equal(off["exp"], arrays["exp"])


@pytest.mark.parametrize("method", ["butterworth", "one_euro"])
def test_rotation_smoothing_through_the_180_degree_wrap(method):
    """A head turning steadily about y through 180 degrees: as axis-angle the vector jumps from (0, ~pi, 0) to
    (0, ~-pi, 0); filtering components directly would produce a fake half-turn. Quaternion smoothing keeps the
    true rotation within noise."""
    n = 90
    angle = np.linspace(np.deg2rad(150), np.deg2rad(210), n)
    rng = np.random.default_rng(2)
    true_q = np.stack([np.cos(angle / 2), np.zeros(n), np.sin(angle / 2), np.zeros(n)], axis=1)
    aa = quat_to_axis_angle(true_q)  # canonical: angle in [0, pi], so it flips sign mid-clip
    assert aa[0, 1] > 3 * np.pi / 4 and aa[-1, 1] < -3 * np.pi / 4
    noisy = aa + rng.normal(0, 0.01, aa.shape)
    out = smooth_channels({"global_pose": noisy}, np.ones(n, bool), FPS, SmoothingOptions(method, 0.5))

    def err(aa_):
        return 2 * np.arccos(np.clip(np.abs((axis_angle_to_quat(aa_) * true_q).sum(axis=1)), 0, 1))

    noise_err = err(noisy)
    assert err(out["global_pose"]).max() < np.deg2rad(2.0)  # never a fake half-turn
    if method == "butterworth":  # zero phase: smaller error than the noise on average
        assert err(out["global_pose"]).mean() < 0.6 * noise_err.mean()
    naive = butterworth(noisy, None, 2.0, FPS)  # filtering the axis-angle components directly
    assert err(naive).max() > np.deg2rad(30)


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(100, 3))
    aa *= (rng.uniform(0, np.pi * 0.999, 100) / np.linalg.norm(aa, axis=1))[:, None]
    np.testing.assert_allclose(quat_to_axis_angle(axis_angle_to_quat(aa)), aa, atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle(axis_angle_to_quat(np.zeros((1, 3)))), 0.0, atol=1e-12)


def test_interpolate_gaps_flags_and_fills():
    n = 20
    valid = np.ones(n, bool)
    valid[[0, 1]] = False  # leading gap: never filled
    valid[5:8] = False  # 3 frames: filled
    valid[12:18] = False  # 6 frames: too long
    exp = np.arange(n, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
    rot = np.zeros((n, 3))
    rot[:, 2] = np.linspace(0, 1.0, n)
    exp_in = exp.copy()
    exp_in[~valid] = 0
    rot_in = rot.copy()
    rot_in[~valid] = 0
    frames = np.arange(n)
    out, filled = interpolate_gaps({"exp": exp_in, "jaw_pose": rot_in, "frame": frames}, valid, max_gap=4)
    assert filled.tolist() == [i in (5, 6, 7) for i in range(n)]
    np.testing.assert_allclose(out["exp"][5:8], exp[5:8], atol=1e-5)  # a line is filled exactly
    np.testing.assert_allclose(out["jaw_pose"][5:8], rot[5:8], atol=1e-9)  # slerp about one axis: linear angle
    assert (out["exp"][12:18] == 0).all() and (out["exp"][:2] == 0).all()
    assert out["exp"].dtype == np.float32 and out["frame"] is frames
    np.testing.assert_array_equal(exp_in, np.where(valid[:, None], exp, 0))  # inputs untouched


def test_slerp_takes_the_short_way_between_rotations():
    valid = np.array([True, False, True])
    a = np.array([0.0, 0.0, np.deg2rad(170)])
    b = np.array([0.0, 0.0, -np.deg2rad(170)])  # 20 degrees further on, the short way through 180
    out, _ = interpolate_gaps({"global_pose": np.stack([a, np.zeros(3), b])}, valid, 1)
    mid = out["global_pose"][1]
    assert np.linalg.norm(mid) == pytest.approx(np.pi, abs=1e-6)  # 180 degrees, not 0


def test_smoothing_meta_and_the_rate_a_take_is_filtered_at():
    opts = SmoothingOptions("one_euro", 0.3)
    meta = smoothing_meta(opts)
    assert meta["method"] == "one_euro" and meta["strength"] == 0.3 and set(meta["groups"]) == set(CUTOFF_RANGE)
    assert meta["cutoff_hz"]["pose"] == pytest.approx(opts.cutoff("pose"), abs=1e-4)
    assert smoothing_meta(None) == {"method": "default"}
    times = np.arange(6) / 12.0
    assert take_fps({"source": {"fps": 30.0}}, times) == 30.0
    assert take_fps({"source": {"fps": None}}, times) == pytest.approx(12.0)  # an image sequence: its timestamps
    assert take_fps({}, times[:1]) == 25.0
