"""Training runs: configs, datasets, the Lightning trainer and its result (`python -m backend train`).

The config (OmegaConf YAML; shipped ones in backend/training/configs/) is merged over DEFAULTS, then the
``key=value`` overrides (OmegaConf dot-list). Lightning runs it: ModelCheckpoint (top-k on val_loss + last),
resume (``resume=PATH``, or automatically from ``<output_dir>/coarse/checkpoints/last.ckpt``), EarlyStopping,
a CSV logger under ``<output_dir>/logs``, and DDP across GPUs and nodes through Lightning's own flags
(``trainer.devices``, ``trainer.num_nodes``, ``trainer.strategy``; with several processes Lightning's launcher
or the cluster's (SLURM/torchrun) starts them). The run folder is an EMOCA model folder: ``cfg.yaml`` +
``coarse/checkpoints/*.ckpt`` with ``deca.*`` keys, loadable by capture (``--model <output_dir>``).

``--progress json``: stdout carries only protocol events (`progress` with epoch/step/loss, then `result` with
the checkpoint path); everything else goes to stderr.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from emoca_contract.errors import EmocaError

CONFIG_DIR = Path(__file__).parent / "configs"

DEFAULTS: dict[str, Any] = {
    "task": "emoca",  # emoca | emotion
    "name": "emoca",
    "output_dir": "runs/emoca",
    "seed": 0,
    "threads": None,  # torch CPU threads (null: torch's default); 1 avoids thrashing on a busy shared CPU
    "model": {
        "init": None,
        "expression_backbone": "deca_clone",
        "coarse_codes": "E_flame",
        "n_exp": 50,
        "n_expression": 8,
        "flame": None,
        "landmark_embedding": None,
        "mediapipe_embedding": None,
        "mediapipe_indices": [],
        "emotion_model": None,
        "head_seed": 0,
    },
    "loss": {"setting": "v1", "weights": {}},
    "data": {
        "kind": "folder",
        "train": None,
        "val": None,
        "annotations": None,
        "cache_dir": None,
        "image_size": 224,
        "augment": True,
        "batch_size": 32,
        "num_workers": 4,
        "video_every": 5,
        "val_fraction": 0.05,
        "synthetic": {"n_train": 0, "n_val": 0, "seed": 0, "exp_std": 1.0},
    },
    "learning": {
        "lr": 5.0e-5,
        "max_epochs": 30,
        "max_steps": -1,
        "max_time_s": None,
        "early_stopping_patience": 15,
        "val_check_interval": 0.2,
        "limit_val_batches": 1.0,
    },
    "checkpoint": {"monitor": "val_loss", "save_top_k": 3},
    "trainer": {
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "log_every_n_steps": 10,
    },
    "resume": "auto",
}


def resolve_config_path(name: str | Path) -> Path:
    """A path, or the name of a shipped config (``emoca_v1`` / ``emoca_v1.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    shipped = ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.yaml")))
    raise EmocaError("input_missing", f"training config {name} not found", f"Pass a YAML path or one of: {shipped}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """DEFAULTS <- YAML file <- overrides, as a plain dict. Unknown keys are refused (typos fail loudly)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = resolve_config_path(path)
    base = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(base, True)
    try:
        OmegaConf.set_struct(base.loss.weights, False)
        OmegaConf.set_struct(base.trainer, False)  # any Lightning Trainer flag may be added
        file_cfg = OmegaConf.load(path)
        merged = OmegaConf.merge(base, file_cfg)
        for o in overrides or []:
            if "=" not in o:
                raise EmocaError("config_invalid", f"override {o!r} is not key=value")
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise EmocaError("config_invalid", f"{path}: {exc}".splitlines()[0]) from None
    cfg = OmegaConf.to_container(merged, resolve=True)
    if not isinstance(cfg, dict):
        raise EmocaError("config_invalid", f"{path}: the config is not a mapping")
    cfg["config_path"] = str(path)
    if cfg["task"] not in ("emoca", "emotion"):
        raise EmocaError("config_invalid", f"task = {cfg['task']!r}: expected emoca or emotion")
    return cfg


# ------------------------------------------------------------------------------------------- data
def build_datasets(cfg: dict):
    """(train, val) datasets from cfg['data']."""
    from torch.utils.data import Subset

    from backend.training.data import FaceFolderDataset, SyntheticHeadDataset

    d = cfg["data"]
    size = int(d["image_size"])
    if d["kind"] == "synthetic":
        s = d["synthetic"]
        if int(s["n_train"]) <= 0:
            raise EmocaError("config_invalid", "data.synthetic.n_train must be > 0 with data.kind = synthetic")
        train = SyntheticHeadDataset(
            int(s["n_train"]),
            seed=int(s["seed"]),
            image_size=size,
            augment=bool(d["augment"]),
            exp_std=float(s["exp_std"]),
            head_seed=int(cfg["model"]["head_seed"]),
        )
        val = SyntheticHeadDataset(
            max(int(s["n_val"]), 1),
            seed=int(s["seed"]) + 1000,
            image_size=size,
            exp_std=float(s["exp_std"]),
            head_seed=int(cfg["model"]["head_seed"]),
        )
        return train, val
    if d["kind"] != "folder":
        raise EmocaError("config_invalid", f"data.kind = {d['kind']!r}: expected folder or synthetic")
    if not d["train"]:
        raise EmocaError(
            "config_invalid", "data.train is not set", "Pass data.train=/path/to/images_or_videos (a folder)."
        )
    cache = d["cache_dir"] or str(Path(cfg["output_dir"]) / "cache")
    common = {
        "cache_dir": cache,
        "image_size": size,
        "annotations": d["annotations"],
        "video_every": int(d["video_every"]),
    }
    if d["val"]:
        return (
            FaceFolderDataset(d["train"], augment=bool(d["augment"]), seed=int(cfg["seed"]), **common),
            FaceFolderDataset(d["val"], augment=False, **common),
        )
    full = FaceFolderDataset(d["train"], augment=False, **common)
    n_val = max(1, int(round(len(full) * float(d["val_fraction"]))))
    if len(full) < 2:
        raise EmocaError("input_empty", f"{d['train']}: only {len(full)} face found; need at least 2")
    idx = list(range(len(full)))
    train_ds = FaceFolderDataset(d["train"], augment=bool(d["augment"]), seed=int(cfg["seed"]), **common)
    return Subset(train_ds, idx[n_val:]), Subset(full, idx[:n_val])


def build_module(cfg: dict):
    from backend.training.module import EmocaCoarseModule, EmotionRecognitionModule

    return EmocaCoarseModule(cfg) if cfg["task"] == "emoca" else EmotionRecognitionModule(cfg)


def write_model_cfg(cfg: dict, out: Path) -> Path:
    """cfg.yaml of the run folder: the official layout (``coarse.model`` with deca_class etc.) + our config."""
    from omegaconf import OmegaConf

    out.mkdir(parents=True, exist_ok=True)
    model = {
        "deca_class": "ExpDECA",
        "expression_backbone": cfg["model"]["expression_backbone"],
        "n_shape": 100,
        "n_tex": 50,
        "n_exp": int(cfg["model"]["n_exp"]),
        "n_pose": 6,
        "n_cam": 3,
        "n_light": 27,
        "n_detail": 128,
        "mode": "coarse",
        "exp_deca_jaw_pose": False,
        "exp_deca_global_pose": False,
    }
    if cfg["task"] == "emotion":
        model = {
            "model_type": "EmoCnnModule",
            "backbone": "resnet50",
            "n_expression": int(cfg["model"]["n_expression"]),
        }
        doc = {"model": model, "training": cfg}
    else:
        doc = {"coarse": {"model": model, "training": cfg}}
    path = out / "cfg.yaml"
    OmegaConf.save(OmegaConf.create(doc), path)
    return path


# ------------------------------------------------------------------------------------------- progress
class JsonProgress:
    """Emits protocol `progress` events (throttled to ~2/s) on the real stdout."""

    def __init__(self, stream, id_: str):
        self.stream = stream
        self.id = id_
        self.t0 = time.monotonic()
        self.last = 0.0

    def emit(self, done: int, total: int, epoch: int, loss: float | None, force: bool = False) -> None:
        from emoca_contract import protocol

        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6)
        eta = (total - done) / rate if rate > 0 and total > 0 else None
        msg = protocol.progress(
            self.id,
            int(done),
            int(total),
            "train",
            fps=round(rate, 3),
            eta=None if eta is None else round(eta, 1),
            epoch=int(epoch),
            step=int(done),
            loss=None if loss is None or not math.isfinite(loss) else loss,
        )
        self.stream.write(protocol.encode(msg))
        self.stream.flush()


def _callbacks(cfg: dict, ckpt_dir: Path, reporter: JsonProgress | None):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    c = cfg["checkpoint"]
    monitor = c["monitor"]
    cbs: list = [
        ModelCheckpoint(
            dirpath=str(ckpt_dir),
            filename="deca-epoch={epoch:02d}-step={step}-" + monitor + "={" + monitor + ":.8f}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="min",
            save_top_k=int(c["save_top_k"]),
            save_last=True,
        ),
    ]
    patience = cfg["learning"]["early_stopping_patience"]
    if patience:
        cbs.append(EarlyStopping(monitor=monitor, mode="min", patience=int(patience)))

    class Progress(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if reporter is None or trainer.global_rank != 0:
                return
            loss = outputs["loss"].item() if isinstance(outputs, dict) and "loss" in outputs else None
            total = trainer.estimated_stepping_batches
            reporter.emit(trainer.global_step, total if math.isfinite(total) else -1, trainer.current_epoch, loss)

    cbs.append(Progress())
    return cbs


def _uses_cuda(cfg: dict) -> bool:
    """Whether Lightning will train on CUDA GPUs (accelerator gpu/cuda, or auto with CUDA available)."""
    import torch

    accelerator = str(cfg["trainer"].get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def train(cfg: dict, reporter: JsonProgress | None = None) -> dict:
    """Run training for a merged config; returns {model_folder, best_checkpoint, last_checkpoint, ...}."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg["threads"]))
    L.seed_everything(int(cfg["seed"]), workers=True)
    out = Path(cfg["output_dir"])
    ckpt_dir = out / ("coarse" if cfg["task"] == "emoca" else "") / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_model_cfg(cfg, out)
    train_ds, val_ds = build_datasets(cfg)
    d = cfg["data"]
    nw = int(d["num_workers"])
    bs = int(d["batch_size"])
    pin = _uses_cuda(cfg)  # pinned host batches: asynchronous copies to the GPU
    train_dl = DataLoader(
        train_ds,
        bs,
        shuffle=True,
        drop_last=len(train_ds) > bs,
        num_workers=nw,
        persistent_workers=nw > 0,
        pin_memory=pin,
    )
    val_dl = DataLoader(val_ds, bs, shuffle=False, num_workers=nw, persistent_workers=nw > 0, pin_memory=pin)
    module = build_module(cfg)
    lr = cfg["learning"]
    tr = dict(cfg["trainer"])
    max_time = lr.get("max_time_s")
    vci = lr["val_check_interval"]
    if isinstance(vci, float) and vci <= 1.0:
        vci = max(vci, 1.0 / max(len(train_dl), 1))
    trainer = L.Trainer(
        max_epochs=int(lr["max_epochs"]),
        max_steps=int(lr["max_steps"]),
        max_time=timedelta(seconds=float(max_time)) if max_time else None,
        val_check_interval=vci,
        limit_val_batches=lr["limit_val_batches"],
        callbacks=_callbacks(cfg, ckpt_dir, reporter),
        logger=CSVLogger(str(out), name="logs"),
        default_root_dir=str(out),
        enable_progress_bar=reporter is None and sys.stderr.isatty(),
        enable_model_summary=reporter is None,
        num_sanity_val_steps=0,
        **tr,
    )
    resume = cfg.get("resume")
    ckpt_path = None
    if resume == "auto":
        last = ckpt_dir / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
    elif resume:
        if not Path(resume).is_file():
            raise EmocaError("input_missing", f"resume checkpoint {resume} does not exist")
        ckpt_path = str(resume)
    t0 = time.monotonic()
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path)
    cb = trainer.checkpoint_callback
    if not isinstance(cb, ModelCheckpoint):  # ours, from _callbacks
        raise EmocaError("config_invalid", "the trainer flags replaced the run's checkpoint callback")
    result = {
        "model_folder": str(out),
        "best_checkpoint": cb.best_model_path or None,
        "last_checkpoint": str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None,
        "best_score": float(cb.best_model_score) if cb.best_model_score is not None else None,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "resumed_from": ckpt_path,
        "seconds": round(time.monotonic() - t0, 2),
        "images_seen": int(trainer.global_step) * bs * max(int(trainer.world_size), 1),
        "capture_loadable": cfg["task"] == "emoca" and cfg["model"]["expression_backbone"] != "tiny",
        "interrupted": bool(trainer.interrupted),
        "world_size": int(trainer.world_size),
    }
    result["module"] = module
    result["global_rank"] = int(trainer.global_rank)  # popped by run(): only rank 0 reports (DDP runs N copies)
    return result
