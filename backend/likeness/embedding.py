"""Where the Face Landmarker's 478 points lie on the ICT head: the calibration the open identity fit uses.

The detector's points are a mesh of its own (MediaPipe's face mesh), regressed onto the face in the picture, not
ICT's vertices; iBUG-68 names (MEDIAPIPE_TO_68 against ICT's 68 landmark vertices) differ by up to 14% of the face
along the jaw, because iBUG's jaw follows the visible outline. So each MediaPipe point is embedded on the ICT
surface once, by rendering ICT's MEAN head (no identity: the performer's face is never used) in
:data:`VIEWS` with backend.synthetic.ict_clip, detecting the points, and casting each one back onto the mesh under
it (the rasterizer's triangle and the point's barycentric coordinates there). A point's rest position is the mean
over the views where its surface faces the camera (weight: the cosine squared), snapped to the nearest of the
back-cast surface points. ``residual`` is the point's mean reprojection error over the views, as a fraction of
the face's size (its landmarks' box diagonal), and ``weight`` its weight in a fit: 0 for the irises (they turn
with the gaze, which a take's eye-look scores only approximate) and for points that slide over the surface as the
head turns (residual over :data:`MAX_RESIDUAL`, the face oval's), else ``(FLOOR / max(residual, FLOOR))**2``.

The result is vendored as ``ict_mediapipe.npz`` beside this module (numbers depend on the detector, so it is
built, not computed at run time): ``python -m backend.likeness.embedding`` rebuilds it (about a minute on a CPU);
tests/likeness/test_embedding.py checks that the vendored file still reprojects onto fresh detections.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError

EMBEDDING = Path(__file__).resolve().parent / "ict_mediapipe.npz"
N_POINTS = 478
IRISES = range(468, 478)
# Calibration head rotations (pitch, yaw, roll) in degrees: frontal, turns, nods and both together.
VIEWS = ((0, 0, 0), (0, 15, 0), (0, -15, 0), (0, 30, 0), (0, -30, 0), (12, 0, 0), (-12, 0, 0),
         (8, 20, 0), (8, -20, 0), (-8, 20, 0), (-8, -20, 0), (0, 0, 10))  # fmt: skip
VIEW_SIZE = 512  # square calibration renders, pixels
MAX_RESIDUAL = 0.02  # a point that misses its detections by more (fraction of the face) is not used
FLOOR = 0.005  # residuals below this count as this (the detector's own jitter)


@dataclass(frozen=True)
class IctEmbedding:
    """P = 478 MediaPipe points on the ICT mesh: vertices (P, 3) int64, bary (P, 3) float64 (rows sum to 1),
    weight (P,) fit weights, residual (P,) calibration error (fraction of face size), provenance."""

    vertices: np.ndarray
    bary: np.ndarray
    weight: np.ndarray
    residual: np.ndarray
    provenance: dict

    def points(self, vertices: np.ndarray) -> np.ndarray:
        """The embedded points (..., P, 3) of posed vertices (..., V, 3)."""
        return np.einsum("pi,...pic->...pc", self.bary, vertices[..., self.vertices, :])


def load_embedding(path: str | Path = EMBEDDING) -> IctEmbedding:
    """The vendored embedding; EmocaError('asset_missing'/'asset_invalid') when it is absent or damaged."""
    path = Path(path)
    if not path.is_file():
        hint = "Reinstall the add-on, or rebuild it with `python -m backend.likeness.embedding`."
        raise EmocaError("asset_missing", f"the ICT landmark embedding is missing: {path}", hint)
    try:
        with np.load(path, allow_pickle=False) as z:
            emb = IctEmbedding(
                vertices=z["vertices"].astype(np.int64),
                bary=z["bary"].astype(np.float64),
                weight=z["weight"].astype(np.float64),
                residual=z["residual"].astype(np.float64),
                provenance=json.loads(str(z["provenance"])),
            )
    except (KeyError, ValueError, OSError) as exc:
        raise EmocaError("asset_invalid", f"{path}: not the ICT landmark embedding ({exc})",
                         "Rebuild it with `python -m backend.likeness.embedding`.") from exc  # fmt: skip
    if emb.vertices.shape != (N_POINTS, 3) or emb.bary.shape != (N_POINTS, 3) or emb.weight.shape != (N_POINTS,):
        raise EmocaError("asset_invalid", f"{path}: expected {N_POINTS} points with 3 vertices each")
    return emb


# ---------------------------------------------------------------------------------------------- building
def point_weights(residual: np.ndarray) -> np.ndarray:
    """Fit weights (P,) from calibration residuals (P,) (module docstring); NaN residuals weigh 0."""
    r = np.nan_to_num(np.asarray(residual, np.float64), nan=np.inf)
    w = (FLOOR / np.maximum(r, FLOOR)) ** 2
    w[r > MAX_RESIDUAL] = 0.0
    w[list(IRISES)] = 0.0
    return w


def back_project(points: np.ndarray, screen: np.ndarray, faces: np.ndarray, face_index: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Cast 2D points (P, 2) frame pixels onto the mesh drawn in ``face_index`` (H, W) (-1: nothing; ids into
    ``faces`` (T, 3)), whose vertices are at ``screen`` (V, 2) pixels: (triangle (P,) or -1, barycentrics (P, 3)
    of each point in its triangle, clipped onto it)."""
    h, w = face_index.shape
    ij = np.clip(np.rint(points[:, ::-1]).astype(np.int64), 0, [h - 1, w - 1])
    tri = face_index[ij[:, 0], ij[:, 1]]
    bary = np.zeros((len(points), 3))
    hit = tri >= 0
    corners = screen[faces[tri[hit]]]  # (H, 3, 2)
    edges = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], -1)  # (H, 2, 2)
    uv = np.linalg.solve(edges, (points[hit] - corners[:, 0])[..., None])[..., 0]
    b = np.clip(np.c_[1 - uv.sum(1), uv], 0.0, None)
    bary[hit] = b / b.sum(1, keepdims=True)
    return np.where(hit, tri, -1), bary


