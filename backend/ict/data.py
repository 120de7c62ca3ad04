"""The vendored ICT-FaceKit head (backend/vendor/ict/ict_face.npz, MIT): loading it into an :class:`IctModel`.

Conventions (after loading): metres (the file keeps ICT's centimetres), +Y up, the face looks along +Z, +X is the
character's own left, the side of ICT's ``_L`` shapes and eyeball. Polygons are ICT's triangles and quads with a
consistent winding (counter-clockwise seen from outside); ``poly_vertices``/``poly_uvs`` list their corners in
order and ``poly_sizes`` their corner counts. UVs are ICT's: one unit tile per material group side by side in u
(face [0, 1], back of the head [1, 2], gums [2, 3], teeth [3, 4]), the eyes each in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.vendor import ICT_FACE
from emoca_contract.errors import EmocaError

CM = 0.01  # metres per centimetre
MODEL_NAME = "ICT-FaceKit face model (open, MIT; not FLAME)"


@dataclass(frozen=True)
class IctModel:
    """The ICT head, metres. V vertices, F polygons with P corners, T UVs, E expressions, N identity modes."""

    vertices: np.ndarray  # (V, 3) float64
    poly_vertices: np.ndarray  # (P,) int64
    poly_uvs: np.ndarray  # (P,) int64
    poly_sizes: np.ndarray  # (F,) int64, 3 or 4
    poly_materials: np.ndarray  # (F,) int64 into materials
    materials: tuple[str, ...]  # ICT's material names (M_Face, M_BackHead, ...)
    uvs: np.ndarray  # (T, 2) float32
    expression_names: tuple[str, ...]  # ICT's names: ARKit's, with _L/_R, browInnerUp and cheekPuff split
    expression_deltas: np.ndarray  # (E, V, 3) float32 offsets
    identity_deltas: np.ndarray  # (N, V, 3) float32 offsets
    landmark_indices: np.ndarray  # (68,) int64: the vertex of each iBUG-68 landmark
    regions: dict[str, tuple[int, int]]  # part -> half-open vertex range
    provenance: dict
    source: str

    def expression(self, name: str) -> np.ndarray:
        """One expression's offsets (V, 3)."""
        return self.expression_deltas[self.expression_names.index(name)]

    def region(self, name: str) -> np.ndarray:
        """The vertex ids of one part (``face``, ``teeth``, ``eyeball_L``, ...)."""
        start, stop = self.regions[name]
        return np.arange(start, stop)


_CACHE: dict[str, IctModel] = {}


def load_ict(path: str | Path | None = None) -> IctModel:
    """The vendored ICT head (cached per path); EmocaError('asset_missing'/'asset_invalid') when unusable."""
    path = Path(path) if path is not None else ICT_FACE
    key = str(path.resolve())
    if key not in _CACHE:
        _CACHE[key] = _read(path)
    return _CACHE[key]


def _read(path: Path) -> IctModel:
    if not path.is_file():
        raise EmocaError("asset_missing", f"the ICT-FaceKit head is missing: {path}",
                         "Reinstall the add-on, or rebuild it with `python -m backend.ict.reduce`.")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        units = json.loads(str(a["provenance"])).get("units", "cm")
        scale = CM if units == "cm" else 1.0
        return IctModel(
            vertices=a["vertices"].astype(np.float64) * scale,
            poly_vertices=a["poly_vertices"].astype(np.int64),
            poly_uvs=a["poly_uvs"].astype(np.int64),
            poly_sizes=a["poly_sizes"].astype(np.int64),
            poly_materials=a["poly_materials"].astype(np.int64),
            materials=tuple(str(m) for m in a["materials"]),
            uvs=a["uvs"].astype(np.float32),
            expression_names=tuple(str(n) for n in a["expression_names"]),
            expression_deltas=a["expression_deltas"].astype(np.float32) * np.float32(scale),
            identity_deltas=a["identity_deltas"].astype(np.float32) * np.float32(scale),
            landmark_indices=a["landmark_indices"].astype(np.int64),
            regions={k: (int(v[0]), int(v[1])) for k, v in json.loads(str(a["regions"])).items()},
            provenance=json.loads(str(a["provenance"])),
            source=str(path),
        )
    except (KeyError, ValueError, OSError) as exc:
        raise EmocaError("asset_invalid", f"{path}: not the ICT-FaceKit head file ({exc})",
                         "Rebuild it with `python -m backend.ict.reduce`.") from exc  # fmt: skip


def triangles(poly_sizes: np.ndarray) -> np.ndarray:
    """Fan triangulation of polygons as corner indices: (T, 3) int64 into the corner arrays (same winding)."""
    sizes = np.asarray(poly_sizes, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_tri = sizes - 2
    first = np.repeat(starts, n_tri)
    k = np.arange(int(n_tri.sum())) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri)  # 0.. within each polygon
    return np.stack([first, first + k + 1, first + k + 2], 1)
