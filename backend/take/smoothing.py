"""Temporal smoothing and gap filling of per-frame channels (the take's exp or ARKit scores, poses, camera, crop,
2D landmarks, emotion).

Two filters:
- ``butterworth``: zero-phase low-pass (scipy.signal.butter + filtfilt, run forward and backward so it adds no
  lag; the effective order doubles). Offline only. Runs on each stretch of valid frames separately; a stretch
  too short for filtfilt's edge padding (fewer than 3 * (order + 1) + 1 frames) is passed through unchanged.
- ``OneEuroFilter`` (Casiez et al. 2012): causal, adaptive (cutoff grows with speed), for live or streaming use.

Strength (0..1) -> cutoff, geometric between a group's ``(loose, tight)`` cutoffs in Hz:
``cutoff = loose * (tight / loose) ** strength``. strength 0 = no smoothing (method 'off' is the same).
Butterworth groups:      pose (6, 1.0) Hz, jaw (8, 2.0), exp (8, 2.0), cam (6, 1.0), emotion (4, 0.5),
landmarks (8, 2.0). Channels: pose = global_pose; jaw = jaw_pose; exp = exp, arkit (ARKit scores stay in [0, 1]);
cam = cam, translation, crop (the framing: cam and crop place the head together, so they share a cutoff);
emotion = valence, arousal, expression; landmarks = landmarks, detected_landmarks (2D points, frame pixels).
One-euro ``min_cutoff`` uses the same ranges; ``beta`` = 0.05 * (1 - strength) + 0.005 (units of the channel per
second), ``d_cutoff`` = 1 Hz. A cutoff at or above 0.45 * fps (near Nyquist) leaves the channel as is.

Rotations (axis-angle channels, ``ROTATION_KEYS``): smoothed as unit quaternions made sign-continuous along time
(q and -q are the same rotation; flipping to stay in one hemisphere of the previous frame keeps the 4 components
smooth), filtered component-wise, re-normalised and converted back to axis-angle (angle in [0, pi]). Filtering the
components of a unit quaternion and re-normalising approximates filtering on the rotation manifold closely for
the small frame-to-frame steps of a face, and unlike filtering axis-angle components it has no trouble where
the axis-angle vector wraps (near 180 degrees).

Detector outputs (``OBSERVED_KEYS``: detected_landmarks) exist only on observed rows: they are zero on rows filled
across a gap, so they are filtered over runs of observed rows (valid and not interpolated), never across a gap.
Large channels (the detector's 478 points) are filtered a slice of points at a time (:func:`smooth_large`), so
memory grows with the number of frames times a slice, not times the whole point set.

Takes keep the unsmoothed values of every smoothed channel (``raw_*``): :func:`resmooth_take` recomputes the
smoothed channels from them with the same code capture uses, and :func:`smoothing_meta` writes the take's
``meta.smoothing`` for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.take.writer import write_take
from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_quat, continuous, quat_to_axis_angle, slerp
from emoca_contract.take import SMOOTHED_BY_KIND, SMOOTHED_OPTIONAL_BY_KIND, Take, read_take

GROUPS = ("pose", "jaw", "exp", "cam", "emotion", "landmarks")
# take channel -> group
CHANNEL_GROUPS = {
    "global_pose": "pose",
    "neck_pose": "pose",
    "eye_pose": "pose",
    "jaw_pose": "jaw",
    "exp": "exp",
    "arkit": "exp",
    "cam": "cam",
    "translation": "cam",
    "crop": "cam",
    "valence": "emotion",
    "arousal": "emotion",
    "expression": "emotion",
    "landmarks": "landmarks",
    "detected_landmarks": "landmarks",
}
ROTATION_KEYS = frozenset({"global_pose", "jaw_pose", "neck_pose", "eye_pose"})
PROBABILITY_KEYS = frozenset({"expression"})  # rows stay non-negative and sum to 1
BOUNDED_KEYS = {"arkit": (0.0, 1.0)}  # scores: a filter's overshoot is clipped back into their range
# detector outputs: zero on interpolated rows, filtered over observed rows only
OBSERVED_KEYS = frozenset({"detected_landmarks"})
# 2D channels a version 1 take holds without raw_ values (never smoothed then: their values are the raw ones)
UNSMOOTHED_BEFORE = frozenset({"crop", "landmarks", "detected_landmarks"})
# group -> (cutoff at strength 0, cutoff at strength 1), Hz
CUTOFF_RANGE = {"pose": (6.0, 1.0), "jaw": (8.0, 2.0), "exp": (8.0, 2.0), "cam": (6.0, 1.0), "emotion": (4.0, 0.5),
                "landmarks": (8.0, 2.0)}  # fmt: skip
# filter(x (n, D) one valid run, start, stop) -> filtered (n, D); start/stop index the take's rows
RunFilter = Callable[[np.ndarray, int, int], np.ndarray]


# ---------------------------------------------------------------------------------------------------------------
# filters


def _segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True."""
    v = np.concatenate([[False], np.asarray(valid, bool), [False]])
    d = np.diff(v.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _min_len(order: int) -> int:
    return 3 * (order + 1) + 1  # filtfilt's default padlen is 3 * max(len(a), len(b)) = 3 * (order + 1)


def butterworth(x: np.ndarray, valid: np.ndarray | None, cutoff_hz: float, fps: float, order: int = 2) -> np.ndarray:
    """Zero-phase low-pass of x (N,) or (N, D) along time, per run of valid frames. Invalid rows are untouched."""
    from scipy.signal import butter, filtfilt

    x = np.asarray(x, np.float64)
    out = x.copy()
    n = len(x)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    if cutoff_hz <= 0 or fps <= 0 or cutoff_hz >= 0.45 * fps:
        return out
    b, a = butter(order, cutoff_hz / (fps / 2.0))
    for s, e in _segments(valid):
        if e - s >= _min_len(order):
            out[s:e] = filtfilt(b, a, x[s:e], axis=0)
    return out


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Causal one-euro filter over vectors: ``filter(x, t)`` returns the smoothed x at time t (seconds).

    Cutoff = ``min_cutoff + beta * |dx/dt|`` (per component): slow motion is smoothed hard, fast motion follows
    with little lag."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def filter(self, x, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        return self._x.copy()

    __call__ = filter


def one_euro(
    x: np.ndarray, valid: np.ndarray | None, times: np.ndarray, min_cutoff: float, beta: float, d_cutoff: float = 1.0
) -> np.ndarray:
    """The one-euro filter over a whole (N, D) channel; restarts after every invalid gap."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    valid = np.ones(len(x), bool) if valid is None else np.asarray(valid, bool)
    f = OneEuroFilter(min_cutoff, beta, d_cutoff)
    for s, e in _segments(valid):
        f.reset()
        for i in range(s, e):
            out[i] = f.filter(x[i], float(times[i]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# rotations


def _smooth_rotations(x: np.ndarray, valid: np.ndarray, filt: RunFilter) -> np.ndarray:
    """x: (N, 3k) axis-angle (k rotations per row) -> filtered through sign-continuous quaternions."""
    n, d = x.shape
    out = x.copy()
    for s, e in _segments(valid):
        q = continuous(axis_angle_to_quat(x[s:e].reshape(e - s, d // 3, 3)))
        qf = filt(q.reshape(e - s, -1), s, e).reshape(e - s, d // 3, 4)
        out[s:e] = quat_to_axis_angle(qf).reshape(e - s, d)
    return out


# ---------------------------------------------------------------------------------------------------------------
# options and the take-level entry points


@dataclass
class GroupOverride:
    """Per-group settings: ``enabled`` False leaves the group raw; ``strength``/``cutoff_hz`` override."""

    enabled: bool = True
    strength: float | None = None
    cutoff_hz: float | None = None


@dataclass
class SmoothingOptions:
    """method 'off' | 'butterworth' | 'one_euro'; strength 0..1 (see the module docstring for the mapping)."""

    method: str = "butterworth"
    strength: float = 0.5
    groups: dict[str, GroupOverride] = field(default_factory=dict)
    order: int = 2

    def __post_init__(self) -> None:
        if self.method not in ("off", "butterworth", "one_euro"):
            raise EmocaError(
                "config_invalid",
                f"smoothing method {self.method!r} is unknown",
                "Use 'off', 'butterworth' or 'one_euro'.",
            )
        if not 0.0 <= float(self.strength) <= 1.0:
            raise EmocaError(
                "config_invalid",
                f"smoothing strength {self.strength} is outside 0..1",
                "Use a strength between 0 (none) and 1 (strongest).",
            )
        for g in self.groups:
            if g not in GROUPS:
                raise EmocaError("config_invalid", f"unknown smoothing group {g!r}", f"Use one of {', '.join(GROUPS)}.")

    @classmethod
    def make(
        cls, method: str = "butterworth", strength: float = 0.5, groups: Iterable[str] | None = None
    ) -> SmoothingOptions:
        """Options where only ``groups`` (default all) are smoothed."""
        chosen = set(GROUPS if groups is None else groups)
        return cls(method, strength, {g: GroupOverride(enabled=g in chosen) for g in GROUPS})

    def group(self, name: str) -> GroupOverride:
        return self.groups.get(name, GroupOverride())

    def enabled_groups(self) -> list[str]:
        if self.method == "off":
            return []
        return [g for g in GROUPS if self.group(g).enabled and self.strength_of(g) > 0]

    def strength_of(self, group: str) -> float:
        o = self.group(group)
        return float(self.strength if o.strength is None else o.strength)

    def cutoff(self, group: str) -> float:
        """Cutoff (Hz) of ``group``: the override, or the strength mapped geometrically into CUTOFF_RANGE."""
        o = self.group(group)
        if o.cutoff_hz is not None:
            return float(o.cutoff_hz)
        loose, tight = CUTOFF_RANGE[group]
        return loose * (tight / loose) ** self.strength_of(group)

    def to_meta(self) -> dict:
        """The take's ``meta.smoothing``."""
        return {
            "method": self.method,
            "strength": self.strength,
            "groups": self.enabled_groups(),
            "cutoff_hz": {g: round(self.cutoff(g), 4) for g in self.enabled_groups()},
        }


def _group_filter(options: SmoothingOptions, group: str, fps: float, times: np.ndarray) -> RunFilter:
    """The filter ``options`` asks for on one channel group (times (N,): the take's timestamps, s)."""
    cutoff = options.cutoff(group)
    if options.method == "butterworth":
        return lambda v, s, e: butterworth(v, None, cutoff, fps, options.order)
    beta = 0.05 * (1.0 - options.strength_of(group)) + 0.005
    return lambda v, s, e: one_euro(v, None, times[s:e], cutoff, beta)


def smoothing_meta(options: SmoothingOptions | None) -> dict:
    """The take's ``meta.smoothing`` for ``options`` (None: the defaults were not resolved yet)."""
    if options is None:
        return {"method": "default"}
    return options.to_meta()


def _smooth_one(name: str, x: np.ndarray, valid: np.ndarray, filt: RunFilter) -> np.ndarray:
    """One channel x (N, D) float64, filtered per run of ``valid`` rows (rotations through quaternions) and kept
    in its range (probabilities renormalised, scores clipped); invalid rows keep their values."""
    if name in ROTATION_KEYS and x.shape[1] % 3 == 0:
        y = _smooth_rotations(x, valid, filt)
    else:
        y = x.copy()
        for s, e in _segments(valid):
            y[s:e] = filt(x[s:e], s, e)
    if name in PROBABILITY_KEYS:
        y = np.clip(y, 0.0, None)
        y = np.where(valid[:, None], y / np.maximum(y.sum(axis=1, keepdims=True), 1e-12), x)
    if name in BOUNDED_KEYS:
        y = np.where(valid[:, None], np.clip(y, *BOUNDED_KEYS[name]), x)
    return y


def channel_valid(name: str, valid: np.ndarray, interpolated: np.ndarray | None) -> np.ndarray:
    """The rows channel ``name`` is filtered over: ``valid``, less the interpolated rows for detector outputs
    (OBSERVED_KEYS hold zeros there)."""
    if name in OBSERVED_KEYS and interpolated is not None:
        return np.asarray(valid, bool) & ~np.asarray(interpolated, bool)
    return np.asarray(valid, bool)


def smooth_channels(
    arrays: dict[str, np.ndarray],
    valid: np.ndarray,
    fps: float,
    options: SmoothingOptions | None = None,
    times: np.ndarray | None = None,
    interpolated: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Smoothed copies of the known channels (CHANNEL_GROUPS) of enabled groups; other keys pass through.

    arrays: name -> (N,) or (N, ...); valid: (N,) bool (invalid rows keep their values, runs are filtered apart);
    interpolated: (N,) bool rows filled across gaps (detector outputs skip them: :func:`channel_valid`);
    times: (N,) seconds for the one-euro filter (default index / fps). Dtypes are kept. options None = defaults.
    """
    options = SmoothingOptions() if options is None else options
    valid = np.asarray(valid, bool)
    n = len(valid)
    times = np.arange(n) / float(fps) if times is None else np.asarray(times, np.float64)
    enabled = set(options.enabled_groups())
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        group = CHANNEL_GROUPS.get(name)
        if group is None or group not in enabled or len(arr) != n:
            out[name] = arr
            continue
        a = np.asarray(arr)
        y = _smooth_one(
            name,
            a.reshape(n, -1).astype(np.float64),
            channel_valid(name, valid, interpolated),
            _group_filter(options, group, fps, times),
        )
        out[name] = y.reshape(a.shape).astype(a.dtype, copy=False)
    return out


def smooth_large(
    name: str,
    x: np.ndarray,
    out: np.ndarray,
    valid: np.ndarray,
    fps: float,
    options: SmoothingOptions | None = None,
    times: np.ndarray | None = None,
    interpolated: np.ndarray | None = None,
    block: int = 16,
) -> np.ndarray:
    """:func:`smooth_channels` for one large channel ``x`` (N, K, ...) (e.g. a memory-mapped column), ``block``
    entries of axis 1 at a time, written into ``out`` (same shape; may be a memory map); returns ``out``.

    Every entry is filtered on its own, so the result equals smoothing the whole channel at once."""
    for a in range(0, x.shape[1], block):
        part = np.asarray(x[:, a : a + block])
        out[:, a : a + block] = smooth_channels({name: part}, valid, fps, options, times, interpolated)[name]
    return out


def interpolate_gaps(
    arrays: dict[str, np.ndarray], valid: np.ndarray, max_gap: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fill runs of at most ``max_gap`` invalid rows that have valid rows on both sides.

    Linear interpolation; slerp for rotation channels (ROTATION_KEYS). Returns the filled arrays (copies; keys
    not of length N pass through) and the (N,) bool mask of filled rows (the take's ``interpolated``; the caller
    sets ``valid |= interpolated``). Gaps at the ends or longer than max_gap stay as they are.
    """
    valid = np.asarray(valid, bool)
    n = len(valid)
    filled = np.zeros(n, bool)
    gaps = [(s, e) for s, e in _segments(~valid) if s > 0 and e < n and e - s <= max_gap]
    out = {}
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if len(a) != n or a.dtype.kind not in "fc" or not gaps:
            out[name] = arr
            continue
        x = a.reshape(n, -1).astype(np.float64)
        rot = name in ROTATION_KEYS and x.shape[1] % 3 == 0
        for s, e in gaps:
            lo, hi = x[s - 1], x[e]
            for i in range(s, e):
                t = (i - (s - 1)) / (e - (s - 1))
                if rot:
                    k = x.shape[1] // 3
                    q = slerp(axis_angle_to_quat(lo.reshape(k, 3)), axis_angle_to_quat(hi.reshape(k, 3)), t)
                    x[i] = quat_to_axis_angle(q).reshape(-1)
                else:
                    x[i] = (1 - t) * lo + t * hi
        out[name] = x.reshape(a.shape).astype(a.dtype, copy=False)
    for s, e in gaps:
        filled[s:e] = True
    return out, filled


# ---------------------------------------------------------------------------------------------------------------
# redoing a take's smoothing


def take_fps(meta: dict, times: np.ndarray) -> float:
    """The frame rate to filter a take at: ``meta.source.fps``, else (an image sequence without a rate) the
    median step of its timestamps (N,) in seconds, else 25."""
    fps = float(meta.get("source", {}).get("fps") or 0.0)
    if fps > 0:
        return fps
    return 1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 25.0


def take_raw(take: Take, path: str | Path) -> dict[str, np.ndarray]:
    """The unsmoothed values of a take's smoothed channels (SMOOTHED_BY_KIND, plus the optional ones it has).

    A 2D channel without raw_ values (UNSMOOTHED_BEFORE: a version 1 take) was never smoothed: its values are the
    raw ones. Any other missing raw_ value: EmocaError input_unsupported."""
    keys = [*SMOOTHED_BY_KIND[take.kind], *(k for k in SMOOTHED_OPTIONAL_BY_KIND[take.kind] if k in take)]
    raw = {}
    for k in keys:
        if f"raw_{k}" in take:
            raw[k] = take[f"raw_{k}"]
        elif k in UNSMOOTHED_BEFORE and k in take:
            raw[k] = take[k]
        else:
            raise EmocaError(
                "input_unsupported",
                f"{path}: the take keeps no unsmoothed values (raw_{k})",
                "Capture it again to change its smoothing.",
            )
    return raw


def resmooth_take(take_path: str | Path, output: str | Path | None, options: SmoothingOptions) -> Path:
    """Recompute a take's smoothed channels from its raw_* values; write it atomically to ``output`` (default:
    in place); returns the path written (with every raw_* value, also where the take lacked one)."""
    take = read_take(take_path)  # validates the contract, raw_* included
    times = take["time"]
    raw = take_raw(take, take_path)
    arrays = dict(take.arrays)
    fps = take_fps(take.meta, times)
    arrays.update(
        smooth_channels(raw, take["valid"], fps, options, times=times, interpolated=take.arrays.get("interpolated"))
    )
    arrays.update({f"raw_{k}": v for k, v in raw.items()})
    meta = dict(take.meta, smoothing=smoothing_meta(options))
    return write_take(output or take_path, arrays, meta)
