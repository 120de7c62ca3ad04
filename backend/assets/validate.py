"""Whether an installed file is the asset it claims to be: one validator per kind of file (numpy + stdlib here).

Conventions: a validator is ``(path, deep) -> (valid, message)`` with ``valid`` True, False (the message says what
was expected) or None (present, not validated). Checks are cheap by default: the FLAME file and the landmark
embeddings go through their real (numpy-only) loaders; model folders get their ``cfg.yaml`` read, the official
"best" checkpoint located and its header and pickled globals checked (``backend.pickles``' checkpoint rule,
without loading anything). ``deep`` builds each network and loads its weights strictly.

The checkpoint loaders need the backend's torch environment. ``assets status`` is documented to run without it
(e.g. under Blender's own Python): such files are then reported "present (not validated: ...)". Those loaders
are imported inside the validators, after that check, so that importing this module never imports torch.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
from collections.abc import Callable, Iterable
from importlib import util as importlib_util
from pathlib import Path

import numpy as np

from backend import pickles
from backend.assets.specs import AssetSpec
from backend.flame.io import load_flame
from backend.flame.landmarks import load_landmark_embedding, load_mediapipe_embedding
from emoca_contract.errors import EmocaError

Validation = tuple[bool | None, str]
PICKLE_PROTO = b"\x80"
ZIP_MAGIC = b"PK\x03\x04"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
CHUNK = 1 << 20
# the third-party packages the checkpoint checks need (the backend environment's torch side)
TORCH_SIDE = ("torch", "yaml")


def file_head(path: Path, n: int = 16) -> bytes:
    """The first ``n`` bytes of ``path``."""
    with open(path, "rb") as f:
        return f.read(n)


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def torch_side_missing() -> str | None:
    """Why the checkpoint loaders cannot run in this interpreter (None: they can)."""
    missing = [m for m in TORCH_SIDE if importlib_util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def _loader_failed(exc: BaseException) -> Validation:
    if isinstance(exc, EmocaError):
        return False, exc.message
    return False, f"{type(exc).__name__}: {exc}"


def torch_header_problem(path: Path) -> str | None:
    """None if ``path`` looks like a ``torch.save`` file (zip with data.pkl, or a legacy pickle), else why not."""
    head = file_head(path, 8)
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


def unsafe_torch_files(path: Path) -> list[tuple[str, list[str]]]:
    """(name, refused ``module.name`` globals) for every ``torch.save`` file at ``path`` (the file, or every file
    under the folder, links not followed; names relative to it) that references code the checkpoint rule refuses,
    whether or not a loader would ever pick it (a decoy 'last.ckpt' is still a file placed on the user's disk).
    Files that are not torch files, or are damaged without naming such code, are left to the validators."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    found = []
    for f in files:
        if torch_header_problem(f) is not None:
            continue
        try:
            unsafe = pickles.unsafe_checkpoint_globals(f)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile):
            continue
        if unsafe:
            found.append((f.relative_to(path).as_posix() if f != path else f.name, unsafe))
    return found


def torch_file_problem(path: Path) -> str | None:
    """None if ``path`` is a ``torch.save`` file that references only data (``backend.pickles``' checkpoint
    rule, checked by walking its pickle: nothing is loaded), else what is wrong with it."""
    bad = torch_header_problem(path)
    if bad:
        return bad
    try:
        unsafe = pickles.unsafe_checkpoint_globals(path)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        return f"truncated or corrupt torch file ({type(exc).__name__}: {exc})"
    if unsafe:
        return f"references code that is not plain data ({', '.join(unsafe)}); it will not be loaded"
    return None


def _v_flame_pkl(path: Path, deep: bool) -> Validation:
    head = file_head(path, 2)
    if head[:1] not in (PICKLE_PROTO, b"(", b"}"):
        return False, f"not a pickle file (starts with {head!r}); expected FLAME's generic_model.pkl"
    try:
        flame = load_flame(path, cache_dir=None)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the file is unusable
        return _loader_failed(exc)
    return True, f"valid: {flame.n_vertices} vertices, {flame.n_shape} shape + {flame.n_exp} expression components"


