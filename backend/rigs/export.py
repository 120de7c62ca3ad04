"""The rig file the Blender add-on builds: one exporter for every head the backend knows (docs/formats.md#rig-file).

Without a FLAME file the synthetic test head (not FLAME) is exported, and the note says so. With a FLAME file
the landmark embedding and UVs are looked up next to it, as in the official layout
(`FLAME/geometry/landmark_embedding.npy`, `FLAME/geometry/head_template.obj`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError


def shape_from_take(path: Path) -> np.ndarray:
    """The mean identity of a take's valid frames, (n_shape,) float32."""
    if not path.is_file():
        raise EmocaError("input_missing", f"take file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            shape, valid = z["shape"], z["valid"].astype(bool)
    except (KeyError, ValueError, OSError) as exc:
        raise EmocaError("asset_invalid", f"{path}: not a take file with 'shape' and 'valid' ({exc})") from exc
    if not valid.any():
        raise EmocaError("input_empty", f"{path}: the take has no valid frame to take an identity from")
    return shape[valid].mean(axis=0).astype(np.float32)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def export_rig(
    output: str | Path,
    flame: str | Path | None = None,
    landmarks: str | Path | None = None,
    n_shape: int = 100,
    n_exp: int = 50,
    shape_from: str | Path | None = None,
    note: Callable[[str], None] = _note,
) -> dict:
    """Write the rig file; returns {"files": [path], "model": name}. Shared by the CLI and the protocol.

    flame None: the synthetic test head (and its embedding). Otherwise the FLAME file, with
    ``landmark_embedding.npy`` and ``head_template.obj`` looked up beside it (official layout).
    ``note`` receives the human messages (stderr for the CLI).
    """
    from backend.flame.rig import write_rig

    if flame is None:
        from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding

        model = synthetic_head()
        embedding = synthetic_landmark_embedding(model)
        note("no --flame given: exporting the synthetic test head (not FLAME)")
    else:
        from backend.flame.io import load_flame, read_obj_uvs
        from backend.flame.landmarks import load_landmark_embedding

        model = load_flame(flame)
        folder = Path(flame).parent
        lmk = Path(landmarks) if landmarks is not None else folder / "landmark_embedding.npy"
        embedding = None
        if lmk.is_file():
            embedding = load_landmark_embedding(lmk)
            embedding.validate(len(model.faces), str(lmk))
        elif landmarks is not None:
            raise EmocaError("asset_missing", f"landmark embedding not found: {lmk}")
        else:
            note(f"warning: no landmark embedding at {lmk}: the rig has no landmarks (retargeting needs them)")
        obj = folder / "head_template.obj"
        if model.uvs is None and obj.is_file():
            model.uvs, model.uv_faces = read_obj_uvs(obj, model.faces)
        elif model.uvs is None:
            note(f"note: no {obj.name} next to the FLAME file: the rig has no UVs")
    shape = shape_from_take(Path(shape_from)) if shape_from is not None else None
    out = write_rig(output, model, embedding, shape=shape, n_shape=n_shape, n_exp=n_exp)
    return {"files": [str(out)], "model": model.name}
