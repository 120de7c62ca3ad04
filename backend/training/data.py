"""Training data: folders of images/videos preprocessed once into a cache, AffectNet-style annotations,
the official coarse-stage augmentation, and rendered synthetic-head data for sanity training.

Every sample is a dict of tensors:
  image (3, S, S) float [0,1]; landmarks68 (68, 2) normalised crop coords (x right, y down, [-1, 1]);
  landmarks_mp (478, 2) normalised (zeros + lmk_mp_valid False when the detector gave no mediapipe points);
  valence, arousal (float, NaN when unknown), expression (int64, -1 when unknown);
  synthetic samples add exp (n_exp), shape, pose (6), cam (3), light (9, 3): the known parameters.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emoca_contract.errors import EmocaError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg"})
CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------- augmentation
@dataclass
class AugmentConfig:
    """The official coarse augmentation (imgaug in the original; emoca.md §5.2)."""

    scale: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0
    translate: float = 0.05  # fraction of the image size
    jpeg_quality: tuple[int, int] = (50, 90)
    noise_std: tuple[float, float] = (0.0, 10.0)  # additive Gaussian noise, 0..255 scale
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    sharpen_alpha: tuple[float, float] = (0.0, 0.5)


def augment(
    image: np.ndarray, points: list[np.ndarray], rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Affine (scale, rotation, translation about the centre) then OneOf(JPEG, noise, blur, sharpen, identity).

    image (S, S, 3) uint8; points: list of (K, 2) arrays in crop PIXELS (moved with the affine).
    Returns the new image and points.
    """
    import cv2

    cfg = cfg or AugmentConfig()
    h, w = image.shape[:2]
    s = rng.uniform(*cfg.scale)
    a = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
    tx, ty = rng.uniform(-cfg.translate, cfg.translate, 2) * (w, h)
    m = np.asarray(cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), a, s), np.float64)
    m[:, 2] += (tx, ty)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    pts = [p @ m[:, :2].T + m[:, 2] for p in points]
    choice = int(rng.integers(5))
    if choice == 0:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, enc = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1] if ok else out
    elif choice == 1:
        std = rng.uniform(*cfg.noise_std)
        out = np.clip(out + rng.normal(0, std, out.shape), 0, 255).astype(np.uint8)
    elif choice == 2:
        sigma = rng.uniform(*cfg.blur_sigma)
        if sigma > 1e-3:
            out = cv2.GaussianBlur(out, (0, 0), sigma)
    elif choice == 3:
        alpha = rng.uniform(*cfg.sharpen_alpha)
        k = np.array([[-1, -1, -1], [-1, 9, -1], [-1, -1, -1]], np.float32)  # imgaug's lightness-1 sharpen
        sharp = cv2.filter2D(out.astype(np.float32), -1, k)
        out = np.clip((1 - alpha) * out + alpha * sharp, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), pts


# ------------------------------------------------------------------------------------------- annotations
def read_affectnet_csv(path: Path) -> dict[str, dict]:
    """AffectNet-style CSV -> {file name (basename and relative path): {expression, valence, arousal}}.

    Columns (case-insensitive): subDirectory_filePath (or file/path/image), expression (AffectNet index:
    0 Neutral .. 7 Contempt; 8-10 None/Uncertain/Occluded are kept as -1 = unknown), valence, arousal.
    """
    out: dict[str, dict] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.lower(): c for c in (reader.fieldnames or [])}
        key = next((cols[c] for c in ("subdirectory_filepath", "file", "path", "image", "filename") if c in cols), None)
        if key is None:
            raise EmocaError(
                "input_unsupported",
                f"{path}: no file column (expected subDirectory_filePath, "
                f"file, path or image); found {reader.fieldnames}",
            )
        for row in reader:

            def num(name, default=math.nan, row=row):
                c = cols.get(name)
                try:
                    return float(row[c]) if c and row[c] not in ("", None) else default
                except ValueError:
                    return default

            expr = num("expression", -1)
            rec = {
                "expression": int(expr) if 0 <= expr <= 7 else -1,
                "valence": num("valence"),
                "arousal": num("arousal"),
            }
            rel = row[key].replace("\\", "/")
            out[rel] = rec
            out.setdefault(Path(rel).name, rec)
    return out


# ------------------------------------------------------------------------------------------- folder dataset
def _list_media(root: Path) -> list[Path]:
    from backend.footage.video import IMAGE_EXTENSIONS

    if root.is_file():
        return [root]
    files = [
        p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    ]
    return files


