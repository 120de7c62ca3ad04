"""The likeness sidecar ``NAME.likeness.json`` beside a take (docs/formats.md "Likeness sidecar"): written here,
read by ``emoca_contract.take.read_likeness``. Torch-free (the stdlib and the contract only), so that tests and
tools without torch (the Blender 4.2 test environment) can write one.

The sidecar names its files relative to its own folder (the take's); a run merges its sections into what an
earlier run wrote (a texture run after an identity run keeps the identity) and replaces the file atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emoca_contract.errors import EmocaError
from emoca_contract.take import LIKENESS_FORMAT, LIKENESS_VERSION, base_meta, likeness_path


def relative(path: Path, folder: Path) -> str:
    """``path`` relative to the sidecar's folder (the sidecar names files beside it or below)."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        raise EmocaError("config_invalid", f"{path}: the likeness files must be in the take's folder or below it",
                         "Choose an output folder inside the take's folder.") from None  # fmt: skip


def write_sidecar(take_path: Path, sections: dict[str, Any]) -> Path:
    """Merge ``sections`` ({"identity"|"texture"|"detail": {...}}) into the take's sidecar and write it
    atomically (``NAME.likeness.json.partial`` then rename); returns its path."""
    from backend import __version__

    path = likeness_path(take_path)
    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}  # a damaged sidecar is replaced by this run's
    doc.update({"format": LIKENESS_FORMAT, "version": LIKENESS_VERSION, "take": Path(take_path).name,
                "backend_version": __version__, "created": base_meta()["created"]})  # fmt: skip
    doc.update(sections)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path
