"""Take files: one ``.npz`` per captured face track (numpy + stdlib only: the Blender 4.2 tests import it).

The contract is docs/formats.md#take-file; :data:`TAKE_KEYS` is its machine-readable form. Writers never leave
a file named ``.npz`` that is not complete: :func:`write_take` writes ``NAME.npz.partial`` and renames it, and
:class:`TakeWriter` appends rows to chunk files in a hidden folder next to the output (memory does not grow with
the clip) and assembles the ``.npz`` only in :meth:`TakeWriter.finalize`. Files hold no pickles: readers use
``allow_pickle=False`` and ``meta`` is a 0-d unicode array holding JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import BackendError

TAKE_FORMAT = "emoca-take"
TAKE_VERSION = 1

# name -> (shape, dtype). Strings are symbolic sizes: N frames, n_exp expression coefficients, K detector
# landmarks, C emotion classes; every array must agree on each symbol.
TAKE_KEYS: dict[str, tuple[tuple[int | str, ...], str]] = {
    "frame": (("N",), "int64"),
    "time": (("N",), "float64"),
    "valid": (("N",), "bool"),
    "interpolated": (("N",), "bool"),
    "confidence": (("N",), "float32"),
    "shape": (("N", 100), "float32"),
    "exp": (("N", "n_exp"), "float32"),
    "global_pose": (("N", 3), "float32"),
    "jaw_pose": (("N", 3), "float32"),
    "cam": (("N", 3), "float32"),
    "crop": (("N", 3, 3), "float32"),
    "landmarks": (("N", 68, 2), "float32"),
    "detected_landmarks": (("N", "K", 2), "float32"),
    "valence": (("N",), "float32"),
    "arousal": (("N",), "float32"),
    "expression": (("N", "C"), "float32"),
}
# The channels smoothing may change; their unsmoothed values are stored as raw_<name>.
SMOOTHED_KEYS: tuple[str, ...] = ("exp", "global_pose", "jaw_pose", "cam", "valence", "arousal", "expression")
for _k in SMOOTHED_KEYS:
    TAKE_KEYS["raw_" + _k] = TAKE_KEYS[_k]
REQUIRED_KEYS: tuple[str, ...] = tuple(TAKE_KEYS)
OPTIONAL_KEYS: dict[str, tuple[tuple[int | str, ...], str]] = {
    "tex": (("N", 50), "float32"),
    "light": (("N", 27), "float32"),
    "detail": (("N", 128), "float32"),
}
ALL_KEYS: dict[str, tuple[tuple[int | str, ...], str]] = {**TAKE_KEYS, **OPTIONAL_KEYS}

FER_CLASSES_DEFAULT = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def _backend_version() -> str:
    try:
        from backend import __version__

        return __version__
    except Exception:  # pragma: no cover - the package always has it
        return "unknown"


def check_arrays(arrays: Mapping[str, np.ndarray], where: str = "take") -> dict[str, int]:
    """Check names, shapes and dtypes against the contract; return the symbol sizes (N, n_exp, K, C).

    Raises BackendError('internal') naming the offending key: a writer bug, not a user error.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise BackendError("internal", f"{where}: missing take keys {missing}")
    unknown = [k for k in arrays if k not in ALL_KEYS and k != "meta"]
    if unknown:
        raise BackendError("internal", f"{where}: unknown take keys {unknown} (see docs/formats.md#take-file)")
    sizes: dict[str, int] = {}
    for key, value in arrays.items():
        if key == "meta":
            continue
        shape, dtype = ALL_KEYS[key]
        arr = np.asarray(value)
        if arr.dtype != np.dtype(dtype):
            raise BackendError("internal", f"{where}: {key} has dtype {arr.dtype}, expected {dtype}")
        if arr.ndim != len(shape):
            raise BackendError("internal", f"{where}: {key} has shape {arr.shape}, expected {shape}")
        for dim, want in zip(arr.shape, shape):
            if isinstance(want, str):
                if sizes.setdefault(want, dim) != dim:
                    raise BackendError(
                        "internal", f"{where}: {key} has {want}={dim} but another key has {want}={sizes[want]}"
                    )
            elif dim != want:
                raise BackendError("internal", f"{where}: {key} has shape {arr.shape}, expected {shape}")
    return sizes


