"""``blender -c emoca ...``: command-line commands (registered with ``bpy.utils.register_cli_command``).

    blender -c emoca capture FOOTAGE --output scene.blend [--rig RIG.npz] [--takes DIR] [options]
    blender -c emoca import-rig RIG.npz --output scene.blend
    blender -c emoca apply TAKE.npz --blend scene.blend [--rig-object NAME | --rig RIG.npz] --output out.blend

The command runs before any .blend is loaded; ``--blend`` opens one first. Exit status 0 on success, 1 on a
failure (the message and hint go to stderr). See docs/headless.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bpy

from emoca_contract.errors import EmocaError

from . import api
from .options import ApplyOptions, add_arguments
from .progress import print_line
from .rig import find_rig

_HANDLE = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blender -c emoca", description="EMOCA for Blender, headless")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("capture", help="capture footage and save a .blend with the keyed rig")
    p.add_argument("footage")
    p.add_argument("--output", required=True, help="the .blend to write")
    p.add_argument("--rig", help="a rig file (.npz); default: the backend exports one")
    p.add_argument("--blend", help="open this .blend first (and use its rig with --rig-object)")
    p.add_argument("--rig-object", help="the rig armature's name in --blend")
    p.add_argument("--takes", help="folder for the take files (default: next to --output)")
    p.add_argument("--python", help="the backend's interpreter (default: preferences / $EMOCA_BACKEND_PYTHON)")
    p.add_argument("--flame", help="FLAME model file")
    p.add_argument("--model", help="EMOCA model folder")
    p.add_argument("--device", default=None)
    p.add_argument("--face", default=None)
    p.add_argument("--smooth", type=float, default=None)
    p.add_argument("--frames", default=None, help="A:B:S source frame range")
    add_arguments(p)
    p = sub.add_parser("import-rig", help="build the rig from a rig file and save a .blend")
    p.add_argument("rig")
    p.add_argument("--output", required=True)
    p.add_argument("--blend", help="open this .blend first")
    p = sub.add_parser("apply", help="apply a take to a rig and save a .blend")
    p.add_argument("take")
    p.add_argument("--output", required=True)
    p.add_argument("--blend", help="open this .blend first")
    p.add_argument("--rig-object", help="the rig armature's name (default: the only rig in the file)")
    p.add_argument("--rig", help="build this rig file first instead")
    add_arguments(p)
    return parser


def _open(blend: str | None) -> None:
    if blend:
        bpy.ops.wm.open_mainfile(filepath=str(Path(blend).resolve()))
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def _find_rig(name: str | None):
    if name:
        obj = find_rig(bpy.data.objects.get(name))
        if obj is None:
            raise EmocaError("config_invalid", f"no EMOCA rig named {name!r} in the file")
        return obj
    rigs = [o for o in bpy.data.objects if find_rig(o) is o]
    if len(rigs) != 1:
        raise EmocaError("config_invalid", f"found {len(rigs)} EMOCA rigs; name one with --rig-object")
    return rigs[0]


def _save(path: str) -> None:
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(out))
    print_line(f"saved {out}")


def main(argv: list[str]) -> int:
    """The ``-c emoca`` callback: parse ``argv`` and run; 0 on success, 1 on failure."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "import-rig":
            _open(args.blend)
            api.import_rig(args.rig)
        elif args.command == "apply":
            _open(args.blend)
            rig = api.import_rig(args.rig) if args.rig else _find_rig(args.rig_object)
            action = api.apply_take(rig, args.take, ApplyOptions.from_object(args))
            print_line(f"applied {args.take} as {action.name}")
        elif args.command == "capture":
            _open(args.blend)
            rig = args.rig or (_find_rig(args.rig_object) if args.blend else None)
            takes = args.takes or str(Path(args.output).resolve().parent / (Path(args.output).stem + "_takes"))
            opts = {k: getattr(args, k) for k in ("model", "device", "face", "smooth", "frames")}
            apply_opts = ApplyOptions.from_object(args).as_dict()
            result = api.capture(
                args.footage, rig=rig, output=takes, python=args.python, flame=args.flame, **opts, **apply_opts
            )
            print_line(f"captured {len(result.takes)} take(s); applied {result.takes[0]} as {result.action.name}")
        _save(args.output)
    except EmocaError as exc:
        print(f"error [{exc.code}]: {exc.message}\nhint: {exc.hint}", file=sys.stderr, flush=True)
        return 1
    return 0


def register() -> None:
    global _HANDLE
    if _HANDLE is None:  # register_cli_command: Blender 4.2+, the extension's minimum
        _HANDLE = bpy.utils.register_cli_command("emoca", main)


def unregister() -> None:
    global _HANDLE
    if _HANDLE is not None:
        bpy.utils.unregister_cli_command(_HANDLE)
        _HANDLE = None
