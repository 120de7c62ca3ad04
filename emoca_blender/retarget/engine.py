"""The retarget engine (numpy + the contract): source curves at scene frames -> key curves and bone rotations.

Inputs: :class:`~.sources.SourceCurves` (channels (N, C) at the take's rows, head/jaw axis-angle (N, 3)), the rows
each scene frame interpolates (``(i0, i1, w)``, from the apply step's frame mapping: frame k is
``(1 - w[k]) * row i0[k] + w[k] * row i1[k]``), a :class:`~.mapping.Mapping` and the target's shape keys with
their slider ranges. Channels are interpolated linearly and rotations by slerp *before* the mapping, so a clamp
acts on what is keyed. Outputs (:class:`CurvePlan`): ``{key name: values (K,)}`` and ``{bone name: quaternions
(K, 4)}`` in the bone's axes, plus what was left out and why. Entries naming a channel the take lacks, or a key
the character lacks, are skipped and reported (a preset made for a fuller character still applies);
nothing to key at all is ``config_invalid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_quat, continuous, slerp

from .bones import jaw_open_quats, parse_axes, remap_quats
from .mapping import Entry, Mapping
from .sources import SourceCurves

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i0, i1, w), each (K,)


@dataclass
class CurvePlan:
    """What a retarget keys: shape-key curves (K,), bone rotations (K, 4), the entries used and what was skipped."""

    keys: dict[str, np.ndarray] = field(default_factory=dict)
    bones: dict[str, np.ndarray] = field(default_factory=dict)
    used: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    clipped: dict[str, int] = field(default_factory=dict)  # key -> frames clipped to its slider range


def sample_values(values: np.ndarray, rows: Rows) -> np.ndarray:
    """Rows (N, ...) -> scene frames (K, ...) by linear interpolation."""
    i0, i1, w = rows
    a = np.asarray(values, np.float64)
    ww = np.asarray(w, np.float64).reshape((-1,) + (1,) * (a.ndim - 1))
    return (1 - ww) * a[i0] + ww * a[i1]


def sample_rotations(axis_angle: np.ndarray, rows: Rows) -> np.ndarray:
    """Axis-angle rows (N, 3) -> quaternions at scene frames (K, 4), by slerp, signs continuous in time."""
    i0, i1, w = rows
    q = axis_angle_to_quat(axis_angle)
    return continuous(slerp(q[i0], q[i1], w))


def entry_values(entry: Entry, channel: np.ndarray) -> np.ndarray:
    """One entry's contribution (K,): ``clip(gain * channel + offset, clamp_min, clamp_max)``."""
    return np.clip(entry.gain * channel + entry.offset, entry.clamp_min, entry.clamp_max)


def key_curves(
    names: list[str], values: np.ndarray, mapping: Mapping, sliders: dict[str, tuple[float, float]]
) -> CurvePlan:
    """Channels (K, C) named ``names`` -> key curves: each key the sum of its entries, clipped to its slider range."""
    plan = CurvePlan()
    column = {n: i for i, n in enumerate(names)}
    for entry in mapping.entries:
        if entry.source not in column:
            plan.skipped.append(f"{entry.source} -> {entry.target}: the take has no channel {entry.source!r}")
            continue
        if entry.target not in sliders:
            plan.skipped.append(f"{entry.source} -> {entry.target}: the character has no shape key {entry.target!r}")
            continue
        contribution = entry_values(entry, values[:, column[entry.source]])
        plan.keys[entry.target] = plan.keys.get(entry.target, 0.0) + contribution
        plan.used.append(entry)
    for key, curve in plan.keys.items():
        lo, hi = sliders[key]
        outside = int(np.count_nonzero((curve < lo) | (curve > hi)))
        if outside:
            plan.clipped[key] = outside
        plan.keys[key] = np.clip(curve, lo, hi)
    return plan


def bone_rotations(
    source: SourceCurves, rows: Rows, mapping: Mapping, head: bool = True, jaw: bool = True
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The head and jaw bones' quaternions (K, 4) in their own axes, and what could not be driven (and why)."""
    bones = mapping.bones
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if head and bones.head_bone:
        if source.head is None:
            notes.append(f"head bone {bones.head_bone!r}: the take has no head rotation")
        else:
            out[bones.head_bone] = remap_quats(sample_rotations(source.head, rows), parse_axes(bones.head_axes))
    jaw_open = source.channel("jawOpen")
    if jaw and bones.jaw_bone:
        if source.jaw is not None:
            out[bones.jaw_bone] = remap_quats(sample_rotations(source.jaw, rows), parse_axes(bones.jaw_axes))
        elif jaw_open is not None:
            weights = sample_values(jaw_open, rows)
            out[bones.jaw_bone] = jaw_open_quats(weights, bones.jaw_open_axis, bones.jaw_open_gain)
        else:
            notes.append(f"jaw bone {bones.jaw_bone!r}: the take has neither a jaw rotation nor jawOpen")
    return out, notes


def plan_curves(
    source: SourceCurves,
    rows: Rows,
    mapping: Mapping,
    sliders: dict[str, tuple[float, float]],
    head: bool = True,
    jaw: bool = True,
) -> CurvePlan:
    """Everything a retarget keys at the K scene frames ``rows`` describes (module docstring)."""
    mapping.bones.check()
    plan = key_curves(source.names, sample_values(source.values, rows), mapping, sliders)
    plan.bones, notes = bone_rotations(source, rows, mapping, head, jaw)
    plan.skipped += notes
    if not plan.keys and not plan.bones:
        reasons = "; ".join(plan.skipped[:3]) or "the mapping has no entries"
        raise EmocaError(
            "config_invalid",
            f"nothing to key: no mapping entry reaches one of the character's shape keys ({reasons})",
            "Run Auto Match on this character, or load a preset made for its key names.",
        )
    return plan
