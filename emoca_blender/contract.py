"""The shared contract, :mod:`emoca_contract` (errors, protocol, take, rig, rotations: numpy + stdlib only).

Blender's Python has none of the backend's dependencies, so the add-on never imports the backend; it loads the
contract package by path from the copy bundled with it (``<addon>/emoca_contract`` in the extension zip, the
repository's ``emoca_contract/`` in a checkout) and registers it under its own name, so both processes run the
same code. Add-on modules import what they need from here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def contract_root() -> Path:
    """The ``emoca_contract`` folder: bundled beside the add-on's modules, else beside the add-on (a checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "emoca_contract", here.parent / "emoca_contract"):
        if (candidate / "__init__.py").is_file():
            return candidate
    raise ImportError(f"the emoca_contract package was not found next to {here}; reinstall the extension")


def _load() -> ModuleType:
    loaded = sys.modules.get("emoca_contract")
    if loaded is not None:
        return loaded
    root = contract_root()
    spec = importlib.util.spec_from_file_location(
        "emoca_contract", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["emoca_contract"] = module
    spec.loader.exec_module(module)
    return module


_load()

from emoca_contract import errors, protocol, rig, rotations, take  # noqa: E402
from emoca_contract.errors import EmocaError  # noqa: E402

__all__ = ["EmocaError", "errors", "protocol", "rig", "rotations", "take"]
