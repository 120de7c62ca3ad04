"""The synthetic test head: FLAME layout, meaningful expressions, and a rendering MediaPipe recognises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.flame.landmarks import MEDIAPIPE_TO_68
from backend.synthetic.head import (
    EXPRESSION_NAMES,
    NAME,
    render_preview,
    synthetic_head,
    synthetic_landmark_embedding,
    synthetic_texture,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head():
    return synthetic_head()


@pytest.fixture(scope="module")
def face_mesh():
    mp = pytest.importorskip("mediapipe")
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        yield fm


def _detect(face_mesh, image):
    res = face_mesh.process(image)
    if not res.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])


def test_layout_and_honest_name(head):
    V = head.n_vertices
    assert head.name == NAME and "not FLAME" in head.name
    assert head.shapedirs.shape == (V, 3, 100) and head.expdirs.shape == (V, 3, 50)
    assert head.posedirs.shape == (V, 3, 36) and head.J_regressor.shape == (5, V) and head.weights.shape == (V, 5)
    assert head.parents.tolist() == [-1, 0, 1, 1, 1]
    np.testing.assert_allclose(head.weights.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(head.J_regressor.sum(1), 1.0, atol=1e-6)
    assert head.uvs.shape == (V, 2) and head.uv_faces.shape == head.faces.shape
    assert 0 <= head.uvs.min() and head.uvs.max() <= 1
    # metres, Y up, looking +Z: ~15 cm wide, forehead above chin, nose tip in front of the cheeks
    v = head.v_template
    assert 0.13 < np.ptp(v[:, 0]) < 0.18
    assert v[10, 1] > v[152, 1] + 0.1
    assert v[4, 2] > v[234, 2] + 0.03 and v[4, 2] > v[454, 2] + 0.03
    # every triangle faces the viewer in the rest pose (counter-clockwise from +Z)
    a, b, c = (v[head.faces[:, k]] for k in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).mean() > 0.97


def test_deterministic_per_seed(head):
    again = synthetic_head()
    for k in ("v_template", "shapedirs", "expdirs", "posedirs", "weights", "J_regressor"):
        np.testing.assert_array_equal(getattr(head, k), getattr(again, k))
    other = synthetic_head(seed=1)
    assert not np.array_equal(other.shapedirs, head.shapedirs)
    k = len(EXPRESSION_NAMES)  # the meaningful components do not depend on the seed
    np.testing.assert_array_equal(other.expdirs[:, :, :k], head.expdirs[:, :, :k])


def test_deformation_scale(head):
    for basis in (head.shapedirs, head.expdirs):
        peak = np.linalg.norm(basis, axis=1).max(axis=0)  # per component, metres at coefficient 1
        assert peak[0] > 4e-3 and (peak > 2e-4).all() and (peak < 1e-2).all()


def test_meaningful_expressions(head):
    v = head.v_template
    e = {n: head.expdirs[:, :, i] for i, n in enumerate(EXPRESSION_NAMES)}
    upper_lip, lower_lip, chin, corner_l, corner_r = 13, 14, 152, 291, 61
    assert e["jaw_open"][lower_lip, 1] < -3e-3 and e["jaw_open"][chin, 1] < -3e-3
    assert abs(e["jaw_open"][upper_lip, 1]) < 1e-3 and abs(e["jaw_open"][10, 1]) < 1e-4
    assert e["smile"][corner_l, 1] > 2e-3 and e["smile"][corner_r, 1] > 2e-3
    assert e["smile"][corner_l, 0] > 0 > e["smile"][corner_r, 0]
    assert e["frown"][corner_l, 1] < -2e-3
    assert e["brow_raise"][105, 1] > 3e-3 and e["brow_raise"][334, 1] > 3e-3
    assert abs(e["brow_raise"][152]).max() < 1e-4
    assert e["eye_close"][159, 1] < -1e-3 and e["eye_close"][386, 1] < -1e-3  # upper lids down
    assert abs(e["eye_close"][145, 1]) < 0.25 * abs(e["eye_close"][159, 1])  # the lower lid barely moves
    assert e["lip_pucker"][0, 2] > 2e-3 and e["lip_pucker"][corner_l, 0] < 0 < e["lip_pucker"][corner_r, 0]
    assert v[corner_l, 0] > 0  # +X is the subject's left


def test_jaw_skinning_region(head):
    w = head.weights
    assert w[14, 2] > 0.9 and w[152, 2] > 0.9  # lower lip, chin
    assert w[13, 2] < 0.1 and w[4, 2] == 0 and w[10, 2] == 0  # upper lip, nose, forehead
    assert w[:, 3].max() == 1 and w[:, 4].max() == 1
    assert head.v_template[np.argmax(w[:, 3]), 0] > 0 > head.v_template[np.argmax(w[:, 4]), 0]


def test_landmark_embedding(head):
    emb = synthetic_landmark_embedding(head)
    emb.validate(len(head.faces))
    pts = np.einsum("lk,lkc->lc", emb.full_bary, head.v_template[head.faces[emb.full_faces]])
    np.testing.assert_allclose(pts, head.v_template[list(MEDIAPIPE_TO_68)], atol=1e-7)
    # iBUG order: contour left-to-right in the image, chin lowest, right eye (36-41) on the image left
    assert pts[0, 0] < pts[8, 0] < pts[16, 0] and pts[8, 1] == pts[:17, 1].min()
    assert pts[36:42, 0].mean() < 0 < pts[42:48, 0].mean()
    # the tables vary with the bin: the contour side turned away (+X for yaw > 0) moves inwards
    assert np.array_equal(emb.dynamic_bary[0], emb.full_bary[:17])
    assert not np.array_equal(emb.dynamic_bary[30, 9:], emb.dynamic_bary[0, 9:])
    assert np.array_equal(emb.dynamic_bary[30, :8], emb.dynamic_bary[0, :8])
    assert not np.array_equal(emb.dynamic_bary[69, :8], emb.dynamic_bary[0, :8])
    np.testing.assert_allclose(emb.dynamic_bary.sum(-1), 1.0, atol=1e-6)


def _project_px(head, verts, size):
    scale = 1.6 / np.ptp(head.v_template[:, 0])
    return np.stack([(scale * verts[:, 0] + 1) * size / 2, (-scale * verts[:, 1] + 1) * size / 2], axis=1)


def test_render_is_detected_by_mediapipe_at_the_right_places(head, face_mesh):
    from backend.flame.camera import normalized_to_crop_pixels, project

    size = 224
    cam = np.array([[9.0, 0.004, -0.006]])
    image = render_preview(head, image_size=size, cam=cam[0])
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    found = _detect(face_mesh, image)
    assert found is not None
    # the render uses the weak-perspective camera of camera.project: mediapipe's points land on the vertices
    expected = normalized_to_crop_pixels(project(head.v_template[None, :468].astype(np.float64), cam)[0, :, :2])
    err = np.linalg.norm(found[:468] - expected, axis=1)
    face_width = np.ptp(expected[:, 0])
    assert np.median(err) < 0.03 * face_width, np.median(err)


def test_rendered_expressions_are_seen(head, face_mesh):
    size = 256
    idx = {n: i for i, n in enumerate(EXPRESSION_NAMES)}

    def mouth_gap(coeff):
        verts = head.v_template + 2.0 * coeff * head.expdirs[:, :, idx["jaw_open"]]
        lm = _detect(face_mesh, render_preview(head, verts, image_size=size))
        assert lm is not None
        return lm[14, 1] - lm[13, 1]

    assert mouth_gap(1.0) > mouth_gap(0.0) + 3.0  # pixels


def test_texture_is_the_astronaut():
    tex = synthetic_texture()
    assert tex.shape == (512, 512, 3) and tex.dtype == np.uint8
    assert tex[..., 0].mean() > tex[..., 2].mean()  # RGB order (the photo is warm), not BGR


@pytest.mark.slow
def test_asset_reproduces(tmp_path, head):
    pytest.importorskip("mediapipe")
    from backend.synthetic.head import _load_asset, build_face_asset

    fresh = _load_asset(build_face_asset(tmp_path / "face.npz"))
    shipped = _load_asset()
    np.testing.assert_array_equal(fresh["faces"], shipped["faces"])
    np.testing.assert_allclose(fresh["vertices"], shipped["vertices"], atol=1e-3)
    np.testing.assert_allclose(fresh["uvs"], shipped["uvs"], atol=2e-3)


def test_numpy_only_environment():
    """The synthetic head, its embedding and the rig writer import neither torch nor scipy nor cv2."""
    code = (
        "import sys\n"
        "for m in ('torch', 'scipy', 'cv2', 'mediapipe'): sys.modules[m] = None\n"
        "from backend.synthetic.head import synthetic_head, synthetic_landmark_embedding\n"
        "from backend.flame.rig import write_rig\nfrom emoca_contract.rig import read_rig\n"
        "import tempfile, os\n"
        "h = synthetic_head(); e = synthetic_landmark_embedding(h)\n"
        "p = os.path.join(tempfile.mkdtemp(), 'r.npz'); write_rig(p, h, e)\n"
        "print(read_rig(p)['meta']['model'])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == NAME
