"""The detector on one still (a character's headless render, docs/retarget.md "Custom shape keys"): its face
landmarks in pixels, for the add-on to cast back onto the character's mesh.

Conventions: pixels as ``backend.footage.detect`` gives them (x = column, y = row, integer coordinates at pixel
centres); the 478 Face Landmarker points and their iBUG-68 subset (``MEDIAPIPE_TO_68``); of several faces, the
largest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emoca_contract.errors import EmocaError


def face_landmarks(image: str | os.PathLike) -> dict[str, Any]:
    """The largest face's landmarks in an image file: ``landmarks`` (478, 2), ``landmarks68`` (68, 2) as lists,
    ``width``, ``height``, ``score``. EmocaError('input_missing'/'input_corrupt'/'no_face')."""
    from backend.footage.detect import MediaPipeDetector
    from backend.footage.video import read_image

    path = Path(image)
    if not path.is_file():
        raise EmocaError("input_missing", f"image not found: {path}")
    pixels = read_image(path)
    if pixels is None:
        raise EmocaError("input_corrupt", f"{path}: not a readable image")
    with MediaPipeDetector(max_faces=4, tracking=False) as detector:
        found = detector.detect(pixels)
    if not found:
        raise EmocaError("no_face", f"{path}: the detector found no face on the render",
                         "Frame the face (front view, eyes and mouth visible, a skin-like shade), or place the "
                         "landmarks by hand.")  # fmt: skip
    face = max(found, key=lambda d: d.area)
    h, w = pixels.shape[:2]
    return {
        "landmarks": np.round(face.landmarks.astype(np.float64), 3).tolist(),
        "landmarks68": np.round(face.landmarks68().astype(np.float64), 3).tolist(),
        "width": int(w),
        "height": int(h),
        "score": float(face.score),
    }
