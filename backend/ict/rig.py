"""The ICT head's open rig (docs/formats.md "Open rig", docs/rig.md): shapes, bones, skinning, materials, drivers.

Conventions: metres, +Y up, the face looks along +Z, +X is the character's left. ICT's ``_L``/``_R`` shapes move
the character's left/right side, which is ARKit's ``...Left``/``...Right`` (the performer's own side): ICT's
``mouthSmile_L`` becomes ``mouthSmileLeft`` (tests/ict/test_sides.py renders each side and checks which of the Face
Landmarker's channels answers). ICT splits ``browInnerUp`` and ``cheekPuff`` into halves; one ARKit channel drives
both, so the rig's shape is their sum. ARKit's ``tongueOut`` has no ICT shape (``meta.unsupported``).

Bones (identity rest orientation, head at the joint, like the FLAME rig, so a pose rotation is a model-space
rotation about the joint): ``root`` (neck base; a take's head translation), ``neck`` (lower neck), ``head`` (skull
base; a take's head rotation), ``jaw`` (the jaw joint; no skin: it follows the jaw shapes through drivers, so props
can be parented to it), ``eye_L``/``eye_R`` (eyeball centres; they skin the eyeballs and turn with the eye-look
shapes through drivers, since ICT's eye-look shapes move the lids only). A driver is linear in shape values:
``bone.channel[index] = sum(coefficient * shape value)`` (radians, Euler XYZ, or metres); :func:`pose_rig`
evaluates shapes, drivers and skinning the way Blender does, for the renderer and the tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from backend import __version__
from backend.ict.data import MODEL_NAME, IctModel
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.rig import RIG_FORMAT, RIG_VERSION, validate_rig
from emoca_contract.rotations import axis_angle_to_matrix

SIDES = {"_L": "Left", "_R": "Right"}  # ICT suffix -> ARKit side (checked by rendering and re-detecting)
JOINT_NAMES = ("root", "neck", "head", "jaw", "eye_L", "eye_R")
PARENTS = (-1, 0, 1, 2, 2, 2)
DEFORM = ("neck", "head", "eye_L", "eye_R")  # the bones with skin; root and jaw carry nothing
HEAD_BONE, TRANSLATION_BONE = "head", "root"
# Eye turn at full eye-look weight (radians); ARKit gives no angle, these match the eye-look lid shapes.
EYE_TURN = {"in": np.deg2rad(25.0), "out": np.deg2rad(25.0), "up": np.deg2rad(20.0), "down": np.deg2rad(25.0)}
# Material groups: name -> linear RGBA base colour (Blender's Principled base colour; sRGB values in comments).
MATERIALS: dict[str, tuple[float, float, float, float]] = {
    "Skin": (0.694, 0.402, 0.305, 1.0),  # sRGB (218, 170, 150)
    "Lips": (0.456, 0.152, 0.141, 1.0),  # sRGB (180, 108, 104)
    "Brows": (0.045, 0.030, 0.022, 1.0),  # sRGB (60, 49, 42)
    "Mouth": (0.133, 0.030, 0.033, 1.0),  # sRGB (102, 49, 51): the mouth socket
    "Gums": (0.305, 0.051, 0.063, 1.0),  # sRGB (150, 64, 71): gums and tongue
    "Teeth": (0.831, 0.787, 0.651, 1.0),  # sRGB (235, 229, 211)
    "Sclera": (0.871, 0.846, 0.807, 1.0),  # sRGB (240, 237, 232)
    "Iris": (0.102, 0.051, 0.024, 1.0),  # sRGB (90, 64, 43)
    "Pupil": (0.004, 0.004, 0.004, 1.0),  # sRGB (13, 13, 13)
}
IRIS_DEG, PUPIL_DEG = 20.0, 7.0  # angular radii about the eye's axis, seen from the eyeball centre
# iBUG-68 landmark ids: brows, outer lip contour.
BROWS = ((17, 18, 19, 20, 21), (22, 23, 24, 25, 26))
OUTER_LIP = tuple(range(48, 60))


# ---------------------------------------------------------------------------------------------- shapes
def arkit_name(ict_name: str) -> str:
    """ICT's expression name -> the ARKit channel it drives: ``mouthSmile_L`` -> ``mouthSmileLeft``, a split
    half ``browInnerUp_R`` -> ``browInnerUp``."""
    for suffix, side in SIDES.items():
        if ict_name.endswith(suffix):
            stem = ict_name[: -len(suffix)]
            return stem if stem in ARKIT_NAMES else stem + side
    return ict_name


def arkit_shapes(model: IctModel) -> tuple[tuple[str, ...], np.ndarray]:
    """The rig's shapes in ARKit order: (names (S,), offsets (S, V, 3) float32), split halves summed."""
    sums: dict[str, np.ndarray] = {}
    for name, delta in zip(model.expression_names, model.expression_deltas):
        target = arkit_name(name)
        if target not in ARKIT_NAMES:
            raise ValueError(f"ICT expression {name!r} maps to {target!r}, not an ARKit channel")
        sums[target] = sums[target] + delta if target in sums else delta.copy()
    names = tuple(n for n in ARKIT_NAMES if n in sums)
    return names, np.stack([sums[n] for n in names]).astype(np.float32)


