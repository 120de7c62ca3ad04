"""A performer's identity from one or more takes (docs/likeness.md "Identity"): FLAME shape codes or ICT modes.

Which frames count (both kinds): *confident* rows, valid, observed (not interpolated across a gap) and with a
detector confidence of at least ``min_confidence``.

FLAME takes (:func:`flame_identity`): the network gives a shape code per frame; the identity is their mean after
rejecting outlier frames by median/MAD: per coefficient the median and the MAD (scaled by 1.4826, the normal's
standard deviation), per frame the RMS of its robust z-scores over the coefficients, and frames whose RMS exceeds
``mad_threshold`` are dropped (a well-tracked frame scores about 1). Offsets (V, 3) need the FLAME model's
identity basis, so they are computed when a FLAME model is given (a FLAME rig holds its own basis: the add-on
bakes the coefficients).

Open takes (:func:`open_identity`): ICT's identity modes fitted to the clip's Face Landmarker points by bounded,
regularised least squares over all (sub-sampled) confident frames at once, each frame's expression (its ARKit
scores through the rig's shapes, drivers included) and head rotation held.

* Camera: the detector's kind, a pinhole per frame (x right, y up, looking down -z: the take's camera frame),
  principal point at the frame's centre, one focal length per take. MediaPipe assumes a 63 degree vertical field
  of view, which is the footage's only by chance, so the focal length is fitted (from that start, or held at
  ``focal`` when the footage's is known) along with each frame's translation. A weak-perspective camera would
  fit a face 0.6 m away with its jaw about 5% narrower than it is (the jaw lies ~4 cm behind the eyes).
* Model point p of frame k: the ICT surface point of the detector's point p (backend.likeness.embedding) on the
  mean head, plus each identity mode's motion of that point *as the detector shows it* (the measured detector
  modes of backend.likeness.response; ``modes="surface"``: the surface's own motion, what a perfect detector
  would show), posed by the rig (:func:`backend.ict.rig.pose_rig`'s shapes, drivers and skinning with the mean
  head's joints) with the head rotation ``R_k O^T`` (``R_k`` the take's, ``O`` one fitted offset between
  MediaPipe's canonical face and ICT's neutral head) and the translation ``t_k``.
* Residuals: the reprojection error over the face's size (its detected points' box diagonal) over
  :data:`SIGMA`, times the point's calibration weight and its trust given the held expression
  (:func:`expression_trust`: the scores are estimates, so a point they move far says less about the identity),
  scaled so that a clip counts as :data:`EFFECTIVE_POINTS` independent observations (the detector's errors are
  correlated within a frame and over time: thousands of points are not thousands of facts). The prior adds
  ``prior * coefficient`` per mode (ICT's modes have unit variance); coefficients are bounded to
  ``[-bound, bound]`` (2.5: a plausible face). :data:`PRIOR` was compared on clips of other identities than the
  test's (backend.synthetic.ict_likeness.SECOND_IDENTITY and another draw): 0.5 fitted their landmarks about 6%
  better than 1 but let the parts no detector sees wander (the neck: the rig's root joint moved 1.6 to 2.1 cm,
  against 0.5 to 1 cm), so it stays at 1.
* Solver: Levenberg-Marquardt with the per-frame translations eliminated (the bundle-adjustment Schur
  complement; analytic Jacobian, the offset rotation's columns by finite differences; bounds by projection), then
  once more with Huber weights (beyond :data:`HUBER` sigma) so that a few wild points cannot pull.
* Pose rounds (``pose_rounds``): the detector's head rotations are estimates (for its own 63 degree camera and
  its own face) and a fit that holds them takes their errors for the face's shape and the lens (on the known
  clips the focal length came out 10 to 20% long); so each frame's rotation and translation are refined to the
  fitted face (:func:`refine_poses`, a few degrees at most) and the fit is repeated, three times (the focal
  length then lands within 5% of the truth; decided on the second known identity's clip).

What it can recover is bounded by the detector: its points follow a face's shape only partly and with errors of
their own that depend on the face's paint, expression and pose (about 1% of the face's size of error that does
not shrink with the identity), and most of an identity's landmark difference is depth, which a detector's 2D
points show only through the head's turns; on the rendered known-likeness clips the fit removes about 30% of
the mean head's error, leaving about 1.2% of the face's size (docs/likeness.md "Limits": the measured
breakdown).

Units: metres; coefficients are ICT's (unit-variance modes) or FLAME's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.likeness.embedding import IctEmbedding, load_embedding
from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_matrix
from emoca_contract.take import Take

MEDIAPIPE_VFOV_DEG = 63.0  # the Face Landmarker's assumed camera (backend.footage.detect.CAMERA_VFOV_DEG)
SIGMA = 0.01  # the detector's typical point error, as a fraction of the face's size
EFFECTIVE_POINTS = 300.0  # independent observations a whole clip is worth (module docstring)
HUBER = 3.0  # residuals beyond this many SIGMA are down-weighted in the second pass
FOCAL_RANGE = (0.4, 6.0)  # the focal length's bounds, in frame heights (vertical FOV about 9 to 100 degrees)
FD_STEP = 1e-4  # radians: finite-difference step of the offset rotation
EXPRESSION_SCALE = 0.002  # metres: a point the held expression moves this far counts half
PRIOR = 1.0  # the regulariser's default weight (module docstring: how it was chosen)
POSE_SIGMA_DEG = 3.0  # the detector's head rotation is good to about this (the texture's cameras refine it)


@dataclass(frozen=True)
class IdentityOptions:
    """How an identity is estimated (module docstring)."""

    min_confidence: float = 0.5
    mad_threshold: float = 3.0  # FLAME: frames whose RMS robust z-score exceeds this are outliers
    bound: float = 2.5  # open: |coefficient| <= bound (standard deviations: a plausible face)
    prior: float = PRIOR  # open: the regulariser's weight per coefficient
    max_frames: int = 150  # open: frames used in the fit (evenly spaced over the confident ones)
    focal: float | None = None  # open: the footage's focal length in pixels, when known (else fitted)
    n_modes: int = 40  # open: ICT identity modes fitted
    modes: str = "detector"  # open: the modes' motion at the points: "detector" (measured) or "surface" (module doc)
    pose_rounds: int = 3  # open: times the frames' rotations are refined to the fitted face and the fit repeated


@dataclass
class Identity:
    """One performer's identity: ``kind`` (flame | open), ``name`` (the clip's), coefficients (n,) float32,
    offsets (V, 3) float32 metres or None (FLAME without a model), ``meta`` (how it was estimated)."""

    kind: str
    name: str
    coefficients: np.ndarray
    offsets: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


def confident_rows(take: Take, min_confidence: float) -> np.ndarray:
    """Rows (N,) bool that are valid, observed (not interpolated) and confident enough."""
    return take["valid"] & ~take["interpolated"] & (take["confidence"] >= min_confidence)


def _raw(take: Take, key: str) -> np.ndarray:
    """The unsmoothed values of ``key`` when the take has them: what the frame showed."""
    return take["raw_" + key] if "raw_" + key in take else take[key]


def _check_kind(takes: Sequence[Take], kind: str) -> None:
    if not takes:
        raise EmocaError("config_invalid", "no take was given to take an identity from")
    other = [str(t.path or "take") for t in takes if t.kind != kind]
    if other:
        raise EmocaError("config_invalid", f"an identity is taken from takes of one kind ({kind}); "
                         f"{other[0]} is a {takes[[str(t.path or 'take') for t in takes].index(other[0])].kind} take",
                         "Use FLAME takes for a FLAME rig and open takes for the ICT rig.")  # fmt: skip


# ---------------------------------------------------------------------------------------------- FLAME
def robust_mean(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Median/MAD outlier rejection of rows (N, D): (mean of the inlier rows (D,), inliers (N,) bool)."""
    x = np.asarray(x, np.float64)
    med = np.median(x, 0)
    mad = 1.4826 * np.median(np.abs(x - med), 0)
    mad = np.maximum(mad, 1e-6 + 1e-3 * float(np.median(mad)))  # a constant coefficient scores 0, not NaN
    score = np.sqrt(np.mean(((x - med) / mad) ** 2, 1))
    inliers = score <= threshold
    if not inliers.any():  # every frame disagrees with the median: keep the most typical half
        inliers = score <= np.median(score)
    return x[inliers].mean(0), inliers