def _coerce(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Cast values to the contract dtypes (lists, float64 arrays from numpy maths, ...)."""
    out = {}
    for key, value in arrays.items():
        if key in ALL_KEYS:
            out[key] = np.ascontiguousarray(np.asarray(value, dtype=ALL_KEYS[key][1]))
        else:
            out[key] = np.asarray(value)
    return out


def base_meta(**fields: Any) -> dict:
    """The meta fields every take carries (format, version, backend_version, created) plus ``fields``."""
    meta = {"format": TAKE_FORMAT, "version": TAKE_VERSION, "backend_version": _backend_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    meta.update(fields)
    return meta


def _meta_array(meta: Mapping[str, Any]) -> np.ndarray:
    full = base_meta()
    full.update(meta)
    return np.array(json.dumps(full, ensure_ascii=False, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def partial_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".partial")


def _write_npy_member(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...],
                      chunks: Iterable[np.ndarray]) -> None:
    """Stream one array into the zip as ``name.npy`` (header with the full shape, then the rows chunk by chunk)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)}
    with zf.open(name + ".npy", "w", force_zip64=True) as fp:
        np.lib.format.write_array_header_1_0(fp, header)
        written = 0
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            fp.write(chunk.tobytes())
            written += chunk.shape[0] if chunk.ndim else 1
        if shape and written != shape[0]:
            raise BackendError("internal", f"{name}: wrote {written} rows, header says {shape[0]}")


