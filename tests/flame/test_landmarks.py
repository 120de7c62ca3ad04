"""Landmark embedding loaders (DECA torch-tensor entries without torch, RingNet, mediapipe) and the yaw-bin rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.flame.landmarks import (
    dynamic_bin,
    load_landmark_embedding,
    load_mediapipe_embedding,
    load_ringnet_embedding,
)
from emoca_contract.errors import EmocaError
from tests.fixtures.flame_files import (
    write_landmark_embedding,
    write_malicious_embedding,
    write_mediapipe_embedding,
    write_ringnet_embedding,
)

ROOT = Path(__file__).resolve().parents[2]


def _check(emb, a):
    np.testing.assert_array_equal(emb.static_faces, a["static_lmk_faces_idx"])
    np.testing.assert_allclose(emb.static_bary, a["static_lmk_bary_coords"], rtol=1e-6)
    np.testing.assert_array_equal(emb.dynamic_faces, a["dynamic_lmk_faces_idx"])
    np.testing.assert_array_equal(emb.dynamic_bary, a["dynamic_lmk_bary_coords"])
    np.testing.assert_array_equal(emb.full_faces, a["full_lmk_faces_idx"].reshape(68))
    np.testing.assert_array_equal(emb.full_bary, a["full_lmk_bary_coords"].reshape(68, 3))


@pytest.mark.torch
def test_deca_embedding_with_torch_tensors(tmp_path):
    a = write_landmark_embedding(tmp_path / "landmark_embedding.npy")
    raw = (tmp_path / "landmark_embedding.npy").read_bytes()
    assert b"torch._utils" in raw and b"_rebuild_tensor" in raw  # genuinely pickled tensors
    emb = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    _check(emb, a)
    assert emb.dynamic_faces.dtype == np.int64 and emb.convention == "deca"


@pytest.mark.torch
def test_deca_embedding_loads_without_torch(tmp_path):
    a = write_landmark_embedding(tmp_path / "landmark_embedding.npy")
    np.savez(tmp_path / "expected.npz", **a)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "import numpy as np\n"
        "from backend.flame.landmarks import load_landmark_embedding\n"
        f"emb = load_landmark_embedding({str(tmp_path / 'landmark_embedding.npy')!r})\n"
        f"a = np.load({str(tmp_path / 'expected.npz')!r})\n"
        "assert (emb.dynamic_faces == a['dynamic_lmk_faces_idx']).all()\n"
        "assert (emb.dynamic_bary == a['dynamic_lmk_bary_coords']).all()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_deca_embedding_with_numpy_entries(tmp_path):
    a = write_landmark_embedding(tmp_path / "lmk.npy", torch_entries=False)
    _check(load_landmark_embedding(tmp_path / "lmk.npy"), a)


@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_malicious_embedding_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    write_malicious_embedding(tmp_path / "landmark_embedding.npy", marker, kind)
    with pytest.raises(EmocaError) as err:
        load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    assert err.value.code == "unsafe_file" and "landmark_embedding.npy" in err.value.message
    assert not marker.exists()


def test_embedding_missing_key(tmp_path):
    a = write_landmark_embedding(tmp_path / "lmk.npy", torch_entries=False)
    del a["full_lmk_faces_idx"]
    np.save(tmp_path / "lmk2.npy", np.array(a, dtype=object), allow_pickle=True)
    with pytest.raises(EmocaError) as err:
        load_landmark_embedding(tmp_path / "lmk2.npy")
    assert err.value.code == "asset_invalid" and "full_lmk_faces_idx" in err.value.message


def test_ringnet_embedding(tmp_path):
    a = write_ringnet_embedding(tmp_path / "flame_static_embedding.pkl", tmp_path / "flame_dynamic_embedding.npy")
    emb = load_ringnet_embedding(tmp_path / "flame_static_embedding.pkl", tmp_path / "flame_dynamic_embedding.npy")
    assert emb.convention == "ringnet"
    np.testing.assert_array_equal(emb.static_faces, a["static_lmk_faces_idx"])
    np.testing.assert_array_equal(emb.dynamic_faces, a["dynamic_lmk_faces_idx"])
    np.testing.assert_array_equal(emb.full_faces[17:], a["static_lmk_faces_idx"])


def test_mediapipe_embedding(tmp_path):
    a = write_mediapipe_embedding(tmp_path / "mediapipe_landmark_embedding.npz")
    emb = load_mediapipe_embedding(tmp_path / "mediapipe_landmark_embedding.npz")
    assert emb.faces.shape == (105,) and emb.bary.shape == (105, 3)
    np.testing.assert_array_equal(emb.faces, a["lmk_face_idx"])
    np.testing.assert_allclose(emb.bary, a["lmk_b_coords"], rtol=1e-6)


@pytest.mark.parametrize(
    ("yaw", "deca", "ringnet"),
    [(0, 0, 0), (30, 30, 69), (-30, 69, 30), (39, 39, 78), (55, 39, 78), (-39, 78, 39), (-60, 78, 39),
     (-1, 40, 1), (0.4, 0, 0), (-0.6, 40, 1), (29.6, 30, 69)],
)  # fmt: skip
def test_dynamic_bin_rule(yaw, deca, ringnet):
    assert dynamic_bin(yaw) == deca
    assert dynamic_bin(yaw, "ringnet") == ringnet


def test_dynamic_bin_vectorised():
    np.testing.assert_array_equal(dynamic_bin(np.array([-30.0, 30.0, 100.0])), [69, 30, 39])


@pytest.mark.torch
def test_exploit_inside_a_tensor_storage_refused(tmp_path):
    from tests.fixtures.flame_files import write_malicious_storage_embedding

    marker = tmp_path / "pwned"
    write_malicious_storage_embedding(tmp_path / "landmark_embedding.npy", marker)
    assert b"torch.storage" in (tmp_path / "landmark_embedding.npy").read_bytes()
    with pytest.raises(EmocaError) as err:
        load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    assert err.value.code == "unsafe_file" and "landmark_embedding.npy" in err.value.message
    assert "system" in err.value.message
    assert not marker.exists()