def _cache_key(files: list[Path], image_size: int, every: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}-{image_size}-{every}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def crop_sample(image: np.ndarray, detection, image_size: int) -> dict[str, np.ndarray]:
    """One training sample from one detection: the face crop (the one recipe, backend.footage.crop.face_crop on
    the 68-point subset, as capture and encode crop) and its landmarks moved into crop PIXELS.

    Returns crop (S, S, 3) uint8, landmarks68 (68, 2) float32, landmarks_mp (478, 2) float32 (zeros when the
    detector gave no mediapipe points), has_mp bool.
    """
    from backend.flame.camera import transform_points
    from backend.footage.crop import face_crop

    crop, tform = face_crop(image, detection.landmarks68(), "kpt68", out_size=image_size)
    has_mp = detection.kind == "mediapipe"
    mp = transform_points(detection.landmarks, tform) if has_mp else np.zeros((478, 2))
    return {
        "crop": crop,
        "landmarks68": transform_points(detection.landmarks68(), tform).astype(np.float32),
        "landmarks_mp": np.asarray(mp, np.float32),
        "has_mp": np.bool_(has_mp),
    }


def preprocess_folder(
    root: str | Path, cache_dir: str | Path, image_size: int = 224, video_every: int = 5, progress=None
) -> Path:
    """Detect, crop (the official recipe) and landmark every image and every ``video_every``-th video frame,
    ONCE: the result is ``cache_dir/<key>.npz`` (crops uint8 (N,S,S,3), landmarks68 / landmarks_mp in crop
    pixels, source names). A second call with unchanged files returns the same cache without work.
    """
    from backend.footage.detect import make_detector
    from backend.footage.video import open_footage

    root = Path(root)
    if not root.exists():
        raise EmocaError("input_missing", f"training data {root} does not exist")
    files = _list_media(root)
    if not files:
        raise EmocaError(
            "input_empty",
            f"{root} has no images or videos",
            "Put .jpg/.png images and/or .mp4/.mov videos in the folder.",
        )
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"faces-{_cache_key(files, image_size, video_every)}.npz"
    if path.exists():
        return path
    crops, l68, lmp, has_mp, names = [], [], [], [], []
    with make_detector("auto", max_faces=1, tracking=False) as det:
        for k, f in enumerate(files):
            is_video = f.suffix.lower() in VIDEO_EXTENSIONS
            footage = open_footage(f, frames=f"0::{video_every}" if is_video else None)
            for frame in footage:
                dets = det.detect(frame.image)
                if not dets:
                    continue
                sample = crop_sample(frame.image, max(dets, key=lambda x: x.area), image_size)
                crops.append(sample["crop"])
                l68.append(sample["landmarks68"])
                lmp.append(sample["landmarks_mp"])
                has_mp.append(bool(sample["has_mp"]))
                rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
                names.append(rel if not is_video else f"{rel}#{frame.index}")
            if progress is not None:
                progress(k + 1, len(files))
    if not crops:
        raise EmocaError("no_face", f"no face was found in any of the {len(files)} files under {root}")
    tmp = path.with_suffix(".partial.npz")
    np.savez(
        tmp,
        crops=np.stack(crops),
        landmarks68=np.stack(l68),
        landmarks_mp=np.stack(lmp),
        has_mp=np.array(has_mp),
        names=np.array(names),
        meta=json.dumps({"root": str(root)}),
    )
    tmp.replace(path)
    return path


class FaceFolderDataset(Dataset):
    """Faces from a folder of images and/or videos (cached by :func:`preprocess_folder`), with AffectNet-style
    annotations from any ``*.csv`` in the folder (or ``annotations=``) when present."""

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        image_size: int = 224,
        augment: bool = False,
        annotations: str | Path | None = None,
        seed: int = 0,
        video_every: int = 5,
    ):
        self.cache = preprocess_folder(root, cache_dir, image_size, video_every)
        z = np.load(self.cache, allow_pickle=False)
        self.crops = z["crops"]
        self.l68 = z["landmarks68"]
        self.lmp = z["landmarks_mp"]
        self.has_mp = z["has_mp"]
        self.names = [str(n) for n in z["names"]]
        self.size = image_size
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        csvs = [Path(annotations)] if annotations else sorted(Path(root).glob("*.csv")) if Path(root).is_dir() else []
        ann: dict[str, dict] = {}
        for c in csvs:
            ann.update(read_affectnet_csv(c))
        self.annotations = [ann.get(n.split("#")[0], ann.get(Path(n.split("#")[0]).name)) for n in self.names]

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> dict:
        from backend.flame.camera import crop_pixels_to_normalized

        img, l68, lmp = self.crops[i], self.l68[i], self.lmp[i]
        if self.augment:
            img, (l68, lmp) = augment(img, [l68, lmp], self.rng)
        # the documented mapping (backend.flame.camera): x = u * 2 / S - 1 on pixel-index crop pixels, the one
        # capture inverts when it reads the network's landmarks
        norm = lambda p: torch.from_numpy(crop_pixels_to_normalized(p.astype(np.float32), self.size))  # noqa: E731
        a = self.annotations[i] or {}
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0,
            "landmarks68": norm(l68),
            "landmarks_mp": norm(lmp),
            "lmk_mp_valid": torch.tensor(bool(self.has_mp[i])),
            "valence": torch.tensor(a.get("valence", math.nan), dtype=torch.float32),
            "arousal": torch.tensor(a.get("arousal", math.nan), dtype=torch.float32),
            "expression": torch.tensor(a.get("expression", -1), dtype=torch.long),
        }


