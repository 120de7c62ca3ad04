"""Landmark embeddings on the FLAME mesh (numpy only; torch is never imported here).

An embedding places a landmark on the surface as (face index, barycentric weights). DECA/EMOCA's
``landmark_embedding.npy`` is a 0-d object array holding a dict in which two entries are pickled torch
tensors (emoca.md 2.6): ``backend.pickles.load_npy_object`` rebuilds those as numpy with a restricted
unpickler, so torch is not needed and no other global can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.pickles import load_npy_object, restricted_load
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
    data = _unwrap(load_npy_object(path))
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


def _ringnet_table(obj: object, source: str | Path) -> dict:
    """A RingNet embedding file's content: a dict with lmk_face_idx and lmk_b_coords."""
    if not isinstance(obj, dict) or "lmk_face_idx" not in obj or "lmk_b_coords" not in obj:
        raise EmocaError("asset_invalid", f"{source}: expected a dict with lmk_face_idx and lmk_b_coords")
    return obj


def load_ringnet_embedding(static_pkl: str | Path, dynamic_npy: str | Path) -> LandmarkEmbedding:
    """RingNet/FLAME_PyTorch's ``flame_static_embedding.pkl`` + ``flame_dynamic_embedding.npy``.

    The static file has 51 points (no full 68 set): ``full_*`` is assembled from the bin-0 contour + static.
    Its tables are indexed with the negated yaw (convention "ringnet").
    """
    static = _ringnet_table(restricted_load(static_pkl), static_pkl)
    dynamic = _ringnet_table(_unwrap(load_npy_object(Path(dynamic_npy))), dynamic_npy)
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
