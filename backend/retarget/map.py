"""The FLAME <-> ARKit map (docs/retarget.md "The FLAME <-> ARKit map"): computed once per FLAME model from
geometry, cached under the user data folder by the model's hash, written in the contract's format
(``emoca_contract.arkit_map``).

How it is derived, step by step (each a function below):

1. :func:`align_ict`: the ICT head's 68 landmarks and its 52 ARKit shapes' landmark motion, moved onto FLAME's
   neutral landmarks by the similarity (rotation, translation, one scale) that best aligns the inner-face points
   (iBUG 17-67; the contour follows each model's own jaw line);
2. :func:`carried_channels`: the channels FLAME's landmarks can show: not gaze (ARKit's ``eyeLook*`` turn the
   eyeballs, which FLAME keeps in its eye joints, not in a take's expression), not a shape the ICT head lacks
   (``tongueOut``), and moving the landmarks by at least :data:`MIN_EFFECT_PCT` % of the face size;
3. :func:`inverse_map` (ARKit -> FLAME): for sampled ARKit weights, the FLAME expression and jaw whose landmarks
   best reproduce the ICT head's landmark motion, with a regulariser on the coefficients (Gauss-Newton on
   FLAME's exact landmark function: the jaw turns), then the linear map regressed from those pairs;
4. :func:`forward_map` (FLAME -> ARKit): the linear map regressed (weighted least squares) from two sets: the
   inverse's images of the sampled ARKit weights with those weights (weight ``round_trip``, 0.95: so that the two
   maps invert each other and ARKit -> FLAME -> ARKit gives the weights back), and sampled FLAME expressions and
   jaw turns with the ARKit weights in [0, 1] whose ICT landmark motion best reproduces FLAME's (bounded least
   squares, ``landmark_solve.bounded_lsq``; the rest of the weight: they decide the directions of FLAME's space
   the inverse never reaches). Where FLAME and the ICT shapes move the landmarks alike the two sets agree; where
   they do not (the synthetic test head's random components), the map favours the round trip;
5. :func:`map_figures`: how well each direction reproduces landmark motion on samples the fits never saw, in %
   of the face size (:func:`emoca_contract.landmark_solve.face_size` of FLAME's neutral landmarks).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend import __version__
from backend.paths import flame_cache_dir
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.arkit_map import (
    MAP_FORMAT,
    MAP_VERSION,
    ArkitMap,
    FlameLandmarks,
    flame_landmarks,
    map_arrays,
    read_arkit_map,
)
from emoca_contract.errors import EmocaError
from emoca_contract.landmark_solve import bounded_lsq, face_size, similarity
from emoca_contract.rotations import axis_angle_to_matrix

BUILDER_VERSION = 1  # part of the cache key: a change to how maps are derived rebuilds them
INNER = np.arange(17, 68)  # iBUG-68 brows, nose, eyes and lips: the alignment's points
GAZE = tuple(n for n in ARKIT_NAMES if n.startswith("eyeLook"))
MIN_EFFECT_PCT = 1.0  # a channel moving no landmark by this much (% of the face size) is not carried


@dataclass(frozen=True)
class MapOptions:
    """How a map is fitted. Sample counts are per set (FLAME samples, ARKit samples); regularisers relative."""

    n_exp: int = 50
    samples: int = 1500
    test_samples: int = 300
    seed: int = 0
    exp_sigma: float = 1.0  # FLAME samples: each coefficient N(0, sigma^2) ...
    exp_density: float = 0.3  # ... with this probability, else 0
    jaw_open: float = 0.35  # the jaw opens uniformly up to this many radians (in 70% of samples)
    arkit_density: float = 0.2  # ARKit samples: each carried channel on with this probability, weight U(0, 1)
    ridge: float = 1e-3  # the bounded fit's ridge, relative to one channel's mean squared landmark effect
    regularizer: float = 1e-3  # the inverse's, relative to each FLAME coefficient's own squared effect
    gauss_newton: int = 6  # iterations of the inverse's fit on FLAME's exact (jaw-turning) landmarks
    round_trip: float = 0.95  # the forward fit's weight on inverting the inverse (the rest: FLAME samples' fits)


# ------------------------------------------------------------------------------------------------- geometry
def align_ict(flame_neutral: np.ndarray, ict_neutral: np.ndarray,
              ict_effects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ICT landmarks (68, 3) and ARKit effects (52, 68, 3) moved onto FLAME's neutral landmarks (68, 3)."""
    s = similarity(ict_neutral[INNER], flame_neutral[INNER])
    return s.apply(ict_neutral), s.apply_vectors(ict_effects)


