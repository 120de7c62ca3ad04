"""Bone rotations: axis settings, the jaw from jawOpen, and quaternions in every Blender rotation mode."""

from __future__ import annotations

import numpy as np
import pytest

from emoca_blender.retarget.bones import (
    EULER_ORDERS,
    jaw_open_quats,
    parse_axes,
    parse_axis,
    quat_to_blender_axis_angle,
    quat_to_euler,
    remap_quats,
    rotation_channel,
)
from emoca_contract.errors import EmocaError
from emoca_contract.rotations import axis_angle_to_quat, quat_to_matrix


def rotations(n: int = 40, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def about(axis: int, angle: np.ndarray) -> np.ndarray:
    r = np.zeros((len(angle), 3))
    r[:, axis] = angle
    return quat_to_matrix(axis_angle_to_quat(r))


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_angles_recompose_the_rotation_in_blenders_order(order):
    q = rotations()
    e = quat_to_euler(q, order)
    m = np.tile(np.eye(3), (len(q), 1, 1))
    for axis in order:  # the first axis of the order turns first: R = R_last @ ... @ R_first
        i = "XYZ".index(axis)
        m = about(i, e[:, i]) @ m
    np.testing.assert_allclose(m, quat_to_matrix(q), atol=1e-9)


def test_euler_angles_are_continuous_in_time():
    angle = np.linspace(0, 4 * np.pi, 200)
    e = quat_to_euler(axis_angle_to_quat(np.stack([np.zeros_like(angle), np.zeros_like(angle), angle], 1)), "XYZ")
    np.testing.assert_allclose(e[:, 2], angle, atol=1e-9)  # unwrapped past pi, no jumps


def test_axis_angle_mode_and_quaternions_keep_the_rotation():
    q = rotations()
    aa = quat_to_blender_axis_angle(q)
    back = axis_angle_to_quat(aa[:, 1:] * aa[:, :1])
    np.testing.assert_allclose(quat_to_matrix(back), quat_to_matrix(q), atol=1e-9)
    prop, values = rotation_channel(q, "QUATERNION")
    assert prop == "rotation_quaternion" and np.all((values[1:] * values[:-1]).sum(1) >= 0)
    assert rotation_channel(q, "ZXY")[0] == "rotation_euler"
    assert rotation_channel(q, "AXIS_ANGLE")[0] == "rotation_axis_angle"


def test_an_axis_setting_conjugates_the_rotation():
    q = rotations()
    for text in ("X,Y,Z", "X,-Z,Y", "-X,Y,Z", "Z,X,Y"):
        p = parse_axes(text)
        got = quat_to_matrix(remap_quats(q, p))
        np.testing.assert_allclose(got, p @ quat_to_matrix(q) @ p.T, atol=1e-12)
    # a nod about the take's X (left) stays a nod about the bone's X with the default axes
    nod = axis_angle_to_quat(np.array([[0.3, 0.0, 0.0]]))
    np.testing.assert_allclose(remap_quats(nod, parse_axes("X,Y,Z")), nod)
    # the take's up (Y) turned onto the bone's -Z: a turn about Y becomes a turn about -Z
    turn = axis_angle_to_quat(np.array([[0.0, 0.4, 0.0]]))
    np.testing.assert_allclose(remap_quats(turn, parse_axes("X,-Z,Y")), axis_angle_to_quat([[0.0, 0.0, -0.4]]))


@pytest.mark.parametrize("text", ["X,Y", "X,X,Z", "X,Y,W", "", "XYZ"])
def test_bad_axis_settings_are_config_invalid(text):
    with pytest.raises(EmocaError) as err:
        parse_axes(text, "head_axes")
    assert err.value.code == "config_invalid" and "head_axes" in err.value.message


def test_the_jaw_turns_gain_times_jaw_open_about_its_axis():
    jaw_open = np.array([0.0, 0.5, 1.0])
    q = jaw_open_quats(jaw_open, "-X", 0.4)
    np.testing.assert_allclose(quat_to_euler(q, "XYZ")[:, 0], -0.4 * jaw_open, atol=1e-12)
    np.testing.assert_array_equal(parse_axis("+y"), [0.0, 1.0, 0.0])
    with pytest.raises(EmocaError, match="jaw_open_axis"):
        jaw_open_quats(jaw_open, "XY", 0.4)
