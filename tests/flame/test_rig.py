"""Rig file contract (docs/formats.md) and the export-rig command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.flame.rig import write_rig
from backend.synthetic.head import NAME, synthetic_head, synthetic_landmark_embedding
from emoca_contract.errors import EmocaError
from emoca_contract.rig import RIG_VERSION, read_rig
from tests.fixtures.flame_files import write_flame_pkl, write_head_template_obj, write_landmark_embedding

ROOT = Path(__file__).resolve().parents[2]

CONTRACT = {  # key -> (dtype kind, shape with V/F/VT/ns/ne placeholders)
    "v_template": ("f4", ("V", 3)), "faces": ("i4", ("F", 3)), "uvs": ("f4", ("VT", 2)),
    "uv_faces": ("i4", ("F", 3)), "shapedirs": ("f4", ("V", 3, "ns")), "expdirs": ("f4", ("V", 3, "ne")),
    "posedirs": ("f4", ("V", 3, 36)), "J_regressor": ("f4", (5, "V")), "joints": ("f4", (5, 3)),
    "parents": ("i4", (5,)), "weights": ("f4", ("V", 5)), "lmk_faces_idx": ("i4", (68,)),
    "lmk_bary_coords": ("f4", (68, 3)),
}  # fmt: skip


def _check_contract(rig, n_shape, n_exp):
    sizes = {"V": rig["v_template"].shape[0], "F": rig["faces"].shape[0], "VT": rig["uvs"].shape[0],
             "ns": n_shape, "ne": n_exp}  # fmt: skip
    for key, (dtype, shape) in CONTRACT.items():
        want = tuple(sizes.get(s, s) for s in shape)
        assert rig[key].shape == want, key
        assert rig[key].dtype == np.dtype(dtype), key
    assert rig["parents"].tolist() == [-1, 0, 1, 1, 1]
    assert rig["joint_names"].tolist() == ["root", "neck", "jaw", "eye_L", "eye_R"]
    meta = rig["meta"]
    assert meta["format"] == "emoca-rig" and meta["version"] == RIG_VERSION and meta["units"] == "m"
    assert meta["kind"] == "flame"
    assert (meta["n_shape"], meta["n_exp"]) == (n_shape, n_exp)
    assert set(meta) >= {"model", "source", "backend_version"}


def test_round_trip_synthetic(unicode_tmp):
    head = synthetic_head()
    emb = synthetic_landmark_embedding(head)
    path = write_rig(unicode_tmp / "rig.npz", head, emb, n_exp=20)
    rig = read_rig(path)
    _check_contract(rig, 100, 20)
    assert rig["meta"]["model"] == NAME
    np.testing.assert_array_equal(rig["v_template"], head.v_template)
    np.testing.assert_array_equal(rig["expdirs"], head.expdirs[:, :, :20])
    np.testing.assert_array_equal(rig["lmk_faces_idx"], emb.full_faces)
    np.testing.assert_allclose(rig["joints"], head.J_regressor @ head.v_template, atol=1e-6)
    assert "shape" not in rig
    assert not list(unicode_tmp.glob("*.partial"))
    # plain arrays only: loadable without pickle
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["format"] == "emoca-rig"


def test_baked_identity_moves_the_joints(tmp_path):
    head = synthetic_head()
    shape = np.random.default_rng(0).normal(size=100) * 2
    rig = read_rig(write_rig(tmp_path / "rig.npz", head, shape=shape))
    np.testing.assert_allclose(rig["shape"], shape.astype(np.float32))
    shaped = head.v_template.astype(np.float64) + head.shapedirs.astype(np.float64) @ shape
    np.testing.assert_allclose(rig["joints"], head.J_regressor @ shaped, atol=1e-6)
    assert np.abs(rig["joints"] - head.J_regressor @ head.v_template).max() > 1e-4


def test_newer_version_and_pickles_refused(tmp_path):
    head = synthetic_head()
    path = write_rig(tmp_path / "rig.npz", head)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta"]))
    meta["version"] = RIG_VERSION + 1
    data["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "newer.npz", **data)
    with pytest.raises(EmocaError) as err:
        read_rig(tmp_path / "newer.npz")
    assert err.value.code == "asset_invalid" and "newer" in err.value.message
    data["meta"] = np.array({"x": 1}, dtype=object)
    np.savez(tmp_path / "pickled.npz", **data)
    with pytest.raises(EmocaError) as err:
        read_rig(tmp_path / "pickled.npz")
    assert err.value.code == "unsafe_file"
    del data["weights"]
    data["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "missing.npz", **data)
    with pytest.raises(EmocaError, match="weights"):
        read_rig(tmp_path / "missing.npz")


def _cli(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), EMOCA_BLENDER_DATA=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "backend", "export-rig", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)  # fmt: skip


def test_cli_synthetic_non_ascii_path(unicode_tmp):
    out = unicode_tmp / "tête 頭.npz"
    res = _cli(["--head", "synthetic", "-o", str(out)], unicode_tmp)
    assert res.returncode == 0, res.stderr
    assert "synthetic test head (not FLAME)" in res.stderr
    assert res.stdout.strip() == str(out)
    rig = read_rig(out)
    _check_contract(rig, 100, 50)
    assert rig["meta"]["model"] == NAME


@pytest.mark.torch
def test_cli_flame_official_layout(tmp_path):
    geometry = tmp_path / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    arrays = write_flame_pkl(geometry / "generic_model.pkl")
    n_faces = len(arrays["f"])
    emb = write_landmark_embedding(geometry / "landmark_embedding.npy", n_faces=n_faces)
    uvs, _ = write_head_template_obj(geometry / "head_template.obj", arrays["v_template"], arrays["f"])
    take = tmp_path / "take.npz"
    shapes = np.random.default_rng(0).normal(size=(4, 100)).astype(np.float32)
    np.savez(take, shape=shapes, valid=np.array([True, False, True, True]))
    out = tmp_path / "rig.npz"
    res = _cli(["--flame", str(geometry / "generic_model.pkl"), "--n-exp", "30", "--shape-from", str(take),
                "-o", str(out)], tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rig = read_rig(out)
    _check_contract(rig, 100, 30)
    assert rig["meta"]["model"] == "FLAME 2020"
    np.testing.assert_allclose(rig["uvs"], uvs, atol=1e-6)
    np.testing.assert_array_equal(rig["lmk_faces_idx"], emb["full_lmk_faces_idx"].reshape(68))
    np.testing.assert_allclose(rig["shape"], shapes[[0, 2, 3]].mean(0), atol=1e-6)
    np.testing.assert_allclose(rig["expdirs"], arrays["shapedirs"][:, :, 300:330], rtol=1e-6, atol=1e-9)


@pytest.mark.torch
def test_cli_default_is_the_installed_flame_else_the_open_head(tmp_path):
    """No --head, no --flame: FLAME when it is installed (official layout under the assets root), else ICT."""
    res = _cli(["-o", str(tmp_path / "open.npz")], tmp_path)
    assert res.returncode == 0, res.stderr
    assert read_rig(tmp_path / "open.npz")["meta"]["kind"] == "open"
    geometry = tmp_path / "data" / "assets" / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    write_flame_pkl(geometry / "generic_model.pkl")
    res = _cli(["-o", str(tmp_path / "flame.npz")], tmp_path)
    assert res.returncode == 0, res.stderr
    rig = read_rig(tmp_path / "flame.npz")
    assert rig["meta"]["kind"] == "flame" and rig["meta"]["model"] == "FLAME 2020"


def test_cli_bad_flame_is_a_clear_error(tmp_path):
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(b"garbage")
    res = _cli(["--flame", str(bad), "-o", str(tmp_path / "rig.npz")], tmp_path)
    assert res.returncode == 2
    assert "asset_invalid" in res.stderr and "generic_model.pkl" in res.stderr
    assert not (tmp_path / "rig.npz").exists()


def test_obj_uvs_must_match_the_model_faces(tmp_path):
    from backend.flame.io import read_obj_uvs

    head = synthetic_head()
    uvs, uv_faces = write_head_template_obj(tmp_path / "head_template.obj", head.v_template, head.faces)
    got_uvs, got_faces = read_obj_uvs(tmp_path / "head_template.obj", head.faces)
    np.testing.assert_allclose(got_uvs, uvs, atol=1e-6)
    np.testing.assert_array_equal(got_faces, uv_faces)
    with pytest.raises(EmocaError) as err:
        read_obj_uvs(tmp_path / "head_template.obj", head.faces[::-1])
    assert err.value.code == "asset_invalid" and "head_template.obj" in err.value.message
