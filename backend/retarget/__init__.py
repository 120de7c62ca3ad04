"""Retargeting's geometry (docs/retarget.md): the FLAME <-> ARKit map (:mod:`.map`: computed once per FLAME model
from the landmarks of FLAME (:mod:`.flame`) and the ICT head's ARKit shapes (:mod:`.ict`), cached by the model's
hash) and the landmark-driven solve's benchmark material (:mod:`.characters`). The solve itself is numpy in the
contract (``emoca_contract.landmark_solve``), so the add-on runs the same code inside Blender."""