def carried_channels(effects: np.ndarray, size: float) -> np.ndarray:
    """(52,) bool: the channels a FLAME take can carry (see the module docstring, step 2)."""
    moved = np.linalg.norm(effects, axis=2).max(1) / size * 100.0
    named = np.array([n not in GAZE and n != "tongueOut" for n in ARKIT_NAMES])
    return named & (moved >= MIN_EFFECT_PCT)


def landmark_motion(model: FlameLandmarks, x: np.ndarray) -> np.ndarray:
    """FLAME's landmark motion (N, 68, 3) from its neutral for x = [exp, jaw] (N, E + 3)."""
    return flame_landmarks(model, x[:, : model.n_exp], x[:, model.n_exp :]) - model.p0


def jacobian(model: FlameLandmarks, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d landmarks / d x (N, 204, E + 3) at x (N, E + 3): exact in the expression (linear at a fixed jaw),
    central differences in the jaw."""
    n, e = len(x), model.n_exp
    jaw = x[:, e:]
    rot = axis_angle_to_matrix(jaw)
    # d/d exp of p + (R - I)(q - omega j): pe + (R - I)(qe - omega je)
    arm = model.qe - model.omega[:, None, None] * model.je[None]  # (68, 3, E)
    d_exp = model.pe[None] + np.matmul((rot - np.eye(3))[:, None], arm[None])  # (N, 68, 3, E)
    d_jaw = np.empty((n, 68, 3, 3))
    for i in range(3):
        step = np.zeros(3)
        step[i] = h
        up = flame_landmarks(model, x[:, :e], jaw + step)
        down = flame_landmarks(model, x[:, :e], jaw - step)
        d_jaw[..., i] = (up - down) / (2 * h)
    return np.concatenate([d_exp, d_jaw], axis=3).reshape(n, 68 * 3, e + 3)


# ------------------------------------------------------------------------------------------------- sampling
def flame_samples(model: FlameLandmarks, count: int, opt: MapOptions, rng: np.random.Generator) -> np.ndarray:
    """FLAME samples x = [exp, jaw] (count, E + 3): sparse normal expressions, a jaw that opens (and a little
    sideways)."""
    e = model.n_exp
    exp = rng.normal(0.0, opt.exp_sigma, (count, e)) * (rng.random((count, e)) < opt.exp_density)
    jaw = np.zeros((count, 3))
    jaw[:, 0] = rng.uniform(0.0, opt.jaw_open, count) * (rng.random(count) < 0.7)
    jaw[:, 1:] = rng.normal(0.0, 0.02, (count, 2))
    return np.concatenate([exp, jaw], axis=1)


def arkit_samples(carried: np.ndarray, count: int, opt: MapOptions, rng: np.random.Generator) -> np.ndarray:
    """ARKit samples (count, 52): each carried channel on with ``arkit_density``, its weight U(0, 1)."""
    on = (rng.random((count, len(carried))) < opt.arkit_density) & carried
    return rng.random((count, len(carried))) * on


# ------------------------------------------------------------------------------------------------- the fits
def _linear_fit(inputs: np.ndarray, outputs: np.ndarray, weights: np.ndarray | None = None,
                ridge: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """outputs ~ inputs @ A.T + a in (sample-weighted) least squares, a tiny ridge on A: (A (O, I), a (O,))."""
    sw = np.ones(len(inputs)) if weights is None else np.asarray(weights, np.float64)
    sw = sw / sw.sum()
    mi, mo = sw @ inputs, sw @ outputs
    xi, xo = inputs - mi, outputs - mo
    gram = (sw[:, None] * xi).T @ xi
    scale = float(np.mean(np.diag(gram))) or 1.0
    a = np.linalg.solve(gram + ridge * scale * np.eye(len(gram)), (sw[:, None] * xi).T @ xo).T
    return a, mo - a @ mi


def fit_flame(model: FlameLandmarks, targets: np.ndarray, opt: MapOptions) -> np.ndarray:
    """FLAME's x (N, E + 3) whose landmark motion best reproduces targets (N, 68, 3), with the regulariser:
    Gauss-Newton from 0 (the first step is the linear least squares at the neutral)."""
    n, k = len(targets), model.n_exp + 3
    x = np.zeros((n, k))
    j0 = jacobian(model, np.zeros((1, k)))[0]
    reg = opt.regularizer * np.maximum(np.sum(j0**2, axis=0), 1e-12 * np.sum(j0**2))  # each coefficient's own scale
    b = targets.reshape(n, -1)
    for _ in range(max(1, opt.gauss_newton)):
        jac = jacobian(model, x)
        resid = b - landmark_motion(model, x).reshape(n, -1)
        jt = jac.transpose(0, 2, 1)
        lhs = jt @ jac + np.diag(reg)
        rhs = (jt @ resid[..., None])[..., 0] - reg * x
        x = x + np.linalg.solve(lhs, rhs[..., None])[..., 0]
    return x


def inverse_map(model: FlameLandmarks, effects: np.ndarray, weights: np.ndarray,
                opt: MapOptions) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """ARKit -> FLAME: (inverse (E + 3, 52), bias (E + 3,)) regressed from FLAME's best fits of the ICT motion of
    the sampled weights (N, 52)."""
    x = fit_flame(model, np.einsum("nk,klc->nlc", weights, effects), opt)
    return _linear_fit(weights, x)


def bounded_fit(effects: np.ndarray, motion: np.ndarray, carried: np.ndarray, ridge: float) -> np.ndarray:
    """The carried ARKit weights in [0, 1] (N, 52) whose ICT motion best reproduces motion (N, 68, 3)."""
    a = effects[carried].reshape(int(carried.sum()), -1).T  # (204, C)
    unit = float(np.mean(np.sum(a**2, axis=0))) or 1.0
    w = np.zeros((len(motion), len(carried)))
    w[:, carried] = bounded_lsq(a, motion.reshape(len(motion), -1), 0.0, 1.0, ridge=ridge * unit)
    return w


def forward_map(model: FlameLandmarks, effects: np.ndarray, carried: np.ndarray, x_flame: np.ndarray,
                weights: np.ndarray, x_of_weights: np.ndarray,
                opt: MapOptions) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """FLAME -> ARKit: (forward (52, E + 3), bias (52,)) regressed from the FLAME samples x_flame (N, E + 3) with
    the bounded ARKit fits of their motion, and the inverse's images x_of_weights (M, E + 3) of the ARKit samples
    (M, 52) with those weights. Rows of channels not carried are 0."""
    fitted = bounded_fit(effects, landmark_motion(model, x_flame), carried, opt.ridge)
    share = np.r_[np.full(len(x_flame), (1.0 - opt.round_trip) / len(x_flame)),
                  np.full(len(weights), opt.round_trip / len(weights))]  # fmt: skip
    a, b = _linear_fit(np.concatenate([x_flame, x_of_weights]), np.concatenate([fitted, weights]), share)
    return a * carried[:, None], b * carried


# ------------------------------------------------------------------------------------------------- figures
def _mean_error_pct(a: np.ndarray, b: np.ndarray, size: float) -> float:
    return float(np.linalg.norm(a - b, axis=2).mean() / size * 100.0)


def map_figures(m: ArkitMap, opt: MapOptions) -> dict[str, float]:
    """How well the map reproduces landmark motion, on fresh samples (seed + 1), in % of the face size: mean
    landmark error of each direction, the best any ARKit weights do (``forward_floor``), the motion's own mean
    size, and the mean weight error of ARKit -> FLAME -> ARKit on the carried channels."""
    rng = np.random.default_rng(opt.seed + 1)
    size = face_size(m.flame.p0)
    x = flame_samples(m.flame, opt.test_samples, opt, rng)
    motion = landmark_motion(m.flame, x)
    w = np.clip(x @ m.forward.T + m.forward_bias, 0.0, 1.0) * m.carried
    best = bounded_fit(m.arkit_effects, motion, m.carried, opt.ridge)
    ict = np.einsum("nk,klc->nlc", w, m.arkit_effects)
    ict_best = np.einsum("nk,klc->nlc", best, m.arkit_effects)
    weights = arkit_samples(m.carried, opt.test_samples, opt, rng)
    back = weights @ m.inverse.T + m.inverse_bias
    ict_motion = np.einsum("nk,klc->nlc", weights, m.arkit_effects)
    again = np.clip(back @ m.forward.T + m.forward_bias, 0.0, 1.0) * m.carried
    zero = np.zeros_like(motion)
    return {
        "face_size_m": round(size, 5),
        "forward_error_pct": round(_mean_error_pct(ict, motion, size), 3),
        "forward_floor_pct": round(_mean_error_pct(ict_best, motion, size), 3),
        "forward_motion_pct": round(_mean_error_pct(motion, zero, size), 3),
        "inverse_error_pct": round(_mean_error_pct(landmark_motion(m.flame, back), ict_motion, size), 3),
        "inverse_motion_pct": round(_mean_error_pct(ict_motion, np.zeros_like(ict_motion), size), 3),
        "round_trip_weight_error": round(float(np.abs(again - weights)[:, m.carried].mean()), 4),
    }


# ------------------------------------------------------------------------------------------------- the map
def build_map(flame: FlameLandmarks, ict_neutral: np.ndarray, ict_effects: np.ndarray,
              opt: MapOptions | None = None, meta: dict[str, Any] | None = None) -> ArkitMap:  # fmt: skip
    """The map for one FLAME model's landmarks (see the module docstring); ``meta`` adds fields (model name...)."""
    opt = opt or MapOptions()
    if flame.n_exp != opt.n_exp:
        raise ValueError(f"the landmark model has {flame.n_exp} expression components, the options {opt.n_exp}")
    rng = np.random.default_rng(opt.seed)
    neutral, effects = align_ict(flame.p0, ict_neutral, ict_effects)
    size = face_size(flame.p0)
    carried = carried_channels(effects, size)
    weights = arkit_samples(carried, opt.samples, opt, rng)
    inverse, inverse_bias = inverse_map(flame, effects, weights, opt)
    x_flame = flame_samples(flame, opt.samples, opt, rng)
    forward, forward_bias = forward_map(flame, effects, carried, x_flame, weights,
                                        weights @ inverse.T + inverse_bias, opt)  # fmt: skip
    m = ArkitMap(
        names=ARKIT_NAMES,
        forward=forward,
        forward_bias=forward_bias,
        inverse=inverse * carried[None, :],
        inverse_bias=inverse_bias,
        carried=carried,
        arkit_neutral=neutral,
        arkit_effects=effects,
        flame=flame,
        meta={},
    )
    full = {
        "format": MAP_FORMAT,
        "version": MAP_VERSION,
        "builder_version": BUILDER_VERSION,
        "backend_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "n_exp": opt.n_exp,
        "options": dataclasses.asdict(opt),
        "not_carried": [n for n, c in zip(ARKIT_NAMES, carried) if not c],
        "arkit_source": "ICT-FaceKit ARKit shapes (MIT), landmark_indices",
        **(meta or {}),
    }
    full["figures"] = map_figures(dataclasses.replace(m, meta=full), opt)
    return dataclasses.replace(m, meta=full)


def model_hash(flame: FlameLandmarks, ict_neutral: np.ndarray, ict_effects: np.ndarray, opt: MapOptions) -> str:
    """The cache key: a hash of everything the map is computed from (FLAME's landmark terms, the ICT landmarks
    and shapes, the options and the builder's version), 16 hex digits."""
    h = hashlib.sha256(f"arkit-map {BUILDER_VERSION} {json.dumps(dataclasses.asdict(opt), sort_keys=True)}".encode())
    for f in dataclasses.fields(FlameLandmarks):
        h.update(np.ascontiguousarray(getattr(flame, f.name), np.float64).tobytes())
    for arr in (ict_neutral, ict_effects):
        h.update(np.ascontiguousarray(arr, np.float64).tobytes())
    return h.hexdigest()[:16]


def write_map(path: str | os.PathLike, m: ArkitMap) -> Path:
    """Write a map file (compressed, atomic: ``PATH.partial`` then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **map_arrays(m))
    os.replace(tmp, path)
    return path


def map_cache_dir() -> Path:
    """Where maps are cached: ``<user data>/cache/arkit_maps``."""
    return flame_cache_dir() / "arkit_maps"


def cached_map(flame: FlameLandmarks, ict_neutral: np.ndarray, ict_effects: np.ndarray,
               opt: MapOptions | None = None, meta: dict[str, Any] | None = None, force: bool = False,
               folder: str | os.PathLike | None = None) -> tuple[Path, ArkitMap, bool]:  # fmt: skip
    """The model's map from the cache (``folder``, default :func:`map_cache_dir`), built and written when missing,
    unreadable or ``force``d: (path, map, built)."""
    opt = opt or MapOptions()
    key = model_hash(flame, ict_neutral, ict_effects, opt)
    path = Path(folder) if folder is not None else map_cache_dir()
    path = path / f"arkit_map_{key}.npz"
    if path.is_file() and not force:
        try:
            return path, read_arkit_map(path), False
        except EmocaError:
            pass  # a damaged cache entry is rebuilt
    m = build_map(flame, ict_neutral, ict_effects, opt, {**(meta or {}), "model_hash": key})
    return write_map(path, m), m, True


# ------------------------------------------------------------------------------------------------- which FLAME
HEADS = ("flame", "synthetic")


def head_landmarks(head: str = "flame", flame: str | os.PathLike | None = None,
                   landmarks: str | os.PathLike | None = None,
                   n_exp: int = 50) -> tuple[FlameLandmarks, dict[str, Any]]:  # fmt: skip
    """The landmark model of the FLAME a map is for, and its meta fields (``model``, ``model_source``):
    ``flame`` = the given FLAME file (its ``landmark_embedding.npy`` beside it, or ``landmarks``) or the installed
    one; ``synthetic`` = the synthetic test head (not FLAME)."""
    from backend.retarget.flame import flame_landmark_model

    if head not in HEADS:
        raise EmocaError("config_invalid", f"unknown head {head!r} for an ARKit map", f"Heads: {', '.join(HEADS)}.")
    if head == "synthetic":
        if flame is not None:
            raise EmocaError("config_invalid", "a FLAME file was given with the synthetic head", "Drop one.")
        from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding

        model = synthetic_head()
        embedding = synthetic_landmark_embedding(model)
    else:
        from backend.flame.io import load_flame
        from backend.flame.landmarks import load_landmark_embedding

        flame_path, lmk_path = _flame_files(flame, landmarks)
        model = load_flame(flame_path)
        embedding = load_landmark_embedding(lmk_path)
        embedding.validate(len(model.faces), str(lmk_path))
    if n_exp < 1 or n_exp > model.n_exp:
        raise EmocaError("config_invalid", f"--n-exp {n_exp}: the model has 1 to {model.n_exp} expression components")
    return flame_landmark_model(model, embedding, n_exp), {"model": model.name, "model_source": model.source}


def _flame_files(flame: str | os.PathLike | None, landmarks: str | os.PathLike | None) -> tuple[Path, Path]:
    """(FLAME file, landmark embedding): the given ones (the embedding beside the FLAME file by default), else the
    installed ones."""
    from backend.assets.resolve import resolve_capture

    if flame is None:
        installed = resolve_capture()
        if installed.flame is None:
            raise EmocaError("asset_missing", "no FLAME model is installed to build an ARKit map for",
                             "Install FLAME (docs/assets.md) or pass --flame generic_model.pkl.")  # fmt: skip
        flame_path, lmk = installed.flame, installed.landmarks
    else:
        flame_path, lmk = Path(flame), None
    lmk_path = Path(landmarks) if landmarks is not None else (lmk or flame_path.parent / "landmark_embedding.npy")
    if not lmk_path.is_file():
        raise EmocaError("asset_missing", f"landmark embedding not found: {lmk_path}",
                         "The map needs FLAME's 68 landmarks: install landmark_embedding.npy beside the FLAME "
                         "file, or pass --landmarks.")  # fmt: skip
    return flame_path, lmk_path


def map_for_head(head: str = "flame", flame: str | os.PathLike | None = None,
                 landmarks: str | os.PathLike | None = None, opt: MapOptions | None = None, force: bool = False,
                 folder: str | os.PathLike | None = None,
                 note: Callable[[str], None] | None = None) -> tuple[Path, ArkitMap, bool]:  # fmt: skip
    """The cached map for a head (:func:`head_landmarks`), built when needed: (path, map, built)."""
    from backend.ict.data import load_ict
    from backend.retarget.ict import ict_landmark_model

    opt = opt or MapOptions()
    model, meta = head_landmarks(head, flame, landmarks, opt.n_exp)
    ict_neutral, ict_effects = ict_landmark_model(load_ict())
    if note is not None:
        note(f"ARKit map for {meta['model']} ({opt.n_exp} expression components)")
    meta["head"] = head
    return cached_map(model, ict_neutral, ict_effects, opt, meta, force, folder)
