"""The FLAME <-> ARKit map file (docs/formats.md "ARKit map", docs/retarget.md): its format, its one reader and the
numpy functions both sides apply it with. numpy + stdlib only.

A map belongs to one FLAME model (``meta.model_hash``); the backend computes it once from geometry
(``backend.retarget.map``) and caches it. It holds, in one frame (the FLAME model's: metres, +Y up, the face looks
along +Z):

* FLAME's 68 landmarks as an exact function of expression and jaw (:class:`FlameLandmarks`: the landmark-level
  terms of FLAME's blend shapes, pose correctives and skinning, with identity 0 and every other joint at rest);
* the ICT head's 68 landmarks under the 52 ARKit shapes (``arkit_neutral``, ``arkit_effects``), aligned onto
  FLAME's neutral landmarks by a similarity;
* the two linear maps between FLAME's ``x = [exp (n_exp), jaw (3, axis-angle)]`` and the 52 ARKit weights ``w``
  (Apple's order, :data:`emoca_contract.arkit.ARKIT_NAMES`): ``w = clip(forward @ x + forward_bias, 0, 1)`` and
  ``x = inverse @ w + inverse_bias``; channels FLAME's landmarks cannot show (``carried`` False: eye gaze,
  tongue) are 0 forward and ignored backward.

A take's ``exp`` with fewer columns than the map's ``n_exp`` is padded with zeros (FLAME's later components at 0);
with more, EmocaError('flame_mismatch') (the map must be built for that many).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .arkit import ARKIT_NAMES
from .errors import EmocaError
from .rotations import axis_angle_to_matrix
from .take import is_npz

MAP_FORMAT = "emoca-arkit-map"
MAP_VERSION = 1
N_LANDMARKS = 68
JAW_FEATURES = slice(9, 18)  # FLAME's pose features are (R_j - I) of joints 1..4 row-major: the jaw is joint 2
REBUILD_HINT = "Build the map again: `python -m backend arkit-map --force`."


@dataclass(frozen=True)
class FlameLandmarks:
    """FLAME's 68 landmarks as a function of expression and jaw (identity 0, root, neck and eyes at rest).

    With ``p = p0 + pe exp + pp f`` and ``q = q0 + qe exp + qp f`` (f = the jaw's 9 pose features, R - I) and the
    jaw joint ``j = j0 + je exp``, a landmark is ``p + (R - I)(q - omega j)``: the barycentric sums over its
    triangle's corners of the posed vertex (p), of the vertex weighted by its jaw skinning weight (q) and of that
    weight (omega). Exactly FLAME's linear blend skinning when only the jaw turns.

    p0, q0 (68, 3); pe, qe (68, 3, E); pp, qp (68, 3, 9); omega (68,); j0 (3,); je (3, E).
    """

    p0: np.ndarray
    pe: np.ndarray
    pp: np.ndarray
    q0: np.ndarray
    qe: np.ndarray
    qp: np.ndarray
    omega: np.ndarray
    j0: np.ndarray
    je: np.ndarray

    @property
    def n_exp(self) -> int:
        return int(self.pe.shape[2])


@dataclass(frozen=True)
class ArkitMap:
    """A FLAME <-> ARKit map (see the module docstring). E = n_exp, X = E + 3 (exp, then the jaw)."""

    names: tuple[str, ...]  # the 52 ARKit channels, Apple's order
    forward: np.ndarray  # (52, X)
    forward_bias: np.ndarray  # (52,)
    inverse: np.ndarray  # (X, 52)
    inverse_bias: np.ndarray  # (X,)
    carried: np.ndarray  # (52,) bool: channels FLAME's landmarks show
    arkit_neutral: np.ndarray  # (68, 3) the ICT head's landmarks, aligned onto FLAME's
    arkit_effects: np.ndarray  # (52, 68, 3) each ARKit shape's landmark motion at weight 1, aligned
    flame: FlameLandmarks
    meta: dict[str, Any]
    source: str = ""

    @property
    def n_exp(self) -> int:
        return self.flame.n_exp

    @property
    def flame_neutral(self) -> np.ndarray:
        """FLAME's landmarks at expression 0, jaw closed (68, 3)."""
        return self.flame.p0


# ------------------------------------------------------------------------------------------------ evaluation
def flame_landmarks(model: FlameLandmarks, exp: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """FLAME's landmarks (N, 68, 3) for expression (N, <= E) and jaw axis-angle (N, 3)."""
    e = pad_exp(exp, model.n_exp)
    rot = axis_angle_to_matrix(np.asarray(jaw, np.float64).reshape(-1, 3))  # (N, 3, 3)
    feat = (rot - np.eye(3)).reshape(len(rot), 9)
    p = model.p0 + _apply(model.pe, e) + _apply(model.pp, feat)
    q = model.q0 + _apply(model.qe, e) + _apply(model.qp, feat)
    joint = model.j0 + e @ model.je.T  # (N, 3)
    arm = q - model.omega[None, :, None] * joint[:, None, :]
    return p + arm @ (rot - np.eye(3)).transpose(0, 2, 1)


def _apply(basis: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """A linear basis (L, 3, K) applied to coefficients (N, K): (N, L, 3)."""
    return (coeffs @ basis.reshape(-1, basis.shape[2]).T).reshape(len(coeffs), *basis.shape[:2])


def arkit_landmarks(m: ArkitMap, arkit: np.ndarray) -> np.ndarray:
    """The aligned ICT head's landmarks (N, 68, 3) under ARKit weights (N, 52)."""
    w = np.asarray(arkit, np.float64).reshape(-1, len(m.names))
    return m.arkit_neutral + np.einsum("nk,klc->nlc", w, m.arkit_effects)


def pad_exp(exp: np.ndarray, n_exp: int) -> np.ndarray:
    """Expression coefficients (N, <= n_exp) as (N, n_exp) float64, the missing ones 0."""
    e = np.atleast_2d(np.asarray(exp, np.float64))
    if e.shape[1] > n_exp:
        raise EmocaError("flame_mismatch", f"the take has {e.shape[1]} expression coefficients, the ARKit map "
                         f"{n_exp}", "Build the map with as many: `python -m backend arkit-map --n-exp "
                         f"{e.shape[1]}`.")  # fmt: skip
    return np.pad(e, ((0, 0), (0, n_exp - e.shape[1])))


def flame_vector(m: ArkitMap, exp: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """FLAME's x = [exp, jaw] (N, E + 3)."""
    return np.concatenate([pad_exp(exp, m.n_exp), np.asarray(jaw, np.float64).reshape(-1, 3)], axis=1)


def flame_to_arkit(m: ArkitMap, exp: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """ARKit weights (N, 52) float32 in [0, 1] for a FLAME take's exp (N, <= E) and jaw_pose (N, 3)."""
    w = flame_vector(m, exp, jaw) @ m.forward.T + m.forward_bias
    return np.clip(w * m.carried, 0.0, 1.0).astype(np.float32)


def arkit_to_flame(m: ArkitMap, arkit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLAME's (exp (N, E), jaw axis-angle (N, 3)) float32 for ARKit weights (N, 52) (Apple's order)."""
    w = np.asarray(arkit, np.float64).reshape(-1, len(m.names)) * m.carried
    x = w @ m.inverse.T + m.inverse_bias
    return x[:, : m.n_exp].astype(np.float32), x[:, m.n_exp :].astype(np.float32)


# ------------------------------------------------------------------------------------------------ the file
ARRAY_SHAPES: dict[str, tuple[int | str, ...]] = {
    "names": (52,),
    "forward": (52, "X"),
    "forward_bias": (52,),
    "inverse": ("X", 52),
    "inverse_bias": ("X",),
    "carried": (52,),
    "arkit_neutral": (N_LANDMARKS, 3),
    "arkit_effects": (52, N_LANDMARKS, 3),
    "flame_p0": (N_LANDMARKS, 3),
    "flame_pe": (N_LANDMARKS, 3, "E"),
    "flame_pp": (N_LANDMARKS, 3, 9),
    "flame_q0": (N_LANDMARKS, 3),
    "flame_qe": (N_LANDMARKS, 3, "E"),
    "flame_qp": (N_LANDMARKS, 3, 9),
    "flame_omega": (N_LANDMARKS,),
    "flame_j0": (3,),
    "flame_je": (3, "E"),
}


def map_arrays(m: ArkitMap) -> dict[str, np.ndarray]:
    """The map as the arrays its file stores (``meta`` as a JSON string)."""
    out: dict[str, np.ndarray] = {
        "names": np.array(m.names),
        "forward": m.forward.astype(np.float64),
        "forward_bias": m.forward_bias.astype(np.float64),
        "inverse": m.inverse.astype(np.float64),
        "inverse_bias": m.inverse_bias.astype(np.float64),
        "carried": m.carried.astype(bool),
        "arkit_neutral": m.arkit_neutral.astype(np.float64),
        "arkit_effects": m.arkit_effects.astype(np.float64),
    }
    for f in fields(FlameLandmarks):
        out["flame_" + f.name] = np.asarray(getattr(m.flame, f.name), np.float64)
    out["meta"] = np.array(json.dumps(m.meta, ensure_ascii=False))
    return out


def validate_map(arrays: dict[str, Any], where: str = "ARKit map") -> ArkitMap:
    """The map in ``arrays`` (the file's members), every key, shape, name and value checked; EmocaError
    ('asset_invalid') naming the first problem."""
    meta = _meta(arrays.get("meta"), where)
    missing = [k for k in ARRAY_SHAPES if k not in arrays]
    if missing:
        raise EmocaError("asset_invalid", f"{where}: missing map keys {missing}", REBUILD_HINT)
    sizes: dict[str, int] = {}
    for key, want in ARRAY_SHAPES.items():
        shape = np.shape(arrays[key])
        ok = len(shape) == len(want) and all(
            sizes.setdefault(w, d) == d if isinstance(w, str) else d == w for d, w in zip(shape, want)
        )
        if not ok:
            expected = tuple(sizes.get(w, w) if isinstance(w, str) else w for w in want)
            raise EmocaError("asset_invalid", f"{where}: {key} has shape {shape}, expected {expected}", REBUILD_HINT)
    if sizes["X"] != sizes["E"] + 3:
        raise EmocaError("asset_invalid", f"{where}: the maps have {sizes['X']} FLAME values, expected "
                         f"n_exp + 3 = {sizes['E'] + 3}", REBUILD_HINT)  # fmt: skip
    names = tuple(str(n) for n in np.asarray(arrays["names"]))
    if names != ARKIT_NAMES:
        raise EmocaError("asset_invalid", f"{where}: names are not the 52 ARKit channels in Apple's order",
                         REBUILD_HINT)  # fmt: skip
    numeric = {k: np.asarray(arrays[k], np.float64) for k in ARRAY_SHAPES if k not in ("names", "carried")}
    bad = [k for k, v in numeric.items() if not np.isfinite(v).all()]
    if bad:
        raise EmocaError("asset_invalid", f"{where}: {bad[0]} holds values that are not finite", REBUILD_HINT)
    flame = FlameLandmarks(**{f.name: numeric["flame_" + f.name] for f in fields(FlameLandmarks)})
    return ArkitMap(
        names=names,
        forward=numeric["forward"],
        forward_bias=numeric["forward_bias"],
        inverse=numeric["inverse"],
        inverse_bias=numeric["inverse_bias"],
        carried=np.asarray(arrays["carried"]).astype(bool),
        arkit_neutral=numeric["arkit_neutral"],
        arkit_effects=numeric["arkit_effects"],
        flame=flame,
        meta=meta,
        source=where,
    )


def _meta(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        raise EmocaError("asset_invalid", f"{where}: missing map keys ['meta']", REBUILD_HINT)
    meta = value if isinstance(value, dict) else None
    if meta is None:
        try:
            meta = json.loads(str(np.asarray(value)))
        except json.JSONDecodeError as exc:
            raise EmocaError("asset_invalid", f"{where}: 'meta' is not JSON", REBUILD_HINT) from exc
    if not isinstance(meta, dict) or meta.get("format") != MAP_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else meta
        raise EmocaError("asset_invalid", f"{where}: meta.format is {fmt!r}, expected {MAP_FORMAT!r}", REBUILD_HINT)
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > MAP_VERSION or version < 1:
        raise EmocaError("asset_invalid", f"{where}: map version {version!r}; this reader reads 1 to "
                         f"{MAP_VERSION}", "Update the add-on and backend together.")  # fmt: skip
    return meta


def read_arkit_map(path: str | os.PathLike) -> ArkitMap:
    """Load and validate a map file (plain arrays, no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("asset_missing", f"ARKit map not found: {path}", REBUILD_HINT)
    if not is_npz(path):
        raise EmocaError("asset_invalid", f"{path}: not a .npz map file (no zip header)", REBUILD_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays: dict[str, Any] = {k: np.asarray(npz[k]) for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise EmocaError("unsafe_file", f"{path}: holds pickled objects; a map file is plain arrays") from exc
        raise EmocaError("asset_invalid", f"{path}: not a readable map .npz ({exc})", REBUILD_HINT) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise EmocaError("asset_invalid", f"{path}: not a readable map .npz ({exc})", REBUILD_HINT) from exc
    return validate_map(arrays, str(path))
