"""``blender -c emoca retarget``: the command's arguments and its run (registered by ``emoca_blender.cli``).

    blender -c emoca retarget TAKE --blend scene.blend --target NAME [--preset JSON] [--save-preset JSON]
        [--head-bone B] [--jaw-bone B] [--armature A] [--head-axes X,Y,Z] ... [options] --output out.blend
        [--method landmarks --detect-landmarks [--front -Y] [--python BACKEND_PYTHON]]

TAKE is a take (.npz) or a Live Link Face CSV (.csv). Without ``--preset`` the channels are matched to the
character's shape keys by name; the bone flags set (or, over a preset, change) the bone settings.
``--detect-landmarks`` first finds the character's 68 face landmarks (the backend's detector on a headless render,
as the panel's Detect Landmarks does) for ``--method landmarks``. The report goes to the console; the caller saves
the .blend.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

import bpy

from emoca_contract.errors import EmocaError

from ..progress import print_line
from .landmarks import FRONTS, DetectOptions, detect_landmarks
from .mapping import BoneSettings, save_preset
from .options import RetargetOptions, add_arguments
from .run import RetargetResult, retarget
from .write import target_mesh

BONE_FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in fields(BoneSettings)}


def configure(sub) -> None:
    """Add the ``retarget`` subcommand to the ``blender -c emoca`` subparsers ``sub``."""
    p = sub.add_parser("retarget", help="retarget a take (or Live Link CSV) onto any character and save a .blend")
    p.add_argument("take", help="a take (.npz) or a Live Link Face CSV (.csv)")
    p.add_argument("--output", required=True, help="the .blend to write")
    p.add_argument("--blend", help="open this .blend first (the character is in it)")
    p.add_argument("--target", required=True, help="the character's mesh object (with the shape keys)")
    p.add_argument("--preset", help="a mapping preset (.json); default: match the channels to the keys by name")
    p.add_argument("--save-preset", help="also write the mapping used as a preset (.json)")
    for name, flag in BONE_FLAGS.items():
        kind = float if isinstance(getattr(BoneSettings(), name), float) else str
        p.add_argument(flag, dest=name, type=kind, default=None, help=f"bone setting {name} (docs/retarget.md)")
    p.add_argument("--detect-landmarks", action="store_true",
                   help="find the face landmarks first (for --method landmarks; needs the backend)")  # fmt: skip
    p.add_argument("--front", default="-Y", choices=sorted(FRONTS), help="the world direction the face looks")
    p.add_argument("--python", help="the backend's interpreter (default: preferences / $EMOCA_BACKEND_PYTHON)")
    add_arguments(p)


def run(args: argparse.Namespace) -> RetargetResult:
    """Retarget as the arguments say (the .blend is open); print the report."""
    obj = bpy.data.objects.get(args.target)
    if obj is None:
        raise EmocaError("config_invalid", f"no object named {args.target!r} in the file",
                         "Name the character's mesh object with --target.")  # fmt: skip
    mesh = target_mesh(obj)
    if args.detect_landmarks:
        detect_landmarks(mesh, DetectOptions(front=args.front), python=args.python, empties=False)
        print_line(f"found the 68 face landmarks of {mesh.name}")
    bones: dict[str, Any] = {k: getattr(args, k) for k in BONE_FLAGS if getattr(args, k) is not None}
    result = retarget(mesh, args.take, args.preset or None, RetargetOptions.from_object(args), **bones)
    for line in result.report:
        print_line(line)
    if args.save_preset:
        print_line(f"saved the mapping to {save_preset(result.mapping, args.save_preset)}")
    name = result.action.name if result.action is not None else "no Action"
    print_line(f"retargeted {result.n_frames} frames of {args.take} onto {mesh.name} as {name}")
    return result
