"""``python -m backend encode`` on real images (skimage's astronaut): --crop none and auto, trained fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.app.cli import main  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def astronaut(unicode_tmp, monkeypatch):
    import cv2
    from skimage import data

    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(unicode_tmp / "no assets"))
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(unicode_tmp / "data"))
    path = unicode_tmp / "astronaute é.png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    path.write_bytes(buf.tobytes())
    return path


def load(path):
    with np.load(path) as d:
        out = {k: d[k] for k in d.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def test_crop_none(astronaut, capsys):
    out_path = astronaut.parent / "out none.npz"
    assert (
        main(["encode", str(astronaut), str(astronaut), "-o", str(out_path), "--crop", "none", "--device", "cpu"]) == 0
    )
    err = capsys.readouterr().err
    assert "UNTRAINED" in err and "resized 512x512 -> 224x224" in err
    out = load(out_path)
    assert out["shape"].shape == (2, 100) and out["light"].shape == (2, 9, 3) and out["detail"].shape == (2, 128)
    assert out["image_index"].tolist() == [0, 1] and out["face_index"].tolist() == [0, 0]
    np.testing.assert_allclose(out["crop"][0], np.diag([512 / 224, 512 / 224, 1.0]), rtol=1e-6)
    # same image twice -> same codes; landmarks in image pixels = crop transform of the crop coordinates
    np.testing.assert_array_equal(out["exp"][0], out["exp"][1])
    px = (out["landmarks2d"][0] + 1) * 112
    np.testing.assert_allclose(out["landmarks"][0], px * 512 / 224, rtol=1e-5, atol=1e-3)
    assert out["meta"]["model"]["trained"] is False and out["meta"]["crop_mode"] == "none"
    assert out["meta"]["model"]["precision"] == "fp32" and out["meta"]["model"]["dtype"] == "float32"


def test_bf16_encodes_the_same_crops_close_to_fp32(astronaut):
    """--precision bf16 (autocast) gives the fp32 codes back within bf16's rounding, and says it ran in bf16."""
    paths = {p: astronaut.parent / f"out {p}.npz" for p in ("fp32", "bf16")}
    for precision, out_path in paths.items():
        argv = ["encode", str(astronaut), "-o", str(out_path), "--crop", "none", "--device", "cpu"]
        assert main(argv + ["--precision", precision]) == 0
    fp32, bf16 = load(paths["fp32"]), load(paths["bf16"])
    assert bf16["meta"]["model"]["precision"] == "bf16" and bf16["meta"]["model"]["dtype"] == "bfloat16"
    diff = np.abs(bf16["exp"] - fp32["exp"]).max()
    assert 0 < diff < 0.05 * max(np.abs(fp32["exp"]).max(), 1e-3), diff  # bf16 rounds; it does not change the answer


def test_crop_auto_finds_the_face(astronaut):
    out_path = astronaut.parent / "out auto.npz"
    assert main(["encode", str(astronaut), "-o", str(out_path), "--crop", "auto", "--device", "cpu"]) == 0
    out = load(out_path)
    assert out["detected"].tolist() == [True] and out["image_index"].tolist() == [0]
    T = out["crop"][0].astype(np.float64)
    centre = T @ [112, 112, 1]
    # the astronaut's face is around x 170-280, y 60-200 in the 512x512 photo
    assert 170 < centre[0] < 280 and 60 < centre[1] < 200
    assert 0.3 < T[0, 0] < 1.0  # a face crop is a zoom-in, side 1.25 * 1.1 * face size
    assert np.isfinite(out["landmarks"]).all()


@pytest.mark.slow
def test_trained_model_and_emotion(astronaut, emoca_assets):
    from backend.models import loading

    out_path = astronaut.parent / "trained.npz"
    assert (
        main(
            [
                "encode",
                str(astronaut),
                "-o",
                str(out_path),
                "--crop",
                "none",
                "--device",
                "cpu",
                "--model",
                str(emoca_assets.folder),
                "--flame",
                str(emoca_assets.flame_pkl),
                "--emotion",
                "fer",
            ]
        )
        == 0
    )
    out = load(out_path)
    assert out["meta"]["model"]["trained"] is True and out["vertices"].shape == (1, 5023, 3)
    assert out["expression"].shape == (1, 7) and abs(float(out["expression"].sum()) - 1) < 1e-4
    assert out["meta"]["emotion"]["classes"] and out["valence"].shape == (1,)
    # the codes are the network's on the resized crop
    import cv2

    from backend.app.encode import read_image

    crop = cv2.resize(read_image(astronaut), (224, 224), interpolation=cv2.INTER_AREA)
    net, _ = loading.load_emoca_folder(emoca_assets.folder)
    with torch.inference_mode():
        ref = net.encode(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)
    np.testing.assert_allclose(out["exp"], ref["exp"].numpy(), rtol=0, atol=1e-5)


def test_missing_image(astronaut, capsys):
    rc = main(
        [
            "encode",
            str(astronaut.parent / "nope.png"),
            "-o",
            str(astronaut.parent / "x.npz"),
            "--crop",
            "none",
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
    assert "input_missing" in capsys.readouterr().err and not (astronaut.parent / "x.npz").exists()