def detect_points(images: np.ndarray) -> np.ndarray:
    """The Face Landmarker's 478 points (K, 478, 2) frame pixels on each image (IMAGE mode); NaN without a face."""
    from backend.footage.detect import MediaPipeDetector

    out = np.full((len(images), N_POINTS, 2), np.nan)
    with MediaPipeDetector(max_faces=1, tracking=False) as detector:
        for i, image in enumerate(images):
            found = detector.detect(np.ascontiguousarray(image))
            if found:
                out[i] = found[0].landmarks
    return out


def calibration_views(size: int = VIEW_SIZE) -> dict[str, np.ndarray]:
    """Render the mean ICT head in :data:`VIEWS` and detect it: images, rotations (K, 3), posed vertices
    (K, V, 3) camera frame, screen (K, V, 2) pixels, face_index (K, H, W) ids into the rig's triangles, the
    detected points (K, 478, 2) and the focal length."""
    import torch

    from backend.ict.rig import pose_rig
    from backend.render.rasterize import rasterize
    from backend.synthetic.ict_clip import DISTANCE, ict_scene, project, render_frames

    scene = ict_scene()
    rot = np.deg2rad(np.asarray(VIEWS, np.float64))
    k = len(rot)
    t = np.tile([0.0, 0.0, -DISTANCE], (k, 1))
    focal = 1.6 * size
    images = np.concatenate([render_frames(np.zeros((len(rot[i : i + 4]), 52)), rot[i : i + 4], t[i : i + 4],
                                           (size, size), focal) for i in range(0, k, 4)])  # fmt: skip
    verts = pose_rig(scene.rig, np.zeros((k, len(scene.rig["shape_names"]))), rot) + t[:, None]
    ndc = project(torch.as_tensor(verts, dtype=torch.float32), (size, size), focal)
    frag = rasterize(ndc, scene.faces, (size, size))
    screen = (ndc[..., :2].numpy().astype(np.float64) + 1) * size / 2 - 0.5
    return {"images": images, "rotations": rot, "vertices": verts, "screen": screen, "focal": np.float64(focal),
            "face_index": frag.face_index.numpy(), "points": detect_points(images)}  # fmt: skip


