"""`python -m backend train CONFIG.yaml [key=value ...] [--progress json]`: train EMOCA or the emotion network.

``--progress json``: stdout carries only protocol events (`progress` with epoch/step/loss, then `result` with
the checkpoint path); everything else goes to stderr. The training itself is :mod:`backend.training.run`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from backend.training.run import JsonProgress, load_config, train
from emoca_contract import protocol


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config YAML (see backend/training/configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides (OmegaConf dot-list), e.g. "
        "data.train=/data/faces learning.max_epochs=5 trainer.devices=4",
    )
    parser.add_argument(
        "--progress",
        choices=("text", "json"),
        default="text",
        help="json: protocol events on stdout (the Blender add-on uses this)",
    )
    parser.add_argument("--id", default="train", help="request id repeated in json events")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    json_mode = args.progress == "json"
    real_stdout = sys.stdout
    reporter = JsonProgress(real_stdout, args.id) if json_mode else None
    redirect = contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()
    with redirect:
        result = train(cfg, reporter)
    result.pop("module", None)
    if result.pop("global_rank", 0) != 0:  # a DDP worker: the rank-0 process speaks for the whole run
        return 0
    files = [p for p in (result["best_checkpoint"], result["last_checkpoint"]) if p]
    if json_mode:
        best = result["best_checkpoint"] or result["last_checkpoint"]
        msg = protocol.make("result", id=args.id, files=files, checkpoint=best, **result)
        real_stdout.write(protocol.encode(msg))
        real_stdout.flush()
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0
