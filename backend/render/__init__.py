"""Differentiable rendering in plain torch: rasterizer, SH shading, textured rendering, synthetic clips.

Import submodules directly (`backend.render.rasterize`, `.shading`, `.renderer`, `.synthetic_clip`); the names
below are re-exported lazily so that `import backend.render` stays cheap.
"""

from __future__ import annotations

__all__ = ["Rasterizer", "rasterize", "render_mesh", "world2uv", "SH_CONSTANTS", "render_head_clip", "render_crops"]

_WHERE = {
    "Rasterizer": "backend.render.rasterize",
    "rasterize": "backend.render.rasterize",
    "render_mesh": "backend.render.renderer",
    "world2uv": "backend.render.renderer",
    "SH_CONSTANTS": "backend.render.shading",
    "render_head_clip": "backend.render.synthetic_clip",
    "render_crops": "backend.render.synthetic_clip",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
