"""``python -m backend encode IMAGE... -o OUT.npz``: reconstruct the faces in still images.

One record per face: with ``--crop auto`` faces are detected (mediapipe by default) and cropped exactly as the
official image demo (68-point box x1.1, scale 1.25, 224 px, bilinear); an image with no face is used whole (the
official fallback) and marked ``detected = False``. With ``--crop none`` every image is taken as an aligned crop
(resized to 224x224 when needed, which is reported).

Output arrays (N records): shape (N,100), tex (N,50), exp (N,50), pose (N,6) [global|jaw], cam (N,3),
light (N,9,3), detail (N,128), vertices (N,V,3) model space, landmarks2d (N,68,2) normalised crop coords,
landmarks3d (N,68,3) model space, landmarks (N,68,2) image pixels, crop (N,3,3) crop pixels -> image pixels,
image_index (N,), face_index (N,), detected (N,) bool, [valence (N,), arousal (N,), expression (N,C)], and
``meta`` (JSON string: images, model, crop mode, notes, emotion classes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from backend import __version__
from backend.capture.options import PRECISIONS
from backend.flame.camera import CROP_SIZE, crop_to_frame
from backend.footage.crop import face_crop, invert
from emoca_contract.errors import EmocaError

BATCH = 16


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files (png, jpg, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .npz")
    parser.add_argument("--model", help="EMOCA model folder or deca_model.tar (default: installed assets)")
    parser.add_argument("--flame", help="FLAME generic_model.pkl (default: installed assets)")
    parser.add_argument("--landmarks", help="landmark_embedding.npy (default: beside the FLAME file)")
    parser.add_argument("--emotion", help="emotion network folder, or 'fer' for the bundled 7-class network")
    parser.add_argument(
        "--crop",
        choices=("auto", "none"),
        default="auto",
        help="auto: detect and crop faces; none: each image is an aligned 224x224 crop",
    )
    parser.add_argument("--detector", default="auto", help="auto | mediapipe | fan (with --crop auto)")
    parser.add_argument("--max-faces", type=int, default=4, help="most faces per image (--crop auto)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default: the exact path), bf16 (autocast: faster where the CPU has native bf16), auto",
    )
    parser.add_argument(
        "--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint of an EMOCA model folder"
    )


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; works with any characters in the path."""
    import cv2

    if not path.is_file():
        raise EmocaError("input_missing", f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise EmocaError("input_corrupt", f"{path} could not be decoded as an image", "Use a PNG or JPEG file.")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def whole_image_crop(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(crop 224x224x3, crop->image (3,3), resized?). Pixel-corner convention: image = crop * (W/224, H/224)."""
    import cv2

    h, w = image.shape[:2]
    resized = (h, w) != (CROP_SIZE, CROP_SIZE)
    crop = cv2.resize(image, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA) if resized else image
    T = np.diag([w / CROP_SIZE, h / CROP_SIZE, 1.0])
    return np.ascontiguousarray(crop), T, resized


def detected_faces(image: np.ndarray, detections: list, max_faces: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop (224, 224, 3) uint8, crop -> image (3, 3)) for the ``max_faces`` largest detections, cropped with
    the one recipe (backend.footage.crop.face_crop on the 68-point subset, as capture and training do)."""
    faces = []
    for det in sorted(detections, key=lambda d: -d.area)[:max_faces]:
        crop, tform = face_crop(image, det.landmarks68(), "kpt68")
        faces.append((crop, invert(tform)))
    return faces


def collect_crops(images: list[Path], mode: str, detector_name: str, max_faces: int, notes: list[str]) -> list[dict]:
    """One dict per face: crop (224,224,3) uint8, crop (3,3) crop->image, image_index, face_index, detected."""
    records: list[dict] = []
    detector = None
    if mode == "auto":
        from backend.footage.detect import make_detector

        detector = make_detector(detector_name, max_faces=max_faces, tracking=False)
    try:
        for i, path in enumerate(images):
            image = read_image(path)
            faces = []
            if detector is not None:
                faces = [(crop, T, True) for crop, T in detected_faces(image, detector.detect(image), max_faces)]
                if not faces:
                    notes.append(f"{path.name}: no face found, the whole image was used")
            if not faces:
                crop, T, resized = whole_image_crop(image)
                if resized:
                    h, w = image.shape[:2]
                    notes.append(
                        f"{path.name}: resized {w}x{h} -> {CROP_SIZE}x{CROP_SIZE}"
                        + (" (aspect ratio not kept)" if w != h else "")
                    )
                faces.append((crop, T, mode == "none"))
            for k, (crop, T, detected) in enumerate(faces):
                records.append({"crop_image": crop, "crop": T, "image_index": i, "face_index": k, "detected": detected})
    finally:
        if detector is not None:
            detector.close()
    return records


def _emotion(spec: str | None, device: str):
    if not spec:
        return None
    from backend.models.emotion import load_emotion_model

    return load_emotion_model(None if spec.lower() == "fer" else spec, device=device)


def run(args: argparse.Namespace) -> int:
    import torch

    from backend.assets import resolve_capture
    from backend.models.reconstructor import FaceReconstructor

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = resolve_capture(args.model, args.flame)
        rec = FaceReconstructor.from_paths(
            found.model,
            found.flame,
            device=args.device,
            landmarks=args.landmarks or found.landmarks,
            mediapipe=found.mediapipe,
            checkpoint_mode=args.checkpoint,
            precision=args.precision,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    emotion = _emotion(args.emotion, str(rec.device))
    records = collect_crops(list(args.images), args.crop, args.detector, args.max_faces, notes)
    crops = np.stack([r["crop_image"] for r in records])
    outputs: dict[str, list] = {}
    for start in range(0, len(crops), BATCH):
        batch = crops[start : start + BATCH]
        res = rec.reconstruct(batch, as_numpy=False)
        if emotion is not None:
            x = rec.to_tensor(batch)
            codes = {k: res[k] for k in ("shape", "exp", "pose", "cam", "tex", "light", "detail") if k in res}
            res.update(emotion.predict(x, codes=codes))
        for k, v in res.items():
            outputs.setdefault(k, []).append(v.detach().float().cpu().numpy())
    arrays = {k: np.concatenate(v).astype(np.float32) for k, v in outputs.items()}
    T = np.stack([r["crop"] for r in records]).astype(np.float32)
    arrays["crop"] = T
    if "landmarks2d" in arrays:
        arrays["landmarks"] = crop_to_frame(arrays["landmarks2d"], T).astype(np.float32)
    arrays["image_index"] = np.array([r["image_index"] for r in records], np.int64)
    arrays["face_index"] = np.array([r["face_index"] for r in records], np.int64)
    arrays["detected"] = np.array([r["detected"] for r in records], bool)
    meta = {
        "format": "emoca-encode",
        "version": 1,
        "backend_version": __version__,
        "images": [str(p) for p in args.images],
        "crop_mode": args.crop,
        "notes": notes,
        "model": {
            k: rec.info.get(k)
            for k in ("name", "kind", "trained", "checkpoint", "flame", "device", "dtype", "precision")
        },
        "warnings": list(rec.info.get("warnings", [])),
        "light": "(N, 9, 3): 9 SH bands x RGB",
        "coordinates": "landmarks2d/3d: normalised crop coords [-1,1], +y down; landmarks: image pixels; "
        "crop: crop pixels -> image pixels",
    }
    if emotion is not None:
        meta["emotion"] = {
            "model": getattr(emotion, "name", ""),
            "classes": list(getattr(emotion, "classes", [])),
            "valence_arousal": getattr(emotion, "va_source", ""),
        }
    arrays["meta"] = np.array(json.dumps(meta))
    write_npz(args.output, arrays)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    n_img = len(set(arrays["image_index"].tolist()))
    print(f"wrote {len(records)} face(s) from {n_img} image(s) to {args.output}", file=sys.stderr)
    del torch
    return 0


def write_npz(path: Path, arrays: dict) -> None:
    """Atomic: a finished file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
