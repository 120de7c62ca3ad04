"""What a batch captures: the inputs a user names (files, folders, globs, a manifest) turned into one
:class:`ClipJob` per clip, each with its own options and take path, all checked before any work.

Inputs, in the order given:
* a footage file (a video, or one image) -> one clip;
* a folder holding video files -> one clip per video in it (sorted by name; not recursive); a folder without
  videos is an image sequence -> one clip; a printf pattern (``shots/frame_%04d.png``) -> one clip;
* a glob (``shots/*.mp4``; ``*``, ``?`` or ``[`` in a path that does not exist as written) -> one clip per match;
* a manifest, ``.csv`` or ``.json`` -> one clip per row (below).

A manifest row has ``input`` (the footage; relative to the manifest's folder), optionally ``output`` (the take's
name or path, relative to the output folder; ``.npz`` added when missing) and any capture option by its protocol
name (``face``, ``frames``, ``model``, ``smooth``, ``smooth_strength``, ``precision``, ``max_gap``, ``detail``...:
docs/formats.md#protocol), over the command's options. CSV: a header row naming the columns, an empty cell = not
set, numbers and booleans written as text (``true``/``false``). JSON: a list of rows (objects, or plain input
strings), or ``{"options": {...}, "clips": [...]}`` whose ``options`` apply to every row.

Each clip's take goes to ``<output folder>/<name>.npz`` (``<name>_track<id>.npz`` with face ``all``), ``name``
the footage's stem unless the manifest names it. Two clips that would write the same take are refused
(``config_invalid``) before anything runs.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from backend.capture.options import CaptureOptions
from emoca_contract.errors import EmocaError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".mxf"}
)
MANIFEST_EXTENSIONS = frozenset({".csv", ".json"})
GLOB_CHARS = frozenset("*?[")
# manifest columns that are not capture options
ROW_KEYS = ("input", "output")
TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})


@dataclass
class ClipJob:
    """One clip of a batch: where the footage is, where its take goes, and the options it is captured with."""

    input: str  # the footage (absolute path, or a pattern)
    output: str  # the take path <folder>/<name>.npz (with face 'all': the base of <name>_track<id>.npz)
    options: CaptureOptions
    name: str  # the report's label: the take's name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input, "output": self.output}


# ---------------------------------------------------------------------------------------------------------------
# the inputs


def is_manifest(text: str) -> bool:
    """Whether ``text`` names a manifest file (an existing ``.csv`` or ``.json`` file)."""
    p = Path(text)
    return p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file()


def is_glob(text: str) -> bool:
    """Whether ``text`` is a glob pattern: wildcards in a path that does not exist as written."""
    return bool(GLOB_CHARS & set(text)) and not Path(text).exists()


def folder_videos(folder: Path) -> list[Path]:
    """The video files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
    )


def is_batch_input(text: str) -> bool:
    """Whether one input names several clips (a manifest, a glob, a folder of videos) rather than one."""
    p = Path(text)
    return is_manifest(text) or is_glob(text) or (p.is_dir() and bool(folder_videos(p)))


