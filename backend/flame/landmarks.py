"""Landmark embeddings on the FLAME mesh (numpy only; torch is never imported here).

An embedding places a landmark on the surface as (face index, barycentric weights). DECA/EMOCA's
``landmark_embedding.npy`` is a 0-d object array holding a dict in which two entries are pickled torch
tensors (emoca.md 2.6): we rebuild those as numpy with a restricted unpickler, so torch is not needed and no
other global can run.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError

# MEDIAPIPE_TO_68: for each iBUG-68 landmark (0-16 jaw from the subject's right ear to the left one, 17-21 right
# brow, 22-26 left brow, 27-30 nose bridge, 31-35 nostrils, 36-41 right eye, 42-47 left eye, 48-59 outer lips,
# 60-67 inner lips; "right" = the subject's right = image left), the mediapipe mesh vertex at about the same place.
# It is an approximate correspondence (the two conventions differ, most of all along the jaw contour, where iBUG
# points follow the visible outline), good for boxes (the kpt68 crop rule) and as a weak landmark loss; mirror-
# consistent with IBUG68_FLIP (a test checks it on a mirrored face).
# fmt: off
MEDIAPIPE_TO_68 = np.array([
    # jaw 0-16
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    # right brow 17-21 (outer -> inner), left brow 22-26 (inner -> outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostrils 31-35
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59, inner lips 60-67
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
], dtype=np.int64)
# iBUG-68 index of each point's mirror image (left <-> right)
IBUG68_FLIP = np.array([
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    64, 63, 62, 61, 60, 67, 66, 65,
], dtype=np.int64)
# fmt: on

N_DYNAMIC_BINS = 79  # yaw bins -39..+39 degrees


@dataclass
class LandmarkEmbedding:
    """The 68-point iBUG embedding.

    static_faces (51,) int64, static_bary (51, 3) float32: iBUG points 17..67
    dynamic_faces (79, 17) int64, dynamic_bary (79, 17, 3) float32: contour 0..16 per yaw bin
    full_faces (68,) int64, full_bary (68, 3) float32: the static 68-point set ("landmarks3d")
    convention: "deca" (bin = yaw, or 39 - yaw when negative) or "ringnet" (same rule on the negated yaw).
    """

    static_faces: np.ndarray
    static_bary: np.ndarray
    dynamic_faces: np.ndarray
    dynamic_bary: np.ndarray
    full_faces: np.ndarray
    full_bary: np.ndarray
    convention: str = "deca"

    def validate(self, n_faces: int | None = None, source: str = "landmark embedding") -> None:
        expected = {
            "static_faces": (51,), "static_bary": (51, 3), "dynamic_faces": (N_DYNAMIC_BINS, 17),
            "dynamic_bary": (N_DYNAMIC_BINS, 17, 3), "full_faces": (68,), "full_bary": (68, 3),
        }  # fmt: skip
        for key, shape in expected.items():
            found = tuple(getattr(self, key).shape)
            if found != shape:
                raise EmocaError("asset_invalid", f"{source}: {key} has shape {found}, expected {shape}")
        if self.convention not in ("deca", "ringnet"):
            raise EmocaError("asset_invalid", f"{source}: unknown convention {self.convention!r}")
        if n_faces is not None:
            for key in ("static_faces", "dynamic_faces", "full_faces"):
                arr = getattr(self, key)
                if arr.min() < 0 or arr.max() >= n_faces:
                    raise EmocaError(
                        "asset_invalid",
                        f"{source}: {key} indexes faces up to {arr.max()}, but the mesh has {n_faces} faces",
                        "Use the landmark embedding that belongs to this FLAME model.",
                    )


@dataclass
class MediapipeEmbedding:
    """EMOCA v2's 105 mediapipe landmarks on FLAME: faces (105,) int64, bary (105, 3) float32."""

    faces: np.ndarray
    bary: np.ndarray


def dynamic_bin(yaw_degrees, convention: str = "deca"):
    """Dynamic-contour table index for a yaw angle in degrees (emoca.md 3.2), scalar or array.

    yaw is rounded and clamped to <= 39; index = yaw if yaw >= 0 else 39 - yaw, and anything below -39 maps
    to 78. "ringnet" files are indexed with the negated yaw (FLAME_PyTorch's extra minus).
    """
    yaw = np.asarray(yaw_degrees, dtype=np.float64)
    if convention == "ringnet":
        yaw = -yaw
    elif convention != "deca":
        raise ValueError(f"unknown convention {convention!r}")
    y = np.minimum(np.round(yaw), 39.0)
    idx = np.where(y >= 0, y, 39.0 - y)
    idx = np.minimum(idx, 78.0).astype(np.int64)
    return int(idx) if idx.ndim == 0 else idx


