"""The heads a likeness is made for: the open ICT rig (with a fitted identity baked in) and FLAME-layout heads:
their UV layouts and how a posed mesh is seen by a take's camera.

Conventions: metres, +Y up, the face looks along +Z (both heads). An identity on the open rig is its ``identity``
array (V, 3) and ``meta.identity_name`` (docs/formats.md "Open rig"); the joints follow the identity (each joint
moves with the mean offset of the vertices it is found from), while the skinning weights, drivers and materials
stay the mean head's (an identity moves the face by millimetres; they are smooth over that).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backend.flame.data import FlameData
from backend.likeness.texture import PosedFrames, UvLayout
from emoca_contract.errors import EmocaError

_RIG: dict[int, dict[str, Any]] = {}


def mean_open_rig() -> dict[str, Any]:
    """The open rig of ICT's mean head (built once per process)."""
    if 0 not in _RIG:
        from backend.ict.data import load_ict
        from backend.ict.rig import build_open_rig

        _RIG[0] = build_open_rig(load_ict())
    return _RIG[0]


def joint_sources(rig: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each joint's source vertices: the eyeballs for the eyes, the lower teeth for the jaw and the head (the
    skull base sits at a fixed offset from the jaw joint), the neck's cross-section at the joint's height for the
    neck and the root."""
    from backend.ict.data import load_ict
    from backend.ict.rig import JOINT_NAMES, lower_teeth

    model = load_ict()
    joints = np.asarray(rig["joints"], np.float64)
    skin = np.concatenate([model.region("face"), model.region("head_neck")])
    out = {"eye_L": model.region("eyeball_L"), "eye_R": model.region("eyeball_R"), "jaw": lower_teeth(model)}
    out["head"] = out["jaw"]
    for name in ("neck", "root"):
        y = joints[JOINT_NAMES.index(name), 1]
        out[name] = skin[np.abs(model.vertices[skin, 1] - y) < 0.005]
    return out


def rig_with_identity(offsets: np.ndarray, name: str, rig: dict[str, Any] | None = None) -> dict[str, Any]:
    """The open rig (default: the mean one) with ``offsets`` (V, 3) metres baked as its identity ``name``."""
    from backend.ict.rig import JOINT_NAMES

    base = mean_open_rig() if rig is None else rig
    offsets = np.asarray(offsets, np.float64)
    sources = joint_sources(base)
    joints = np.asarray(base["joints"], np.float64).copy()
    for j, joint in enumerate(JOINT_NAMES):
        joints[j] += offsets[sources[joint]].mean(0)
    meta = {**base["meta"], "identity_name": name}
    return {**base, "identity": offsets.astype(np.float32), "joints": joints.astype(np.float32), "meta": meta}


# ---------------------------------------------------------------------------------------------- UV layouts
ICT_TEXTURED = ("M_Face", "M_BackHead")  # ICT's materials whose UVs lie in the first two tiles
ICT_UV_RANGE = ((0.0, 2.0), (0.0, 1.0))
FLAME_UV_RANGE = ((0.0, 1.0), (0.0, 1.0))


def open_layout() -> UvLayout:
    """The open ICT rig's UV layout: its triangles, and the face and back-of-head polygons textured over ICT's
    first two UV tiles (the eyes, teeth, gums and mouth socket keep their material colours)."""
    from backend.ict.data import load_ict, triangles

    rig = mean_open_rig()
    corners = triangles(rig["poly_sizes"])
    poly = np.repeat(np.arange(len(rig["poly_sizes"])), np.asarray(rig["poly_sizes"]) - 2)
    model = load_ict()
    textured = np.isin(np.asarray(model.materials)[model.poly_materials][poly], ICT_TEXTURED)
    return UvLayout(
        faces=np.asarray(rig["poly_vertices"], np.int64)[corners],
        uvs=np.asarray(rig["uvs"], np.float64)[np.asarray(rig["poly_uvs"])[corners]],
        textured=textured,
        uv_range=ICT_UV_RANGE,
    )


def flame_layout(flame: FlameData) -> UvLayout:
    """A FLAME-layout head's UV layout (head_template.obj's UVs); EmocaError('asset_missing') without UVs."""
    if flame.uvs is None:
        raise EmocaError("asset_missing", f"{flame.name}: no UVs to unwrap a texture into",
                         "Put FLAME's head_template.obj beside generic_model.pkl (the official layout).")  # fmt: skip
    uv_faces = flame.uv_faces if flame.uv_faces is not None else flame.faces
    return UvLayout(
        faces=np.asarray(flame.faces, np.int64),
        uvs=np.asarray(flame.uvs, np.float64)[np.asarray(uv_faces)],
        textured=np.ones(len(flame.faces), bool),
        uv_range=FLAME_UV_RANGE,
    )


# ---------------------------------------------------------------------------------------------- cameras
def normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals (K, V, 3) of meshes (K, V, 3) (area-weighted, the winding's outside)."""
    import torch

    from backend.render.shading import vertex_normals

    v = torch.as_tensor(vertices, dtype=torch.float64)
    return vertex_normals(v, torch.as_tensor(faces).long()).numpy()


def pinhole_frames(vertices: np.ndarray, faces: np.ndarray, focal: np.ndarray, centre: np.ndarray) -> PosedFrames:
    """Meshes in the take's camera frame (K, V, 3) (x right, y up, looking down -z) through pinholes of focal
    lengths (K,) pixels and principal points (K, 2) frame pixels."""
    z = -vertices[..., 2]
    screen = np.stack([centre[:, None, 0] + focal[:, None] * vertices[..., 0] / z,
                       centre[:, None, 1] - focal[:, None] * vertices[..., 1] / z], -1)  # fmt: skip
    towards = -vertices / np.linalg.norm(vertices, axis=-1, keepdims=True)
    return PosedFrames(screen, z, normals(vertices, faces), towards)


def crop_frames(vertices: np.ndarray, faces: np.ndarray, cam: np.ndarray, crop: np.ndarray) -> PosedFrames:
    """FLAME meshes in model space (K, V, 3) (posed, the face towards +z) through EMOCA's weak-perspective camera
    ``cam`` (K, 3) [s, tx, ty] into the crop and the take's ``crop`` (K, 3, 3) into the frame
    (backend.flame.camera: the one crop-space convention). Depth is the model's -z (the camera looks along -z)."""
    from backend.flame.camera import crop_to_frame, project

    screen = crop_to_frame(project(vertices, cam)[..., :2], crop)
    towards = np.broadcast_to(np.array([0.0, 0.0, 1.0]), vertices.shape)
    return PosedFrames(np.asarray(screen), -vertices[..., 2], normals(vertices, faces), towards)
