"""EMOCA's training losses as small pure torch functions (emoca.md §5.3 v1, §1.6 v2), with the official weights.

Conventions: landmarks are (B, K, 2) (or (B, K, >=2), extra columns ignored) in normalised crop coordinates
([-1, 1], +x right, +y down), the same space for predictions (projected FLAME landmarks) and ground truth.
Each function returns the UNWEIGHTED term; `V1_WEIGHTS` / `V2_WEIGHTS` hold the official weights and
:func:`total` combines a dict of terms with a weight dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---- official default weights --------------------------------------------------------------------------------
# v1 = gdl_apps/EMOCA/training/emoca.yaml (coarse); v2 = coarse_train_emica_v2_emonet_lip_mediapipe.yaml.
V1_WEIGHTS: dict[str, float] = {
    "emotion": 1.0,  # emonet_weight (ResNet-50 feature MSE)
    "eye_distance": 0.5,  # eyed
    "lip_distance": 0.5,  # lipd
    "mouth_corner_distance": 0.5,  # lipd (the mouth-corner term shares lipd)
    "photometric": 2.0,  # photow
    "exp_reg": 1e-4,
    "light_reg": 12.0,
    "landmark": 0.0,  # use_landmarks: false -> logged as a metric only
}
V2_WEIGHTS: dict[str, float] = {
    "emotion": 1.0,
    "landmark_mp": 1.0,  # lmk_weight_mp
    "eye_distance_mp": 0.5,  # eyed_mp
    "lip_distance_mp": 0.5,  # lipd_mp
    "mouth_corner_distance_mp": 0.5,  # lipd_mp
    "photometric": 2.0,
    "exp_reg": 1e-4,
    "light_reg": 12.0,
    "landmark": 0.0,  # lmk_weight 0
    "eye_distance": 0.0,  # eyed 0
    "lip_distance": 0.0,  # lipd 0
}

# ---- iBUG-68 pairs (0-based) -----------------------------------------------------------------------------------
EYE_PAIRS_68 = ((37, 41), (38, 40), (43, 47), (44, 46))
LIP_PAIRS_68 = ((61, 67), (62, 66), (63, 65))
MOUTH_CORNER_PAIRS_68 = ((48, 54), (60, 64))

# ---- mediapipe-478 pairs (FaceMesh topology indices) ------------------------------------------------------------
# 7 upper/lower eyelid pairs per eye, upper/lower lip lines (outer + inner), mouth corners (outer, inner).
EYE_PAIRS_MP = tuple(zip((246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155))) + tuple(
    zip((466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382))
)
LIP_PAIRS_MP = tuple(zip((185, 40, 39, 37, 0, 267, 269, 270, 409), (146, 91, 181, 84, 17, 314, 405, 321, 375))) + tuple(
    zip((191, 80, 81, 82, 13, 312, 311, 310, 415), (95, 88, 178, 87, 14, 317, 402, 318, 324))
)
MOUTH_CORNER_PAIRS_MP = ((61, 291), (78, 308))


def remap_pairs(pairs, indices) -> tuple[tuple[int, int], ...]:
    """Pairs given in mediapipe-478 indices -> positions in a landmark subset listed by ``indices`` (e.g. the
    105 embedding points); pairs with a point outside the subset are dropped."""
    pos = {int(k): i for i, k in enumerate(indices)}
    return tuple((pos[a], pos[b]) for a, b in pairs if a in pos and b in pos)


def emotion_feature_loss(feat_input: torch.Tensor, feat_render: torch.Tensor) -> torch.Tensor:
    """Emotion consistency: MSE between the frozen emotion net's features of the input image and of the coarse
    rendering (official: 2048-d pooled ResNet-50 features, `emo_feat_loss: mse_loss`). (B, D), (B, D) -> ()."""
    return F.mse_loss(feat_render, feat_input)


def pair_distances(lmk: torch.Tensor, pairs) -> torch.Tensor:
    """Euclidean 2D distances of landmark pairs. lmk (B, K, >=2) -> (B, P)."""
    a = torch.tensor([p[0] for p in pairs], device=lmk.device)
    b = torch.tensor([p[1] for p in pairs], device=lmk.device)
    return (lmk[:, a, :2] - lmk[:, b, :2]).norm(dim=-1)


def relative_distance_loss(pred: torch.Tensor, gt: torch.Tensor, pairs) -> torch.Tensor:
    """Mean L1 between predicted and ground-truth pair distances (eye closure, lip closure, mouth corners):
    mean_{b,p} | d_pred(b,p) - d_gt(b,p) |. (B, K, >=2) x2 -> ()."""
    return (pair_distances(pred, pairs) - pair_distances(gt, pairs)).abs().mean()


def eye_distance_loss(pred68: torch.Tensor, gt68: torch.Tensor) -> torch.Tensor:
    """v1 eye-closure term over the upper/lower eyelid pairs 37-41, 38-40, 43-47, 44-46 (weight eyed 0.5)."""
    return relative_distance_loss(pred68, gt68, EYE_PAIRS_68)


def lip_distance_loss(pred68: torch.Tensor, gt68: torch.Tensor) -> torch.Tensor:
    """v1 lip-closure term over the inner-lip pairs 61-67, 62-66, 63-65 (weight lipd 0.5)."""
    return relative_distance_loss(pred68, gt68, LIP_PAIRS_68)


def mouth_corner_distance_loss(pred68: torch.Tensor, gt68: torch.Tensor) -> torch.Tensor:
    """v1 mouth-corner term over 48-54 and 60-64 (weight lipd 0.5)."""
    return relative_distance_loss(pred68, gt68, MOUTH_CORNER_PAIRS_68)


def landmark_weights_68(device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-point weights of DECA's weighted landmark loss: 1; 2 for 5-6 and 10-11; 1.5 for 27-35 and 48-67;
    3 for 30, 31, 35, 48, 54 (later rules override earlier ones). (68,)."""
    w = torch.ones(68, dtype=dtype, device=device)
    w[5:7] = 2
    w[10:12] = 2
    w[27:36] = 1.5
    w[48:68] = 1.5
    w[[30, 31, 35, 48, 54]] = 3
    return w


