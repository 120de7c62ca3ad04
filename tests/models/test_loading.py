"""Loading official-layout files: exact weights, best-checkpoint choice, strict errors, safety, FLAME check."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.models import loading  # noqa: E402
from backend.models.emoca import EmocaConfig, EmocaNet  # noqa: E402
from emoca_contract.errors import EmocaError  # noqa: E402
from tests.fixtures import checkpoints as ck  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 224, 224, generator=g)


@pytest.fixture(scope="module")
def loaded(emoca_assets):
    return {
        "emoca": loading.load_emoca_folder(emoca_assets.folder, flame=emoca_assets.flame),
        "deca": loading.load_deca_tar(emoca_assets.tar),
    }


@pytest.fixture(scope="module")
def encoded(loaded, images):
    with torch.inference_mode():
        return {name: net.encode(images) for name, (net, _) in loaded.items()}


def test_folder_reproduces_fixture_weights(emoca_assets, loaded, encoded, images):
    net, info = loaded["emoca"]
    sd = net.state_dict()
    assert sd.keys() == emoca_assets.network.keys()
    assert all(torch.equal(sd[k], v) for k, v in emoca_assets.network.items())
    assert info["checkpoint"].endswith("deca-epoch=03-val_loss/dataloader_idx_0=9.44489288.ckpt")
    assert info["stage"] == "detail" and info["epoch"] == 3 and info["kind"] == "EMOCA"
    assert info["ignored"] == {
        "deca.flame.": 16,
        "deca.render.": 8,
        "deca.perceptual_loss.": 34,
        "deca.uv_face_eye_mask": 1,
        "deca.fixed_uv_dis": 1,
    }
    assert info["flame_mismatches"] == [] and info["warnings"] == []
    # an independently built instance with the same weights gives the same outputs
    other = EmocaNet(EmocaConfig.emoca())
    other.load_state_dict(emoca_assets.network)
    other.eval()
    with torch.inference_mode():
        a, b = encoded["emoca"], other.encode(images)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(net.decode_detail(a), other.decode_detail(b), rtol=0, atol=1e-7)
    assert not net.training


def test_deca_tar_vs_emoca_exp_override(loaded, encoded, images):
    deca, info = loaded["deca"]
    emoca, _ = loaded["emoca"]
    assert deca.E_expression is None and info["kind"] == "DECA"
    d, e = encoded["deca"], encoded["emoca"]
    for k in ("shape", "tex", "pose", "cam", "light", "detail"):
        assert torch.equal(d[k], e[k]), k
    assert not torch.allclose(d["exp"], e["exp"], atol=1e-4)
    # EMOCA's exp is exactly E_expression's output
    with torch.inference_mode():
        torch.testing.assert_close(e["exp"], emoca.E_expression(images), rtol=0, atol=1e-6)


def test_deca_folder_config(emoca_assets, deca_folder):
    net, info = loading.load_emoca_folder(deca_folder)
    assert net.E_expression is None and info["kind"] == "DECA"
    assert torch.equal(net.E_flame.layers[2].weight, emoca_assets.network["E_flame.layers.2.weight"])


@pytest.mark.parametrize(
    ("names", "mode", "expected"),
    [
        (
            [
                "deca-epoch=01-val_loss/dataloader_idx_0=12.5.ckpt",
                "deca-epoch=03-val_loss/dataloader_idx_0=9.44489288.ckpt",
                "last.ckpt",
            ],
            "best",
            "deca-epoch=03-val_loss/dataloader_idx_0=9.44489288.ckpt",
        ),
        (
            ["deca-epoch=01-val_loss=2.0.ckpt", "deca-epoch=02-val_loss=10.0.ckpt", "last.ckpt"],
            "best",
            "deca-epoch=01-val_loss=2.0.ckpt",
        ),
        (["deca-epoch=01-val_loss=2.0.ckpt", "deca-epoch=02-val_loss=10.0.ckpt", "last.ckpt"], "latest", "last.ckpt"),
        (["a/last.ckpt", "a/x=0.5.ckpt", "b/y=0.7.ckpt"], "latest", "b/y=0.7.ckpt"),
        (["last.ckpt"], "best", "last.ckpt"),
        (["epoch=1-step=10-v=1e-3.ckpt", "epoch=2-step=20-v=0.01.ckpt"], "best", "epoch=1-step=10-v=1e-3.ckpt"),
    ],
)
def test_locate_checkpoint(tmp_path, names, mode, expected):
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert loading.locate_checkpoint(tmp_path, mode).relative_to(tmp_path).as_posix() == expected


def test_locate_checkpoint_errors(tmp_path):
    with pytest.raises(EmocaError) as e:
        loading.locate_checkpoint(tmp_path)
    assert e.value.code == "asset_missing" and str(tmp_path) in e.value.message
    with pytest.raises(EmocaError) as e:
        loading.locate_checkpoint(tmp_path, "worst")
    assert e.value.code == "config_invalid"


def _small_network():
    """Module-local keys with official shapes for D_detail only (cheap to build)."""
    return ck.random_state({k[len("deca.") :]: v for k, v in ck.official_keys()["ckpt:deca.D_detail."].items()}, 3)


def test_strict_loading_lists_missing_unexpected_misshaped(emoca_assets):
    state = dict(emoca_assets.network)
    del state["E_flame.layers.0.bias"]
    del state["E_detail.encoder.bn1.running_var"]
    state["E_flame.layers.4.weight"] = torch.zeros(3)
    state["E_expression.layers.2.weight"] = torch.zeros(53, 1024)
    with pytest.raises(EmocaError) as e:
        loading.load_network_state(EmocaNet(EmocaConfig.emoca()), state, "model.ckpt")
    msg = e.value.message
    assert e.value.code == "checkpoint_mismatch" and "model.ckpt" in msg
    assert "missing keys (2): E_detail.encoder.bn1.running_var, E_flame.layers.0.bias" in msg
    assert "unexpected keys (1): E_flame.layers.4.weight" in msg
    assert "mis-shaped keys (1): E_expression.layers.2.weight expected (50, 1024) found (53, 1024)" in msg


def test_unknown_checkpoint_key_is_an_error_but_loss_keys_are_ignored():
    state = {
        "deca.D_detail.l1.0.bias": torch.zeros(1),
        "deca.perceptual_loss.featlayer.vgg19.0.bias": 1,
        "emonet_loss.backbone.conv1.weight": 1,
        "lipread_loss.model.x": 1,
        "deca.flame.v_template": 1,
        "deca.render.faces": 1,
        "deca.id_loss.reg_model.fc.weight": 1,
    }
    net, ignored = loading.split_lightning_state(state, "x.ckpt")
    assert list(net) == ["D_detail.l1.0.bias"] and sum(ignored.values()) == 6
    with pytest.raises(EmocaError) as e:
        loading.split_lightning_state({**state, "deca.new_module.weight": 1, "other.w": 2}, "x.ckpt")
    assert e.value.code == "checkpoint_mismatch"
    assert "deca.new_module.weight" in e.value.message and "other.w" in e.value.message


def test_incomplete_checkpoint_in_folder(tmp_path):
    folder = ck.write_emoca_folder(
        tmp_path, {}, name="broken", state_dict={f"deca.{k}": v for k, v in _small_network().items()}
    )
    with pytest.raises(EmocaError) as e:
        loading.load_emoca_folder(folder)
    assert e.value.code == "checkpoint_mismatch"
    assert "missing keys (966) [by module: E_detail 322, E_expression 322, E_flame 322]" in e.value.message
    assert "E_detail.encoder.bn1.bias" in e.value.message


def test_truncated_checkpoint_is_named(tmp_path):
    src = ck.torch_save(
        ck.lightning_ckpt({f"deca.{k}": v for k, v in _small_network().items()}, ck.cfg_dict()), tmp_path / "full.ckpt"
    )
    bad = ck.write_truncated(src, tmp_path / "modèle tronqué.ckpt", 0.6)
    with pytest.raises(EmocaError) as e:
        loading.safe_torch_load(bad)
    assert e.value.code == "asset_invalid"
    assert str(bad) in e.value.message and "truncated or corrupt" in e.value.message
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(EmocaError) as e:
        loading.safe_torch_load(empty)
    assert e.value.code == "asset_invalid" and "empty" in e.value.message


def test_malicious_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = ck.write_malicious_ckpt(tmp_path / "evil.ckpt", marker)
    with pytest.raises(EmocaError) as e:
        loading.safe_torch_load(path)
    assert e.value.code == "unsafe_file"
    assert "posix.mkdir" in e.value.message or "os.mkdir" in e.value.message or "nt.mkdir" in e.value.message
    assert not marker.exists()


def test_deca_tar_given_as_folder(tmp_path):
    (tmp_path / "deca_model").mkdir()
    with pytest.raises(EmocaError) as e:
        loading.load_deca_tar(tmp_path / "deca_model")
    assert e.value.code == "asset_invalid" and "not a tar archive" in e.value.message


def test_deca_tar_with_wrong_content(tmp_path):
    path = ck.torch_save({"E_flame": {}, "opt": {}}, tmp_path / "deca_model.tar")
    with pytest.raises(EmocaError) as e:
        loading.load_deca_tar(path)
    assert e.value.code == "checkpoint_mismatch" and "D_detail" in e.value.message


def test_flame_buffer_mismatch(emoca_assets, loaded):
    from backend.synthetic.head import synthetic_head

    state = ck.deca_flame_buffers(emoca_assets.flame)
    assert loading.flame_buffer_mismatches(state, emoca_assets.flame) == []
    # "FLAME 2023": same topology, different template and expression basis
    other = dataclasses.replace(
        emoca_assets.flame,
        v_template=emoca_assets.flame.v_template + 1e-3,
        expdirs=emoca_assets.flame.expdirs[:, :, ::-1].copy(),
    )
    found_other = loading.flame_buffer_mismatches(state, other)
    assert [m.split(":")[0] for m in found_other] == ["v_template", "shapedirs"]
    # a model with different components beyond the used 100+50 is fine (DECA truncates)
    wider = dataclasses.replace(
        emoca_assets.flame,
        shapedirs=np.concatenate(
            [emoca_assets.flame.shapedirs[:, :, :100], np.ones((5023, 3, 200), np.float32)], axis=2
        ),
    )
    assert loading.flame_buffer_mismatches(state, wider) == []
    head = synthetic_head()
    found = loading.flame_buffer_mismatches(state, head)
    assert any(m.startswith("v_template: checkpoint (5023, 3) vs FLAME") for m in found)
    # through the folder loader: a warning, or an error when strict
    with pytest.raises(EmocaError) as e:
        loading.load_emoca_folder(emoca_assets.folder, flame=other, strict_flame=True)
    assert e.value.code == "flame_mismatch" and "shapedirs" in e.value.message
    info = {"warnings": []}
    loading.check_flame(state, other, info, strict=False, source="x.ckpt")
    assert info["flame_mismatches"] == found_other and "different FLAME" in info["warnings"][0]


def test_allow_list_covers_pl14_style_checkpoint(emoca_assets):
    ckpt = next(Path(emoca_assets.folder, "detail").rglob("dataloader_idx_0=9.44489288.ckpt"))
    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
    assert "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in found
    assert "omegaconf.dictconfig.DictConfig" in found
    data = loading.safe_torch_load(ckpt)
    assert data["hyper_parameters"]["model_params"]["deca_class"] == "ExpDECA"
    assert loading._unsafe_globals(ckpt) == []


@pytest.mark.slow
def test_real_lightning_checkpoint_with_omegaconf_hparams(tmp_path):
    """Lightning writes OmegaConf containers into hyper_parameters: our allow-list must cover exactly those."""
    import lightning as L
    from omegaconf import OmegaConf

    class Module(L.LightningModule):
        def __init__(self, model_params, learning_params, stage_name="testing"):
            super().__init__()
            self.save_hyperparameters()
            self.lin = torch.nn.Linear(3, 2)

        def training_step(self, batch, i):
            return self.lin(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), 1e-3)

    cfg = OmegaConf.create(
        {
            "model": {
                "deca_class": "ExpDECA",
                "n_exp": 50,
                "lr": 5e-5,
                "flag": True,
                "none": None,
                "cond": ["jawpose", "expression", "detail"],
                "nested": {"x": [1, {"y": 2}]},
            },
            "learning": {"batch_size_train": 32},
        }
    )
    module = Module(cfg.model, cfg.learning)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 3)), batch_size=2)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(module, data)
    path = tmp_path / "real.ckpt"
    trainer.save_checkpoint(path)
    assert loading._unsafe_globals(path) == []
    loaded = loading.safe_torch_load(path)
    assert loaded["hyper_parameters"]["model_params"]["nested"]["x"][1]["y"] == 2
    assert torch.equal(loaded["state_dict"]["lin.weight"], module.lin.weight.detach())


def test_missing_files(tmp_path):
    with pytest.raises(EmocaError) as e:
        loading.load_emoca_folder(tmp_path / "nope")
    assert e.value.code == "asset_missing"
    with pytest.raises(EmocaError) as e:
        loading.load_emoca_folder(tmp_path)
    assert e.value.code == "asset_invalid" and "cfg.yaml" in e.value.message
    with pytest.raises(EmocaError) as e:
        loading.safe_torch_load(tmp_path / "x.ckpt")
    assert e.value.code == "asset_missing"
    assert os.fspath(tmp_path)  # paths with any characters are reported verbatim


def test_garbage_checkpoint_is_corrupt_not_unsafe(emoca_assets):
    # 'latest' picks last.ckpt, which in the fixture is a decoy of plain bytes
    with pytest.raises(EmocaError) as e:
        loading.load_emoca_folder(emoca_assets.folder, mode="latest")
    assert e.value.code == "asset_invalid" and "last.ckpt" in e.value.message


def test_extracted_deca_tar_folder(emoca_assets, tmp_path):
    import zipfile

    with zipfile.ZipFile(emoca_assets.tar) as z:  # what 'unzip deca_model.tar' produces
        names = [n for n in z.namelist() if n.endswith("data.pkl")]
        z.extract(names[0], tmp_path / "deca_model")
    with pytest.raises(EmocaError) as e:
        loading.load_emoca_folder(tmp_path / "deca_model")
    assert e.value.code == "asset_invalid" and "not a tar archive" in e.value.message


def test_checkpoint_rule_admits_everything_torch_admits():
    """The cheap check (backend.pickles, no torch) never calls a file torch would load "unsafe"."""
    from torch import _weights_only_unpickler

    from backend import pickles

    names = list(_weights_only_unpickler._get_allowed_globals())
    names += [f"{g.__module__}.{g.__qualname__}" for g in loading._allowed_globals() if not isinstance(g, tuple)]
    names += [name for _stub, name in pickles.lightning_callback_stubs()]
    refused = [n for n in names if not pickles.checkpoint_global_allowed(*n.rsplit(".", 1))]
    assert len(names) > 100 and refused == []


@pytest.mark.parametrize("fmt", ["plain pickle", "legacy torch.save"])
def test_old_format_malicious_checkpoint_is_unsafe_not_corrupt(tmp_path, fmt):
    """Issue 13 case 8: a non-zip malicious ``.ckpt`` was refused but labelled "truncated or corrupt"."""
    marker = tmp_path / "pwned"
    path = tmp_path / "old.ckpt"
    obj = {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": ck._Evil(str(marker))}
    if fmt == "plain pickle":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    with pytest.raises(EmocaError) as e:
        loading.safe_torch_load(path)
    assert e.value.code == "unsafe_file", e.value.message
    assert "mkdir" in e.value.message and "corrupt" not in e.value.message and str(path) in e.value.message
    assert not marker.exists()
