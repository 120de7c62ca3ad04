"""Writing the Blender rig file from a FLAME model (docs/formats.md "Rig file"; numpy only).

The add-on never parses model files; it builds the rig from this file. The format and its reader are the
contract's (:mod:`emoca_contract.rig`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from backend import __version__
from backend.flame.data import PARENTS, FlameData
from emoca_contract.rig import JOINT_NAMES, RIG_FORMAT, RIG_VERSION


def model_name(flame: FlameData) -> str:
    """The honest model name for the rig's meta: "FLAME 2020", "FLAME 2023" or the synthetic head's name."""
    version = flame.extra.get("version") if isinstance(flame.extra, dict) else None
    return str(version or flame.name)


def write_rig(
    path: str | Path,
    flame: FlameData,
    embedding=None,
    shape: np.ndarray | None = None,
    n_shape: int = 100,
    n_exp: int = 50,
) -> Path:
    """Write the rig file (atomic: ``PATH.partial`` then rename).

    flame: the model; its bases are truncated to the first n_shape identity / n_exp expression components.
    embedding: a LandmarkEmbedding whose static 68-point set (full_faces/full_bary) is stored for retargeting.
    shape (n,) identity coefficients: stored, and the joints are regressed from the shaped template.
    """
    path = Path(path)
    n_shape = min(int(n_shape), flame.n_shape)
    n_exp = min(int(n_exp), flame.n_exp)
    shapedirs = np.asarray(flame.shapedirs[:, :, :n_shape], dtype=np.float32)
    v_template = np.asarray(flame.v_template, dtype=np.float32)
    J_regressor = np.asarray(flame.J_regressor, dtype=np.float32)
    arrays: dict[str, np.ndarray] = {
        "v_template": v_template,
        "faces": np.asarray(flame.faces, dtype=np.int32),
        "shapedirs": shapedirs,
        "expdirs": np.asarray(flame.expdirs[:, :, :n_exp], dtype=np.float32),
        "posedirs": np.asarray(flame.posedirs, dtype=np.float32),
        "J_regressor": J_regressor,
        "parents": np.asarray(PARENTS, dtype=np.int32),
        "joint_names": np.array(JOINT_NAMES),
        "weights": np.asarray(flame.weights, dtype=np.float32),
    }
    shaped = v_template
    if shape is not None:
        coeffs = np.zeros(n_shape, np.float32)
        s = np.asarray(shape, dtype=np.float32).reshape(-1)[:n_shape]
        coeffs[: len(s)] = s
        arrays["shape"] = coeffs
        shaped = v_template + shapedirs @ coeffs
    arrays["joints"] = (J_regressor.astype(np.float64) @ shaped.astype(np.float64)).astype(np.float32)
    if flame.uvs is not None:
        arrays["uvs"] = np.asarray(flame.uvs, dtype=np.float32)
        uv_faces = flame.uv_faces if flame.uv_faces is not None else flame.faces
        arrays["uv_faces"] = np.asarray(uv_faces, dtype=np.int32)
    if embedding is not None:
        arrays["lmk_faces_idx"] = np.asarray(embedding.full_faces, dtype=np.int32).reshape(68)
        arrays["lmk_bary_coords"] = np.asarray(embedding.full_bary, dtype=np.float32).reshape(68, 3)
    meta = {
        "format": RIG_FORMAT,
        "version": RIG_VERSION,
        "kind": "flame",
        "model": model_name(flame),
        "source": str(flame.source),
        "units": "m",
        "n_shape": n_shape,
        "n_exp": n_exp,
        "backend_version": __version__,
    }
    arrays["meta"] = np.array(json.dumps(meta, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path
