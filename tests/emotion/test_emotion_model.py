"""load_emotion_model: official-layout folders, the fer fallback, strict loading, architecture from the config."""

from __future__ import annotations

import pytest

from emoca_contract.errors import EmocaError
from tests.fixtures import emotion_files as ef

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def resnet_model(resnet_folder):
    from backend.models.emotion import load_emotion_model

    return load_emotion_model(resnet_folder[0])


@pytest.fixture(scope="module")
def fer_model():
    from backend.models.emotion import load_emotion_model

    return load_emotion_model(None)


def _crops(n=2, seed=0):
    return torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _raw_state(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]  # our own test file


# ------------------------------------------------------------------------------------------- ResNet-50 folder
def test_resnet_folder_reproduces_an_independent_instance(resnet_model, resnet_folder):
    from backend.models.emotion import AFFECTNET_CLASSES, EmoCnnResNet50

    ref = EmoCnnResNet50(8).eval()
    ref.load_state_dict(_raw_state(resnet_folder[1]), strict=True)
    x = _crops()
    with torch.no_grad():
        out = ref(x)
        feats = ref.features(x)
    pred = resnet_model.predict(x)
    assert resnet_model.kind == "image" and resnet_model.va_source == "regressed"
    assert resnet_model.classes == AFFECTNET_CLASSES
    assert "ResNet-50" in resnet_model.name
    torch.testing.assert_close(pred["valence"], out[:, 8], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred["arousal"], out[:, 9], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred["expression"], torch.softmax(out[:, :8], 1), rtol=1e-4, atol=1e-6)
    assert pred["expression"].shape == (2, 8)
    torch.testing.assert_close(pred["expression"].sum(1), torch.ones(2))
    f = resnet_model.features(x)
    assert f.shape == (2, 2048)
    torch.testing.assert_close(f, feats, rtol=1e-4, atol=1e-5)


def test_resnet_features_carry_gradients_to_the_image(resnet_model):
    x = _crops(1).requires_grad_(True)
    f = resnet_model.features(x)
    assert f.requires_grad
    f.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in resnet_model.parameters())  # frozen


def test_model_is_a_frozen_module_that_stays_in_eval(resnet_model):
    assert isinstance(resnet_model, torch.nn.Module)
    resnet_model.train()
    assert not resnet_model.training and not any(m.training for m in resnet_model.modules())
    assert resnet_model.to("cpu") is resnet_model


def test_loss_keys_are_ignored_and_anything_else_is_strict(resnet_folder):
    from backend.models.emotion import EmoCnnResNet50, _strict_load

    good = _raw_state(resnet_folder[1])
    net = EmoCnnResNet50(8)
    _strict_load(net, {**good, "exp_loss.weight": torch.ones(8), "emo_feat_loss.x": torch.ones(1)}, resnet_folder[1])

    bad = dict(good)
    del bad["backbone.layer3.2.bn2.running_var"]
    bad["backbone.extra.weight"] = torch.zeros(1)
    bad["linear.weight"] = torch.zeros(7, 2048)
    with pytest.raises(EmocaError) as e:
        _strict_load(net, bad, resnet_folder[1])
    msg = e.value.message
    assert e.value.code == "checkpoint_mismatch"
    for part in ("backbone.layer3.2.bn2.running_var", "backbone.extra.weight", "linear.weight", str(resnet_folder[1])):
        assert part in msg


def test_head_size_comes_from_the_config(resnet_folder, tmp_path):
    """A 7-class config with the 10-output checkpoint: the shapes disagree and the loader says so."""
    from backend.models.emotion import load_emotion_model

    ef.link_checkpoint(resnet_folder[1], tmp_path / "seven", ef.resnet50_cfg(n_expression=7))
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "seven")
    assert e.value.code == "checkpoint_mismatch" and "linear.weight" in e.value.message


# ------------------------------------------------------------------------------------------- architecture by config
def test_reconstruction_config_with_the_same_keys_is_not_loaded(resnet_folder, tmp_path):
    """An EMOCA (torchvision-layout) config beside identical keys: refused, not silently loaded."""
    from backend.models.emotion import load_emotion_model

    ef.link_checkpoint(resnet_folder[1], tmp_path / "emoca", ef.emoca_reconstruction_cfg())
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "emoca")
    assert e.value.code == "config_invalid" and "reconstruction" in e.value.message