# ---------------------------------------------------------------------------------------------- joints
def sphere_fit(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points (N, 3): (centre (3,), radius)."""
    a = np.c_[2 * points, np.ones(len(points))]
    x = np.linalg.lstsq(a, (points**2).sum(1), rcond=None)[0]
    return x[:3], float(np.sqrt(x[3] + x[:3] @ x[:3]))


def eye_centre(model: IctModel, side: str) -> np.ndarray:
    """The eyeball's centre (3,): a sphere through the eyeball behind its cornea bulge."""
    p = model.vertices[model.region(f"eyeball_{side}")]
    return sphere_fit(p[p[:, 2] < p[:, 2].max() - 0.006])[0]


def rigid_fit(rest: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation R (3, 3) and translation t (3,) that best map rest (N, 3) onto moved (Kabsch)."""
    cr, cm = rest.mean(0), moved.mean(0)
    u, _, vt = np.linalg.svd((rest - cr).T @ (moved - cm))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cm - r @ cr


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of a rotation matrix (angles below pi)."""
    angle = float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    if angle < 1e-9:
        return np.zeros(3)
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    return w * angle / (2 * np.sin(angle))


def lower_teeth(model: IctModel) -> np.ndarray:
    """The teeth and gum vertices ``jawOpen`` moves (the lower set)."""
    ids = np.concatenate([model.region("teeth"), model.region("gums_tongue")])
    return ids[np.abs(model.expression("jawOpen")[ids]).max(1) > 1e-3]


def jaw_motion(model: IctModel, shape: str, pivot: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The lower teeth's rigid motion under one jaw shape at weight 1: (rotation vector (3,), translation (3,)
    about ``pivot``; default pivot: the point the motion turns about, translation 0 along the turn)."""
    ids = lower_teeth(model)
    rest = model.vertices[ids]
    r, t = rigid_fit(rest, rest + model.expression(shape)[ids])
    if pivot is None:  # the point p with R (v - p) + p = R v + t, least squares (minimum norm along the axis)
        pivot = np.linalg.lstsq(np.eye(3) - r, t, rcond=None)[0]
    return rotation_vector(r), t - (np.eye(3) - r) @ pivot


def jaw_pivot(model: IctModel) -> np.ndarray:
    """The jaw joint (3,): the axis ``jawOpen`` turns the lower teeth about, at x = 0."""
    ids = lower_teeth(model)
    rest = model.vertices[ids]
    r, t = rigid_fit(rest, rest + model.expression("jawOpen")[ids])
    p = np.linalg.lstsq(np.eye(3) - r, t, rcond=None)[0]
    return np.array([0.0, p[1], p[2]])


def neck_centre(model: IctModel, y: float, band: float = 0.005) -> np.ndarray:
    """The centre (3,) of the neck's cross-section at height ``y`` (skin vertices within ``band``)."""
    skin = np.concatenate([model.region("face"), model.region("head_neck")])
    p = model.vertices[skin]
    near = p[np.abs(p[:, 1] - y) < band]
    return np.array([0.0, y, 0.5 * (near[:, 2].min() + near[:, 2].max())])


SKULL_BASE = np.array([0.0, -0.03, -0.033])  # the head's pivot from the jaw joint: lower and behind it


def joint_positions(model: IctModel) -> np.ndarray:
    """The joints (J, 3) in :data:`JOINT_NAMES` order: the jaw where ``jawOpen`` turns the lower teeth, the head
    at the skull base behind and below it, the neck and root at the centre of the neck 7 and 11 cm lower (where
    the cross-section is all neck), the eyes at the eyeball centres."""
    jaw = jaw_pivot(model)
    head = jaw + SKULL_BASE
    return np.stack([
        neck_centre(model, head[1] - 0.11),
        neck_centre(model, head[1] - 0.07),
        head,
        jaw,
        eye_centre(model, "L"),
        eye_centre(model, "R"),
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------- skinning
def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def skin_weights(model: IctModel, joints: np.ndarray) -> np.ndarray:
    """Skinning weights (V, J), each row summing to 1: the eyeballs on their eye bones, everything else blended
    from ``neck`` to ``head`` across the neck, along a boundary that falls from the skull base to under the chin."""
    v = model.vertices
    head = joints[JOINT_NAMES.index("head")]
    neck = joints[JOINT_NAMES.index("neck")]
    # the head/neck boundary: through the head joint, lower towards the front (the jaw line under the chin)
    boundary = head[1] - 0.5 * (v[:, 2] - head[2])
    t = smoothstep((v[:, 1] - (boundary - 0.04)) / 0.04)
    t = np.where(v[:, 1] < neck[1], 0.0, t)
    w = np.zeros((len(v), len(JOINT_NAMES)), np.float32)
    w[:, JOINT_NAMES.index("head")] = t
    w[:, JOINT_NAMES.index("neck")] = 1.0 - t
    for side in ("L", "R"):
        ids = model.region(f"eyeball_{side}")
        w[ids] = 0.0
        w[ids, JOINT_NAMES.index(f"eye_{side}")] = 1.0
    return w


# ---------------------------------------------------------------------------------------------- drivers
def _driver(bone: str, channel: str, index: int, terms: Mapping[str, float]) -> dict[str, Any]:
    kept = {k: round(float(c), 6) for k, c in terms.items() if abs(c) > 1e-6}
    return {"bone": bone, "channel": channel, "index": int(index), "terms": kept}


def eye_drivers() -> list[dict[str, Any]]:
    """Each eye's Euler X (up is negative) and Y (towards +X is positive) from its four eye-look shapes."""
    out = []
    for side, sign in (("L", 1.0), ("R", -1.0)):  # the left eye looks out towards +X, the right towards -X
        s = SIDES["_" + side]
        pitch = {f"eyeLookUp{s}": -EYE_TURN["up"], f"eyeLookDown{s}": EYE_TURN["down"]}
        yaw = {f"eyeLookOut{s}": sign * EYE_TURN["out"], f"eyeLookIn{s}": -sign * EYE_TURN["in"]}
        out += [_driver(f"eye_{side}", "rotation_euler", 0, pitch), _driver(f"eye_{side}", "rotation_euler", 1, yaw)]
    return out


def jaw_drivers(model: IctModel, pivot: np.ndarray) -> list[dict[str, Any]]:
    """The jaw bone's Euler rotation and location from the jaw shapes (each shape's rigid lower-teeth motion)."""
    motions = {s: jaw_motion(model, s, pivot) for s in ("jawOpen", "jawLeft", "jawRight", "jawForward")}
    out = []
    for i in range(3):
        out.append(_driver("jaw", "rotation_euler", i, {s: m[0][i] for s, m in motions.items()}))
        out.append(_driver("jaw", "location", i, {s: m[1][i] for s, m in motions.items()}))
    return [d for d in out if d["terms"]]


# ---------------------------------------------------------------------------------------------- materials
def poly_centroids(vertices: np.ndarray, poly_vertices: np.ndarray, poly_sizes: np.ndarray) -> np.ndarray:
    """Mean corner position of each polygon (F, 3)."""
    starts = np.concatenate([[0], np.cumsum(poly_sizes)[:-1]])
    return np.add.reduceat(vertices[poly_vertices], starts, axis=0) / poly_sizes[:, None]


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of 2D points (N, 2) against a closed polygon (K, 2): (N,) bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    a, b = polygon, np.roll(polygon, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    xi = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / np.where(b[:, 1] == a[:, 1], 1e-12, b[:, 1] - a[:, 1])
    return (crosses & (x < xi)).sum(1) % 2 == 1


def polyline_distance(points: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of 2D points (N, 2) to a polyline (K, 2) and the arc position there in [0, 1]: ((N,), (N,))."""
    a, b = line[:-1], line[1:]
    seg = b - a
    lengths = np.linalg.norm(seg, axis=1)
    u = np.clip(((points[:, None] - a) * seg).sum(-1) / (lengths**2), 0.0, 1.0)  # (N, K-1)
    d = np.linalg.norm(points[:, None] - (a + u[..., None] * seg), axis=-1)
    k = d.argmin(1)
    arc = (np.concatenate([[0.0], np.cumsum(lengths)])[k] + u[np.arange(len(points)), k] * lengths[k]) / lengths.sum()
    return d.min(1), arc


def _face_features(model: IctModel, centroids: np.ndarray, face: np.ndarray) -> dict[str, np.ndarray]:
    """Face polygons painted as lips, the mouth's lining and brows, from the 68 landmarks seen from the front."""
    lmk = model.vertices[model.landmark_indices][:, :2]
    xy = centroids[:, :2]
    front = face & (centroids[:, 2] > 0.02)
    lip_z = model.vertices[model.landmark_indices[list(OUTER_LIP)], 2].min()
    mouth = front & inside_polygon(xy, lmk[list(OUTER_LIP)])
    lips = mouth & (centroids[:, 2] > lip_z - 0.004)  # the lips' visible roll; deeper in is the mouth's lining
    brows = np.zeros(len(xy), bool)
    for ids in BROWS:
        line = lmk[sorted(ids, key=lambda i: abs(lmk[i, 0]))] + [0.0, -0.003]  # nose side first; below the points
        d, arc = polyline_distance(xy, line)
        brows |= front & (d < 0.0045 - 0.0022 * arc)  # thick at the nose side, thinning outwards
    return {"Mouth": mouth & ~lips, "Lips": lips, "Brows": brows & ~mouth}


def _eye_features(model: IctModel, centroids: np.ndarray) -> dict[str, np.ndarray]:
    """Sclera polygons near each eye's axis painted as iris and pupil (angles seen from the eyeball centre)."""
    iris = np.zeros(len(centroids), bool)
    pupil = np.zeros(len(centroids), bool)
    for side in ("L", "R"):
        c = eye_centre(model, side)
        ids = model.region(f"eyeball_{side}")
        tip = model.vertices[ids][np.argmax(model.vertices[ids, 2])]
        axis = (tip - c) / np.linalg.norm(tip - c)
        d = centroids - c
        angle = np.degrees(np.arccos(np.clip((d @ axis) / np.linalg.norm(d, axis=1).clip(1e-12), -1, 1)))
        near = np.linalg.norm(d, axis=1) < 0.025
        iris |= near & (angle < IRIS_DEG)
        pupil |= near & (angle < PUPIL_DEG)
    return {"Iris": iris & ~pupil, "Pupil": pupil}


def material_groups(model: IctModel) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each polygon's material (F,) int32 into :data:`MATERIALS` order, and those names."""
    names = tuple(MATERIALS)
    ict = np.asarray(model.materials)[model.poly_materials]
    cen = poly_centroids(model.vertices, model.poly_vertices, model.poly_sizes)
    first = model.poly_vertices[np.concatenate([[0], np.cumsum(model.poly_sizes)[:-1]])]
    start, stop = model.regions["mouth_socket"]
    group = np.full(len(ict), "Skin", dtype=object)
    group[(first >= start) & (first < stop)] = "Mouth"
    group[ict == "M_GumsTongue"] = "Gums"
    group[ict == "M_Teeth"] = "Teeth"
    sclera = np.isin(ict, ["M_ScleraLeft", "M_ScleraRight"])
    group[sclera] = "Sclera"
    group[np.isin(ict, ["M_IrisLeft", "M_IrisRight"])] = "Iris"  # ICT's inner iris shell, under the cornea
    for name, sel in _face_features(model, cen, ict == "M_Face").items():
        group[sel] = name
    for name, sel in _eye_features(model, cen).items():
        group[sel & sclera] = name
    return np.array([names.index(g) for g in group], np.int32), names


# ---------------------------------------------------------------------------------------------- the rig
def build_open_rig(model: IctModel, identity: np.ndarray | None = None) -> dict[str, Any]:
    """The open rig's arrays (docs/formats.md "Open rig") for the ICT head; ``identity`` (N,) coefficients of
    ICT's identity modes, baked as one shape ``identity`` and used for the joints."""
    names, deltas = arkit_shapes(model)
    v = model.vertices
    if identity is not None:
        coeffs = np.asarray(identity, np.float64).ravel()[: len(model.identity_deltas)]
        offsets = np.einsum("n,nvc->vc", coeffs, model.identity_deltas[: len(coeffs)])
        model = replace(model, vertices=v + offsets)
    joints = joint_positions(model)
    poly_materials, material_names = material_groups(model)
    meta = {
        "format": RIG_FORMAT,
        "version": RIG_VERSION,
        "kind": "open",
        "model": MODEL_NAME,
        "name": "ICT",
        "source": model.source,
        "licence": "MIT, ICT-FaceKit (c) 2020 USC Institute for Creative Technologies",
        "units": "m",
        "head_bone": HEAD_BONE,
        "translation_bone": TRANSLATION_BONE,
        "deform_bones": list(DEFORM),
        "drivers": jaw_drivers(model, joints[JOINT_NAMES.index("jaw")]) + eye_drivers(),
        "unsupported": [n for n in ARKIT_NAMES if n not in names],
        "backend_version": __version__,
    }
    rig: dict[str, Any] = {
        "v_template": v.astype(np.float32),
        "poly_vertices": model.poly_vertices.astype(np.int32),
        "poly_sizes": model.poly_sizes.astype(np.int32),
        "uvs": model.uvs.astype(np.float32),
        "poly_uvs": model.poly_uvs.astype(np.int32),
        "poly_materials": poly_materials,
        "material_names": np.array(material_names),
        "material_colors": np.array([MATERIALS[n] for n in material_names], np.float32),
        "shape_names": np.array(names),
        "shape_deltas": deltas,
        "joint_names": np.array(JOINT_NAMES),
        "joints": joints.astype(np.float32),
        "parents": np.array(PARENTS, np.int32),
        "weights": skin_weights(model, joints),
        "landmark_indices": model.landmark_indices.astype(np.int32),
    }
    if identity is not None:
        rig["identity"] = (model.vertices - v).astype(np.float32)
        meta["identity_name"] = "identity"
    rig["meta"] = meta
    return rig


def write_open_rig(path: str | os.PathLike, rig: Mapping[str, Any]) -> Path:
    """Validate and write an open rig file (compressed, atomic: ``PATH.partial`` then rename)."""
    path = Path(path)
    checked = validate_rig(dict(rig), str(path))
    arrays = {k: np.asarray(v) for k, v in checked.items() if k not in ("meta", "source_path")}
    arrays["meta"] = np.array(json.dumps(checked["meta"], ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- evaluation
def euler_xyz(angles: np.ndarray) -> np.ndarray:
    """Blender's Euler XYZ (K, 3) radians -> rotation matrices (K, 3, 3): X first, then Y, then Z."""
    mats = [axis_angle_to_matrix(np.eye(3)[i][None] * angles[:, i : i + 1]) for i in range(3)]
    return mats[2] @ mats[1] @ mats[0]


def driven_channels(rig: Mapping[str, Any], values: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """The driven bone channels for shape values (K, S): (bone, channel) -> (K, 3)."""
    names = [str(n) for n in np.asarray(rig["shape_names"])]
    out: dict[tuple[str, str], np.ndarray] = {}
    for d in rig["meta"]["drivers"]:
        arr = out.setdefault((d["bone"], d["channel"]), np.zeros((len(values), 3)))
        for shape, coeff in d["terms"].items():
            arr[:, d["index"]] += coeff * values[:, names.index(shape)]
    return out


def bone_matrices(rig: Mapping[str, Any], rotations: Mapping[str, np.ndarray],
                  locations: Mapping[str, np.ndarray], k: int) -> np.ndarray:  # fmt: skip
    """Skinning matrices (K, J, 4, 4) of bones with identity rest orientation: local rotation (K, 3, 3) and
    location (K, 3) per bone name (missing: none), parents before children."""
    joints = np.asarray(rig["joints"], np.float64)
    parents = [int(p) for p in np.asarray(rig["parents"])]
    names = [str(n) for n in np.asarray(rig["joint_names"])]
    world = np.zeros((k, len(names), 4, 4))
    for j, name in enumerate(names):
        local = np.tile(np.eye(4), (k, 1, 1))
        local[:, :3, :3] = rotations.get(name, np.eye(3))
        offset = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0.0)
        local[:, :3, 3] = offset + locations.get(name, np.zeros(3))
        world[:, j] = local if parents[j] < 0 else world[:, parents[j]] @ local
    rest_inv = np.tile(np.eye(4), (len(names), 1, 1))
    rest_inv[:, :3, 3] = -joints
    return world @ rest_inv


def pose_rig(rig: Mapping[str, Any], values: np.ndarray, head_rotation: np.ndarray | None = None,
             translation: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Posed vertices (K, V, 3) for shape values (K, S), the head bone's rotation (K, 3) axis-angle and the root's
    location (K, 3): identity, shapes, drivers, then linear blend skinning (what Blender's rig shows)."""
    values = np.atleast_2d(np.asarray(values, np.float64))
    k = len(values)
    base = np.asarray(rig["v_template"], np.float64) + np.asarray(rig.get("identity", 0.0), np.float64)
    shaped = base + np.einsum("ks,svc->kvc", values, np.asarray(rig["shape_deltas"], np.float64))
    rotations: dict[str, np.ndarray] = {}
    locations: dict[str, np.ndarray] = {}
    for (bone, channel), arr in driven_channels(rig, values).items():
        if channel == "rotation_euler":
            rotations[bone] = euler_xyz(arr)
        else:
            locations[bone] = arr
    head = rig["meta"].get("head_bone", HEAD_BONE)
    if head_rotation is not None:
        rotations[head] = axis_angle_to_matrix(np.asarray(head_rotation, np.float64).reshape(k, 3))
    if translation is not None:
        locations[rig["meta"].get("translation_bone", TRANSLATION_BONE)] = np.asarray(translation).reshape(k, 3)
    mats = bone_matrices(rig, rotations, locations, k)  # (K, J, 4, 4)
    w = np.asarray(rig["weights"], np.float64)
    blend = np.einsum("vj,kjab->kvab", w, mats)  # (K, V, 4, 4)
    return np.einsum("kvab,kvb->kva", blend[..., :3, :3], shaped) + blend[..., :3, 3]
