"""Evidence: training on renders of the synthetic head with known expressions lowers the held-out error."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]


def test_tiny_training_lowers_held_out_expression_error(tmp_path):
    """tiny_cpu (1000 steps, ~4 min on a CPU): E_expression (a small CNN) trained with the EMOCA v1 terms (emotion
    consistency through fer, eye/lip/mouth distances, photometric, regularizers), the 68-landmark loss and a
    synthetic-data sanity loss on the known expression parameters. The held-out error (64 renders never
    seen, the 7 meaningful components) must fall clearly below the untrained model's."""
    from backend.app.bench.train import TRAIN_ERROR_STEPS, evidence_fingerprint, synthetic_training_evidence

    ev = synthetic_training_evidence(tmp_path / "run")
    print(ev)
    assert ev["steps"] >= 200, ev  # enough optimisation happened for the comparison to mean something
    # step-limited, not time-limited: every asked step ran, whatever the machine's load
    assert ev["steps"] == ev["steps_asked"] == TRAIN_ERROR_STEPS, ev
    assert ev["fingerprint"] == evidence_fingerprint(TRAIN_ERROR_STEPS)  # what make bench will reuse
    assert ev["ratio"] < 0.7, ev
    # the emotion-consistency path ran: its term was logged during training
    import csv

    rows = list(csv.DictReader(open(next((tmp_path / "run" / "logs").rglob("metrics.csv")), encoding="utf-8")))
    assert any(r.get("train/emotion") not in (None, "") for r in rows)
