"""The FLAME model as plain numpy arrays (no torch): what the loaders produce and the layer consumes.

Kept numpy-only so the rig writer and the synthetic test head work without torch (the Blender 4.2
test environment has no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PARENTS = (-1, 0, 1, 1, 1)


@dataclass
class FlameData:
    """A FLAME-layout head model.

    Shapes (V vertices, F faces, J=5 joints):
      v_template (V, 3) float32, metres, Y up, face looking +Z
      faces (F, 3) int64
      shapedirs (V, 3, n_shape) float32   identity basis (FLAME: the first 300 columns of the pkl's shapedirs)
      expdirs (V, 3, n_exp) float32       expression basis (FLAME: columns 300: of the pkl's shapedirs)
      posedirs (V, 3, 36) float32         pose-corrective basis for (R_j - I), joints 1..4, row-major 3x3
      J_regressor (J, V) float32          dense
      weights (V, J) float32              skinning weights
      parents (J,) int64                  [-1, 0, 1, 1, 1]
      uvs (VT, 2) float32 / uv_faces (F, 3) int64: optional texture coordinates (head_template.obj)
    ``name`` is honest: "FLAME 2020 (generic_model.pkl)" or "synthetic test head (not FLAME)".
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    expdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    name: str = "FLAME"
    source: str = ""
    uvs: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_exp(self) -> int:
        return int(self.expdirs.shape[2])

    def truncated(self, n_shape: int | None = None, n_exp: int | None = None) -> FlameData:
        """A copy keeping the first n_shape identity and n_exp expression components (as DECA/EMOCA do)."""
        import dataclasses

        return dataclasses.replace(
            self,
            shapedirs=self.shapedirs[:, :, : (n_shape or self.n_shape)],
            expdirs=self.expdirs[:, :, : (n_exp or self.n_exp)],
        )
