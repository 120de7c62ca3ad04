"""`python -m backend likeness TAKE [VIDEO] [--identity] [--texture] [--detail] [-o DIR]`: the performer's
likeness from a take and its footage (docs/likeness.md): the identity file, the texture and its coverage, the
detail displacement sequence, and the sidecar ``NAME.likeness.json`` beside the take that says where they are.

With none of ``--identity``/``--texture``/``--detail``, the identity and (with VIDEO) the texture are made.
``--identity-from TAKE`` (repeatable) adds takes of the same performer to the identity. ``--progress json``
prints protocol ``progress``/``warning``/``result`` events on stdout (what the add-on reads).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from backend.likeness.run import LikenessOptions, likeness
from emoca_contract import protocol
from emoca_contract.errors import EmocaError

JOB_ID = "likeness"
MAX_TEXELS = 4096


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("take", help="the take file (NAME.npz)")
    p.add_argument("video", nargs="?", help="the footage the take was captured from (needed for --texture)")
    p.add_argument("--identity", action="store_true", help="the performer's identity (NAME_identity.npz)")
    p.add_argument("--texture", action="store_true", help="a texture from the footage (NAME_albedo.png)")
    p.add_argument("--detail", action="store_true", help="EMOCA's detail displacement maps (NAME_detail/%%06d.png)")
    p.add_argument("--identity-from", action="append", default=[], metavar="TAKE",
                   help="another take of the same performer to fit the identity over (repeatable)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, help="folder for the files (default: the take's folder)")
    p.add_argument("--flame", help="FLAME generic_model.pkl (default: the installed one; FLAME takes)")
    p.add_argument("--model", help="EMOCA model folder for --detail (default: the installed one)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--texels", type=int, default=512, help="texture texels per UV tile side (default 512)")
    p.add_argument("--every", type=int, default=1, help="use every n-th frame for the texture (default 1: all)")
    p.add_argument("--focal", type=float, help="the footage's focal length in pixels, when known (open takes)")
    p.add_argument("--no-delight", action="store_true", help="keep the footage's shading in the texture")
    p.add_argument("--progress", default="text", choices=["json", "text", "none"])


def likeness_options(fields: dict[str, Any]) -> LikenessOptions:
    """LikenessOptions from the command's or a protocol request's fields, checked (EmocaError 'config_invalid')."""
    wanted = {k: bool(fields.get(k)) for k in ("identity", "texture", "detail")}
    if not any(wanted.values()):
        wanted = {"identity": True, "texture": fields.get("video") is not None, "detail": False}
    texels = int(fields.get("texels") or 512)
    every = int(fields.get("frames") or 1)
    focal = fields.get("focal")
    if not 64 <= texels <= MAX_TEXELS:
        raise EmocaError("config_invalid", f"texels is {texels}: expected 64 to {MAX_TEXELS}")
    if every < 1:
        raise EmocaError("config_invalid", f"every is {every}: expected 1 or more (every n-th frame)")
    if focal is not None and not float(focal) > 0:
        raise EmocaError("config_invalid", f"focal is {focal}: expected a focal length in pixels (> 0)")
    return LikenessOptions(
        **wanted,
        identity_takes=tuple(str(t) for t in fields.get("identity_from") or ()),
        flame=fields.get("flame"),
        model=fields.get("model"),
        device=str(fields.get("device") or "auto"),
        texels=texels,
        frames=every,
        focal=float(focal) if focal is not None else None,
        delight=not fields.get("no_delight", False),
    )


def _emit(msg: dict) -> None:
    sys.stdout.write(protocol.encode(msg))
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    fields = {**vars(args), "frames": args.every}
    options = likeness_options(fields)
    mode = args.progress

    def progress(done: int, total: int, stage: str) -> None:
        if mode == "json":
            _emit(protocol.progress(JOB_ID, done, total, stage))
        elif mode == "text":
            print(f"\r{stage:9s} {done}/{total}   ", end="", file=sys.stderr, flush=True)

    def warn(message: str) -> None:
        if mode == "json":
            _emit(protocol.make("warning", id=JOB_ID, message=message))
        elif mode == "text":
            print(f"\nwarning: {message}", file=sys.stderr)

    cancel = threading.Event()
    try:
        result = likeness(args.take, args.video, args.output, options, progress, cancel, warn)
    except KeyboardInterrupt:
        cancel.set()
        raise EmocaError("cancelled", "likeness interrupted") from None
    if mode == "json":
        files = result.pop("files")
        _emit(protocol.make("result", id=JOB_ID, files=files, **result))
    else:
        if mode == "text":
            print(file=sys.stderr)
        for f in [*result["files"], result["sidecar"]]:
            print(f)
    return 0
