"""Blender add-on test harness: the add-on registered once per session, a factory-fresh scene per test.

Rig and take files come from the backend's numpy-only writers (backend.synthetic.head/rig, backend.take.writer),
so these tests run in the Blender 4.2 environment (no torch) too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import emoca_blender  # noqa: E402
from backend.flame.rig import write_rig  # noqa: E402
from backend.synthetic.head import synthetic_head  # noqa: E402
from backend.synthetic.take import make_synthetic_take  # noqa: E402
from backend.take.writer import write_take  # noqa: E402

BAKED_SHAPE = np.random.default_rng(7).normal(0, 1.0, 100).astype(np.float32)


@pytest.fixture(scope="session")
def addon():
    emoca_blender.register()
    yield emoca_blender
    emoca_blender.unregister()


@pytest.fixture(autouse=True)
def fresh_scene(addon):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene


@pytest.fixture
def addon_prefs():
    """The add-on enabled in the preferences (the session registers it as a module), so get_prefs works."""
    from emoca_blender.preferences import get_prefs

    entry = bpy.context.preferences.addons.new()
    entry.module = "emoca_blender"
    yield get_prefs()
    bpy.context.preferences.addons.remove(entry)


@pytest.fixture(scope="session")
def head():
    return synthetic_head()


@pytest.fixture(scope="session")
def rig_file(tmp_path_factory, head) -> Path:
    """A rig with the identity baked in (``shape`` present): the usual export."""
    return write_rig(tmp_path_factory.mktemp("rig") / "rig_baked.npz", head, shape=BAKED_SHAPE)


@pytest.fixture(scope="session")
def rig_file_unbaked(tmp_path_factory, head) -> Path:
    return write_rig(tmp_path_factory.mktemp("rig") / "rig.npz", head)


def load_rig_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        out = {k: npz[k] for k in npz.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


@pytest.fixture
def make_take(tmp_path):
    """Write a synthetic take; returns (path, Take from the backend's writer)."""

    def make(
        n_frames: int = 60,
        fps: float = 30.0,
        name: str = "performance",
        seed: int = 0,
        invalid=(),
        frame0: int = 0,
        **meta_source,
    ):
        take = make_synthetic_take(n_frames, fps=fps, seed=seed, invalid=invalid)
        if frame0:
            take.arrays["frame"] = take.arrays["frame"] + frame0
            take.arrays["time"] = take.arrays["time"] + frame0 / fps
        src = take.meta.setdefault("source", {})
        src.update({"path": f"/footage/{name}.mp4", "fps": fps, "width": 640, "height": 360}, **meta_source)
        path = write_take(tmp_path / f"{name}.npz", take.arrays, take.meta)
        return Path(path), take

    return make
