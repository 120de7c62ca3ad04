"""The rig file the Blender add-on builds: one exporter for every head the backend knows (docs/formats.md#rig-file).

Heads (:data:`HEADS`): ``ict``, the open ICT-FaceKit head (an open rig: ARKit-named shapes; the default when no
FLAME file is given or installed), ``flame`` (a FLAME rig from the given or the installed FLAME file; a given
``flame`` path implies it) and ``synthetic``, the synthetic test head in the FLAME layout (not FLAME; for tests
of the FLAME path). For FLAME the landmark embedding and UVs are looked up next to the file, as in the official
layout (`FLAME/geometry/landmark_embedding.npy`, `FLAME/geometry/head_template.obj`). The note says which head
was exported and why.

A performer's identity is baked in with ``identity_from`` (one or more takes of that performer; docs/likeness.md):
the take's identity file when its likeness sidecar has one, else estimated from the takes now
(:func:`backend.likeness.run.identity_for_rig`: FLAME takes give a robust mean shape, open takes ICT's fitted
identity modes). A FLAME rig stores it as its ``shape``; the ICT rig as its ``identity`` offsets named after the
clip (``meta.identity_name``), with the joints moved along (backend.likeness.heads.rig_with_identity).
``shape_from`` (a FLAME take's plain mean shape over its valid frames) is the older, simpler option.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError

HEADS = ("ict", "flame", "synthetic")


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


def choose_head(head: str | None, flame: str | Path | None) -> tuple[str, Path | None]:
    """(head, FLAME file) for the arguments: a given FLAME file means ``flame``; no head means FLAME when it is
    installed, else ``ict``. EmocaError('config_invalid') for an unknown head or a FLAME file with another head,
    'asset_missing' for ``flame`` with no FLAME file given or installed."""
    from backend.assets.resolve import resolve_capture

    if head is not None and head not in HEADS:
        raise EmocaError("config_invalid", f"unknown head {head!r}", f"Heads are: {', '.join(HEADS)}.")
    if flame is not None:
        if head not in (None, "flame"):
            raise EmocaError("config_invalid", f"a FLAME file was given with --head {head}",
                             "Drop --flame, or use --head flame.")  # fmt: skip
        return "flame", Path(flame)
    if head in (None, "flame"):
        installed = resolve_capture().flame
        if installed is not None:
            return "flame", installed
        if head == "flame":
            raise EmocaError("asset_missing", "--head flame: no FLAME file given and none installed",
                             "Pass --flame generic_model.pkl, or install FLAME (docs/assets.md).")  # fmt: skip
        return "ict", None
    return head, None


def baked_identity(takes: Sequence[str | Path], head: str, note: Callable[[str], None]):
    """The identity of ``takes`` for a rig of ``head`` (flame | ict); EmocaError('config_invalid') when the takes
    are of the other kind."""
    from backend.likeness.run import identity_for_rig

    identity = identity_for_rig(list(takes))
    want = "open" if head == "ict" else "flame"
    if identity.kind != want:
        other = "an open (ICT)" if identity.kind == "open" else "a FLAME"
        raise EmocaError("config_invalid", f"--identity-from gives {other} identity; the {head} rig needs "
                         f"{'open' if want == 'open' else 'FLAME'} takes",
                         "Use open takes for the ICT rig and EMOCA takes for a FLAME rig.")  # fmt: skip
    note(f"baking the identity {identity.name!r} ({identity.meta.get('frames', '?')} frames)")
    return identity


def _export_ict(output: str | Path, shape_from: str | Path | None, note: Callable[[str], None],
                identity_from: Sequence[str | Path] | None = None) -> dict:  # fmt: skip
    from backend.ict.data import load_ict
    from backend.ict.rig import build_open_rig, write_open_rig

    if shape_from is not None:
        raise EmocaError("config_invalid", "--shape-from bakes a FLAME identity; the ICT head has no FLAME shape",
                         "Drop --shape-from (use --identity-from with open takes), or export a FLAME rig.")  # fmt: skip
    model = load_ict()
    note("exporting the open ICT-FaceKit head (MIT; ARKit-named shapes, no FLAME needed)")
    rig = build_open_rig(model)
    if identity_from:
        from backend.likeness.heads import rig_with_identity  # only here: the likeness package needs torch

        identity = baked_identity(identity_from, "ict", note)
        rig = rig_with_identity(identity.offsets, identity.name, rig)
    return {"files": [str(write_open_rig(output, rig))], "model": rig["meta"]["model"], "head": "ict"}


def export_rig(
    output: str | Path,
    flame: str | Path | None = None,
    landmarks: str | Path | None = None,
    n_shape: int = 100,
    n_exp: int = 50,
    shape_from: str | Path | None = None,
    note: Callable[[str], None] = _note,
    head: str | None = None,
    identity_from: Sequence[str | Path] | None = None,
) -> dict:
    """Write the rig file; returns {"files": [path], "model": name, "head": head}. Shared by the CLI and the
    protocol.

    ``head`` and ``flame`` choose the head (:func:`choose_head`). For FLAME, ``landmark_embedding.npy`` and
    ``head_template.obj`` are looked up beside the file (official layout); n_shape, n_exp and shape_from apply
    to the FLAME layout only; ``identity_from`` (takes of one performer) bakes their identity into either head
    (module docstring). ``note`` receives the human messages (stderr for the CLI).
    """
    from backend.flame.rig import write_rig

    head, flame = choose_head(head, flame)
    if head == "ict":
        return _export_ict(output, shape_from, note, identity_from)
    if shape_from is not None and identity_from:
        raise EmocaError("config_invalid", "give --shape-from or --identity-from, not both")
    if flame is None:
        from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding

        model = synthetic_head()
        embedding = synthetic_landmark_embedding(model)
        note("--head synthetic: exporting the synthetic test head (not FLAME)")
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
    if identity_from:
        shape = baked_identity(identity_from, "flame", note).coefficients
    out = write_rig(output, model, embedding, shape=shape, n_shape=n_shape, n_exp=n_exp)
    return {"files": [str(out)], "model": model.name, "head": head}
