"""Network layouts vs the key/shape listing of the ORIGINAL modules (data/emoca-keys.txt), config parsing."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.models.detail import DetailGenerator  # noqa: E402
from backend.models.emoca import EmocaConfig, EmocaNet  # noqa: E402
from backend.models.encoders import ResnetEncoder, SecondHeadResnet  # noqa: E402
from backend.models.resnet import ResNet50  # noqa: E402
from emoca_contract.errors import EmocaError  # noqa: E402
from tests.fixtures.checkpoints import ckpt_network_keys, official_keys  # noqa: E402

pytestmark = pytest.mark.torch

_DT = {torch.float32: "float32", torch.int64: "int64"}


def layout(module: torch.nn.Module) -> dict:
    return {k: (tuple(v.shape), _DT[v.dtype]) for k, v in module.state_dict().items()}


def assert_same_layout(module: torch.nn.Module, expected: dict) -> None:
    got = layout(module)
    assert sorted(set(expected) - set(got)) == []  # missing in ours
    assert sorted(set(got) - set(expected)) == []  # extra in ours
    assert {k: got[k] for k in expected} == expected


@pytest.fixture(scope="module")
def keys():
    return official_keys()


def test_key_file_is_the_official_listing(keys):
    # the listing's own counts (emoca.md 0: a full detail-stage state_dict has 1070 keys)
    ckpt = [s for s in keys if s.startswith("ckpt:")]
    assert sum(len(keys[s]) for s in ckpt) == 1070
    assert len(keys["tar:E_flame"]) == 322 and len(keys["tar:D_detail"]) == 44


def test_deca_tar_modules_match_official_keys(keys):
    assert_same_layout(ResnetEncoder(236), keys["tar:E_flame"])
    assert_same_layout(ResnetEncoder(128), keys["tar:E_detail"])
    assert_same_layout(DetailGenerator(181), keys["tar:D_detail"])


def test_emoca_net_matches_official_ckpt_keys(keys):
    assert_same_layout(EmocaNet(EmocaConfig.emoca()), ckpt_network_keys(keys))


def test_deca_net_has_no_expression_encoder(keys):
    net = EmocaNet(EmocaConfig.deca())
    assert net.E_expression is None
    expected = {k: v for k, v in ckpt_network_keys(keys).items() if not k.startswith("E_expression.")}
    assert_same_layout(net, expected)


def test_parameter_counts_match_spec():
    # emoca.md 1.1 (computed from the layer definitions): 23.51 M backbone, 25.85/25.66/25.74/1.77 M
    def count(m):
        return sum(p.numel() for p in m.parameters()) / 1e6

    net = EmocaNet(EmocaConfig.emoca())
    assert round(count(ResNet50()), 2) == 23.51
    assert [round(count(m), 2) for m in (net.E_flame, net.E_expression, net.E_detail, net.D_detail)] == [
        25.85,
        25.66,
        25.74,
        1.77,
    ]


def test_resnet_is_torchvision_style():
    r = ResNet50()
    assert r.layer2[0].conv1.stride == (1, 1) and r.layer2[0].conv2.stride == (2, 2)  # stride in the 3x3
    assert (r.maxpool.kernel_size, r.maxpool.stride, r.maxpool.padding) == (3, 2, 1)
    assert r.fc is None and ResNet50(num_classes=10).fc.out_features == 10
    with torch.inference_mode():
        assert r.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 2048)


@pytest.mark.parametrize("layout", ["torchvision", "caffe"])
def test_resnet_pooling_is_the_originals_avgpool7_at_224(layout):
    """Both layouts end in a global mean over the final map: the originals' AvgPool2d(7) at a 224 input."""
    r = ResNet50(layout=layout).eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fmap = r.feature_map(x)
        feats = r.features(x)
    assert fmap.shape == (2, 2048, 7, 7)
    torch.testing.assert_close(feats, torch.flatten(torch.nn.AvgPool2d(7, stride=1)(fmap), 1))


def test_resnet_layout_flag_moves_only_the_stride_and_the_stem_pool():
    tv, caffe = ResNet50(), ResNet50(layout="caffe")
    assert (tv.layout, caffe.layout) == ("torchvision", "caffe")
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert (caffe.maxpool.padding, caffe.maxpool.ceil_mode) == (0, True)
    assert (tv.maxpool.padding, tv.maxpool.ceil_mode) == (1, False)
    assert layout(tv) == layout(caffe)  # same keys, shapes and dtypes: only the config can tell them apart


def test_resnet_unknown_layout_is_a_config_error():
    with pytest.raises(EmocaError) as e:
        ResNet50(layout="pytorch")  # type: ignore[arg-type]
    assert e.value.code == "config_invalid"
    assert "pytorch" in e.value.message and "torchvision" in e.value.message and "caffe" in e.value.message