def facing(vertices: np.ndarray, faces: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Cosine between each triangle's normal and the direction to the camera (at the origin): (P,)."""
    a, b, c = (vertices[faces[tri, i]] for i in range(3))
    n = np.cross(b - a, c - a)
    centre = (a + b + c) / 3
    return np.einsum("pc,pc->p", n, -centre) / (np.linalg.norm(n, axis=1) * np.linalg.norm(centre, axis=1) + 1e-12)


def build_embedding(views: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The embedding's arrays (module docstring) from :func:`calibration_views`."""
    from backend.synthetic.ict_clip import ict_scene

    views = calibration_views() if views is None else views
    faces = ict_scene().faces.numpy()
    rest = np.asarray(ict_scene().rig["v_template"], np.float64)
    k = len(views["points"])
    cand_tri = np.full((k, N_POINTS), -1)
    cand_bary = np.zeros((k, N_POINTS, 3))
    weight = np.zeros((k, N_POINTS))
    for i in range(k):
        if not np.isfinite(views["points"][i]).all():
            continue
        tri, bary = back_project(views["points"][i], views["screen"][i], faces, views["face_index"][i])
        cand_tri[i], cand_bary[i] = tri, bary
        hit = tri >= 0
        weight[i, hit] = np.clip(facing(views["vertices"][i], faces, tri[hit]), 0, None) ** 2
    rest_pos = np.einsum("kpi,kpic->kpc", cand_bary, rest[faces[np.maximum(cand_tri, 0)]])
    mean = (rest_pos * weight[..., None]).sum(0) / np.maximum(weight.sum(0), 1e-12)[:, None]
    best = np.argmin(np.where(cand_tri >= 0, np.linalg.norm(rest_pos - mean, axis=-1), np.inf), axis=0)  # (P,)
    p = np.arange(N_POINTS)
    tri, bary = cand_tri[best, p], cand_bary[best, p]
    vertices = faces[np.maximum(tri, 0)]
    residual = reprojection_residual(vertices, bary, views)
    residual[tri < 0] = np.nan
    return {"vertices": vertices.astype(np.int32), "bary": bary.astype(np.float32),
            "residual": residual.astype(np.float32), "weight": point_weights(residual).astype(np.float32)}  # fmt: skip


def reprojection_residual(vertices: np.ndarray, bary: np.ndarray, views: dict[str, np.ndarray]) -> np.ndarray:
    """Each embedded point's mean distance (P,) to its detections over the views, as a fraction of the face's size
    (the detected points' box diagonal)."""
    size = views["face_index"].shape[1]
    f = float(views["focal"])
    pts = np.einsum("pi,kpic->kpc", bary, views["vertices"][:, vertices])
    proj = np.stack([(size - 1) / 2 + f * pts[..., 0] / -pts[..., 2], (size - 1) / 2 - f * pts[..., 1] / -pts[..., 2]],
                    -1)  # fmt: skip
    det = views["points"]
    diag = np.linalg.norm(det.max(1) - det.min(1), axis=-1)  # (K,)
    return np.nanmean(np.linalg.norm(proj - det, axis=-1) / diag[:, None], axis=0)


def write_embedding(path: str | Path = EMBEDDING, views: dict[str, np.ndarray] | None = None) -> Path:
    """Build and write the embedding file (``PATH.partial`` then rename)."""
    import mediapipe

    arrays = build_embedding(views)
    provenance = {"built_by": "backend.likeness.embedding", "head": "ICT-FaceKit mean head (no identity)",
                  "detector": f"MediaPipe Face Landmarker v2 (mediapipe {mediapipe.__version__})",
                  "views_deg": [list(v) for v in VIEWS], "view_size": VIEW_SIZE,
                  "max_residual": MAX_RESIDUAL, "floor": FLOOR}  # fmt: skip
    return write_calibration(path, arrays, provenance)


def write_calibration(path: str | Path, arrays: dict[str, np.ndarray], provenance: dict) -> Path:
    """Write a vendored calibration file: ``arrays`` and the ``provenance`` (JSON), to ``PATH.partial`` and then
    renamed, so a build that stops half-way leaves the old file in place."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays, provenance=np.array(json.dumps(provenance)))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.likeness.embedding", description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=EMBEDDING)
    args = parser.parse_args(argv)
    path = write_embedding(args.output)
    emb = load_embedding(path)
    used = emb.weight > 0
    print(f"{path}: {int(used.sum())} of {N_POINTS} points used, median residual "
          f"{float(np.median(emb.residual[used])):.4f} of the face size")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
