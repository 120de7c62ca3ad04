"""Writing take files (numpy + stdlib only: the Blender 4.2 tests write takes with it).

The format is the contract's (:mod:`emoca_contract.take`, docs/formats.md#take-file). Writers never leave
a file named ``.npz`` that is not complete: :func:`write_take` writes a hidden ``.NAME.npz.<unique>.partial`` and
renames it, and :class:`TakeWriter` appends rows to chunk files in a hidden folder of its own next to the output
(memory does not grow with the clip) and assembles the ``.npz`` only in :meth:`TakeWriter.finalize`. Files hold no
pickles: readers use ``allow_pickle=False`` and ``meta`` is a 0-d unicode array holding JSON.

Nothing is shared between writers: every partial file and parts folder has a unique name and is created new
(``O_EXCL``), so two writers of one path never mix or delete each other's data; a writer removes only what it made.
A failed write (a full disk, no permission) is an EmocaError ``output_unwritable`` (:func:`output_error`) and
leaves a take already at the path as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.take import ALL_KEYS, check_arrays, coerce, meta_json

# OS errors that mean there is no room for what is written: a full disk, a quota, the process's file size limit.
NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})
# OS errors that mean the place cannot be written at all.
NOT_ALLOWED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def output_error(exc: OSError, where: str | os.PathLike) -> EmocaError:
    """The coded error (``output_unwritable``) for ``exc``, met while writing the take ``where``: it says why
    (no room, no permission, a file in the way) and, truthfully, that a take already there is unchanged."""
    reason = exc.strerror or str(exc)
    kept = "a take already there is unchanged."
    if exc.errno in NO_ROOM:
        return EmocaError(
            "output_unwritable",
            f"{where}: not enough space to write the take ({reason})",
            f"Free space on that disk (or raise the file size limit), or choose an output on another disk; {kept}",
        )
    if exc.errno in NOT_ALLOWED:
        return EmocaError(
            "output_unwritable",
            f"{where}: the folder cannot be written ({reason})",
            f"Choose an output folder you can write to (-o), or fix its permissions; {kept}",
        )
    if exc.errno == errno.ENOENT:  # the folder is there (it was made first) but takes no new file: /proc, /sys
        return EmocaError(
            "output_unwritable",
            f"{where}: the folder does not take new files ({reason})",
            f"Choose an output folder you can write to (-o); {kept}",
        )
    if exc.errno == errno.ENOTDIR:
        return EmocaError(
            "output_unwritable",
            f"{where}: a part of the path is a file, not a folder ({reason})",
            f"Choose an output in a folder (-o FOLDER/NAME.npz); {kept}",
        )
    return EmocaError("output_unwritable", f"{where}: cannot be written ({reason})", f"Choose another output; {kept}")


def new_partial(path: Path) -> Path:
    """Create a new, empty hidden file ``.NAME.<unique>.partial`` beside ``path`` (``O_EXCL``: never one another
    writer uses) to write the take into before it is renamed onto ``path``. Permissions as for any new file."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def reserve(path: Path) -> None:
    """Allocate the blocks of the file at ``path`` now (Linux): a full disk then fails here with ENOSPC, not with a
    SIGBUS when a memory map of the file is written. Filesystems without the call keep a sparse file."""
    if not sys.platform.startswith("linux"):
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno in NO_ROOM:
                raise


def _write_npy_member(
    zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], chunks: Iterable[np.ndarray]
) -> None:
    """Stream one array into the zip as ``name.npy`` (header with the full shape, then the rows chunk by chunk)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(s) for s in shape),
    }
    with zf.open(name + ".npy", "w", force_zip64=True) as fp:
        np.lib.format.write_array_header_1_0(fp, header)
        written = 0
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            fp.write(chunk.tobytes())
            written += chunk.shape[0] if chunk.ndim else 1
        if shape and written != shape[0]:
            raise EmocaError("internal", f"{name}: wrote {written} rows, header says {shape[0]}")


def write_take(path: str | os.PathLike, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Validate ``arrays`` against the contract and write the take atomically; return the path.

    Writes a new hidden partial file beside ``path`` (:func:`new_partial`) then ``os.replace``s it onto ``path``: a
    file named ``.npz`` is always complete. EmocaError ``output_unwritable`` when it cannot be written.
    """
    path = Path(path)
    arrays = coerce(arrays)
    arrays.pop("meta", None)
    check_arrays(arrays, where=str(path), kind=meta.get("kind", "flame"))
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_partial(path)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, arr in arrays.items():
                _write_npy_member(zf, key, arr.dtype, arr.shape, [arr])
            m = np.array(meta_json(meta))
            _write_npy_member(zf, "meta", m.dtype, (), [m])
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(exc, path) from None
        raise
    return path


def _row_blocks(arr: np.ndarray, rows: int) -> Iterable[np.ndarray]:
    """``arr`` (N, ...) as blocks of ``rows`` rows (a 0-d array as itself): a memory map is read a block at a time."""
    if arr.ndim == 0:
        yield arr
        return
    for a in range(0, len(arr), rows):
        yield arr[a : a + rows]


