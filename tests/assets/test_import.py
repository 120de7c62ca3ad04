"""`assets import`: the zips/folders users download, placed into the layout, safely."""

from __future__ import annotations

import os
import pickle
import stat
import zipfile

import pytest

from backend import assets
from backend.app.cli import main
from emoca_contract.errors import EmocaError
from tests.assets import helpers as H


def _valid(root, *keys):
    st = {s.key: s for s in assets.status(root, keys=keys)}
    return all(st[k].present and st[k].valid for k in keys), {k: st[k].message for k in keys}


def test_flame2020_zip_places_generic_model(root, asset_env):
    z = H.make_zip(
        asset_env / "téléchargements" / "FLAME2020.zip",
        {
            "generic_model.pkl": H.flame_pkl_bytes(),
            "female_model.pkl": H.flame_pkl_bytes(1),
            "Readme.pdf": b"%PDF-1.4",
        },
    )
    placed = assets.import_assets(z, root)
    assert placed == [str(root / "FLAME/geometry/generic_model.pkl")]
    assert (root / "FLAME/geometry/generic_model.pkl").read_bytes() == H.flame_pkl_bytes()
    assert not (root / "FLAME/geometry/female_model.pkl").exists()
    assert _valid(root, "flame2020")[0]
    assert z.exists()  # not --move
    assert not [p for p in root.iterdir() if p.name.startswith(".import-")]  # staging cleaned up


def test_emoca_flame_zip_and_model_zips(root, asset_env):
    dl = asset_env / "dl"
    files = H.flame_folder_files()
    H.make_zip(dl / "FLAME.zip", files)
    models = asset_env / "built"
    H.write_model_folder(models, "EMOCA_v2_lr_cos_1.5")
    H.make_zip(
        dl / "EMOCA_v2_lr_cos_1.5.zip", H.folder_to_zip_entries(models / "EMOCA_v2_lr_cos_1.5", "EMOCA_v2_lr_cos_1.5")
    )
    H.write_emotion_folder(models, "ResNet50")
    H.make_zip(dl / "ResNet50.zip", H.folder_to_zip_entries(models / "ResNet50", "ResNet50"))
    from tests.fixtures.checkpoints import torch_save

    torch_save({"E_flame": H.tiny_state()}, asset_env / "deca_model.tar")
    H.make_zip(
        dl / "DECA.zip",
        {
            "DECA/data/deca_model.tar": (asset_env / "deca_model.tar").read_bytes(),
            "DECA/data/texture_data_256.npy": H.npy_bytes(H.np.zeros(4)),
        },
    )
    for name in ("FLAME.zip", "EMOCA_v2_lr_cos_1.5.zip", "ResNet50.zip", "DECA.zip"):
        assets.import_assets(dl / name, root)
    for rel in files:
        assert (root / rel).read_bytes() == files[rel]
    # the '/' of Lightning's metric name made a sub-folder: kept as is
    best = root / "EMOCA/models/EMOCA_v2_lr_cos_1.5/detail/checkpoints/deca-epoch=03-val_loss"
    assert (best / "dataloader_idx_0=9.44489288.ckpt").is_file()
    assert (root / "DECA/data/texture_data_256.npy").is_file()  # part of the layout, no check of its own
    ok, msgs = _valid(
        root,
        "flame2020",
        "landmark_embedding",
        "mediapipe_embedding",
        "uv_face_mask",
        "model:EMOCA_v2_lr_cos_1.5",
        "emotion:ResNet50",
        "deca_tar",
    )
    assert ok, msgs


def test_folder_and_loose_files(root, asset_env):
    src = asset_env / "mes fichiers"
    H.write_model_folder(src, "EMOCA")  # a model folder given directly (cfg.yaml at its top)
    placed = assets.import_assets(src / "EMOCA", root)
    assert all(p.startswith(str(root / "EMOCA/models/EMOCA")) for p in placed) and len(placed) == 5
    loose = asset_env / "landmark_embedding.npy"
    loose.write_bytes(H.landmark_embedding_bytes())
    assert assets.import_assets(loose, root) == [str(root / "FLAME/geometry/landmark_embedding.npy")]
    assert _valid(root, "model:EMOCA", "landmark_embedding")[0]


def test_a_whole_assets_folder(root, asset_env):
    src = asset_env / "old checkout" / "assets"
    H.write_files(src, H.flame_folder_files())
    H.write_model_folder(src / "EMOCA" / "models", "EMOCA_v2_mp")
    assets.import_assets(src.parent, root)
    assert _valid(root, "flame2020", "head_template", "model:EMOCA_v2_mp")[0]