def flame_identity(takes: Sequence[Take], options: IdentityOptions = IdentityOptions(),
                   shapedirs: np.ndarray | None = None, name: str | None = None) -> Identity:  # fmt: skip
    """The robust mean shape over the confident frames of FLAME ``takes`` (module docstring); offsets from
    ``shapedirs`` (V, 3, n) when given."""
    _check_kind(takes, "flame")
    rows = [confident_rows(t, options.min_confidence) for t in takes]
    shapes = np.concatenate([t["shape"][r] for t, r in zip(takes, rows)])
    if len(shapes) == 0:
        raise EmocaError("input_empty", f"{takes[0].path}: no confident frame to take an identity from",
                         f"Frames need a detector confidence of at least {options.min_confidence}.")  # fmt: skip
    mean, inliers = robust_mean(shapes, options.mad_threshold)
    offsets = None
    if shapedirs is not None:
        n = min(len(mean), shapedirs.shape[2])
        offsets = np.einsum("vcn,n->vc", np.asarray(shapedirs, np.float64)[:, :, :n], mean[:n]).astype(np.float32)
    meta = {"method": "median/MAD outlier rejection, mean of the inlier frames",
            "mad_threshold": options.mad_threshold, "min_confidence": options.min_confidence,
            "frames": int(len(shapes)), "rejected": int((~inliers).sum()),
            "takes": [str(t.path) for t in takes]}  # fmt: skip
    return Identity("flame", name or takes[0].clip_name, mean.astype(np.float32), offsets, meta)


