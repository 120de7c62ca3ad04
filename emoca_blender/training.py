"""The Train panel's request: ``Scene.emoca_train`` settings -> the backend's ``train`` request (config, overrides).

A plain function (no operator, no UI): the Train operator sends what it returns; scripts can call it too.
Overrides are ``key=value`` strings in the backend's config syntax (docs/training.md).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import bpy

from emoca_contract.errors import EmocaError

from .properties import shipped_configs


def default_run_dir(config: str, blend_path: str = "") -> Path:
    """Where a run goes when no output folder is set: ``emoca_runs/<config>`` beside the .blend, else in home."""
    base = Path(blend_path).parent if blend_path else Path.home()
    return base / "emoca_runs" / config


def train_request(settings, blend_path: str = "") -> tuple[str, list[str]]:
    """(config, overrides) of the ``train`` request for the Train panel's settings (``Scene.emoca_train``).

    The output folder is always passed as an absolute path: the backend runs in its own working directory.
    """
    if settings.config == "CUSTOM":
        if not settings.config_path:
            raise EmocaError(
                "input_missing", "no training config file chosen", "Pick a config YAML or one of the shipped configs."
            )
        config = bpy.path.abspath(settings.config_path)
        if not os.path.isfile(config):
            raise EmocaError(
                "input_missing",
                f"training config not found: {config}",
                "Expected a YAML file (see backend/training/configs/ for examples).",
            )
    else:
        config = next((str(p) for p in shipped_configs() if p.stem == settings.config), settings.config)
    name = Path(config).stem
    out = Path(bpy.path.abspath(settings.output_dir)) if settings.output_dir else default_run_dir(name, blend_path)
    overrides = [f"output_dir={out}"]
    if settings.data_dir:
        data = bpy.path.abspath(settings.data_dir)
        if not os.path.isdir(data):
            raise EmocaError(
                "input_missing", f"training data folder not found: {data}", "Expected a folder of images and/or videos."
            )
        overrides.append(f"data.train={data}")
    if settings.max_epochs > 0:
        overrides.append(f"learning.max_epochs={settings.max_epochs}")
    if settings.max_steps > 0:
        overrides.append(f"learning.max_steps={settings.max_steps}")
    try:
        extra = shlex.split(settings.overrides)
    except ValueError as exc:
        raise EmocaError("config_invalid", f"overrides {settings.overrides!r}: {exc}") from None
    bad = [o for o in extra if "=" not in o]
    if bad:
        raise EmocaError(
            "config_invalid",
            f"override {bad[0]!r} is not key=value",
            "Write overrides as key=value separated by spaces, e.g. learning.lr=1e-4.",
        )
    return config, overrides + extra
