"""``blender -c emoca ...``: command-line commands (registered with ``bpy.utils.register_cli_command``).

    blender -c emoca capture FOOTAGE --output scene.blend [--rig RIG.npz] [--takes DIR] [options]
    blender -c emoca capture A.mp4 B.mp4 shots/ ... --output-dir DIR [--one-blend] [--jobs N] [--ray [ADDRESS]]
    blender -c emoca import-rig RIG.npz --output scene.blend
    blender -c emoca apply TAKE.npz --blend scene.blend [--rig-object NAME | --rig RIG.npz] --output out.blend
    blender -c emoca likeness TAKE [VIDEO] --blend scene.blend [--rig-object NAME] [--detail] --output out.blend
    blender -c emoca retarget TAKE --blend scene.blend --target NAME [--preset JSON] --output out.blend

The command runs before any .blend is loaded; ``--blend`` opens one first. Exit status 0 on success, 1 on a
failure (the message and hint go to stderr; a batch: when any clip failed, after the others were saved). A batch
(``--output-dir``) writes the takes to ``DIR/takes/`` and each clip's .blend to ``DIR/<clip>.blend`` (or, with
``--one-blend``, every clip as its own Action in one file: ``--output``, default ``DIR/batch.blend``). See
docs/headless.md and docs/capture.md.
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
from .retarget import command as retarget_command
from .rig_parts import find_rig

_HANDLE = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blender -c emoca", description="EMOCA for Blender, headless")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("capture", help="capture footage and save a .blend with the keyed rig")
    p.add_argument("footage", nargs="+", help="a clip; or several, folders, globs, a manifest with --output-dir")
    p.add_argument("--output", help="the .blend to write (a batch with --one-blend: that one file)")
    p.add_argument("--output-dir", help="a batch: the folder of the takes and of each clip's .blend")
    p.add_argument("--one-blend", action="store_true", help="a batch: every clip as its own Action in one .blend")
    p.add_argument("--jobs", type=int, default=None, help="a batch: the backend's worker processes")
    p.add_argument("--overwrite", action="store_true", help="a batch: capture clips whose takes are complete again")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS", help="a batch on Ray")
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
    p = sub.add_parser("likeness", help="make a take's likeness and put it on a rig (docs/likeness.md)")
    p.add_argument("take")
    p.add_argument("video", nargs="?", help="the take's footage, for the texture (default: the take's own)")
    p.add_argument("--output", required=True)
    p.add_argument("--blend", help="open this .blend first")
    p.add_argument("--rig-object", help="the rig armature's name (default: the only rig in the file)")
    p.add_argument("--rig", help="build this rig file first instead")
    p.add_argument("--no-identity", dest="identity", action="store_false", help="leave the rig's identity")
    p.add_argument("--no-texture", dest="texture", action="store_false", help="no texture")
    p.add_argument("--detail", action="store_true", help="the detail displacement maps (FLAME, --detail takes)")
    p.add_argument("--show-detail", action="store_true", help="tick the rig mesh's Detail checkbox")
    p.add_argument("--identity-from", help="another take of the performer whose likeness identity to bake")
    p.add_argument("--existing", action="store_true", help="use the likeness files beside the take (no backend)")
    p.add_argument("--python", help="the backend's interpreter (default: preferences / $EMOCA_BACKEND_PYTHON)")
    p.add_argument("--flame", help="FLAME model file")
    p.add_argument("--model", help="EMOCA model folder (--detail)")
    p.add_argument("--device", default=None)
    p.add_argument("--texels", type=int, default=None, help="texture texels per UV tile side")
    p.add_argument("--every", type=int, default=None, help="use every n-th frame for the texture")
    retarget_command.configure(sub)
    return parser


def likeness(args: argparse.Namespace) -> None:
    """``likeness TAKE [VIDEO]``: the likeness made by the backend (or, with ``--existing``, its files) on the rig."""
    _open(args.blend)
    rig = api.import_rig(args.rig) if args.rig else _find_rig(args.rig_object)
    wanted = {"identity": args.identity, "texture": args.texture, "detail": args.detail,
              "identity_from": args.identity_from, "show_detail": args.show_detail}  # fmt: skip
    if args.existing:
        result = api.use_likeness(rig, args.take, **wanted)
    else:
        extra = {"flame": args.flame, "model": args.model, "device": args.device, "texels": args.texels,
                 "frames": args.every}  # fmt: skip
        result = api.likeness(rig, args.take, args.video, python=args.python, **wanted,
                              **{k: v for k, v in extra.items() if v is not None})  # fmt: skip
    made = [f"identity key {result.identity_key!r}"] if result.identity_key else []
    made += [f"texture on {', '.join(result.materials)}"] if result.materials else []
    made += [f"detail maps {result.detail_image!r}"] if result.detail_image else []
    print_line(f"likeness of {Path(args.take).name} on {result.rig.name}: {'; '.join(made) or 'nothing'}")


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
        elif args.command == "likeness":
            likeness(args)
        elif args.command == "retarget":
            _open(args.blend)
            retarget_command.run(args)
        elif args.command == "capture" and args.output_dir:
            return capture_batch(args)
        elif args.command == "capture":
            if len(args.footage) != 1 or not args.output:
                raise EmocaError(
                    "config_invalid",
                    f"capture of {len(args.footage)} clips without --output-dir, or without --output",
                    "One clip: --output scene.blend. Several: --output-dir DIR (each clip its own .blend).",
                )
            _open(args.blend)
            rig = args.rig or (_find_rig(args.rig_object) if args.blend else None)
            takes = args.takes or str(Path(args.output).resolve().parent / (Path(args.output).stem + "_takes"))
            opts = {k: getattr(args, k) for k in ("model", "device", "face", "smooth", "frames")}
            apply_opts = ApplyOptions.from_object(args).as_dict()
            result = api.capture(
                args.footage[0], rig=rig, output=takes, python=args.python, flame=args.flame, **opts, **apply_opts
            )
            print_line(f"captured {len(result.takes)} take(s); applied {result.takes[0]} as {result.action.name}")
        _save(args.output)
    except EmocaError as exc:
        print(f"error [{exc.code}]: {exc.message}\nhint: {exc.hint}", file=sys.stderr, flush=True)
        return 1
    return 0


def capture_batch(args: argparse.Namespace) -> int:
    """``capture ... --output-dir DIR``: every clip captured in one backend batch, each applied into its own .blend
    (or its own Action in one .blend); 1 when any clip failed (after the others were saved), else 0."""
    one_file = args.output or str(Path(args.output_dir) / "batch.blend")
    if args.one_blend:
        _open(args.blend)
    rig = args.rig or (_find_rig(args.rig_object) if args.blend and args.one_blend else None)
    opts = {k: getattr(args, k) for k in ("model", "device", "face", "smooth", "frames")}
    result = api.capture_batch(
        args.footage, args.output_dir, rig=rig, python=args.python, flame=args.flame, one_blend=args.one_blend,
        blend=None if args.one_blend else args.blend, jobs=args.jobs, overwrite=args.overwrite, ray=args.ray,
        **opts, **ApplyOptions.from_object(args).as_dict(),
    )  # fmt: skip
    for path in result.blends:
        print_line(f"saved {path}")
    if args.one_blend:
        _save(one_file)
    for clip in result.failed:
        error = clip.get("error") or {}
        print(f"error [{error.get('code')}] {clip.get('name')}: {error.get('message')}", file=sys.stderr, flush=True)
    n_clips = len(result.report.get("clips", []))
    print_line(f"applied {len(result.actions)} take(s) of {n_clips} clip(s); {len(result.failed)} failed")
    return 1 if result.failed else 0


def register() -> None:
    global _HANDLE
    if _HANDLE is None:  # register_cli_command: Blender 4.2+, the extension's minimum
        _HANDLE = bpy.utils.register_cli_command("emoca", main)


def unregister() -> None:
    global _HANDLE
    if _HANDLE is not None:
        bpy.utils.unregister_cli_command(_HANDLE)
        _HANDLE = None
