"""Precision of FaceReconstructor: fp32 is the plain network bit for bit; bf16 (autocast + channels_last) stays
within stated tolerances of fp32 on the same crops; auto picks bf16 only where the CPU computes it natively."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.models import loading  # noqa: E402
from backend.models.reconstructor import (  # noqa: E402
    FaceReconstructor,
    cpu_flags,
    cpu_has_native_bf16,
    resolve_precision,
)
from emoca_contract.errors import EmocaError  # noqa: E402

pytestmark = pytest.mark.torch

# bf16 vs fp32 on the same crops (docs/benchmarks.md#cpu-precision states them; measured there about 5x lower):
# exp and pose in FLAME units / radians, vertices in metres.
BF16_TOLERANCE = {"exp": 1e-2, "pose": 1e-2, "vertices": 1e-3}


@pytest.fixture
def no_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("EMOCA_BLENDER_DATA", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture(scope="module")
def crops_u8() -> np.ndarray:
    """(4, 224, 224, 3): the astronaut's face at four offsets (the same crops for every precision)."""
    from skimage import data
    from skimage.transform import resize

    img = data.astronaut()
    out = [resize(img[30 + d : 250 + d, 130 - d : 350 - d], (224, 224)) for d in (-12, -4, 4, 12)]
    return (np.stack(out) * 255).astype(np.uint8)


def _quiet(**kw) -> FaceReconstructor:
    """from_paths without the untrained / emulated-bf16 warnings (asserted elsewhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FaceReconstructor.from_paths(device="cpu", **kw)


def _max_abs(a: dict, b: dict, key: str) -> float:
    return float(np.abs(a[key] - b[key]).max())


def test_fp32_is_the_plain_network_bit_for_bit(no_assets, crops_u8):
    rec = _quiet(precision="fp32")
    assert rec.info["dtype"] == "float32" and rec.info["precision"] == "fp32" and not rec.channels_last
    assert _quiet().info["precision"] == "fp32"  # the default: callers that do not ask get the exact path
    codes = rec.encode(crops_u8)
    with torch.inference_mode():
        ref = rec.net.encode(torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float() / 255)
    assert set(codes) == set(ref)
    for k in ref:
        assert torch.equal(codes[k], ref[k]), k


def test_bf16_untrained_within_tolerance_of_fp32(no_assets, crops_u8):
    f32 = _quiet(precision="fp32").reconstruct(crops_u8)
    rec = _quiet(precision="bf16")
    assert rec.info["dtype"] == "bfloat16" and rec.channels_last
    b16 = rec.reconstruct(crops_u8)
    assert all(v.dtype == np.float32 for v in b16.values())
    diffs = {k: _max_abs(b16, f32, k) for k in BF16_TOLERANCE}
    assert all(diffs[k] <= tol for k, tol in BF16_TOLERANCE.items()), diffs
    assert diffs["exp"] > 0  # bf16 really ran: it is not the fp32 path under another name


def test_bf16_result_of_a_crop_does_not_depend_on_its_batch(no_assets, crops_u8):
    """Capture batches frames as they come: a frame's codes must not depend on its neighbours."""
    rec = _quiet(precision="bf16")
    whole = rec.encode(crops_u8, detail=False)
    alone = rec.encode(crops_u8[2:3], detail=False)
    for k in whole:
        torch.testing.assert_close(alone[k][0], whole[k][2], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_fixture_network_fp32_exact_and_bf16_within_tolerance(no_assets, emoca_assets, crops_u8):
    """The official-layout fixture (random weights in the released layout, 5023-vertex FLAME)."""
    kw = {"model": emoca_assets.folder, "flame": emoca_assets.flame_pkl}
    f32 = _quiet(precision="fp32", **kw)
    out32 = f32.reconstruct(crops_u8)
    net, _ = loading.load_emoca_folder(emoca_assets.folder)
    with torch.inference_mode():
        ref = net.encode(torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float() / 255)
    for k in ref:
        np.testing.assert_array_equal(out32[k], ref[k].numpy(), err_msg=k)
    out16 = _quiet(precision="bf16", **kw).reconstruct(crops_u8)
    diffs = {k: _max_abs(out16, out32, k) for k in BF16_TOLERANCE}
    assert all(diffs[k] <= tol for k, tol in BF16_TOLERANCE.items()), diffs
    assert diffs["vertices"] > 0


def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16(no_assets):
    rec = _quiet(precision="auto")
    assert rec.info["precision"] == "auto"
    assert rec.info["dtype"] == ("bfloat16" if cpu_has_native_bf16() else "float32")


def test_native_bf16_needs_the_cpu_flag(tmp_path):
    intel = tmp_path / "cpuinfo"
    intel.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512bw avx512_bf16 amx_tile\n\n", encoding="utf-8")
    assert {"avx512f", "avx512_bf16"} <= cpu_flags(intel)
    arm = tmp_path / "cpuinfo_arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\n", encoding="utf-8")
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()
    onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_has_native_bf16(frozenset({"avx512f", "avx512bw"})) is False  # emulated: not native
    assert cpu_has_native_bf16(frozenset({"avx512f", "avx512_bf16"})) is onednn


def test_explicit_bf16_where_emulated_warns(monkeypatch):
    import backend.models.reconstructor as R

    monkeypatch.setattr(R, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": frozenset({"sse4_2"}))
    dtype, notes = resolve_precision("bf16", torch.device("cpu"))
    assert dtype == torch.bfloat16 and len(notes) == 1 and "emulated" in notes[0]
    assert resolve_precision("auto", torch.device("cpu")) == (None, [])


def test_unknown_precision_is_a_config_error(no_assets):
    with pytest.raises(EmocaError) as e:
        _quiet(precision="fp16")
    assert e.value.code == "config_invalid" and "fp16" in e.value.message and "auto" in e.value.message


@pytest.mark.gpu
def test_cuda_bf16_channels_last_pinned(no_assets, crops_u8):
    """The CUDA path: auto = bf16 autocast + channels_last (compute capability 8+), uint8 crops moved through
    pinned memory, outputs float32 and within the bf16 tolerance of the CPU fp32 reference."""
    ref = _quiet(precision="fp32").reconstruct(crops_u8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = FaceReconstructor.from_paths(device="cuda", precision="auto")
    assert rec.info["dtype"] == "bfloat16" and rec.channels_last
    x = rec.to_tensor(crops_u8)
    assert x.device.type == "cuda" and x.dtype == torch.float32 and x.shape == (4, 3, 224, 224)
    out = rec.reconstruct(crops_u8)
    diffs = {k: _max_abs(out, ref, k) for k in BF16_TOLERANCE}
    assert all(diffs[k] <= tol for k, tol in BF16_TOLERANCE.items()), diffs
