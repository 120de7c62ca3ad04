"""The real training step under bf16 autocast (trainer.precision=bf16-mixed): the networks compute in bf16,
FLAME / projection / rendering / losses in float32, and gradients reach E_expression; encoders in channels_last."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_bf16_autocast_keeps_geometry_and_losses_in_float32(tmp_path):
    from backend.training.data import SyntheticHeadDataset
    from backend.training.module import EmocaCoarseModule
    from backend.training.run import load_config

    module = EmocaCoarseModule(load_config("emoca_v1", [f"output_dir={tmp_path}"]))
    module.train()
    enc = module.expression_encoder
    assert enc.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    ds = SyntheticHeadDataset(2, seed=0, image_size=224)
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("image", "landmarks68")}
    seen: dict[str, torch.dtype] = {}
    hooks = [
        enc.layers.register_forward_hook(lambda m, i, o: seen.__setitem__("E_expression", o.dtype)),
        module.flame.register_forward_hook(lambda m, i, o: seen.__setitem__("flame", o.vertices.dtype)),
    ]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, terms = module.step(batch)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"E_expression": torch.bfloat16, "flame": torch.float32}
    assert loss.dtype == torch.float32 and all(t.dtype == torch.float32 for t in terms.values()), terms
    assert math.isfinite(float(loss.detach())) and "emotion" in terms
    loss.backward()
    grad = enc.layers[2].weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0
