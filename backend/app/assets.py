"""`python -m backend assets {status,import,fetch,where}`: what is installed, import and fetch the official assets.

``status --json`` prints the document described in docs/assets.md (the Blender add-on's "Check" button parses it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend import assets
from emoca_contract.errors import EmocaError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="assets folder (default: $EMOCA_BLENDER_ASSETS or the per-user data folder)",
    )
    sub = parser.add_subparsers(dest="assets_command", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)  # --root also accepted after the action
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="assets folder")
    p = sub.add_parser("status", parents=[common], help="list every expected asset: installed, valid, where it goes")
    p.add_argument("--json", action="store_true", help="print a JSON document (schema in docs/assets.md)")
    p.add_argument("--deep", action="store_true", help="load the networks fully (slower) instead of header checks")
    p = sub.add_parser("import", parents=[common], help="place downloaded zips/folders/files into the layout")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--force", action="store_true", help="replace assets that are already installed and valid")
    p.add_argument("--move", action="store_true", help="delete the sources once imported")
    p = sub.add_parser("fetch", parents=[common], help="download the official assets with your registered credentials")
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"archives to fetch (default: {' '.join(assets.DEFAULT_FETCH)}; 'all' for every one)",
    )
    p.add_argument("--base-url", default=None, help=f"download server (default {assets.DEFAULT_BASE_URL})")
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming a .part file")
    p.add_argument("--username", default=None, help="account e-mail (the password is asked or read from env)")
    p.add_argument("--force", action="store_true", help="replace assets that are already installed and valid")
    p.add_argument("--keep", action="store_true", help="keep the downloaded zips in ROOT/.downloads")
    p.add_argument("--yes", action="store_true", help="confirm you registered and accepted the licences")
    p.add_argument("--list", action="store_true", help="list the archives that can be fetched and exit")
    sub.add_parser("where", parents=[common], help="print the assets folder")


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "assets_command", None) or "status"
    root = args.root if args.root is not None else assets.assets_root()
    if action == "where":
        print(root)
        return 0
    if action == "status":
        source = "--root" if args.root is not None else assets.assets_root_source()
        return _status(root, source, getattr(args, "json", False), getattr(args, "deep", False))
    if action == "import":
        placed = []
        for p in args.paths:
            placed += assets.import_assets(p, root, move=args.move, force=args.force, log=_err)
        print(f"imported {len(placed)} file(s) into {root}")
        for f in placed:
            print(f"  {f}")
        return 0
    if action == "fetch":
        return _fetch(root, args)
    raise AssertionError(action)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _marks() -> tuple[str, str, str]:
    enc = (getattr(sys.stdout, "encoding", None) or "ascii").lower()
    try:
        "✓✗".encode(enc)
        return "✓", "✗", "?"
    except (UnicodeEncodeError, LookupError):
        return "ok", "no", "? "


def format_table(statuses, root: Path, source: str, caps: dict) -> str:
    """The human-readable status: one row per asset (mark, key, where it goes, state, what needs it)."""
    ok, bad, unk = _marks()
    rows = []
    for s in statuses:
        mark = ok if s.valid else unk if s.present and s.valid is None else bad
        where = (
            s.relpath
            if s.location == "root"
            else (
                f"$TORCH_HOME/hub/checkpoints/{s.relpath}"
                if s.location == "torch_hub"
                else f"{s.location.split(':', 1)[1]} package: {s.relpath}"
            )
        )
        need = ", ".join(s.required_for) + (" (any one model)" if s.group else " (optional)" if s.optional else "")
        rows.append((mark, s.key, where, s.message, need))
    wk = max(len(r[1]) for r in rows)
    ww = max(len(r[2]) for r in rows)
    lines = [f"Assets root: {root}  (from {source})", ""]
    lines += [f" {m:<2} {k:<{wk}}  {w:<{ww}}  {msg}  [{n}]" for m, k, w, msg, n in rows]
    lines += ["", "What each capability uses:"]
    for name, cap in caps.items():
        lines.append(f"  {name:<9} {cap['message']}")
    lines += [
        "",
        "Import downloaded files with `python -m backend assets import PATH...`, or download them with "
        "`python -m backend assets fetch` (see docs/assets.md).",
    ]
    return "\n".join(lines)


def _status(root: Path, source: str, as_json: bool, deep: bool) -> int:
    statuses = assets.status(root, deep=deep)
    doc = assets.status_document(statuses, root, deep, source)
    if as_json:
        from backend.app.cli import print_json

        print_json(doc)
    else:
        print(format_table(statuses, root, source, doc["capabilities"]))
    return 0


def _progress():
    last = {}

    def cb(name: str, done: int, total: int | None) -> None:
        pct = int(done * 100 / total) if total else None
        key = pct if pct is not None else done >> 24
        if last.get(name) == key:
            return
        last[name] = key
        _err(f"  {name}: {done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB ({pct}%)" if total else ""))

    return cb


def _fetch(root: Path, args: argparse.Namespace) -> int:
    if args.list:
        for item in assets.FETCH_ITEMS.values():
            default = " (default)" if item.name in assets.DEFAULT_FETCH else ""
            print(f"{item.name:<22} {item.description}{default}  [{assets.SITES[item.domain]}]")
        return 0
    interactive = sys.stdin.isatty()
    if not args.yes:
        if not interactive:
            raise EmocaError(
                "config_invalid",
                "fetching needs your confirmation that you registered and accepted the FLAME/EMOCA licences",
                "Pass --yes (after registering at flame.is.tue.mpg.de and emoca.is.tue.mpg.de).",
            )
        answer = input(
            "Have you registered at https://flame.is.tue.mpg.de and https://emoca.is.tue.mpg.de and "
            "accepted their licences? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing downloaded.")
            return 1
    placed = assets.fetch(
        args.names,
        root,
        username=args.username,
        base_url=args.base_url,
        resume=not args.no_resume,
        force=args.force,
        prompt=interactive,
        keep_archives=args.keep,
        log=_err,
        progress=_progress(),
    )
    print(f"fetched and imported {len(placed)} file(s) into {root}")
    return 0
