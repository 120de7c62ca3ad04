"""Training benchmarks: ``train_step_s`` / ``train_images_per_s`` and ``train_error_ratio``.

- ``train_step_s``: seconds per EMOCA coarse training step on the REAL path (ResNet-50 E_flame frozen +
  E_expression trained, 224 px, render + v1 losses incl. the emotion net; synthetic-head renders as data), batch
  32 on a GPU (batch 4 on a CPU), float32 (``trainer.precision: 32-true``), median of a few steps after warm-up;
  ``train_images_per_s`` = batch / step. Where bf16 is native (CUDA, CPUs with avx512_bf16/AMX) the same step
  under bf16 autocast (``bf16-mixed``) is timed interleaved with it: ``train_step_bf16_s``, ``train_bf16_speedup``.
- ``train_error_ratio``: held-out expression error after / before the tiny synthetic training
  (configs/tiny_cpu.yaml) of exactly :data:`TRAIN_ERROR_STEPS` steps and no time limit, so that the figure
  measures learning, not the machine's load. Reuses the cached result (``build/bench/synthetic_training.json``,
  written by the slow test in tests/training and by this bench) when it was made by the same code and step count
  (:func:`evidence_fingerprint`), else trains (a few minutes); ``train_error_source`` says which.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / "build" / "bench" / "synthetic_training.json"
# what the tiny run's result depends on: a cached result made with other versions of these is not reused
EVIDENCE_SOURCES = ("backend/training", "backend/render", "backend/flame", "backend/synthetic")
TRAIN_ERROR_STEPS = 1000  # tiny_cpu's own max_steps: where the ratio has settled (400 steps: still falling)
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16}  # Lightning's names -> autocast dtype


def evidence_fingerprint(steps: int) -> str:
    """sha256 (16 hex) of the step count and of every source and config file under :data:`EVIDENCE_SOURCES`."""
    h = hashlib.sha256(f"steps={steps}".encode())
    for folder in EVIDENCE_SOURCES:
        for f in sorted((ROOT / folder).rglob("*")):
            if f.suffix in (".py", ".yaml", ".npz") and f.is_file():
                h.update(f.relative_to(ROOT).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def synthetic_training_evidence(
    output_dir: str | Path,
    steps: int = TRAIN_ERROR_STEPS,
    n_eval: int = 64,
    overrides: list[str] | None = None,
    cache: Path | None = CACHE,
) -> dict:
    """Train tiny_cpu on synthetic-head renders for exactly ``steps`` steps (no time limit); held-out expression
    error (7 meaningful components) before and after. Writes the result to ``cache`` (JSON) when given."""
    import lightning as L

    from backend.training.data import SyntheticHeadDataset
    from backend.training.module import expression_error
    from backend.training.run import build_module, load_config, train

    fixed = [f"learning.max_steps={steps}", "learning.max_time_s=null"]
    cfg = load_config("tiny_cpu", [f"output_dir={output_dir}", "resume=null", *fixed, *(overrides or [])])
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
        "fingerprint": evidence_fingerprint(steps),
        "before": round(before, 4),
        "after": round(after, 4),
        "ratio": round(after / before, 4),
        "steps": res["global_step"],
        "steps_asked": steps,
        "seconds": res["seconds"],
        "step_s": round(res["seconds"] / max(res["global_step"], 1), 4),
        "images_per_s": round(res["images_seen"] / max(res["seconds"], 1e-6), 2),
        "held_out": n_eval,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def native_bf16(dev: torch.device) -> bool:
    """bf16 autocast is worth timing here: CUDA with bf16 tensor cores, or a CPU with native bf16."""
    from backend.models.reconstructor import cpu_has_native_bf16, cuda_has_native_bf16

    return cuda_has_native_bf16(dev) if dev.type == "cuda" else cpu_has_native_bf16()


def timed_step(module, opt, batch: dict, dev: torch.device, dtype: torch.dtype | None) -> float:
    """Seconds of one optimisation step (forward under autocast when ``dtype``, backward, Adam)."""
    _sync(dev)
    t0 = time.perf_counter()
    with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss, _ = module.step(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    _sync(dev)
    return time.perf_counter() - t0


def measure_step(
    device: str = "auto",
    batch: int | None = None,
    iters: int = 5,
    warmup: int = 2,
    precisions: tuple[str, ...] = ("32-true",),
) -> dict:
    """Median seconds per real-config (emoca_v1, 224 px, ResNet-50) training step for each of ``precisions``
    (Lightning's names), timed interleaved on the same batch -> {precision: seconds}, plus batch and device."""
    from backend.training.data import SyntheticHeadDataset
    from backend.training.module import EmocaCoarseModule
    from backend.training.run import load_config

    dev = _device(device)
    batch = batch or (32 if dev.type == "cuda" else 4)
    cfg = load_config("emoca_v1", ["output_dir=" + tempfile.mkdtemp()])
    module = EmocaCoarseModule(cfg).to(dev)
    module.train()
    ds = SyntheticHeadDataset(batch, seed=0, image_size=224)
    b = {k: torch.stack([ds[i][k] for i in range(batch)]).to(dev) for k in ("image", "landmarks68")}
    opt = module.configure_optimizers()
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for k in range(warmup + iters):
        for p in precisions:
            t = timed_step(module, opt, b, dev, PRECISIONS[p])
            if k >= warmup:
                times[p].append(t)
    return {"seconds": {p: statistics.median(t) for p, t in times.items()}, "batch": batch, "device": str(dev)}


def step_figures(device: str, iters: int, warmup: int) -> dict:
    """train_step_s / train_images_per_s (float32), and the bf16-mixed step where bf16 is native."""
    dev = _device(device)
    precisions = ("32-true", "bf16-mixed") if native_bf16(dev) else ("32-true",)
    m = measure_step(device, iters=iters, warmup=warmup, precisions=precisions)
    t, batch = m["seconds"], m["batch"]
    out = {
        "train_step_s": round(t["32-true"], 3),
        "train_images_per_s": round(batch / t["32-true"], 2),
        "train_batch": batch,
        "train_device": m["device"],
    }
    if "bf16-mixed" in t:
        out["train_step_bf16_s"] = round(t["bf16-mixed"], 3)
        out["train_images_per_s_bf16"] = round(batch / t["bf16-mixed"], 2)
        out["train_bf16_speedup"] = round(t["32-true"] / t["bf16-mixed"], 2)
    return out


def error_figures() -> dict:
    """train_error_ratio of a TRAIN_ERROR_STEPS-step tiny_cpu run: the cached one when it was made by this code
    (same fingerprint), else a fresh one."""
    ev = json.loads(CACHE.read_text(encoding="utf-8")) if CACHE.is_file() else {}
    if ev.get("fingerprint") == evidence_fingerprint(TRAIN_ERROR_STEPS):
        source = f"cached ({CACHE}, {ev.get('created')})"
    else:
        with tempfile.TemporaryDirectory() as d:
            ev = synthetic_training_evidence(d)
        source = f"fresh tiny_cpu run ({TRAIN_ERROR_STEPS} steps, no time limit)"
    return {
        "train_error_ratio": ev["ratio"],
        "train_error_before": ev["before"],
        "train_error_after": ev["after"],
        "train_error_steps": ev["steps"],
        "train_error_step_s": ev.get("step_s", round(ev["seconds"] / max(ev["steps"], 1), 4)),
        "train_error_source": source,
    }


def run(args: argparse.Namespace | None = None) -> dict:
    device = getattr(args, "device", "auto") if args is not None else "auto"
    cpu = _device(device).type == "cpu"
    return {**step_figures(device, iters=3 if cpu else 5, warmup=1 if cpu else 2), **error_figures()}


if __name__ == "__main__":
    for k, val in run().items():
        print(f"{k}: {val}")
