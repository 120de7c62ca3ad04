"""Renders of the ICT head (the open rig, backend.ict.rig) performing known ARKit weights and head poses.

Test clips for the open path and the demo, with ground truth. The head is posed the way the Blender rig poses it
(:func:`backend.ict.rig.pose_rig`: ARKit shapes, the eye and jaw drivers, skinning; the head rotation on the head
bone about the skull base) and drawn with the project's rasterizer (backend.render) in the rig's material colours
(skin, lips, brows, mouth, teeth, sclera, irises and pupils: the Face Landmarker reads blinks, brows and gaze
from those), under a soft key and fill light.

Camera (the take's camera frame): a pinhole at the origin looking down -Z, x right, y up, z towards the viewer;
``focal`` in pixels, the principal point at the frame's centre ((W - 1) / 2, (H - 1) / 2: frame pixels index
pixel centres). A head pose is the head bone's rotation (axis-angle, radians, camera frame) and the translation
(metres) of the rig's origin; by default the head sits :data:`DISTANCE` metres in front of the camera.

Look (:class:`Look`): by default the rig's own paint (what docs/rig.md's response table was measured on).
:data:`PERFORMER`, the demo's performer, differs in two ways, measured with the Face Landmarker (IMAGE mode,
640x480): the brows are painted 4 mm lower than the rig's ``Brows`` group (on the rig's paint the neutral face
reads ``browInnerUp`` 0.46 and ``browOuterUpLeft`` 0.45, i.e. raised brows; 4 mm lower it reads 0.10 and 0.12,
and the brows still rise with the weight: 0.87 and 0.92 at 1.0), and upper lashes line the upper lids (with the
lowered brows alone a full blink of both eyes reads 0.29 / 0.34; with the lashes 0.46 / 0.50). The rig file and
its materials are unchanged. No other tuning: the capture is not adjusted to this head.

Performances (:class:`Move`, :func:`perform`): timed moves (ARKit weights or a head turn, eased in and out) ->
per-frame ARKit weights and head rotations; :data:`DEMO_PERFORMANCE` is ``make demo``'s sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.ict.data import IctModel, load_ict, triangles
from backend.ict.rig import build_open_rig, pose_rig
from backend.render.rasterize import interpolate_face_attributes, rasterize
from backend.render.shading import vertex_normals
from backend.synthetic.clips import VideoWriter
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES

DISTANCE = 0.6  # metres from the camera to the rig's origin
KEY_LIGHT = (-0.35, 0.45, 1.0)  # camera frame: from the upper left, in front
FILL_LIGHT = (0.6, -0.1, 0.8)
AMBIENT, KEY, FILL = 0.38, 0.55, 0.2
BACKGROUND = (0.32, 0.34, 0.36)  # linear RGB


@dataclass(frozen=True)
class Look:
    """How the head is painted for a render: ``brow_drop`` metres, the rig's ``Brows`` group moved down the face
    by this much; ``lash_rings``, upper lashes: the skin within this many rings of edges of each upper lid's
    margin, in the brows' colour (0 = none). ``Look()`` is the rig's own paint."""

    brow_drop: float = 0.0
    lash_rings: int = 0


RIG_LOOK = Look()
PERFORMER = Look(brow_drop=0.004, lash_rings=5)  # the demo's performer (module docstring: why)
LID_MARGIN_RADIUS = 0.03  # metres around an eyeball's centre where the face's open edge is a lid margin


@dataclass(frozen=True)
class IctScene:
    """The rig and what drawing it needs: triangles (T, 3) vertex ids, their material colour (T, 3) linear RGB."""

    rig: dict[str, Any]
    faces: torch.Tensor
    colors: torch.Tensor
    shape_index: np.ndarray  # (S,) the ARKit column of each rig shape


_MODEL: dict[int, tuple[IctModel, dict[str, Any]]] = {}
_SCENE: dict[Look, IctScene] = {}


def ict_model() -> tuple[IctModel, dict[str, Any]]:
    """The ICT head and its open rig (backend.ict.rig.build_open_rig; built once). The rig's vertices and
    polygons are the model's, in the same order."""
    if 0 not in _MODEL:
        model = load_ict()
        _MODEL[0] = (model, build_open_rig(model))
    return _MODEL[0]


