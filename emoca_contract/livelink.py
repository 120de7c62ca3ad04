"""Live Link Face CSV files <-> takes (numpy + stdlib only): ARKit curves in the iPhone app's export layout.

The layout (docs/retarget.md "Live Link Face CSV"), one row per frame:
``Timecode,BlendShapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,
LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll``.
* ``Timecode`` is ``HH:MM:SS:FF.mmm``: FF counts frames at the timecode rate and ``.mmm`` is the sub-frame in
  thousandths of a frame (``;`` before FF, a drop-frame mark, is read like ``:``). The file does not say its rate:
  the reader takes ``fps`` or, without it, the smallest common rate above every FF in the file.
* ``BlendShapeCount`` is 61 (52 shapes + 9 angles), as the app writes.
* The 52 ARKit channels are named as :func:`emoca_contract.arkit.live_link_name` names them (``EyeBlinkLeft``).
  :func:`write_csv` writes them in Apple's order (:data:`~emoca_contract.arkit.ARKIT_NAMES`); the app itself
  writes ``JawRight`` before ``JawLeft`` and ``MouthRight`` before ``MouthLeft``, so :func:`read_csv` finds
  columns by name (case-insensitive), never by position.
* Angles in radians. Head yaw, pitch and roll are the take's ``global_pose`` (camera frame: +X the performer's
  left, +Y up, +Z out of the face) as R = Ry(yaw) @ Rx(pitch) @ Rz(roll). Eye angles are derived from the eye-look
  channels with the open head's turns (:data:`EYE_TURN`: pitch positive looking down, yaw positive towards +X);
  the reader does not use them (the eye-look channels carry the same motion).

Which ARKit curves a take gives (:func:`take_arkit`): an open take's ``arkit`` columns; a FLAME take's own
detector ``arkit`` columns when it has them (said in the returned note). A CSV becomes an open take
(:func:`read_csv`): every row valid, no translation (zeros), no emotion; the take passes the reader's checks.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arkit import ARKIT_INDEX, ARKIT_NAMES, LIVE_LINK_POSE_NAMES, live_link_name
from .errors import EmocaError
from .rotations import axis_angle_to_matrix, quat_to_axis_angle
from .take import SMOOTHED_BY_KIND, Take, base_meta, check_meta, check_take_arrays

BLENDSHAPE_COUNT = len(ARKIT_NAMES) + len(LIVE_LINK_POSE_NAMES)  # 61, as the app writes
HEADER: tuple[str, ...] = ("Timecode", "BlendShapeCount", *map(live_link_name, ARKIT_NAMES), *LIVE_LINK_POSE_NAMES)
# Timecode rates a file may use; without an explicit rate the reader picks the smallest above every FF it sees.
RATES: tuple[int, ...] = (24, 25, 30, 48, 50, 60, 120, 240)
DEFAULT_RATE = 60  # the app's default capture rate: a take without meta.source.fps is written at it
DECIMALS = 8  # the app writes 8 decimals
SUBFRAME = 1000  # .mmm: thousandths of a frame
# Eye turn at full eye-look weight (radians): the open head's eye drivers (backend/ict/rig.py, docs/rig.md).
EYE_TURN = {"in": math.radians(25.0), "out": math.radians(25.0), "up": math.radians(20.0), "down": math.radians(25.0)}
_TIMECODE = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})[:;](\d+)(?:\.(\d+))?\s*$")
# Columns the reader knows: the 52 shapes and the 9 angles, by lower-case name.
_SHAPE_COLUMNS = {live_link_name(n).lower(): n for n in ARKIT_NAMES}
_POSE_COLUMNS = {n.lower(): n for n in LIVE_LINK_POSE_NAMES}


# ---------------------------------------------------------------------------------------------- ARKit curves
@dataclass
class ArkitCurves:
    """The 52 ARKit channels of a take, in Apple's order: values (N, 52) float64, the rows that hold them, and
    where they come from (a sentence for reports)."""

    values: np.ndarray  # (N, 52)
    valid: np.ndarray  # (N,) bool
    note: str


def take_arkit(take: Take) -> ArkitCurves:
    """The ARKit curves of ``take`` (see the module docstring); a take without any is ``config_invalid``."""
    if "arkit" not in take:
        raise EmocaError(
            "config_invalid",
            f"{take.path}: the {take.kind} take has no ARKit channels",
            "Capture with the open path (--model open), or with a detector that gives ARKit scores.",
        )
    values = np.zeros((take.n_frames, len(ARKIT_NAMES)))
    for column, name in enumerate(take.arkit_names):
        values[:, ARKIT_INDEX[name]] = take["arkit"][:, column]
    source = take.meta.get("arkit", {}).get("source", "")
    note = (
        f"open take: its ARKit channels ({source})"
        if take.kind == "open"
        else f"FLAME take: its own detector ARKit channels ({source}), not FLAME's expression"
    )
    return ArkitCurves(values=values, valid=take["valid"].astype(bool), note=note)


# ---------------------------------------------------------------------------------------------- angles
def head_angles(global_pose: np.ndarray) -> np.ndarray:
    """Axis-angle (N, 3) -> (N, 3) yaw, pitch, roll (radians) with R = Ry(yaw) @ Rx(pitch) @ Rz(roll)."""
    m = axis_angle_to_matrix(np.asarray(global_pose, np.float64))
    pitch = np.arcsin(np.clip(-m[:, 1, 2], -1.0, 1.0))
    yaw = np.arctan2(m[:, 0, 2], m[:, 2, 2])
    roll = np.arctan2(m[:, 1, 0], m[:, 1, 1])
    return np.stack([yaw, pitch, roll], 1)


def _axis_matrix(axis: int, angle: np.ndarray) -> np.ndarray:
    """(N,) angles -> (N, 3, 3) rotations about the coordinate axis ``axis`` (0 X, 1 Y, 2 Z)."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros((len(angle), 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[:, axis, axis] = 1.0
    m[:, i, i], m[:, j, j], m[:, i, j], m[:, j, i] = c, c, -s, s
    return m


