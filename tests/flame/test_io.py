"""FLAME pkl loading: official layouts (2020, 2023, real 5023-vertex size), cache, refusal of unsafe pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from backend.flame.io import load_flame
from backend.pickles import ChStub, restricted_load
from emoca_contract.errors import EmocaError
from tests.fixtures.flame_files import FLAME_FACES, FLAME_VERTICES, write_flame_pkl, write_malicious_pickle


def _check_against(flame, arrays, n_id=300):
    np.testing.assert_allclose(flame.v_template, arrays["v_template"], rtol=1e-6)
    np.testing.assert_allclose(flame.shapedirs, arrays["shapedirs"][:, :, :n_id], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(flame.expdirs, arrays["shapedirs"][:, :, n_id:], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(flame.posedirs, arrays["posedirs"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(flame.J_regressor, arrays["J_regressor"].toarray(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(flame.weights, arrays["weights"], rtol=1e-6)
    np.testing.assert_array_equal(flame.faces, arrays["f"].astype(np.int64))
    assert flame.parents.tolist() == [-1, 0, 1, 1, 1]


def test_fixture_is_an_old_style_pickle(tmp_path):
    path = tmp_path / "generic_model.pkl"
    write_flame_pkl(path)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, as the 2017-era files
    assert b"chumpy.ch\nCh" in raw and b"scipy.sparse.csc\ncsc_matrix" in raw
    obj = restricted_load(path)
    assert isinstance(obj["shapedirs"], ChStub) and obj["shapedirs"].value.shape == (60, 3, 400)


@pytest.mark.parametrize("version", [2020, 2023])
def test_load_flame_layouts(tmp_path, version):
    name = "generic_model.pkl" if version == 2020 else "flame2023.pkl"
    arrays = write_flame_pkl(tmp_path / name, version=version)
    flame = load_flame(tmp_path / name, cache_dir=tmp_path / "cache")
    _check_against(flame, arrays)
    assert flame.extra["version"] == f"FLAME {version}"
    assert (flame.n_shape, flame.n_exp) == (300, 100)


def test_other_expression_count_is_tolerated(tmp_path):
    arrays = write_flame_pkl(tmp_path / "flame2023.pkl", version=2023, n_exp=50)
    flame = load_flame(tmp_path / "flame2023.pkl", cache_dir=tmp_path / "cache")
    _check_against(flame, arrays)
    assert flame.n_exp == 50


def test_real_size_layout(tmp_path):
    arrays = write_flame_pkl(tmp_path / "generic_model.pkl", n_vertices=FLAME_VERTICES, n_faces=FLAME_FACES)
    flame = load_flame(tmp_path / "generic_model.pkl", cache_dir=tmp_path / "cache")
    assert flame.v_template.shape == (5023, 3) and flame.faces.shape == (9976, 3)
    assert flame.shapedirs.shape == (5023, 3, 300) and flame.expdirs.shape == (5023, 3, 100)
    assert flame.J_regressor.shape == (5, 5023)
    np.testing.assert_allclose(flame.J_regressor, arrays["J_regressor"].toarray(), rtol=1e-6, atol=1e-9)


def test_cache_round_trip(tmp_path):
    arrays = write_flame_pkl(tmp_path / "generic_model.pkl")
    first = load_flame(tmp_path / "generic_model.pkl", cache_dir=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1 and "cached" not in first.extra
    second = load_flame(tmp_path / "generic_model.pkl", cache_dir=tmp_path / "cache")
    assert second.extra["cached"] == str(cached[0])
    _check_against(second, arrays)
    assert second.name == first.name
    # a changed file gets a new cache entry, never the stale one
    arrays2 = write_flame_pkl(tmp_path / "generic_model.pkl", seed=5)
    third = load_flame(tmp_path / "generic_model.pkl", cache_dir=tmp_path / "cache")
    _check_against(third, arrays2)


def test_default_cache_dir_follows_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(tmp_path / "data é"))
    write_flame_pkl(tmp_path / "generic_model.pkl")
    load_flame(tmp_path / "generic_model.pkl")
    assert len(list((tmp_path / "data é" / "cache").glob("*.npz"))) == 1


@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_malicious_pickle_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    write_malicious_pickle(path, marker, kind)
    with pytest.raises(EmocaError) as err:
        load_flame(path, cache_dir=tmp_path / "cache")
    assert err.value.code == "unsafe_file"
    assert str(path) in err.value.message
    assert ("system" in err.value.message) if kind == "os.system" else ("builtins.exec" in err.value.message)
    assert not marker.exists()


def test_wrong_shape_names_field_and_expectation(tmp_path):
    write_flame_pkl(tmp_path / "generic_model.pkl")
    d = restricted_load(tmp_path / "generic_model.pkl")
    d["posedirs"] = np.zeros((60, 3, 35))
    d["shapedirs"] = d["shapedirs"].value
    d["v_template"] = d["v_template"].value
    d["J_regressor"] = d["J_regressor"].toarray()
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(EmocaError) as err:
        load_flame(tmp_path / "bad.pkl", cache_dir=tmp_path / "cache")
    assert err.value.code == "asset_invalid"
    assert "posedirs" in err.value.message and "60x3x36" in err.value.message and "(60, 3, 35)" in err.value.message
    assert "bad.pkl" in err.value.message


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(EmocaError) as err:
        load_flame(tmp_path / "nope.pkl")
    assert err.value.code == "asset_missing"
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle")
    with pytest.raises(EmocaError) as err:
        load_flame(tmp_path / "junk.pkl", cache_dir=tmp_path / "cache")
    assert err.value.code == "asset_invalid" and "junk.pkl" in err.value.message
