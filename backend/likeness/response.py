"""How the Face Landmarker's points move when a face's identity changes: ICT's identity modes as the detector
sees them, the model of the open identity fit (backend.likeness.identity).

The detector regresses its own face mesh onto the picture; its points follow a face's shape only partly and not
along the surface: rendering ICT's head with one identity mode at 2 standard deviations moves the embedded
surface points (backend.likeness.embedding) by about 1.5 pixels on a 512-pixel view, while the detected points
move by 0.1 to 1.0 of that, in directions of their own (the part of their motion that the surface's does not
explain is 50 to 120% of it for most modes). A fit that models a detected point as the surface point it was
embedded at can therefore explain only a small part of the difference between two faces.

So each mode's effect on the detected points is measured once, on ICT's MEAN head (the performer's face is
never used): the mean head with mode n at ``+STEP`` and ``-STEP`` standard deviations (alone) is rendered in
:data:`backend.likeness.embedding.VIEWS` with backend.synthetic.ict_likeness (the rig's material colours) and
detected; the central difference of the detections (pixels per unit coefficient, per view) is a linear
projection of one rest-space motion (3,) per point and mode, which is solved for over the views (regularised
least squares towards the surface's own motion: ``RIDGE`` times the mean of the normal matrix's diagonal).
``fit`` is the part of the detections' motion that the solved 3D motion leaves unexplained (relative).

Vendored as ``ict_mediapipe_modes.npz`` beside this module; ``python -m backend.likeness.response_build`` rebuilds it
(5 to 10 minutes on two CPU cores). Units: metres per unit coefficient, in the rest head's frame (ICT's: +Y up,
the face looking along +Z).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError

RESPONSE = Path(__file__).resolve().parent / "ict_mediapipe_modes.npz"
N_MODES = 40  # ICT's identity modes
STEP = 2.0  # standard deviations each mode is rendered at (both signs)
RIDGE = 0.05  # pull towards the surface's motion, relative to the mean diagonal of the views' normal matrix


@dataclass(frozen=True)
class DetectorModes:
    """modes (n, 478, 3) float64: the rest-space motion of each detector point per unit of each identity
    coefficient, as the detector shows it; fit (n, 478): the relative part of the measured motion left
    unexplained; provenance."""

    modes: np.ndarray
    fit: np.ndarray
    provenance: dict


def load_modes(path: str | Path = RESPONSE) -> DetectorModes:
    """The vendored detector modes; EmocaError('asset_missing'/'asset_invalid') when absent or damaged."""
    path = Path(path)
    if not path.is_file():
        hint = "Reinstall the add-on, or rebuild it with `python -m backend.likeness.response_build`."
        raise EmocaError("asset_missing", f"the ICT detector-mode calibration is missing: {path}", hint)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = DetectorModes(z["modes"].astype(np.float64), z["fit"].astype(np.float64),
                                json.loads(str(z["provenance"])))  # fmt: skip
    except (KeyError, ValueError, OSError) as exc:
        raise EmocaError("asset_invalid", f"{path}: not the ICT detector-mode calibration ({exc})",
                         "Rebuild it with `python -m backend.likeness.response_build`.") from exc  # fmt: skip
    if out.modes.ndim != 3 or out.modes.shape[1:] != (478, 3) or not np.isfinite(out.modes).all():
        raise EmocaError("asset_invalid", f"{path}: expected finite modes of shape (n, 478, 3)")
    return out