def ict_rig() -> dict[str, Any]:
    """The open rig of the ICT head (:func:`ict_model`)."""
    return ict_model()[1]


def moved_group(rig: Mapping[str, Any], group: str, drop: float) -> np.ndarray:
    """Which polygons (F,) bool lie where the polygons of material ``group`` would be if that paint slid
    ``drop`` metres down the face (-y, seen from the front): each polygon takes the group of the front-facing
    polygon nearest (in x, y) to the point ``drop`` above it. Polygons facing away keep their own material."""
    from scipy.spatial import cKDTree

    from backend.ict.rig import poly_centroids

    names = [str(n) for n in rig["material_names"]]
    materials = np.asarray(rig["poly_materials"])
    centroids = poly_centroids(np.asarray(rig["v_template"]), np.asarray(rig["poly_vertices"]),
                               np.asarray(rig["poly_sizes"]))  # fmt: skip
    painted = materials == names.index(group)
    front = np.isin(materials, [names.index(n) for n in ("Skin", group)]) & (centroids[:, 2] > 0.02)
    _, nearest = cKDTree(centroids[front, :2]).query(centroids[front, :2] + [0.0, drop])
    out = painted & ~front
    out[np.flatnonzero(front)] = painted[front][nearest]
    return out


def polygon_edges(poly_vertices: np.ndarray, poly_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every polygon's edges, one per corner: (the corner's polygon (C,), its edge to the next corner (C, 2)
    vertex ids, smaller first)."""
    sizes = np.asarray(poly_sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    poly = np.repeat(np.arange(len(sizes)), sizes)
    corner = np.arange(len(poly))
    following = np.where(corner == (starts + sizes - 1)[poly], starts[poly], corner + 1)
    pv = np.asarray(poly_vertices)
    return poly, np.sort(np.stack([pv[corner], pv[following]], 1), 1)


def upper_lid_margins(model: IctModel) -> np.ndarray:
    """Vertex ids (M,) of both upper lids' margins: the face mesh's open edge around each eyeball (edges of
    one ``M_Face`` polygon only, within :data:`LID_MARGIN_RADIUS` of its centre), above the eye's centre."""
    from backend.ict.rig import eye_centre

    poly, edges = polygon_edges(model.poly_vertices, model.poly_sizes)
    face = (np.asarray(model.materials)[model.poly_materials] == "M_Face")[poly]
    unique, counts = np.unique(edges[face], axis=0, return_counts=True)
    rim = np.unique(unique[counts == 1])
    p = model.vertices[rim]
    out = []
    for side in ("L", "R"):
        c = eye_centre(model, side)
        # above the centre, and half a millimetre below it so that the eye's corners are included
        out.append(rim[(np.linalg.norm(p - c, axis=1) < LID_MARGIN_RADIUS) & (p[:, 1] > c[1] - 0.0005)])
    return np.concatenate(out)


def lash_polygons(model: IctModel, rings: int) -> np.ndarray:
    """Which polygons (F,) bool carry the upper lashes: ``M_Face`` polygons touching the vertices within
    ``rings`` rings of edges (over ``M_Face``) of the upper lid margins."""
    poly, edges = polygon_edges(model.poly_vertices, model.poly_sizes)
    face_poly = np.asarray(model.materials)[model.poly_materials] == "M_Face"
    edges = edges[face_poly[poly]]
    near = np.zeros(len(model.vertices), bool)
    near[upper_lid_margins(model)] = True
    for _ in range(rings):
        step = near[edges[:, 0]] | near[edges[:, 1]]
        near[edges[step].ravel()] = True
    starts = np.concatenate([[0], np.cumsum(model.poly_sizes)[:-1]])
    return face_poly & (np.add.reduceat(near[model.poly_vertices].astype(np.int64), starts) > 0)


