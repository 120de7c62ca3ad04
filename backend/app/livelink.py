"""``python -m backend livelink export|import``: takes to and from Live Link Face CSV files (ARKit curves).

    python -m backend livelink export TAKE.npz -o take.csv [--fps 60]
    python -m backend livelink import capture.csv -o take.npz [--fps 60] [--degrees]

Export writes a take's ARKit curves, head and eye angles in the iPhone app's CSV layout; import turns such a CSV
(an iPhone capture) into an open take that retargeting and Apply Take read like any other. The format and both
conversions are the contract's (:mod:`emoca_contract.livelink`, docs/retarget.md); this module only parses the
arguments, writes the take (``backend.take.writer``) and prints the result.
"""

from __future__ import annotations

import argparse

from backend.take.writer import write_take
from emoca_contract.livelink import read_csv, write_csv
from emoca_contract.take import read_take


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", required=True, metavar="export|import")
    p = sub.add_parser("export", help="a take (.npz) -> a Live Link Face CSV")
    p.add_argument("take", help="a take file (.npz): open, or FLAME with ARKit channels")
    p.add_argument("-o", "--output", required=True, help="the CSV to write")
    p.add_argument("--fps", type=int, default=None, help="timecode rate (default: the footage's, else 60)")
    p = sub.add_parser("import", help="a Live Link Face CSV -> an open take (.npz)")
    p.add_argument("csv", help="a Live Link Face CSV (the app's export)")
    p.add_argument("-o", "--output", required=True, help="the take to write (.npz)")
    p.add_argument("--fps", type=float, default=None, help="the file's timecode rate (default: guessed)")
    p.add_argument("--degrees", action="store_true", help="the file's head angles are degrees, not radians")


def run(args: argparse.Namespace) -> int:
    if args.direction == "export":
        take = read_take(args.take)
        path = write_csv(take, args.output, rate=args.fps)
        print(f"wrote {path} ({int(take['valid'].sum())} frames)")
        return 0
    take = read_csv(args.csv, fps=args.fps, angles="degrees" if args.degrees else "radians")
    path = write_take(args.output, take.arrays, take.meta)
    for warning in take.meta.get("warnings", []):
        print(f"warning: {warning}")
    print(f"wrote {path} ({take.n_frames} frames at {take.fps:g} fps)")
    return 0