def test_torchvision_backbone_config_is_not_loaded_as_caffe(resnet_folder, tmp_path):
    from backend.models.emotion import load_emotion_model

    ef.link_checkpoint(resnet_folder[1], tmp_path / "tv", ef.resnet50_cfg(backbone="resnet50_torchvision"))
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "tv")
    assert e.value.code == "config_invalid" and "torchvision" in e.value.message


@pytest.mark.parametrize(
    "overrides,what",
    [
        ({"model_type": "EmoSwinModule", "backbone": "swin_base_patch4_window7_224"}, "SWIN"),
        ({"model_type": "EmoNetModule", "backbone": "emonet"}, "EmoNet"),
        ({"backbone": "vgg19_bn"}, "VGG"),
        ({"model_type": "SomethingElse"}, "cannot tell"),
    ],
)
def test_unknown_architectures_say_what_is_supported(resnet_folder, tmp_path, overrides, what):
    from backend.models.emotion import load_emotion_model

    ef.link_checkpoint(resnet_folder[1], tmp_path / "x", ef.resnet50_cfg(**overrides))
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "x")
    assert e.value.code == "config_invalid"
    assert what in e.value.message and "EmoDECA" in e.value.hint and "ResNet-50" in e.value.hint


def test_mislabelled_configs_are_refused(resnet_folder, emodeca_folder, tmp_path):
    """EmoDECA config + ResNet weights, and ResNet config + EmoDECA weights: checkpoint_mismatch, never a load."""
    from backend.models.emotion import load_emotion_model

    ef.link_checkpoint(resnet_folder[1], tmp_path / "a", ef.emodeca_cfg())
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "a")
    assert e.value.code == "checkpoint_mismatch" and "mlp.model.0.weight" in e.value.message
    ef.link_checkpoint(emodeca_folder[1], tmp_path / "b", ef.resnet50_cfg())
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "b")
    assert e.value.code == "checkpoint_mismatch" and "backbone.conv1.weight" in e.value.message


# ------------------------------------------------------------------------------------------- EmoDECA folder
def test_emodeca_folder_reproduces_an_independent_instance(emodeca_folder):
    from backend.models.emodeca import EmoDeca
    from backend.models.emotion import load_emotion_model

    model = load_emotion_model(emodeca_folder[0])
    assert model.kind == "3d" and model.va_source == "regressed" and len(model.classes) == 8
    state = {k: v for k, v in _raw_state(emodeca_folder[1]).items() if k.startswith("mlp.")}
    ref = EmoDeca().eval()
    ref.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(0)
    codes = {
        "shape": torch.randn(4, 100, generator=g),
        "exp": torch.randn(4, 50, generator=g),
        "pose": torch.randn(4, 6, generator=g),
    }
    with torch.no_grad():
        out = ref(torch.cat([codes["shape"], codes["exp"], codes["pose"][:, 3:]], 1))  # shape | exp | jaw
    pred = model.predict(None, codes)
    torch.testing.assert_close(pred["valence"], out[:, 8], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred["arousal"], out[:, 9], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pred["expression"], torch.softmax(out[:, :8], 1), rtol=1e-4, atol=1e-6)
    # global pose is not an input: changing it changes nothing; the jaw does
    moved = dict(codes, pose=codes["pose"] + torch.tensor([1.0, 1, 1, 0, 0, 0]))
    torch.testing.assert_close(model.predict(None, moved)["valence"], pred["valence"])
    jaw = dict(codes, pose=codes["pose"] + torch.tensor([0, 0, 0, 0.5, 0, 0]))
    assert not torch.allclose(model.predict(None, jaw)["valence"], pred["valence"])

    with pytest.raises(EmocaError) as e:
        model.predict(torch.rand(1, 3, 224, 224))
    assert e.value.code == "config_invalid" and "shape" in e.value.message
    with pytest.raises(EmocaError):
        model.features(torch.rand(1, 3, 224, 224))


# ------------------------------------------------------------------------------------------- fer fallback
def test_fer_fallback_on_the_astronaut(fer_model, astronaut_tensor):
    from backend.models.emotion import FER_CLASSES, VA_ESTIMATED

    assert fer_model.classes == FER_CLASSES and fer_model.kind == "image"
    assert fer_model.va_source == VA_ESTIMATED == "estimated from class probabilities (circumplex mapping)"
    assert "fer" in fer_model.name
    pred = fer_model.predict(torch.cat([astronaut_tensor, _crops(1)]))
    assert pred["expression"].shape == (2, 7)
    torch.testing.assert_close(pred["expression"].sum(1), torch.ones(2))
    assert fer_model.classes[int(pred["expression"][0].argmax())] == "Happy"
    assert pred["expression"][0, FER_CLASSES.index("Happy")] > 0.9
    assert pred["valence"][0] > 0.5  # a clearly happy face: positive estimated valence


