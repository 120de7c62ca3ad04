"""`python -m backend export-rig`: write the Blender rig file (docs/formats.md): the open ICT head, FLAME or the
synthetic test head.

The exporter is :func:`backend.rigs.export.export_rig`: ``--head ict`` (the default when no FLAME file is given or
installed), ``--head flame`` (``--flame PATH`` implies it), ``--head synthetic``; stderr says which head it wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.rigs.export import HEADS, export_rig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--head", choices=HEADS, help="the head: ict (open, the default without FLAME), flame "
                        "(the default when FLAME is installed), synthetic (the test head, not FLAME)")  # fmt: skip
    parser.add_argument("--flame", type=Path, help="FLAME generic_model.pkl (or our cached .npz); implies --head flame")
    parser.add_argument("--landmarks", type=Path, help="landmark_embedding.npy (default: next to the FLAME file)")
    parser.add_argument("--n-exp", type=int, default=50, help="FLAME expression components to export (default 50)")
    parser.add_argument("--n-shape", type=int, default=100, help="FLAME identity components to export (default 100)")
    parser.add_argument("--shape-from", type=Path, help="a FLAME take: bake its mean identity (valid frames)")
    parser.add_argument("--identity-from", type=Path, action="append", metavar="TAKE",
                        help="bake the performer's identity from this take (repeatable: several takes of one "
                        "performer); FLAME or open takes, for either head (docs/likeness.md)")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, required=True, help="the rig file to write (.npz)")


def run(args: argparse.Namespace) -> int:
    result = export_rig(args.output, args.flame, args.landmarks, args.n_shape, args.n_exp, args.shape_from,
                        head=args.head, identity_from=args.identity_from)  # fmt: skip
    print(result["files"][0])
    return 0
