"""Session-scoped official-layout checkpoint files (random weights), written once and deleted afterwards."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


@dataclass
class EmocaAssets:
    root: Path  # an assets root in the official layout (EMOCA/models/<name>, DECA/data, FLAME/geometry)
    network: dict  # module-local EMOCA weights (E_flame, E_expression, E_detail, D_detail)
    flame: object  # FlameData loaded from flame_pkl; its buffers are embedded in the checkpoint
    flame_pkl: Path  # FLAME/geometry/generic_model.pkl (official layout, random, 5023 vertices)
    landmarks: Path  # FLAME/geometry/landmark_embedding.npy beside it
    folder: Path  # official EMOCA model folder
    tar: Path  # deca_model.tar with the same E_flame/E_detail/D_detail


@pytest.fixture(scope="session")
def emoca_assets(tmp_path_factory) -> EmocaAssets:
    from backend.flame.io import load_flame
    from tests.fixtures import checkpoints as ck
    from tests.fixtures import flame_files as ff

    root = tmp_path_factory.mktemp("emoca_assets")
    network = ck.random_network_state(seed=0)
    geometry = root / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    ff.write_flame_pkl(geometry / "generic_model.pkl", n_vertices=5023, n_faces=9976)
    ff.write_landmark_embedding(geometry / "landmark_embedding.npy", n_faces=9976)
    flame = load_flame(geometry / "generic_model.pkl", cache_dir=root / "cache")
    folder = ck.write_emoca_folder(root / "EMOCA" / "models", network, flame, name="EMOCA")
    tar = ck.write_deca_tar(root / "DECA" / "data" / "deca_model.tar", network)
    yield EmocaAssets(
        root, network, flame, geometry / "generic_model.pkl", geometry / "landmark_embedding.npy", folder, tar
    )
    shutil.rmtree(root, ignore_errors=True)  # ~0.8 GB: do not leave it in pytest's retained temp dirs


@pytest.fixture(scope="session")
def deca_folder(emoca_assets) -> Path:
    """An official DECA-format model folder (deca_class DECA, no E_expression keys), same weights."""
    from tests.fixtures import checkpoints as ck

    return ck.write_emoca_folder(
        emoca_assets.root / "EMOCA" / "models", emoca_assets.network, emoca_assets.flame, name="DECA", kind="deca"
    )
