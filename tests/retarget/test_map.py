"""The FLAME <-> ARKit map: FLAME's landmark function against the FLAME layer, the map computed on the synthetic
test head and on an official-layout FLAME file (random numbers), cached by the model's hash, its file and reader,
both directions and their round trip, the command and the protocol request."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.ict.data import load_ict
from backend.retarget import map as M
from backend.retarget.flame import flame_landmark_model
from backend.retarget.ict import ict_landmark_model
from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding
from emoca_contract import arkit_map as A
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError
from tests.fixtures.flame_files import write_flame_pkl, write_landmark_embedding

ROOT = Path(__file__).resolve().parents[2]
SMALL = dataclasses.replace(M.MapOptions(), samples=400, test_samples=150)  # quick fits for most tests


@pytest.fixture(scope="module")
def ict():
    return ict_landmark_model(load_ict())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(path, map) of the synthetic head's map in a fresh cache."""
    folder = tmp_path_factory.mktemp("maps")
    path, m, built = M.map_for_head("synthetic", opt=SMALL, folder=folder)
    assert built
    return path, m


def official_flame(folder: Path, seed: int = 0) -> Path:
    """An official-layout FLAME file and its landmark embedding beside it (random numbers)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = write_flame_pkl(folder / "generic_model.pkl", n_vertices=300, seed=seed)
    write_landmark_embedding(folder / "landmark_embedding.npy", n_faces=len(arrays["f"]), seed=seed + 1,
                             torch_entries=False)  # fmt: skip
    return folder / "generic_model.pkl"


def known_weights(carried: np.ndarray, n: int = 200, seed: int = 0) -> np.ndarray:
    """A few channels at a time, in [0, 1], on the carried channels only."""
    return M.arkit_samples(carried, n, SMALL, np.random.default_rng(seed))


@pytest.mark.torch
@pytest.mark.parametrize("head", ["synthetic", "official"])
def test_flames_landmark_function_is_the_flame_layers(head, tmp_path):
    import torch

    from backend.flame.io import load_flame
    from backend.flame.landmarks import load_landmark_embedding
    from backend.flame.layer import FLAME

    if head == "synthetic":
        model = synthetic_head()
        emb = synthetic_landmark_embedding(model)
    else:
        pkl = official_flame(tmp_path)
        model, emb = load_flame(pkl), load_landmark_embedding(pkl.parent / "landmark_embedding.npy")
    lm = flame_landmark_model(model, emb, 50)
    rng = np.random.default_rng(1)
    exp = rng.normal(0, 1.0, (6, 50))
    jaw = np.c_[rng.uniform(0.0, 0.4, 6), rng.normal(0, 0.05, (6, 2))]
    layer = FLAME(model, emb).double()
    pose = torch.cat([torch.zeros(6, 3, dtype=torch.float64), torch.from_numpy(jaw)], 1)
    ref = layer(torch.zeros(6, model.n_shape, dtype=torch.float64), torch.from_numpy(exp), pose).landmarks3d
    np.testing.assert_allclose(A.flame_landmarks(lm, exp, jaw), ref.numpy(), atol=1e-7)


def test_the_map_is_cached_by_the_models_hash(synthetic, tmp_path):
    import shutil

    first, m = synthetic
    path = Path(shutil.copy(first, tmp_path / first.name))  # a cache of its own: this test damages it
    again, m2, built = M.map_for_head("synthetic", opt=SMALL, folder=path.parent)
    assert not built and again == path and m2.meta["model_hash"] == m.meta["model_hash"] in path.name
    np.testing.assert_array_equal(m2.forward, m.forward)
    other, _, built = M.map_for_head("synthetic", opt=dataclasses.replace(SMALL, n_exp=20), folder=path.parent)
    assert built and other != path  # other options: another map
    forced, _, built = M.map_for_head("synthetic", opt=SMALL, folder=path.parent, force=True)
    assert built and forced == path
    path.write_bytes(b"damaged")  # a damaged cache entry is built again
    _, _, built = M.map_for_head("synthetic", opt=SMALL, folder=path.parent)
    assert built and A.read_arkit_map(path).meta["model_hash"] == m.meta["model_hash"]


def test_the_file_round_trips_and_the_reader_refuses_bad_files(synthetic, tmp_path):
    path, m = synthetic
    back = A.read_arkit_map(path)
    for key, value in A.map_arrays(m).items():
        if key != "meta":
            np.testing.assert_array_equal(A.map_arrays(back)[key], value)
    assert back.meta == m.meta and back.n_exp == 50
    arrays = {k: np.asarray(v) for k, v in np.load(path).items()}

    def broken(name: str, **changes) -> Path:
        out = tmp_path / f"{name}.npz"
        np.savez(out, **{**arrays, **changes})
        return out

    meta = json.loads(str(arrays["meta"]))
    cases = {
        "not_npz": (tmp_path / "plain.npz", "no zip header"),
        "names": (broken("names", names=np.array(ARKIT_NAMES[::-1])), "Apple's order"),
        "shape": (broken("shape", arkit_effects=arrays["arkit_effects"][:, :60]), "arkit_effects has shape"),
        "width": (broken("width", inverse=arrays["inverse"][:10]), "inverse has shape (10, 52), expected (53, 52)"),
        "finite": (broken("finite", inverse_bias=np.full_like(arrays["inverse_bias"], np.nan)), "not finite"),
        "newer": (broken("newer", meta=np.array(json.dumps({**meta, "version": 99}))), "map version 99"),
        "format": (broken("format", meta=np.array(json.dumps({**meta, "format": "x"}))), "meta.format"),
    }
    cases["not_npz"][0].write_bytes(b"not a zip")
    for name, (bad, fragment) in cases.items():
        with pytest.raises(EmocaError) as err:
            A.read_arkit_map(bad)
        assert err.value.code == "asset_invalid" and fragment in err.value.message, (name, err.value.message)
    missing = {k: v for k, v in arrays.items() if k != "flame_qe"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(EmocaError, match="flame_qe"):
        A.read_arkit_map(tmp_path / "missing.npz")
    np.savez(tmp_path / "pickled.npz", **{**arrays, "forward": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(EmocaError) as err:
        A.read_arkit_map(tmp_path / "pickled.npz")
    assert err.value.code == "unsafe_file"
    with pytest.raises(EmocaError) as err:
        A.read_arkit_map(tmp_path / "none.npz")
    assert err.value.code == "asset_missing"


def test_the_synthetic_heads_map_reproduces_landmark_motion_both_ways(synthetic):
    _, m = synthetic
    fig = m.meta["figures"]
    assert 0 < fig["forward_floor_pct"] <= fig["forward_error_pct"] < fig["forward_motion_pct"]
    assert 0 < fig["inverse_error_pct"] < 0.5 * fig["inverse_motion_pct"]
    assert fig["round_trip_weight_error"] <= 0.05
    not_carried = set(m.meta["not_carried"])
    assert {n for n in ARKIT_NAMES if n.startswith("eyeLook")} | {"tongueOut"} <= not_carried
    assert {"jawOpen", "mouthSmileLeft", "eyeBlinkLeft", "browInnerUp"}.isdisjoint(not_carried)
    # the ICT head sits on FLAME's neutral: the aligned inner points are close to the synthetic head's
    size = M.face_size(m.flame_neutral)
    gap = np.linalg.norm(m.arkit_neutral[17:] - m.flame_neutral[17:], axis=1).mean() / size
    assert gap < 0.1


def test_arkit_to_flame_and_back_gives_the_weights(synthetic):
    _, m = synthetic
    w = known_weights(m.carried, seed=7)
    exp, jaw = A.arkit_to_flame(m, w)
    assert exp.shape == (200, 50) and jaw.shape == (200, 3) and exp.dtype == np.float32
    opened = np.zeros((1, 52))
    opened[0, ARKIT_INDEX["jawOpen"]] = 1.0
    assert A.arkit_to_flame(m, opened)[1][0, 0] > 0.05  # jawOpen opens FLAME's jaw (+X rotation)
    back = A.flame_to_arkit(m, exp, jaw)
    assert back.dtype == np.float32 and back.min() >= 0.0 and back.max() <= 1.0
    assert (back[:, ~m.carried] == 0).all()
    assert np.abs(back - w).mean() <= 0.05
    # the landmarks agree: FLAME under the inverse's coefficients moves like the ICT head under the weights
    ict_motion = A.arkit_landmarks(m, w) - m.arkit_neutral
    flame_motion = A.flame_landmarks(m.flame, exp, jaw) - m.flame_neutral
    assert np.linalg.norm(flame_motion - ict_motion, axis=2).mean() < 0.5 * np.linalg.norm(ict_motion, axis=2).mean()


def test_a_takes_expression_width_is_padded_or_refused(synthetic):
    _, m = synthetic
    rng = np.random.default_rng(2)
    short = rng.normal(size=(4, 30))
    np.testing.assert_allclose(A.flame_to_arkit(m, short, np.zeros((4, 3))),
                               A.flame_to_arkit(m, np.pad(short, ((0, 0), (0, 20))), np.zeros((4, 3))))  # fmt: skip
    with pytest.raises(EmocaError) as err:
        A.flame_to_arkit(m, rng.normal(size=(4, 60)), np.zeros((4, 3)))
    assert err.value.code == "flame_mismatch" and "--n-exp 60" in err.value.hint


def test_a_map_is_computed_for_an_official_layout_flame_file(ict, tmp_path):
    """Random numbers in FLAME's layout: no face to reproduce, but the map is computed, keyed by the model and
    consistent (both directions defined, bounded, the inverse no worse than nothing in least squares)."""
    pkl = official_flame(tmp_path / "a")
    path, m, built = M.map_for_head("flame", flame=pkl, opt=SMALL, folder=tmp_path / "cache")
    assert built and m.meta["model"].startswith("FLAME") and m.meta["head"] == "flame"
    assert all(np.isfinite(v) for v in m.meta["figures"].values())
    other, _, _ = M.map_for_head("flame", flame=official_flame(tmp_path / "b", seed=5), opt=SMALL,
                                 folder=tmp_path / "cache")  # fmt: skip
    assert other != path  # another model, another hash
    w = known_weights(m.carried, 50)
    exp, jaw = A.arkit_to_flame(m, w)
    target = np.einsum("nk,klc->nlc", w, m.arkit_effects)
    moved = A.flame_landmarks(m.flame, exp, jaw) - m.flame_neutral
    assert np.sqrt(((moved - target) ** 2).mean()) < np.sqrt((target**2).mean())
    back = A.flame_to_arkit(m, exp, jaw)
    assert back.min() >= 0 and back.max() <= 1 and (back[:, ~m.carried] == 0).all()
    with pytest.raises(EmocaError) as err:
        M.map_for_head("flame", flame=tmp_path / "none" / "generic_model.pkl", opt=SMALL, folder=tmp_path)
    assert err.value.code == "asset_missing"


def test_the_command_prints_the_map_and_its_figures(tmp_path):
    env = dict(os.environ, EMOCA_BLENDER_DATA=str(tmp_path / "data"))
    cmd = [sys.executable, "-m", "backend", "arkit-map", "--head", "synthetic", "--samples", "200", "--json",
           "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["built"] and Path(doc["path"]).is_file() and "tongueOut" in doc["not_carried"]
    assert "FLAME -> ARKit: landmark error" in first.stderr and doc["figures"]["forward_error_pct"] > 0
    out = tmp_path / "copy.npz"
    second = subprocess.run([*cmd, "-o", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and not json.loads(second.stdout)["built"] and out.is_file()
    bad = subprocess.run([*cmd[:-2], "--samples", "5"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert bad.returncode == 2 and "config_invalid" in bad.stderr