# ---------------------------------------------------------------------------------------------- open: model
@dataclass(frozen=True)
class PointModel:
    """The embedded points on a vertex subset S of the mean ICT rig (the only vertices a fit needs)."""

    rig: dict[str, Any]  # the mean open rig (drivers, joints, meta)
    corners: np.ndarray  # (P, 3) indices into S
    bary: np.ndarray  # (P, 3)
    weight: np.ndarray  # (P,) calibration weights (> 0)
    points: np.ndarray  # (P,) which of the 478 detector points
    template: np.ndarray  # (S, 3)
    shapes: np.ndarray  # (nS, S, 3) the rig's ARKit shapes
    modes: np.ndarray  # (n, P, 3) what each identity mode moves the points by (rest space, metres)
    skin: np.ndarray  # (S, J)
    shape_index: np.ndarray  # (nS,) the ARKit column of each rig shape


def point_model(n_modes: int, embedding: IctEmbedding | None = None, modes: str = "surface") -> PointModel:
    """The fit's model: the embedding's weighted points on the mean ICT rig and its first ``n_modes`` modes, as
    they move the detector's points (``modes="detector"``: backend.likeness.response) or the surface points the
    detector's were embedded at (``"surface"``)."""
    from backend.ict.data import load_ict
    from backend.likeness.heads import mean_open_rig
    from emoca_contract.arkit import ARKIT_INDEX

    emb = load_embedding() if embedding is None else embedding
    used = np.flatnonzero(emb.weight > 0)
    subset, inverse = np.unique(emb.vertices[used], return_inverse=True)
    rig = mean_open_rig()
    model = load_ict()
    if modes == "detector":
        motion = detector_point_modes(used, n_modes)
    elif modes == "surface":
        motion = point_modes(emb, used, np.asarray(model.identity_deltas[:n_modes], np.float64))
    else:
        raise EmocaError("config_invalid", f"unknown identity modes {modes!r}", 'Use "detector" or "surface".')
    return PointModel(
        rig=rig,
        corners=inverse.reshape(-1, 3),
        bary=emb.bary[used],
        weight=emb.weight[used],
        points=used,
        template=np.asarray(rig["v_template"], np.float64)[subset],
        shapes=np.asarray(rig["shape_deltas"], np.float64)[:, subset],
        modes=motion,
        skin=np.asarray(rig["weights"], np.float64)[subset],
        shape_index=np.array([ARKIT_INDEX[str(n)] for n in rig["shape_names"]]),
    )


def detector_point_modes(used: np.ndarray, n_modes: int) -> np.ndarray:
    """The first ``n_modes`` identity modes' measured motion (n, P, 3) at the detector points ``used`` (P,)."""
    from backend.likeness.response import load_modes

    cal = load_modes()
    if n_modes > len(cal.modes):
        raise EmocaError("config_invalid", f"{n_modes} identity modes asked for; {len(cal.modes)} are calibrated",
                         f"Fit at most {len(cal.modes)} modes.")  # fmt: skip
    return cal.modes[:n_modes, used]


