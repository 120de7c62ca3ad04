"""Take files: the contract, atomic writes, incremental writing with bounded memory (numpy only)."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from backend.take.writer import TakeWriter, write_take
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.take import SMOOTHED_KEYS, TAKE_KEYS, TAKE_VERSION, read_take


def _row_keys(take):
    return {k: v for k, v in take.arrays.items() if not k.startswith("raw_") and k not in ("frame", "time")}


def test_contract_lists_every_documented_key():
    documented = {
        "frame",
        "time",
        "valid",
        "interpolated",
        "confidence",
        "shape",
        "exp",
        "global_pose",
        "jaw_pose",
        "cam",
        "crop",
        "landmarks",
        "detected_landmarks",
        "valence",
        "arousal",
        "expression",
    }
    documented |= {
        "raw_" + k
        for k in ("exp", "global_pose", "jaw_pose", "cam", "valence", "arousal", "expression", "crop", "landmarks",
                  "detected_landmarks")
    }  # fmt: skip
    assert set(TAKE_KEYS) == documented
    assert TAKE_KEYS["crop"] == (("N", 3, 3), "float32")
    assert TAKE_KEYS["frame"][1] == "int64" and TAKE_KEYS["time"][1] == "float64"


def test_round_trip_without_pickles(unicode_tmp):
    take = make_synthetic_take(30, n_exp=50, fps=24.0, seed=3, invalid=[4, 5])
    path = write_take(unicode_tmp / "prise 1.npz", take.arrays, take.meta)
    assert path.exists() and not (unicode_tmp / "prise 1.npz.partial").exists()
    back = read_take(path)
    for key, value in take.arrays.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype
    assert back.meta["format"] == "emoca-take" and back.meta["version"] == TAKE_VERSION
    assert back.meta["source"]["fps"] == 24.0
    # the file is plain arrays: numpy reads every member with pickles forbidden, meta is a 0-d str
    with np.load(path, allow_pickle=False) as z:
        assert z["meta"].shape == () and z["meta"].dtype.kind == "U"
        assert json.loads(str(z["meta"]))["backend_version"]
    assert not back["valid"][4] and np.all(back["exp"][4] == 0) and np.all(back["crop"][5] == 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("jaw_pose"), "missing"),
        (lambda a: a.__setitem__("exp", a["exp"].astype(np.float64)), "dtype"),  # coerced: accepted
        (lambda a: a.__setitem__("cam", a["cam"][:, :2]), "shape"),
        (lambda a: a.__setitem__("raw_exp", a["raw_exp"][:, :10]), "n_exp"),
        (lambda a: a.__setitem__("time", a["time"][:-1]), "N="),
        (lambda a: a.__setitem__("bogus", a["time"]), "unknown"),
    ],
)
def test_write_take_validates(tmp_path, change, message):
    take = make_synthetic_take(10)
    arrays = dict(take.arrays)
    change(arrays)
    if message == "dtype":  # values are cast to the contract dtype, not refused
        write_take(tmp_path / "t.npz", arrays, take.meta)
        assert read_take(tmp_path / "t.npz")["exp"].dtype == np.float32
        return
    with pytest.raises(EmocaError, match=message):
        write_take(tmp_path / "t.npz", arrays, take.meta)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a partial file


def test_read_take_refuses_newer_major_and_other_files(tmp_path):
    take = make_synthetic_take(5)
    newer = TAKE_VERSION + 1
    take.meta["version"] = newer
    write_take(tmp_path / "newer.npz", take.arrays, take.meta)
    with pytest.raises(EmocaError, match=f"version {newer}") as e:
        read_take(tmp_path / "newer.npz")
    assert e.value.code == "input_unsupported"
    take.meta.update(version=f"{TAKE_VERSION}.3")  # a newer minor version is read
    write_take(tmp_path / "v13.npz", take.arrays, take.meta)
    assert read_take(tmp_path / "v13.npz").n_frames == 5
    np.savez(tmp_path / "rig.npz", meta=np.array(json.dumps({"format": "emoca-rig", "version": 1})))
    with pytest.raises(EmocaError, match="emoca-rig"):
        read_take(tmp_path / "rig.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EmocaError) as e:
        read_take(tmp_path / "junk.npz")
    assert e.value.code == "input_corrupt"
    with pytest.raises(EmocaError) as e:
        read_take(tmp_path / "missing.npz")
    assert e.value.code == "input_missing"


def test_writer_streams_rows_and_finalizes_atomically(unicode_tmp):
    take = make_synthetic_take(50, seed=1)
    out = unicode_tmp / "take é.npz"
    w = TakeWriter(out, take.meta, chunk_rows=8)
    rows = _row_keys(take)
    for i in range(17):
        w.append({k: v[i] for k, v in rows.items()})
        assert w.buffered_rows < 8
    w.append_rows({k: v[17:40] for k, v in rows.items()})
    w.skip(5)  # rows 40..44: not seen
    w.append_rows({k: v[45:] for k, v in rows.items()})
    assert not out.exists()  # nothing named .npz until finalize
    assert w.parts_dir.exists() and w.parts_dir.name.startswith(".")
    cols = {"frame": take["frame"], "time": take["time"]}
    cols.update({"raw_" + k: w.column(k) for k in SMOOTHED_KEYS})
    path = w.finalize({"note": "ok"}, cols)
    assert path == out and not w.parts_dir.exists()
    assert sorted(p.name for p in unicode_tmp.iterdir()) == ["take é.npz"]
    back = read_take(out)
    assert back.meta["note"] == "ok"
    for key in rows:
        np.testing.assert_array_equal(back[key][:40], take[key][:40])
        np.testing.assert_array_equal(back[key][45:], take[key][45:])
        assert not back[key][40:45].any()  # skipped rows are zeros (invalid)
    np.testing.assert_array_equal(back["raw_exp"], back["exp"])


def test_writer_abort_leaves_nothing(tmp_path):
    take = make_synthetic_take(20)
    with TakeWriter(tmp_path / "a.npz", take.meta, chunk_rows=4) as w:
        w.append_rows({k: v for k, v in _row_keys(take).items()})
        assert any(w.parts_dir.iterdir())
    # leaving the block without finalize aborts
    assert list(tmp_path.iterdir()) == []
    w2 = TakeWriter(tmp_path / "b.npz", take.meta)
    w2.append_rows({k: v for k, v in _row_keys(take).items()})
    w2.abort()
    assert list(tmp_path.iterdir()) == []
    # a finalize that fails validation (no frame/time columns) leaves no take either
    w3 = TakeWriter(tmp_path / "c.npz", take.meta)
    w3.append_rows({k: v for k, v in _row_keys(take).items()})
    with pytest.raises(EmocaError, match="missing"):
        w3.finalize({})
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "c.npz.partial").exists()
    w3.abort()
    assert list(tmp_path.iterdir()) == []


def _peak_bytes_writing(n_rows: int, tmp_path) -> int:
    take = make_synthetic_take(64, seed=2)
    rows = _row_keys(take)
    w = TakeWriter(tmp_path / f"m{n_rows}.npz", take.meta, chunk_rows=64)
    tracemalloc.start()
    tracemalloc.reset_peak()
    for _ in range(0, n_rows, 64):
        w.append_rows(rows)
        assert w.buffered_rows < 64
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert w.n_rows == n_rows
    w.abort()
    return peak


def test_writer_memory_does_not_grow_with_rows(tmp_path):
    # 20x the rows (about 4 MB of detector landmarks per 1000 rows) must not need more memory than 1x
    small = _peak_bytes_writing(64 * 5, tmp_path)
    large = _peak_bytes_writing(64 * 100, tmp_path)
    row_bytes = sum(v[0].nbytes for v in _row_keys(make_synthetic_take(1)).values())
    assert large < small + 64 * row_bytes, (small, large)
    assert large < 64 * 100 * row_bytes / 5


def test_finalize_streams_big_columns_without_loading_them(tmp_path):
    take = make_synthetic_take(64, seed=5)
    rows = _row_keys(take)
    w = TakeWriter(tmp_path / "big.npz", take.meta, chunk_rows=64)
    for _ in range(40):
        w.append_rows(rows)
    n = w.n_rows
    cols = {"frame": np.arange(n), "time": np.arange(n) / 25.0}
    cols.update({"raw_" + k: w.column(k) for k in SMOOTHED_KEYS})
    tracemalloc.start()
    w.finalize({}, cols)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    det_bytes = n * rows["detected_landmarks"][0].nbytes
    assert peak < det_bytes / 4  # the (N, 478, 2) column never sat in memory whole
    with zipfile.ZipFile(tmp_path / "big.npz") as z:
        assert "detected_landmarks.npy" in z.namelist()
    assert read_take(tmp_path / "big.npz")["detected_landmarks"].shape == (n, 478, 2)


def test_synthetic_take_is_plausible():
    t = make_synthetic_take(40, n_exp=20, fps=30.0, seed=7, invalid=[0, 39])
    assert t["exp"].shape == (40, 20) and t.n_exp == 20
    assert np.allclose(t["expression"][1:-1].sum(1), 1.0, atol=1e-5)
    assert np.all(np.diff(t["time"]) > 0) and t["valid"].sum() == 38
    assert np.abs(np.diff(t["exp"][1:-1], axis=0)).max() < 0.5  # smooth curves, not noise
    t2 = make_synthetic_take(40, n_exp=20, fps=30.0, seed=7, invalid=[0, 39])
    np.testing.assert_array_equal(t["exp"], t2["exp"])


def test_version_1_takes_stay_readable_as_flame_takes(tmp_path):
    """Takes written before the open path (format version 1, no meta.kind) read as FLAME takes."""
    take = make_synthetic_take(6, n_exp=20)
    meta = dict(take.meta, version=1)
    del meta["kind"]
    arrays = dict(take.arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v1.npz", **arrays)
    back = read_take(tmp_path / "v1.npz")
    assert back.kind == "flame" and back.meta["version"] == 1 and back.n_exp == 20
    np.testing.assert_array_equal(back["exp"], take["exp"])


def test_open_takes_round_trip_and_are_checked_for_their_own_keys(tmp_path):
    take = make_synthetic_open_take(12, invalid=[3])
    path = write_take(tmp_path / "open.npz", take.arrays, take.meta)
    back = read_take(path)
    assert back.kind == "open" and back.arkit_names == list(ARKIT_NAMES) and back.n_exp == 0
    assert "exp" not in back and back["arkit"].shape == (12, 52) and not back["valid"][3]
    arrays = dict(take.arrays)
    del arrays["arkit"]
    with pytest.raises(EmocaError, match="arkit"):  # a writer must give every key of its kind
        write_take(tmp_path / "bad.npz", arrays, take.meta)
    arrays = dict(take.arrays, exp=np.zeros((12, 50), np.float32))
    with pytest.raises(EmocaError, match="exp"):  # and none of another kind's
        write_take(tmp_path / "bad.npz", arrays, take.meta)
    meta = dict(take.meta, arkit={"names": ["notAChannel"] + list(ARKIT_NAMES[1:])})
    np.savez(tmp_path / "bad_names.npz", **take.arrays, meta=np.array(json.dumps(meta)))
    with pytest.raises(EmocaError, match="notAChannel") as e:
        read_take(tmp_path / "bad_names.npz")
    assert e.value.code == "input_corrupt"


# ------------------------------------------------------------------ malformed takes (issue 13, cases 4 and 6)
# Every malformed take is refused by the one reader with a coded error; these are written with numpy directly,
# as another tool or a damaged copy would, so no writer check stands in front of the reader.
CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def _save_raw(path, arrays, meta=None, meta_text=None):
    np.savez(path, **arrays, meta=np.array(meta_text if meta_text is not None else json.dumps(meta)))
    return path


def _meta_with(meta, dotted, value):
    meta = json.loads(json.dumps(meta))
    *parents, last = dotted.split(".")
    section = meta
    for key in parents:
        section = section[key]
    section[last] = value
    return meta


@pytest.mark.parametrize(
    "dotted, value, fragment",
    [
        ("emotion", "happy", "meta.emotion is a str, expected an object"),
        ("source", ["clip.mp4"], "meta.source is a list, expected an object"),
        ("emotion.classes", ["x" * 64] + CLASSES[1:], "a name over 52 bytes"),
        ("emotion.classes", list(range(7)), "must be a list of printable class names"),
        ("emotion.classes", ["Angry\x00"] + CLASSES[1:], "must be a list of printable class names"),
        ("emotion.classes", CLASSES[:6], "names 6 classes but 'expression' has 7 columns"),
        ("source.fps", "abc", "meta.source.fps is 'abc', expected a positive number"),
        ("source.fps", 1e300, "meta.source.fps is 1e+300, expected a frame rate from 1 to 10000"),
        ("source.fps", 0.2, "meta.source.fps is 0.2, expected a frame rate from 1 to 10000"),
        ("source.fps", 10**400, "expected a frame rate from 1 to 10000"),  # found by fuzzing: a raw OverflowError
        ("source.height", 10**400, "expected at most 65536 pixels"),
        ("source.width", True, "meta.source.width is True"),
        ("source.path", 5, "meta.source.path is 5, expected a string"),
        ("version", "two", "meta.version 'two' is not a version number"),
        ("warnings", [1], "meta.warnings must be a list of strings"),
    ],
)
def test_malformed_meta_is_refused_by_the_reader(tmp_path, dotted, value, fragment):
    take = make_synthetic_take(8)
    path = _save_raw(tmp_path / "t.npz", take.arrays, _meta_with(take.meta, dotted, value))
    with pytest.raises(EmocaError) as err:
        read_take(path)
    assert err.value.code == "input_corrupt" and fragment in err.value.message, err.value.message
    assert str(path) in err.value.message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"format": "emoca-take", "version": 2, "n": ' + "1" * 5000 + "}", "not JSON"),  # was a raw ValueError
        ("[" * 100_000, "not JSON"),
        ("{", "not JSON"),
    ],
)
def test_meta_that_is_not_json_is_refused(tmp_path, text, fragment):
    path = _save_raw(tmp_path / "t.npz", make_synthetic_take(4).arrays, meta_text=text)
    with pytest.raises(EmocaError, match=fragment) as err:
        read_take(path)
    assert err.value.code == "input_corrupt"


def test_arkit_names_that_are_not_strings_are_refused(tmp_path):
    take = make_synthetic_open_take(6)
    meta = _meta_with(take.meta, "arkit.names", [[1]] * 52)  # unhashable: was a raw TypeError
    with pytest.raises(EmocaError, match="with strings") as err:
        read_take(_save_raw(tmp_path / "t.npz", take.arrays, meta))
    assert err.value.code == "input_corrupt"


def _float_frames_with_nan(n):
    frames = np.arange(n, dtype=np.float64)
    frames[3] = np.nan
    return frames


@pytest.mark.parametrize(
    "key, make, fragment",
    [
        ("frame", _float_frames_with_nan, "'frame' has dtype float64, expected int64"),  # case 4
        ("frame", lambda n: np.arange(n, dtype=np.uint64)[::-1].copy(), "strictly increasing"),  # unsigned: wraps
        ("frame", lambda n: np.arange(n, dtype=np.int64) + 2**40, "frame numbers must stay below 2**31"),
        ("frame", lambda n: np.array(5, dtype=np.int64), "shape ()"),  # 0-d
        ("time", lambda n: np.arange(n) * (1e12 / (n - 1)), "spans 1e+12 s (more than a day)"),  # case 6
        ("time", lambda n: np.r_[np.arange(n - 1), np.nan] / 30, "'time' must be finite"),
        ("exp", lambda n: np.zeros((n, 50), np.complex64), "'exp' has dtype complex64"),
        ("exp", lambda n: np.zeros((n, 50), "U1"), "'exp' has dtype <U1"),
        ("exp", lambda n: np.zeros((n, 50), [("a", "f4")]), "'exp' has dtype"),
        ("valid", lambda n: np.ones(n, np.int8), "'valid' has dtype int8, expected bool"),
        ("global_pose", lambda n: np.full((n, 3), np.inf, np.float32), "NaN or infinite values in valid frames"),
    ],
)
def test_malformed_arrays_are_refused_by_the_reader(tmp_path, key, make, fragment):
    take = make_synthetic_take(8)
    path = _save_raw(tmp_path / "t.npz", dict(take.arrays, **{key: make(8)}), take.meta)
    with pytest.raises(EmocaError) as err:
        read_take(path)
    assert err.value.code == "input_corrupt" and fragment in err.value.message, err.value.message


def test_odd_but_valid_encodings_are_read(tmp_path):
    """Any float width and byte order, unsigned frames and non-ASCII class names within Blender's limit load."""
    take = make_synthetic_take(8)
    classes = ["Überrascht", "驚き", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    arrays = dict(take.arrays, exp=take["exp"].astype(">f8"), valence=take["valence"].astype(np.float16))
    arrays["frame"] = take["frame"].astype(np.uint32)
    back = read_take(_save_raw(tmp_path / "t.npz", arrays, _meta_with(take.meta, "emotion.classes", classes)))
    assert back.classes == classes and back["exp"].dtype == np.dtype(">f8")
    np.testing.assert_allclose(back["exp"], take["exp"], rtol=1e-6)


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _zip_take(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _take_members(n: int = 8) -> dict[str, bytes]:
    take = make_synthetic_take(n)
    return {**{f"{k}.npy": _npy(v) for k, v in take.arrays.items()}, "meta.npy": _npy(np.array(json.dumps(take.meta)))}


def _patched(path, local_offset: int, central_offset: int, value: int, size: int = 1):
    """Set a field of every local and central zip header (``value`` OR-ed into a flag byte when size == 1)."""
    data = bytearray(path.read_bytes())
    for magic, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        i = data.find(magic)
        while i >= 0:
            if size == 1:
                data[i + offset] |= value
            else:
                data[i + offset : i + offset + size] = value.to_bytes(size, "little")
            i = data.find(magic, i + 4)
    path.write_bytes(bytes(data))
    return path


def _damaged_deflate(path):
    _zip_take(path, _take_members(), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("exp.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start, start + 40):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def _lying_header(path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 50)})
    return _zip_take(path, {**_take_members(), "exp.npy": buf.getvalue() + b"\x00" * 64})


def _npy_v3(path):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(8, [("é", "f4")]), version=(3, 0))
    return _zip_take(path, {**_take_members(), "extra.npy": buf.getvalue()})


@pytest.mark.parametrize(
    "build, code, fragment",
    [
        (lambda p: _zip_take(p, {**_take_members(), "extra.npy": _npy(np.array([{}], object))}), "unsafe_file",
         "'extra' holds pickled objects"),
        (lambda p: _zip_take(p, {**_take_members(), "exp.npy": _npy(np.zeros((8, 50), object))}), "unsafe_file",
         "'exp' holds pickled objects"),
        (lambda p: _patched(_zip_take(p, _take_members()), 6, 8, 1), "input_corrupt", "encrypted"),  # RuntimeError
        (lambda p: _patched(_zip_take(p, _take_members()), 8, 10, 99, 2), "input_corrupt",
         "compression method"),  # NotImplementedError
        (_damaged_deflate, "input_corrupt", "not a readable .npz take"),  # zlib.error
        (_lying_header, "input_corrupt", "'exp' declares (1099511627776, 50) float32"),
        (_npy_v3, "input_corrupt", "format version (3, 0)"),
        (lambda p: _zip_take(p, {**_take_members(), "notes.txt": b"hello"}), "input_corrupt", "magic string"),
        (lambda p: _zip_take(p, {k: v for k, v in _take_members().items() if k != "meta.npy"}), "input_unsupported",
         "no 'meta'"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 64), "input_corrupt", "not a readable .npz take"),
    ],
)  # fmt: skip
def test_damaged_or_hostile_archives_get_coded_errors(tmp_path, build, code, fragment):
    path = tmp_path / "t.npz"
    build(path)
    with pytest.raises(EmocaError) as err:
        read_take(path)
    assert err.value.code == code and fragment in err.value.message, err.value.message
