"""The ICT head's open rig, numpy only: ARKit names, consistent winding, skinning, joints, drivers, materials,
the rig file and the export-rig command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.ict import rig as ict_rig
from backend.ict.data import load_ict, triangles
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.errors import EmocaError
from emoca_contract.rig import read_rig, validate_rig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return load_ict()


@pytest.fixture(scope="module")
def rig(model):
    return ict_rig.build_open_rig(model)


def test_shapes_are_named_exactly_as_arkit_names_them(model, rig):
    names = [str(n) for n in rig["shape_names"]]
    assert names == [n for n in ARKIT_NAMES if n != "tongueOut"]
    assert rig["meta"]["unsupported"] == ["tongueOut"]
    assert ict_rig.arkit_name("mouthSmile_L") == "mouthSmileLeft"
    assert ict_rig.arkit_name("eyeBlink_R") == "eyeBlinkRight"
    assert ict_rig.arkit_name("browInnerUp_L") == "browInnerUp" and ict_rig.arkit_name("jawOpen") == "jawOpen"
    deltas = rig["shape_deltas"]
    # one channel drives both halves of ICT's split shapes
    for name in ("browInnerUp", "cheekPuff"):
        halves = model.expression(name + "_L") + model.expression(name + "_R")
        np.testing.assert_allclose(deltas[names.index(name)], halves, atol=1e-7)
    np.testing.assert_array_equal(deltas[names.index("mouthSmileLeft")], model.expression("mouthSmile_L"))
    assert all(np.abs(d).max() > 1e-3 for d in deltas)  # no shape that does nothing


def signed_volume(v: np.ndarray, tris: np.ndarray, origin: np.ndarray) -> float:
    """The volume a surface of triangles (T, 3) encloses about ``origin``; positive when it is wound outwards."""
    a, b, c = (v[tris[:, k]] - origin for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def test_winding_is_consistent_and_faces_point_outwards(model, rig):
    corners, sizes = rig["poly_vertices"].astype(np.int64), rig["poly_sizes"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    nxt = np.arange(len(corners)) + 1
    nxt[starts + sizes - 1] = starts
    directed = corners * len(rig["v_template"]) + corners[nxt]
    assert len(np.unique(directed)) == len(directed)  # a flipped polygon would walk a shared edge the same way
    v = rig["v_template"].astype(np.float64)
    tris = corners[triangles(sizes)]
    poly = np.repeat(np.arange(len(sizes)), sizes - 2)
    names = list(rig["material_names"])
    head = np.isin(rig["poly_materials"][poly], [names.index(n) for n in ("Skin", "Lips", "Brows", "Mouth")])
    litres = 1000 * signed_volume(v, tris[head], np.zeros(3))
    assert 2.0 < litres < 10.0, litres  # the skin encloses a head and neck (open only at the neck's cut)
    for side in ("L", "R"):
        eye = np.isin(tris, model.region(f"eyeball_{side}")).all(1)
        ml = 1e6 * signed_volume(v, tris[eye], ict_rig.eye_centre(model, side))
        assert 10.0 < ml < 40.0, ml  # the eyeball's shells, wound outwards


def test_joints_weights_and_drivers_are_anatomical(model, rig):
    joints = dict(zip(rig["joint_names"], rig["joints"].astype(np.float64)))
    eye_l, eye_r, jaw, head = joints["eye_L"], joints["eye_R"], joints["jaw"], joints["head"]
    assert eye_l[0] > 0.02 and eye_r[0] < -0.02 and abs(eye_l[1] - eye_r[1]) < 1e-6  # left on +X
    assert jaw[1] < eye_l[1] - 0.02 and abs(jaw[0]) < 1e-9 and head[2] < jaw[2] and head[1] < jaw[1]
    assert joints["root"][1] < joints["neck"][1] < head[1]
    w = rig["weights"]
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    names = list(rig["joint_names"])
    assert not w[:, names.index("root")].any() and not w[:, names.index("jaw")].any()
    np.testing.assert_array_equal(w[model.region("eyeball_L"), names.index("eye_L")], 1.0)
    assert (w[model.landmark_indices, names.index("head")] == 1.0).all()  # the whole face turns with the head
    drivers = {(d["bone"], d["channel"], d["index"]): d["terms"] for d in rig["meta"]["drivers"]}
    open_angle = drivers[("jaw", "rotation_euler", 0)]["jawOpen"]
    assert 0.2 < open_angle < 0.7  # jawOpen turns the lower teeth 10-40 degrees about the jaw joint
    rot, shift = ict_rig.jaw_motion(model, "jawOpen", jaw)
    assert np.linalg.norm(shift) < 1e-4 and rot[0] == pytest.approx(open_angle, abs=1e-6)
    assert drivers[("eye_L", "rotation_euler", 1)]["eyeLookOutLeft"] > 0  # out = towards +X for the left eye
    assert drivers[("eye_R", "rotation_euler", 1)]["eyeLookOutRight"] < 0


def test_pose_rig_turns_the_head_and_the_eyes(rig):
    names = [str(n) for n in rig["shape_names"]]
    zero = np.zeros((1, len(names)))
    np.testing.assert_allclose(ict_rig.pose_rig(rig, zero)[0], rig["v_template"], atol=1e-7)
    turned = ict_rig.pose_rig(rig, zero, np.array([[0.0, 0.4, 0.0]]))[0]
    nose = rig["landmark_indices"][30]
    assert turned[nose, 0] - rig["v_template"][nose, 0] > 0.03  # a yaw towards +X moves the nose to +X
    look = zero.copy()
    look[0, names.index("eyeLookOutLeft")] = 1.0
    eye = load_ict().region("eyeball_L")
    front = eye[np.argmax(rig["v_template"][eye, 2])]
    assert ict_rig.pose_rig(rig, look)[0, front, 0] > rig["v_template"][front, 0] + 0.004


def test_materials_paint_lips_brows_irises_and_pupils(rig):
    names = list(rig["material_names"])
    counts = {n: int((rig["poly_materials"] == i).sum()) for i, n in enumerate(names)}
    assert set(names) == set(ict_rig.MATERIALS) and all(counts[n] > 50 for n in names), counts
    colors = dict(zip(names, rig["material_colors"]))
    assert colors["Pupil"][:3].max() < colors["Iris"][:3].max() < colors["Sclera"][:3].min()
    assert colors["Brows"][:3].max() < 0.1 and colors["Lips"][0] > 2 * colors["Lips"][2]


def test_the_rig_file_round_trips_and_bad_drivers_are_rejected(rig, tmp_path):
    path = ict_rig.write_open_rig(tmp_path / "ict é.npz", rig)
    back = read_rig(path)
    assert back["meta"]["kind"] == "open" and back["meta"]["head_bone"] == "head"
    np.testing.assert_array_equal(back["shape_deltas"], rig["shape_deltas"])
    bad = dict(rig, meta=dict(rig["meta"], drivers=[{"bone": "eye_L", "channel": "rotation_euler", "index": 0,
                                                     "terms": {"notAShape": 1.0}}]))  # fmt: skip
    with pytest.raises(EmocaError, match="drivers"):
        validate_rig(bad)
    with pytest.raises(EmocaError, match="head_bone"):
        validate_rig(dict(rig, meta=dict(rig["meta"], head_bone="skull")))


def test_a_baked_identity_moves_the_mesh_and_the_joints(model):
    coeffs = np.zeros(len(model.identity_deltas))
    coeffs[0] = 2.0
    rig = ict_rig.build_open_rig(model, identity=coeffs)
    np.testing.assert_allclose(rig["identity"], 2.0 * model.identity_deltas[0], atol=1e-6)
    assert rig["meta"]["identity_name"] == "identity"
    assert np.abs(rig["joints"] - ict_rig.build_open_rig(model)["joints"]).max() > 1e-4


def _cli(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), EMOCA_BLENDER_DATA=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "backend", "export-rig", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip


@pytest.mark.torch
def test_export_rig_defaults_to_the_open_ict_head_without_flame(unicode_tmp):
    out = unicode_tmp / "tête.npz"
    res = _cli(["-o", str(out)], unicode_tmp)
    assert res.returncode == 0, res.stderr
    assert "ICT-FaceKit" in res.stderr and res.stdout.strip() == str(out)
    rig = read_rig(out)
    assert rig["meta"]["kind"] == "open" and "not FLAME" in rig["meta"]["model"]
    assert "mouthSmileLeft" in list(rig["shape_names"])
    same = _cli(["--head", "ict", "-o", str(unicode_tmp / "b.npz")], unicode_tmp)
    assert same.returncode == 0 and read_rig(unicode_tmp / "b.npz")["meta"]["kind"] == "open"


@pytest.mark.torch
@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--head", "flame"], "asset_missing", "no FLAME file given and none installed"),
        (["--head", "synthetic", "--flame", "x.pkl"], "config_invalid", "--head synthetic"),
        (["--head", "ict", "--shape-from", "take.npz"], "config_invalid", "shape-from"),
    ],
)
def test_export_rig_head_choice_errors_are_clear(tmp_path, args, code, needle):
    out = tmp_path / "rig.npz"
    res = _cli([*args, "-o", str(out)], tmp_path)
    assert res.returncode == 2, res.stderr
    assert code in res.stderr and needle in res.stderr
    assert not out.exists()