def _v_landmark_embedding(path: Path, deep: bool) -> Validation:
    if file_head(path, 6) != NPY_MAGIC:
        return False, "not a .npy file; expected DECA/EMOCA's landmark_embedding.npy"
    try:
        emb = load_landmark_embedding(path)
    except Exception as exc:  # noqa: BLE001
        return _loader_failed(exc)
    return True, f"valid: static 51 + dynamic contour + full 68 ({emb.convention})"


def _v_mediapipe_embedding(path: Path, deep: bool) -> Validation:
    if file_head(path, 4) != ZIP_MAGIC:
        return False, "not a .npz file; expected mediapipe_landmark_embedding.npz"
    try:
        load_mediapipe_embedding(path)
    except Exception as exc:  # noqa: BLE001
        return _loader_failed(exc)
    return True, "valid: 105-point mediapipe embedding"


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
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # noqa: BLE001
        return False, f"not a plain .npy array: {exc}"
    if arr.shape != (256, 256) or arr.dtype.kind != "f":
        return False, f"expected a 256x256 float array, found {arr.shape} {arr.dtype}"
    return True, "valid: 256x256 displacement map"


def _v_mask_png(path: Path, deep: bool) -> Validation:
    head = file_head(path, 24)
    if head[:8] != PNG_MAGIC or head[12:16] != b"IHDR":
        return False, "not a PNG image"
    w, h = struct.unpack(">II", head[16:24])
    if (w, h) != (256, 256):
        return False, f"expected a 256x256 mask, found {w}x{h}"
    return True, "valid: 256x256 PNG"


def _v_npz_file(path: Path, deep: bool) -> Validation:
    if file_head(path, 4) != ZIP_MAGIC:
        return False, "not a .npz file"
    return True, "valid: npz archive"


def _v_pickle_file(path: Path, deep: bool) -> Validation:
    if file_head(path, 1) != PICKLE_PROTO:
        return False, "not a pickle file"
    return True, "present (pickle header ok)"


