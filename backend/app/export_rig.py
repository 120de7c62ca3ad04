"""`python -m backend export-rig`: write the Blender rig file (docs/formats.md) from FLAME or the synthetic head.

The exporter is :func:`backend.rigs.export.export_rig`; without --flame stderr says the head is not FLAME.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.rigs.export import export_rig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flame", type=Path, help="FLAME generic_model.pkl (or our cached .npz); default: synthetic")
    parser.add_argument("--landmarks", type=Path, help="landmark_embedding.npy (default: next to the FLAME file)")
    parser.add_argument("--n-exp", type=int, default=50, help="expression components to export (default 50)")
    parser.add_argument("--n-shape", type=int, default=100, help="identity components to export (default 100)")
    parser.add_argument("--shape-from", type=Path, help="a take file: bake its mean identity (valid frames)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the rig file to write (.npz)")


def run(args: argparse.Namespace) -> int:
    result = export_rig(args.output, args.flame, args.landmarks, args.n_shape, args.n_exp, args.shape_from)
    print(result["files"][0])
    return 0
