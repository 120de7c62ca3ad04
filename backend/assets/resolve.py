"""What a run uses: the user's explicit choices over what is installed (capture model + FLAME files, emotion net).

Callers (capture, encode, preview) pass the result on to the loaders in ``backend.models``; nothing below this
package looks for installed assets itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.assets.specs import MODEL_PREFERENCE, SPECS_BY_KEY, spec_path
from backend.assets.status import status
from backend.paths import assets_root


@dataclass(frozen=True)
class CapturePaths:
    """The files a reconstructor is built from (None: not given and not installed)."""

    model: Path | None = None  # an EMOCA/DECA model folder (cfg.yaml + checkpoints) or deca_model.tar
    flame: Path | None = None  # generic_model.pkl
    landmarks: Path | None = None  # landmark_embedding.npy
    mediapipe: Path | None = None  # mediapipe_landmark_embedding.npz


def resolve_capture(
    model: str | os.PathLike | None = None, flame: str | os.PathLike | None = None, root: Path | str | None = None
) -> CapturePaths:
    """The model and FLAME files a capture uses: the ones given, else the installed ones (official layout,
    preference :data:`MODEL_PREFERENCE`). An explicitly given model takes nothing from the installed assets;
    an installed FLAME file brings its installed landmark embeddings. Presence is checked, not validity
    (the loaders validate)."""
    if model is not None:
        return CapturePaths(model=Path(model), flame=Path(flame) if flame is not None else None)
    root = Path(root) if root is not None else assets_root()
    found_model = None
    for key in MODEL_PREFERENCE:
        p = spec_path(SPECS_BY_KEY[key], root)
        if p is not None and ((p / "cfg.yaml").is_file() or (key == "deca_tar" and p.is_file())):
            found_model = p
            break
    if flame is not None:
        return CapturePaths(model=found_model, flame=Path(flame))
    installed = {k: spec_path(SPECS_BY_KEY[k], root) for k in ("flame2020", "landmark_embedding",
                                                                "mediapipe_embedding")}  # fmt: skip
    present = {k: p if p is not None and p.is_file() else None for k, p in installed.items()}
    if present["flame2020"] is None:
        return CapturePaths(model=found_model)
    return CapturePaths(
        found_model, present["flame2020"], present["landmark_embedding"], present["mediapipe_embedding"]
    )


def resolve_emotion(trained: bool, root: Path | str | None = None) -> Path | None:
    """The best installed emotion network: the official image-based ResNet-50, else EmoDECA (only on top of a
    trained EMOCA: it reads EMOCA's codes), else None (= fer's open 7-class network)."""
    found = {s.key: s for s in status(root, validate=False, keys=("emotion:ResNet50", "emotion:EMOCA-emorec"))}
    image, emorec = found.get("emotion:ResNet50"), found.get("emotion:EMOCA-emorec")
    if image is not None and image.present and image.path:
        return Path(image.path)
    if emorec is not None and emorec.present and emorec.path and trained:
        return Path(emorec.path)
    return None
