"""Take files (docs/formats.md#take-file): the format and its one reader. numpy + stdlib only.

A take is one ``.npz`` per captured face track: per-frame arrays named in :data:`TAKE_KEYS` (the machine-readable
form of the contract) plus a ``meta`` JSON string. The backend writes takes (``backend.take.writer``); the
add-on, pipeline scripts and the backend itself read them with :func:`read_take`, which validates everything a
consumer relies on before anything is used: the format and version, every array's shape and dtype kind, finite
values in valid rows, strictly increasing frames and times, and the types of the ``meta`` fields. Every problem
is an :class:`~emoca_contract.errors.EmocaError` naming the file and what was expected, never a raw exception.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .arkit import ARKIT_INDEX
from .errors import EmocaError

TAKE_FORMAT = "emoca-take"
TAKE_VERSION = 2
# Readers accept every major version from the first to this one (older takes stay readable).
OLDEST_VERSION = 1
# What a take's face parameters are (meta.kind): FLAME codes from an EMOCA/DECA network, or the open path's ARKit
# blendshape scores and head pose from MediaPipe's Face Landmarker. Version 1 takes are all "flame".
KINDS = ("flame", "open")

# name -> (shape, dtype). Strings are symbolic sizes: N frames, n_exp expression coefficients, K detector
# landmarks, C emotion classes, A ARKit channels (52); every array must agree on each symbol.
Spec = tuple[tuple[int | str, ...], str]
COMMON_KEYS: dict[str, Spec] = {
    "frame": (("N",), "int64"),
    "time": (("N",), "float64"),
    "valid": (("N",), "bool"),
    "interpolated": (("N",), "bool"),
    "confidence": (("N",), "float32"),
    "global_pose": (("N", 3), "float32"),
    "crop": (("N", 3, 3), "float32"),
    "detected_landmarks": (("N", "K", 2), "float32"),
    "valence": (("N",), "float32"),
    "arousal": (("N",), "float32"),
    "expression": (("N", "C"), "float32"),
}
FLAME_KEYS: dict[str, Spec] = {
    "shape": (("N", 100), "float32"),
    "exp": (("N", "n_exp"), "float32"),
    "jaw_pose": (("N", 3), "float32"),
    "cam": (("N", 3), "float32"),
    "landmarks": (("N", 68, 2), "float32"),
}
OPEN_KEYS: dict[str, Spec] = {
    "arkit": (("N", "A"), "float32"),
    "translation": (("N", 3), "float32"),
}
# The channels smoothing may change, per kind; their unsmoothed values are stored as raw_<name>. The 2D
# channels (crop, landmarks, detected_landmarks) are smoothed too, so a take's points are as steady as its
# parameters; version 1 takes have no raw_ of them (they were never smoothed: their values are the raw ones).
SMOOTHED_BY_KIND: dict[str, tuple[str, ...]] = {
    "flame": ("exp", "global_pose", "jaw_pose", "cam", "valence", "arousal", "expression", "crop", "landmarks",
              "detected_landmarks"),
    "open": ("arkit", "global_pose", "translation", "valence", "arousal", "expression", "crop",
             "detected_landmarks"),
}  # fmt: skip
# Smoothed when present, though not required: an EMOCA take's detector ARKit scores.
SMOOTHED_OPTIONAL_BY_KIND: dict[str, tuple[str, ...]] = {"flame": ("arkit",), "open": ()}


def _with_raw(keys: dict[str, Spec], smoothed: tuple[str, ...]) -> dict[str, Spec]:
    return {**keys, **{"raw_" + k: keys[k] for k in smoothed}}


# What a writer must write, per kind.
KEYS_BY_KIND: dict[str, dict[str, Spec]] = {
    "flame": _with_raw({**COMMON_KEYS, **FLAME_KEYS}, SMOOTHED_BY_KIND["flame"]),
    "open": _with_raw({**COMMON_KEYS, **OPEN_KEYS}, SMOOTHED_BY_KIND["open"]),
}
TAKE_KEYS = KEYS_BY_KIND["flame"]  # the FLAME take (the only kind of version 1)
SMOOTHED_KEYS = SMOOTHED_BY_KIND["flame"]
REQUIRED_KEYS: tuple[str, ...] = tuple(TAKE_KEYS)
OPTIONAL_KEYS: dict[str, Spec] = {
    "tex": (("N", 50), "float32"),
    "light": (("N", 27), "float32"),
    "detail": (("N", 128), "float32"),
}
# Every key a take of any kind may hold: an EMOCA take may also carry the detector's ARKit scores (cheap), an
# open take never FLAME codes.
ALL_KEYS: dict[str, Spec] = {**KEYS_BY_KIND["flame"], **KEYS_BY_KIND["open"], **OPTIONAL_KEYS}
ALLOWED_BY_KIND: dict[str, set[str]] = {
    "flame": set(KEYS_BY_KIND["flame"]) | set(OPTIONAL_KEYS) | {"arkit", "raw_arkit", "translation"},
    "open": set(KEYS_BY_KIND["open"]),
}
# What a reader needs to use a take (what apply and retarget read); every other known key is checked when present,
# so takes written by other tools (a pipeline script, an importer) need only these.
READ_KEYS_BY_KIND: dict[str, tuple[str, ...]] = {
    "flame": ("frame", "time", "valid", "exp", "global_pose", "jaw_pose", "cam", "crop", "valence", "arousal",
              "expression"),
    "open": ("frame", "time", "valid", "arkit", "global_pose", "valence", "arousal", "expression"),
}  # fmt: skip
READ_KEYS = READ_KEYS_BY_KIND["flame"]

FER_CLASSES_DEFAULT = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
# Blender names ID properties with at most 63 bytes; an emotion curve is "emoca_expr_<Class>".
MAX_CLASS_NAME = 63 - len("emoca_expr_")
# A take longer than this is a corrupt time column, not a performance (a day of footage at any rate).
MAX_TAKE_SECONDS = 24 * 3600.0

RECAPTURE_HINT = "Capture the take again; the file is not a valid take."


# --------------------------------------------------------------------------------------------------------------
# checking arrays against the contract


def check_kind(kind: Any, where: str = "take") -> str:
    """``kind`` if it is one of :data:`KINDS`, else EmocaError('internal')."""
    if kind not in KINDS:
        raise EmocaError("internal", f"{where}: take kind {kind!r}, expected one of {KINDS}")
    return str(kind)


def check_arrays(arrays: Mapping[str, np.ndarray], where: str = "take", kind: str = "flame") -> dict[str, int]:
    """Check names, shapes and exact dtypes against the contract for a take of ``kind``; return the symbol sizes
    (N, n_exp, K, C, A).

    For writers: raises EmocaError('internal') naming the offending key (a writer bug, not a user error).
    """
    kind = check_kind(kind, where)
    missing = [k for k in KEYS_BY_KIND[kind] if k not in arrays]
    if missing:
        raise EmocaError("internal", f"{where}: missing {kind} take keys {missing}")
    unknown = [k for k in arrays if k not in ALLOWED_BY_KIND[kind] and k != "meta"]
    if unknown:
        raise EmocaError("internal", f"{where}: unknown take keys {unknown} (see docs/formats.md#take-file)")
    sizes: dict[str, int] = {}
    for key, value in arrays.items():
        if key == "meta":
            continue
        arr = np.asarray(value)
        if arr.dtype != np.dtype(ALL_KEYS[key][1]):
            raise EmocaError("internal", f"{where}: {key} has dtype {arr.dtype}, expected {ALL_KEYS[key][1]}")
        message = _shape_problem(key, arr.shape, sizes)
        if message:
            raise EmocaError("internal", f"{where}: {message}")
    return sizes


def _shape_problem(key: str, shape: tuple[int, ...], sizes: dict[str, int]) -> str | None:
    """Why ``shape`` breaks the contract for ``key`` (None when it fits); records symbol sizes in ``sizes``."""
    want = ALL_KEYS[key][0]
    if len(shape) != len(want):
        return f"{key} has shape {shape}, expected {want}"
    for dim, w in zip(shape, want):
        if isinstance(w, str):
            if sizes.setdefault(w, dim) != dim:
                return f"{key} has {w}={dim} but another key has {w}={sizes[w]}"
        elif dim != w:
            return f"{key} has shape {shape}, expected {want}"
    return None


def coerce(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Cast values to the contract dtypes (lists, float64 arrays from numpy maths, ...)."""
    out = {}
    for key, value in arrays.items():
        if key in ALL_KEYS:
            out[key] = np.ascontiguousarray(np.asarray(value, dtype=ALL_KEYS[key][1]))
        else:
            out[key] = np.asarray(value)
    return out


