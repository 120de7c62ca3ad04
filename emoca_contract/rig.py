"""The rig file (docs/formats.md#rig-file): what the add-on builds the head rig from. numpy + stdlib only.

A rig file is a plain ``.npz`` (never pickles: read with ``allow_pickle=False``) of the template mesh, its bases,
joints, skinning weights and a ``meta`` JSON string. Two kinds (``meta.kind``): ``"flame"`` (FLAME topology:
triangles, identity/expression/pose-corrective bases, 5 FLAME joints; written by ``backend.flame.rig``) and
``"open"`` (an open head such as ICT-FaceKit: polygons with UVs and material groups, one shape per ARKit channel,
named joints with skinning weights; written by the backend's open-head exporter). Version 1 files are FLAME rigs.
The add-on reads both with :func:`read_rig`, the one reader both sides use.
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
RIG_VERSION = 2
RIG_KINDS = ("flame", "open")
JOINT_NAMES = ("root", "neck", "jaw", "eye_L", "eye_R")  # a FLAME rig's joints, in FLAME's order
REQUIRED_KEYS = ("v_template", "faces", "shapedirs", "expdirs", "posedirs", "J_regressor", "joints", "parents",
                 "weights", "meta")  # fmt: skip
OPTIONAL_KEYS = ("joint_names", "uvs", "uv_faces", "lmk_faces_idx", "lmk_bary_coords", "shape")
# An open rig: polygons (P corner entries over F polygons), UVs, materials, named shapes, named joints.
OPEN_REQUIRED_KEYS = ("v_template", "poly_vertices", "poly_sizes", "uvs", "poly_uvs", "poly_materials",
                      "material_names", "material_colors", "shape_names", "shape_deltas", "joint_names", "joints",
                      "parents", "weights", "landmark_indices", "meta")  # fmt: skip
OPEN_OPTIONAL_KEYS = ("identity", "texture")
# An open rig's meta.drivers: bone channels that follow shape values linearly (docs/formats.md "Open rig").
DRIVER_CHANNELS = ("rotation_euler", "location")
OPEN_BONE_ROLES = ("head_bone", "translation_bone")  # meta fields naming the bones a take keys
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
    kind = meta.setdefault("kind", "flame")  # version 1 rigs are FLAME rigs
    if kind not in RIG_KINDS:
        raise EmocaError("asset_invalid", f"{where}: rig kind {kind!r}, expected one of {RIG_KINDS}", EXPORT_HINT)
    return meta


def _peek_json(value: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def validate_rig(rig: dict[str, Any], where: str = "rig") -> dict[str, Any]:
    """Check keys, meta and every array's shape against the template's vertex count; return a copy with
    ``meta`` parsed. Raises EmocaError('asset_invalid') naming the key and the expected shape."""
    if "meta" not in rig:
        raise EmocaError("asset_invalid", f"{where}: missing rig keys ['meta']", EXPORT_HINT)
    declared = rig["meta"] if isinstance(rig["meta"], dict) else _peek_json(rig["meta"])
    required = OPEN_REQUIRED_KEYS if declared.get("kind") == "open" else REQUIRED_KEYS
    missing = [k for k in required if k not in rig]
    if missing:  # what is missing is said first: it is the most common damage
        raise EmocaError("asset_invalid", f"{where}: missing rig keys {missing}", EXPORT_HINT)
    meta = rig_meta(rig["meta"], where)
    if meta["kind"] == "open":
        return _validate_open_rig(rig, meta, where)
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


def _shape_mismatch(rig: dict[str, Any], expect: dict[str, tuple[int | None, ...]], where: str) -> None:
    for key, want in expect.items():
        shape = np.shape(rig[key])
        if len(shape) != len(want) or any(w is not None and s != w for s, w in zip(shape, want)):
            raise EmocaError("asset_invalid", f"{where}: {key} has shape {shape}, expected {want}")


def _index_range(rig: dict[str, Any], key: str, size: int, where: str) -> None:
    idx = np.asarray(rig[key])
    if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= size):
        raise EmocaError("asset_invalid", f"{where}: '{key}' holds indices outside 0..{size - 1}")


def _names(rig: dict[str, Any], key: str, where: str) -> list[str]:
    names = [str(n) for n in np.asarray(rig[key]).ravel()]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise EmocaError("asset_invalid", f"{where}: '{key}' must be unique, non-empty names")
    return names


def _validate_open_rig(rig: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
    """An open rig: every array consistent with the vertex, polygon, corner, UV, material, shape and joint counts;
    indices in range; parents before children (root first, parent -1)."""
    n_v = int(np.shape(rig["v_template"])[0]) if np.ndim(rig["v_template"]) == 2 else -1
    sizes = np.asarray(rig["poly_sizes"])
    n_f, n_p = int(sizes.size), int(np.asarray(rig["poly_vertices"]).size)
    n_s, n_j = len(_names(rig, "shape_names", where)), len(_names(rig, "joint_names", where))
    n_m = len(np.asarray(rig["material_names"]).ravel())
    if sizes.size and (sizes.min() < 3 or int(sizes.sum()) != n_p):
        raise EmocaError("asset_invalid", f"{where}: poly_sizes must be >= 3 and sum to the {n_p} corners")
    _shape_mismatch(rig, {
        "v_template": (n_v, 3), "poly_vertices": (n_p,), "poly_uvs": (n_p,), "uvs": (None, 2),
        "poly_materials": (n_f,), "material_colors": (n_m, 4), "shape_deltas": (n_s, n_v, 3), "joints": (n_j, 3),
        "parents": (n_j,), "weights": (n_v, n_j), "landmark_indices": (68,),
    }, where)  # fmt: skip
    _index_range(rig, "poly_vertices", n_v, where)
    _index_range(rig, "poly_uvs", int(np.shape(rig["uvs"])[0]), where)
    _index_range(rig, "poly_materials", n_m, where)
    _index_range(rig, "landmark_indices", n_v, where)
    parents = [int(p) for p in np.asarray(rig["parents"]).ravel()]
    if not parents or parents[0] != -1 or any(not (0 <= p < j) for j, p in enumerate(parents[1:], 1)):
        raise EmocaError("asset_invalid", f"{where}: parents {parents}: the root comes first (-1), parents before "
                         "children")  # fmt: skip
    if "identity" in rig:
        _shape_mismatch(rig, {"identity": (n_v, 3)}, where)
    joint_names = _names(rig, "joint_names", where)
    for role in OPEN_BONE_ROLES:
        if role in meta and meta[role] not in joint_names:
            raise EmocaError("asset_invalid", f"{where}: meta.{role} {meta[role]!r} is not one of {joint_names}")
    _check_drivers(meta.get("drivers", []), joint_names, _names(rig, "shape_names", where), where)
    return dict(rig, meta=meta)


def _check_drivers(drivers: Any, joints: list[str], shapes: list[str], where: str) -> None:
    """``meta.drivers``: a list of {"bone", "channel", "index", "terms": {shape: coefficient}} naming the rig's
    bones and shapes, channel one of :data:`DRIVER_CHANNELS`, index 0..2, finite coefficients."""
    if not isinstance(drivers, list):
        raise EmocaError("asset_invalid", f"{where}: meta.drivers must be a list")
    for i, d in enumerate(drivers):
        ok = (
            isinstance(d, dict)
            and d.get("bone") in joints
            and d.get("channel") in DRIVER_CHANNELS
            and d.get("index") in (0, 1, 2)
            and isinstance(d.get("terms"), dict)
            and all(k in shapes and _finite(c) for k, c in d["terms"].items())
        )
        if not ok:
            raise EmocaError("asset_invalid", f"{where}: meta.drivers[{i}] = {d!r}: expected a bone of "
                             f"{joints}, a channel of {DRIVER_CHANNELS}, index 0..2 and terms {{shape: number}} "
                             "over the rig's shapes"[:400])  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
