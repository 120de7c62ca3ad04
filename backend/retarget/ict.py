"""The ICT head's 68 landmarks under the 52 ARKit shapes (numpy): what the ARKit side of the map is fitted with.

Conventions: the ICT model's frame (metres, +Y up, the face looks along +Z); the landmarks are the model's
``landmark_indices`` (one vertex per iBUG-68 point); effects are the rig's ARKit shapes (ICT's split halves
summed, ``backend.ict.rig.arkit_shapes``) at those vertices, in Apple's order, zero for a channel the head lacks
(``tongueOut``).
"""

from __future__ import annotations

import numpy as np

from backend.ict.data import IctModel
from backend.ict.rig import arkit_shapes
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES


def ict_landmark_model(model: IctModel) -> tuple[np.ndarray, np.ndarray]:
    """(neutral landmarks (68, 3), ARKit effects (52, 68, 3)) float64."""
    names, deltas = arkit_shapes(model)
    ids = np.asarray(model.landmark_indices, np.int64)
    effects = np.zeros((len(ARKIT_NAMES), len(ids), 3))
    for name, delta in zip(names, deltas):
        effects[ARKIT_INDEX[name]] = np.asarray(delta, np.float64)[ids]
    return np.asarray(model.vertices, np.float64)[ids], effects
