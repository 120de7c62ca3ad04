"""Property-based tests of the one take reader (emoca_contract.take.read_take) on real .npz files.

Every input either loads, and then holds what the reader promises its consumers, or is refused with one of the
reader's coded errors; nothing else (a raw KeyError, TypeError, MemoryError, ...) ever comes out. The inputs are
valid takes with arrays replaced, re-typed, spiked or cut, meta fields replaced with arbitrary JSON, meta that is
not JSON, and archives with bytes flipped, cut or inserted.
"""

from __future__ import annotations

import functools
import io
import json
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from emoca_contract.errors import EmocaError
from emoca_contract.take import ALL_KEYS, KINDS, MAX_FPS, MIN_FPS, READ_KEYS_BY_KIND, read_take
from tests.fuzz.strategies import JSON, examples

pytestmark = pytest.mark.slow  # a few thousand cases: seconds each on 2 cores (make test runs them)

READER_CODES = {"input_corrupt", "input_unsupported", "unsafe_file"}
N = 6


@functools.cache
def _base(kind: str):
    take = make_synthetic_open_take(N) if kind == "open" else make_synthetic_take(N, n_exp=10, n_landmarks=5)
    return take.arrays, json.loads(json.dumps(take.meta))


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    """The one file every example overwrites (Hypothesis runs examples one after the other)."""
    return tmp_path_factory.mktemp("fuzz é") / "take.npz"


def _read_or_refuse(path: Path) -> None:
    """The property: a coded refusal, or a take that keeps the reader's promises."""
    try:
        take = read_take(path)
    except EmocaError as exc:
        assert exc.code in READER_CODES, exc.report()
        assert str(path) in exc.message
        event(exc.code)  # the mix of outcomes: pytest --hypothesis-show-statistics
        return
    event("loaded")
    assert take.kind in KINDS
    n = take.n_frames
    assert n >= 1
    assert all(take[k].shape[0] == n for k in READ_KEYS_BY_KIND[take.kind])
    frames, times = take["frame"], take["time"]
    assert frames.dtype.kind in "iu" and frames[0] >= 0 and np.all(frames[1:] > frames[:-1])
    assert np.isfinite(times).all() and np.all(times[1:] > times[:-1])
    assert take["valid"].dtype == bool
    classes = take.classes
    assert all(isinstance(c, str) for c in classes)
    assert not classes or len(classes) == take["expression"].shape[1]
    assert take.fps is None or MIN_FPS <= take.fps <= MAX_FPS
    assert isinstance(take.clip_name, str) and all(isinstance(a, str) for a in take.arkit_names)
    for key in ALL_KEYS:
        if key in take and take[key].dtype.kind == "f" and key != "time":
            assert np.isfinite(take[key][take["valid"]]).all(), key


def _npy(value) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.save(buf, value, allow_pickle=True)  # object arrays too: the reader must refuse them unread
    return buf.getvalue()


@functools.cache
def _base_npy(kind: str, key: str) -> bytes:
    return _npy(_base(kind)[0][key])


def _write(path: Path, arrays: dict, meta_value, kind: str = "flame") -> None:
    """What ``np.savez(path, **arrays, meta=meta_value)`` writes; the base take's members are encoded once."""
    base = _base(kind)[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, value in {**arrays, "meta": meta_value}.items():
            same = key in base and value is base[key]
            zf.writestr(key + ".npy", _base_npy(kind, key) if same else _npy(value))


# ----------------------------------------------------------------------------------------------- arrays
DTYPES = st.one_of(
    hnp.scalar_dtypes(),
    hnp.array_dtypes(max_size=2),
    st.sampled_from([np.dtype("<f2"), np.dtype(">f8"), np.dtype(">i8"), np.dtype("u8"), np.dtype("?")]),
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=N + 2)
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, -1, 0, 2**31, 2**63 - 1, 1e300, -0.0, 0.5])


@st.composite
def array_edit(draw, keys: list[str]):
    """(key, new array or None for "remove it") applied to one take array or an extra member."""
    key = draw(
        st.sampled_from(keys) | st.text(min_size=1, max_size=10).filter(lambda k: k.isprintable() and "/" not in k)
    )
    how = draw(st.sampled_from(["replace", "retype", "spike", "cut", "remove", "object"]))
    if how == "remove":
        return key, None
    if how == "object":
        return key, np.array(draw(st.lists(st.integers(), max_size=3)) + [None], dtype=object)
    if how == "replace":
        return key, draw(hnp.arrays(DTYPES, SHAPES))
    base = _base("flame")[0].get(key, np.arange(N))
    if how == "retype":
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                return key, base.astype(draw(hnp.scalar_dtypes()))
            except (TypeError, ValueError):  # not castable (e.g. floats to datetime): a plain replacement
                return key, draw(hnp.arrays(DTYPES, SHAPES))
    if how == "cut":
        return key, base[: draw(st.integers(0, N - 1))]
    spiked = np.array(base, dtype=np.float64 if base.dtype.kind == "f" else base.dtype)
    if spiked.size:
        index, value = draw(st.integers(0, spiked.size - 1)), draw(SPECIAL)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                spiked.flat[index] = value
            except (ValueError, OverflowError):  # NaN or 2**63 into integers: the column becomes float64
                spiked = spiked.astype(np.float64)
                spiked.flat[index] = value
    return key, spiked