def look_colors(model: IctModel, rig: Mapping[str, Any], look: Look) -> np.ndarray:
    """Each polygon's linear RGB (F, 3) under ``look``: the rig's material colours, the brows moved, the lashes
    painted in the brows' colour over the skin."""
    names = [str(n) for n in rig["material_names"]]
    colors = np.asarray(rig["material_colors"])[:, :3]
    materials = np.asarray(rig["poly_materials"]).copy()
    brows, skin = names.index("Brows"), names.index("Skin")
    if look.brow_drop:
        moved = moved_group(rig, "Brows", look.brow_drop)
        materials[(materials == brows) & ~moved] = skin
        materials[moved] = brows
    if look.lash_rings:
        materials[lash_polygons(model, look.lash_rings) & (materials == skin)] = brows
    return colors[materials]


def ict_scene(look: Look = RIG_LOOK) -> IctScene:
    """The ICT rig ready to draw under ``look`` (cached per look)."""
    if look not in _SCENE:
        model, rig = ict_model()
        corners = triangles(rig["poly_sizes"])
        poly = np.repeat(np.arange(len(rig["poly_sizes"])), np.asarray(rig["poly_sizes"]) - 2)
        _SCENE[look] = IctScene(
            rig=rig,
            faces=torch.as_tensor(np.asarray(rig["poly_vertices"])[corners]).long(),
            colors=torch.as_tensor(look_colors(model, rig, look)[poly], dtype=torch.float32),
            shape_index=np.array([ARKIT_INDEX[str(n)] for n in rig["shape_names"]]),
        )
    return _SCENE[look]


def arkit_matrix(weights: Mapping[str, Sequence[float] | float], n_frames: int) -> np.ndarray:
    """ARKit weights by channel name -> (N, 52) in ARKit order (channels not named are 0)."""
    out = np.zeros((n_frames, len(ARKIT_NAMES)), np.float32)
    for name, value in weights.items():
        out[:, ARKIT_INDEX[name]] = value
    return out


@dataclass(frozen=True)
class Move:
    """One move of a performance: from ``start`` for ``length`` seconds, ARKit ``weights`` (channel, weight)
    and/or a head ``turn`` (degrees about the camera frame's x, y, z) eased in, held for the middle ``hold`` of
    the length, eased out (:func:`envelope`)."""

    name: str
    start: float
    length: float
    weights: tuple[tuple[str, float], ...] = ()
    turn: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hold: float = 0.4


# make demo's sequence (7.1 s). Channels and amounts are ones the Face Landmarker reads on this head (docs/rig.md,
# "How well each channel reads back"): jaw open, a smile of both sides, a blink of both eyes, the inner and outer
# brows raised together; then a head turn either way and a nod, each with an expression on top (the capture must
# tell the head's turn from the face's movement). The face rests between moves. Amounts: jawOpen 0.7 (the
# detector saturates near 0.72 at 1.0), the smile 0.8, the blink and the brows 1.0 (on PERFORMER the brows read
# in proportion up to 1.0; a blink closes the eyes).
SMILE = (("mouthSmileLeft", 0.8), ("mouthSmileRight", 0.8))
BLINK = (("eyeBlinkLeft", 1.0), ("eyeBlinkRight", 1.0))
BROWS_UP = (("browInnerUp", 1.0), ("browOuterUpLeft", 1.0), ("browOuterUpRight", 1.0))
DEMO_PERFORMANCE: tuple[Move, ...] = (
    Move("jaw open", 0.3, 1.0, (("jawOpen", 0.7),)),
    Move("smile", 1.5, 1.0, SMILE),
    Move("blink", 2.7, 0.4, BLINK, hold=0.5),
    Move("brow raise", 3.3, 1.0, BROWS_UP),
    Move("head turn left, smiling", 4.5, 0.8, SMILE, turn=(0.0, 20.0, 0.0), hold=0.25),
    Move("head turn right, brows raised", 5.3, 0.8, BROWS_UP, turn=(0.0, -20.0, 0.0), hold=0.25),
    Move("nod, jaw half open", 6.1, 0.8, (("jawOpen", 0.5),), turn=(12.0, 0.0, 0.0), hold=0.25),
)
DEMO_TAIL = 0.2  # seconds of rest after the last move


