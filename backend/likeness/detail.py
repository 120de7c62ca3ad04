"""EMOCA's detail displacement per frame (docs/likeness.md "Detail"): 16-bit PNGs in the FLAME UV layout.

The detail decoder (backend.models.detail, through ``FaceReconstructor.decode_detail``) turns a frame's jaw pose,
expression and 128-number detail code (a take captured with ``--detail``) into a 256x256 displacement along the
surface normal, in metres, in the UV layout of FLAME's ``head_template.obj`` (image row 0 is v = 1, like every
UV image here). As DECA and EMOCA use it, the map is the decoder's output times the face-and-eye mask
(``FLAME/mask/uv_face_eye_mask.png``) plus the fixed displacement
(``FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy``) when the user's FLAME assets have them
(the sidecar says which were applied). The rows' expression is the take's (smoothed) one, what the rig shows;
rows without a face get a flat map.

Encoding: ``value = round((metres / SCALE + MIDLEVEL) * 65535)`` in a 16-bit grey PNG (clipped to the range, which
holds the decoder's +-1 cm and the fixed map's +-1.6 mm), so a displacement node with midlevel ``MIDLEVEL`` and
scale ``SCALE`` reads metres back: ``metres = (value / 65535 - MIDLEVEL) * SCALE`` (one step is
SCALE / 65535, 0.38 micrometres; ``decode(encode(d))`` is within half a step of ``d`` inside the range). Files are
named by the take's ``frame`` column: ``NAME_detail/%06d.png``; the PNGs are written by :func:`png16` (zlib, no
image library), so that this module needs numpy and the stdlib only.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.take import Take

SCALE = 0.025  # metres over the full 16-bit range
MIDLEVEL = 0.5
UV_SIZE = 256
PATTERN = "%06d.png"


def encode(displacement: np.ndarray) -> np.ndarray:
    """Metres (..., H, W) -> 16-bit values (module docstring)."""
    value = (np.asarray(displacement, np.float64) / SCALE + MIDLEVEL) * 65535
    return np.clip(np.rint(value), 0, 65535).astype(np.uint16)


def decode(values: np.ndarray) -> np.ndarray:
    """16-bit values -> metres (the inverse of :func:`encode`, to its precision of SCALE / 65535)."""
    return (np.asarray(values, np.float64) / 65535 - MIDLEVEL) * SCALE


def flame_masks(flame: str | os.PathLike | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The face-and-eye mask (256, 256) in [0, 1] and the fixed displacement (256, 256) metres from the official
    layout around ``generic_model.pkl`` (``FLAME/geometry/``): each None when absent."""
    if flame is None:
        return None, None
    geometry = Path(flame).parent
    mask_path = geometry.parent / "mask" / "uv_face_eye_mask.png"
    fixed_path = geometry / "fixed_uv_displacements" / "fixed_displacement_256.npy"
    mask = fixed = None
    if mask_path.is_file():
        import cv2

        image = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if image is not None:
            grey = image if image.ndim == 2 else image[..., 2 if image.shape[2] >= 3 else 0]  # cv2: BGR(A); red
            mask = cv2.resize(grey, (UV_SIZE, UV_SIZE), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    if fixed_path.is_file():
        arr = np.load(fixed_path, allow_pickle=False)
        if arr.shape == (UV_SIZE, UV_SIZE):
            fixed = arr.astype(np.float64)
    return mask, fixed


def check_detail_take(take: Take) -> None:
    """EmocaError unless ``take`` is a FLAME take captured with detail codes."""
    if take.kind != "flame":
        raise EmocaError("config_invalid", f"{take.path}: detail maps need an EMOCA (FLAME) take; this one is open",
                         "Capture with an EMOCA model and --detail.")  # fmt: skip
    if "detail" not in take:
        raise EmocaError("config_invalid", f"{take.path}: the take has no detail codes",
                         "Capture it again with --detail (an EMOCA model with the detail branch).")  # fmt: skip


def detail_maps(rec, take: Take, rows: np.ndarray) -> np.ndarray:
    """The decoder's displacement (K, 256, 256) metres for ``rows`` of a detail take (``rec``: a
    FaceReconstructor whose network has the detail decoder)."""
    pose = np.concatenate([take["global_pose"][rows], take["jaw_pose"][rows]], 1)
    codes = {"pose": pose, "exp": take["exp"][rows], "detail": take["detail"][rows]}
    return rec.decode_detail(codes).cpu().numpy()[:, 0].astype(np.float64)


def png16(values: np.ndarray) -> bytes:
    """A (H, W) uint16 image as the bytes of a 16-bit greyscale PNG (big-endian samples, no filter)."""
    h, w = values.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.asarray(values, ">u2").view(np.uint8).reshape(h, 2 * w)], 1)
    header = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)  # 16 bits, greyscale, deflate, no filter, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_map(path: Path, displacement: np.ndarray) -> None:
    """One map (H, W) metres as a 16-bit grey PNG (atomic: ``NAME.partial.png`` then rename)."""
    tmp = path.with_name(path.stem + ".partial.png")
    tmp.write_bytes(png16(encode(displacement)))
    os.replace(tmp, path)


def detail_section(take: Take, folder_name: str, mask: bool, fixed: bool, model: str) -> dict:
    """The sidecar's ``detail`` section for a sequence of ``take``'s rows in the folder ``folder_name`` (beside
    the sidecar); ``mask``/``fixed``: whether the face-and-eye mask and the fixed displacement were applied;
    ``model``: what made the maps."""
    return {
        "pattern": f"{folder_name}/{PATTERN}",
        "frames": [int(f) for f in take["frame"]],
        "valid": [bool(v) for v in take["valid"]],
        "size": [UV_SIZE, UV_SIZE],
        "bits": 16,
        "scale": SCALE,
        "midlevel": MIDLEVEL,
        "units": "m",
        "space": "along the surface normal, FLAME UV layout (head_template.obj), row 0 = v 1",
        "face_eye_mask": mask,
        "fixed_displacement": fixed,
        "model": model,
    }


def batches(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def write_detail_sequence(rec, take: Take, folder: Path, flame: str | os.PathLike | None = None, batch: int = 16,
                          check: Callable[[int], None] | None = None) -> dict:  # fmt: skip
    """Write every row's map into ``folder`` (``%06d.png`` by the take's frame column); returns the sidecar's
    ``detail`` section (pattern relative to the folder's parent, frames, encoding, what was applied)."""
    check_detail_take(take)
    if getattr(rec.net, "D_detail", None) is None:
        raise EmocaError("config_invalid", "the EMOCA model has no detail decoder",
                         "Use an EMOCA model with its detail stage (EMOCA_v2_lr_mse_20, ...).")  # fmt: skip
    mask, fixed = flame_masks(flame)
    folder.mkdir(parents=True, exist_ok=True)
    valid = take["valid"]
    frames = take["frame"]
    flat = np.zeros((UV_SIZE, UV_SIZE))
    done = 0
    for rows in batches(take.n_frames, batch):
        ok = rows[valid[rows]]
        maps = dict(zip(ok.tolist(), detail_maps(rec, take, ok))) if len(ok) else {}
        for r in rows.tolist():
            d = maps.get(r, flat)
            if r in maps:
                d = d * mask if mask is not None else d
                d = d + fixed if fixed is not None else d
            write_map(folder / (PATTERN % int(frames[r])), d)
        done += len(rows)
        if check is not None:
            check(done)
    return detail_section(take, folder.name, mask is not None, fixed is not None, str(rec.info.get("name", "")))
