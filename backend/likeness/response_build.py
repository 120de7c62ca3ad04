"""Rebuild the vendored detector modes (backend.likeness.response: what they are and how they are measured):
``python -m backend.likeness.response_build [--modes N]`` renders ICT's mean head with each identity mode at
``+-STEP`` standard deviations in the embedding's views, detects it and solves for each point's rest-space motion.
A build-time tool: the fit only reads the file (backend.likeness.response.load_modes).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.likeness.response import N_MODES, RESPONSE, RIDGE, STEP, load_modes


# ---------------------------------------------------------------------------------------------- building
def view_setup(size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The calibration views: head rotations (V, 3) axis-angle, translations (V, 3) metres and the focal length
    (the embedding's: backend.likeness.embedding.calibration_views)."""
    from backend.likeness.embedding import VIEWS
    from backend.synthetic.ict_clip import DISTANCE

    rot = np.deg2rad(np.asarray(VIEWS, np.float64))
    return rot, np.tile([0.0, 0.0, -DISTANCE], (len(rot), 1)), 1.6 * size


def detected_views(coefficients: np.ndarray, size: int) -> np.ndarray:
    """The Face Landmarker's points (V, 478, 2) on the calibration views of the ICT head with identity
    ``coefficients`` (n,) (NaN where no face was found)."""
    from backend.likeness.embedding import detect_points
    from backend.synthetic.ict_likeness import render_likeness_frames

    rot, t, focal = view_setup(size)
    zeros = np.zeros((len(rot), 52))
    images = np.concatenate([render_likeness_frames(zeros[i : i + 4], rot[i : i + 4], t[i : i + 4], coefficients,
                                                    None, (size, size), focal)
                             for i in range(0, len(rot), 4)])  # fmt: skip
    return detect_points(images)


def view_jacobians(size: int) -> tuple[np.ndarray, np.ndarray]:
    """d pixels / d rest-space motion of each detector point in each view (V, 478, 2, 3) on the mean head (the
    skinning's linear part at the point, then the pinhole), and the surface's own motion (40, 478, 3)."""
    from backend.ict.data import load_ict
    from backend.likeness.embedding import load_embedding
    from backend.likeness.identity import corner_linear, point_model, point_modes, posed_points, skinning
    from backend.likeness.identity import projection_jacobian as pinhole_jacobian
    from emoca_contract.rotations import axis_angle_to_matrix

    emb = load_embedding()
    every = replace(emb, weight=np.ones(len(emb.weight)))
    pm = point_model(0, every)
    rot, t, focal = view_setup(size)
    values = np.zeros((len(rot), len(pm.shape_index)))
    linear, trans = skinning(pm, values, axis_angle_to_matrix(rot))
    x = posed_points(pm, linear, trans, values, np.zeros(0)) + t[:, None]
    jac = np.einsum("kpab,kpbc->kpac", pinhole_jacobian(x, np.full(len(rot), focal)), corner_linear(pm, linear))
    surface = point_modes(emb, np.arange(len(emb.weight)), np.asarray(load_ict().identity_deltas, np.float64))
    return jac, surface


def solve_modes(delta: np.ndarray, jac: np.ndarray, surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per mode and point, the rest-space motion (n, P, 3) whose projections best match the measured motions
    ``delta`` (n, V, P, 2) pixels per unit coefficient (NaN: not detected) through ``jac`` (V, P, 2, 3), pulled
    towards ``surface`` (n, P, 3) (module docstring); and the relative residual (n, P)."""
    ok = np.isfinite(delta).all(-1)  # (n, V, P)
    d = np.nan_to_num(delta)
    w = ok.astype(np.float64)
    normal = np.einsum("nvp,vpab,vpac->npbc", w, jac, jac)  # (n, P, 3, 3)
    rhs = np.einsum("nvp,vpab,nvpa->npb", w, jac, d)
    ridge = RIDGE * np.einsum("npaa->np", normal)[..., None, None] / 3 * np.eye(3)
    modes = np.linalg.solve(normal + ridge + 1e-9 * np.eye(3), (rhs + np.einsum("npab,npb->npa", ridge, surface))
                            [..., None])[..., 0]  # fmt: skip
    pred = np.einsum("vpab,npb->nvpa", jac, modes)
    left = np.sqrt(np.sum(ok[..., None] * (pred - d) ** 2, (1, 3)))
    return modes, left / np.maximum(np.sqrt(np.sum(d**2, (1, 3))), 1e-12)


def build_modes(n_modes: int = N_MODES, size: int | None = None) -> dict[str, np.ndarray]:
    """The calibration's arrays (module docstring): modes (n, 478, 3) float32 and fit (n, 478) float32."""
    from backend.likeness.embedding import VIEW_SIZE

    size = VIEW_SIZE if size is None else size
    delta = []
    for n in range(n_modes):
        c = np.zeros(n + 1)
        c[n] = STEP
        delta.append((detected_views(c, size) - detected_views(-c, size)) / (2 * STEP))
    jac, surface = view_jacobians(size)
    modes, fit = solve_modes(np.stack(delta), jac, surface[:n_modes])
    return {"modes": modes.astype(np.float32), "fit": fit.astype(np.float32)}


def write_modes(path: str | Path = RESPONSE, n_modes: int = N_MODES) -> Path:
    """Build and write the calibration file (``PATH.partial`` then rename)."""
    import mediapipe

    from backend.likeness.embedding import VIEW_SIZE, VIEWS, write_calibration

    arrays = build_modes(n_modes)
    provenance = {"built_by": "backend.likeness.response_build", "head": "ICT-FaceKit mean head, one mode at a time",
                  "detector": f"MediaPipe Face Landmarker v2 (mediapipe {mediapipe.__version__})",
                  "views_deg": [list(v) for v in VIEWS], "view_size": VIEW_SIZE,
                  "step": STEP, "ridge": RIDGE}  # fmt: skip
    return write_calibration(path, arrays, provenance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.likeness.response_build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("-o", "--output", type=Path, default=RESPONSE)
    parser.add_argument("--modes", type=int, default=N_MODES)
    args = parser.parse_args(argv)
    path = write_modes(args.output, args.modes)
    cal = load_modes(path)
    print(f"{path}: {len(cal.modes)} modes, median unexplained motion {float(np.median(cal.fit)):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