def head_pose(angles: np.ndarray) -> np.ndarray:
    """(N, 3) yaw, pitch, roll -> (N, 3) axis-angle: the inverse of :func:`head_angles`."""
    angles = np.asarray(angles, np.float64)
    m = _axis_matrix(1, angles[:, 0]) @ _axis_matrix(0, angles[:, 1]) @ _axis_matrix(2, angles[:, 2])
    return quat_to_axis_angle(_matrix_to_quat(m))


def _matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations -> (N, 4) quaternions (w, x, y, z), from the largest of the four diagonal forms."""
    tr = np.trace(m, axis1=1, axis2=2)
    cand = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 1)
    best = np.argmax(cand, 1)
    q = np.empty((len(m), 4))
    for k in range(4):
        sel = best == k
        r = m[sel]
        if k == 0:
            s = np.sqrt(1.0 + tr[sel]) * 2
            q[sel] = np.stack([s / 4, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s,
                               (r[:, 1, 0] - r[:, 0, 1]) / s], 1)  # fmt: skip
            continue
        i, j, l = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][k - 1]
        s = np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, l, l]) * 2
        out = np.empty((len(r), 4))
        out[:, 0] = (r[:, l, j] - r[:, j, l]) / s
        out[:, 1 + i] = s / 4
        out[:, 1 + j] = (r[:, j, i] + r[:, i, j]) / s
        out[:, 1 + l] = (r[:, l, i] + r[:, i, l]) / s
        q[sel] = out
    return q


def eye_angles(arkit: np.ndarray) -> np.ndarray:
    """ARKit curves (N, 52) -> (N, 6) left eye yaw, pitch, roll, right eye yaw, pitch, roll (radians)."""
    a = {name: np.asarray(arkit)[:, i] for i, name in enumerate(ARKIT_NAMES)}
    out = []
    for side, sign in (("Left", 1.0), ("Right", -1.0)):  # the left eye looks out towards +X, the right towards -X
        yaw = sign * (EYE_TURN["out"] * a[f"eyeLookOut{side}"] - EYE_TURN["in"] * a[f"eyeLookIn{side}"])
        pitch = EYE_TURN["down"] * a[f"eyeLookDown{side}"] - EYE_TURN["up"] * a[f"eyeLookUp{side}"]
        out += [yaw, pitch, np.zeros_like(yaw)]
    return np.stack(out, 1)


# ---------------------------------------------------------------------------------------------- timecode
def format_timecode(seconds: float, rate: int) -> str:
    """``HH:MM:SS:FF.mmm`` of a time in seconds at an integer timecode ``rate`` (mmm: thousandths of a frame)."""
    ticks = round(seconds * rate * SUBFRAME)
    frames, sub = divmod(ticks, SUBFRAME)
    secs, ff = divmod(frames, rate)
    mins, ss = divmod(secs, 60)
    hh, mm = divmod(mins, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{sub:03d}"


def parse_timecode(text: str) -> tuple[int, float]:
    """``HH:MM:SS:FF[.sss]`` -> (whole seconds, frames within the second as a float); ValueError if malformed."""
    match = _TIMECODE.match(text)
    if match is None:
        raise ValueError(f"timecode {text!r} is not HH:MM:SS:FF.mmm")
    hh, mm, ss, ff, sub = match.groups()
    if int(mm) >= 60 or int(ss) >= 60:
        raise ValueError(f"timecode {text!r} has minutes or seconds over 59")
    return int(hh) * 3600 + int(mm) * 60 + int(ss), int(ff) + (float("0." + sub) if sub else 0.0)


def guess_rate(frames: np.ndarray) -> int:
    """The smallest of :data:`RATES` above every frame field ``frames`` (N,); ValueError when none is."""
    top = float(np.max(frames)) if len(frames) else 0.0
    for rate in RATES:
        if top < rate:
            return rate
    raise ValueError(f"a timecode frame field reaches {top:g}: above every known rate {RATES}")


# ---------------------------------------------------------------------------------------------- writing
def csv_rows(take: Take, rate: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The CSV header and rows of ``take`` (valid rows only) at timecode ``rate`` (default: the footage's, rounded,
    else :data:`DEFAULT_RATE`)."""
    rate = int(rate or round(take.fps or DEFAULT_RATE))
    if rate < 1:
        raise EmocaError("config_invalid", f"timecode rate {rate}: expected a positive number of frames per second")
    curves = take_arkit(take)
    rows = np.nonzero(curves.valid)[0]
    if not len(rows):
        raise EmocaError("input_empty", f"{take.path}: the take has no valid frame to export")
    values = np.concatenate(
        [curves.values[rows], head_angles(take["global_pose"][rows]), eye_angles(curves.values[rows])], 1
    )
    times = take["time"][rows] - take["time"][rows[0]]
    body = [
        [format_timecode(float(t), rate), str(BLENDSHAPE_COUNT), *(f"{v:.{DECIMALS}f}" for v in row)]
        for t, row in zip(times, values)
    ]
    return list(HEADER), body


