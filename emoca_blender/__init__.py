"""EMOCA for Blender: capture faces from footage onto a FLAME head rig, with emotion curves.

The add-on runs inside Blender (bpy, numpy, stdlib only); the capture network runs in a separate backend
process (its own Python with torch) that the add-on starts and talks to over stdio (docs/formats.md).
Scripts and pipelines use :mod:`.api`; ``blender -c emoca ...`` runs :mod:`.cli` (docs/headless.md).
"""

from __future__ import annotations

import bpy

# The shared contract first: it registers the emoca_contract package every other module imports.
from . import contract  # noqa: F401

# isort: split
from . import cli, operators, panel, preferences, properties

CLASSES = (*properties.CLASSES, *preferences.CLASSES, *operators.CLASSES, *panel.CLASSES)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    cli.register()


def unregister() -> None:
    cli.unregister()
    properties.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
