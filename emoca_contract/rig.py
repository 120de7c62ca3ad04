"""The rig file (docs/formats.md#rig-file): what the add-on builds the head rig from. numpy + stdlib only.

A rig file is a plain ``.npz`` (never pickles: read with ``allow_pickle=False``) of the template mesh, its bases,
joints, skinning weights and a ``meta`` JSON string. The backend writes it (``backend.flame.rig.write_rig``); the
add-on reads it with :func:`read_rig`, the one reader both sides use.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EmocaError
from .take import is_npz

RIG_FORMAT = "emoca-rig"
RIG_VERSION = 1
JOINT_NAMES = ("root", "neck", "jaw", "eye_L", "eye_R")
REQUIRED_KEYS = ("v_template", "faces", "shapedirs", "expdirs", "posedirs", "J_regressor", "joints", "parents",
                 "weights", "meta")  # fmt: skip
OPTIONAL_KEYS = ("joint_names", "uvs", "uv_faces", "lmk_faces_idx", "lmk_bary_coords", "shape")
EXPORT_HINT = "Export the rig again with `python -m backend export-rig --output rig.npz`."


def read_rig(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a rig file: a dict of arrays, ``meta`` parsed, ``source_path`` set to the file."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("input_missing", f"rig file not found: {path}", EXPORT_HINT)
    if not is_npz(path):
        raise EmocaError("asset_invalid", f"{path}: not a .npz rig file (no zip header)", EXPORT_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:
            rig: dict[str, Any] = {k: np.asarray(npz[k]) for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise EmocaError("unsafe_file", f"{path}: holds pickled objects; a rig file is plain arrays") from exc
        raise EmocaError("asset_invalid", f"{path}: not a readable rig .npz ({exc})", EXPORT_HINT) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise EmocaError("asset_invalid", f"{path}: not a readable rig .npz ({exc})", EXPORT_HINT) from exc
    rig["source_path"] = str(path)
    return validate_rig(rig, str(path))


def rig_meta(value: Any, where: str) -> dict[str, Any]:
    """The rig's ``meta`` (a dict, or the JSON string the file stores), checked for format and version."""
    meta = value
    if not isinstance(meta, dict):
        try:
            meta = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise EmocaError("asset_invalid", f"{where}: 'meta' is not JSON", EXPORT_HINT) from exc
    if not isinstance(meta, dict) or meta.get("format") != RIG_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else meta
        raise EmocaError("asset_invalid", f"{where}: meta.format is {fmt!r}, expected {RIG_FORMAT!r}", EXPORT_HINT)
    try:
        major = int(str(meta.get("version", 0)).split(".")[0])
    except ValueError:
        raise EmocaError("asset_invalid", f"{where}: meta.version {meta.get('version')!r} is not a version") from None
    if major > RIG_VERSION:
        raise EmocaError("asset_invalid", f"{where}: rig file version {meta.get('version')} is newer than this "
                         f"reader ({RIG_VERSION})", "Update the add-on and backend together.")  # fmt: skip
    return meta


def validate_rig(rig: dict[str, Any], where: str = "rig") -> dict[str, Any]:
    """Check keys, meta and every array's shape against the template's vertex count; return a copy with
    ``meta`` parsed. Raises EmocaError('asset_invalid') naming the key and the expected shape."""
    missing = [k for k in REQUIRED_KEYS if k not in rig]
    if missing:
        raise EmocaError("asset_invalid", f"{where}: missing rig keys {missing}", EXPORT_HINT)
    meta = rig_meta(rig["meta"], where)
    n_v = int(np.shape(rig["v_template"])[0]) if np.ndim(rig["v_template"]) == 2 else -1
    n_shape = meta.get("n_shape")
    n_exp = meta.get("n_exp")
    expect: dict[str, tuple[int | None, ...]] = {
        "v_template": (n_v, 3),
        "faces": (None, 3),
        "shapedirs": (n_v, 3, n_shape if isinstance(n_shape, int) else None),
        "expdirs": (n_v, 3, n_exp if isinstance(n_exp, int) else None),
        "posedirs": (n_v, 3, 36),
        "J_regressor": (len(JOINT_NAMES), n_v),
        "joints": (len(JOINT_NAMES), 3),
        "parents": (len(JOINT_NAMES),),
        "weights": (n_v, len(JOINT_NAMES)),
    }
    for key, want in expect.items():
        shape = np.shape(rig[key])
        if len(shape) != len(want) or any(w is not None and s != w for s, w in zip(shape, want)):
            raise EmocaError("asset_invalid", f"{where}: {key} has shape {shape}, expected {want} (V={n_v})")
    faces = np.asarray(rig["faces"])
    if faces.size and (faces.min() < 0 or faces.max() >= n_v):
        raise EmocaError("asset_invalid", f"{where}: 'faces' index vertices outside 0..{n_v - 1}")
    names = rig.get("joint_names")
    if names is not None and [str(n) for n in np.asarray(names).ravel()] != list(JOINT_NAMES):
        raise EmocaError("asset_invalid", f"{where}: joint_names {list(np.asarray(names).ravel())}, expected "
                         f"{list(JOINT_NAMES)}")  # fmt: skip
    return dict(rig, meta=meta)
