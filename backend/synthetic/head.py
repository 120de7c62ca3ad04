"""A synthetic test head in the FLAME layout (numpy only): NOT FLAME, honestly named so.

Why: every part of the pipeline (layer, rig export, Blender rig, rendering, capture on rendered clips) must be
testable without the licensed FLAME model. The head is built on MediaPipe's 468-point face mesh topology; the
vertex positions and UVs are the 468 landmarks MediaPipe FaceMesh detects on scikit-image's astronaut photo
(public domain, NASA), frontalised and scaled to metres. Textured with that photo, a rendering of the head is
therefore a face MediaPipe detects again. The mesh is baked into ``synthetic_face.npz`` beside this file by
:func:`build_face_asset` (needs mediapipe + cv2, run once by a developer; a test checks it reproduces).

Layout (like FLAME): 5 joints root/neck/jaw/eye_L/eye_R, parents [-1, 0, 1, 1, 1], identity basis 100,
expression basis 50 (the leading ones meaningful, see EXPRESSION_NAMES), posedirs (V, 3, 36), dense
J_regressor (5, V), skinning weights (V, 5). Units: metres, +Y up, the face looks along +Z; coefficients
~N(0, 1..2) give deformations of a few mm to ~1.5 cm.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

from backend.flame.data import PARENTS, FlameData

NAME = "synthetic test head (not FLAME)"
ASSET = "synthetic_face.npz"

N_SHAPE = 100
N_EXP = 50
FACE_WIDTH_M = 0.15  # distance between the face-oval sides (mediapipe 234 <-> 454)

# The meaningful leading expression components (coefficient +1 = the named motion, about 5 mm).
EXPRESSION_NAMES = ("jaw_open", "smile", "brow_raise", "eye_close", "lip_pucker", "frown", "brow_furrow")


# mediapipe indices used to place regions (stable facts of the 468 topology)
_EYE_OUTER_R, _EYE_OUTER_L = 33, 263  # subject's right (image left) and left
_FOREHEAD, _CHIN = 10, 152
_SIDE_R, _SIDE_L = 234, 454
_MOUTH_R, _MOUTH_L = 61, 291
_BROW_R = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
_BROW_L = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
_BROW_INNER = (107, 55, 336, 285)
_LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409)


# ----------------------------------------------------------------------------------------------------- asset
def _asset_path() -> Path:
    return Path(str(resources.files("backend.synthetic").joinpath(ASSET)))


def _load_asset(path: Path | None = None) -> dict[str, np.ndarray]:
    with np.load(path or _asset_path(), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def astronaut_path() -> Path:
    """scikit-image's astronaut photo (public domain), located without importing skimage."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed (its astronaut.png is the synthetic head's texture)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"


def synthetic_texture() -> np.ndarray:
    """The synthetic head's texture: the astronaut photo, (512, 512, 3) RGB uint8 (the UVs index into it)."""
    return _texture().copy()