def write_take(path: str | os.PathLike, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Validate ``arrays`` against the contract and write the take atomically; return the path.

    Writes ``path + '.partial'`` then ``os.replace``s it onto ``path``: a file named ``.npz`` is always complete.
    """
    path = Path(path)
    arrays = _coerce(arrays)
    arrays.pop("meta", None)
    check_arrays(arrays, where=str(path))
    tmp = partial_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, arr in arrays.items():
                _write_npy_member(zf, key, arr.dtype, arr.shape, [arr])
            m = _meta_array(meta)
            _write_npy_member(zf, "meta", m.dtype, (), [m])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class TakeWriter:
    """Append rows to a take on disk; :meth:`finalize` assembles ``path`` atomically, :meth:`abort` removes all.

    Rows are buffered up to ``chunk_rows`` and then written as one ``.npy`` per key into a hidden folder
    ``.NAME.npz.parts`` next to the output, so memory stays at one chunk whatever the clip length.
    """

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None, chunk_rows: int = 256):
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.chunk_rows = int(chunk_rows)
        self.parts_dir = self.path.parent / f".{self.path.name}.parts"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.parts_dir.exists():
            shutil.rmtree(self.parts_dir)
        self.parts_dir.mkdir()
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._chunks = 0
        # on-disk layout, in row order: ("chunk", file number, rows) or ("zeros", None, rows)
        self._segments: list[tuple[str, int | None, int]] = []
        self.n_rows = 0
        self._row_shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._closed = False

    # -- writing rows -------------------------------------------------------------------------------------
    def append(self, row: Mapping[str, Any]) -> None:
        """Append one frame: ``row[key]`` has the contract shape without the leading N."""
        self.append_rows({k: np.asarray(v)[None] for k, v in row.items()})

    def append_rows(self, rows: Mapping[str, Any]) -> None:
        """Append a batch: ``rows[key]`` is (B, ...). Every call must give the same keys and row shapes."""
        if self._closed:
            raise BackendError("internal", f"{self.path}: append after finalize/abort")
        rows = _coerce(rows)
        n = None
        for key, arr in rows.items():
            if key not in ALL_KEYS:
                raise BackendError("internal", f"{self.path}: unknown take key {key!r}")
            sig = (arr.shape[1:], arr.dtype)
            if self._row_shapes.setdefault(key, sig) != sig:
                raise BackendError("internal", f"{self.path}: {key} rows changed shape {self._row_shapes[key]}"
                                   f" -> {sig}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise BackendError("internal", f"{self.path}: {key} has {arr.shape[0]} rows, others {n}")
        if set(rows) != set(self._row_shapes):
            raise BackendError("internal", f"{self.path}: rows must always carry the same keys")
        if not n:
            return
        for key, arr in rows.items():
            self._buffer.setdefault(key, []).append(arr)
        self._buffered += n
        self.n_rows += n
        if self._buffered >= self.chunk_rows:
            self.flush()

    def skip(self, n: int) -> None:
        """Append ``n`` invalid rows (all zeros) without storing them: a track seen late costs nothing."""
        if n < 0:
            raise BackendError("internal", f"{self.path}: cannot skip {n} rows")
        if n == 0:
            return
        self.flush()
        if self._segments and self._segments[-1][0] == "zeros":
            self._segments[-1] = ("zeros", None, self._segments[-1][2] + n)
        else:
            self._segments.append(("zeros", None, n))
        self.n_rows += n

    def flush(self) -> None:
        """Write the buffered rows as one chunk file per key."""
        if not self._buffered:
            return
        for key, parts in self._buffer.items():
            np.save(self.parts_dir / f"{key}.{self._chunks:06d}.npy", np.concatenate(parts), allow_pickle=False)
        self._segments.append(("chunk", self._chunks, self._buffered))
        self._buffer = {}
        self._buffered = 0
        self._chunks += 1

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory (at most ``chunk_rows``): the rest are on disk."""
        return self._buffered

    # -- reading back ---------------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._row_shapes)

    def iter_column(self, key: str) -> Iterable[np.ndarray]:
        """The rows of ``key`` chunk by chunk, skipped rows as zeros (memory: one chunk)."""
        self.flush()
        row_shape, dtype = self._row_shapes[key]
        for kind, number, rows in self._segments:
            if kind == "chunk":
                yield np.load(self.parts_dir / f"{key}.{number:06d}.npy", allow_pickle=False)
            else:
                for a in range(0, rows, self.chunk_rows):
                    yield np.zeros((min(self.chunk_rows, rows - a), *row_shape), dtype)

    def column(self, key: str) -> np.ndarray:
        """All rows of ``key`` (N, ...) in memory: for the small per-frame channels (smoothing, gaps)."""
        shape, dtype = self._row_shapes[key]
        parts = list(self.iter_column(key))
        return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)

    # -- finishing ------------------------------------------------------------------------------------------
    def finalize(self, extra_meta: Mapping[str, Any] | None = None,
                 columns: Mapping[str, Any] | None = None, path: str | os.PathLike | None = None) -> Path:
        """Assemble the take at ``path`` (default: the writer's) atomically, remove the parts; return the path.

        ``columns`` replace or add whole columns (N, ...) (e.g. smoothed channels and their ``raw_*``); every
        other key is streamed from the chunk files. The result is validated against the contract first.
        """
        if self._closed:
            raise BackendError("internal", f"{self.path}: finalize after finalize/abort")
        if path is not None:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush()
        columns = _coerce(columns or {})
        n = self.n_rows
        specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for key, (row_shape, dtype) in self._row_shapes.items():
            specs[key] = ((n, *row_shape), dtype)
        for key, arr in columns.items():
            if key not in ALL_KEYS:
                raise BackendError("internal", f"{self.path}: unknown take key {key!r}")
            specs[key] = (arr.shape, arr.dtype)
        # Validate shapes/dtypes with zero-copy stand-ins (no data is loaded for the check).
        stand_ins = {k: np.lib.stride_tricks.as_strided(np.zeros(1, dt), shape=s, strides=(0,) * len(s))
                     for k, (s, dt) in specs.items()}
        check_arrays(stand_ins, where=str(self.path))
        meta = dict(self.meta)
        meta.update(extra_meta or {})
        tmp = partial_path(self.path)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for key, (shape, dtype) in specs.items():
                    chunks = [columns[key]] if key in columns else self.iter_column(key)
                    _write_npy_member(zf, key, dtype, shape, chunks)
                m = _meta_array(meta)
                _write_npy_member(zf, "meta", m.dtype, (), [m])
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self._closed = True
        return self.path

    def abort(self) -> None:
        """Remove the parts and any partial file (idempotent). A finished ``.npz`` is never touched."""
        self._closed = True
        self._buffer = {}
        self._buffered = 0
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        partial_path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> TakeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.abort()


@dataclass
class Take:
    """A take in memory: ``arrays`` (key -> ndarray) and ``meta`` (the parsed JSON)."""

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
    def n_exp(self) -> int:
        return int(self.arrays["exp"].shape[1])

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("emotion", {}).get("classes", []))

    @property
    def fps(self) -> float | None:
        return self.meta.get("source", {}).get("fps")

    def save(self, path: str | os.PathLike) -> Path:
        return write_take(path, self.arrays, self.meta)