# --------------------------------------------------------------------------------------------------------------
# meta


def base_meta(kind: str = "flame", **fields: Any) -> dict[str, Any]:
    """The meta fields every take carries (format, version, kind, backend_version, created) plus ``fields``."""
    meta: dict[str, Any] = {
        "format": TAKE_FORMAT,
        "version": TAKE_VERSION,
        "kind": check_kind(kind),
        "backend_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    meta.update(fields)
    return meta


def meta_json(meta: Mapping[str, Any]) -> str:
    """``meta`` over :func:`base_meta`'s fields, as the JSON string a take stores (numpy values made plain)."""
    full = base_meta()
    full.update(meta)
    return json.dumps(full, ensure_ascii=False, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def partial_path(path: str | os.PathLike) -> Path:
    """Where a take is written before it is complete (renamed onto ``path`` when finished)."""
    return Path(str(path) + ".partial")


# --------------------------------------------------------------------------------------------------------------
# the take in memory


@dataclass
class Take:
    """A take in memory: ``arrays`` (key -> ndarray, N rows each) and ``meta`` (the parsed, checked JSON)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def n_frames(self) -> int:
        return int(self.arrays["frame"].shape[0])

    @property
    def kind(self) -> str:
        """ "flame" (FLAME codes: exp, jaw_pose, ...) or "open" (ARKit scores ``arkit`` and head pose)."""
        return str(self.meta.get("kind", "flame"))

    @property
    def n_exp(self) -> int:
        """FLAME expression coefficients (0 for an open take)."""
        return int(self.arrays["exp"].shape[1]) if "exp" in self.arrays else 0

    @property
    def arkit_names(self) -> list[str]:
        """The names of the ``arkit`` columns (meta.arkit.names); empty when the take has none."""
        return list(self.meta.get("arkit", {}).get("names", [])) if "arkit" in self.arrays else []

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("emotion", {}).get("classes", []))

    @property
    def fps(self) -> float | None:
        """The footage's frame rate (meta.source.fps), None when unknown (an image sequence)."""
        fps = self.meta.get("source", {}).get("fps")
        return float(fps) if fps else None

    @property
    def likeness(self) -> dict[str, Any] | None:
        """The take's likeness sidecar (:func:`read_likeness`), None when it has none or is not on disk."""
        return read_likeness(self.path) if self.path is not None else None

    @property
    def clip_name(self) -> str:
        """The footage's file stem (what actions are named after), else the take's own stem."""
        src = self.meta.get("source", {}).get("path")
        stem = Path(str(src)).stem if src else ""
        if stem:
            return stem
        return self.path.name.removesuffix(".npz") if self.path is not None else "take"


# --------------------------------------------------------------------------------------------------------------
# reading

# Frame numbers a consumer can key: Blender's frame numbers are 32-bit integers.
MAX_FRAME = 2**31 - 1
# Footage rates a take can claim (meta.source.fps): what a scene can be set to (Blender: 1 to 32767 fps).
MIN_FPS, MAX_FPS = 1.0, 10_000.0
# Footage sides a take can claim (meta.source.width/height), in pixels: beyond any video or image format's.
MAX_SIDE = 1 << 16
# What a take's zip may hold and numpy's loader may meet: every failure of reading a damaged archive.
_UNREADABLE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError)


def _bad(path: Path, what: str) -> EmocaError:
    return EmocaError("input_corrupt", f"{path}: {what}", RECAPTURE_HINT)


def read_take(path: str | os.PathLike) -> Take:
    """Load and validate a take file (no pickles); raise EmocaError naming the file and what was expected.

    Codes: ``input_missing`` (no such file), ``input_unsupported`` (not a take, or a newer major version),
    ``input_corrupt`` (unreadable, unfinished ``.partial``, or any array or meta field out of contract).
    Keys this version does not know (a newer minor version) are kept, unchecked.
    """
    path = Path(path)
    if path.name.endswith(".partial"):
        raise EmocaError("input_corrupt", f"{path}: an unfinished take (.partial)", "Wait for the capture to finish.")
    if not path.is_file():
        raise EmocaError("input_missing", f"take file not found: {path}")
    arrays = _load_npz(path)
    meta = _parse_meta(path, arrays.pop("meta", None))
    check_take_arrays(arrays, path, meta["kind"])
    check_meta(meta, arrays, path)
    return Take(arrays=arrays, meta=meta, path=path)


def is_npz(path: Path) -> bool:
    """Whether the file starts like a zip archive (what every ``.npz`` is); numpy reads anything else as a pickle."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every member of the take's zip (``NAME.npy`` -> NAME), each header checked before its data is read."""
    if not is_npz(path):
        raise _bad(path, "not a readable .npz take (no zip header)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = [info for info in zf.infolist() if not info.is_dir()]
            return {_member_key(info): _read_member(path, zf, info) for info in members}
    except MemoryError as exc:
        raise _bad(path, "an array is too large to load") from exc
    except _UNREADABLE as exc:  # damaged zip (CRC, deflate stream, encrypted, unknown method), not a .npy, ...
        raise _bad(path, f"not a readable .npz take ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _member_key(info: zipfile.ZipInfo) -> str:
    return info.filename.removesuffix(".npy")


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member: refused before any data is read when it holds pickled objects (``unsafe_file``) or
    declares more data than the member holds (a lying header must not allocate memory)."""
    key = _member_key(info)
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)  # ValueError: not a .npy member
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # 3.0 only serves structured dtypes with non-latin-1 field names: never a take array
            raise _bad(path, f"'{key}' is a .npy of format version {version}, expected 1.0 or 2.0")
    if dtype.hasobject:
        raise EmocaError("unsafe_file", f"{path}: '{key}' holds pickled objects; a take is plain arrays")
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        raise _bad(path, f"'{key}' declares {shape} {dtype} ({declared} bytes) but holds {info.file_size} bytes")
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _parse_meta(path: Path, value: np.ndarray | None) -> dict[str, Any]:
    if value is None:
        raise EmocaError("input_unsupported", f"{path} has no 'meta': not an emoca take file")
    if value.dtype.kind != "U" or value.ndim != 0:
        raise _bad(path, f"'meta' is {value.dtype} {value.shape}, expected a JSON string")
    try:
        meta = json.loads(str(value))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int over Python's digit limit, deep nesting
        raise _bad(path, f"'meta' is not JSON ({str(exc)[:200]})") from exc
    if not isinstance(meta, dict) or meta.get("format") != TAKE_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        hint = "It is a rig file: import it with Import Rig (or api.import_rig)." if fmt == "emoca-rig" else None
        raise EmocaError(
            "input_unsupported", f"{path}: meta.format is {fmt!r}, expected {TAKE_FORMAT!r} (not a take)", hint
        )
    version = meta.get("version")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise _bad(path, f"meta.version {version!r} is not a version number") from None
    if major > TAKE_VERSION:
        raise EmocaError(
            "input_unsupported",
            f"{path}: take format version {version} is newer than this reader (versions {OLDEST_VERSION} to "
            f"{TAKE_VERSION})",
            "Update the add-on and backend to the version that wrote this take.",
        )
    if major < OLDEST_VERSION:
        raise EmocaError("input_unsupported", f"{path}: take format version {version} is not supported")
    kind = meta.setdefault("kind", "flame")  # version 1 takes are FLAME takes
    if kind not in KINDS:
        raise EmocaError("input_unsupported", f"{path}: take kind {kind!r}; this reader reads {', '.join(KINDS)}")
    return meta


FLOAT_KINDS = "f"


def check_take_arrays(arrays: Mapping[str, np.ndarray], path: Path | str, kind: str = "flame") -> dict[str, int]:
    """A reader's checks: the keys a consumer of ``kind`` reads (:data:`READ_KEYS_BY_KIND`), shapes agreeing on
    N/n_exp/K/C/A for every known key present, dtype kinds (any float width is accepted where the contract says
    float), finite values in valid rows, increasing frames and times."""
    where = Path(path)
    missing = [k for k in READ_KEYS_BY_KIND[kind] if k not in arrays]
    if missing:
        raise _bad(where, f"missing keys {missing}")
    sizes: dict[str, int] = {}
    for key in [k for k in ALL_KEYS if k in arrays]:
        arr = arrays[key]
        message = _shape_problem(key, arr.shape, sizes)
        if message:
            raise _bad(where, message)
        want = np.dtype(ALL_KEYS[key][1]).kind
        kinds = {"f": "f", "b": "b", "i": "iu"}[want]
        if arr.dtype.kind not in kinds:
            raise _bad(where, f"'{key}' has dtype {arr.dtype}, expected {ALL_KEYS[key][1]}")
    n = sizes["N"]
    if n < 1:
        raise _bad(where, "the take has no frames (N = 0)")
    valid = arrays["valid"]
    for key in [k for k in ALL_KEYS if k in arrays and arrays[k].dtype.kind == "f" and k != "time"]:
        if not np.isfinite(arrays[key][valid]).all():
            raise _bad(where, f"'{key}' holds NaN or infinite values in valid frames")
    times = arrays["time"]
    if not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
        raise _bad(where, "'time' must be finite and strictly increasing")
    if float(times[-1] - times[0]) > MAX_TAKE_SECONDS:
        raise _bad(where, f"'time' spans {float(times[-1] - times[0]):.3g} s (more than a day): not footage times")
    frames = arrays["frame"]  # compared, not differenced: a difference of unsigned frames wraps around
    if frames[0] < 0 or np.any(frames[1:] <= frames[:-1]):
        raise _bad(where, "'frame' must be non-negative and strictly increasing")
    if frames[-1] > MAX_FRAME:
        raise _bad(where, f"'frame' reaches {int(frames[-1])}: frame numbers must stay below 2**31")
    return sizes


def _number(value: Any) -> bool:
    """A JSON number that is finite (a JSON integer may have hundreds of digits: too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def check_meta(meta: dict[str, Any], arrays: Mapping[str, np.ndarray], path: Path | str) -> None:
    """The types of the meta fields consumers use (source, emotion, track, model, smoothing, warnings)."""
    where = Path(path)
    for section in ("source", "emotion", "track", "model", "smoothing", "gaps"):
        if section in meta and not isinstance(meta[section], dict):
            raise _bad(where, f"meta.{section} is a {type(meta[section]).__name__}, expected an object")
    _check_source(meta.get("source", {}), where)
    _check_classes(meta.get("emotion", {}).get("classes", []), arrays, where)
    for key in ("warnings", "fallbacks"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(m, str) for m in meta[key])):
            raise _bad(where, f"meta.{key} must be a list of strings")
    if "arkit" in arrays:
        _check_arkit_meta(meta, arrays["arkit"], where)


def _check_source(source: dict[str, Any], where: Path) -> None:
    """``meta.source``: a frame rate and frame size a scene can take, a path that is a string."""
    for key in ("fps", "width", "height"):
        value = source.get(key)
        if value is not None and not (_number(value) and value > 0):
            raise _bad(where, f"meta.source.{key} is {value!r}"[:200] + ", expected a positive number")
    fps = source.get("fps")
    if fps is not None and not MIN_FPS <= fps <= MAX_FPS:
        expected = f"expected a frame rate from {MIN_FPS:g} to {MAX_FPS:g}"
        raise _bad(where, f"meta.source.fps is {fps!r}"[:80] + ", " + expected)
    for key in ("width", "height"):
        if source.get(key) is not None and source[key] > MAX_SIDE:
            raise _bad(where, f"meta.source.{key} is {source[key]!r}"[:80] + f", expected at most {MAX_SIDE} pixels")
    if source.get("path") is not None and not isinstance(source["path"], str):
        raise _bad(where, f"meta.source.path is {source['path']!r}"[:200] + ", expected a string")


def _check_classes(classes: Any, arrays: Mapping[str, np.ndarray], where: Path) -> None:
    """``meta.emotion.classes``: unique, non-empty names short enough for Blender, one per 'expression' column."""
    if not isinstance(classes, list) or not all(isinstance(c, str) and c.strip() and c.isprintable() for c in classes):
        raise _bad(where, f"meta.emotion.classes must be a list of printable class names, not {classes!r}"[:200])
    long = [c for c in classes if len(c.encode("utf-8")) > MAX_CLASS_NAME]
    if long:
        raise _bad(where, f"meta.emotion.classes has a name over {MAX_CLASS_NAME} bytes: {long[0][:80]!r}")
    if len(set(classes)) != len(classes):
        raise _bad(where, f"meta.emotion.classes repeats a name: {classes}")
    if classes and len(classes) != arrays["expression"].shape[1]:
        raise _bad(where, f"meta.emotion.classes names {len(classes)} classes but 'expression' has "
                          f"{arrays['expression'].shape[1]} columns")  # fmt: skip


def _check_arkit_meta(meta: dict[str, Any], arkit: np.ndarray, where: Path) -> None:
    """``meta.arkit.names``: one known ARKit name per ``arkit`` column, no repeats."""
    section = meta.get("arkit")
    if not isinstance(section, dict):
        raise _bad(where, "the take has 'arkit' columns but no meta.arkit object naming them")
    names = section.get("names")
    if not isinstance(names, list) or len(names) != arkit.shape[1] or not all(isinstance(n, str) for n in names):
        raise _bad(where, f"meta.arkit.names must name the {arkit.shape[1]} 'arkit' columns with strings")
    unknown = [n for n in names if n not in ARKIT_INDEX]
    if unknown or len(set(names)) != len(names):
        raise _bad(where, f"meta.arkit.names holds unknown or repeated ARKit names: {unknown[:5] or names}"[:300])


# --------------------------------------------------------------------------------------------------------------
# the likeness beside a take (docs/formats.md "Likeness sidecar", docs/likeness.md)

LIKENESS_FORMAT = "emoca-likeness"
LIKENESS_VERSION = 1
LIKENESS_SUFFIX = ".likeness.json"
IDENTITY_FORMAT = "emoca-identity"
IDENTITY_VERSION = 1
# section -> its keys naming files (relative to the sidecar's folder; a detail ``pattern`` holds one %d field)
LIKENESS_FILES: dict[str, tuple[str, ...]] = {
    "identity": ("file",),
    "texture": ("albedo", "coverage"),
    "detail": ("pattern",),
}
LIKENESS_HINT = "Make the likeness again: python -m backend likeness TAKE VIDEO."


def likeness_path(take_path: str | os.PathLike) -> Path:
    """Where a take's likeness sidecar lives: ``NAME.npz`` -> ``NAME.likeness.json`` beside it."""
    path = Path(take_path)
    return path.with_name(path.name.removesuffix(".npz") + LIKENESS_SUFFIX)


def _relative_file(value: Any, where: Path, key: str) -> str:
    """A sidecar's file name: a relative path inside the sidecar's folder (no absolute path, no ``..``)."""
    if not isinstance(value, str) or not value or Path(value).is_absolute() or ".." in Path(value).parts:
        raise EmocaError("input_corrupt", f"{where}: {key} is {value!r}"[:200] + ", expected a file name beside it",
                         LIKENESS_HINT)  # fmt: skip
    return value


def read_likeness(take_path: str | os.PathLike) -> dict[str, Any] | None:
    """A take's likeness sidecar, checked, with each named file resolved (``<key>_path``: absolute paths) and
    ``present`` per section (whether its files exist; a detail sequence: its first frame's); None when the take
    has none. EmocaError('input_corrupt'/'input_unsupported') for a damaged or newer sidecar."""
    where = likeness_path(take_path)
    if not where.is_file():
        return None
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = f"{where}: not a readable likeness file ({exc})"[:300]
        raise EmocaError("input_corrupt", message, LIKENESS_HINT) from exc
    if not isinstance(doc, dict) or doc.get("format") != LIKENESS_FORMAT:
        raise EmocaError("input_unsupported", f"{where}: not a likeness file (format {LIKENESS_FORMAT!r})")
    if not isinstance(doc.get("version"), int) or doc["version"] > LIKENESS_VERSION:
        raise EmocaError("input_unsupported", f"{where}: likeness version {doc.get('version')!r}; this reader reads "
                         f"up to {LIKENESS_VERSION}", "Update the add-on and backend together.")  # fmt: skip
    for section, keys in LIKENESS_FILES.items():
        part = doc.get(section)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise EmocaError("input_corrupt", f"{where}: {section} must be an object", LIKENESS_HINT)
        for key in keys:
            if key in part:
                part[key + "_path"] = str(where.parent / _relative_file(part[key], where, f"{section}.{key}"))
        _check_likeness_section(section, part, where)
    return doc


def _check_likeness_section(section: str, part: dict[str, Any], where: Path) -> None:
    """The fields a consumer relies on, per section; sets ``present``."""
    if section == "detail":
        frames = part.get("frames")
        if not isinstance(frames, list) or not all(isinstance(f, int) and 0 <= f <= MAX_FRAME for f in frames):
            raise EmocaError("input_corrupt", f"{where}: detail.frames must be a list of frame numbers", LIKENESS_HINT)
        if "%" not in part.get("pattern", "") or not all(_number(part.get(k)) for k in ("scale", "midlevel")):
            raise EmocaError("input_corrupt", f"{where}: detail needs a %d pattern, a scale and a midlevel",
                             LIKENESS_HINT)  # fmt: skip
        first = part["pattern_path"] % frames[0] if frames else ""
        part["present"] = bool(frames) and Path(first).is_file()
        return
    if section == "texture":
        uv = part.get("uv_range")
        if not (isinstance(uv, list) and len(uv) == 2 and all(_span(r) for r in uv)):
            raise EmocaError("input_corrupt", f"{where}: texture.uv_range must be [[u0, u1], [v0, v1]]", LIKENESS_HINT)
        part["present"] = Path(part.get("albedo_path", "")).is_file()
        return
    part["present"] = Path(part.get("file_path", "")).is_file()


def _span(value: Any) -> bool:
    """A ``[low, high]`` pair of finite numbers with low < high."""
    return isinstance(value, list) and len(value) == 2 and all(_number(x) for x in value) and value[0] < value[1]


def read_identity(path: str | os.PathLike) -> dict[str, Any]:
    """An identity file (``NAME_identity.npz``, docs/formats.md "Identity file"): ``coefficients`` (n,) float32,
    ``offsets`` (V, 3) float32 when present, and ``meta`` (kind, name, head, how it was estimated)."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("input_missing", f"identity file not found: {path}", LIKENESS_HINT)
    if not is_npz(path):
        raise EmocaError("input_corrupt", f"{path}: not an identity .npz (no zip header)", LIKENESS_HINT)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        message = f"{path}: not a readable identity file ({exc})"[:300]
        raise EmocaError("input_corrupt", message, LIKENESS_HINT) from exc
    if not isinstance(meta, dict) or meta.get("format") != IDENTITY_FORMAT or meta.get("kind") not in KINDS:
        raise EmocaError("input_unsupported", f"{path}: not an identity file (format {IDENTITY_FORMAT!r})")
    coeffs = arrays.get("coefficients")
    if coeffs is None or coeffs.ndim != 1 or coeffs.dtype.kind != "f" or not np.isfinite(coeffs).all():
        raise EmocaError("input_corrupt", f"{path}: 'coefficients' must be finite floats (n,)", LIKENESS_HINT)
    offsets = arrays.get("offsets")
    if offsets is not None and (offsets.ndim != 2 or offsets.shape[1] != 3 or not np.isfinite(offsets).all()):
        raise EmocaError("input_corrupt", f"{path}: 'offsets' must be finite (V, 3)", LIKENESS_HINT)
    out: dict[str, Any] = {"coefficients": coeffs.astype(np.float32), "meta": meta}
    if offsets is not None:
        out["offsets"] = offsets.astype(np.float32)
    return out
