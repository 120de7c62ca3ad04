"""FaceReconstructor end to end on CPU (untrained demo network and the official-layout fixture), CUDA vs CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend import assets  # noqa: E402
from backend.models import loading  # noqa: E402
from backend.models.reconstructor import UNTRAINED_WARNING, FaceReconstructor  # noqa: E402
from emoca_contract.errors import EmocaError  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def no_assets(tmp_path, monkeypatch):
    """No installed assets, and caches in a temp folder (never the user's data folder)."""
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture(scope="module")
def crops_u8():
    from skimage import data
    from skimage.transform import resize

    face = (resize(data.astronaut()[30:250, 130:350], (224, 224)) * 255).astype(np.uint8)  # the face region
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    return np.stack([face, noise])


def test_untrained_demo_network(no_assets, crops_u8):
    with pytest.warns(UserWarning, match="UNTRAINED"):
        rec = FaceReconstructor.from_paths(device="cpu")
    assert rec.info["trained"] is False and rec.info["flame"] == "synthetic test head (not FLAME)"
    assert UNTRAINED_WARNING in rec.info["warnings"] and rec.info["device"] == "cpu"
    out = rec.reconstruct(crops_u8)
    v = rec.flame.v_template.shape[0]
    assert {
        k: out[k].shape for k in ("shape", "exp", "pose", "cam", "light", "vertices", "landmarks2d", "landmarks3d")
    } == {
        "shape": (2, 100),
        "exp": (2, 50),
        "pose": (2, 6),
        "cam": (2, 3),
        "light": (2, 9, 3),
        "vertices": (2, v, 3),
        "landmarks2d": (2, 68, 2),
        "landmarks3d": (2, 68, 3),
    }
    assert all(np.isfinite(a).all() for a in out.values())
    # the calibrated demo camera frames the head: landmarks inside the crop
    assert np.abs(out["landmarks2d"]).max() < 1.0
    assert not np.allclose(out["exp"][0], out["exp"][1])  # depends on the image
    # float (B,3,224,224) input gives the same codes as uint8 (B,224,224,3)
    as_float = torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float() / 255
    codes = rec.encode(as_float, detail=False)
    np.testing.assert_allclose(codes["exp"].numpy(), out["exp"], rtol=1e-5, atol=1e-6)
    # decode = the FLAME layer on the codes, projected with cam (x right, y down)
    flame_out = rec.flame(codes["shape"], codes["exp"], codes["pose"])
    np.testing.assert_allclose(out["vertices"], flame_out.vertices.numpy(), atol=1e-6)
    s, tx, ty = codes["cam"][0].tolist()
    lmk = flame_out.landmarks2d[0].numpy()
    np.testing.assert_allclose(out["landmarks2d"][0, :, 0], s * (lmk[:, 0] + tx), atol=1e-5)
    np.testing.assert_allclose(out["landmarks2d"][0, :, 1], -s * (lmk[:, 1] + ty), atol=1e-5)
    # landmarks3d is the static 68-point embedding in model space (the encode contract), not projected
    np.testing.assert_allclose(out["landmarks3d"][0], flame_out.landmarks3d[0].numpy(), atol=1e-6)


def test_untrained_is_seeded(no_assets, crops_u8):
    with pytest.warns(UserWarning):
        a = FaceReconstructor.from_paths(device="cpu", seed=3)
        b = FaceReconstructor.from_paths(device="cpu", seed=3)
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.slow
def test_trained_fixture_end_to_end(no_assets, emoca_assets, crops_u8):
    rec = FaceReconstructor.from_paths(
        model=emoca_assets.folder, flame=emoca_assets.flame_pkl, device="cpu", precision="fp32"
    )
    assert rec.info["trained"] is True and rec.info["name"] == "EMOCA"
    assert rec.info["flame_mismatches"] == [] and rec.info["warnings"] == []
    out = rec.reconstruct(crops_u8, as_numpy=False)
    assert out["vertices"].shape == (2, 5023, 3) and out["landmarks2d"].shape == (2, 68, 2)
    # same numbers as the loaded network itself
    net, _ = loading.load_emoca_folder(emoca_assets.folder)
    with torch.inference_mode():
        ref = net.encode(torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float() / 255)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=0, atol=1e-5)


def test_discovers_installed_assets(emoca_assets, monkeypatch, tmp_path):
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(emoca_assets.root))
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(tmp_path / "data"))
    found = assets.resolve_capture()
    rec = FaceReconstructor.from_paths(
        found.model, found.flame, device="cpu", landmarks=found.landmarks, mediapipe=found.mediapipe
    )
    assert rec.info["trained"] is True and rec.info["name"] == "EMOCA"  # preferred over DECA and the tar
    assert rec.flame.has_landmarks  # landmark_embedding.npy found in FLAME/geometry


def test_trained_model_needs_flame(no_assets, emoca_assets):
    with pytest.raises(EmocaError) as e:
        FaceReconstructor.from_paths(model=emoca_assets.folder, device="cpu")
    assert e.value.code == "asset_missing" and "generic_model.pkl" in e.value.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_unavailable(no_assets):
    with pytest.raises(EmocaError) as e:
        FaceReconstructor.from_paths(device="cuda")
    assert e.value.code == "device_unavailable"


@pytest.mark.gpu
def test_cuda_matches_cpu(no_assets, emoca_assets, crops_u8):
    cpu = FaceReconstructor.from_paths(
        model=emoca_assets.folder, flame=emoca_assets.flame_pkl, device="cpu", precision="fp32"
    )
    ref = cpu.reconstruct(crops_u8)
    bf16 = FaceReconstructor.from_paths(
        model=emoca_assets.folder, flame=emoca_assets.flame_pkl, device="cuda", precision="auto"
    )
    assert bf16.info["dtype"] == "bfloat16"
    f32 = FaceReconstructor.from_paths(
        model=emoca_assets.folder, flame=emoca_assets.flame_pkl, device="cuda", precision="fp32"
    )
    for rec, rel in ((f32, 2e-3), (bf16, 5e-2)):  # TF32 convs / bf16 autocast
        out = rec.reconstruct(crops_u8)
        assert out["vertices"].dtype == np.float32
        for k in ("shape", "exp", "pose", "cam", "light", "detail", "landmarks2d"):
            scale = np.abs(ref[k]).max()
            err = np.abs(out[k] - ref[k]).max()
            assert err <= rel * scale + 1e-4, (k, rec.info["dtype"], err, scale)


def test_deca_tar_model(no_assets, emoca_assets):
    rec = FaceReconstructor.from_paths(model=emoca_assets.tar, flame=emoca_assets.flame_pkl, device="cpu")
    assert rec.info["kind"] == "DECA" and rec.info["trained"] is True and rec.net.E_expression is None
    assert torch.equal(rec.net.E_flame.layers[2].bias, emoca_assets.network["E_flame.layers.2.bias"])
