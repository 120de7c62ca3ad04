"""The loss terms against hand-computed values and their defining properties."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from backend.training import losses as LS  # noqa: E402
from backend.training.losses import ccc, emotion_losses, pcc  # noqa: E402

pytestmark = pytest.mark.torch


def _lmk(b=2):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 68, 2, generator=g) * 2 - 1


def test_official_weights():
    assert LS.V1_WEIGHTS["emotion"] == 1.0 and LS.V1_WEIGHTS["photometric"] == 2.0
    assert LS.V1_WEIGHTS["eye_distance"] == LS.V1_WEIGHTS["lip_distance"] == 0.5
    assert LS.V1_WEIGHTS["exp_reg"] == 1e-4 and LS.V1_WEIGHTS["light_reg"] == 12
    assert LS.V1_WEIGHTS["landmark"] == 0  # metric only in v1
    assert LS.V2_WEIGHTS["landmark_mp"] == 1 and LS.V2_WEIGHTS["eye_distance_mp"] == 0.5
    assert LS.V2_WEIGHTS["lip_distance_mp"] == 0.5 and LS.V2_WEIGHTS["eye_distance"] == 0


def test_eye_distance_hand_computed():
    gt = _lmk()
    pred = gt.clone()
    assert LS.eye_distance_loss(pred, gt) == 0
    # open the upper lid 37 of image 0 by 0.1 straight up (away from 41): one of 8 pair distances grows by 0.1
    d0 = (gt[0, 37] - gt[0, 41]).norm()
    pred[0, 37] = gt[0, 41] + (gt[0, 37] - gt[0, 41]) * (d0 + 0.1) / d0
    assert LS.eye_distance_loss(pred, gt).item() == pytest.approx(0.1 / 8, rel=1e-5)
    # a rigid shift of all landmarks changes no relative distance
    assert LS.lip_distance_loss(gt + 0.3, gt).item() == pytest.approx(0, abs=1e-6)
    assert LS.mouth_corner_distance_loss(gt * 2, gt) > 0


def test_weighted_landmark_loss_normalisation():
    gt = _lmk()
    w = LS.landmark_weights_68()
    assert w[30] == 3 and w[5] == 2 and w[27] == 1.5 and w[0] == 1 and w[60] == 1.5
    # a uniform offset of 0.2 in x only: sum w * 0.2 / (2 sum w) = 0.1
    assert LS.weighted_landmark_loss(gt + torch.tensor([0.2, 0.0]), gt).item() == pytest.approx(0.1, rel=1e-5)


def test_regularizers_and_photometric():
    exp = torch.ones(3, 50)
    assert LS.expression_reg(exp).item() == pytest.approx(3 * 50 / 2)  # summed over the batch
    assert LS.expression_reg(torch.ones(6, 50)).item() == pytest.approx(2 * LS.expression_reg(exp).item())
    white = torch.rand(2, 9, 1).repeat(1, 1, 3)
    assert LS.light_reg(white).item() == pytest.approx(0, abs=1e-7)
    coloured = torch.zeros(1, 9, 3)
    coloured[0, 0] = torch.tensor([0.0, 0.0, 3.0])  # mean 1 -> squared deviations 1, 1, 4 -> 6 / 27
    assert LS.light_reg(coloured).item() == pytest.approx(6 / 27)
    img = torch.zeros(1, 3, 4, 4)
    ren = torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # half the pixels
    assert LS.photometric_loss(ren, img, mask).item() == pytest.approx(0.5)


def test_emotion_feature_loss_is_mse():
    a, b = torch.zeros(2, 4), torch.full((2, 4), 2.0)
    assert LS.emotion_feature_loss(a, b).item() == pytest.approx(4.0)


def test_mediapipe_pairs_remap_to_subset():
    idx = [33, 246, 7, 61, 291, 0, 17]
    pairs = LS.remap_pairs(LS.EYE_PAIRS_MP + LS.MOUTH_CORNER_PAIRS_MP, idx)
    assert pairs == ((1, 2), (3, 4))
    assert all(a != b for a, b in LS.EYE_PAIRS_MP + LS.LIP_PAIRS_MP)
    assert len(LS.EYE_PAIRS_MP) == 14


def test_emotion_network_losses():
    v = torch.tensor([-0.5, 0.1, 0.4, 0.9])
    a = torch.tensor([0.2, -0.3, 0.0, 0.5])
    e = torch.tensor([0, 1, 7, -1])
    logits = torch.full((4, 8), -20.0)
    logits[torch.arange(3), e[:3]] = 20.0
    out = torch.cat([logits, v[:, None], a[:, None]], 1)
    t = emotion_losses(out, v, a, e)
    for k in ("v_mse", "a_mse", "v_pcc", "a_pcc", "v_ccc", "a_ccc", "expr_nll"):
        assert t[k].item() == pytest.approx(0, abs=1e-5), k
    assert pcc(v, 2 * v + 1).item() == pytest.approx(1, abs=1e-6)
    assert ccc(v, 2 * v + 1).item() < 0.9  # concordance punishes scale and offset, correlation does not
    nan = torch.full((4,), math.nan)
    t = emotion_losses(out, nan, nan, e)
    assert set(t) == {"expr_nll"}


def test_total_uses_only_weighted_terms():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(5.0)}
    assert LS.total(terms, {"a": 0.5}).item() == 1.0
    with pytest.raises(ValueError):
        LS.total(terms, {})


def test_v2_mediapipe_terms_run_in_the_module_and_vanish_at_the_truth():
    """v2 on the synthetic head (its vertices are mediapipe points, so the embedding is exact): with the true
    expression the mediapipe terms are ~0; with a wrong one they are not."""
    import lightning  # noqa: F401  (the module needs it)

    from backend.training.data import SyntheticHeadDataset
    from backend.training.module import EmocaCoarseModule
    from backend.training.run import load_config

    idx = sorted({k for p in LS.EYE_PAIRS_MP + LS.LIP_PAIRS_MP + LS.MOUTH_CORNER_PAIRS_MP for k in p})
    cfg = load_config("tiny_cpu", ["loss.setting=v2", f"model.mediapipe_indices={idx}", "loss.weights.emotion=0"])
    m = EmocaCoarseModule(cfg).eval()
    ds = SyntheticHeadDataset(4, seed=3, image_size=64, exp_std=2.0)
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    m.forward = lambda images: batch["exp"]  # the true expression
    _, terms = m.step(batch)
    for k in ("landmark_mp", "eye_distance_mp", "lip_distance_mp", "mouth_corner_distance_mp"):
        assert terms[k].item() < 1e-5, (k, terms[k])
    m.forward = lambda images: torch.zeros_like(batch["exp"])  # neutral instead
    _, wrong = m.step(batch)
    assert wrong["landmark_mp"] > 1e-3 and wrong["lip_distance_mp"] > 1e-3
