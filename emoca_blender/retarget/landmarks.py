"""The landmark-driven retarget for characters with arbitrary shape keys (docs/retarget.md "Custom shape keys").

1. **Landmarks** (:func:`detect_landmarks`): the character's face is rendered headless (Workbench, a front
   orthographic camera framing the vertices its shape keys move), the backend's detector (a ``face_landmarks``
   request: the Face Landmarker) finds the 68 iBUG points on the render, and each is cast back onto the mesh (a ray
   from the camera through the point onto the rest shape; a point off the mesh takes the nearest vertex to its
   ray). Each landmark is stored as a triangle's vertices and barycentric weights (:class:`Binding`) in the mesh's
   ``emoca_landmarks`` property, and shown as an empty parented to the mesh (``<mesh>_lm00``...) the user may move;
2. **Effects** (:func:`key_effects`): what each shape key at 1 does to the landmarks, from the keys' own data
   (``key - relative key``, times the key's vertex group: what Blender evaluates for a key alone);
3. **Solve** (:func:`landmark_source`): the take's landmarks (its head model's: FLAME's for a FLAME take, the ICT
   head's under its ARKit channels for an open take, through the take's FLAME <-> ARKit map), so the head pose is
   removed exactly; their motion from the take's least expressive frames, moved onto the character's landmarks
   (similarity and proportions) and reproduced by bounded least squares over the keys (each within its slider
   range) with a smoothness term across frames (``emoca_contract.landmark_solve``). The weights become source
   curves named after the keys, keyed through :func:`~.write.write_key_curves` by the retarget engine with an
   identity mapping (:func:`identity_mapping`).

Why the solve runs here, in numpy, and not in the backend: all it needs is in Blender (the keys' effects) or in
files the add-on reads (the take, the map); a frame's problem is small (one unknown per key, 204 equations), so
an exact projected-Newton solver in numpy (the contract's, the one the backend's map fits use; a test checks it
against scipy's) is as exact as scipy and runs without a backend round trip, in Blender 4.2 as in 5.0.

Spaces: landmarks, empties and effects are in the mesh object's local space, on its rest shape (the reference key).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

from emoca_contract.arkit_map import ArkitMap, arkit_landmarks, flame_landmarks
from emoca_contract.errors import EmocaError
from emoca_contract.landmark_solve import LandmarkSolve, SolveOptions, face_size, solve_landmarks
from emoca_contract.take import Take

from .. import client
from ..preferences import backend_python
from .mapping import Entry, Mapping
from .sources import SourceCurves

PROP = "emoca_landmarks"  # the mesh object's binding (JSON)
EMPTY_PROP = "emoca_landmark"  # an empty's landmark number
N_LANDMARKS = 68
FRONTS = {"-Y": (0.0, -1.0, 0.0), "+Y": (0.0, 1.0, 0.0), "-X": (-1.0, 0.0, 0.0), "+X": (1.0, 0.0, 0.0),
          "+Z": (0.0, 0.0, 1.0), "-Z": (0.0, 0.0, -1.0)}  # fmt: skip
MOVED = 0.05  # a vertex some key moves by this share of the largest key motion belongs to the face


@dataclass(frozen=True)
class Binding:
    """Landmarks on a mesh: each a triangle's vertex ids (L, 3) and barycentric weights (L, 3)."""

    vertices: np.ndarray
    weights: np.ndarray
    source: str = "detected"

    def points(self, coords: np.ndarray) -> np.ndarray:
        """The landmarks (L, 3) on vertex positions coords (V, 3) (or offsets: their motion)."""
        return np.einsum("lk,lkc->lc", self.weights, np.asarray(coords, np.float64)[self.vertices])

    def to_json(self) -> str:
        return json.dumps({"version": 1, "source": self.source, "vertices": self.vertices.tolist(),
                           "weights": np.round(self.weights, 6).tolist()})  # fmt: skip


