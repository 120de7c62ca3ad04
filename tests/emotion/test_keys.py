"""Our modules' state_dict keys, shapes and dtypes equal the original modules' (the spec's key list)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.emotion_files import EMODECA_SECTION, KEYS_FILE, RESNET_SECTION, read_key_sections, section

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SPEC_KEYS = Path("/work/shared/spec/emoca-keys.txt")


def _layout(module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()}


def _diff(ours: dict, theirs: dict) -> str:
    missing = sorted(set(theirs) - set(ours))
    extra = sorted(set(ours) - set(theirs))
    wrong = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    return f"missing {missing[:5]}, extra {extra[:5]}, wrong {[(k, ours[k], theirs[k]) for k in wrong[:5]]}"


def test_key_list_copy_matches_the_spec():
    """The repo copy of the key list is the spec's emotion sections, verbatim (guards drift)."""
    if not SPEC_KEYS.is_file():
        pytest.skip(f"the spec file {SPEC_KEYS} is not on this machine (fresh clone): the repo copy is used")
    spec = read_key_sections(SPEC_KEYS)
    ours = read_key_sections(KEYS_FILE)
    for title in (RESNET_SECTION, EMODECA_SECTION):
        full = [k for k in spec if k.startswith(title)]
        assert len(full) == 1
        assert ours[full[0]] == spec[full[0]]


def test_emocnn_resnet50_keys_equal_the_original():
    from backend.models.emotion import EmoCnnResNet50

    theirs = section(RESNET_SECTION)
    ours = _layout(EmoCnnResNet50(n_expression=8))
    assert len(theirs) == 322
    assert ours == theirs, _diff(ours, theirs)
    assert theirs["backbone.fc.weight"][0] == (8631, 2048)  # the unused VGGFace2 identity classifier


def test_emodeca_keys_equal_the_original():
    from backend.models.emodeca import EmoDeca, EmoDecaConfig

    theirs = section(EMODECA_SECTION)
    net = EmoDeca(EmoDecaConfig())
    assert net.cfg.in_features == 153  # shape 100 | exp 50 | jaw 3
    ours = _layout(net)
    assert ours == theirs, _diff(ours, theirs)
    n_params = sum(p.numel() for p in net.parameters())
    assert 12.5e6 < n_params < 13.3e6  # spec: ~12.9 M


def test_caffe_layout_is_not_the_torchvision_layout():
    """Same keys, different network: the stride sits in the first 1x1 conv; the stem pool is k3 s2 p0 ceil."""
    from backend.models.resnet import VGGFACE2_IDENTITIES, ResNet50

    net = ResNet50(VGGFACE2_IDENTITIES, layout="caffe")
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(net, name)[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1), name
        assert block.downsample[0].stride == (2, 2)
    assert net.layer1[0].conv1.stride == (1, 1)
    assert (net.maxpool.kernel_size, net.maxpool.stride, net.maxpool.padding, net.maxpool.ceil_mode) == (3, 2, 0, True)
    # ceil-mode pooling without padding: 112 -> 56 (floor mode without padding would give 55)
    x = torch.zeros(1, 64, 112, 112)
    assert net.maxpool(x).shape[-1] == 56
    # a 224 crop ends in the 7x7 map that the original AvgPool2d(7) expects
    with torch.no_grad():
        assert net.feature_map(torch.rand(1, 3, 224, 224)).shape == (1, 2048, 7, 7)


def test_same_weights_give_different_features_in_the_two_layouts():
    """Why the loader must decide from the config: a Caffe checkpoint loads silently into the torchvision net."""
    from backend.models.resnet import VGGFACE2_IDENTITIES, ResNet50
    from tests.fixtures.emotion_files import random_state_dict

    sd = {
        k[len("backbone.") :]: v
        for k, v in random_state_dict(section(RESNET_SECTION), 3).items()
        if k.startswith("backbone.")
    }
    caffe = ResNet50(VGGFACE2_IDENTITIES, layout="caffe").eval()
    tv = ResNet50(num_classes=8631).eval()
    caffe.load_state_dict(sd, strict=True)
    tv.load_state_dict(sd, strict=True)  # no error: the keys are identical
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fc, ft = caffe.features(x), tv.features(x)
    assert fc.shape == ft.shape == (2, 2048)
    assert (fc - ft).abs().max() > 1e-2 * fc.abs().max()