def weighted_landmark_loss(pred68: torch.Tensor, gt68: torch.Tensor) -> torch.Tensor:
    """Weighted absolute 68-landmark L1: sum_k w_k (|dx_k| + |dy_k|) / (2 sum_k w_k), averaged over the batch.
    v1 logs it as a metric only (use_landmarks: false). (B, 68, >=2) x2 -> ()."""
    w = landmark_weights_68(pred68.device, pred68.dtype)
    err = (pred68[..., :2] - gt68[..., :2]).abs().sum(-1)  # (B, 68)
    return ((err * w).sum(-1) / (2 * w.sum())).mean()


def landmark_l1_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """v2 absolute mediapipe landmark loss: mean L1 over points and coordinates (weight lmk_weight_mp 1)."""
    return (pred[..., :2] - gt[..., :2]).abs().mean()


def photometric_loss(rendered: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean(mask * |rendered - image|) over all pixels and channels; mask = rendered UV face-eye mask x alpha
    (`useSeg: rend`), rendering on black (weight photow 2.0). (B,3,H,W), (B,3,H,W), (B,1,H,W) -> ()."""
    return (mask * (rendered - image).abs()).mean()


def expression_reg(exp: torch.Tensor) -> torch.Tensor:
    """sum(exp^2) / 2, SUMMED over the batch (not averaged; weight 1e-4). (B, n_exp) -> ()."""
    return (exp**2).sum() / 2


def light_reg(light: torch.Tensor) -> torch.Tensor:
    """mean((mean over RGB of light - light)^2): pushes the SH light towards white (weight 12). (B, 9, 3) -> ()."""
    return ((light.mean(dim=2, keepdim=True) - light) ** 2).mean()


def expression_param_loss(exp_pred: torch.Tensor, exp_gt: torch.Tensor) -> torch.Tensor:
    """SYNTHETIC-DATA SANITY LOSS (not part of EMOCA): mean squared error to known expression parameters, only
    usable on renders of the synthetic head whose parameters are known. (B, n) x2 -> ()."""
    n = min(exp_pred.shape[1], exp_gt.shape[1])
    return ((exp_pred[:, :n] - exp_gt[:, :n]) ** 2).mean()


# ---- the emotion recognition network (emoca.md §6) -------------------------------------------------------------
def pcc(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two (N,) vectors."""
    xm, ym = x - x.mean(), y - y.mean()
    return (xm * ym).sum() / (xm.norm() * ym.norm() + eps)


def ccc(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Lin's concordance correlation: 2 cov / (var_x + var_y + (mean_x - mean_y)^2)."""
    xm, ym = x.mean(), y.mean()
    cov = ((x - xm) * (y - ym)).mean()
    return 2 * cov / (x.var(unbiased=False) + y.var(unbiased=False) + (xm - ym) ** 2 + eps)


def emotion_losses(
    out: torch.Tensor, valence: torch.Tensor, arousal: torch.Tensor, expression: torch.Tensor, n_expression: int = 8
) -> dict[str, torch.Tensor]:
    """The emotion net's losses (emoca.md §6): v_mse, a_mse, 1-PCC and 1-CCC on valence/arousal, NLL on the
    expression class. out (B, n+2) raw [logits | v | a]; NaN targets / expression -1 are skipped."""
    from backend.models.emotion import split_outputs

    logp, v, a = split_outputs(out, n_expression)
    terms: dict[str, torch.Tensor] = {}
    for name, pred, gt in (("v", v, valence), ("a", a, arousal)):
        ok = torch.isfinite(gt)
        if ok.sum() >= 2:
            terms[f"{name}_mse"] = ((pred[ok] - gt[ok]) ** 2).mean()
            terms[f"{name}_pcc"] = 1 - pcc(pred[ok], gt[ok])
            terms[f"{name}_ccc"] = 1 - ccc(pred[ok], gt[ok])
    ok = expression >= 0
    if ok.any():
        terms["expr_nll"] = torch.nn.functional.nll_loss(logp[ok], expression[ok])
    return terms


def total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_k weights[k] * terms[k] over the terms with a non-zero weight (others are metrics)."""
    out = None
    for k, v in terms.items():
        w = float(weights.get(k, 0.0))
        if w:
            out = v * w if out is None else out + v * w
    if out is None:
        raise ValueError("no loss term has a non-zero weight")
    return out
