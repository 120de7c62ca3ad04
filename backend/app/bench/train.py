"""Training benchmarks: ``train_images_per_s`` and ``train_error_ratio``.

- ``train_images_per_s``: images per second of an EMOCA coarse training step on the REAL path (ResNet-50
  E_flame frozen + E_expression trained, 224 px, render + v1 losses incl. the emotion net; synthetic-head
  renders as data), batch 32 on a GPU (batch 4 on a CPU), median of a few steps after warm-up.
- ``train_error_ratio``: held-out expression error after / before the tiny synthetic training
  (configs/tiny_cpu.yaml). Reuses the cached result of the last run (``build/bench/synthetic_training.json``,
  written by the slow test in tests/training and by this bench) when present, else runs the training with a
  60 s budget; ``train_error_source`` says which.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

CACHE = Path(__file__).resolve().parents[3] / "build" / "bench" / "synthetic_training.json"


def synthetic_training_evidence(
    output_dir: str | Path,
    max_time_s: float | None = None,
    n_eval: int = 64,
    overrides: list[str] | None = None,
    cache: Path | None = CACHE,
) -> dict:
    """Train tiny_cpu on synthetic-head renders; held-out expression error (7 meaningful components) before
    and after. Writes the result to ``cache`` (JSON) when given."""
    import lightning as L

    from backend.training.data import SyntheticHeadDataset
    from backend.training.module import expression_error
    from backend.training.run import build_module, load_config, train

    budget = [f"learning.max_time_s={max_time_s}"] if max_time_s else []
    cfg = load_config("tiny_cpu", [f"output_dir={output_dir}", "resume=null", *budget, *(overrides or [])])
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    held_out = SyntheticHeadDataset(
        n_eval,
        seed=12345,
        image_size=int(cfg["data"]["image_size"]),
        exp_std=float(cfg["data"]["synthetic"]["exp_std"]),
    )
    L.seed_everything(int(cfg["seed"]))
    before = expression_error(build_module(cfg), held_out)  # the untrained model (same seed = same init)
    res = train(cfg)
    module = res.pop("module")
    after = expression_error(module, held_out)
    out = {
        "before": round(before, 4),
        "after": round(after, 4),
        "ratio": round(after / before, 4),
        "steps": res["global_step"],
        "seconds": res["seconds"],
        "images_per_s": round(res["images_seen"] / max(res["seconds"], 1e-6), 2),
        "held_out": n_eval,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


def measure_step(device: str = "auto", batch: int | None = None, iters: int = 5, warmup: int = 2) -> dict:
    """Images/s of a real-config (emoca_v1, 224 px, ResNet-50) training step."""
    from backend.training.data import SyntheticHeadDataset
    from backend.training.module import EmocaCoarseModule
    from backend.training.run import load_config

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    batch = batch or (32 if dev.type == "cuda" else 4)
    cfg = load_config("emoca_v1", ["output_dir=" + tempfile.mkdtemp()])
    module = EmocaCoarseModule(cfg).to(dev)
    module.train()
    ds = SyntheticHeadDataset(batch, seed=0, image_size=224)
    b = {k: torch.stack([ds[i][k] for i in range(batch)]).to(dev) for k in ("image", "landmarks68")}
    opt = module.configure_optimizers()
    times = []
    for k in range(warmup + iters):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        loss, _ = module.step(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "train_images_per_s": round(batch / t, 2),
        "train_step_ms": round(t * 1000, 1),
        "train_batch": batch,
        "train_device": str(dev),
    }


def run(args: argparse.Namespace | None = None) -> dict:
    device = getattr(args, "device", "auto") if args is not None else "auto"
    out = measure_step(device, iters=5 if device != "cpu" else 2, warmup=2 if device != "cpu" else 1)
    if CACHE.is_file():
        ev = json.loads(CACHE.read_text(encoding="utf-8"))
        source = f"cached ({CACHE}, {ev.get('created')})"
    else:
        with tempfile.TemporaryDirectory() as d:
            ev = synthetic_training_evidence(d, max_time_s=60.0, overrides=["learning.max_steps=400"])
        source = "fresh short tiny_cpu run (400 steps / 60 s)"
    out.update(
        {
            "train_error_ratio": ev["ratio"],
            "train_error_before": ev["before"],
            "train_error_after": ev["after"],
            "train_error_steps": ev["steps"],
            "train_error_source": source,
        }
    )
    return out


if __name__ == "__main__":
    for k, val in run().items():
        print(f"{k}: {val}")
