"""Valence/arousal estimated from class probabilities (the circumplex table)."""

from __future__ import annotations

import numpy as np
import pytest

from emoca_contract.errors import EmocaError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _pure(name, classes):
    p = torch.zeros(1, len(classes))
    p[0, classes.index(name)] = 1.0
    return p


@pytest.mark.parametrize("classes_name", ["FER_CLASSES", "AFFECTNET_CLASSES"])
def test_pure_classes_land_in_the_right_quadrants(classes_name):
    from backend.models import emotion

    classes = getattr(emotion, classes_name)
    va = {c: tuple(float(t[0]) for t in emotion.circumplex_va(_pure(c, classes), classes)) for c in classes}
    assert va["Happy"][0] > 0.5
    assert va["Sad"][0] < -0.5 and va["Sad"][1] < 0
    assert va["Anger"][0] < 0 and va["Disgust"][0] < 0 and va["Fear"][0] < 0
    for high in ("Surprise", "Fear", "Anger"):
        assert va[high][1] > 0.5, high
        assert va[high][1] > va["Neutral"][1] > va["Sad"][1]
    assert va["Neutral"] == (0.0, 0.0)
    for v, a in va.values():
        assert v * v + a * a <= 1.0 + 2e-3  # (3-decimal rounding) inside the unit circle: the AffectNet V/A range


def test_more_happiness_means_more_valence():
    from backend.models.emotion import FER_CLASSES, circumplex_va

    w = torch.linspace(0, 1, 11)[:, None]
    p = (1 - w) * _pure("Neutral", FER_CLASSES) + w * _pure("Happy", FER_CLASSES)
    v, _ = circumplex_va(p, FER_CLASSES)
    assert torch.all(v[1:] > v[:-1])
    p = (1 - w) * _pure("Neutral", FER_CLASSES) + w * _pure("Sad", FER_CLASSES)
    v, a = circumplex_va(p, FER_CLASSES)
    assert torch.all(v[1:] < v[:-1]) and torch.all(a[1:] < a[:-1])


def test_weighted_mean_numpy_and_torch_agree_and_rows_are_renormalised():
    from backend.models.emotion import CIRCUMPLEX_COORDINATES, FER_CLASSES, circumplex_va

    rng = np.random.default_rng(0)
    p = rng.random((5, 7))
    vn, an = circumplex_va(p, FER_CLASSES)
    vt, at = circumplex_va(torch.from_numpy(p * 3.0), FER_CLASSES)  # unnormalised rows: same answer
    np.testing.assert_allclose(vn, vt.numpy(), atol=1e-5)
    np.testing.assert_allclose(an, at.numpy(), atol=1e-5)
    q = p / p.sum(1, keepdims=True)
    table = np.array([CIRCUMPLEX_COORDINATES[c] for c in FER_CLASSES])
    np.testing.assert_allclose(vn, q @ table[:, 0], atol=1e-5)


def test_documented_table_matches_the_code():
    """docs/emotion.md lists the same coordinates as CIRCUMPLEX_COORDINATES."""
    from pathlib import Path

    from backend.models.emotion import CIRCUMPLEX_COORDINATES

    text = (Path(__file__).resolve().parents[2] / "docs" / "emotion.md").read_text(encoding="utf-8")
    for name, (v, a) in CIRCUMPLEX_COORDINATES.items():
        assert f"| {name} |" in text
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"{v:+.3f}" in row and f"{a:+.3f}" in row, row


def test_unknown_class_and_bad_shapes_are_refused():
    from backend.models.emotion import circumplex_va

    with pytest.raises(EmocaError) as e:
        circumplex_va(torch.ones(1, 2), ["Happy", "Bored"])
    assert e.value.code == "config_invalid" and "Bored" in e.value.message
    with pytest.raises(EmocaError):
        circumplex_va(torch.ones(1, 3), ["Happy", "Sad"])


def test_unpleasant_classes_read_clearly_unpleasant():
    """The issue: with Russell-1980 angles, a clip that is 99% Anger read valence -0.18. The rated coordinates put
    every unpleasant class well below zero, and anger / fear above the origin in arousal."""
    from backend.models.emotion import FER_CLASSES, circumplex_va

    p = 0.99 * _pure("Anger", FER_CLASSES) + 0.01 * _pure("Neutral", FER_CLASSES)
    v, a = circumplex_va(p, FER_CLASSES)
    assert v[0] < -0.4 and a[0] > 0.4
    for name in ("Anger", "Fear", "Disgust", "Sad"):
        v, _ = circumplex_va(_pure(name, FER_CLASSES), FER_CLASSES)
        assert v[0] < -0.4, name