# ------------------------------------------------------------------------- torch-free tensor unpickling
class _Storage:
    """A torch storage rebuilt as a flat numpy array (from the legacy torch.save stream)."""

    def __init__(self, dtype: np.dtype, data: np.ndarray | None = None):
        self.dtype = dtype
        self.data = data


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored) -> np.ndarray:
    if not isinstance(storage, _Storage) or storage.data is None:
        raise pickle.UnpicklingError("tensor storage without data")
    item = storage.data.itemsize
    base = storage.data[offset:]
    if len(size) == 0:
        return base[:1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(base, shape=tuple(size), strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _InnerUnpickler(pickle.Unpickler):
    """The pickles inside a torch storage's bytes: storage types and plain containers only."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file, encoding="latin1")
        self.storages = storages

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise EmocaError("unsafe_file", f"refused to load the global '{module}.{name}' inside a torch storage")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        st, key = pid[1], str(pid[2])
        if not isinstance(st, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {st!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(st.dtype)
        return self.storages[key]


def _storage_from_bytes(data: bytes) -> _Storage:
    """What ``torch.storage._load_from_bytes`` rebuilds, as numpy.

    A storage pickled by plain pickle carries its own ``torch.save`` in the legacy (non-zip) format, which
    torch uses there in every version since 1.6 (and before, when there was no other).
    """
    bio = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    if zipfile.is_zipfile(bio):
        raise pickle.UnpicklingError("unexpected zip-format storage inside a pickle")
    bio.seek(0)  # is_zipfile moved it
    # legacy format: magic, protocol version, sys info, the object, the storage keys, then per storage
    # (in key order) an int64 element count followed by the raw little-endian data
    for _ in range(3):
        _InnerUnpickler(bio, storages).load()
    obj = _InnerUnpickler(bio, storages).load()
    keys = _InnerUnpickler(bio, storages).load()
    for key in keys:
        st = storages[str(key)]
        (count,) = np.frombuffer(bio.read(8), dtype="<i8")
        raw = bio.read(int(count) * st.dtype.itemsize)
        st.data = np.frombuffer(raw, dtype=st.dtype.newbyteorder("<")).astype(st.dtype)
    return obj


class _TensorType:
    """Stand-in for the tensor class named by ``_rebuild_from_type_v2`` (the array is plain numpy anyway)."""


def _rebuild_from_type(func, _type, args, _state=None):
    """``torch._tensor._rebuild_from_type_v2``: the tensor is ``func(*args)``; the subclass/state is dropped."""
    if func is not _rebuild_tensor:
        raise pickle.UnpicklingError("unexpected tensor rebuild function")
    return func(*args)


class _EmbeddingUnpickler(pickle.Unpickler):
    """numpy arrays and torch tensors (as numpy) only; anything else is refused."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        from backend.flame.io import _SAFE_BUILTINS, numpy_global, py2_name

        module, name = py2_name(module, name)
        found = numpy_global(module, name) or _SAFE_BUILTINS.get((module, name))
        if found is not None:
            return found
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch.storage" and name == "_load_from_bytes":
            return _storage_from_bytes
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type
        if module == "torch" and name in ("Tensor", "LongTensor", "FloatTensor"):
            return _TensorType
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise EmocaError(
            "unsafe_file",
            f"{self.source}: refused to load the global '{module}.{name}' (only numpy arrays and tensors allowed)",
        )


def _load_npy_object(path: Path) -> object:
    """Load a .npy that holds a pickled object through the restricted unpickler (never np.load's pickle)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format._read_array_header(fh, version)  # (shape, fortran, dtype)
        shape, _fortran, dtype = header
        if dtype != np.dtype(object):
            count = int(np.prod(shape))
            arr = np.fromfile(fh, dtype=dtype, count=count)
            return arr.reshape(shape)
        try:
            obj = _EmbeddingUnpickler(fh, str(path)).load()
        except EmocaError as exc:
            if str(path) in exc.message:
                raise
            raise EmocaError(exc.code, f"{path}: {exc.message}", exc.hint) from exc
        except Exception as exc:  # a corrupt or truncated pickle
            raise EmocaError("asset_invalid", f"{path}: cannot read the pickled content ({exc})") from exc
    return obj


def _unwrap(obj: object) -> object:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        return obj.item()
    return obj


def _as_np(x, dtype) -> np.ndarray:
    return np.asarray(x).astype(dtype)


def load_landmark_embedding(path: str | Path) -> LandmarkEmbedding:
    """DECA/EMOCA's ``landmark_embedding.npy`` (0-d object array holding a dict; numpy or torch entries)."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("asset_missing", f"landmark embedding not found: {path}")
    data = _unwrap(_load_npy_object(path))
    if not isinstance(data, dict):
        raise EmocaError("asset_invalid", f"{path}: expected a dict inside a 0-d object array, found {type(data)}")
    keys = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx",
            "dynamic_lmk_bary_coords", "full_lmk_faces_idx", "full_lmk_bary_coords")  # fmt: skip
    missing = [k for k in keys if k not in data]
    if missing:
        raise EmocaError("asset_invalid", f"{path}: missing keys {missing}; found {sorted(data)}")
    emb = LandmarkEmbedding(
        static_faces=_as_np(data["static_lmk_faces_idx"], np.int64).reshape(-1),
        static_bary=_as_np(data["static_lmk_bary_coords"], np.float32).reshape(-1, 3),
        dynamic_faces=_as_np(data["dynamic_lmk_faces_idx"], np.int64),
        dynamic_bary=_as_np(data["dynamic_lmk_bary_coords"], np.float32),
        # full_* are stored with a leading batch axis (1, 68) / (1, 68, 3)
        full_faces=_as_np(data["full_lmk_faces_idx"], np.int64).reshape(-1),
        full_bary=_as_np(data["full_lmk_bary_coords"], np.float32).reshape(-1, 3),
        convention="deca",
    )
    emb.validate(source=str(path))
    return emb


def load_ringnet_embedding(static_pkl: str | Path, dynamic_npy: str | Path) -> LandmarkEmbedding:
    """RingNet/FLAME_PyTorch's ``flame_static_embedding.pkl`` + ``flame_dynamic_embedding.npy``.

    The static file has 51 points (no full 68 set): ``full_*`` is assembled from the bin-0 contour + static.
    Its tables are indexed with the negated yaw (convention "ringnet").
    """
    from backend.flame.io import restricted_load

    static = restricted_load(static_pkl)
    dynamic = _unwrap(_load_npy_object(Path(dynamic_npy)))
    for name, d in ((static_pkl, static), (dynamic_npy, dynamic)):
        if not isinstance(d, dict) or "lmk_face_idx" not in d or "lmk_b_coords" not in d:
            raise EmocaError("asset_invalid", f"{name}: expected a dict with lmk_face_idx and lmk_b_coords")
    sf = _as_np(static["lmk_face_idx"], np.int64).reshape(-1)
    sb = _as_np(static["lmk_b_coords"], np.float32).reshape(-1, 3)
    df = _as_np(dynamic["lmk_face_idx"], np.int64)
    db = _as_np(dynamic["lmk_b_coords"], np.float32)
    emb = LandmarkEmbedding(
        static_faces=sf, static_bary=sb, dynamic_faces=df, dynamic_bary=db,
        full_faces=np.concatenate([df[0], sf]), full_bary=np.concatenate([db[0], sb]), convention="ringnet",
    )  # fmt: skip
    emb.validate(source=f"{static_pkl} + {dynamic_npy}")
    return emb


def load_mediapipe_embedding(path: str | Path) -> MediapipeEmbedding:
    """EMOCA v2's ``mediapipe_landmark_embedding.npz`` (keys lmk_face_idx (105,), lmk_b_coords (105, 3))."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("asset_missing", f"mediapipe landmark embedding not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise EmocaError("unsafe_file", f"{path}: holds pickled objects, expected plain arrays ({exc})") from exc
    missing = [k for k in ("lmk_face_idx", "lmk_b_coords") if k not in data]
    if missing:
        raise EmocaError("asset_invalid", f"{path}: missing keys {missing}; found {sorted(data)}")
    faces = data["lmk_face_idx"].astype(np.int64).reshape(-1)
    bary = data["lmk_b_coords"].astype(np.float32).reshape(-1, 3)
    if len(faces) != len(bary):
        raise EmocaError("asset_invalid", f"{path}: {len(faces)} faces but {len(bary)} barycentric rows")
    return MediapipeEmbedding(faces=faces, bary=bary)