def _major(version: Any) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def read_take(path: str | os.PathLike, validate: bool = True) -> Take:
    """Load a take (no pickles). Refuses other formats and newer major versions with a clear BackendError."""
    path = Path(path)
    if not path.exists():
        raise BackendError("input_missing", f"take file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BackendError("input_corrupt", f"{path} is not a readable take file (.npz): {exc}") from exc
    if "meta" not in arrays:
        raise BackendError("input_unsupported", f"{path} has no 'meta': not an emoca take file")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise BackendError("input_corrupt", f"{path}: meta is not JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != TAKE_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise BackendError("input_unsupported", f"{path} is a {fmt!r} file, expected {TAKE_FORMAT!r}")
    major = _major(meta.get("version"))
    if major != TAKE_VERSION:
        raise BackendError(
            "input_unsupported",
            f"{path} is take format version {meta.get('version')}; this backend reads version {TAKE_VERSION}",
            "Update the add-on and backend to the version that wrote this take.",
        )
    if validate:
        # Newer minor versions may add keys: keep them, check only what we know.
        known = {k: v for k, v in arrays.items() if k in ALL_KEYS}
        try:
            check_arrays(known, where=str(path))
        except BackendError as exc:
            raise BackendError("input_corrupt", exc.message) from exc
    return Take(arrays=arrays, meta=meta, path=path)


def make_synthetic_take(n_frames: int, n_exp: int = 50, fps: float = 30.0, seed: int = 0,
                        n_landmarks: int = 478, classes: list[str] | None = None,
                        invalid: Iterable[int] = ()) -> Take:
    """A plausible take for tests (numpy only): smooth random curves, frames ``invalid`` hold zeros.

    The expression, pose and emotion curves are sums of slow sinusoids, so keyframe tests see real motion.
    """
    rng = np.random.default_rng(seed)
    classes = list(classes or FER_CLASSES_DEFAULT)
    n = int(n_frames)
    t = np.arange(n) / fps

    def curves(d: int, amp: float) -> np.ndarray:
        freq = rng.uniform(0.1, 1.5, size=(1, d))
        phase = rng.uniform(0, 2 * np.pi, size=(1, d))
        return (amp * np.sin(2 * np.pi * freq * t[:, None] + phase)).astype(np.float32)

    valid = np.ones(n, bool)
    valid[list(invalid)] = False
    logits = curves(len(classes), 2.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = np.full(n, 8.0, np.float32)
    crop = np.tile(np.array([[1.0, 0, 200], [0, 1.0, 60], [0, 0, 1]], np.float32), (n, 1, 1))
    landmarks = (rng.uniform(40, 180, size=(1, 68, 2)) + curves(2, 3.0)[:, None, :]).astype(np.float32)
    det = (rng.uniform(40, 180, size=(1, n_landmarks, 2)) + curves(2, 3.0)[:, None, :]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "frame": np.arange(n, dtype=np.int64),
        "time": t.astype(np.float64),
        "valid": valid,
        "interpolated": np.zeros(n, bool),
        "confidence": np.full(n, 0.95, np.float32),
        "shape": np.tile(rng.normal(0, 0.5, size=(1, 100)).astype(np.float32), (n, 1)),
        "exp": curves(n_exp, 1.0),
        "global_pose": curves(3, 0.2),
        "jaw_pose": np.abs(curves(3, 0.1)) * np.array([1, 0, 0], np.float32),
        "cam": np.stack([s, *curves(2, 0.01).T], 1).astype(np.float32),
        "crop": crop,
        "landmarks": landmarks,
        "detected_landmarks": det,
        "valence": curves(1, 0.6)[:, 0],
        "arousal": curves(1, 0.4)[:, 0],
        "expression": probs.astype(np.float32),
    }
    for key in arrays:
        if key not in ("frame", "time", "valid", "interpolated"):
            arrays[key][~valid] = 0
    for key in SMOOTHED_KEYS:
        arrays["raw_" + key] = arrays[key].copy()
    meta = base_meta(
        source={"path": "synthetic", "fps": fps, "width": 640, "height": 360, "frame_count": n, "rotation": 0,
                "frames": [0, n, 1]},
        track={"id": 0, "selection": "largest", "n_tracks": 1},
        model={"name": "synthetic take (not a capture)", "trained": False, "flame": "synthetic test head (not FLAME)",
               "device": "cpu"},
        emotion={"model": "synthetic", "classes": classes, "valence_arousal": "synthetic curves"},
        smoothing={"method": "off", "strength": 0.0, "groups": []},
        gaps={"max_interpolated": 0},
        fallbacks=["synthetic take"],
    )
    return Take(arrays=arrays, meta=meta)
