"""Renderer benchmark: ``render_ms`` = forward + backward of a batch of 32 textured, SH-lit renders at 224x224
on the FLAME topology (5023 vertices, 9976 faces).

Without the licensed FLAME file the mesh is a stand-in with exactly those counts: a 70x71 vertex grid bent
onto an ellipsoid cap (4970 vertices, 9660 faces) plus 53 unreferenced vertices and 316 repeated faces,
sized like a face in an EMOCA crop (about 60% of the image covered). `python -m backend bench render` or
`python -m backend.app.bench.render`; registered in `backend.app.bench.BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

N_VERTICES, N_FACES = 5023, 9976


def flame_sized_mesh(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vertices (5023, 3) model space, faces (9976, 3), uvs (5023, 2)) of a face-like cap."""
    g = torch.Generator().manual_seed(seed)
    r, c = 70, 71
    th = torch.linspace(-1.0, 1.0, r)
    ph = torch.linspace(-1.1, 1.1, c)
    T, P = torch.meshgrid(th, ph, indexing="ij")
    v = torch.stack([0.075 * torch.sin(P) * torch.cos(T), 0.1 * torch.sin(T), 0.07 * torch.cos(P) * torch.cos(T)], -1)
    v = v.reshape(-1, 3)
    uv = torch.stack([(P + 1.1) / 2.2, (T + 1) / 2], -1).reshape(-1, 2)
    i, j = torch.meshgrid(torch.arange(r - 1), torch.arange(c - 1), indexing="ij")
    a = (i * c + j).reshape(-1)
    faces = torch.cat([torch.stack([a, a + 1, a + c], 1), torch.stack([a + 1, a + c + 1, a + c], 1)])
    extra_v = N_VERTICES - len(v)
    v = torch.cat([v, torch.zeros(extra_v, 3)])
    uv = torch.cat([uv, torch.zeros(extra_v, 2)])
    faces = torch.cat([faces, faces[torch.randint(0, len(faces), (N_FACES - len(faces),), generator=g)]])
    return v, faces, uv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: str = "auto", batch: int = 32, size: int = 224, iters: int = 10, warmup: int = 3) -> dict:
    """Median forward+backward time (ms) of render_mesh over ``iters`` runs."""
    from backend.flame.camera import project
    from backend.render.renderer import render_mesh
    from backend.render.shading import light_from_direction

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    v, faces, uv = flame_sized_mesh()
    g = torch.Generator().manual_seed(1)
    verts = (v[None] + 0.002 * torch.randn(batch, *v.shape, generator=g)).to(dev)
    cam = torch.tensor([[9.0, 0.0, 0.0]]).repeat(batch, 1).to(dev)
    tex = torch.rand(batch, 3, 256, 256, generator=g).to(dev)
    light = light_from_direction((0.2, 0.3, 1.0), batch=batch).to(dev)
    faces, uv = faces.to(dev), uv.to(dev)
    times = []
    coverage = math.nan
    for k in range(warmup + iters):
        x = verts.clone().requires_grad_(True)
        _sync(dev)
        t0 = time.perf_counter()
        out = render_mesh(project(x, cam), faces, uv, faces, tex, light, image_size=size)
        out["images"].mean().backward()
        _sync(dev)
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
        coverage = float(out["alpha_images"].mean())
    return {
        "render_ms": round(statistics.median(times), 2),
        "render_device": str(dev),
        "render_batch": batch,
        "render_size": size,
        "render_coverage": round(coverage, 3),
        "render_mesh": f"{N_VERTICES} v / {N_FACES} f stand-in (no FLAME file)",
    }


def run(args: argparse.Namespace | None = None) -> dict:
    device = getattr(args, "device", "auto") if args is not None else "auto"
    iters = 10 if (device == "cuda" or (device == "auto" and torch.cuda.is_available())) else 3
    return measure(device=device, iters=iters, warmup=2)


if __name__ == "__main__":
    for k, val in run().items():
        print(f"{k}: {val}")