@settings(max_examples=examples(500))
@given(kind=st.sampled_from(KINDS), edits=st.lists(array_edit(sorted(ALL_KEYS)), min_size=1, max_size=3))
def test_arbitrary_arrays_load_or_are_refused_with_a_code(target, kind, edits):
    arrays, meta = _base(kind)
    arrays = dict(arrays)
    for key, value in edits:
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    _write(target, arrays, np.array(json.dumps(meta)), kind)
    _read_or_refuse(target)


# ------------------------------------------------------------------------------------------------- meta
META_PATHS = [
    "format", "version", "kind", "created", "backend_version", "source", "source.fps", "source.width",
    "source.height", "source.path", "emotion", "emotion.classes", "emotion.classes.0", "arkit", "arkit.names",
    "arkit.names.3", "warnings", "fallbacks", "track", "model", "smoothing", "gaps",
]  # fmt: skip


def _child(section, key: str):
    """``section[key]`` (a list item by number), None where there is no such child."""
    if isinstance(section, dict):
        return section.get(key)
    if isinstance(section, list) and key.isdigit() and int(key) < len(section):
        return section[int(key)]
    return None


def _set(meta, dotted: str, value, delete: bool):
    """``meta`` with the field at ``dotted`` (list items by number) set to ``value``, or deleted; unchanged when
    a parent is missing."""
    *parents, last = dotted.split(".")
    section = meta
    for key in parents:
        section = _child(section, key)
    if isinstance(section, list) and _child(section, last) is not None:
        section[int(last)] = value
    elif isinstance(section, dict):
        if delete:
            section.pop(last, None)
        else:
            section[last] = value
    return meta


META_VALUES = JSON | st.sampled_from(
    ["emoca-take", "flame", "open", "2", "1.9", "3", "-1", 0, 2, 1e12, 10_001.0, 0.5, "x" * 60, ["A"] * 7, [1] * 7]
)


@settings(max_examples=examples(500))
@given(
    kind=st.sampled_from(KINDS),
    edits=st.lists(st.tuples(st.sampled_from(META_PATHS) | st.text(max_size=8), META_VALUES, st.booleans()),
                   min_size=1, max_size=4),
)  # fmt: skip
def test_arbitrary_meta_fields_load_or_are_refused_with_a_code(target, kind, edits):
    arrays, meta = _base(kind)
    meta = json.loads(json.dumps(meta))
    for dotted, value, delete in edits:
        meta = _set(meta, dotted, value, delete)
    _write(target, arrays, np.array(json.dumps(meta)), kind)
    _read_or_refuse(target)


@settings(max_examples=examples(300))
@given(
    meta=st.one_of(
        st.text(max_size=200).map(np.array),
        JSON.map(lambda v: np.array(json.dumps(v))),
        st.sampled_from(['{"format": "emoca-take", "version": ' + "9" * 5000 + "}", "[" * 50_000]).map(np.array),
        hnp.arrays(DTYPES, SHAPES),
    )
)
def test_meta_that_is_not_a_meta_object_is_refused_with_a_code(target, meta):
    _write(target, _base("flame")[0], meta)
    _read_or_refuse(target)


# ------------------------------------------------------------------------------------------------ bytes
@functools.cache
def _valid_bytes(compressed: bool) -> bytes:
    arrays, meta = _base("flame")
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays, meta=np.array(json.dumps(meta)))
    return buf.getvalue()


@settings(max_examples=examples(600))
@given(
    compressed=st.booleans(),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=4,
    ),
)
def test_damaged_archives_load_or_are_refused_with_a_code(target, compressed, edits):
    data = bytearray(_valid_bytes(compressed))
    for how, where, payload in edits:
        at = min(int(where * len(data)), len(data) - 1)
        if how == "flip":
            data[at : at + len(payload)] = bytes(b ^ p for b, p in zip(data[at : at + len(payload)], payload))
        elif how == "cut":
            del data[max(at, 1) :]
        else:
            data[at:at] = payload
    target.write_bytes(bytes(data))
    _read_or_refuse(target)


def test_the_fuzzed_base_takes_are_valid(target):
    """The properties above start from takes the reader accepts (so edits, not the base, cause refusals)."""
    for kind in KINDS:
        arrays, meta = _base(kind)
        _write(target, arrays, np.array(json.dumps(meta)), kind)
        assert read_take(target).kind == kind
    target.write_bytes(_valid_bytes(True))
    assert math.isclose(read_take(target).fps, 30.0)
