"""The contract between the backend and the Blender add-on: numpy + stdlib only, loaded by both sides.

What both processes must agree on lives here, once: error codes (:mod:`.errors`), the stdio protocol
(:mod:`.protocol`), the take file format and its one reader (:mod:`.take`), the rig file format and its reader
(:mod:`.rig`), the rotation conventions (:mod:`.rotations`), the FLAME <-> ARKit map file and its functions
(:mod:`.arkit_map`) and the landmark retarget's numerics (:mod:`.landmark_solve`). The backend imports it as
``emoca_contract``; the add-on loads the bundled copy by path (``emoca_blender/contract.py``) because Blender's
Python has none of the backend's dependencies. Nothing here may import torch, bpy, cv2 or any backend module.
"""

__version__ = "0.1.0"
