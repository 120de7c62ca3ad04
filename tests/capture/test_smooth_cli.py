"""`python -m backend smooth`: smoothing redone from a take's raw values, without capturing again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from backend.synthetic.take import make_synthetic_take
from backend.take.writer import write_take
from emoca_contract.take import SMOOTHED_KEYS, read_take

ROOT = Path(__file__).resolve().parents[2]


def _noisy_take(path: Path) -> Path:
    take = make_synthetic_take(90, fps=30.0, seed=3)
    rng = np.random.default_rng(0)
    for k in SMOOTHED_KEYS:  # jitter on top of the smooth curves, as a real capture has
        take.arrays[k] = take.arrays[k] + rng.normal(0, 0.05, take.arrays[k].shape).astype(np.float32)
        take.arrays["raw_" + k] = take.arrays[k].copy()
    return write_take(path, take.arrays, take.meta)


def _jitter(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, n=2, axis=0)).mean())


def test_resmooth_then_turn_it_off_again(unicode_tmp):
    src = _noisy_take(unicode_tmp / "prise.npz")
    out = unicode_tmp / "lissée.npz"

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "backend", "smooth", *map(str, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = run(src, "-o", out, "--smooth", "butterworth", "--smooth-strength", "0.8")
    assert proc.returncode == 0, proc.stderr
    before, after = read_take(src), read_take(out)
    assert after.meta["smoothing"]["method"] == "butterworth"
    assert _jitter(after["exp"]) < 0.5 * _jitter(before["exp"])  # smoothed
    np.testing.assert_array_equal(after["raw_exp"], before["raw_exp"])  # raw values untouched
    assert run(out, "--smooth", "off").returncode == 0  # in place
    off = read_take(out)
    for k in SMOOTHED_KEYS:
        np.testing.assert_allclose(off[k], off["raw_" + k], atol=1e-6)
