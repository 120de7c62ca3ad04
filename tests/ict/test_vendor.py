"""The vendored assets: as published (sha256), with their licences and credits, named in the README's NOTICE, and
the reduced ICT copy rebuilt from the full model equal to the shipped one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from backend.ict import reduce
from backend.ict.data import load_ict
from backend.vendor import FACE_LANDMARKER_TASK, ICT_FACE, VENDOR_DIR
from emoca_contract.errors import EmocaError

ROOT = Path(__file__).resolve().parents[2]
TASK_SHA256 = "b261925d4aad812b47a0e8d58c1baa1223270a5d1f663d78338bc881c003879d"


def test_the_face_landmarker_bundle_is_the_published_file_with_its_licence():
    assert hashlib.sha256(FACE_LANDMARKER_TASK.read_bytes()).hexdigest() == TASK_SHA256
    assert "Apache License" in (VENDOR_DIR / "mediapipe" / "LICENSE").read_text(encoding="utf-8")


def test_the_ict_copy_keeps_its_licence_credits_and_provenance():
    licence = (VENDOR_DIR / "ict" / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "USC Institute for Creative Technologies" in licence
    assert "Core Contributors" in (VENDOR_DIR / "ict" / "CREDITS.md").read_text(encoding="utf-8")
    readme = (VENDOR_DIR / "README.md").read_text(encoding="utf-8")
    assert TASK_SHA256 in readme and "da5f95a" in readme and "backend.ict.reduce" in readme
    model = load_ict()
    assert model.provenance["converted_sha256"] in readme
    assert model.provenance["n_identity"] >= 30 and len(model.identity_deltas) == model.provenance["n_identity"]


def test_the_readme_notice_credits_both_assets():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    notice = text[text.index("## NOTICE") :]
    for needle in ("MediaPipe", "Apache-2.0", "ICT-FaceKit", "MIT", "USC Institute for Creative Technologies",
                   "backend/vendor"):  # fmt: skip
        assert needle in notice, needle


def test_the_reduced_head_is_what_the_rig_needs():
    model = load_ict()
    v = len(model.vertices)
    assert model.poly_vertices.max() < v and model.poly_sizes.sum() == len(model.poly_vertices)
    assert set(np.unique(model.poly_sizes)) == {3, 4}
    assert model.expression_deltas.shape == (53, v, 3) and len(model.expression_names) == 53
    assert model.landmark_indices.shape == (68,) and model.landmark_indices.max() < model.regions["face"][1]
    assert set(model.regions) >= {"face", "head_neck", "teeth", "gums_tongue", "eyeball_L", "eyeball_R"}
    assert list(model.regions.values())[-1][1] == v
    # metres after loading: a head about 25 cm wide, the nose tip in front
    assert 0.2 < np.ptp(model.vertices[:, 0]) < 0.3 and model.vertices[model.landmark_indices[30], 2] > 0.1
    # the left eyeball and ICT's _L shapes sit on +X, the character's left
    assert model.vertices[model.region("eyeball_L"), 0].mean() > 0.02
    moved = np.abs(model.expression("mouthSmile_L")).max(1) > 1e-3
    assert model.vertices[moved, 0].mean() > 0.01


def test_a_missing_or_broken_head_file_is_a_clear_error(tmp_path):
    with pytest.raises(EmocaError) as err:
        load_ict(tmp_path / "absent.npz")
    assert err.value.code == "asset_missing" and "backend.ict.reduce" in (err.value.hint or "")
    np.savez(tmp_path / "other.npz", vertices=np.zeros((3, 3)))
    with pytest.raises(EmocaError) as err:
        load_ict(tmp_path / "other.npz")
    assert err.value.code == "asset_invalid"


@pytest.mark.slow
def test_rebuilding_from_the_full_model_gives_the_shipped_arrays(tmp_path):
    if not reduce.SOURCE.is_file():
        pytest.skip(f"the full ICT-FaceKit model is not at {reduce.SOURCE} (outside the project)")
    out = reduce.build_ict_asset(reduce.SOURCE, tmp_path / "ict_face.npz")
    with np.load(out, allow_pickle=False) as new, np.load(ICT_FACE, allow_pickle=False) as shipped:
        assert sorted(new.files) == sorted(shipped.files)
        for key in new.files:
            if key == "provenance":
                assert json.loads(str(new[key])) == json.loads(str(shipped[key]))
            else:
                np.testing.assert_array_equal(new[key], shipped[key], err_msg=key)