# ------------------------------------------------------------------------------------------- synthetic data
def sample_synthetic_params(
    n: int, seed: int, n_exp: int = 50, exp_std: float = 1.0, n_active: int = 7
) -> dict[str, torch.Tensor]:
    """Random known parameters for the synthetic head: exp (n, n_exp) with the first ``n_active`` components
    ~ N(0, exp_std) (the meaningful ones), small head rotations (+-15 deg yaw, +-8 pitch, +-5 roll), jaw
    0..0.2 rad, cam s ~ 8.5 +- 0.5 with small offsets, and a white-ish random SH light."""
    g = torch.Generator().manual_seed(seed)
    exp = torch.zeros(n, n_exp)
    exp[:, :n_active] = torch.randn(n, n_active, generator=g) * exp_std
    pose = torch.zeros(n, 6)
    lim = torch.deg2rad(torch.tensor([8.0, 15.0, 5.0]))
    pose[:, :3] = (torch.rand(n, 3, generator=g) * 2 - 1) * lim
    pose[:, 3] = torch.rand(n, generator=g) * 0.2
    cam = torch.stack(
        [
            8.5 + (torch.rand(n, generator=g) - 0.5),
            (torch.rand(n, generator=g) - 0.5) * 0.02,
            (torch.rand(n, generator=g) - 0.5) * 0.02,
        ],
        1,
    )
    from backend.synthetic.render_clip import default_light

    light = default_light(n) * (0.9 + 0.2 * torch.rand(n, 1, 1, generator=g))
    return {"exp": exp, "pose": pose, "cam": cam, "light": light, "shape": torch.zeros(n, 100)}


class SyntheticHeadDataset(Dataset):
    """Renders of the synthetic test head (not FLAME) with known parameters, rendered once at construction.

    For sanity training only: the parameters are known, so the expression error of a trained encoder can be
    measured exactly. Landmarks are the projected 68 landmarks (normalised crop coords).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        image_size: int = 224,
        augment: bool = False,
        exp_std: float = 1.0,
        head_seed: int = 0,
    ):
        from backend.synthetic.render_clip import render_crops

        self.params = sample_synthetic_params(n, seed, exp_std=exp_std)
        images, lmks, mps = [], [], []
        for s in range(0, n, 64):
            sl = {k: v[s : s + 64] for k, v in self.params.items()}
            r = render_crops(sl, seed=head_seed, image_size=image_size, light=sl["light"])
            images.append(r["images"])
            lmks.append(r["landmarks2d"])
            # the head's vertices 0..467 are mediapipe's face-mesh points: exact v2 ground truth (irises: 0)
            mp = torch.zeros(len(r["images"]), 478, 2)
            mp[:, :468] = r["vertices"][:, :468, :2]
            mps.append(mp)
        self.images = (torch.cat(images) * 255 + 0.5).to(torch.uint8)  # like real data: 8-bit images
        self.l68 = torch.cat(lmks).float()
        self.lmp = torch.cat(mps).float()
        self.size = image_size
        self.augment = augment
        self.rng = np.random.default_rng(seed + 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        from backend.flame.camera import crop_pixels_to_normalized, normalized_to_crop_pixels

        img = self.images[i]
        l68 = self.l68[i]
        if self.augment:
            a, (p,) = augment(
                img.permute(1, 2, 0).numpy(), [normalized_to_crop_pixels(l68.numpy(), self.size)], self.rng
            )
            img = torch.from_numpy(a).permute(2, 0, 1)
            l68 = torch.from_numpy(crop_pixels_to_normalized(p, self.size)).float()
        out = {
            "image": img.float() / 255.0,
            "landmarks68": l68,
            "landmarks_mp": self.lmp[i] if not self.augment else torch.zeros(478, 2),
            "lmk_mp_valid": torch.tensor(not self.augment),
            "valence": torch.tensor(math.nan),
            "arousal": torch.tensor(math.nan),
            "expression": torch.tensor(-1),
        }
        if not self.augment:  # the known parameters hold only for the un-augmented render
            out.update({k: v[i] for k, v in self.params.items()})
        else:
            out["exp"] = self.params["exp"][i]
            out.update({k: v[i] for k, v in self.params.items() if k in ("shape", "light")})
        return out
