"""The engine: source curves at scene frames -> key curves (gain, offset, clamp, sums, slider ranges) and bones."""

from __future__ import annotations

import numpy as np
import pytest

from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from emoca_blender.retarget.bones import quat_to_euler
from emoca_blender.retarget.engine import key_curves, plan_curves, sample_rotations, sample_values
from emoca_blender.retarget.mapping import BoneSettings, Entry, Mapping
from emoca_blender.retarget.sources import SourceCurves, source_curves
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_quat, quat_to_matrix

SLIDERS = {"Smile_L": (0.0, 1.0), "Smile_R": (0.0, 1.0), "Open": (0.0, 1.0), "Wide": (-1.0, 2.0)}


def curves(n: int = 20) -> SourceCurves:
    t = np.linspace(0, 1, n)
    values = np.stack([t, 1 - t, 0.5 * np.ones(n)], 1)
    head = np.stack([0.3 * t, 0.1 * t, np.zeros(n)], 1)
    return SourceCurves(["mouthSmileLeft", "mouthSmileRight", "jawOpen"], values, head, None, "test curves")


def same_rows(n: int):
    i = np.arange(n)
    return i, i, np.zeros(n)


def test_gain_offset_clamp_and_sums_per_key():
    src = curves()
    mapping = Mapping(entries=(
        Entry("mouthSmileLeft", "Smile_L"),
        Entry("mouthSmileLeft", "Wide", gain=2.0, offset=-0.5, clamp_min=-1.0, clamp_max=2.0),
        Entry("mouthSmileRight", "Smile_R", gain=0.5, offset=0.1, clamp_max=0.4),
        Entry("mouthSmileRight", "Wide", gain=1.0),  # a second entry on "Wide": summed
    ))  # fmt: skip
    plan = key_curves(src.names, src.values, mapping, SLIDERS)
    left, right = src.values[:, 0], src.values[:, 1]
    np.testing.assert_allclose(plan.keys["Smile_L"], left)
    np.testing.assert_allclose(plan.keys["Smile_R"], np.clip(0.5 * right + 0.1, 0, 0.4))
    np.testing.assert_allclose(plan.keys["Wide"], np.clip(np.clip(2 * left - 0.5, -1, 2) + np.clip(right, 0, 1), -1, 2))
    assert len(plan.used) == 4 and plan.skipped == [] and "Open" not in plan.keys


def test_values_past_the_slider_range_are_clipped_and_counted():
    src = curves()
    plan = key_curves(src.names, src.values, Mapping(entries=(Entry("mouthSmileLeft", "Open", gain=3.0,
                                                                    clamp_max=3.0),)), SLIDERS)  # fmt: skip
    assert plan.keys["Open"].max() == 1.0 and plan.clipped["Open"] == int((3 * src.values[:, 0] > 1).sum())


def test_entries_for_missing_channels_or_keys_are_skipped_and_said():
    src = curves()
    mapping = Mapping(entries=(Entry("tongueOut", "Open"), Entry("jawOpen", "Jaw_Open"), Entry("jawOpen", "Open")))
    plan = key_curves(src.names, src.values, mapping, SLIDERS)
    assert list(plan.keys) == ["Open"]
    assert plan.skipped == ["tongueOut -> Open: the take has no channel 'tongueOut'",
                            "jawOpen -> Jaw_Open: the character has no shape key 'Jaw_Open'"]  # fmt: skip


def test_nothing_to_key_is_config_invalid():
    with pytest.raises(EmocaError, match="nothing to key") as err:
        plan_curves(curves(), same_rows(20), Mapping(entries=(Entry("tongueOut", "Open"),)), SLIDERS)
    assert err.value.code == "config_invalid" and "tongueOut" in err.value.message


def test_sampling_interpolates_channels_and_slerps_rotations_before_mapping():
    src = curves(3)
    rows = (np.array([0, 0, 1]), np.array([1, 1, 2]), np.array([0.0, 0.5, 0.25]))
    np.testing.assert_allclose(sample_values(src.values, rows)[:, 0], [0.0, 0.25, 0.625])
    q = sample_rotations(src.head, rows)
    np.testing.assert_allclose(quat_to_matrix(q[0]), quat_to_matrix(axis_angle_to_quat(src.head[0])), atol=1e-12)
    mid = axis_angle_to_quat(0.5 * (src.head[0] + src.head[1]))  # same axis: slerp halves the angle
    np.testing.assert_allclose(quat_to_matrix(q[1]), quat_to_matrix(mid), atol=1e-12)


def test_head_and_jaw_bones_from_an_open_take():
    src = curves()
    bones = BoneSettings(head_bone="Head", jaw_bone="Jaw", head_axes="X,-Z,Y", jaw_open_axis="X", jaw_open_gain=0.4)
    plan = plan_curves(src, same_rows(20), Mapping(bones=bones), SLIDERS)
    assert plan.keys == {} and set(plan.bones) == {"Head", "Jaw"}
    np.testing.assert_allclose(quat_to_euler(plan.bones["Jaw"], "XYZ")[:, 0], 0.4 * 0.5, atol=1e-12)
    p = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # X,-Z,Y: columns are the bone axes of take X, Y, Z
    want = p @ quat_to_matrix(axis_angle_to_quat(src.head)) @ p.T
    np.testing.assert_allclose(quat_to_matrix(plan.bones["Head"]), want, atol=1e-12)
    off = plan_curves(src, same_rows(20), Mapping(entries=(Entry("jawOpen", "Open"),), bones=bones), SLIDERS,
                      head=False, jaw=False)  # fmt: skip
    assert off.bones == {}


def test_a_flame_take_turns_the_jaw_by_its_jaw_pose():
    take = make_synthetic_take(12, seed=3)
    take.arrays["arkit"] = np.full((12, 52), 0.25, np.float32)
    take.meta["arkit"] = {"names": list(ARKIT_NAMES), "source": "detector", "unobserved": []}
    src = source_curves(take)
    assert src.note.startswith("FLAME take: its own detector ARKit channels") and src.jaw is not None
    plan = plan_curves(src, same_rows(12), Mapping(bones=BoneSettings(jaw_bone="Jaw")), SLIDERS)
    want = quat_to_matrix(axis_angle_to_quat(take["jaw_pose"].astype(np.float64)))
    np.testing.assert_allclose(quat_to_matrix(plan.bones["Jaw"]), want, atol=1e-6)


def test_sources_leave_out_channels_the_take_never_observed():
    take = make_synthetic_open_take(10)
    take.meta["arkit"]["unobserved"] = ["tongueOut"]
    src = source_curves(take)
    assert "tongueOut" not in src.names and src.unobserved == ["tongueOut"] and len(src.names) == 51
    np.testing.assert_allclose(src.channel("jawOpen"), take["arkit"][:, ARKIT_NAMES.index("jawOpen")])
    assert src.jaw is None and src.note.startswith("open take")


def test_a_flame_take_without_arkit_channels_is_refused():
    with pytest.raises(EmocaError, match="no ARKit channels") as err:
        source_curves(make_synthetic_take(5))
    assert err.value.code == "config_invalid"
