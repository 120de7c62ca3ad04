"""The EMOCA/DECA face crop (emoca.md 4.1), exactly: landmark box -> square -> similarity -> 224x224 bilinear.

The one crop recipe: capture (backend.capture.reader), still images (backend.app.encode) and training data
(backend.training.data) all crop through :func:`face_crop`, so the networks see at inference exactly the crops
they were trained on. The crop size and the crop-space conventions live in backend.flame.camera.

Coordinates: pixel-index convention (x = column, y = row, integer = pixel centre), as skimage's ``warp`` and
``estimate_transform`` use them; both frame and crop space use it, so ``crop_transform`` maps frame pixels to crop
pixels with the 224 px crop spanning 0..223 exactly as the official code. The take stores the inverse (crop ->
frame) as ``crop``.

Recipe:
1. box: min/max of the landmarks; ``size = ((w + h) / 2) * 1.1`` for 'kpt68' / 'fan' / 'mediapipe' points;
   for detector boxes ('bbox'): ``size = (w + h) / 2`` and the centre moves down by ``0.12 * size``.
2. square of side ``int(size * 1.25)`` around the centre; similarity (least squares, skimage
   ``estimate_transform('similarity')``) from its corners (top-left, bottom-left, top-right) to (0,0), (0,223),
   (223,0).
3. bilinear warp to 224x224 (order 1; cv2.warpAffine, which matches skimage.transform.warp within rounding).
"""

from __future__ import annotations

import numpy as np

from backend.flame.camera import CROP_SIZE

CROP_SCALE = 1.25
KPT_BOX_FACTOR = 1.1
BBOX_CENTER_SHIFT = 0.12


def box_from_landmarks(landmarks: np.ndarray, kind: str = "kpt68") -> tuple[np.ndarray, float]:
    """(center (2,), size) of the official crop box.

    landmarks: (K, 2) points for kind 'kpt68' / 'fan' / 'mediapipe' (the kpt68 rule on whatever points are
    given; pass the 68-point subset of a mediapipe detection, ``Detection.landmarks68()``, to reproduce the box the
    networks were trained on), or a box (x0, y0, x1, y1) / (2, 2) corners for kind 'bbox' (detector boxes).
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if kind == "bbox":
        left, top, right, bottom = pts.reshape(-1)[:4]
        size = ((right - left) + (bottom - top)) / 2.0
        center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0 + size * BBOX_CENTER_SHIFT])
        return center, float(size)
    if kind not in ("kpt68", "fan", "mediapipe"):
        raise ValueError(f"unknown box kind {kind!r} (use 'kpt68', 'fan', 'mediapipe' or 'bbox')")
    pts = pts.reshape(-1, pts.shape[-1])[:, :2]
    left, top = pts.min(axis=0)
    right, bottom = pts.max(axis=0)
    size = ((right - left) + (bottom - top)) / 2.0 * KPT_BOX_FACTOR
    center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    return center, float(size)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(3, 3) least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src -> dst.

    src, dst: (N, 2). Umeyama's closed form, the estimator behind skimage's ``estimate_transform('similarity')``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[-1] = -1.0
    r = u @ np.diag(e) @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * e).sum() / var_s if var_s > 0 else 1.0
    t = np.eye(3)
    t[:2, :2] = scale * r
    t[:2, 2] = mu_d - scale * r @ mu_s
    return t


def crop_transform(center: np.ndarray, size: float, scale: float = CROP_SCALE, out_size: int = CROP_SIZE) -> np.ndarray:
    """(3, 3) float64 similarity mapping FRAME pixels -> CROP pixels (the official ``tform``).

    The square's side is ``int(size * scale)``; its top-left, bottom-left and top-right corners go to
    (0, 0), (0, out_size-1), (out_size-1, 0).
    """
    side = int(size * scale)
    cx, cy = float(center[0]), float(center[1])
    src = np.array([[cx - side / 2, cy - side / 2], [cx - side / 2, cy + side / 2], [cx + side / 2, cy - side / 2]])
    dst = np.array([[0.0, 0.0], [0.0, out_size - 1.0], [out_size - 1.0, 0.0]])
    return estimate_similarity(src, dst)


def invert(tform: np.ndarray) -> np.ndarray:
    """Inverse of a (3, 3) transform (crop -> frame from frame -> crop: what the take stores as ``crop``)."""
    return np.linalg.inv(np.asarray(tform, np.float64))


def warp_crop(image: np.ndarray, tform: np.ndarray, out_size: int = CROP_SIZE, order: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 frame -> (out_size, out_size, 3) uint8 crop through ``tform`` (frame -> crop).

    order 1 = bilinear (the image demo). Matches skimage.transform.warp(order=1) to within rounding: cv2 quantises
    sub-pixel positions to 1/32 px, so |diff| is about 0.3 grey levels on average on a photo, under 1 on uniform
    noise (the worst case), and at most 255/32 (about 8) on any pixel; see tests/footage. order 3 = cv2
    bicubic, an approximation of the video demo's skimage order-3 spline. Outside the frame is black (skimage's
    mode='constant', cval=0).
    """
    import cv2

    flags = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}.get(order)
    if flags is None:
        raise ValueError(f"order must be 0, 1 or 3, not {order}")
    m = np.asarray(tform, np.float64)[:2]
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        m,
        (out_size, out_size),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0.0, 0.0, 0.0, 0.0),
    )


def crops_to_tensor(crops) -> np.ndarray:
    """(B, H, W, 3) uint8 crops (array or list) -> float32 (B, 3, H, W) in [0, 1] (no mean/std, emoca.md 4.1.4).
    numpy; use ``torch.from_numpy`` on the result."""
    arr = np.stack(list(crops)) if not isinstance(crops, np.ndarray) else crops
    if arr.ndim == 3:
        arr = arr[None]
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def face_crop(
    image: np.ndarray,
    landmarks: np.ndarray,
    kind: str = "kpt68",
    out_size: int = CROP_SIZE,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The crop recipe for one face: (crop (out_size, out_size, 3) uint8, frame -> crop transform (3, 3) float64).

    image (H, W, 3) uint8 frame; landmarks as :func:`box_from_landmarks` takes them (the 68-point subset of a
    detection, ``Detection.landmarks68()``, with kind 'kpt68', is what the networks were trained on). The take
    stores ``invert(transform)``.
    """
    center, size = box_from_landmarks(landmarks, kind)
    tform = crop_transform(center, size, CROP_SCALE, out_size)
    return warp_crop(image, tform, out_size, order), tform