class TakeWriter:
    """Append rows to a take on disk; :meth:`finalize` assembles ``path`` atomically, :meth:`abort` removes all.

    Rows are buffered up to ``chunk_rows`` and then written as one ``.npy`` per key into the writer's own parts
    folder, so memory stays at one chunk whatever the clip length. ``parts_dir``: where (a folder that must not
    exist yet: the writer creates it and removes it); default a new hidden ``.NAME.npz.<unique>.parts`` next to
    the output. ``label``: what error messages call the take (default its path).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: Mapping[str, Any] | None = None,
        chunk_rows: int = 256,
        parts_dir: str | os.PathLike | None = None,
        label: str | None = None,
    ):
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.chunk_rows = int(chunk_rows)
        self.label = label or str(self.path)
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if parts_dir is None:
                self.parts_dir = Path(
                    tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".parts", dir=self.path.parent)
                )
            else:
                self.parts_dir = Path(parts_dir)
                self.parts_dir.mkdir()  # new: a writer never reuses (nor deletes) a folder it did not make
        self._partial: Path | None = None
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._chunks = 0
        # on-disk layout, in row order: ("chunk", file number, rows) or ("zeros", None, rows)
        self._segments: list[tuple[str, int | None, int]] = []
        self.n_rows = 0
        self._row_shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._closed = False

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn an OSError met writing (a full disk, no permission) into EmocaError output_unwritable."""
        try:
            yield
        except OSError as exc:
            raise output_error(exc, self.label) from None

    # -- writing rows -------------------------------------------------------------------------------------
    def append(self, row: Mapping[str, Any]) -> None:
        """Append one frame: ``row[key]`` has the contract shape without the leading N."""
        self.append_rows({k: np.asarray(v)[None] for k, v in row.items()})

    def append_rows(self, rows: Mapping[str, Any]) -> None:
        """Append a batch: ``rows[key]`` is (B, ...). Every call must give the same keys and row shapes."""
        if self._closed:
            raise EmocaError("internal", f"{self.path}: append after finalize/abort")
        rows = coerce(rows)
        n = None
        for key, arr in rows.items():
            if key not in ALL_KEYS:
                raise EmocaError("internal", f"{self.path}: unknown take key {key!r}")
            sig = (arr.shape[1:], arr.dtype)
            if self._row_shapes.setdefault(key, sig) != sig:
                raise EmocaError("internal", f"{self.path}: {key} rows changed shape {self._row_shapes[key]} -> {sig}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise EmocaError("internal", f"{self.path}: {key} has {arr.shape[0]} rows, others {n}")
        if set(rows) != set(self._row_shapes):
            raise EmocaError("internal", f"{self.path}: rows must always carry the same keys")
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
            raise EmocaError("internal", f"{self.path}: cannot skip {n} rows")
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
        with self._writing():
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

    def column_map(self, key: str) -> np.ndarray:
        """All rows of ``key`` (N, ...) as a read-only memory map of one file in the parts folder, assembled chunk
        by chunk: for the large channels (the detector's points), whose whole column is never held in memory."""
        if self.n_rows == 0:
            return self.column(key)
        out = self.scratch(f"{key}.column", (self.n_rows, *self._row_shapes[key][0]), self._row_shapes[key][1])
        a = 0
        for chunk in self.iter_column(key):
            out[a : a + len(chunk)] = chunk
            a += len(chunk)
        out.flush()
        return np.load(self.parts_dir / f"{key}.column.npy", mmap_mode="r", allow_pickle=False)

    def scratch(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> np.memmap:
        """A writable memory-mapped (zero-filled) ``.npy`` array in the parts folder, removed with the parts:
        room for a large column computed from the chunks (e.g. its smoothed values). Its blocks are allocated
        first (:func:`reserve`): a full disk is an EmocaError here, not a crash when the map is written."""
        file = self.parts_dir / f"{name}.npy"
        with self._writing():
            out = np.lib.format.open_memmap(file, mode="w+", dtype=np.dtype(dtype), shape=shape)
            reserve(file)
        return out

    # -- finishing ------------------------------------------------------------------------------------------
    def finalize(
        self,
        extra_meta: Mapping[str, Any] | None = None,
        columns: Mapping[str, Any] | None = None,
        path: str | os.PathLike | None = None,
    ) -> Path:
        """Assemble the take at ``path`` (default: the writer's) atomically, remove the parts; return the path.

        ``columns`` replace or add whole columns (N, ...) (e.g. smoothed channels and their ``raw_*``; memory maps
        from :meth:`column_map` / :meth:`scratch` too), written ``chunk_rows`` rows at a time; every other key is
        streamed from the chunk files. The result is validated against the contract first.
        """
        if self._closed:
            raise EmocaError("internal", f"{self.path}: finalize after finalize/abort")
        if path is not None:
            self.path = Path(path)
            with self._writing():
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush()
        columns = coerce(columns or {})
        n = self.n_rows
        specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for key, (row_shape, dtype) in self._row_shapes.items():
            specs[key] = ((n, *row_shape), dtype)
        for key, arr in columns.items():
            if key not in ALL_KEYS:
                raise EmocaError("internal", f"{self.path}: unknown take key {key!r}")
            specs[key] = (arr.shape, arr.dtype)
        # Validate shapes/dtypes with zero-copy stand-ins (no data is loaded for the check).
        stand_ins = {
            k: np.lib.stride_tricks.as_strided(np.zeros(1, dt), shape=s, strides=(0,) * len(s))
            for k, (s, dt) in specs.items()
        }
        meta = dict(self.meta)
        meta.update(extra_meta or {})
        check_arrays(stand_ins, where=str(self.path), kind=meta.get("kind", "flame"))
        try:
            with self._writing():
                self._partial = new_partial(self.path)
                with zipfile.ZipFile(self._partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for key, (shape, dtype) in specs.items():
                        chunks = _row_blocks(columns[key], self.chunk_rows) if key in columns else self.iter_column(key)
                        _write_npy_member(zf, key, dtype, shape, chunks)
                    m = np.array(meta_json(meta))
                    _write_npy_member(zf, "meta", m.dtype, (), [m])
                os.replace(self._partial, self.path)
            self._partial = None
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Remove the writer's parts folder and partial file (idempotent). A finished ``.npz`` is never touched."""
        self._closed = True
        self._buffer = {}
        self._buffered = 0
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
            self._partial = None

    def __enter__(self) -> TakeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.abort()
