"""Read take files (docs/formats.md#take-file) with numpy only; the same contract as backend/take.py.

The add-on never imports the backend, so this is a second, independent reader of the same format: it checks
format, version, the keys the add-on uses and that every per-frame array has one row per frame.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EmocaError

TAKE_FORMAT = "emoca-take"
TAKE_VERSION = 1

# key -> trailing shape (None = any size); every key has N rows.
USED_KEYS: dict[str, tuple[int | None, ...]] = {
    "frame": (),
    "time": (),
    "valid": (),
    "exp": (None,),
    "global_pose": (3,),
    "jaw_pose": (3,),
    "cam": (3,),
    "crop": (3, 3),
    "valence": (),
    "arousal": (),
    "expression": (None,),
}
FLOAT_KEYS = ("time", "exp", "global_pose", "jaw_pose", "cam", "crop", "valence", "arousal", "expression")


@dataclass
class Take:
    """A take in memory: ``arrays`` (name -> array, N rows each) and the parsed ``meta`` JSON."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def n_frames(self) -> int:
        return int(self.arrays["frame"].shape[0])

    @property
    def n_exp(self) -> int:
        return int(self.arrays["exp"].shape[1])

    @property
    def fps(self) -> float | None:
        fps = self.meta.get("source", {}).get("fps")
        return float(fps) if fps else None

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("emotion", {}).get("classes", []))

    @property
    def clip_name(self) -> str:
        """The footage's file stem (what actions are named after), else the take's own stem."""
        src = self.meta.get("source", {}).get("path")
        stem = Path(str(src)).stem if src else ""
        return stem or self.path.name.removesuffix(".npz")


def _bad(path: Path, what: str) -> EmocaError:
    return EmocaError("input_corrupt", f"{path}: {what}", "Capture the take again; the file is not a valid take.")


def read_take(path: str | os.PathLike) -> Take:
    """Load and validate a take file; raise EmocaError naming the file and what was expected."""
    path = Path(path)
    if path.name.endswith(".partial"):
        raise EmocaError("input_corrupt", f"{path}: an unfinished take (.partial)", "Wait for the capture to finish.")
    if not path.is_file():
        raise EmocaError("input_missing", f"take file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise _bad(path, f"not a readable .npz take ({exc})") from exc
    if "meta" not in arrays:
        raise _bad(path, "no 'meta' entry")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise _bad(path, f"'meta' is not JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != TAKE_FORMAT:
        raise _bad(path, f"meta.format is {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                         f"expected {TAKE_FORMAT!r}")
    version = meta.get("version")
    try:
        major = int(str(version).split(".")[0])
    except ValueError as exc:
        raise _bad(path, f"meta.version {version!r} is not a version number") from exc
    if major > TAKE_VERSION:
        raise EmocaError("input_unsupported", f"{path}: take format version {version} is newer than this add-on "
                         f"reads ({TAKE_VERSION})", "Update the add-on.")
    missing = [k for k in USED_KEYS if k not in arrays]
    if missing:
        raise _bad(path, f"missing keys {missing}")
    n = int(arrays["frame"].shape[0]) if arrays["frame"].ndim == 1 else -1
    if n < 1:
        raise _bad(path, f"'frame' has shape {arrays['frame'].shape}, expected (N,) with N >= 1")
    for key, trail in USED_KEYS.items():
        arr = arrays[key]
        if arr.ndim != 1 + len(trail) or arr.shape[0] != n or any(
            t is not None and s != t for s, t in zip(arr.shape[1:], trail)
        ):
            want = ", ".join(["N"] + ["*" if t is None else str(t) for t in trail])
            raise _bad(path, f"'{key}' has shape {arr.shape}, expected ({want}) with N={n}")
    if arrays["valid"].dtype != np.bool_:
        raise _bad(path, f"'valid' has dtype {arrays['valid'].dtype}, expected bool")
    for key in FLOAT_KEYS:
        if arrays[key].dtype.kind != "f":
            raise _bad(path, f"'{key}' has dtype {arrays[key].dtype}, expected float")
    valid = arrays["valid"]
    for key in FLOAT_KEYS:
        if not np.isfinite(arrays[key][valid]).all():
            raise _bad(path, f"'{key}' holds NaN or infinite values in valid frames")
    if not np.isfinite(arrays["time"]).all() or np.any(np.diff(arrays["time"]) <= 0):
        raise _bad(path, "'time' must be finite and strictly increasing")
    if np.any(np.diff(arrays["frame"]) <= 0):
        raise _bad(path, "'frame' must be strictly increasing")
    classes = meta.get("emotion", {}).get("classes", [])
    if classes and len(classes) != arrays["expression"].shape[1]:
        raise _bad(path, f"meta.emotion.classes names {len(classes)} classes but 'expression' has "
                         f"{arrays['expression'].shape[1]} columns")
    return Take(path=path, arrays=arrays, meta=meta)