# ------------------------------------------------------------------------------------------------ mesh data
def rest_coords(mesh_obj: bpy.types.Object) -> np.ndarray:
    """The reference (Basis) key's vertex positions (V, 3), else the mesh's."""
    key = mesh_obj.data.shape_keys
    data = key.reference_key.data if key is not None else mesh_obj.data.vertices
    co = np.empty(len(data) * 3, np.float32)
    data.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)


def triangles(mesh: bpy.types.Mesh) -> np.ndarray:
    """The mesh's triangles (T, 3) vertex ids (Blender's own triangulation of its polygons)."""
    mesh.calc_loop_triangles()
    tri = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3).astype(np.int64)


def key_blocks(mesh_obj: bpy.types.Object) -> list[Any]:
    """The shape keys a solve may drive: every key but the reference key and muted keys."""
    key = mesh_obj.data.shape_keys
    if key is None:
        return []
    return [kb for kb in key.key_blocks if kb != key.reference_key and not kb.mute]


def key_delta(mesh_obj: bpy.types.Object, kb: Any) -> np.ndarray:
    """What key ``kb`` at 1 adds to the vertices (V, 3): (key - its relative key) times its vertex group."""
    n = len(mesh_obj.data.vertices)
    co, rel = np.empty(n * 3, np.float32), np.empty(n * 3, np.float32)
    kb.data.foreach_get("co", co)
    kb.relative_key.data.foreach_get("co", rel)
    delta = (co - rel).reshape(-1, 3).astype(np.float64)
    group = mesh_obj.vertex_groups.get(kb.vertex_group) if kb.vertex_group else None
    if group is not None:
        delta *= _group_weights(mesh_obj, group.index)[:, None]
    return delta


def _group_weights(mesh_obj: bpy.types.Object, index: int) -> np.ndarray:
    w = np.zeros(len(mesh_obj.data.vertices))
    for v in mesh_obj.data.vertices:
        for g in v.groups:
            if g.group == index:
                w[v.index] = g.weight
    return w


def face_vertices(mesh_obj: bpy.types.Object, rest: np.ndarray) -> np.ndarray:
    """The vertices (ids) the shape keys move noticeably (by :data:`MOVED` of the largest motion of any key):
    the face to frame; every vertex when no key moves any."""
    moved = np.zeros(len(rest))
    for kb in key_blocks(mesh_obj):
        moved = np.maximum(moved, np.linalg.norm(key_delta(mesh_obj, kb), axis=1))
    face = np.nonzero(moved > MOVED * moved.max())[0] if moved.max() > 0 else np.arange(len(rest))
    return face if len(face) >= 3 else np.arange(len(rest))


# ------------------------------------------------------------------------------------------------ the camera
@dataclass(frozen=True)
class FrontCamera:
    """An orthographic camera in the mesh's local space looking at the face: pixel (x, y) (integer coordinates
    at pixel centres, y down) -> a ray origin on the image plane and the viewing direction."""

    origin: np.ndarray  # (3,) the image's centre on the camera plane
    right: np.ndarray  # (3,) unit
    up: np.ndarray  # (3,) unit
    forward: np.ndarray  # (3,) unit, the viewing direction (into the face)
    width: float  # the image's extent along ``right`` (metres, the mesh's units)
    pixels: int  # a square image's side

    def ray_origins(self, points: np.ndarray) -> np.ndarray:
        """Pixels (L, 2) -> ray origins (L, 3)."""
        uv = (np.asarray(points, np.float64) + 0.5) / self.pixels - 0.5
        return self.origin + self.width * (uv[:, :1] * self.right - uv[:, 1:] * self.up)

    def matrix(self) -> Matrix:
        """The camera object's local matrix (Blender cameras look along their -Z, +Y up)."""
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = self.right, self.up, -self.forward, self.origin
        return Matrix(m.tolist())


