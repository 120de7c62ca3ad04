"""The vendored open assets (backend/vendor/README.md: sources, licences, sha256, what was reduced): their paths.

stdlib only. ``mediapipe/`` holds Google's Face Landmarker bundle (Apache-2.0) as published; ``ict/`` a reduced
copy of the ICT-FaceKit face model (MIT), rebuilt by ``python -m backend.ict.reduce``. Each folder keeps its
LICENSE (and credits) beside the files.
"""

from __future__ import annotations

from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent
FACE_LANDMARKER_TASK = VENDOR_DIR / "mediapipe" / "face_landmarker_v2_with_blendshapes.task"
ICT_FACE = VENDOR_DIR / "ict" / "ict_face.npz"