def test_fer_features_carry_gradients(fer_model, astronaut_tensor):
    x = astronaut_tensor.clone().requires_grad_(True)
    f = fer_model.features(x)
    assert f.shape == (1, 128)
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_inputs_are_refused(fer_model, tmp_path):
    from backend.models.emotion import load_emotion_model

    with pytest.raises(EmocaError) as e:
        fer_model.predict(torch.rand(2, 224, 224))
    assert e.value.code == "config_invalid"
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "nope")
    assert e.value.code == "input_missing"
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmocaError) as e:
        load_emotion_model(tmp_path / "empty")
    assert e.value.code == "asset_missing" and "cfg.yaml" in e.value.message


# ------------------------------------------------------------------------------------------- files
def test_the_best_checkpoint_is_loaded(emodeca_folder, tmp_path):
    """EMOCA's rule: the lowest score after the last '=' wins; 'last' and worse ones are not touched (they are
    empty files here, so loading one of them would fail)."""
    from backend.models.emotion import load_emotion_model

    folder = tmp_path / "emorec"
    best = "checkpoints/e-epoch=04-val_loss/dataloader_idx_0=0.75.ckpt"
    ef.link_checkpoint(emodeca_folder[1], folder, ef.emodeca_cfg(), ckpt_relpath=best)
    for rel in (
        "checkpoints/last.ckpt",
        "checkpoints/e-epoch=01-val_loss/dataloader_idx_0=2.5.ckpt",
        "checkpoints/e-epoch=09-val_loss=1.0.ckpt",
    ):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"")
    model = load_emotion_model(folder)
    assert model.source == folder / best


class Arbitrary:
    """A class no allow-list knows: unpickling it would run this module's code."""


def test_a_checkpoint_with_code_objects_is_refused(tmp_path):
    from backend.models.emotion import load_emotion_model

    folder = tmp_path / "evil"
    ckpt = ef.write_emotion_folder(folder, "emodeca", state_dict={"x": torch.zeros(1)})
    obj = torch.load(ckpt, weights_only=False)
    obj["callbacks"] = {"cb": Arbitrary()}
    torch.save(obj, ckpt)
    with pytest.raises(EmocaError) as e:
        load_emotion_model(folder)
    assert e.value.code == "unsafe_file" and str(ckpt) in e.value.message


@pytest.mark.gpu
def test_cuda_agrees_with_cpu(resnet_folder, astronaut_tensor):
    from backend.models.emotion import load_emotion_model

    x = torch.cat([astronaut_tensor, _crops(3)])
    for path in (None, resnet_folder[0]):
        cpu, gpu = load_emotion_model(path, "cpu"), load_emotion_model(path, "cuda")
        a, b = cpu.predict(x), gpu.predict(x)
        for k in a:
            torch.testing.assert_close(b[k].cpu(), a[k], rtol=1e-3, atol=1e-3)
        fa, fb = cpu.features(x), gpu.features(x.cuda())
        torch.testing.assert_close(fb.cpu(), fa, rtol=1e-3, atol=1e-3)


def test_config_reading_rules():
    """Pure decisions on plain configs: class count sources, EmoDECA inputs, type/backbone agreement."""
    from backend.models.emotion import emotion_arch_from_cfg

    assert emotion_arch_from_cfg(ef.resnet50_cfg()).kind == "resnet50_caffe"
    cfg = ef.resnet50_cfg()
    del cfg["model"]["n_expression"], cfg["model"]["model_type"]
    cfg["data"]["n_expression"] = 7
    arch = emotion_arch_from_cfg(cfg)
    assert (arch.kind, arch.n_expression) == ("resnet50_caffe", 7)
    arch = emotion_arch_from_cfg(ef.emodeca_cfg())
    assert arch.kind == "emodeca" and arch.emodeca.in_features == 153
    for bad in (
        ef.emodeca_cfg(use_global_pose=True),
        ef.emodeca_cfg(use_detail_code=True),
        ef.resnet50_cfg(predict_valence=False),
        ef.resnet50_cfg(n_expression=11),
        ef.resnet50_cfg(backbone="resnet101"),
    ):
        with pytest.raises(EmocaError) as e:
            emotion_arch_from_cfg(bad)
        assert e.value.code == "config_invalid"