def front_camera(points: np.ndarray, front: str, up: np.ndarray, pixels: int, margin: float = 1.3) -> FrontCamera:
    """The camera framing ``points`` (N, 3) seen from ``front`` (the direction the face looks, in these
    coordinates), ``up`` the face's up direction."""
    if front not in FRONTS:
        raise EmocaError("config_invalid", f"front {front!r}: expected one of {', '.join(FRONTS)}")
    forward = -np.asarray(FRONTS[front], np.float64)
    up = np.asarray(up, np.float64) - forward * float(np.dot(up, forward))
    if np.linalg.norm(up) < 1e-6:
        raise EmocaError("config_invalid", f"the face's up direction is along its front {front!r}")
    up /= np.linalg.norm(up)
    right = np.cross(forward, up)
    centre = points.mean(0)
    extent = max(float(np.ptp(points @ right)), float(np.ptp(points @ up)), 1e-6)
    depth = float(np.ptp(points @ forward))
    lo = float((points @ right).min() + (points @ right).max()) / 2
    hi = float((points @ up).min() + (points @ up).max()) / 2
    across = centre + right * (lo - centre @ right) + up * (hi - centre @ up)
    origin = across + forward * (float((points @ forward).min()) - float(centre @ forward) - depth - extent)
    return FrontCamera(origin, right, up, forward, extent * margin, int(pixels))


def world_direction(mesh_obj: bpy.types.Object, world: tuple[float, float, float]) -> np.ndarray:
    """A world direction in the mesh's local space (unit)."""
    inv = np.array(mesh_obj.matrix_world.to_3x3().inverted_safe())
    d = inv @ np.asarray(world, np.float64)
    return d / (np.linalg.norm(d) or 1.0)


def local_front(mesh_obj: bpy.types.Object, front: str) -> str:
    """The local axis (one of :data:`FRONTS`) nearest to the world direction ``front``."""
    d = world_direction(mesh_obj, FRONTS[front])
    return max(FRONTS, key=lambda k: float(np.dot(FRONTS[k], d)))


# ------------------------------------------------------------------------------------------------ render
def render_face(mesh_obj: bpy.types.Object, camera: FrontCamera, path: Path, engine: str = "BLENDER_WORKBENCH",
                samples: int = 16) -> Path:  # fmt: skip
    """Render the rest shape (no modifiers, every key at 0) through ``camera`` into ``path`` (PNG), in a temporary
    scene holding only a copy of the mesh, a camera and (Cycles) a light; all of them are removed afterwards."""
    scene = bpy.data.scenes.new("EMOCA landmarks")
    made: list[tuple[Any, Any]] = [(bpy.data.scenes, scene)]
    try:
        mesh = mesh_obj.data.copy()
        made.append((bpy.data.meshes, mesh))
        for kb in mesh.shape_keys.key_blocks if mesh.shape_keys is not None else ():
            kb.value = 0.0  # the copy's Key goes with the copy
        obj = bpy.data.objects.new(mesh_obj.name + "_landmarks_render", mesh)
        cam_data = bpy.data.cameras.new("EMOCA landmarks camera")
        cam = bpy.data.objects.new(cam_data.name, cam_data)
        made += [(bpy.data.cameras, cam_data), (bpy.data.objects, obj), (bpy.data.objects, cam)]
        scene.collection.objects.link(obj)
        scene.collection.objects.link(cam)
        cam.matrix_world = camera.matrix()  # the mesh's space: the copy has no transform
        cam_data.type = "ORTHO"
        cam_data.ortho_scale = camera.width
        cam_data.clip_start, cam_data.clip_end = camera.width * 1e-3, camera.width * 100.0
        scene.camera = cam
        _render_settings(scene, camera.pixels, engine, samples, made)
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        for collection, datablock in reversed(made):  # objects first, then their data, the scene last
            if datablock.name in collection:
                collection.remove(datablock)
    if not path.is_file():
        raise EmocaError("internal", f"the landmark render wrote no image at {path}")
    return path


