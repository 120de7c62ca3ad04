"""Loading the official FLAME files (numpy only; never chumpy, scipy or torch code from the file).

FLAME's ``generic_model.pkl`` is a 2017-era pickle of chumpy ``Ch`` objects and a scipy sparse matrix
(emoca.md 2.5). It is read by ``backend.pickles.restricted_load``, which admits only numpy arrays/dtypes/scalars,
scipy.sparse matrices (old module paths remapped) and inert chumpy stand-ins; any other global (os.system,
builtins.eval, ...) is refused with ``EmocaError('unsafe_file')``. ``load_flame`` validates the layout and caches
a converted ``.npz`` in ``backend.paths.flame_cache_dir()``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from backend.flame.data import PARENTS, FlameData
from backend.paths import flame_cache_dir
from backend.pickles import ChStub, restricted_load
from emoca_contract.errors import EmocaError

CACHE_VERSION = 1
N_POSEDIRS = 36
N_JOINTS = 5


def _plain(x, source: str = "", key: str = "") -> np.ndarray:
    """A chumpy stand-in, a sparse matrix or an array -> a dense numpy array."""
    try:
        if isinstance(x, ChStub):
            return x.value
        if hasattr(x, "toarray"):
            return np.asarray(x.toarray())
        return np.asarray(x)
    except (ValueError, KeyError, TypeError) as exc:
        raise EmocaError("asset_invalid", f"{source}: cannot read '{key}' as an array ({exc})") from exc


# ----------------------------------------------------------------------------------------------- FLAME
def _expect(source: str, key: str, arr: np.ndarray, shape: tuple) -> None:
    ok = arr.ndim == len(shape) and all(s is None or s == f for s, f in zip(shape, arr.shape))
    if not ok:
        want = "x".join("N" if s is None else str(s) for s in shape)
        raise EmocaError("asset_invalid", f"{source}: '{key}' has shape {tuple(arr.shape)}, expected {want}")


def flame_from_dict(d: dict, source: str, n_shape_total: int | None = None) -> FlameData:
    """Validate the fields of a FLAME pickle and split the shape space into identity + expression.

    FLAME 2020 stores 400 columns (300 identity + 100 expression). Other releases (FLAME 2023) may differ in
    the count; the split is 300 identity + the rest unless ``n_shape_total`` says otherwise.
    """
    required = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
    missing = [k for k in required if k not in d]
    if missing:
        raise EmocaError("asset_invalid", f"{source}: missing fields {missing}; found {sorted(map(str, d))}")
    v = _plain(d["v_template"], source, "v_template").astype(np.float32)
    _expect(source, "v_template", v, (None, 3))
    n = v.shape[0]
    faces = _plain(d["f"], source, "f").astype(np.int64)
    _expect(source, "f", faces, (None, 3))
    sd = _plain(d["shapedirs"], source, "shapedirs").astype(np.float32)
    _expect(source, "shapedirs", sd, (n, 3, None))
    pd = _plain(d["posedirs"], source, "posedirs").astype(np.float32)
    _expect(source, "posedirs", pd, (n, 3, N_POSEDIRS))
    jr = _plain(d["J_regressor"], source, "J_regressor").astype(np.float32)
    _expect(source, "J_regressor", jr, (N_JOINTS, n))
    w = _plain(d["weights"], source, "weights").astype(np.float32)
    _expect(source, "weights", w, (n, N_JOINTS))
    kt = _plain(d["kintree_table"], source, "kintree_table").astype(np.int64)
    _expect(source, "kintree_table", kt, (2, N_JOINTS))
    parents = kt[0].copy()
    parents[0] = -1  # the root's parent is stored as a large sentinel (2**32-1) in the pkl
    if tuple(parents) != PARENTS:
        raise EmocaError("asset_invalid", f"{source}: kinematic tree {parents.tolist()}, expected {list(PARENTS)}")
    if faces.min() < 0 or faces.max() >= n:
        raise EmocaError("asset_invalid", f"{source}: face indices out of range for {n} vertices")
    total = sd.shape[2]
    n_id = n_shape_total if n_shape_total is not None else min(300, total)
    if total <= n_id:
        raise EmocaError(
            "asset_invalid",
            f"{source}: shapedirs has {total} components; expected identity ({n_id}) + expression components",
        )
    version = "FLAME 2023" if "2023" in Path(source).name or "2023" in str(source) else "FLAME 2020"
    return FlameData(
        v_template=v,
        faces=faces,
        shapedirs=np.ascontiguousarray(sd[:, :, :n_id]),
        expdirs=np.ascontiguousarray(sd[:, :, n_id:]),
        posedirs=pd,
        J_regressor=jr,
        weights=w,
        parents=parents,
        name=f"{version} ({Path(source).name})",
        source=str(source),
        extra={"version": version, "n_vertices": n, "n_identity": n_id, "n_expression": total - n_id},
    )


def _cache_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
    h.update(f"{st.st_size}:{st.st_mtime_ns}:{CACHE_VERSION}".encode())
    return h.hexdigest()[:24]


_ARRAYS = ("v_template", "faces", "shapedirs", "expdirs", "posedirs", "J_regressor", "weights", "parents")


def save_npz(flame: FlameData, path: str | Path) -> None:
    """Our converted cache format (plain arrays + a JSON meta string; atomic write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(flame, k) for k in _ARRAYS}
    if flame.uvs is not None:
        arrays["uvs"], arrays["uv_faces"] = flame.uvs, flame.uv_faces
    meta = {"name": flame.name, "source": flame.source, "cache_version": CACHE_VERSION,
            "extra": {k: v for k, v in flame.extra.items() if isinstance(v, (str, int, float))}}  # fmt: skip
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def load_npz(path: str | Path) -> FlameData:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise EmocaError("unsafe_file", f"{path}: holds pickled objects, expected plain arrays") from exc
    missing = [k for k in (*_ARRAYS, "meta") if k not in data]
    if missing:
        raise EmocaError("asset_invalid", f"{path}: missing arrays {missing}")
    meta = json.loads(str(data["meta"]))
    return FlameData(
        **{k: data[k] for k in _ARRAYS},
        name=meta["name"],
        source=meta["source"],
        uvs=data.get("uvs"),
        uv_faces=data.get("uv_faces"),
        extra=dict(meta.get("extra", {}), cached=str(path)),
    )


