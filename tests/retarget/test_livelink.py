"""Live Link Face CSV: take -> CSV -> take round trips, the app's own files import, bad files are named."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from backend.app.cli import main as backend_main
from backend.synthetic.take import make_synthetic_open_take, make_synthetic_take
from backend.take.writer import write_take
from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES, LIVE_LINK_POSE_NAMES, live_link_name
from emoca_contract.errors import EmocaError
from emoca_contract.livelink import (
    EYE_TURN,
    HEADER,
    csv_rows,
    format_timecode,
    head_angles,
    head_pose,
    parse_timecode,
    read_csv,
    write_csv,
)
from emoca_contract.rotations import axis_angle_to_matrix
from emoca_contract.take import read_take

# The app's header order: it writes JawRight before JawLeft and MouthRight before MouthLeft.
APP_NAMES = [live_link_name(n) for n in ARKIT_NAMES]
for a, b in (("JawLeft", "JawRight"), ("MouthLeft", "MouthRight")):
    i, j = APP_NAMES.index(a), APP_NAMES.index(b)
    APP_NAMES[i], APP_NAMES[j] = APP_NAMES[j], APP_NAMES[i]
APP_HEADER = ["Timecode", "BlendShapeCount", *APP_NAMES, *LIVE_LINK_POSE_NAMES]


def app_csv(path, n=150, start=(14, 3, 52, 28), rate=60, seed=0, newline="\r\n"):
    """A CSV as the app writes it: time-of-day timecodes with sub-frames, its column order, 8 decimals."""
    rng = np.random.default_rng(seed)
    shapes = rng.uniform(0, 1, (n, 52))
    angles = rng.uniform(-0.3, 0.3, (n, 9))
    h, m, s, f = start
    frame0 = ((h * 60 + m) * 60 + s) * rate + f
    lines = [",".join(APP_HEADER)]
    for r in range(n):
        total = frame0 + r
        ss, ff = divmod(total, rate)
        mm, ss = divmod(ss, 60)
        hh, mm = divmod(mm, 60)
        values = [shapes[r, ARKIT_INDEX[name[0].lower() + name[1:]]] for name in APP_NAMES]
        tc = f"{hh % 24:02d}:{mm:02d}:{ss:02d}:{ff:02d}.207"  # the app's sub-frame: thousandths of a frame
        lines.append(",".join([tc, "61", *(f"{v:.8f}" for v in [*values, *angles[r]])]))
    path.write_text(newline.join(lines) + newline, encoding="utf-8")
    return shapes, angles


def test_take_to_csv_to_take_is_equal_within_the_csvs_precision(tmp_path):
    take = make_synthetic_open_take(90, fps=30.0, seed=2)
    path = write_csv(take, tmp_path / "take é.csv")
    back = read_csv(path)
    assert back.kind == "open" and back.n_frames == 90 and back.fps == 30.0
    np.testing.assert_allclose(back["arkit"], take["arkit"], atol=1e-7)
    np.testing.assert_allclose(axis_angle_to_matrix(back["global_pose"].astype(np.float64)),
                               axis_angle_to_matrix(take["global_pose"].astype(np.float64)), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(back["time"], take["time"] - take["time"][0], atol=1 / 30000)
    np.testing.assert_array_equal(back["frame"], take["frame"])
    assert back.arkit_names == list(ARKIT_NAMES) and back.meta["arkit"]["unobserved"] == []
    assert "30 fps guessed" in back.meta["warnings"][0]
    written = write_take(tmp_path / "back.npz", back.arrays, back.meta)  # a full take: the writer accepts it
    assert read_take(written).n_frames == 90


def test_the_csv_has_the_apps_layout(tmp_path):
    take = make_synthetic_open_take(40, fps=60.0, seed=1, invalid=[5, 6])
    header, rows = csv_rows(take)
    assert header == list(HEADER) and header[2] == "EyeBlinkLeft" and header[-9:] == list(LIVE_LINK_POSE_NAMES)
    assert len(rows) == 38  # invalid frames are gaps, not rows
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d:\d\d\.\d\d\d", r[0]) and r[1] == "61" for r in rows)
    assert all(len(r) == 63 and all(re.fullmatch(r"-?\d+\.\d{8}", v) for v in r[2:]) for r in rows)
    row = rows[0]
    look = {n: take["arkit"][0, ARKIT_INDEX[n]] for n in ("eyeLookOutLeft", "eyeLookInLeft", "eyeLookDownLeft",
                                                          "eyeLookUpLeft")}  # fmt: skip
    want_yaw = EYE_TURN["out"] * look["eyeLookOutLeft"] - EYE_TURN["in"] * look["eyeLookInLeft"]
    want_pitch = EYE_TURN["down"] * look["eyeLookDownLeft"] - EYE_TURN["up"] * look["eyeLookUpLeft"]
    assert float(row[header.index("LeftEyeYaw")]) == pytest.approx(want_yaw, abs=1e-7)
    assert float(row[header.index("LeftEyePitch")]) == pytest.approx(want_pitch, abs=1e-7)
    yaw, pitch, roll = head_angles(take["global_pose"][:1])[0]
    assert float(row[header.index("HeadYaw")]) == pytest.approx(yaw, abs=1e-8)
    assert float(row[header.index("HeadRoll")]) == pytest.approx(roll, abs=1e-8)


def test_head_angles_are_yaw_about_up_pitch_about_left_roll_about_forward():
    np.testing.assert_allclose(head_angles(np.array([[0.0, 0.3, 0.0]])), [[0.3, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(head_angles(np.array([[0.2, 0.0, 0.0]])), [[0.0, 0.2, 0.0]], atol=1e-12)
    np.testing.assert_allclose(head_angles(np.array([[0.0, 0.0, -0.1]])), [[0.0, 0.0, -0.1]], atol=1e-12)
    aa = np.random.default_rng(0).normal(0, 0.6, (200, 3))
    np.testing.assert_allclose(axis_angle_to_matrix(head_pose(head_angles(aa))), axis_angle_to_matrix(aa), atol=1e-9)


def test_a_csv_written_the_way_the_app_writes_it_imports_by_column_name(tmp_path):
    path = tmp_path / "MySlate_7_iPhone.csv"
    shapes, angles = app_csv(path)
    take = read_csv(path)
    assert take.n_frames == 150 and take.fps == 60.0 and "60 fps guessed" in take.meta["warnings"][0]
    np.testing.assert_allclose(take["arkit"], shapes, atol=1e-7)  # JawLeft is jawLeft although the app swaps them
    np.testing.assert_allclose(head_angles(take["global_pose"].astype(np.float64)), angles[:, :3], atol=1e-6)
    np.testing.assert_allclose(np.diff(take["time"]), 1 / 60, atol=1e-9)
    assert take["frame"][0] == 0 and take.meta["livelink"]["timecode_start"] == "14:03:52:28.207"
    assert take.meta["source"]["path"] == str(path) and take.meta["emotion"]["classes"] == []


def test_subframes_degrees_given_rates_and_midnight(tmp_path):
    path = tmp_path / "night.csv"
    names = ["Timecode", "BlendShapeCount", "JawOpen", "HeadYaw"]
    rows = [["23:59:59:28.500", "2", "0.1", "10"], ["23:59:59:29.500", "2", "0.2", "20"],
            ["00:00:00:00.500", "2", "0.3", "30"]]  # fmt: skip
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([names, *rows])
    take = read_csv(path, fps=30, angles="degrees")
    np.testing.assert_allclose(take["time"], [0, 1 / 30, 2 / 30], atol=1e-9)  # past midnight, unwrapped
    np.testing.assert_allclose(head_angles(take["global_pose"].astype(np.float64))[:, 0], np.radians([10, 20, 30]),
                               atol=1e-6)  # fmt: skip
    assert take.meta["arkit"]["unobserved"] == [n for n in ARKIT_NAMES if n != "jawOpen"]
    assert take.meta["warnings"] == [] and parse_timecode("01:02:03;04.250") == (3723, 4.25)
    assert format_timecode(3723 + 4.25 / 30, 30) == "01:02:03:04.250"


BAD_ROWS = {
    "bad timecode": ("00:00:0x:01.000,61,0.2", "input_corrupt", "line 3: timecode"),
    "short row": ("00:00:00:02.000,61", "input_corrupt", "line 3 has 2 fields, the header 3"),
    "not a number": ("00:00:00:02.000,61,abc", "input_corrupt", "line 3: 'abc' is not a number"),
    "nan": ("00:00:00:02.000,61,nan", "input_corrupt", "not a finite number"),
    "backwards": ("00:00:00:00.000,61,0.5", "input_corrupt", "go backwards"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_row_is_named_by_its_line(tmp_path, case):
    row, code, message = BAD_ROWS[case]
    path = tmp_path / "bad.csv"
    path.write_text(f"Timecode,BlendShapeCount,JawOpen\n00:00:00:01.000,61,0.1\n{row}\n")
    with pytest.raises(EmocaError, match=message) as err:
        read_csv(path, fps=30)
    assert err.value.code == code and str(path) in err.value.message


def test_files_that_are_not_live_link_csvs(tmp_path):
    with pytest.raises(EmocaError) as err:
        read_csv(tmp_path / "none.csv")
    assert err.value.code == "input_missing"
    other = tmp_path / "other.csv"
    other.write_text("frame,value\n1,2\n")
    with pytest.raises(EmocaError, match="expected 'Timecode'") as err:
        read_csv(other)
    assert err.value.code == "input_unsupported"
    no_shapes = tmp_path / "no shapes.csv"
    no_shapes.write_text("Timecode,BlendShapeCount,HeadYaw\n00:00:00:01.000,61,0.1\n")
    with pytest.raises(EmocaError, match="no ARKit blendshape column"):
        read_csv(no_shapes)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("Timecode,BlendShapeCount,JawOpen\n\n")
    with pytest.raises(EmocaError) as err:
        read_csv(header_only)
    assert err.value.code == "input_empty"
    with pytest.raises(EmocaError, match="fps 0"):
        read_csv(header_only, fps=0)


def test_repeated_timecodes_are_dropped_and_too_dense_rows_refused(tmp_path):
    path = tmp_path / "repeats.csv"
    path.write_text("Timecode,BlendShapeCount,JawOpen\n00:00:00:01.000,61,0.1\n00:00:00:01.000,61,0.1\n"
                    "00:00:00:02.000,61,0.3\n")  # fmt: skip
    take = read_csv(path, fps=30)
    assert take.n_frames == 2 and "1 rows repeating" in take.meta["warnings"][0]
    dense = tmp_path / "dense.csv"
    dense.write_text("Timecode,BlendShapeCount,JawOpen\n00:00:00:01.000,61,0.1\n00:00:00:01.250,61,0.2\n")
    with pytest.raises(EmocaError, match="less than one frame apart at 30 fps") as err:
        read_csv(dense, fps=30)
    assert "timecode rate" in err.value.hint


def test_takes_without_arkit_channels_cannot_be_exported(tmp_path):
    with pytest.raises(EmocaError, match="no ARKit channels") as err:
        write_csv(make_synthetic_take(5), tmp_path / "x.csv")
    assert err.value.code == "config_invalid" and not (tmp_path / "x.csv").exists()
    flame = make_synthetic_take(6)
    flame.arrays["arkit"] = np.full((6, 2), 0.5, np.float32)
    flame.meta["arkit"] = {"names": ["jawOpen", "eyeBlinkLeft"], "source": "detector"}
    header, rows = csv_rows(flame, rate=30)
    assert float(rows[0][header.index("JawOpen")]) == 0.5 and float(rows[0][header.index("TongueOut")]) == 0.0


def test_the_backend_command_exports_and_imports(tmp_path, capsys):
    take = make_synthetic_open_take(45, fps=30.0)
    take_path = write_take(tmp_path / "take.npz", take.arrays, take.meta)
    out = tmp_path / "out" / "take.csv"
    assert backend_main(["livelink", "export", str(take_path), "-o", str(out)]) == 0
    assert out.is_file() and "45 frames" in capsys.readouterr().out
    back = tmp_path / "back.npz"
    assert backend_main(["livelink", "import", str(out), "-o", str(back), "--fps", "30"]) == 0
    np.testing.assert_allclose(read_take(back)["arkit"], take["arkit"], atol=1e-7)
    assert backend_main(["livelink", "import", str(tmp_path / "none.csv"), "-o", str(back)]) == 2
    assert "input_missing" in capsys.readouterr().err
