"""Where captures put takes and rigs, and which files in a folder are takes (Blender-free: stdlib, numpy, contract).

Conventions:
* The take folder is a setting (``Scene.emoca.take_dir``, default ``//takes/``: beside the .blend). A ``//``
  path needs a saved .blend; an unsaved one is ``config_invalid`` before anything runs.
* A capture writes ``<folder>/<clip>.npz`` (one face) or ``<folder>/<clip>.track<K>.npz`` (all faces, named by
  the backend); a rig the backend exports for it goes to ``<folder>/rigs/<clip>_rig.npz``, never beside the
  takes, so a glob of the take folder meets takes only.
* Takes and rigs are both ``.npz``: they are told apart by ``meta.format`` (``emoca-take`` / ``emoca-rig``), read
  without loading any array and never with pickles.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.rig import RIG_FORMAT
from emoca_contract.take import TAKE_FORMAT, Take, is_npz, read_take

RIGS_FOLDER = "rigs"


def take_folder(setting: str, blend_path: str) -> Path:
    """The take folder a setting names: ``//x`` is relative to the saved .blend ``blend_path`` ("" when unsaved)."""
    if not setting.startswith("//"):
        return Path(setting)
    if not blend_path:
        raise EmocaError(
            "config_invalid",
            f"the take folder {setting!r} is beside the .blend, and this .blend is not saved yet",
            "Save the .blend first, or set an absolute Take Folder in the EMOCA panel.",
        )
    return Path(blend_path).parent / setting[2:]


def capture_targets(footage: str | os.PathLike, folder: str | os.PathLike, face: object) -> tuple[Path, Path]:
    """(the capture's ``output``: the take file, or the folder for ``face="all"``; the rig file to export)."""
    folder, stem = Path(folder), Path(footage).stem
    take = folder if face == "all" else folder / f"{stem}.npz"
    return take, folder / RIGS_FOLDER / f"{stem}_rig.npz"


def npz_format(path: str | os.PathLike) -> str | None:
    """The ``meta.format`` of an ``.npz`` (``emoca-take``, ``emoca-rig``, ...), None when it has none or is not
    a readable zip; only the small ``meta`` member is read."""
    path = Path(path)
    if not path.is_file() or not is_npz(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            if "meta.npy" not in zf.namelist() or zf.getinfo("meta.npy").file_size > 1 << 24:
                return None
            with zf.open("meta.npy") as fh:
                meta = json.loads(str(np.lib.format.read_array(fh, allow_pickle=False)))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RecursionError):
        return None
    return meta.get("format") if isinstance(meta, dict) and isinstance(meta.get("format"), str) else None


def take_files(folder: str | os.PathLike) -> list[Path]:
    """The take files in ``folder`` (sorted; rig files and any other ``.npz`` are skipped by their meta.format)."""
    return [p for p in sorted(Path(folder).glob("*.npz")) if npz_format(p) == TAKE_FORMAT]


def read_take_file(path: str | os.PathLike) -> Take:
    """:func:`~emoca_contract.take.read_take`, naming a rig file given where a take belongs (both are .npz)."""
    try:
        return read_take(path)
    except EmocaError as exc:
        if exc.code == "input_unsupported" and npz_format(path) == RIG_FORMAT:
            raise EmocaError(
                "input_unsupported",
                f"{path} is a rig file (meta.format {RIG_FORMAT!r}), not a take",
                "Import it with Import Rig (api.import_rig); apply the take files (api.take_files(folder) lists them).",
            ) from None
        raise