@functools.lru_cache(maxsize=1)
def _texture() -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(astronaut_path()), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _triangles_from_edges(edges: np.ndarray) -> np.ndarray:
    """Faces of a triangulated surface given only its edges: 3-cliques, minus separating triangles.

    A 3-clique whose three edges are each shared by 3 cliques is not a face (it would make the surface
    non-manifold), so it is dropped.
    """
    from collections import Counter, defaultdict

    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        adj[int(a)].add(int(b))
        adj[int(b)].add(int(a))
    tris = sorted({tuple(sorted((a, b, c))) for a in adj for b in adj[a] for c in adj[a] & adj[b]})
    count = Counter(tuple(sorted(e)) for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))
    keep = [t for t in tris if not all(count[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.asarray(keep, dtype=np.int64)


def _boundary_loops(faces: np.ndarray) -> list[list[int]]:
    from collections import Counter, defaultdict

    count = Counter(tuple(sorted(e)) for f in faces for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])))
    nbr: dict[int, list[int]] = defaultdict(list)
    for (a, b), n in count.items():
        if n == 1:
            nbr[a].append(b)
            nbr[b].append(a)
    loops, seen = [], set()
    for s in sorted(nbr):
        if s in seen:
            continue
        loop, prev, cur = [s], -1, s
        seen.add(s)
        while True:
            nxt = [n for n in nbr[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(loop)
    return loops


def build_face_asset(path: str | Path | None = None) -> Path:
    """Regenerate ``synthetic_face.npz`` (developer tool: needs mediapipe and cv2).

    Runs MediaPipe FaceMesh (static mode) on the astronaut photo; the 468 landmarks become the UVs (as
    OBJ-style coordinates, v up) and, frontalised and scaled to metres, the vertices. The eye and mouth
    holes of the topology are closed by a fan around one added centre vertex each (so the eyes render).
    """
    import mediapipe as mp
    from mediapipe.python.solutions import face_mesh_connections as conn

    image = _texture()
    h, w = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as fm:
        res = fm.process(image)
    if not res.multi_face_landmarks:
        raise RuntimeError("mediapipe found no face on the astronaut photo")
    lm = np.array([[p.x, p.y, p.z] for p in res.multi_face_landmarks[0].landmark], dtype=np.float64)[:468]

    faces = _triangles_from_edges(np.array(sorted(tuple(sorted(e)) for e in conn.FACEMESH_TESSELATION)))
    # model space: pixels -> Y up, Z towards the viewer (mediapipe z grows away from the camera)
    p = np.stack([lm[:, 0] * w, -lm[:, 1] * h, -lm[:, 2] * w], axis=1)
    x_axis = p[_EYE_OUTER_L] - p[_EYE_OUTER_R]
    x_axis /= np.linalg.norm(x_axis)
    y_axis = p[_FOREHEAD] - p[_CHIN]
    y_axis -= x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    rot = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
    p = p @ rot.T
    p *= FACE_WIDTH_M / abs(p[_SIDE_L, 0] - p[_SIDE_R, 0])
    loops = sorted(_boundary_loops(faces), key=len)  # eye, eye, mouth (20), face oval (36)
    oval = loops[-1]
    centre = p[oval].mean(axis=0)
    p -= centre
    uv = np.stack([lm[:, 0], 1.0 - lm[:, 1]], axis=1)

    holes = loops[:-1]
    extra_v, extra_uv, fill = [], [], []
    for k, loop in enumerate(holes):
        c = len(lm) + k
        extra_v.append(p[loop].mean(axis=0))
        extra_uv.append(uv[loop].mean(axis=0))
        fill += [(loop[i], loop[(i + 1) % len(loop)], c) for i in range(len(loop))]
    verts = np.concatenate([p, np.array(extra_v)])
    uvs = np.concatenate([uv, np.array(extra_uv)])
    all_faces = np.concatenate([faces, np.array(fill, dtype=np.int64)])
    # orient every triangle counter-clockwise seen from the front (+Z), as FLAME's faces are
    a, b, c = verts[all_faces[:, 0]], verts[all_faces[:, 1]], verts[all_faces[:, 2]]
    flip = np.cross(b - a, c - a)[:, 2] < 0
    all_faces[flip] = all_faces[flip][:, [0, 2, 1]]
    names, centres = {}, {}
    for k, loop in enumerate(holes):
        name = "mouth" if len(loop) == 20 else ("eye_L" if verts[loop, 0].mean() > 0 else "eye_R")
        names[f"{name}_loop"] = loop
        centres[f"{name}_centre"] = len(lm) + k
    out = Path(path) if path is not None else _asset_path()
    np.savez_compressed(
        out,
        vertices=verts.astype(np.float32),
        faces=all_faces.astype(np.int32),
        n_mesh_faces=np.int32(len(faces)),
        uvs=uvs.astype(np.float32),
        landmarks_px=(lm[:, :2] * [w, h]).astype(np.float32),
        face_oval=np.asarray(oval, np.int32),
        **{k: np.asarray(v, np.int32) for k, v in names.items()},
        **{k: np.int32(v) for k, v in centres.items()},
    )
    return out


# ------------------------------------------------------------------------------------------ field helpers
def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    return e


def _geodesic(verts: np.ndarray, faces: np.ndarray, seeds, iters: int = 200) -> np.ndarray:
    """Approximate geodesic distance (m) from the seed vertices along mesh edges (vectorised Bellman-Ford)."""
    e = _edges(faces)
    length = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1)
    d = np.full(len(verts), np.inf)
    d[list(seeds)] = 0.0
    for _ in range(iters):
        new = d.copy()
        np.minimum.at(new, e[:, 0], d[e[:, 1]] + length)
        np.minimum.at(new, e[:, 1], d[e[:, 0]] + length)
        if np.array_equal(new, d):
            break
        d = new
    return d


def _gauss(d: np.ndarray, radius: float) -> np.ndarray:
    return np.exp(-0.5 * (d / radius) ** 2)


def _random_fields(rng: np.random.Generator, verts: np.ndarray, n: int, amplitude: np.ndarray) -> np.ndarray:
    """n smooth random displacement fields (V, 3, n): sums of Gaussian bumps, max norm = amplitude[k]."""
    out = np.zeros((len(verts), 3, n))
    for k in range(n):
        centres = verts[rng.integers(0, len(verts), size=6)]
        radii = rng.uniform(0.02, 0.05, size=6)
        dirs = rng.normal(size=(6, 3))
        d2 = ((verts[:, None, :] - centres[None]) ** 2).sum(-1)  # (V, 6)
        field = np.exp(-0.5 * d2 / radii**2) @ dirs
        out[:, :, k] = field * (amplitude[k] / np.linalg.norm(field, axis=1).max())
    return out


# --------------------------------------------------------------------------------------------- the head
def _regions(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-vertex weights in [0, 1] of the face regions the rig and the expressions use."""
    v = a["vertices"].astype(np.float64)
    mesh_faces = a["faces"][: int(a["n_mesh_faces"])]  # without the hole fills: paths go round the lips
    mouth = a["mouth_loop"]
    my = v[mouth, 1].mean()
    corner_r, corner_l = v[_MOUTH_R], v[_MOUTH_L]
    # split the inner-lip loop at its two corners (extreme x) into the upper and lower lip
    mx = v[mouth, 0]
    i0, i1 = int(np.argmin(mx)), int(np.argmax(mx))
    lo, hi = sorted((i0, i1))
    chain_a = [int(x) for x in mouth[lo + 1 : hi]]
    chain_b = [int(x) for x in np.concatenate([mouth[hi + 1 :], mouth[:lo]])]
    upper, lower = (chain_a, chain_b) if v[chain_a, 1].mean() > v[chain_b, 1].mean() else (chain_b, chain_a)
    d_up = _geodesic(v, mesh_faces, upper)
    d_low = _geodesic(v, mesh_faces, lower)
    with np.errstate(invalid="ignore"):
        ratio = np.nan_to_num(d_up / np.maximum(d_up + d_low, 1e-9), nan=0.0)  # the hole centres: unreached
    corner_y = 0.5 * (corner_r[1] + corner_l[1])
    jaw = _smoothstep((ratio - 0.45) / 0.15) * _smoothstep((corner_y + 0.012 - v[:, 1]) / 0.02)
    jaw[int(a["mouth_centre"])] = 0.5
    eyes = {}
    for side in ("L", "R"):
        loop = a[f"eye_{side}_loop"]
        c = int(a[f"eye_{side}_centre"])
        w = np.zeros(len(v))
        w[c] = 1.0
        w[loop] = 0.5
        eyes[side] = w
    return {
        "jaw": jaw,
        "eye_L": eyes["L"],
        "eye_R": eyes["R"],
        "mouth_y": np.float64(my),
        "upper_lip": np.asarray(upper),
        "lower_lip": np.asarray(lower),
    }


def _expression_basis(a: dict[str, np.ndarray], reg: dict, rng: np.random.Generator) -> np.ndarray:
    v = a["vertices"].astype(np.float64)
    faces = a["faces"]
    n = len(v)
    basis = np.zeros((n, 3, N_EXP))
    mm = 1e-3
    # 0 jaw_open: lower lip and chin move down and slightly back
    basis[:, :, 0] = reg["jaw"][:, None] * np.array([0.0, -6.0 * mm, -1.5 * mm])
    # 1 smile: mouth corners up and out;  5 frown: corners down
    for idx, sx in ((_MOUTH_L, 1.0), (_MOUTH_R, -1.0)):
        g = _gauss(_geodesic(v, faces, [idx]), 0.012)
        basis[:, :, 1] += g[:, None] * np.array([sx * 3.0 * mm, 4.0 * mm, -1.0 * mm])
        basis[:, :, 5] += g[:, None] * np.array([sx * 0.5 * mm, -4.0 * mm, 0.0])
    # 2 brow_raise: brows and the forehead above the eyes up
    eye_top = max(v[a["eye_L_loop"], 1].max(), v[a["eye_R_loop"], 1].max())
    above = _smoothstep((v[:, 1] - eye_top) / 0.008)
    g_brow = _gauss(_geodesic(v, faces, _BROW_L + _BROW_R), 0.012) * above
    basis[:, :, 2] = g_brow[:, None] * np.array([0.0, 5.0 * mm, 0.5 * mm])
    # 3 eye_close: upper lids down by 40% of the eye opening (coefficient 2 nearly closes the eyes)
    for side in ("L", "R"):
        loop = a[f"eye_{side}_loop"]
        c = int(a[f"eye_{side}_centre"])
        cy = v[loop, 1].mean()
        half_open = 0.5 * (v[loop, 1].max() - v[loop, 1].min())
        upper = [int(i) for i in loop if v[i, 1] > cy] + [c]
        g = _gauss(_geodesic(v, faces, upper), 0.005) * _smoothstep((v[:, 1] - cy + half_open) / half_open)
        g[c] = 0.5
        basis[:, 1, 3] += -0.8 * g * half_open
    # 4 lip_pucker: lips towards the mouth centre and forward
    lips = list(_LIPS_OUTER) + [int(i) for i in a["mouth_loop"]] + [int(a["mouth_centre"])]
    g = _gauss(_geodesic(v, faces, lips), 0.006)
    mouth_c = v[int(a["mouth_centre"])]
    basis[:, 0, 4] = -g * (v[:, 0] - mouth_c[0]) * 0.12
    basis[:, 2, 4] = g * 4.0 * mm
    # 6 brow_furrow: inner brows down and together
    g = _gauss(_geodesic(v, faces, _BROW_INNER), 0.01) * above
    basis[:, 0, 6] = -g * np.sign(v[:, 0]) * 2.0 * mm
    basis[:, 1, 6] = -g * 3.0 * mm
    # the rest: smooth random, low amplitude (like the tail of a PCA basis)
    k = len(EXPRESSION_NAMES)
    amp = 2.5 * mm / (1.0 + 0.1 * np.arange(N_EXP - k))
    basis[:, :, k:] = _random_fields(rng, v, N_EXP - k, amp)
    return basis


def synthetic_head(seed: int = 0) -> FlameData:
    """The synthetic test head (not FLAME) in FLAME's layout, with UVs; deterministic for a seed."""
    a = _load_asset()
    rng = np.random.default_rng(seed)
    v = a["vertices"].astype(np.float64)
    n = len(v)
    reg = _regions(a)

    shapedirs = _random_fields(rng, v, N_SHAPE, 8e-3 / (1.0 + 0.08 * np.arange(N_SHAPE)))
    expdirs = _expression_basis(a, reg, rng)
    posedirs = _random_fields(rng, v, 36, np.full(36, 1.0e-3))

    # skinning: jaw region -> jaw, eyes -> eye joints, the rest -> neck (the head); root keeps none
    weights = np.zeros((n, 5))
    weights[:, 2] = reg["jaw"]
    weights[:, 3] = reg["eye_L"]
    weights[:, 4] = reg["eye_R"]
    weights[:, 1] = 1.0 - weights[:, 2:].sum(axis=1)

    # joint regressor: convex combinations of vertices (rows sum to 1), as FLAME's is
    oval = a["face_oval"]
    low_oval = oval[v[oval, 1] < np.median(v[oval, 1])]
    side = oval[np.abs(v[oval, 1] - reg["mouth_y"]) < 0.03]
    J = np.zeros((5, n))
    J[0, oval] = 1.0 / len(oval)
    J[1, low_oval] = 1.0 / len(low_oval)
    J[2, side] = 1.0 / len(side)
    J[3, a["eye_L_loop"]] = 1.0 / len(a["eye_L_loop"])
    J[4, a["eye_R_loop"]] = 1.0 / len(a["eye_R_loop"])

    faces = a["faces"].astype(np.int64)
    return FlameData(
        v_template=v.astype(np.float32),
        faces=faces,
        shapedirs=shapedirs.astype(np.float32),
        expdirs=expdirs.astype(np.float32),
        posedirs=posedirs.astype(np.float32),
        J_regressor=J.astype(np.float32),
        weights=weights.astype(np.float32),
        parents=np.asarray(PARENTS, dtype=np.int64),
        name=NAME,
        source=f"backend/synthetic/{ASSET} (mediapipe face mesh on the astronaut photo), seed {seed}",
        uvs=a["uvs"].astype(np.float32),
        uv_faces=faces.copy(),
        extra={"seed": seed, "expression_names": EXPRESSION_NAMES, "mp_vertices": 468},
    )


# ------------------------------------------------------------------------------------ landmark embedding
def _vertex_bary(faces: np.ndarray, vertex: int) -> tuple[int, np.ndarray]:
    f = int(np.nonzero((faces == vertex).any(axis=1))[0][0])
    bary = (faces[f] == vertex).astype(np.float32)
    return f, bary


def dynamic_bin_yaw(index: int) -> int:
    """The yaw (degrees, DECA sign) a dynamic-contour table index stands for: 0..39 -> 0..39, 40..78 -> -1..-39."""
    return index if index <= 39 else 39 - index


def synthetic_landmark_embedding(head: FlameData):
    """iBUG-68 embedding of the synthetic head through the mediapipe-468 -> 68 correspondence.

    The 79 dynamic contour tables (DECA convention) shift the contour point on the side turned away from the
    camera inwards by up to half a triangle, so tables differ mildly from bin to bin.
    """
    from backend.flame.landmarks import MEDIAPIPE_TO_68, LandmarkEmbedding

    faces = np.asarray(head.faces)
    v = np.asarray(head.v_template, dtype=np.float64)
    full_f = np.zeros(68, np.int64)
    full_b = np.zeros((68, 3), np.float32)
    for i, k in enumerate(MEDIAPIPE_TO_68):
        full_f[i], full_b[i] = _vertex_bary(faces, k)
    nose = v[4]
    dyn_f = np.zeros((79, 17), np.int64)
    dyn_b = np.zeros((79, 17, 3), np.float32)
    for b in range(79):
        yaw = dynamic_bin_yaw(b)
        for i in range(17):
            f, bary = int(full_f[i]), full_b[i].copy()
            # yaw > 0 turns the face towards +X: the +X contour (iBUG 9..16) becomes the silhouette
            away = (i > 8 and yaw > 0) or (i < 8 and yaw < 0)
            if away:
                t = 0.5 * abs(yaw) / 39.0
                corners = faces[f]
                inner = int(np.argmin(np.linalg.norm(v[corners] - nose, axis=1)))
                own = int(np.argmax(bary))
                if inner != own:
                    bary[own] -= t
                    bary[inner] += t
            dyn_f[b, i], dyn_b[b, i] = f, bary
    return LandmarkEmbedding(
        static_faces=full_f[17:].copy(),
        static_bary=full_b[17:].copy(),
        dynamic_faces=dyn_f,
        dynamic_bary=dyn_b,
        full_faces=full_f,
        full_bary=full_b,
        convention="deca",
    )


# ------------------------------------------------------------------------------------------- rendering
def render_preview(
    head: FlameData,
    vertices: np.ndarray | None = None,
    image_size: int = 224,
    texture: np.ndarray | None = None,
    scale: float | None = None,
    center: tuple[float, float] = (0.0, 0.0),
    background: tuple[int, int, int] = (40, 40, 40),
    cam: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Frontal orthographic textured render (painter's algorithm by depth), (S, S, 3) uint8 RGB.

    vertices (V, 3) model space (default: the template). A model point (X, Y) lands on pixel
    u = (s*(X - cx) + 1) * S/2, v = (-s*(Y - cy) + 1) * S/2 with s = ``scale`` (default: fits the template's
    width into 80% of the image): the weak-perspective camera of docs/formats.md with tx = -cx, ty = -cy.
    ``cam`` = [s, tx, ty] overrides scale/center (then pixels are camera.project's, for a 224-style crop).
    Needs cv2 (per-triangle affine texture warps).
    """
    if cam is not None:
        scale, center = float(cam[0]), (-float(cam[1]), -float(cam[2]))
    import cv2

    verts = np.asarray(head.v_template if vertices is None else vertices, dtype=np.float64)
    tex = _texture() if texture is None else texture
    if head.uvs is None:
        raise ValueError("render_preview needs a head with UVs")
    if scale is None:
        width = np.ptp(np.asarray(head.v_template)[:, 0])
        scale = 1.6 / width
    S = int(image_size)
    px = np.empty((len(verts), 2))
    px[:, 0] = (scale * (verts[:, 0] - center[0]) + 1.0) * S / 2
    px[:, 1] = (-scale * (verts[:, 1] - center[1]) + 1.0) * S / 2
    th, tw = tex.shape[:2]
    uv = np.asarray(head.uvs, dtype=np.float64)
    tpx = np.stack([uv[:, 0] * tw, (1.0 - uv[:, 1]) * th], axis=1)
    faces = np.asarray(head.faces)
    uv_faces = np.asarray(head.uv_faces if head.uv_faces is not None else head.faces)
    image = np.empty((S, S, 3), np.uint8)
    image[:] = background
    # back-facing triangles first, then front-facing ones, each far to near: front faces always win, and a
    # triangle folded over (a closing eyelid) still fills its hole instead of showing the background
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    front = np.cross(b - a, c - a)[:, 2] > 0
    depth = verts[faces].mean(axis=1)[:, 2]
    for f in np.lexsort((depth, front)):
        dst = px[faces[f]].astype(np.float32)
        src = tpx[uv_faces[f]].astype(np.float32)
        x0, y0 = np.floor(dst.min(0)).astype(int)
        x1, y1 = np.ceil(dst.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, S), min(y1, S)
        if x1 <= x0 or y1 <= y0:
            continue
        corner = np.array([x0, y0], np.float32)
        m = cv2.getAffineTransform(src, dst - corner)
        patch = cv2.warpAffine(tex, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round((dst - corner) * 16).astype(np.int32), (1,), cv2.LINE_8, 4)  # 4: 1/16 px
        region = image[y0:y1, x0:x1]
        region[mask > 0] = patch[mask > 0]
    return image