def load_flame(path: str | Path, cache_dir: str | Path | None = None) -> FlameData:
    """Load an official FLAME ``.pkl`` (2020 or 2023) or our converted ``.npz``.

    The pkl is converted once and cached in ``cache_dir`` (default: the user data dir's ``cache/``), keyed by
    the file's size, mtime and a hash of its first MB; later calls load the cache.
    """
    path = Path(path)
    if not path.is_file():
        raise EmocaError("asset_missing", f"FLAME model not found: {path}")
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    cache = Path(cache_dir) if cache_dir is not None else flame_cache_dir()
    cached = cache / f"flame-{path.stem}-{_cache_key(path)}.npz"
    if cached.is_file():
        try:
            flame = load_npz(cached)
            flame.source = str(path)
            return flame
        except (EmocaError, OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise EmocaError("asset_invalid", f"{path}: expected a dict of FLAME fields, found {type(obj).__name__}")
    flame = flame_from_dict(obj, str(path))
    try:
        save_npz(flame, cached)
    except OSError:
        pass  # a read-only data dir only costs the conversion next time
    return flame


def read_obj_uvs(path: str | Path, faces: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """UVs of an OBJ (FLAME's ``head_template.obj``): (uvs (VT, 2) float32, uv_faces (F, 3) int64).

    With ``faces`` given, the OBJ's triangles must be the model's (same vertex indices, same order);
    otherwise the UVs would land on the wrong triangles, so that is an ``asset_invalid`` error.
    """
    path = Path(path)
    uvs, vfaces, tfaces = [], [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                uvs.append((float(parts[1]), float(parts[2])))
            elif parts[0] == "f":
                corners = [p.split("/") for p in parts[1:]]
                if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                    raise EmocaError("asset_invalid", f"{path}: expected triangles with UV indices (f v/vt ...)")
                vfaces.append([int(c[0]) - 1 for c in corners])
                tfaces.append([int(c[1]) - 1 for c in corners])
    uv = np.asarray(uvs, dtype=np.float32).reshape(-1, 2)
    tf = np.asarray(tfaces, dtype=np.int64).reshape(-1, 3)
    vf = np.asarray(vfaces, dtype=np.int64).reshape(-1, 3)
    if len(tf) == 0 or tf.max() >= len(uv):
        raise EmocaError("asset_invalid", f"{path}: no UV-mapped triangles (or UV indices out of range)")
    if faces is not None and not np.array_equal(vf, np.asarray(faces)):
        raise EmocaError(
            "asset_invalid",
            f"{path}: its {len(vf)} triangles are not the model's {len(faces)} triangles",
            "Use the head_template.obj that comes with this FLAME model.",
        )
    return uv, tf
