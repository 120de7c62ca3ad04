"""FLAME's 68 landmarks as an exact function of expression and jaw (numpy; no torch): the landmark-level terms of
FLAME's linear blend skinning (``emoca_contract.arkit_map.FlameLandmarks``).

Conventions: the model's own frame (FLAME: metres, +Y up, the face looks along +Z); identity 0; the root, neck and
eyes at rest, so the only joint that turns is the jaw (joint 2, parent the neck) and a vertex moves to
``v + w_jaw (R - I)(v - j)`` after its pose correctives (``posedirs`` on the jaw's features ``R - I``). The 68
points are the embedding's static "full" set (``full_faces``/``full_bary``: DECA's ``landmarks3d``).
"""

from __future__ import annotations

import numpy as np

from backend.flame.data import FlameData
from backend.flame.landmarks import LandmarkEmbedding
from emoca_contract.arkit_map import JAW_FEATURES, FlameLandmarks

JAW = 2  # FLAME's joints: root, neck, jaw, eye_L, eye_R


def corner_sums(faces: np.ndarray, lmk_faces: np.ndarray, lmk_bary: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Barycentric sums over each landmark's triangle: values (V, ...) -> (L, ...)."""
    corners = np.asarray(faces, np.int64)[np.asarray(lmk_faces, np.int64)]  # (L, 3)
    return np.einsum("lk,lk...->l...", np.asarray(lmk_bary, np.float64), np.asarray(values, np.float64)[corners])


def flame_landmark_model(flame: FlameData, embedding: LandmarkEmbedding, n_exp: int | None = None) -> FlameLandmarks:
    """FLAME's landmarks under expression (its first ``n_exp`` components, default all) and jaw."""
    n = flame.n_exp if n_exp is None else min(int(n_exp), flame.n_exp)
    embedding.validate(len(flame.faces))
    t = np.asarray(flame.v_template, np.float64)  # (V, 3)
    e = np.asarray(flame.expdirs, np.float64)[:, :, :n]  # (V, 3, E)
    p = np.asarray(flame.posedirs, np.float64)[:, :, JAW_FEATURES]  # (V, 3, 9)
    w = np.asarray(flame.weights, np.float64)[:, JAW]  # (V,)
    jreg = np.asarray(flame.J_regressor, np.float64)[JAW]  # (V,)

    def sums(values: np.ndarray) -> np.ndarray:
        return corner_sums(flame.faces, embedding.full_faces, embedding.full_bary, values)

    return FlameLandmarks(
        p0=sums(t),
        pe=sums(e),
        pp=sums(p),
        q0=sums(w[:, None] * t),
        qe=sums(w[:, None, None] * e),
        qp=sums(w[:, None, None] * p),
        omega=sums(w),
        j0=jreg @ t,
        je=np.einsum("v,vce->ce", jreg, e),
    )