def expand_input(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """One input -> (footage, manifest row fields) per clip it names (module docstring)."""
    if is_manifest(text):
        yield from read_manifest(Path(text))
        return
    if is_glob(text):
        matches = sorted(glob.glob(text))
        if not matches:
            raise EmocaError("input_missing", f"{text}: no file matches this pattern")
        for m in matches:
            yield from expand_input(m) if Path(m).is_dir() else iter([(m, {})])
        return
    p = Path(text)
    videos = folder_videos(p) if p.is_dir() else []
    if videos:
        yield from ((str(v), {}) for v in videos)
        return
    yield text, {}  # a file, an image-sequence folder or pattern; a missing one fails when it is captured


# ---------------------------------------------------------------------------------------------------------------
# manifests


def read_manifest(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A manifest's rows as (footage, the row's other fields); ``input`` made relative to the manifest's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EmocaError("input_unsupported", f"{path}: the manifest cannot be read ({exc})") from None
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    out = []
    for i, row in enumerate(rows, start=1):
        footage = row.pop("input", None)
        if not isinstance(footage, str) or not footage.strip():
            raise EmocaError("config_invalid", f"{path}: row {i} has no 'input' (the footage to capture)")
        out.append((str(path.parent / footage.strip()) if not os.path.isabs(footage) else footage, row))
    if not out:
        raise EmocaError("input_empty", f"{path}: the manifest lists no clips")
    return out


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The rows of a JSON manifest: a list, or {"options": {...}, "clips": [...]} (options under each row)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise EmocaError("input_unsupported", f"{path}: not a JSON manifest ({str(exc)[:80]})") from None
    common: dict[str, Any] = {}
    if isinstance(doc, dict):
        common = doc.get("options") or {}
        doc = doc.get("clips")
        if not isinstance(common, dict):
            raise EmocaError("config_invalid", f"{path}: 'options' must be an object of option: value")
    if not isinstance(doc, list):
        raise EmocaError("config_invalid", f"{path}: a JSON manifest is a list of clips, or {{'clips': [...]}}")
    rows = []
    for i, row in enumerate(doc, start=1):
        if isinstance(row, str):
            row = {"input": row}
        if not isinstance(row, dict):
            raise EmocaError("config_invalid", f"{path}: clip {i} is neither an input path nor an object")
        rows.append({**common, **row})
    return rows


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The rows of a CSV manifest (a header row first), each cell read as its option's type; empty = not set."""
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "input" not in [f.strip() for f in reader.fieldnames]:
        raise EmocaError("config_invalid", f"{path}: the CSV manifest needs a header row with an 'input' column")
    rows = []
    for i, raw in enumerate(reader, start=2):
        if None in raw:
            raise EmocaError("config_invalid", f"{path}: line {i} has more cells than the header")
        cells = {k.strip(): v.strip() for k, v in raw.items() if k is not None and v is not None and v.strip()}
        rows.append({k: _cell(path, i, k, v) for k, v in cells.items()})
    return rows


def _option_types() -> dict[str, Any]:
    from backend.footage.video import FrameRange
    from emoca_contract.fields import field_types

    return {**field_types(CaptureOptions, {"FrameRange": FrameRange}), "smooth": str | None, "smooth_strength": float}


def _cell(path: Path, line: int, key: str, value: str) -> Any:
    """One CSV cell as the type its option takes (an int, a float, a bool; text otherwise)."""
    want = _option_types().get(key)
    if want is None or key in ROW_KEYS:
        return value
    kinds = set(get_args(want)) or {want}
    try:
        if bool in kinds:
            return _bool_cell(value)
        if int in kinds and value.lstrip("+-").isdigit():
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise EmocaError("config_invalid", f"{path}: line {line}, {key} = {value!r} is not a {want}") from None
    return value


def _bool_cell(value: str) -> bool:
    word = value.lower()
    if word in TRUE_WORDS | FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(value)


# ---------------------------------------------------------------------------------------------------------------
# the jobs


def row_options(base: CaptureOptions, row: dict[str, Any], where: str) -> CaptureOptions:
    """``base`` with a manifest row's options over it (checked as the protocol checks them: config_invalid)."""
    fields = {k: v for k, v in row.items() if k not in ROW_KEYS}
    if not fields:
        return base
    try:
        given = CaptureOptions.from_dict(fields)
    except EmocaError as exc:
        raise EmocaError(exc.code, f"{where}: {exc.message}", exc.hint) from None
    changes = {k: getattr(given, k) for k in fields if k not in ("smooth", "smooth_strength")}
    if "smooth" in fields or "smooth_strength" in fields:
        changes["smoothing"] = given.smoothing
    return dataclasses.replace(base, **changes)


def take_path(folder: Path, footage: str, output: Any) -> Path:
    """Where a clip's take goes: ``output`` (a name or path, relative to ``folder``, ``.npz`` added), else
    ``<folder>/<footage stem>.npz``."""
    if output is None or str(output).strip() == "":
        return folder / (Path(footage).stem + ".npz")
    out = folder / str(output).strip()
    return out if out.suffix.lower() == ".npz" else out.with_name(out.name + ".npz")


def check_output_folder(output: str | os.PathLike) -> Path:
    """The batch's output folder: config_invalid when it is (or names) a take file, or is an existing file."""
    out = Path(output)
    if out.suffix.lower() == ".npz" or out.is_file():
        raise EmocaError(
            "config_invalid",
            f"-o {out}: a batch writes one take per clip, into a folder, not into one file",
            "Give a folder (-o takes/); a manifest's 'output' column names each take.",
        )
    return out


def clip_jobs(inputs: list[str], output: str | os.PathLike, base: CaptureOptions) -> list[ClipJob]:
    """Every clip the ``inputs`` name, with its take path in the folder ``output`` and its options (``base``
    with a manifest row's over it). Raises EmocaError before any work: input_missing (a glob without matches),
    config_invalid (a bad manifest row, an output file, two clips writing one take), input_empty (no clips)."""
    folder = check_output_folder(output)
    jobs: list[ClipJob] = []
    seen: dict[str, ClipJob] = {}
    for text in inputs:
        for footage, row in expand_input(str(text)):
            footage = os.path.abspath(footage)
            target = take_path(folder, footage, row.get("output"))
            job = ClipJob(footage, str(target), row_options(base, row, footage), target.stem)
            clash = seen.get(os.path.normcase(os.path.abspath(target)))
            if clash is not None and clash.input == footage and clash.options == job.options:
                continue  # the same clip named twice (a file and a glob that matches it)
            if clash is not None:
                raise EmocaError(
                    "config_invalid",
                    f"{clash.input} and {footage} would both write the take {target}",
                    "Name each take in a manifest (its 'output' column), or capture them into separate folders.",
                )
            seen[os.path.normcase(os.path.abspath(target))] = job
            jobs.append(job)
    if not jobs:
        raise EmocaError("input_empty", "no clips to capture: the inputs name no footage")
    return jobs