def test_detail_generator_quirks():
    d = DetailGenerator().eval()
    bns = {i: m.eps for i, m in enumerate(d.conv_blocks) if isinstance(m, torch.nn.BatchNorm2d)}
    assert bns == {0: 1e-5, 3: 0.8, 7: 0.8, 11: 0.8, 15: 0.8, 19: 0.8}
    ups = [m for m in d.conv_blocks if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 5 and all(u.mode == "bilinear" for u in ups)
    with torch.inference_mode():
        out = d(torch.randn(2, 181))
    assert out.shape == (2, 1, 256, 256)
    assert out.abs().max() <= 0.01  # tanh * out_scale 0.01


def test_encode_shapes_and_split():
    net = EmocaNet(EmocaConfig.emoca()).eval()
    images = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        codes = net.encode(images)
        raw = net.E_flame(images)
        disp = net.decode_detail(codes)
    shapes = {k: tuple(v.shape) for k, v in codes.items()}
    assert shapes == {
        "shape": (1, 100),
        "tex": (1, 50),
        "exp": (1, 50),
        "pose": (1, 6),
        "cam": (1, 3),
        "light": (1, 9, 3),
        "detail": (1, 128),
    }
    # the 236-d order: shape | tex | exp | pose | cam | light (exp comes from E_expression instead)
    torch.testing.assert_close(codes["shape"], raw[:, :100])
    torch.testing.assert_close(codes["tex"], raw[:, 100:150])
    torch.testing.assert_close(codes["pose"], raw[:, 200:206])
    torch.testing.assert_close(codes["cam"], raw[:, 206:209])
    torch.testing.assert_close(codes["light"][:, 1], raw[:, 212:215])  # band 1, RGB
    assert not torch.allclose(codes["exp"], raw[:, 150:200])
    assert disp.shape == (1, 1, 256, 256)
    latent = net.detail_latent(codes)
    torch.testing.assert_close(latent, torch.cat([codes["pose"][:, 3:], codes["exp"], codes["detail"]], 1))


@pytest.mark.parametrize(("jaw", "glob", "n"), [(True, False, 53), (False, True, 53), (True, True, 56)])
def test_expression_pose_flags(jaw, glob, n):
    cfg = EmocaConfig(
        deca_class="ExpDECA", expression_backbone="deca_clone", exp_deca_jaw_pose=jaw, exp_deca_global_pose=glob
    )
    net = EmocaNet(cfg)
    assert net.E_expression.layers[2].out_features == n
    codes = {"exp": torch.zeros(1, 50), "pose": torch.arange(6.0)[None]}
    out = net.apply_expression(codes, 100 + torch.arange(float(n))[None])
    torch.testing.assert_close(out["exp"], 100 + torch.arange(50.0)[None])
    # [derived] order: exp | global (if set) | jaw (if set)
    g = torch.tensor([[150.0, 151, 152]]) if glob else torch.tensor([[0.0, 1, 2]])
    j_start = 153 if glob else 150
    jw = (j_start + torch.arange(3.0))[None] if jaw else torch.tensor([[3.0, 4, 5]])
    torch.testing.assert_close(out["pose"], torch.cat([g, jw], 1))


def test_deca_parallel_shares_backbone():
    net = EmocaNet(EmocaConfig(deca_class="ExpDECA", expression_backbone="deca_parallel")).eval()
    assert isinstance(net.E_expression, SecondHeadResnet) and net.E_expression.resnet is net.E_flame
    keys = net.state_dict().keys()
    assert "E_expression.resnet.encoder.conv1.weight" in keys and "E_expression.layers.2.weight" in keys
    with torch.inference_mode():
        x = torch.rand(1, 3, 224, 224)
        torch.testing.assert_close(net.encode(x, detail=False)["exp"], net.E_expression(x))


def emoca_cfg(**model):
    base = {"deca_class": "ExpDECA", "expression_backbone": "deca_clone", "n_exp": 50}
    base.update(model)
    return base


def test_from_cfg_prefers_detail_and_reads_sizes():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "coarse": {"model": emoca_cfg(mode="coarse", n_detail=64)},
            "detail": {"model": emoca_cfg(mode="detail", exp_deca_jaw_pose=True)},
        }
    )
    c = EmocaConfig.from_cfg(cfg)
    assert (c.stage, c.mode, c.exp_deca_jaw_pose, c.n_detail, c.n_exp_param) == ("detail", "detail", True, 128, 53)
    c = EmocaConfig.from_cfg(OmegaConf.create({"coarse": {"model": emoca_cfg(mode="coarse", n_detail=64)}}))
    assert (c.stage, c.mode, c.n_detail, c.has_expression) == ("coarse", "coarse", 64, True)
    c = EmocaConfig.from_cfg({"detail": {"model": {"deca_class": "DECA", "expression_backbone": "deca_clone"}}})
    assert c.expression_backbone is None and not c.has_expression


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"expression_backbone": "emonet_trainable"}, "expression_backbone"),
        ({"expression_backbone": "emonet_static"}, "deprecated"),
        ({"expression_backbone": "swin"}, "expression_backbone"),
        ({"e_flame_type": "swin_base"}, "e_flame_type"),
        ({"deca_class": "EMICA"}, "deca_class"),
        ({"detail_conditioning": ["jawpose", "identity"]}, "detail_conditioning"),
        ({"exp_deca_jaw_pose": "maybe"}, "exp_deca_jaw_pose"),
        ({"n_exp": "fifty"}, "n_exp"),
    ],
)
def test_from_cfg_rejects_unsupported(model, needle):
    with pytest.raises(EmocaError) as e:
        EmocaConfig.from_cfg({"detail": {"model": emoca_cfg(**model)}}, source="EMOCA/cfg.yaml")
    assert e.value.code == "config_invalid"
    assert needle in e.value.message and "EMOCA/cfg.yaml" in e.value.message