def _cfg_sections(cfg: Path) -> set[str]:
    """Top-level keys of a YAML file."""
    import yaml

    with open(cfg, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return set(data) if isinstance(data, dict) else set()


def _checkpoint_search_dir(path: Path, sections: set[str], stages: tuple[str, ...]) -> Path:
    """Where the loader looks for the checkpoint: the last stage's (detail, else coarse) ``checkpoints/``."""
    for stage in reversed(stages):
        if stage in sections and (path / stage).is_dir():
            return path / stage / "checkpoints" if (path / stage / "checkpoints").is_dir() else path / stage
    return path


def _check_model_folder(path: Path, stages: Iterable[str]) -> tuple[Validation | None, Path | None]:
    """Shared cheap checks of a cfg.yaml + checkpoints folder: (failure or None, the checkpoint the loader takes).
    Both None: present, but this interpreter cannot run the checkpoint loaders."""
    if not path.is_dir():
        return (False, "expected a folder (cfg.yaml + checkpoints)"), None
    cfg = path / "cfg.yaml"
    if not cfg.is_file():
        return (False, "cfg.yaml is missing in the folder"), None
    unsafe = unsafe_torch_files(path)  # every checkpoint, not only the one a loader picks; needs no torch
    if unsafe:
        rel, names = unsafe[0]
        return (
            False,
            f"{rel} references code that is not plain data ({', '.join(names)}); it will not be loaded",
        ), None
    if torch_side_missing():
        return None, None
    from backend.models.loading import locate_checkpoint

    want = tuple(stages)
    search = path
    if want:
        try:
            sections = _cfg_sections(cfg)
        except Exception as exc:  # noqa: BLE001 - yaml errors
            return (False, f"cfg.yaml is not valid YAML: {exc}"), None
        if not sections.intersection(want):
            return (False, f"cfg.yaml has none of the sections {', '.join(want)}"), None
        search = _checkpoint_search_dir(path, sections, want)
    try:
        ckpt = Path(locate_checkpoint(search, mode="best"))
    except Exception as exc:  # noqa: BLE001
        return _loader_failed(exc), None
    bad = torch_file_problem(ckpt)
    if bad:
        return (False, f"{ckpt.relative_to(path)}: {bad}"), ckpt
    return None, ckpt


def _v_checkpoint_folder(path: Path, deep: bool, stages: tuple[str, ...], load: Callable[[Path], str]) -> Validation:
    """A cfg.yaml + checkpoints folder: the official 'best' checkpoint located and checked; with ``deep`` the real
    loader (``load(path)`` -> a label for the message) builds the network strictly."""
    fail, ckpt = _check_model_folder(path, stages)
    if fail:
        return fail
    if ckpt is None:
        return None, f"present (not validated: {torch_side_missing()})"
    rel = ckpt.relative_to(path).as_posix()
    if deep:
        try:
            label = load(path)
        except Exception as exc:  # noqa: BLE001
            return _loader_failed(exc)
        return True, f"valid (loaded{label}): {rel}"
    return True, f"valid: cfg.yaml + {rel} (header checked)"


def _load_emoca(folder: Path) -> str:
    from backend.models.loading import load_emoca_folder

    load_emoca_folder(folder)
    return ""


def _load_emotion(folder: Path) -> str:
    from backend.models.emotion import load_emotion_model

    return " " + load_emotion_model(folder, device="cpu").name


def _v_emoca_model(path: Path, deep: bool) -> Validation:
    return _v_checkpoint_folder(path, deep, ("coarse", "detail"), _load_emoca)


def _v_emotion_folder(path: Path, deep: bool) -> Validation:
    return _v_checkpoint_folder(path, deep, (), _load_emotion)


def _v_deca_tar(path: Path, deep: bool) -> Validation:
    bad = torch_file_problem(path)
    if bad:
        return False, f"{bad}; deca_model.tar is a torch.save file (do not untar it)"
    if not deep:
        return True, "valid: torch file header"
    if torch_side_missing():
        return None, f"present (not validated: {torch_side_missing()})"
    from backend.models.loading import load_deca_tar

    try:
        load_deca_tar(path)
    except Exception as exc:  # noqa: BLE001
        return _loader_failed(exc)
    return True, "valid (loaded)"


def _v_torch_hub_file(path: Path, deep: bool) -> Validation:
    """face-alignment's own weights (it loads them itself): the header, and with ``deep`` the sha256 prefix."""
    bad = torch_header_problem(path)
    if bad:
        return False, bad
    if deep:  # torch hub names carry the sha256 prefix: NAME-<hash>.ext
        m = re.search(r"-([a-f0-9]+)\.", path.name)
        if m and not sha256_file(path).startswith(m.group(1)):
            return False, f"sha256 does not start with {m.group(1)} (damaged download)"
        return True, "valid: sha256 prefix matches"
    return True, "valid: torch file header"


TASK_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite")


def _v_task_bundle(path: Path, deep: bool) -> Validation:
    """A MediaPipe task bundle: a zip holding the three TFLite models the Face Landmarker runs."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile:
        return False, "not a MediaPipe task bundle (not a zip)"
    missing = [m for m in TASK_MEMBERS if m not in names]
    if missing:
        return False, f"not the Face Landmarker bundle: lacks {', '.join(missing)}"
    return True, "valid: Face Landmarker bundle (detector, landmarks, blendshapes)"


def _v_hdf5(path: Path, deep: bool) -> Validation:
    if file_head(path, 8) != HDF5_MAGIC:
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
    "task_bundle": _v_task_bundle,
    "hdf5": _v_hdf5,
}


def validate_path(spec: AssetSpec, path: Path, deep: bool = False) -> Validation:
    """Run ``spec``'s validator on ``path`` (which may be outside the root, e.g. while importing)."""
    try:
        return VALIDATORS[spec.validator](Path(path), deep)
    except OSError as exc:
        return False, f"cannot read: {exc}"
