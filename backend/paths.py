"""Where the backend keeps things on disk (stdlib only; nothing is created here, every function only computes).

Conventions: every location is computed from the environment on each call (no module state, so tests and users
can redirect them with environment variables at any time):

- ``$EMOCA_BLENDER_DATA``: the per-user data folder (default: the OS's per-user data folder + ``emoca_blender``);
- ``$EMOCA_BLENDER_ASSETS``: the assets root (default: ``<data dir>/assets``, the official EMOCA layout below it);
- ``$TORCH_HOME``: torch's cache, whose ``hub/checkpoints`` holds the face-alignment weights (torch's own rule).

This is the one place these rules live: ``backend.assets`` (what is installed) and ``backend.flame.io`` (the
converted-FLAME cache) both read them from here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """``$EMOCA_BLENDER_DATA``, else the OS's per-user data folder + ``emoca_blender``.

    Linux: ``$XDG_DATA_HOME`` (default ``~/.local/share``); macOS: ``~/Library/Application Support``;
    Windows: ``%LOCALAPPDATA%`` (default ``~/AppData/Local``).
    """
    env = os.environ.get("EMOCA_BLENDER_DATA")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "emoca_blender"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "emoca_blender"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "emoca_blender"


def assets_root() -> Path:
    """``$EMOCA_BLENDER_ASSETS``, else ``user_data_dir()/assets`` (the official ``assets/`` layout below it)."""
    env = os.environ.get("EMOCA_BLENDER_ASSETS")
    return Path(env).expanduser() if env else user_data_dir() / "assets"


def assets_root_source() -> str:
    """Which rule :func:`assets_root` followed: ``$EMOCA_BLENDER_ASSETS``, ``$EMOCA_BLENDER_DATA/assets`` or
    ``default`` (the value of the status document's ``root_source``)."""
    if os.environ.get("EMOCA_BLENDER_ASSETS"):
        return "$EMOCA_BLENDER_ASSETS"
    if os.environ.get("EMOCA_BLENDER_DATA"):
        return "$EMOCA_BLENDER_DATA/assets"
    return "default"


def torch_hub_checkpoints() -> Path:
    """Where torch hub (and face-alignment) cache weights: ``$TORCH_HOME/hub/checkpoints``, ``$TORCH_HOME``
    defaulting to ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``); torch's own rule, computed without torch."""
    env = os.environ.get("TORCH_HOME")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "torch"
    return base / "hub" / "checkpoints"


def flame_cache_dir() -> Path:
    """Where converted FLAME models are cached: ``user_data_dir()/cache``."""
    return user_data_dir() / "cache"
