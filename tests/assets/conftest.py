"""Every assets test runs with its own data dir, assets root and torch hub (non-ASCII paths), and no
credentials from the developer's environment."""

from __future__ import annotations

import pytest


@pytest.fixture
def asset_env(unicode_tmp, monkeypatch):
    data = unicode_tmp / "données"
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(data))
    monkeypatch.delenv("EMOCA_BLENDER_ASSETS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(unicode_tmp / "torch home"))
    for var in ("USERNAME", "PASSWORD", "FLAME_USERNAME", "FLAME_PASSWORD", "DOWNLOAD_URL"):
        monkeypatch.delenv(f"EMOCA_BLENDER_{var}", raising=False)
    return unicode_tmp


@pytest.fixture
def root(asset_env):
    """The assets root (the default one under $EMOCA_BLENDER_DATA; not created yet)."""
    return asset_env / "données" / "assets"
