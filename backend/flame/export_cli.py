"""`python -m backend export-rig`: write the Blender rig file (docs/formats.md) from FLAME or the synthetic head.

Without --flame the synthetic test head (not FLAME) is exported, and stderr says so.
With --flame PATH the landmark embedding and UVs are looked up next to it, as in the official layout
(`FLAME/geometry/landmark_embedding.npy`, `FLAME/geometry/head_template.obj`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from backend.errors import BackendError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flame", type=Path, help="FLAME generic_model.pkl (or our cached .npz); default: synthetic")
    parser.add_argument("--landmarks", type=Path, help="landmark_embedding.npy (default: next to the FLAME file)")
    parser.add_argument("--n-exp", type=int, default=50, help="expression components to export (default 50)")
    parser.add_argument("--n-shape", type=int, default=100, help="identity components to export (default 100)")
    parser.add_argument("--shape-from", type=Path, help="a take file: bake its mean identity (valid frames)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the rig file to write (.npz)")


def shape_from_take(path: Path) -> np.ndarray:
    """The mean identity of a take's valid frames, (n_shape,) float32."""
    if not path.is_file():
        raise BackendError("input_missing", f"take file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            shape, valid = z["shape"], z["valid"].astype(bool)
    except (KeyError, ValueError, OSError) as exc:
        raise BackendError("asset_invalid", f"{path}: not a take file with 'shape' and 'valid' ({exc})") from exc
    if not valid.any():
        raise BackendError("input_empty", f"{path}: the take has no valid frame to take an identity from")
    return shape[valid].mean(axis=0).astype(np.float32)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def export(args: argparse.Namespace) -> dict:
    from backend.flame.rig import write_rig

    if args.flame is None:
        from backend.flame.synthetic import synthetic_head, synthetic_landmark_embedding

        flame = synthetic_head()
        embedding = synthetic_landmark_embedding(flame)
        _note("no --flame given: exporting the synthetic test head (not FLAME)")
    else:
        from backend.flame.io import load_flame, read_obj_uvs
        from backend.flame.landmarks import load_landmark_embedding

        flame = load_flame(args.flame)
        folder = Path(args.flame).parent
        lmk = args.landmarks or folder / "landmark_embedding.npy"
        embedding = None
        if lmk.is_file():
            embedding = load_landmark_embedding(lmk)
            embedding.validate(len(flame.faces), str(lmk))
        elif args.landmarks is not None:
            raise BackendError("asset_missing", f"landmark embedding not found: {lmk}")
        else:
            _note(f"warning: no landmark embedding at {lmk}: the rig has no landmarks (retargeting needs them)")
        obj = folder / "head_template.obj"
        if flame.uvs is None and obj.is_file():
            flame.uvs, flame.uv_faces = read_obj_uvs(obj, flame.faces)
        elif flame.uvs is None:
            _note(f"note: no {obj.name} next to the FLAME file: the rig has no UVs")
    shape = shape_from_take(args.shape_from) if args.shape_from is not None else None
    out = write_rig(args.output, flame, embedding, shape=shape, n_shape=args.n_shape, n_exp=args.n_exp)
    return {"files": [str(out)], "model": flame.name}


def run(args: argparse.Namespace) -> int:
    result = export(args)
    print(result["files"][0])
    return 0