def test_valid_existing_files_are_kept_unless_forced(root, asset_env):
    first = H.make_zip(asset_env / "a" / "FLAME2020.zip", {"generic_model.pkl": H.flame_pkl_bytes(0)})
    second = H.make_zip(asset_env / "b" / "FLAME2020.zip", {"generic_model.pkl": H.flame_pkl_bytes(7)})
    assets.import_assets(first, root)
    target = root / "FLAME/geometry/generic_model.pkl"
    logs = []
    assert assets.import_assets(second, root, log=logs.append) == []
    assert target.read_bytes() == H.flame_pkl_bytes(0)
    assert any("already installed" in m for m in logs)
    assert assets.import_assets(second, root, force=True) == [str(target)]
    assert target.read_bytes() == H.flame_pkl_bytes(7)


def test_an_invalid_existing_file_is_replaced(root, asset_env):
    H.write_files(root, {"FLAME/geometry/generic_model.pkl": b"<html>half a download"})
    z = H.make_zip(asset_env / "FLAME2020.zip", {"generic_model.pkl": H.flame_pkl_bytes()})
    assert assets.import_assets(z, root) == [str(root / "FLAME/geometry/generic_model.pkl")]
    assert _valid(root, "flame2020")[0]


def test_invalid_asset_is_not_placed(root, asset_env):
    files = H.flame_folder_files()
    files["FLAME/geometry/generic_model.pkl"] = b"\x80\x02 not really FLAME"
    z = H.make_zip(asset_env / "FLAME.zip", files)
    with pytest.raises(EmocaError) as e:
        assets.import_assets(z, root)
    assert e.value.code == "asset_invalid"
    assert "generic_model.pkl" in e.value.message
    assert not (root / "FLAME/geometry/generic_model.pkl").exists()
    assert (root / "FLAME/mask/uv_face_mask.png").is_file()  # the valid ones were placed


def test_zip_slip_is_refused(root, asset_env):
    outside = asset_env / "evil.txt"
    z = asset_env / "FLAME.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("FLAME/mask/uv_face_mask.png", H.png_bytes())
        zf.writestr("../../evil.txt", b"pwned")
    with pytest.raises(EmocaError) as e:
        assets.import_assets(z, root)
    assert e.value.code == "unsafe_file" and "../../evil.txt" in e.value.message
    assert not outside.exists() and not (root / "FLAME").exists()


@pytest.mark.parametrize(
    "name", ["/etc/evil.txt", "C:/evil.txt", "FLAME/geometry/../../../evil.txt", "FLAME\\..\\..\\evil.txt"]
)
def test_absolute_and_backslash_members_are_refused(root, asset_env, name):
    z = asset_env / "x.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"pwned")
    with pytest.raises(EmocaError) as e:
        assets.import_assets(z, root)
    assert e.value.code == "unsafe_file"


def test_symlink_members_are_refused(root, asset_env):
    z = asset_env / "FLAME.zip"
    info = zipfile.ZipInfo("FLAME/geometry/generic_model.pkl")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(EmocaError) as e:
        assets.import_assets(z, root)
    assert e.value.code == "unsafe_file"
    assert not (root / "FLAME/geometry/generic_model.pkl").exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_symlinks_in_folders_are_not_followed(root, asset_env):
    secret = asset_env / "secret" / "generic_model.pkl"
    secret.parent.mkdir()
    secret.write_bytes(H.flame_pkl_bytes())
    src = asset_env / "src"
    (src / "FLAME" / "geometry").mkdir(parents=True)
    os.symlink(secret, src / "FLAME" / "geometry" / "generic_model.pkl")
    (src / "FLAME" / "geometry" / "landmark_embedding.npy").write_bytes(H.landmark_embedding_bytes())
    placed = assets.import_assets(src, root)
    assert placed == [str(root / "FLAME/geometry/landmark_embedding.npy")]
    assert not (root / "FLAME/geometry/generic_model.pkl").exists()


def test_move_deletes_the_sources(root, asset_env):
    src = asset_env / "src"
    H.write_files(src, {"FLAME/mask/uv_face_mask.png": H.png_bytes(), "notes.txt": b"mine"})
    assets.import_assets(src, root, move=True)
    assert not (src / "FLAME/mask/uv_face_mask.png").exists() and (src / "notes.txt").exists()
    z = H.make_zip(asset_env / "FLAME2020.zip", {"generic_model.pkl": H.flame_pkl_bytes()})
    assets.import_assets(z, root, move=True)
    assert not z.exists() and (root / "FLAME/geometry/generic_model.pkl").is_file()