def envelope(t: np.ndarray, move: Move) -> np.ndarray:
    """A move's weight over times ``t`` (N,) seconds: 0 outside it, a raised-cosine ease in and out, 1 over
    the held middle."""
    ramp = max(move.length * (1.0 - move.hold) / 2.0, 1e-9)
    u = np.clip(np.minimum(t - move.start, move.start + move.length - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def performance_length(moves: Sequence[Move], tail: float = DEMO_TAIL) -> float:
    """Seconds from 0 to the end of the last move plus ``tail``."""
    return max(m.start + m.length for m in moves) + tail


def perform(moves: Sequence[Move], fps: float, tail: float = DEMO_TAIL) -> tuple[np.ndarray, np.ndarray]:
    """Timed moves -> per-frame ARKit weights (N, 52) in ARKit order and head rotations (N, 3) axis-angle,
    radians, camera frame, at ``fps`` (N = ceil(length * fps) frames, frame i at i / fps seconds). Overlapping
    moves add (weights clipped to [0, 1])."""
    n = math.ceil(performance_length(moves, tail) * fps)
    t = np.arange(n) / fps
    arkit = np.zeros((n, len(ARKIT_NAMES)), np.float32)
    turn = np.zeros((n, 3), np.float32)
    for m in moves:
        e = envelope(t, m)
        for name, w in m.weights:
            arkit[:, ARKIT_INDEX[name]] += w * e
        turn += np.deg2rad(np.asarray(m.turn))[None] * e[:, None]
    return np.clip(arkit, 0.0, 1.0), turn


def driven_channels(moves: Sequence[Move]) -> list[str]:
    """The ARKit channels a performance drives, in ARKit order."""
    used = {name for m in moves for name, _ in m.weights}
    return [n for n in ARKIT_NAMES if n in used]


def to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear RGB in [0, 1] -> sRGB-encoded values (the image a camera writes)."""
    c = linear.clamp(0, 1)
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.pow(1 / 2.4) - 0.055)


def project(verts: torch.Tensor, size: tuple[int, int], focal: float) -> torch.Tensor:
    """Camera-frame vertices (K, V, 3) -> the rasterizer's coordinates (x right, y down in [-1, 1] across the
    frame, z = distance: smaller is nearer)."""
    w, h = size
    depth = -verts[..., 2]
    px = (w - 1) / 2 + focal * verts[..., 0] / depth
    py = (h - 1) / 2 - focal * verts[..., 1] / depth
    return torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1, depth], -1)


def facing_camera(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Which triangles (T,) face the camera in at least one frame of ``verts`` (K, V, 3): the ones worth drawing
    (the mesh is closed where it can be seen and wound counter-clockwise seen from outside)."""
    a, b, c = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    return ((torch.cross(b - a, c - a, dim=-1) * -a).sum(-1) > 0).any(0)


def shade(normals: torch.Tensor, albedo: torch.Tensor) -> torch.Tensor:
    """Soft Lambert lighting (ambient, key, fill) of unit normals (..., 3) and linear albedo (..., 3)."""
    out = torch.full_like(albedo[..., :1], AMBIENT)
    for direction, strength in ((KEY_LIGHT, KEY), (FILL_LIGHT, FILL)):
        d = torch.tensor(direction, dtype=normals.dtype)
        out = out + strength * (normals @ (d / d.norm())).clamp(min=0)[..., None]
    return albedo * out


def render_frames(
    arkit: np.ndarray,
    head_rotation: np.ndarray | None = None,
    translation: np.ndarray | None = None,
    size: tuple[int, int] = (512, 512),
    focal: float | None = None,
    look: Look = RIG_LOOK,
) -> np.ndarray:
    """Draw the ICT head: ARKit weights (K, 52) in ARKit order, head rotation (K, 3) axis-angle, translation
    (K, 3) metres (default: :data:`DISTANCE` in front), size (W, H), focal length in pixels (default: 1.6 H, a
    portrait lens), painted as ``look``. Returns sRGB images (K, H, W, 3) uint8."""
    scene = ict_scene(look)
    arkit = np.atleast_2d(np.asarray(arkit, np.float64))
    k = len(arkit)
    w, h = size
    focal = float(focal) if focal is not None else 1.6 * h
    rot = np.zeros((k, 3)) if head_rotation is None else np.asarray(head_rotation, np.float64).reshape(k, 3)
    t = np.tile([0.0, 0.0, -DISTANCE], (k, 1)) if translation is None else np.asarray(translation).reshape(k, 3)
    verts = torch.as_tensor(pose_rig(scene.rig, arkit[:, scene.shape_index], rot) + t[:, None], dtype=torch.float32)
    normals = vertex_normals(verts, scene.faces)
    keep = facing_camera(verts, scene.faces)
    faces = scene.faces[keep]
    frag = rasterize(project(verts, size, focal), faces, (h, w))
    attrs = torch.cat([normals[:, faces], scene.colors[keep][None, :, None].expand(k, -1, 3, -1)], -1)
    vals = interpolate_face_attributes(frag.face_index, frag.bary_coords, attrs)
    n = vals[..., :3] / vals[..., :3].norm(dim=-1, keepdim=True).clamp(min=1e-8)
    color = shade(n, vals[..., 3:6])
    image = torch.where(frag.mask[..., None], color, torch.tensor(BACKGROUND))
    return (to_srgb(image) * 255 + 0.5).to(torch.uint8).numpy()


def landmarks_2d(
    arkit: np.ndarray, head_rotation: np.ndarray, translation: np.ndarray, size: tuple[int, int], focal: float
) -> np.ndarray:
    """The rig's 68 landmark vertices in frame pixels (K, 68, 2) for the same pose as :func:`render_frames`."""
    scene = ict_scene()
    verts = pose_rig(scene.rig, np.atleast_2d(arkit)[:, scene.shape_index], head_rotation)
    p = verts[:, np.asarray(scene.rig["landmark_indices"])] + translation[:, None]
    w, h = size
    return np.stack([(w - 1) / 2 + focal * p[..., 0] / -p[..., 2], (h - 1) / 2 - focal * p[..., 1] / -p[..., 2]], -1)


def write_ict_clip(
    path: str | Path,
    arkit: np.ndarray,
    head_rotation: np.ndarray | None = None,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 480),
    translation: np.ndarray | None = None,
    crf: int = 16,
    chunk: int = 4,
    look: Look = RIG_LOOK,
) -> dict[str, Any]:
    """Encode an H.264 clip of the ICT head performing ``arkit`` (N, 52) with ``head_rotation`` (N, 3), painted
    as ``look``, and return the ground truth: path, fps, size, focal, n_frames, arkit, global_pose, translation
    (N, 3) metres, landmarks2d (N, 68, 2) frame pixels, head (the model's name)."""
    path = Path(path)
    arkit = np.atleast_2d(np.asarray(arkit, np.float32))
    n = len(arkit)
    rot = np.zeros((n, 3), np.float32) if head_rotation is None else np.asarray(head_rotation, np.float32)
    t = np.tile(np.array([0.0, 0.0, -DISTANCE], np.float32), (n, 1)) if translation is None else np.asarray(translation)
    w, h = size
    focal = 1.6 * h
    with VideoWriter(path, size, fps, crf=crf) as writer:
        for s in range(0, n, chunk):
            sl = slice(s, min(s + chunk, n))
            for img in render_frames(arkit[sl], rot[sl], t[sl], size, focal, look):
                writer.write(img)
    return {
        "path": path,
        "fps": float(fps),
        "size": (w, h),
        "focal": focal,
        "n_frames": n,
        "arkit": arkit,
        "global_pose": rot,
        "translation": np.asarray(t, np.float32),
        "landmarks2d": landmarks_2d(arkit, rot, t, size, focal).astype(np.float32),
        "head": ict_rig()["meta"]["model"],
    }