def write_csv(take: Take, path: str | os.PathLike, rate: int | None = None) -> Path:
    """Write ``take`` as a Live Link Face CSV (see the module docstring); return the path."""
    path = Path(path)
    header, body = csv_rows(take, rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class CsvTable:
    """A parsed CSV: timecodes (N,) as (whole seconds, frame field), shape values (N, 52), head angles (N, 3)."""

    seconds: np.ndarray  # (N,) int64
    frames: np.ndarray  # (N,) float64: FF plus the sub-frame
    arkit: np.ndarray  # (N, 52)
    head: np.ndarray  # (N, 3) yaw, pitch, roll as written
    unobserved: list[str]  # ARKit channels with no column (held at 0)
    ignored: list[str]  # columns the reader does not know


def _bad(path: Path, what: str) -> EmocaError:
    return EmocaError("input_corrupt", f"{path}: {what}", "Export the take from Live Link Face again (CSV).")


def _columns(path: Path, header: list[str]) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Which column holds each ARKit channel and each angle (by name, case-insensitive), and the unknown ones."""
    lower = [h.strip().lower() for h in header]
    if not lower or lower[0] != "timecode":
        raise EmocaError("input_unsupported", f"{path}: the first column is {header[:1]}, expected 'Timecode' "
                         "(not a Live Link Face CSV)")  # fmt: skip
    shapes = {_SHAPE_COLUMNS[h]: i for i, h in enumerate(lower) if h in _SHAPE_COLUMNS}
    poses = {_POSE_COLUMNS[h]: i for i, h in enumerate(lower) if h in _POSE_COLUMNS}
    if not shapes:
        raise EmocaError("input_unsupported", f"{path}: no ARKit blendshape column (EyeBlinkLeft, JawOpen, ...)")
    repeated = sorted({h for h in lower if lower.count(h) > 1})
    if repeated:
        raise _bad(path, f"columns repeated: {repeated[:5]}")
    known = {"timecode", "blendshapecount", *_SHAPE_COLUMNS, *_POSE_COLUMNS}
    return shapes, poses, [h for h in header if h.strip().lower() not in known]


def _number(path: Path, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(path, f"line {line}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(path, f"line {line}: {text[:40]!r} is not a finite number")
    return value


def parse_csv(path: str | os.PathLike) -> CsvTable:
    """Read a Live Link Face CSV's columns (no timing decided yet); EmocaError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise EmocaError("input_missing", f"Live Link CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _bad(path, f"not a readable CSV ({exc})") from exc
    if len(table) < 2:
        raise EmocaError("input_empty", f"{path}: no frame rows after the header")
    shapes, poses, ignored = _columns(path, table[0])
    n, width = len(table) - 1, len(table[0])
    seconds, frames = np.zeros(n, np.int64), np.zeros(n)
    arkit, head = np.zeros((n, len(ARKIT_NAMES))), np.zeros((n, 3))
    for r, row in enumerate(table[1:]):
        line = r + 2
        if len(row) != width:
            raise _bad(path, f"line {line} has {len(row)} fields, the header {width}")
        try:
            seconds[r], frames[r] = parse_timecode(row[0])
        except ValueError as exc:
            raise _bad(path, f"line {line}: {exc}") from None
        for name, col in shapes.items():
            arkit[r, ARKIT_INDEX[name]] = _number(path, line, row[col])
        for k, name in enumerate(LIVE_LINK_POSE_NAMES[:3]):
            head[r, k] = _number(path, line, row[poses[name]]) if name in poses else 0.0
    unobserved = [name for name in ARKIT_NAMES if name not in shapes]
    return CsvTable(seconds=seconds, frames=frames, arkit=arkit, head=head, unobserved=unobserved, ignored=ignored)


def table_times(table: CsvTable, rate: float, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The rows to keep (N,) bool, their seconds from the first row (M,) and frame numbers at ``rate`` (M,), and
    warnings. A row repeating the previous row's timecode is dropped; a day boundary (midnight) is unwrapped."""
    t = table.seconds + table.frames / rate
    wraps = np.concatenate([[0], np.cumsum(np.diff(t) < -43200.0)])  # a drop of over 12 h: past midnight
    t = t + 86400.0 * wraps
    keep = np.concatenate([[True], np.diff(t) != 0])
    warnings = (
        [f"{int((~keep).sum())} rows repeating the previous row's timecode were dropped"] if not keep.all() else []
    )
    t = t[keep]
    if np.any(np.diff(t) < 0):
        raise _bad(path, f"the timecodes go backwards at row {int(np.nonzero(np.diff(t) < 0)[0][0]) + 2}")
    rel = t - t[0]
    frame = np.round(rel * rate).astype(np.int64)
    if np.any(np.diff(frame) <= 0):
        raise EmocaError(
            "input_corrupt",
            f"{path}: rows are less than one frame apart at {rate:g} fps",
            "Give the file's timecode rate (fps), e.g. 60 for the app's default.",
        )
    return keep, rel, frame, warnings


def read_csv(path: str | os.PathLike, fps: float | None = None, angles: str = "radians") -> Take:
    """A Live Link Face CSV as an open take (see the module docstring); checked as :func:`~.take.read_take` checks.

    ``fps``: the timecode rate (default: guessed from the frame fields, said in ``meta.warnings``);
    ``angles``: ``radians`` (the app's export) or ``degrees``.
    """
    path = Path(path)
    if angles not in ("radians", "degrees"):
        raise EmocaError("config_invalid", f"angles {angles!r}: expected 'radians' or 'degrees'")
    if fps is not None and not (isinstance(fps, (int, float)) and 1 <= fps <= 10_000):
        raise EmocaError("config_invalid", f"fps {fps!r}: expected a frame rate from 1 to 10000")
    table = parse_csv(path)
    warnings: list[str] = []
    rate = float(fps) if fps is not None else float(_guessed_rate(table, path))
    if fps is None:
        warnings.append(f"timecode rate not given: {rate:g} fps guessed from the frame fields")
    keep, rel, frame, dropped = table_times(table, rate, path)
    head = np.radians(table.head) if angles == "degrees" else table.head
    arrays = open_take_arrays(rel, frame, table.arkit[keep], head_pose(head[keep]))
    meta = base_meta(
        kind="open",
        source={"path": str(path), "fps": rate, "frame_count": int(frame[-1]) + 1},
        model={"name": "Live Link Face CSV (ARKit, iPhone)", "kind": "open", "trained": True},
        arkit={"names": list(ARKIT_NAMES), "source": f"Live Link Face CSV {path.name}", "unobserved": table.unobserved},
        emotion={"model": "none", "classes": []},
        livelink={"timecode_start": _first_timecode(table), "timecode_rate": rate, "angles": angles,
                  "ignored_columns": table.ignored},
        warnings=warnings + dropped,
    )  # fmt: skip
    check_take_arrays(arrays, path, "open")
    check_meta(meta, arrays, path)
    return Take(arrays=arrays, meta=meta, path=path)


def _guessed_rate(table: CsvTable, path: Path) -> int:
    try:
        return guess_rate(table.frames)
    except ValueError as exc:
        raise _bad(path, str(exc)) from None


def _first_timecode(table: CsvTable) -> str:
    whole = int(table.seconds[0])
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}:{table.frames[0]:06.3f}"


def open_take_arrays(time: np.ndarray, frame: np.ndarray, arkit: np.ndarray, global_pose: np.ndarray) -> dict:
    """Every array a writer needs for an open take (``raw_*`` copies included) from N rows of timing, ARKit
    curves (N, 52) and head axis-angle (N, 3): every row valid and observed; no translation, landmarks or
    emotion classes."""
    n = len(time)
    arrays: dict[str, np.ndarray] = {
        "frame": np.asarray(frame, np.int64),
        "time": np.asarray(time, np.float64),
        "valid": np.ones(n, bool),
        "interpolated": np.zeros(n, bool),
        "confidence": np.ones(n, np.float32),
        "global_pose": np.asarray(global_pose, np.float32),
        "crop": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        "detected_landmarks": np.zeros((n, 0, 2), np.float32),
        "valence": np.zeros(n, np.float32),
        "arousal": np.zeros(n, np.float32),
        "expression": np.zeros((n, 0), np.float32),
        "arkit": np.asarray(arkit, np.float32),
        "translation": np.zeros((n, 3), np.float32),
    }
    for key in SMOOTHED_BY_KIND["open"]:
        arrays["raw_" + key] = arrays[key].copy()
    return arrays
