"""`python -m backend COMMAND ...`: one subcommand per module, imported only when used.

Each command module defines ``configure(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``. A EmocaError becomes a one-line message on stderr
(or an ``error`` event with ``--progress json``) and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from backend import __version__
from emoca_contract.errors import EmocaError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "assets": ("backend.app.assets", "what is installed, import and fetch the official assets"),
    "export-rig": ("backend.app.export_rig", "write the Blender rig file from a FLAME model"),
    "encode": ("backend.app.encode", "reconstruct faces in single images"),
    "capture": ("backend.app.capture", "capture footage into take files"),
    "smooth": ("backend.app.smooth", "redo a take's smoothing from its raw values (no re-capture)"),
    "likeness": ("backend.app.likeness", "the performer's identity, texture and detail maps from a take"),
    "serve": ("backend.app.serve", "the stdio JSON-lines protocol used by the Blender add-on"),
    "train": ("backend.app.train", "train EMOCA's expression encoder or the emotion network"),
    "bench": ("backend.app.bench", "benchmarks (capture, render, train)"),
    "demo": ("backend.app.demo", "generate a clip, capture it and build a .blend (the README's demo)"),
    "livelink": ("backend.app.livelink", "takes to and from Live Link Face CSV files (ARKit curves)"),
    "arkit-map": ("backend.app.arkit_map", "the FLAME <-> ARKit map of a FLAME model (retargeting)"),
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="EMOCA for Blender backend")
    parser.add_argument("--version", action="version", version=f"emoca-blender backend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == load:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except EmocaError as exc:
        if getattr(args, "progress", None) == "json":
            from emoca_contract import protocol

            sys.stdout.write(protocol.encode(protocol.error(exc.code, exc.message, exc.hint)))
        else:
            print(f"error [{exc.code}]: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