# ---------------------------------------------------------------------------------------------- read back
def detect(images: np.ndarray) -> dict[str, np.ndarray]:
    """Read sRGB images (K, H, W, 3) back with the capture's detector (backend.footage.detect's Face Landmarker,
    IMAGE mode): the 52 ARKit scores (K, 52) in ARKit order and the face transformation's rotation part (K, 3, 3)
    (camera frame); rows without a face are NaN."""
    from backend.footage.detect import MediaPipeDetector

    scores = np.full((len(images), len(ARKIT_NAMES)), np.nan, np.float32)
    rotation = np.full((len(images), 3, 3), np.nan)
    with MediaPipeDetector(max_faces=1, tracking=False) as detector:
        for i, img in enumerate(images):
            found = detector.detect(np.ascontiguousarray(img))
            if found and found[0].arkit is not None and found[0].transform is not None:
                scores[i] = found[0].arkit
                rotation[i] = found[0].transform[:3, :3]
    return {"arkit": scores, "rotation": rotation}


def mirror_name(name: str) -> str | None:
    """The other side's channel (``mouthSmileLeft`` -> ``mouthSmileRight``), None for a central one."""
    for a, b in (("Left", "Right"), ("Right", "Left")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return None


def channel_response(
    channels: Sequence[str] | None = None,
    weights: Sequence[float] = (0.0, 0.5, 1.0),
    size: tuple[int, int] = (512, 512),
) -> dict[str, dict[str, list[float]]]:
    """Each channel rendered alone at each weight and read back by the Face Landmarker: channel ->
    {"weight": [...], "same": [the detector's score of that channel], "mirror": [its other side's score]}
    (mirror empty for central channels). A channel ``a+b`` drives both at the weight and reads their mean (a
    blink of both eyes, a smile of both sides). Default: every channel the rig has, then both eyes' blink and
    both sides' smile."""
    scene = ict_scene()
    both = ["eyeBlinkLeft+eyeBlinkRight", "mouthSmileLeft+mouthSmileRight"]
    channels = list(channels or [str(n) for n in scene.rig["shape_names"]] + both)
    weights = [float(w) for w in weights]
    arkit = np.concatenate([arkit_matrix(dict.fromkeys(name.split("+"), w), 1) for name in channels for w in weights])
    scores = np.concatenate([detect(render_frames(arkit[i : i + 8], size=size))["arkit"]
                             for i in range(0, len(arkit), 8)])  # fmt: skip
    out: dict[str, dict[str, list[float]]] = {}
    for c, name in enumerate(channels):
        rows = scores[c * len(weights) : (c + 1) * len(weights)]
        parts = name.split("+")
        other = mirror_name(name) if len(parts) == 1 else None
        out[name] = {
            "weight": weights,
            "same": [float(v) for v in rows[:, [ARKIT_INDEX[n] for n in parts]].mean(1)],
            "mirror": [float(v) for v in rows[:, ARKIT_INDEX[other]]] if other else [],
        }
    return out


def response_table(response: Mapping[str, Mapping[str, list[float]]]) -> str:
    """A markdown table of :func:`channel_response`: detected score at each weight (and the mirror channel's)."""
    weights = next(iter(response.values()))["weight"]
    head = "| channel | " + " | ".join(f"at {w:g}" for w in weights) + " | other side at 1 |"
    lines = [head, "|---" * (len(weights) + 2) + "|"]
    for name, r in response.items():
        mirror = f"{r['mirror'][-1]:.2f}" if r["mirror"] else ""
        lines.append(f"| `{name}` | " + " | ".join(f"{v:.2f}" for v in r["same"]) + f" | {mirror} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m backend.synthetic.ict_clip: print the response table (docs/rig.md)
    print(response_table(channel_response()))