def point_modes(emb: IctEmbedding, used: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """The identity modes (n, V, 3) at the embedded points (n, P, 3) (barycentric mixes of their corners')."""
    return np.einsum("pi,npic->npc", emb.bary[used], modes[:, emb.vertices[used]])


def skinning(pm: PointModel, values: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex skinning of the subset for shape values (K, nS) and head rotations (K, 3, 3): linear parts
    (K, S, 3, 3) and translations (K, S, 3) (the rig's bones, drivers included; the root at the origin)."""
    from backend.ict.rig import HEAD_BONE, bone_matrices, driven_channels, euler_xyz

    rotations: dict[str, np.ndarray] = {}
    locations: dict[str, np.ndarray] = {}
    for (bone, channel), arr in driven_channels(pm.rig, values).items():
        if channel == "rotation_euler":
            rotations[bone] = euler_xyz(arr)
        else:
            locations[bone] = arr
    rotations[pm.rig["meta"].get("head_bone", HEAD_BONE)] = head
    mats = bone_matrices(pm.rig, rotations, locations, len(values))
    blend = np.einsum("vj,kjab->kvab", pm.skin, mats)
    return blend[..., :3, :3], blend[..., :3, 3]


def corner_linear(pm: PointModel, linear: np.ndarray) -> np.ndarray:
    """The skinning's linear part at the points (K, P, 3, 3): the barycentric mix of their corners'."""
    return np.einsum("pi,kpiab->kpab", pm.bary, linear[:, pm.corners])


def posed_points(pm: PointModel, linear: np.ndarray, trans: np.ndarray, values: np.ndarray,
                 coefficients: np.ndarray) -> np.ndarray:  # fmt: skip
    """Model points (K, P, 3) before the camera translation: the mean head's shaped subset skinned and combined
    at the points, plus the identity's point offsets through the points' skinning."""
    shaped = pm.template + np.einsum("ks,svc->kvc", values, pm.shapes)
    verts = np.einsum("kvab,kvb->kva", linear, shaped) + trans  # (K, S, 3)
    base = np.einsum("pi,kpic->kpc", pm.bary, verts[:, pm.corners])
    return base + np.einsum("kpab,pb->kpa", corner_linear(pm, linear), np.einsum("n,npc->pc", coefficients, pm.modes))


def mode_jacobian(pm: PointModel, linear: np.ndarray) -> np.ndarray:
    """d points / d coefficients: (K, P, 3, n)."""
    return np.einsum("kpab,npb->kpan", corner_linear(pm, linear), pm.modes)


def project(points: np.ndarray, focal: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points (K, P, 3) (looking down -z, y up) with focal (K,) pixels and
    principal point centre (K, 2) -> frame pixels (K, P, 2) (x right, y down)."""
    z = -points[..., 2]
    return np.stack([centre[:, None, 0] + focal[:, None] * points[..., 0] / z,
                     centre[:, None, 1] - focal[:, None] * points[..., 1] / z], -1)  # fmt: skip


def projection_jacobian(points: np.ndarray, focal: np.ndarray) -> np.ndarray:
    """d pixels / d point: (K, P, 2, 3)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    f = focal[:, None]
    zero = np.zeros_like(x)
    return np.stack([np.stack([-f / z, zero, f * x / z**2], -1), np.stack([zero, f / z, -f * y / z**2], -1)], -2)


# ---------------------------------------------------------------------------------------------- open: data
@dataclass
class FrameData:
    """The frames one fit uses, all takes together: K rows."""

    take: np.ndarray  # (K,) which take
    row: np.ndarray  # (K,) the row in that take
    values: np.ndarray  # (K, nS) rig shape values (the take's ARKit scores)
    rotation: np.ndarray  # (K, 3, 3) the take's head rotation
    observed: np.ndarray  # (K, P, 2) detected points, frame pixels
    centre: np.ndarray  # (K, 2) principal point
    size: np.ndarray  # (K,) the face's size in pixels (the detected points' box diagonal)
    height: np.ndarray  # (K,) frame heights


def frame_centre(take: Take) -> tuple[np.ndarray, float]:
    """The principal point (2,) (the frame's centre, pixel-centre convention) and the frame height."""
    src = take.meta.get("source", {})
    if not src.get("width") or not src.get("height"):
        raise EmocaError("input_corrupt", f"{take.path}: meta.source has no frame size; the fit needs the camera",
                         "Capture the take again with this version.")  # fmt: skip
    w, h = float(src["width"]), float(src["height"])
    return np.array([(w - 1) / 2, (h - 1) / 2]), h


def frame_data(takes: Sequence[Take], pm: PointModel, rows: Sequence[np.ndarray]) -> FrameData:
    """Gather the fit's inputs from the chosen ``rows`` (indices) of each take."""
    parts = []
    for i, (take, r) in enumerate(zip(takes, rows)):
        det = _raw(take, "detected_landmarks")
        if det.shape[1] != 478:
            message = f"{take.path}: the open identity fit needs the Face Landmarker's 478 points, not {det.shape[1]}"
            raise EmocaError("input_unsupported", message, "Capture with --detector mediapipe.")
        centre, height = frame_centre(take)
        obs = det[r][:, pm.points].astype(np.float64)
        parts.append((np.full(len(r), i), r, _raw(take, "arkit")[r][:, pm.shape_index].astype(np.float64),
                      axis_angle_to_matrix(_raw(take, "global_pose")[r].astype(np.float64)), obs,
                      np.tile(centre, (len(r), 1)), np.linalg.norm(obs.max(1) - obs.min(1), axis=-1),
                      np.full(len(r), height)))  # fmt: skip
    cols = [np.concatenate(c) for c in zip(*parts)]
    return FrameData(*cols)


def sample_rows(takes: Sequence[Take], options: IdentityOptions) -> list[np.ndarray]:
    """Evenly spaced confident rows of each take, at most ``max_frames`` in all."""
    conf = [np.flatnonzero(confident_rows(t, options.min_confidence)) for t in takes]
    total = sum(len(c) for c in conf)
    if total == 0:
        raise EmocaError("input_empty", f"{takes[0].path}: no confident frame to fit an identity to",
                         f"Frames need a detector confidence of at least {options.min_confidence}.")  # fmt: skip
    keep = min(1.0, options.max_frames / total)
    return [c[np.unique(np.round(np.linspace(0, len(c) - 1, max(1, round(len(c) * keep)))).astype(int))]
            if len(c) else c for c in conf]  # fmt: skip


# ---------------------------------------------------------------------------------------------- open: solving
def initial_translation(points: np.ndarray, observed: np.ndarray, focal: np.ndarray, centre: np.ndarray,
                        weight: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per frame, the translation (K, 3) that best places model points (K, P, 3) on observed pixels (K, P, 2)
    (the pinhole equations multiplied out: linear least squares)."""
    du = observed[..., 0] - centre[:, None, 0]
    dv = observed[..., 1] - centre[:, None, 1]
    f = focal[:, None] * np.ones_like(du)
    zero = np.zeros_like(du)
    # f tx + du tz = -du Z - f X ;  f ty - dv tz = dv Z - f Y
    a = np.concatenate([np.stack([f, zero, du], -1), np.stack([zero, f, -dv], -1)], 1)  # (K, 2P, 3)
    b = np.concatenate([-du * points[..., 2] - f * points[..., 0], dv * points[..., 2] - f * points[..., 1]], 1)
    sw = np.sqrt(np.concatenate([weight, weight]))[None, :, None]
    return np.stack([np.linalg.lstsq(a[k] * sw[0], b[k] * sw[0, :, 0], rcond=None)[0] for k in range(len(a))])


def solve_translations(points: np.ndarray, observed: np.ndarray, focal: np.ndarray, centre: np.ndarray,
                       weight: np.ndarray, iterations: int = 8) -> np.ndarray:  # fmt: skip
    """Per-frame translations (K, 3) minimising the weighted reprojection error (linear start, Gauss-Newton)."""
    t = initial_translation(points, observed, focal, centre, weight)
    for _ in range(iterations):
        x = points + t[:, None]
        r = (project(x, focal, centre) - observed).reshape(len(x), -1)  # (K, 2P)
        j = projection_jacobian(x, focal).reshape(len(x), -1, 3)  # (K, 2P, 3)
        w = np.repeat(weight, 2)[None, :, None]
        jtj = np.einsum("kra,krb->kab", j * w, j) + 1e-9 * np.eye(3)
        t = t - np.linalg.solve(jtj, np.einsum("kra,kr->ka", j * w, r))
    return t


@dataclass
class OpenProblem:
    """A fit's fixed parts and how its parameter vector x = [coefficients (n), offset (3), log focal (T),
    translations (3K)] is laid out."""

    pm: PointModel
    data: FrameData
    n_takes: int
    options: IdentityOptions
    scale: float  # data residual scale: sqrt(EFFECTIVE_POINTS / (K * sum of point weights)) / SIGMA
    robust: np.ndarray  # (K, P) Huber weights (1 in the first pass)
    expression: np.ndarray  # (K, P) trust in each point given how far the frame's held expression moves it

    @property
    def n(self) -> int:
        return len(self.pm.modes)

    @property
    def n_global(self) -> int:
        return self.n + 3 + self.n_takes

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n, t = self.n, self.n_takes
        return x[:n], x[n : n + 3], x[n + 3 : n + 3 + t], x[n + 3 + t :].reshape(-1, 3)

    def head(self, offset: np.ndarray) -> np.ndarray:
        """The rig's head rotations (K, 3, 3): the take's rotation times the offset's inverse."""
        return self.data.rotation @ axis_angle_to_matrix(offset).T

    def points(self, coefficients: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(model points (K, P, 3) before translation, skinning linear parts (K, S, 3, 3))."""
        linear, trans = skinning(self.pm, self.data.values, self.head(offset))
        return posed_points(self.pm, linear, trans, self.data.values, coefficients), linear

    def row_weight(self) -> np.ndarray:
        """(K, P) sqrt-weights of the data residuals (before the pixel -> face-size scaling)."""
        return np.sqrt(self.pm.weight[None] * self.robust * self.expression) * self.scale / self.data.size[:, None]

    def residuals(self, x: np.ndarray) -> np.ndarray:
        coeffs, offset, log_f, t = self.split(x)
        pts, _ = self.points(coeffs, offset)
        proj = project(pts + t[:, None], np.exp(log_f)[self.data.take], self.data.centre)
        data = ((proj - self.data.observed) * self.row_weight()[..., None]).ravel()
        return np.concatenate([data, self.options.prior * coeffs])

    def blocks(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals and their Jacobian in blocks: data residuals r (K, 2P), global columns A (K, 2P, G)
        (coefficients, offset, log focals) and each frame's translation columns B (K, 2P, 3)."""
        coeffs, offset, log_f, t = self.split(x)
        pts, linear = self.points(coeffs, offset)
        focal = np.exp(log_f)[self.data.take]
        xt = pts + t[:, None]
        proj = project(xt, focal, self.data.centre)
        w = self.row_weight()[..., None]  # (K, P, 1)
        jp = projection_jacobian(xt, focal) * w[..., None]  # (K, P, 2, 3)
        k, p = pts.shape[:2]
        d_coeff = np.einsum("kpab,kpbn->kpan", jp, mode_jacobian(self.pm, linear))  # (K, P, 2, n)
        d_focal = np.zeros((k, p, 2, self.n_takes))
        d_focal[np.arange(k), :, :, self.data.take] = (proj - self.data.centre[:, None]) * w
        d_offset = np.zeros((k, p, 2, 3))
        for a in range(3):
            step = np.zeros(3)
            step[a] = FD_STEP
            moved, _ = self.points(coeffs, offset + step)
            d_offset[..., a] = (project(moved + t[:, None], focal, self.data.centre) - proj) / FD_STEP * w
        glob = np.concatenate([d_coeff, d_offset, d_focal], -1).reshape(k, 2 * p, -1)
        return ((proj - self.data.observed) * w).reshape(k, 2 * p), glob, jp.reshape(k, 2 * p, 3)

    def bounds(self, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(len(x0), -np.inf)
        hi = np.full(len(x0), np.inf)
        lo[: self.n], hi[: self.n] = -self.options.bound, self.options.bound
        height = np.array([self.data.height[self.data.take == i][0] for i in range(self.n_takes)])
        fl = slice(self.n + 3, self.n + 3 + self.n_takes)
        lo[fl], hi[fl] = np.log(FOCAL_RANGE[0] * height), np.log(FOCAL_RANGE[1] * height)
        return lo, hi


def expression_trust(pm: PointModel, values: np.ndarray) -> np.ndarray:
    """(K, P) ``1 / (1 + (d / EXPRESSION_SCALE)^2)`` of the distance d each point's held expression (shape
    values (K, nS)) moves it from the neutral face: the scores are estimates, so where they move a point most,
    the point says least about the identity."""
    moved = np.einsum("ks,svc->kvc", values, pm.shapes)
    d = np.linalg.norm(np.einsum("pi,kpic->kpc", pm.bary, moved[:, pm.corners]), axis=-1)
    return 1.0 / (1.0 + (d / EXPRESSION_SCALE) ** 2)


def detector_focal(height: float) -> float:
    """The focal length (pixels) of the Face Landmarker's assumed camera for a frame ``height`` pixels high."""
    return height / 2 / np.tan(np.deg2rad(MEDIAPIPE_VFOV_DEG) / 2)


def _start(problem: OpenProblem) -> np.ndarray:
    """The starting point: the mean head, no offset, the given or the detector's focal, linear translations."""
    d, o = problem.data, problem.options
    focal = np.array([o.focal or detector_focal(float(d.height[d.take == i][0])) for i in range(problem.n_takes)])
    pts, _ = problem.points(np.zeros(problem.n), np.zeros(3))
    t = solve_translations(pts, d.observed, focal[d.take], d.centre, problem.pm.weight)
    return np.concatenate([np.zeros(problem.n + 3), np.log(focal), t.ravel()])


def _cost(problem: OpenProblem, x: np.ndarray) -> float:
    return 0.5 * float(np.sum(problem.residuals(x) ** 2))


def lm_step(problem: OpenProblem, x: np.ndarray, damping: float, free: np.ndarray) -> np.ndarray:
    """One damped Gauss-Newton step (Levenberg-Marquardt), the translations eliminated frame by frame (Schur
    complement of the block-arrow normal equations); ``free`` (G,) marks the global parameters that may move."""
    r, a, b = problem.blocks(x)
    n, g = problem.n, problem.n_global
    h_gg = np.einsum("kra,krb->ab", a, a)
    h_gg[:n, :n] += problem.options.prior**2 * np.eye(n)
    grad_g = np.einsum("kra,kr->a", a, r)
    grad_g[:n] += problem.options.prior**2 * x[:n]
    h_gt = np.einsum("kra,krb->kab", a, b)  # (K, G, 3)
    h_tt = np.einsum("kra,krb->kab", b, b)
    grad_t = np.einsum("kra,kr->ka", b, r)
    h_tt = h_tt + damping * (np.einsum("kaa->ka", h_tt)[..., None] * np.eye(3) + 1e-12 * np.eye(3))
    h_gg = h_gg + damping * np.diag(np.diag(h_gg) + 1e-12)
    inv_tt = np.linalg.inv(h_tt)
    schur = h_gg - np.einsum("kab,kbc,kdc->ad", h_gt, inv_tt, h_gt)
    rhs = grad_g - np.einsum("kab,kbc,kc->a", h_gt, inv_tt, grad_t)
    step_g = np.zeros(g)
    idx = np.flatnonzero(free)
    step_g[idx] = np.linalg.solve(schur[np.ix_(idx, idx)], rhs[idx])
    step_t = np.einsum("kab,kb->ka", inv_tt, grad_t - np.einsum("kab,a->kb", h_gt, step_g))
    return x - np.concatenate([step_g, step_t.ravel()])


def _solve(problem: OpenProblem, x0: np.ndarray, iterations: int = 40, tol: float = 1e-6) -> np.ndarray:
    """Levenberg-Marquardt from ``x0`` with the bounds enforced by projection (a coefficient at its bound, or a
    held focal length, is not moved)."""
    lo, hi = problem.bounds(x0)
    g = problem.n_global
    free = np.ones(g, bool)
    if problem.options.focal is not None:  # a known focal length is held
        free[problem.n + 3 :] = False
    x = np.clip(x0, lo, hi)
    cost, damping = _cost(problem, x), 1e-3
    for _ in range(iterations):
        at_bound = ((x[:g] <= lo[:g]) | (x[:g] >= hi[:g])) & free
        trial = np.clip(lm_step(problem, x, damping, free & ~at_bound), lo, hi)
        new = _cost(problem, trial)
        if new < cost:
            done = cost - new < tol * cost
            x, cost, damping = trial, new, max(damping / 3, 1e-7)
            if done:
                break
        else:
            damping *= 4
            if damping > 1e6:
                break
    return x


@dataclass
class OpenFit:
    """An open fit: the identity, the offset rotation (3,) axis-angle, each take's focal length (T,) pixels,
    and the RMS reprojection error (fraction of the face's size) over the fitted frames."""

    identity: Identity
    offset: np.ndarray
    focal: np.ndarray
    error: float
    modes: str = "detector"  # the point model it was fitted with (IdentityOptions.modes)


def open_identity(takes: Sequence[Take], options: IdentityOptions = IdentityOptions(),
                  name: str | None = None) -> OpenFit:  # fmt: skip
    """Fit ICT's identity modes to open ``takes`` (module docstring)."""
    from backend.ict.data import load_ict

    _check_kind(takes, "open")
    pm = point_model(options.n_modes, modes=options.modes)
    rows = sample_rows(takes, options)
    data = frame_data(takes, pm, rows)
    k = len(data.row)
    problem, x = fit_once(pm, data, len(takes), options)
    for _ in range(options.pose_rounds):
        problem, x = fit_once(pm, refined_rotations(problem, x), len(takes), options)
    coeffs, offset, log_f, _ = problem.split(x)
    err = _point_errors(problem, x)
    model = load_ict()
    offsets = np.einsum("n,nvc->vc", coeffs, model.identity_deltas[: len(coeffs)].astype(np.float64))
    rms = float(np.sqrt(np.sum(pm.weight * err**2) / (k * pm.weight.sum())))
    meta = {"method": "bounded regularised least squares of ICT identity modes to the Face Landmarker's points, "
                      "expression and head rotation held; pinhole camera per frame, focal length per take",
            "n_modes": len(coeffs), "modes": options.modes, "pose_rounds": options.pose_rounds,
            "bound": options.bound, "prior": options.prior, "frames": k,
            "points": int(len(pm.points)), "min_confidence": options.min_confidence,
            "offset_deg": np.degrees(offset).round(3).tolist(), "focal_px": np.exp(log_f).round(2).tolist(),
            "rms_error": round(rms, 5), "takes": [str(t.path) for t in takes]}  # fmt: skip
    identity = Identity("open", name or takes[0].clip_name, coeffs.astype(np.float32), offsets.astype(np.float32),
                        meta)  # fmt: skip
    return OpenFit(identity, offset, np.exp(log_f), rms, options.modes)


def fit_once(pm: PointModel, data: FrameData, n_takes: int, options: IdentityOptions) -> tuple[OpenProblem, np.ndarray]:
    """One fit with the frames' rotations held: from the mean head, then again with Huber weights."""
    k = len(data.row)
    scale = float(np.sqrt(EFFECTIVE_POINTS / (k * pm.weight.sum())) / SIGMA)
    problem = OpenProblem(pm, data, n_takes, options, scale, np.ones((k, len(pm.points))),
                          expression_trust(pm, data.values))  # fmt: skip
    x = _solve(problem, _start(problem))
    err = _point_errors(problem, x)  # (K, P) fraction of face size
    problem.robust = np.minimum(1.0, HUBER * SIGMA / np.maximum(err, 1e-12))
    return problem, _solve(problem, x)


def refined_rotations(problem: OpenProblem, x: np.ndarray) -> FrameData:
    """The frames with their head rotations refined to the fit's identity, offset and focal lengths
    (:func:`refine_poses`): the detector's rotations are estimates made for its own 63-degree camera and its own
    face, and a fit that holds them takes their errors for the face's shape and the lens."""
    from dataclasses import replace

    coeffs, offset, log_f, t = problem.split(x)
    weight = problem.pm.weight[None] * problem.expression
    head, _ = refine_poses(problem.pm, problem.data, coeffs, problem.head(offset), t,
                           np.exp(log_f)[problem.data.take], weight)  # fmt: skip
    return replace(problem.data, rotation=head @ axis_angle_to_matrix(offset))


def _point_errors(problem: OpenProblem, x: np.ndarray) -> np.ndarray:
    """Reprojection errors (K, P) as fractions of each frame's face size."""
    coeffs, offset, log_f, t = problem.split(x)
    pts, _ = problem.points(coeffs, offset)
    proj = project(pts + t[:, None], np.exp(log_f)[problem.data.take], problem.data.centre)
    return np.linalg.norm(proj - problem.data.observed, axis=-1) / problem.data.size[:, None]


# ---------------------------------------------------------------------------------------------- evaluation
def landmark_error(offsets: np.ndarray, truth: np.ndarray) -> float:
    """How far an identity's 68 landmarks (ICT's landmark vertices on the rest head, no expression) lie from the
    true identity's, as a fraction of the face's size: RMS distance after the best similarity alignment (the
    scale of a face seen by one camera is not observable), over the diagonal of the true landmarks' box seen from
    the front (x, y). offsets, truth: (V, 3) identity offsets."""
    from backend.ict.data import load_ict

    model = load_ict()
    ids = model.landmark_indices
    a = model.vertices[ids] + np.asarray(offsets, np.float64)[ids]
    b = model.vertices[ids] + np.asarray(truth, np.float64)[ids]
    ca, cb = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(ca.T @ cb)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    scale = (s * [1.0, 1.0, d]).sum() / (ca**2).sum()
    aligned = scale * ca @ r + b.mean(0)
    rms = float(np.sqrt(((aligned - b) ** 2).sum(1).mean()))
    return rms / float(np.linalg.norm(b[:, :2].max(0) - b[:, :2].min(0)))


# ---------------------------------------------------------------------------------------------- cameras
@dataclass
class OpenCameras:
    """The fitted camera of each chosen row of one open take: rows (K,), the rig's head rotations (K, 3)
    axis-angle (the take's times the fit's offset), translations (K, 3) metres, shape values (K, nS), the focal
    length (pixels) and the principal point (2,)."""

    rows: np.ndarray
    head: np.ndarray
    translation: np.ndarray
    values: np.ndarray
    focal: float
    centre: np.ndarray


def refine_poses(pm: PointModel, data: FrameData, coefficients: np.ndarray, head: np.ndarray, t: np.ndarray,
                 focal: np.ndarray, weight: np.ndarray,
                 iterations: int = 6) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per frame, a small rotation ``d`` (left-multiplied: camera frame) of the head (K, 3, 3) and the
    translation (K, 3) that best place the identity's points on the frame's detections (Gauss-Newton, the
    rotation's columns by finite differences, a prior of :data:`POSE_SIGMA_DEG` on d: the detector's rotation is
    good to a few degrees). Returns the refined (heads, translations)."""
    k = len(head)
    prior = np.diag([1.0 / np.deg2rad(POSE_SIGMA_DEG) ** 2] * 3 + [0.0] * 3)
    sw = np.sqrt(weight)[..., None] / data.size[:, None, None] / SIGMA  # (K, P, 1)

    def place(h: np.ndarray, tt: np.ndarray) -> np.ndarray:
        linear, trans = skinning(pm, data.values, h)
        return posed_points(pm, linear, trans, data.values, coefficients) + tt[:, None]

    delta = np.zeros((k, 3))
    for _ in range(iterations):
        h = axis_angle_to_matrix(delta) @ head
        x = place(h, t)
        proj = project(x, focal, data.centre)
        r = ((proj - data.observed) * sw).reshape(k, -1)
        jt = (projection_jacobian(x, focal) * sw[..., None]).reshape(k, -1, 3)
        jr = np.zeros((k, r.shape[1], 3))
        for a in range(3):
            step = np.zeros(3)
            step[a] = FD_STEP
            moved = project(place(axis_angle_to_matrix(step) @ h, t), focal, data.centre)
            jr[..., a] = ((moved - proj) * sw).reshape(k, -1) / FD_STEP
        j = np.concatenate([jr, jt], -1)  # (K, 2P, 6)
        lhs = np.einsum("kra,krb->kab", j, j) + prior + 1e-9 * np.eye(6)
        rhs = np.einsum("kra,kr->ka", j, r) + np.concatenate([prior[0, 0] * delta, np.zeros((k, 3))], 1)
        step6 = np.linalg.solve(lhs, rhs)
        delta, t = delta - step6[:, :3], t - step6[:, 3:]
    return axis_angle_to_matrix(delta) @ head, t


def open_cameras(take: Take, fit: OpenFit, take_index: int = 0, rows: np.ndarray | None = None,
                 options: IdentityOptions = IdentityOptions()) -> OpenCameras:  # fmt: skip
    """Each confident row's camera (default: all of them) with the fitted identity, offset and focal length
    held: the translation that best places the identity's points on the row's detections, then the row's head
    rotation and translation refined together (:func:`refine_poses`), so that the mesh lies on the footage for
    the texture."""
    from scipy.spatial.transform import Rotation

    pm = point_model(len(fit.identity.coefficients), modes=fit.modes)
    rows = np.flatnonzero(confident_rows(take, options.min_confidence)) if rows is None else np.asarray(rows)
    data = frame_data([take], pm, [rows])
    focal = np.full(len(rows), float(fit.focal[take_index]))
    coeffs = fit.identity.coefficients.astype(np.float64)
    head = data.rotation @ axis_angle_to_matrix(fit.offset).T
    linear, trans = skinning(pm, data.values, head)
    pts = posed_points(pm, linear, trans, data.values, coeffs)
    weight = pm.weight[None] * expression_trust(pm, data.values)
    t = np.stack([solve_translations(pts[i : i + 1], data.observed[i : i + 1], focal[i : i + 1],
                                     data.centre[i : i + 1], weight[i])
                  for i in range(len(rows))]).reshape(-1, 3)  # fmt: skip
    head, t = refine_poses(pm, data, coeffs, head, t, focal, weight)
    return OpenCameras(rows, Rotation.from_matrix(head).as_rotvec().reshape(-1, 3), t, data.values,
                       float(fit.focal[take_index]), frame_centre(take)[0])  # fmt: skip


# ---------------------------------------------------------------------------------------------- the file
def write_identity(path: str | os.PathLike, identity: Identity, head: str) -> Path:
    """The identity file (docs/formats.md "Identity file"; atomic): coefficients, offsets when known, meta."""
    import json

    from backend import __version__
    from emoca_contract.take import IDENTITY_FORMAT, IDENTITY_VERSION

    path = Path(path)
    meta = {"format": IDENTITY_FORMAT, "version": IDENTITY_VERSION, "kind": identity.kind, "name": identity.name,
            "head": head, "backend_version": __version__, **identity.meta}  # fmt: skip
    arrays: dict[str, np.ndarray] = {"coefficients": np.asarray(identity.coefficients, np.float32)}
    if identity.offsets is not None:
        arrays["offsets"] = np.asarray(identity.offsets, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays, meta=np.array(json.dumps(meta, ensure_ascii=False)))
    os.replace(tmp, path)
    return path
