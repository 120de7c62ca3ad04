"""Rebuild the vendored ICT-FaceKit copy (backend/vendor/ict/ict_face.npz) from the full model (developer tool).

Source: ``../shared/thirdparty/ict-facekit/ict_facekit.npz`` (ICT-FaceKit commit da5f95a, ``FaceXModel/``,
converted from its OBJ files by parsing only; see backend/vendor/README.md). What is kept, values unchanged except
where said:
* the vertex regions of :data:`PARTS` (ICT's README ranges, inclusive there, half-open here), renumbered in
  order; every polygon whose corners all lie in them, with its UVs and material; the unused UVs and materials
  dropped;
* the 53 expressions as float16 offsets (ICT's centimetres; offsets under :data:`ZERO_BELOW` cm set to 0 so the
  unmoved part of the mesh compresses away); the first :data:`N_IDENTITY` identity modes as float16 offsets;
* the 68 landmark vertex indices (``idx_to_landmark_verts`` of ``vertex_indices.json``), renumbered.
Dropped: the lacrimal fluid, eye blend and eye occlusion shells (transparent helper layers that need their own
shaders), the eyelash cards (opaque they render as black sheets), the extra shapes (cheekRaiser, PupilDilate),
the identity modes past :data:`N_IDENTITY` and the rest of ``vertex_indices.json``.

Run ``python -m backend.ict.reduce [SOURCE] [-o OUTPUT]``; the file's ``provenance`` says what it was built from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from backend.vendor import ICT_FACE

SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "thirdparty" / "ict-facekit" / "ict_facekit.npz"
ICT_COMMIT = "da5f95a"
# name -> [first, last] vertex of the full model (ICT-FaceKit README, inclusive); kept in this order.
PARTS: dict[str, tuple[int, int]] = {
    "face": (0, 9408),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_socket_L": (13294, 13677),
    "eye_socket_R": (13678, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_L": (21451, 23020),
    "eyeball_R": (23021, 24590),
}
N_IDENTITY = 40
ZERO_BELOW = 1e-4  # cm: one micrometre


def kept_vertices(parts: dict[str, tuple[int, int]] = PARTS) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The full model's vertex ids kept (K,) in order, and each part's half-open range in the new numbering."""
    ids, regions, start = [], {}, 0
    for name, (first, last) in parts.items():
        ids.append(np.arange(first, last + 1))
        regions[name] = [start, start + last + 1 - first]
        start += last + 1 - first
    return np.concatenate(ids), regions


def kept_polygons(face_vertex: np.ndarray, face_size: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Which polygons (F,) bool have every corner in ``keep`` (vertex ids)."""
    inside = np.isin(face_vertex, keep)
    starts = np.concatenate([[0], np.cumsum(face_size.astype(np.int64))[:-1]])
    return np.logical_and.reduceat(inside, starts)


def renumber(old: np.ndarray, keep: np.ndarray, size: int) -> np.ndarray:
    """Map old ids (any shape) to their position in ``keep`` (ids of a table of ``size`` entries)."""
    table = np.full(size, -1, np.int64)
    table[keep] = np.arange(len(keep))
    return table[old]


def reduce_polygons(src: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The kept polygons' corners (vertex and UV ids renumbered), sizes and materials; unused UVs and materials
    dropped."""
    sizes = src["face_size"].astype(np.int64)
    poly = kept_polygons(src["face_vertex"], sizes, keep)
    corner = np.repeat(poly, sizes)
    used_uv = np.unique(src["face_uv"][corner])
    used_mat = np.unique(src["face_material"][poly])
    return {
        "poly_vertices": renumber(src["face_vertex"][corner], keep, len(src["vertices"])).astype(np.int32),
        "poly_uvs": renumber(src["face_uv"][corner], used_uv, len(src["uv"])).astype(np.int32),
        "poly_sizes": sizes[poly].astype(np.int8),
        "poly_materials": renumber(src["face_material"][poly], used_mat, len(src["materials"])).astype(np.int8),
        "materials": np.asarray(src["materials"])[used_mat],
        "uvs": np.asarray(src["uv"], np.float32)[used_uv],
    }


def half_offsets(deltas: np.ndarray, zero_below: float = ZERO_BELOW) -> np.ndarray:
    """(S, V, 3) float32 offsets -> float16, offsets under ``zero_below`` (each component) set to 0."""
    out = deltas.astype(np.float16)
    out[np.abs(deltas) < zero_below] = 0
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_ict_asset(source: Path = SOURCE, output: Path = ICT_FACE, n_identity: int = N_IDENTITY) -> Path:
    """Write the reduced copy (see the module docstring) and return its path."""
    with np.load(source, allow_pickle=False) as z:
        src = {k: z[k] for k in z.files}
    keep, regions = kept_vertices()
    indices = json.loads(str(src["vertex_indices_json"]))
    landmarks = renumber(np.asarray(indices["idx_to_landmark_verts"]), keep, len(src["vertices"]))
    if (landmarks < 0).any():
        raise ValueError("a landmark vertex lies outside the kept parts")
    provenance = {
        "source": "ICT-FaceKit (github.com/ICT-VGL/ICT-FaceKit), FaceXModel/, commit " + ICT_COMMIT,
        "converted_from": source.name,
        "converted_sha256": sha256(source),
        "licence": "MIT (backend/vendor/ict/LICENSE)",
        "units": "cm",
        "parts": {k: list(v) for k, v in PARTS.items()},
        "n_identity": n_identity,
        "offsets": f"float16, |offset| < {ZERO_BELOW} cm set to 0",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        output,
        vertices=np.asarray(src["vertices"], np.float32)[keep],
        **reduce_polygons(src, keep),
        expression_names=np.asarray(src["expression_names"]),
        expression_deltas=half_offsets(src["expression_deltas"][:, keep]),
        identity_deltas=half_offsets(src["identity_deltas"][:n_identity][:, keep]),
        landmark_indices=landmarks.astype(np.int32),
        regions=np.array(json.dumps(regions)),
        provenance=np.array(json.dumps(provenance)),
    )
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=SOURCE, help="the full model's .npz")
    parser.add_argument("-o", "--output", type=Path, default=ICT_FACE, help="where to write the reduced copy")
    parser.add_argument("--n-identity", type=int, default=N_IDENTITY, help="identity modes to keep")
    args = parser.parse_args(argv)
    print(build_ict_asset(args.source, args.output, args.n_identity))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