def _render_settings(scene, pixels: int, engine: str, samples: int, made: list) -> None:
    r = scene.render
    r.resolution_x = r.resolution_y = int(pixels)
    r.resolution_percentage = 100
    r.image_settings.file_format = "PNG"
    r.film_transparent = False
    if engine == "CYCLES":
        r.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(samples)
        light_data = bpy.data.lights.new("EMOCA landmarks light", "SUN")
        light = bpy.data.objects.new(light_data.name, light_data)
        world = bpy.data.worlds.new("EMOCA landmarks world")
        made += [(bpy.data.lights, light_data), (bpy.data.worlds, world), (bpy.data.objects, light)]
        light.matrix_world = scene.camera.matrix_world
        light_data.energy = 3.0
        scene.collection.objects.link(light)
        world.color = (0.3, 0.3, 0.3)
        scene.world = world
        return
    if engine != "BLENDER_WORKBENCH":
        raise EmocaError("config_invalid", f"render engine {engine!r}: expected BLENDER_WORKBENCH or CYCLES")
    r.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "TEXTURE"  # image textures where the materials have them, else the material colour
    shading.show_cavity = False
    shading.show_specular_highlight = False


# ------------------------------------------------------------------------------------------------ casting
def cast_rays(origins: np.ndarray, direction: np.ndarray, coords: np.ndarray, tris: np.ndarray,
              chunk: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The first hit of each ray (origins (L, 3), one direction (3,)) on triangles (T, 3) of coords (V, 3)
    (Moller-Trumbore, both sides): (hit (L,) bool, triangle (L,), barycentric (L, 3) of its corners)."""
    n = len(origins)
    best_t = np.full(n, np.inf)
    best_tri = np.full(n, -1)
    best_uv = np.zeros((n, 2))
    for s in range(0, len(tris), chunk):
        t3 = tris[s : s + chunk]
        a, b, c = coords[t3[:, 0]], coords[t3[:, 1]], coords[t3[:, 2]]
        e1, e2 = b - a, c - a
        p = np.cross(direction, e2)  # (T, 3)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tvec = origins[:, None, :] - a[None]  # (L, T, 3)
        u = (tvec * p[None]).sum(2) * inv
        q = np.cross(tvec, e1[None])
        v = (q @ direction) * inv
        t = (q * e2[None]).sum(2) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        t = np.where(hit, t, np.inf)
        k = t.argmin(1)
        rows = np.arange(n)
        closer = t[rows, k] < best_t
        best_t[closer] = t[rows, k][closer]
        best_tri[closer] = s + k[closer]
        best_uv[closer] = np.stack([u[rows, k], v[rows, k]], 1)[closer]
    bary = np.stack([1 - best_uv.sum(1), best_uv[:, 0], best_uv[:, 1]], 1)
    return np.isfinite(best_t), best_tri, bary


def nearest_to_rays(origins: np.ndarray, direction: np.ndarray, coords: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """For each ray, the vertex among ``ids`` nearest to it (L,) (for landmarks just off the silhouette)."""
    d = coords[ids][None] - origins[:, None]  # (L, M, 3)
    along = d @ direction
    off = np.linalg.norm(d - along[..., None] * direction, axis=2)
    return ids[np.argmin(np.where(along > 0, off, np.inf), axis=1)]


def cast_landmarks(points: np.ndarray, camera: FrontCamera, coords: np.ndarray, tris: np.ndarray,
                   face: np.ndarray) -> Binding:  # fmt: skip
    """Detected pixels (L, 2) cast onto the rest mesh: the binding (module docstring, step 1)."""
    origins = camera.ray_origins(points)
    hit, tri, bary = cast_rays(origins, camera.forward, coords, tris)
    vertices = np.where(hit[:, None], tris[np.maximum(tri, 0)], 0)
    weights = np.where(hit[:, None], bary, 0.0)
    if not hit.all():
        near = nearest_to_rays(origins[~hit], camera.forward, coords, face)
        vertices[~hit] = near[:, None]
        weights[~hit] = [1.0, 0.0, 0.0]
    return Binding(vertices.astype(np.int64), weights, "detected")


def closest_points(points: np.ndarray, coords: np.ndarray, tris: np.ndarray, near: int = 24) -> Binding:
    """Each point (L, 3) snapped to the closest point of the mesh (triangles around its ``near`` nearest
    vertices): the binding of the user's empties."""
    vertices = np.zeros((len(points), 3), np.int64)
    weights = np.zeros((len(points), 3))
    for i, p in enumerate(np.asarray(points, np.float64)):
        nearest = np.argsort(np.linalg.norm(coords - p, axis=1))[:near]
        cand = tris[np.isin(tris, nearest).any(1)]
        if not len(cand):
            vertices[i], weights[i] = nearest[0], [1.0, 0.0, 0.0]
            continue
        q, bary = _closest_on_triangles(p, coords[cand[:, 0]], coords[cand[:, 1]], coords[cand[:, 2]])
        k = int(np.argmin(np.linalg.norm(q - p, axis=1)))
        vertices[i], weights[i] = cand[k], bary[k]
    return Binding(vertices, weights, "empties")


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closest point to p (3,) on each triangle (T corners (T, 3) each) and its barycentric weights (T, 3),
    by projecting onto the plane, then onto the edges when the projection falls outside."""
    e1, e2 = b - a, c - a
    n = np.cross(e1, e2)
    nn = np.maximum((n * n).sum(1), 1e-30)
    q = p - ((p - a) * n).sum(1, keepdims=True) * n / nn[:, None]
    # barycentric of the projection
    v0, v1, v2 = e1, e2, q - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1 - v - w, v, w], 1)
    inside = (bary >= 0).all(1)
    best_q, best_b = q.copy(), bary.copy()
    best_d = np.where(inside, np.linalg.norm(q - p, axis=1), np.inf)
    corners = (a, b, c)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        s, e = corners[i], corners[j]
        seg = e - s
        t = np.clip(((p - s) * seg).sum(1) / np.maximum((seg * seg).sum(1), 1e-30), 0.0, 1.0)
        on = s + t[:, None] * seg
        d = np.linalg.norm(on - p, axis=1)
        better = (~inside) & (d < best_d)
        bb = np.zeros_like(bary)
        bb[:, i], bb[:, j] = 1 - t, t
        best_q[better], best_b[better], best_d[better] = on[better], bb[better], d[better]
    return best_q, best_b


# ------------------------------------------------------------------------------------------------ storage
def read_binding(mesh_obj: bpy.types.Object) -> Binding | None:
    """The binding stored on the mesh (None when it has none); EmocaError('config_invalid') when it is damaged."""
    text = mesh_obj.get(PROP)
    if text is None:
        return None
    try:
        doc = json.loads(str(text))
        vertices = np.asarray(doc["vertices"], np.int64)
        weights = np.asarray(doc["weights"], np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise EmocaError("config_invalid", f"{mesh_obj.name!r}: its {PROP!r} property is damaged ({exc})",
                         "Detect the landmarks again.") from exc  # fmt: skip
    n = len(mesh_obj.data.vertices)
    if vertices.shape != (N_LANDMARKS, 3) or weights.shape != (N_LANDMARKS, 3) or vertices.min() < 0 or \
            vertices.max() >= n or not np.isfinite(weights).all():  # fmt: skip
        raise EmocaError("config_invalid", f"{mesh_obj.name!r}: its landmarks do not fit this mesh ({n} vertices)",
                         "The mesh changed since they were detected: detect them again.")  # fmt: skip
    return Binding(vertices, weights, str(doc.get("source", "detected")))


def landmark_empties(mesh_obj: bpy.types.Object) -> list[bpy.types.Object]:
    """The mesh's landmark empties in landmark order (children with the ``emoca_landmark`` property)."""
    found = [c for c in mesh_obj.children if c.type == "EMPTY" and EMPTY_PROP in c]
    return sorted(found, key=lambda o: int(o[EMPTY_PROP]))


def store_binding(mesh_obj: bpy.types.Object, binding: Binding, empties: bool = True) -> list[bpy.types.Object]:
    """Store the binding on the mesh and (``empties``) show it as one empty per landmark, parented to the mesh
    at the landmark (existing landmark empties are moved, missing ones made)."""
    mesh_obj[PROP] = binding.to_json()
    if not empties:
        return []
    points = binding.points(rest_coords(mesh_obj))
    size = face_size(points)
    existing = {int(o[EMPTY_PROP]): o for o in landmark_empties(mesh_obj)}
    collection = mesh_obj.users_collection[0] if mesh_obj.users_collection else bpy.context.scene.collection
    out = []
    for i, p in enumerate(points):
        empty = existing.get(i)
        if empty is None:
            empty = bpy.data.objects.new(f"{mesh_obj.name}_lm{i:02d}", None)
            empty.empty_display_type = "SPHERE"
            empty[EMPTY_PROP] = i
            collection.objects.link(empty)
            empty.parent = mesh_obj
        empty.empty_display_size = 0.012 * size
        empty.matrix_parent_inverse = Matrix.Identity(4)
        empty.location = Vector(p.tolist())
        out.append(empty)
    return out


def current_binding(mesh_obj: bpy.types.Object) -> Binding:
    """The landmarks a solve uses: the empties' positions snapped onto the rest mesh when the mesh has its 68
    empties, else the stored binding. config_invalid when there is neither."""
    empties = landmark_empties(mesh_obj)
    if len(empties) == N_LANDMARKS:
        points = np.array([list(o.matrix_parent_inverse @ o.matrix_basis.translation) for o in empties])
        return closest_points(points, rest_coords(mesh_obj), triangles(mesh_obj.data))
    stored = read_binding(mesh_obj)
    if stored is None:
        raise EmocaError("config_invalid", f"{mesh_obj.name!r} has no face landmarks",
                         "Detect Landmarks first (the backend renders the face and finds them).")  # fmt: skip
    return stored


# ------------------------------------------------------------------------------------------------ detection
@dataclass(frozen=True)
class DetectOptions:
    """How the face is rendered for the detector: ``front`` the world direction the face looks (Blender's front
    view: -Y), ``up`` the world up, ``pixels`` the square render's side, ``engine`` BLENDER_WORKBENCH or CYCLES."""

    front: str = "-Y"
    up: str = "+Z"
    pixels: int = 768
    engine: str = "BLENDER_WORKBENCH"


def detect_landmarks(mesh_obj: bpy.types.Object, options: DetectOptions | None = None, python: str | None = None,
                     empties: bool = True, keep_render: str | os.PathLike | None = None) -> Binding:  # fmt: skip
    """Render the face, detect its landmarks in the backend, cast them onto the mesh and store them (module
    docstring, step 1). ``keep_render``: also keep the render there."""
    opt = options or DetectOptions()
    if opt.front not in FRONTS or opt.up not in FRONTS:
        raise EmocaError("config_invalid", f"front {opt.front!r} / up {opt.up!r}: expected {', '.join(FRONTS)}")
    bpy.context.view_layer.update()  # the mesh's world matrix, for which way its face looks
    rest = rest_coords(mesh_obj)
    face = face_vertices(mesh_obj, rest)
    front = local_front(mesh_obj, opt.front)
    camera = front_camera(rest[face], front, world_direction(mesh_obj, FRONTS[opt.up]), opt.pixels)
    with tempfile.TemporaryDirectory(prefix="emoca_landmarks_") as tmp:
        image = Path(keep_render) if keep_render else Path(tmp) / "face.png"
        render_face(mesh_obj, camera, image, opt.engine)
        found = client.run_request(python or backend_python(), "face_landmarks", image=str(image))
    points = np.asarray(found["landmarks68"], np.float64)
    if points.shape != (N_LANDMARKS, 2) or int(found.get("width", 0)) != opt.pixels:
        raise EmocaError("internal", f"face_landmarks answered {points.shape} points, {found.get('width')} px")
    binding = cast_landmarks(points, camera, rest, triangles(mesh_obj.data), face)
    store_binding(mesh_obj, binding, empties)
    return binding


# ------------------------------------------------------------------------------------------------ the solve
def key_effects(mesh_obj: bpy.types.Object, binding: Binding) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The drivable keys that move a landmark: (names, effects (K, 68, 3), slider ranges (K, 2)), mesh space."""
    rest = rest_coords(mesh_obj)
    size = face_size(binding.points(rest))
    names, effects, ranges = [], [], []
    for kb in key_blocks(mesh_obj):
        e = binding.points(key_delta(mesh_obj, kb))
        if np.linalg.norm(e, axis=1).max() > 1e-4 * size:
            names.append(kb.name)
            effects.append(e)
            ranges.append((kb.slider_min, kb.slider_max))
    if not names:
        raise EmocaError("config_invalid", f"no shape key of {mesh_obj.name!r} moves its face landmarks",
                         "Check the landmarks sit on the face the keys move.")  # fmt: skip
    return names, np.asarray(effects), np.asarray(ranges, np.float64)


def take_landmarks(take: Take, m: ArkitMap) -> tuple[np.ndarray, np.ndarray]:
    """The take's head-model landmarks at its valid rows (M, 68, 3) and that model's neutral (68, 3)."""
    valid = take["valid"].astype(bool)
    if take.kind == "flame":
        return flame_landmarks(m.flame, take["exp"][valid], take["jaw_pose"][valid]), m.flame_neutral
    weights = np.zeros((int(valid.sum()), len(m.names)))
    for column, name in enumerate(take.arkit_names):
        weights[:, m.names.index(name)] = take["arkit"][valid, column]
    return arkit_landmarks(m, weights), m.arkit_neutral


def fill_rows(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Values at the valid rows (M, K) spread over all N rows, the invalid ones interpolated (N, K)."""
    rows = np.nonzero(valid)[0]
    out = np.empty((len(valid), values.shape[1]))
    for k in range(values.shape[1]):
        out[:, k] = np.interp(np.arange(len(valid)), rows, values[:, k])
    return out


def solve_take(mesh_obj: bpy.types.Object, take: Take, m: ArkitMap,
               options: SolveOptions | None = None) -> tuple[list[str], LandmarkSolve, np.ndarray]:  # fmt: skip
    """The landmark solve of a take on the mesh: (key names, the solve at the valid rows, slider ranges)."""
    if not take["valid"].any():
        raise EmocaError("input_empty", f"{take.path}: the take has no valid frame")
    binding = current_binding(mesh_obj)
    names, effects, ranges = key_effects(mesh_obj, binding)
    landmarks, neutral = take_landmarks(take, m)
    character = binding.points(rest_coords(mesh_obj))
    solved = solve_landmarks(effects, character, landmarks, neutral, ranges[:, 0], ranges[:, 1], options)
    return names, solved, ranges


def landmark_source(mesh_obj: bpy.types.Object, take: Take, m: ArkitMap,
                    options: SolveOptions | None = None) -> tuple[SourceCurves, Mapping]:  # fmt: skip
    """The solve as source curves named after the keys, and the identity mapping that keys them (module
    docstring, step 3)."""
    names, solved, ranges = solve_take(mesh_obj, take, m, options)
    values = fill_rows(solved.weights, take["valid"].astype(bool))
    note = (f"landmark solve: {len(names)} shape keys reproduce the take's landmark motion to "
            f"{solved.error_pct:.2f} % of the face size (head model: "
            f"{'FLAME' if take.kind == 'flame' else 'the ICT head under the ARKit channels'})")  # fmt: skip
    source = SourceCurves(
        names=names,
        values=values,
        head=np.asarray(take["global_pose"], np.float64),
        jaw=np.asarray(take["jaw_pose"], np.float64) if take.kind == "flame" else None,
        note=note,
    )
    return source, identity_mapping(names, ranges)


def identity_mapping(names: list[str], ranges: np.ndarray) -> Mapping:
    """Each key driven by its own solved curve, clamped to its slider range."""
    entries = tuple(Entry(n, n, 1.0, 0.0, float(lo), float(hi)) for n, (lo, hi) in zip(names, ranges))
    return Mapping(entries=entries, name="landmark solve")
