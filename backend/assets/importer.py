"""``assets import``: place downloaded zips, folders and loose files into the official layout, safely.

Conventions: a destination is a posix path relative to the assets root, or :data:`HUB` + a name for files that
go to torch's checkpoint cache. Every asset is written into a staging folder under the root, validated there,
then moved into place (a checkpoint that references code refuses the whole import, with ``unsafe_file``, before
anything is placed); nothing outside the root (or the torch hub folder) is ever written, whatever the archive
says (absolute paths, ``..``, drive letters and links refuse the whole archive before anything is extracted).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from backend.assets.specs import (
    EMOCA_MODELS,
    EMOTION_EMOREC_MODELS,
    EMOTION_IMAGE_MODELS,
    SPECS,
    SPECS_BY_KEY,
    AssetSpec,
    spec_path,
)
from backend.assets.status import is_present
from backend.assets.validate import unsafe_torch_files, validate_path
from backend.paths import assets_root, torch_hub_checkpoints
from emoca_contract.errors import EmocaError

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
HUB = "@torch_hub/"  # destination prefix for files that go to torch's checkpoint cache
# known loose files -> where they go (the torch hub files by their own names)
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
    **{s.relpath: HUB + s.relpath for s in SPECS if s.location == "torch_hub"},
}
# the validators of assets that are torch.save checkpoints (scanned for code before anything is placed)
CHECKPOINT_VALIDATORS = frozenset({"emoca_model", "emotion_folder", "deca_tar"})
JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$)")


@dataclass
class _Entry:
    name: str  # posix path inside the source (zip member or relative file path)
    size: int
    read: Callable[[], IO[bytes]]  # opens the content for reading
    source: Path | None = None  # the loose file (folder imports), for --move


@dataclass
class _Plan:
    placed: list[str] = field(default_factory=list)
    placed_sources: list[Path | None] = field(default_factory=list)  # loose source files that were placed (for --move)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _file_reader(path: Path) -> Callable[[], IO[bytes]]:
    """Opens ``path`` for binary reading when called (an entry's content, read only when it is placed)."""

    def read() -> IO[bytes]:
        return open(path, "rb")

    return read


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
        entries.append(_Entry(name, info.file_size, functools.partial(zf.open, info)))
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
            entries.append(_Entry(rel, f.stat().st_size, _file_reader(f), source=f))
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


@dataclass
class _Source:
    """What an import reads: its entries, the zips found inside a folder (imported one by one after), the name
    that stands for a top-level model folder, and the open archive (closed by the caller)."""

    entries: list[_Entry]
    skipped: list[str]
    archives: list[Path]
    container: str
    zf: zipfile.ZipFile | None = None


def _open_source(src: Path) -> _Source:
    """A folder (walked, links not followed), a ``.zip`` (members checked before anything is read) or a file."""
    if src.is_dir():
        entries, skipped = _folder_entries(src)
        archives = [
            e.source
            for e in entries
            if e.source is not None and e.name.lower().endswith(".zip") and zipfile.is_zipfile(e.source)
        ]
        return _Source([e for e in entries if e.source not in archives], skipped, archives, src.name)
    if zipfile.is_zipfile(src) and src.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(src)
        except zipfile.BadZipFile as exc:
            raise EmocaError("asset_invalid", f"{src}: damaged zip archive ({exc})") from exc
        try:
            return _Source(_zip_entries(src, zf), [], [], src.stem, zf)
        except EmocaError:
            zf.close()
            raise
    return _Source([_Entry(src.name, src.stat().st_size, _file_reader(src), source=src)], [], [], src.parent.name)


def _import_source(
    src: Path, source: _Source, root: Path, move: bool, force: bool, log: Callable[[str], None]
) -> _Plan:
    """Map, stage, validate and place everything ``source`` holds; nested archives are imported recursively."""
    result = _Plan(skipped=list(source.skipped))
    plan, unknown = _map_entries(source.entries, source.container)
    result.skipped += [f"{n} (not part of the layout)" for n in unknown]
    if not plan and not source.archives:
        raise EmocaError(
            "asset_invalid",
            f"{src}: no known asset found (looked for FLAME/..., EMOCA/models/<name>/cfg.yaml + .ckpt, "
            f"generic_model.pkl, deca_model.tar, ...)",
            "Import the zips as downloaded from flame.is.tue.mpg.de / emoca.is.tue.mpg.de; "
            "see docs/assets.md for what goes where.",
        )
    root.mkdir(parents=True, exist_ok=True)
    if plan:
        _import_plan(src, plan, root, force, result, log)
    for archive in source.archives:
        try:
            result.placed += import_assets(archive, root, move=move, force=force, log=log)
        except EmocaError as exc:
            if exc.code == "unsafe_file":
                raise
            result.failed.append(exc.message)
    return result


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
    source = _open_source(src)
    try:
        result = _import_source(src, source, root, move, force, log)
    finally:
        if source.zf is not None:
            source.zf.close()
    for s in result.skipped:
        log(f"skipped {s}")
    if move and not result.failed:
        if source.zf is None:
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


def _import_unchecked(
    dests: list[str], plan: dict[str, _Entry], root: Path, staging: Path, force: bool, result: _Plan
) -> None:
    """Files of the layout that no check covers (e.g. DECA/data/texture_data_256.npy): copied unless present."""
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


@dataclass
class _Staged:
    """One asset written into the staging folder: ``inside`` maps each destination to its staged file."""

    spec: AssetSpec
    dests: list[str]
    asset: Path  # the staged file, or the staged folder of a folder asset
    inside: dict[str, Path]


def _stage_asset(
    spec: AssetSpec, dests: list[str], plan: dict[str, _Entry], root: Path, staging: Path, force: bool, result: _Plan
) -> _Staged | None:
    """One asset (a file, or a folder's files) written into the staging folder; None when it is kept (installed
    and valid, unless ``force``) or its archive member is damaged (recorded in ``result``)."""
    final_asset = spec_path(spec, root)
    assert final_asset is not None  # importable specs live under the root or the torch hub
    if is_present(spec, final_asset) and not force:
        valid, msg = validate_path(spec, final_asset)
        if valid is not False:
            result.skipped.append(f"{spec.relpath} (already installed, {msg}; --force replaces it)")
            return None
    base = HUB + spec.relpath if spec.location == "torch_hub" else spec.relpath
    stage_asset = staging / spec.key.replace(":", "_") / Path(spec.relpath).name
    inside = {dest: stage_asset / dest[len(base) + 1 :] if spec.kind == "dir" else stage_asset for dest in dests}
    try:
        for dest, staged in inside.items():
            _write_entry(plan[dest], staged)
    except zipfile.BadZipFile as exc:  # CRC mismatch while extracting
        result.failed.append(f"{spec.relpath}: damaged archive member ({exc})")
        return None
    return _Staged(spec, dests, stage_asset, inside)


def _refuse_unsafe(src: Path, staged: Sequence[_Staged]) -> None:
    """EmocaError('unsafe_file') when a staged checkpoint references code (any checkpoint of a model folder,
    not only the one a loader would pick): raised before anything of the import is placed."""
    unsafe = [
        (f"{s.spec.relpath}/{rel}" if s.spec.kind == "dir" else s.spec.relpath) + f" ({', '.join(names)})"
        for s in staged
        if s.spec.validator in CHECKPOINT_VALIDATORS
        for rel, names in unsafe_torch_files(s.asset)
    ]
    if unsafe:
        raise EmocaError(
            "unsafe_file",
            f"{src}: refused, nothing was imported: checkpoints reference code that is not plain data (a malicious "
            f"or tampered file): {'; '.join(unsafe[:5])}",
            "Do not use these files; download the official archives again from their websites.",
        )


def _place_asset(
    staged: _Staged, plan: dict[str, _Entry], root: Path, result: _Plan, log: Callable[[str], None]
) -> None:
    """Validate a staged asset and move it into place; an invalid one is recorded in ``result.failed``."""
    spec = staged.spec
    valid, msg = validate_path(spec, staged.asset)
    if valid is False:
        result.failed.append(f"{spec.relpath}: {msg}")
        return
    final_asset = spec_path(spec, root)
    assert final_asset is not None
    if spec.kind == "dir":
        for dest, file in staged.inside.items():
            final = _final_path(dest, root)
            _place(file, final)
            result.placed.append(str(final))
    else:
        _place(staged.asset, final_asset)
        result.placed.append(str(final_asset))
    result.placed_sources += [plan[d].source for d in staged.dests]
    log(f"imported {spec.key} -> {final_asset} ({msg})")


def _import_plan(
    src: Path, plan: dict[str, _Entry], root: Path, force: bool, result: _Plan, log: Callable[[str], None]
) -> None:
    """Stage every asset of ``plan`` (grouped by spec), refuse the whole plan if a checkpoint references code,
    then validate and place each; files no spec covers are copied last."""
    groups: dict[str | None, list[str]] = {}
    for dest in plan:
        spec = _spec_for(dest)
        groups.setdefault(spec.key if spec else None, []).append(dest)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        staged: list[_Staged] = []
        for key, dests in groups.items():
            one = None if key is None else _stage_asset(SPECS_BY_KEY[key], dests, plan, root, staging, force, result)
            if one is not None:
                staged.append(one)
        _refuse_unsafe(src, staged)
        for s in staged:
            _place_asset(s, plan, root, result, log)
        if None in groups:
            _import_unchecked(groups[None], plan, root, staging, force, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
