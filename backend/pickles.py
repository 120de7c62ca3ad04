"""Every rule for reading the pickles the project meets (numpy + stdlib; torch is never imported here).

Pickles can run code, so no file is ever unpickled with the default rules. Three formats are read:

1. FLAME's ``generic_model.pkl`` (a 2017-era protocol-2 pickle of chumpy ``Ch`` objects and a scipy sparse
   matrix) and RingNet's static embedding: :class:`RestrictedUnpickler` admits only numpy arrays/dtypes/scalars,
   scipy.sparse matrices (rebuilt as inert :class:`SparseStub`, old module paths included), inert chumpy
   stand-ins (:class:`ChStub`) and a few inert container helpers.
2. DECA/EMOCA's ``landmark_embedding.npy`` (a 0-d object array whose dict holds pickled torch tensors):
   :class:`TensorUnpickler` rebuilds torch tensors and their legacy storages as numpy arrays, without torch.
3. torch checkpoints (Lightning ``.ckpt``, ``deca_model.tar``): these are loaded by ``torch.load(weights_only=True)``
   in ``backend.models.loading``; the extra classes Lightning stores in ``hyper_parameters`` are allowed there by
   the NAMES listed here (:data:`CHECKPOINT_HPARAM_GLOBALS`, :data:`LIGHTNING_CALLBACKS`).
   :func:`checkpoint_globals` + :func:`checkpoint_global_allowed` give the same verdict cheaply, by walking the
   pickle's opcodes (:func:`scan_pickle_globals`), without loading anything.

Every refused global raises ``EmocaError('unsafe_file')`` naming it; nothing from the file runs before that.
Global names are compared as Python 3 spells them (:func:`py2_name` maps Python 2's ``__builtin__``...).
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import io
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.core import multiarray, numeric

from emoca_contract.errors import EmocaError

Global = tuple[str, str]  # (module, name) as written in the pickle


# ------------------------------------------------------------------------------------------- shared rules
def py2_name(module: str, name: str) -> Global:
    """Python 2 global names (``__builtin__``, ``copy_reg``) as Python 3 spells them (what the default
    ``find_class`` does for protocol < 3 pickles before importing)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def numpy_global(module: str, name: str) -> Any:
    """The numpy globals a pickled ndarray/dtype/scalar needs, or None (never anything callable beyond these)."""
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(multiarray, name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return numeric._frombuffer  # type: ignore[attr-defined]
    if module == "numpy.dtypes" and name.endswith("DType"):
        return getattr(np.dtypes, name, None)
    return None


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes; only the latin-1 codec."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise EmocaError("unsafe_file", f"refused codec {encoding!r} in a pickle")
    return str(text).encode("latin1")


# inert helpers Python 2 pickles use for plain containers and old-style object reconstruction; every class
# they build still comes through find_class
SAFE_BUILTINS: dict[Global, Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
    ("_codecs", "encode"): _latin1_encode,
}


# ------------------------------------------------------------------------- 1. FLAME: numpy, sparse, chumpy
class ChStub:
    """Stand-in for chumpy objects: keeps the pickled state; ``value`` is its ``x`` entry (the array)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    @property
    def value(self) -> np.ndarray:
        x = self.state.get("x")
        if isinstance(x, ChStub):
            return x.value
        if x is not None:
            return np.asarray(x)
        raise ValueError(f"a chumpy object without an 'x' array (state keys {sorted(map(str, self.state))})")


class SparseStub:
    """Stand-in for a pickled scipy.sparse matrix: keeps the state and densifies it in numpy.

    Rebuilding from the raw state (data/indices/indptr and the shape under ``_shape`` or ``shape``) avoids
    depending on how a given SciPy version restores old pickles.
    """

    kind = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def toarray(self) -> np.ndarray:
        """The dense (rows, cols) float64 matrix."""
        st = self.state
        shape_value = st.get("_shape") or st.get("shape")
        if shape_value is None:
            raise KeyError("a sparse matrix without a shape")
        shape = tuple(int(x) for x in shape_value)
        out = np.zeros(shape, dtype=np.float64)
        data = np.asarray(st["data"], dtype=np.float64)
        if self.kind in ("csc", "csr"):
            indices = np.asarray(st["indices"], dtype=np.int64)
            indptr = np.asarray(st["indptr"], dtype=np.int64)
            outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, outer) if self.kind == "csc" else (outer, indices)
        elif self.kind == "coo":
            rows = np.asarray(st.get("row", st.get("coords", [[], []])[0]), dtype=np.int64)
            cols = np.asarray(st.get("col", st.get("coords", [[], []])[1]), dtype=np.int64)
        else:
            raise EmocaError("asset_invalid", f"unsupported sparse matrix kind {self.kind!r}")
        np.add.at(out, (rows, cols), data)
        return out


def _sparse_kind(kind: str) -> type:
    return type(f"{kind}_matrix_stub", (SparseStub,), {"kind": kind})


_SPARSE = {
    "csc_matrix": _sparse_kind("csc"),
    "csr_matrix": _sparse_kind("csr"),
    "coo_matrix": _sparse_kind("coo"),
    "csc_array": _sparse_kind("csc"),
    "csr_array": _sparse_kind("csr"),
    "coo_array": _sparse_kind("coo"),
}


def sparse_global(module: str, name: str) -> type | None:
    """scipy.sparse matrix classes under any of their historic module paths (scipy.sparse.csc, ._csc, ...)."""
    if module == "scipy.sparse" or module.startswith("scipy.sparse."):
        return _SPARSE.get(name)
    return None


def plain_data_global(module: str, name: str) -> Any:
    """What a FLAME-style pickle may reference (Python 3 names): numpy, scipy.sparse, chumpy, inert helpers."""
    found = numpy_global(module, name)
    if found is None:
        found = sparse_global(module, name)
    if found is None and (module == "chumpy" or module.startswith("chumpy.")):
        found = ChStub
    if found is None:
        found = SAFE_BUILTINS.get((module, name))
    return found


class RestrictedUnpickler(pickle.Unpickler):
    """numpy, scipy.sparse and chumpy data only (:func:`plain_data_global`); any other global is refused."""

    def __init__(self, file: IO[bytes], source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        module, name = py2_name(module, name)
        found = plain_data_global(module, name)
        if found is None:
            raise EmocaError(
                "unsafe_file",
                f"{self.source}: refused to load the global '{module}.{name}' "
                "(only numpy, scipy.sparse and chumpy data are allowed)",
            )
        return found


def restricted_load(path: str | Path) -> object:
    """Unpickle ``path`` admitting only plain data (numpy, scipy.sparse, chumpy stand-ins)."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("asset_missing", f"file not found: {path}")
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, str(path)).load()
        except EmocaError:
            raise
        except Exception as exc:  # truncated, not a pickle, ...
            raise EmocaError("asset_invalid", f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------- 2. torch tensors as numpy, without torch
class _Storage:
    """A torch storage rebuilt as a flat numpy array (from the legacy torch.save stream)."""

    def __init__(self, dtype: np.dtype, data: np.ndarray | None = None):
        self.dtype = dtype
        self.data = data


STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_ignored: Any) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` as numpy: a strided view of the storage, copied contiguous."""
    if not isinstance(storage, _Storage) or storage.data is None:
        raise pickle.UnpicklingError("tensor storage without data")
    item = storage.data.itemsize
    base = storage.data[offset:]
    if len(size) == 0:
        return base[:1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(base, shape=tuple(size), strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _InnerUnpickler(pickle.Unpickler):
    """The pickles inside a torch storage's bytes: storage types and plain containers only."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]):
        super().__init__(file, encoding="latin1")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise EmocaError("unsafe_file", f"refused to load the global '{module}.{name}' inside a torch storage")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        st, key = pid[1], str(pid[2])
        if not isinstance(st, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {st!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(st.dtype)
        return self.storages[key]


def _storage_from_bytes(data: bytes) -> object:
    """What ``torch.storage._load_from_bytes`` rebuilds, as numpy.

    A storage pickled by plain pickle carries its own ``torch.save`` in the legacy (non-zip) format, which
    torch uses there in every version since 1.6 (and before, when there was no other).
    """
    bio = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    if zipfile.is_zipfile(bio):
        raise pickle.UnpicklingError("unexpected zip-format storage inside a pickle")
    bio.seek(0)  # is_zipfile moved it
    # legacy format: magic, protocol version, sys info, the object, the storage keys, then per storage
    # (in key order) an int64 element count followed by the raw little-endian data
    for _ in range(3):
        _InnerUnpickler(bio, storages).load()
    obj = _InnerUnpickler(bio, storages).load()
    keys = _InnerUnpickler(bio, storages).load()
    for key in keys:
        st = storages[str(key)]
        (count,) = np.frombuffer(bio.read(8), dtype="<i8")
        raw = bio.read(int(count) * st.dtype.itemsize)
        st.data = np.frombuffer(raw, dtype=st.dtype.newbyteorder("<")).astype(st.dtype)
    return obj


class _TensorType:
    """Stand-in for the tensor class named by ``_rebuild_from_type_v2`` (the array is plain numpy anyway)."""


def _rebuild_from_type(func: Any, _type: Any, args: Any, _state: Any = None) -> np.ndarray:
    """``torch._tensor._rebuild_from_type_v2``: the tensor is ``func(*args)``; the subclass/state is dropped."""
    if func is not _rebuild_tensor:
        raise pickle.UnpicklingError("unexpected tensor rebuild function")
    return func(*args)


def tensor_global(module: str, name: str) -> Any:
    """The torch names a pickled tensor needs, mapped to their numpy rebuilders (None for anything else)."""
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
        return _rebuild_tensor
    if module == "torch.storage" and name == "_load_from_bytes":
        return _storage_from_bytes
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return _rebuild_from_type
    if module == "torch" and name in ("Tensor", "LongTensor", "FloatTensor"):
        return _TensorType
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(name)
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    return None


class TensorUnpickler(pickle.Unpickler):
    """numpy arrays and torch tensors (rebuilt as numpy) only; anything else is refused."""

    def __init__(self, file: IO[bytes], source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        module, name = py2_name(module, name)
        found = numpy_global(module, name) or SAFE_BUILTINS.get((module, name)) or tensor_global(module, name)
        if found is None:
            raise EmocaError(
                "unsafe_file",
                f"{self.source}: refused to load the global '{module}.{name}' (only numpy arrays and tensors allowed)",
            )
        return found


def load_npy_object(path: Path) -> object:
    """A .npy file's content; a pickled object inside goes through :class:`TensorUnpickler` (never np.load's
    pickle). Errors: ``unsafe_file`` (a refused global), ``asset_invalid`` (a corrupt or truncated pickle)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format._read_array_header(fh, version)  # type: ignore[attr-defined]  # (shape, fortran, dtype)
        shape, _fortran, dtype = header
        if dtype != np.dtype(object):
            count = int(np.prod(shape))
            arr = np.fromfile(fh, dtype=dtype, count=count)
            return arr.reshape(shape)
        try:
            obj = TensorUnpickler(fh, str(path)).load()
        except EmocaError as exc:
            if str(path) in exc.message:
                raise
            raise EmocaError(exc.code, f"{path}: {exc.message}", exc.hint) from exc
        except Exception as exc:  # a corrupt or truncated pickle
            raise EmocaError("asset_invalid", f"{path}: cannot read the pickled content ({exc})") from exc
    return obj


# ------------------------------------------------------------------------------------ 3. torch checkpoints
# What Lightning stores in ``hyper_parameters`` beyond torch's own data types. Found by saving a real Lightning
# 2.6 checkpoint whose hyper-parameters are OmegaConf containers (tests/models/test_loading.py re-checks it):
# DictConfig, ListConfig, their metadata, the nodes, typing.Any, collections.defaultdict and the builtin types
# stored as key/element types. Typed nodes and omegaconf's enum are included because structured configs store them.
CHECKPOINT_HPARAM_GLOBALS: tuple[str, ...] = (
    "typing.Any",
    "collections.defaultdict",
    *(f"builtins.{t}" for t in ("dict", "list", "int", "float", "str", "bool", "tuple", "set")),
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.base.SCMode",
    *(
        f"omegaconf.nodes.{n}"
        for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode",
                  "EnumNode", "InterpolationResultNode")
    ),
)  # fmt: skip
# Lightning 1.x checkpoints use callback CLASSES as dict keys (``callbacks: {ModelCheckpoint: state}``)
# [derived from Lightning 1.x behaviour]: they are admitted as inert stand-ins (:func:`lightning_callback_stubs`).
LIGHTNING_CALLBACKS: tuple[str, ...] = tuple(
    f"{pkg}.callbacks.{mod}.{cls}"
    for pkg in ("pytorch_lightning", "lightning.pytorch")
    for mod, cls in (("model_checkpoint", "ModelCheckpoint"), ("early_stopping", "EarlyStopping"))
)
# torch.load(weights_only=True)'s own allow-list (torch/_weights_only_unpickler.py ``_get_allowed_globals``), by
# name: a few explicit names, torch's tensor/storage classes, dtypes, quantisation schemes and tensor rebuilders.
# tests/models/test_loading.py checks that every name torch allows passes this rule.
_TORCH_EXPLICIT = frozenset(
    {
        "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device", "_codecs.encode",
        "builtins.bytearray", "builtins.set", "builtins.complex", "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage", "torch._tensor._rebuild_from_type_v2",
    }
)  # fmt: skip
_TORCH_CLASS_MODULES = ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse")
_TORCH_CLASS = re.compile(r"[A-Z][A-Za-z0-9]*(Tensor|Storage)")
_TORCH_DTYPE = re.compile(r"bool|(bfloat|float|complex|int|uint|qint|quint|bits)\d\w*|per_(tensor|channel)_\w+")
_TORCH_REBUILD = re.compile(r"_rebuild_\w+")


def torch_data_global(module: str, name: str) -> bool:
    """Whether ``module.name`` (Python 3 spelling) is plain tensor data that torch's weights-only loader admits."""
    if f"{module}.{name}" in _TORCH_EXPLICIT:
        return True
    if module in _TORCH_CLASS_MODULES and _TORCH_CLASS.fullmatch(name):
        return True
    if module == "torch" and _TORCH_DTYPE.fullmatch(name):
        return True
    return module == "torch._utils" and bool(_TORCH_REBUILD.fullmatch(name))


def checkpoint_global_allowed(module: str, name: str) -> bool:
    """The checkpoint rule: torch's tensor data, Lightning's hyper-parameter types, the callback stand-ins."""
    module, name = py2_name(module, name)
    full = f"{module}.{name}"
    return torch_data_global(module, name) or full in CHECKPOINT_HPARAM_GLOBALS or full in LIGHTNING_CALLBACKS


class LightningCallbackState(dict):
    """Stand-in for a Lightning callback class used as a dict KEY in PL 1.x checkpoints' ``callbacks``. Only the
    class object is referenced, never instantiated with checkpoint data."""


def lightning_callback_stubs() -> list[tuple[type, str]]:
    """(stand-in class, the global name it replaces) for each of :data:`LIGHTNING_CALLBACKS` (torch's
    ``safe_globals`` form for a renamed class)."""
    return [
        (type(n.rsplit(".", 1)[-1], (LightningCallbackState,), {"__module__": __name__}), n)
        for n in LIGHTNING_CALLBACKS
    ]


# ---------------------------------------------------------------------------- scanning without loading
UNRESOLVED: Global = ("?", "?")  # a STACK_GLOBAL whose operands are not plain strings: allowed by no rule
_MARK, _OTHER = object(), object()  # stack placeholders: a MARK, and any value that is not a string
_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                         "BINUNICODE8"})  # fmt: skip


def _pop_operands(stack: list, before: list) -> None:
    """Pop what an opcode consumes: everything down to the MARK when it takes a mark, plus the items below it."""
    if pickletools.markobject in before:
        while stack and stack.pop() is not _MARK:
            pass
        below = before.index(pickletools.markobject)
    else:
        below = len(before)
    del stack[max(0, len(stack) - below) :]


def _scan_one(fh: IO[bytes], found: set[Global]) -> set[Global]:
    """Add to ``found`` the globals of the pickle at ``fh``'s position (left just after its STOP) as the walk
    meets them, so that what was seen survives a ValueError on a truncated or damaged pickle; returns ``found``."""
    stack: list = []
    memo: dict = {}
    for op, arg, _pos in pickletools.genops(fh):
        if op.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            found.add((module, name))
        if op.name == "STACK_GLOBAL":
            top = stack.pop() if stack else _OTHER
            below = stack.pop() if stack else _OTHER
            found.add((below, top) if isinstance(below, str) and isinstance(top, str) else UNRESOLVED)
            stack.append(_OTHER)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else _OTHER
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else _OTHER
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _OTHER))
        elif op.name == "MARK":
            stack.append(_MARK)
        else:
            _pop_operands(stack, op.stack_before)
            value = arg if op.name in _STRING_OPS and isinstance(arg, str) else _OTHER
            stack.extend(value for _ in op.stack_after)
    return found


def scan_pickle_globals(data: bytes) -> set[Global]:
    """Every global ``(module, name)`` one pickle references, as written in it, from an opcode walk: nothing is
    loaded or run. GLOBAL/INST name it inline; STACK_GLOBAL takes the two strings below it on the stack (tracked
    through the memo); operands that are not plain strings give :data:`UNRESOLVED`. Raises ValueError when
    ``data`` is not a complete pickle."""
    return _scan_one(io.BytesIO(data), set())


# a legacy (non-zip) torch.save file is five pickles: magic number, protocol version, sys info, the object,
# the storage keys; the raw storage bytes follow
_LEGACY_PICKLES = 5


def _scan_checkpoint(path: Path, found: set[Global]) -> None:
    """Add the globals of a ``torch.save`` file to ``found``: its ``data.pkl`` (zip format) or its leading
    pickles (the legacy format). Raises ValueError (not a pickle / truncated), zipfile.BadZipFile or OSError,
    after adding what it saw before the damage."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if member.endswith("data.pkl"):
                    _scan_one(io.BytesIO(zf.read(member)), found)
        return
    with open(path, "rb") as fh:
        for _ in range(_LEGACY_PICKLES):
            _scan_one(fh, found)


def checkpoint_globals(path: str | Path) -> set[Global]:
    """The globals a ``torch.save`` file references: its ``data.pkl`` (zip format) or its leading pickles (the
    legacy format). Raises ValueError (not a pickle / truncated), zipfile.BadZipFile or OSError."""
    found: set[Global] = set()
    _scan_checkpoint(Path(path), found)
    return found


def unsafe_checkpoint_globals(path: str | Path) -> list[str]:
    """The globals of a ``torch.save`` file that :func:`checkpoint_global_allowed` refuses, as sorted
    ``module.name`` strings ([] when it references only data).

    A file that names a refused global before it breaks off (a plain pickle saved as ``.ckpt``, a cut legacy
    file) is reported by that global: unsafe, not merely corrupt. Otherwise raises like :func:`checkpoint_globals`.
    """
    found: set[Global] = set()
    try:
        _scan_checkpoint(Path(path), found)
    except (ValueError, EOFError, zipfile.BadZipFile):
        if not _refused(found):
            raise
    return _refused(found)


def _refused(found: set[Global]) -> list[str]:
    return sorted(".".join(py2_name(m, n)) for m, n in found if not checkpoint_global_allowed(m, n))