def test_nothing_recognised(root, asset_env):
    z = H.make_zip(asset_env / "holiday.zip", {"photo.jpg": b"\xff\xd8"})
    with pytest.raises(EmocaError) as e:
        assets.import_assets(z, root)
    assert e.value.code == "asset_invalid" and "holiday.zip" in e.value.message
    with pytest.raises(EmocaError) as e:
        assets.import_assets(asset_env / "nowhere.zip", root)
    assert e.value.code == "input_missing"


def test_fan_weights_go_to_torch_hub(root, asset_env):
    w = asset_env / "s3fd-619a316812.pth"
    w.write_bytes(b"\x80\x02" + b"\x00" * 16)
    assert assets.import_assets(w, root) == [str(assets.torch_hub_checkpoints() / w.name)]


def test_cli_import(root, asset_env, capsys):
    z = H.make_zip(asset_env / "FLAME2020.zip", {"generic_model.pkl": H.flame_pkl_bytes()})
    assert main(["assets", "--root", str(root), "import", str(z)]) == 0
    out = capsys.readouterr().out
    assert "imported 1 file(s)" in out and str(root / "FLAME/geometry/generic_model.pkl") in out
    bad = H.make_zip(asset_env / "bad.zip", {"../x": b"1"})
    assert main(["assets", "--root", str(root), "import", str(bad)]) == 2
    assert "error [unsafe_file]" in capsys.readouterr().err


def test_a_downloads_folder_with_zips_and_a_loose_deca_tar(root, asset_env):
    dl = asset_env / "Téléchargements"
    H.make_zip(dl / "FLAME2020.zip", {"generic_model.pkl": H.flame_pkl_bytes()})
    H.make_zip(dl / "sub" / "FLAME.zip", {k: v for k, v in H.flame_folder_files().items() if "mask" in k})
    from tests.fixtures.checkpoints import torch_save

    torch_save({"E_flame": H.tiny_state()}, dl / "deca_model.tar")  # a torch zip file, but not an archive to open
    placed = assets.import_assets(dl, root)
    assert sorted(placed) == sorted(
        str(root / r)
        for r in (
            "DECA/data/deca_model.tar",
            "FLAME/geometry/generic_model.pkl",
            "FLAME/mask/uv_face_mask.png",
            "FLAME/mask/uv_face_eye_mask.png",
        )
    )
    assert _valid(root, "deca_tar", "flame2020", "uv_face_mask")[0]


def _malicious(path, fmt: str, marker) -> None:
    from tests.fixtures import checkpoints as ck

    if fmt == "zip":
        ck.write_malicious_ckpt(path, marker)
    else:  # an old-format (non-zip) file: a plain pickle saved as .ckpt
        path.write_bytes(pickle.dumps({"state_dict": {}, "hyper_parameters": ck._Evil(str(marker))}, protocol=2))


@pytest.mark.parametrize("which", ["best", "last.ckpt"])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_checkpoint_that_references_code_refuses_the_whole_import(root, asset_env, which, fmt):
    """Issue 13 case 8: such a checkpoint was placed (a decoy no loader picks) or refused as asset_invalid
    with the valid files beside it placed; now the import is refused with unsafe_file and nothing is written."""
    marker = asset_env / "pwned"
    src = asset_env / "bundle"
    folder = H.write_model_folder(src / "EMOCA" / "models", "EMOCA_v2_lr_mse_20")
    ckpts = sorted(p for p in (folder / "detail").rglob("*.ckpt") if p.stat().st_size > 100)
    target = ckpts[0] if which == "best" else folder / "detail" / "checkpoints" / "last.ckpt"
    _malicious(target, fmt, marker)
    H.write_files(src, H.flame_folder_files())  # valid assets in the same archive
    z = H.make_zip(asset_env / "bundle.zip", H.folder_to_zip_entries(src, "bundle"))
    with pytest.raises(EmocaError) as e:
        assets.import_assets(z, root)
    assert e.value.code == "unsafe_file", e.value.message
    assert target.name in e.value.message and "mkdir" in e.value.message and "nothing was imported" in e.value.message
    assert [p for p in root.rglob("*") if not p.is_dir()] == []
    assert not marker.exists()
    assert main(["assets", "--root", str(root), "import", str(src)]) == 2  # a folder: the same
    assert [p for p in root.rglob("*") if not p.is_dir()] == []
