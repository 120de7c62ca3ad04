"""`python -m backend arkit-map`: the FLAME <-> ARKit map of a FLAME model (docs/retarget.md), from the cache or
built there (once per model: its hash names the file), and how well it reproduces landmark motion.

stdout: the map's path (``--json``: a JSON document with the path, whether it was built, the figures and the
channels a FLAME take cannot carry); stderr: the figures for people.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

from backend.retarget.map import HEADS, MapOptions, map_for_head
from emoca_contract.errors import EmocaError

FIGURES = (
    ("forward_error_pct", "FLAME -> ARKit: landmark error"),
    ("forward_floor_pct", "  best any ARKit weights do"),
    ("forward_motion_pct", "  the FLAME motion's own size"),
    ("inverse_error_pct", "ARKit -> FLAME: landmark error"),
    ("inverse_motion_pct", "  the ARKit motion's own size"),
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--head", choices=HEADS, default="flame",
                   help="flame (the given or installed FLAME) or synthetic (the test head, not FLAME)")  # fmt: skip
    p.add_argument("--flame", type=Path, help="FLAME generic_model.pkl (default: the installed one)")
    p.add_argument("--landmarks", type=Path, help="landmark_embedding.npy (default: beside the FLAME file)")
    p.add_argument("--n-exp", type=int, default=MapOptions.n_exp, help="FLAME expression components (default 50)")
    p.add_argument("--samples", type=int, default=MapOptions.samples, help="fitting samples per set (default 1500)")
    p.add_argument("--force", action="store_true", help="build it again even when the cache has it")
    p.add_argument("--cache-dir", type=Path, help="the cache folder (default: <user data>/cache/arkit_maps)")
    p.add_argument("-o", "--output", type=Path, help="also write a copy of the map here")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of the path")


def options_from(n_exp: int, samples: int) -> MapOptions:
    """Map options from the command's numbers, checked (EmocaError('config_invalid'))."""
    if n_exp < 1:
        raise EmocaError("config_invalid", f"--n-exp {n_exp}: must be at least 1")
    if samples < 100:
        raise EmocaError("config_invalid", f"--samples {samples}: at least 100 (the fits regress 53 values)")
    return dataclasses.replace(MapOptions(), n_exp=n_exp, samples=samples)


def map_document(path: Path, m: Any, built: bool) -> dict[str, Any]:
    """What the command and the protocol's ``arkit_map`` result say about a map."""
    return {
        "path": str(path),
        "built": built,
        "model": m.meta.get("model"),
        "model_hash": m.meta.get("model_hash"),
        "n_exp": m.n_exp,
        "figures": m.meta.get("figures", {}),
        "not_carried": m.meta.get("not_carried", []),
    }


def run(args: argparse.Namespace) -> int:
    from backend.app.cli import print_json

    def note(message: str) -> None:
        print(message, file=sys.stderr)

    opt = options_from(args.n_exp, args.samples)
    path, m, built = map_for_head(args.head, args.flame, args.landmarks, opt, args.force, args.cache_dir, note)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.output)
        path = args.output
    doc = map_document(path, m, built)
    note(("built " if built else "from the cache: ") + str(path))
    for key, label in FIGURES:
        note(f"{label}: {doc['figures'].get(key)} % of the face size")
    note(f"ARKit -> FLAME -> ARKit: mean weight error {doc['figures'].get('round_trip_weight_error')}")
    note(f"not carried by FLAME takes: {', '.join(doc['not_carried']) or 'none'}")
    if args.json:
        print_json(doc)
    else:
        print(path)
    return 0
