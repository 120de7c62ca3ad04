"""The training figure's cache: reused only when made by the same code and step count (no training here; the
slow test in test_synthetic_training.py runs the real thing and writes the cache)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_fingerprint_depends_on_the_step_count_and_is_stable():
    from backend.app.bench.train import evidence_fingerprint

    assert evidence_fingerprint(1000) == evidence_fingerprint(1000)
    assert evidence_fingerprint(1000) != evidence_fingerprint(400)
    assert len(evidence_fingerprint(1000)) == 16


def test_a_cached_run_of_this_code_is_reused(tmp_path, monkeypatch):
    from backend.app.bench import train as bench_train

    cache = tmp_path / "synthetic_training.json"
    ev = {
        "fingerprint": bench_train.evidence_fingerprint(bench_train.TRAIN_ERROR_STEPS),
        "before": 1.6,
        "after": 0.6,
        "ratio": 0.375,
        "steps": bench_train.TRAIN_ERROR_STEPS,
        "seconds": 150.0,
        "created": "now",
    }
    cache.write_text(json.dumps(ev), encoding="utf-8")
    monkeypatch.setattr(bench_train, "CACHE", cache)
    out = bench_train.error_figures()
    assert out["train_error_ratio"] == 0.375 and out["train_error_steps"] == bench_train.TRAIN_ERROR_STEPS
    assert out["train_error_step_s"] == 0.15 and out["train_error_source"].startswith("cached")
