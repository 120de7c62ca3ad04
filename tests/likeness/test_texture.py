"""The texture unwrap: its pieces on known inputs, and a FLAME-layout head's texture recovered from a rendered
clip of the synthetic test head (not FLAME) whose take carries the codes it was rendered with."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def test_srgb_round_trip_and_the_png_writer(tmp_path):
    import cv2

    from backend.likeness.texture import linear_to_srgb, srgb_to_linear, write_png

    values = np.arange(256, dtype=np.uint8)
    back = np.rint(linear_to_srgb(srgb_to_linear(values)) * 255)
    np.testing.assert_array_equal(back, values)
    img = np.zeros((4, 6, 3))
    img[..., 0] = 1.0  # red
    path = write_png(tmp_path / "é.png", img)
    read = cv2.imread(str(path))
    assert read.shape == (4, 6, 3) and (read[..., 2] == 255).all() and (read[..., :2] == 0).all()  # BGR on disk
    assert [p.name for p in tmp_path.iterdir()] == ["é.png"]


def test_push_pull_keeps_what_is_known_and_fills_smoothly():
    from backend.likeness.texture import push_pull

    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.stack([xx / w, yy / h, 0.5 + 0 * xx], -1)
    known = (xx - 48) ** 2 + (yy - 32) ** 2 > 15**2  # a hole in the middle
    known[:, :10] = False  # and an unseen margin
    out = push_pull(np.where(known[..., None], ramp, 0.0), known)
    np.testing.assert_allclose(out[known], ramp[known], atol=1e-12)
    assert np.abs(out[~known] - ramp[~known]).max() < 0.15  # a smooth ramp is filled close to itself
    assert np.abs(np.diff(out[..., 0], axis=1)).max() < 0.05  # no steps at the hole's edge


def test_the_ict_texels_find_their_mirror_across_the_face():
    from backend.likeness.heads import mean_open_rig, open_layout
    from backend.likeness.texture import mirror_partners, texel_map, texel_values

    layout = open_layout()
    tmap = texel_map(layout, 128)
    rest = texel_values(tmap, layout.faces, np.asarray(mean_open_rig()["v_template"], np.float64))
    partner = mirror_partners(rest)
    has = partner >= 0
    assert has.mean() > 0.8  # the ICT head is symmetric
    reflected = rest[partner[has]] * [-1, 1, 1]
    assert np.linalg.norm(reflected - rest[has], axis=1).max() < 0.004
    left = rest[has, 0] > 0.01
    assert (rest[partner[has]][left, 0] < 0).all()  # a left texel's mirror is on the right


def test_a_texel_map_places_texels_on_their_triangles():
    from backend.likeness.texture import UvLayout, texel_map, texel_values

    faces = np.array([[0, 1, 2], [0, 2, 3]])
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    layout = UvLayout(faces, square[faces], np.array([True, False]), ((0.0, 1.0), (0.0, 1.0)))
    tmap = texel_map(layout, 32)
    assert tmap.size == (32, 32) and set(tmap.triangle.tolist()) == {0}
    uv = texel_values(tmap, faces, square[None])[0]  # each texel's own UV, through the mesh
    row, col = np.divmod(tmap.index, 32)
    np.testing.assert_allclose(uv[:, 0], (col + 0.5) / 32, atol=1e-6)
    np.testing.assert_allclose(uv[:, 1], 1 - (row + 0.5) / 32, atol=1e-6)  # row 0 is v = 1
    assert (uv[:, 0] >= uv[:, 1] - 1e-6).all()  # the lower-right half: the textured triangle


@pytest.fixture(scope="module")
def flame_clip(tmp_path_factory):
    from backend.synthetic.render_clip import render_head_clip

    from .helpers import flame_truth_take, write

    folder = tmp_path_factory.mktemp("flame_texture") / "prise é"
    folder.mkdir()
    truth = render_head_clip(folder / "tête.mp4", n_frames=24, second_face=False)
    take = write(flame_truth_take(truth), folder / "tête.npz")
    return truth, take


@pytest.mark.slow
def test_a_flame_layout_texture_comes_back_from_its_footage(flame_clip):
    """The synthetic head is textured with the astronaut photo in its UV layout; unwrapping its clip through the
    take's own weak-perspective cameras and crops gives that photo back where the face was seen."""
    import cv2

    from backend.likeness.run import LikenessOptions, likeness
    from backend.likeness.texture import texture_error
    from backend.synthetic.head import synthetic_texture
    from emoca_contract.take import read_likeness

    truth, take = flame_clip
    events = []
    result = likeness(take, truth["path"], options=LikenessOptions(texels=256),
                      progress=lambda d, t, s: events.append((d, t, s)))  # fmt: skip
    side = read_likeness(take)
    tex = side["texture"]
    assert tex["present"] and tex["head"] == "flame" and tex["uv_range"] == [[0.0, 1.0], [0.0, 1.0]]
    assert tex["frames"] == 24 and side["identity"]["kind"] == "flame" and side["identity"]["present"]
    assert set(result["files"]) == {side["identity"]["file_path"], tex["albedo_path"], tex["coverage_path"]}
    albedo = cv2.imread(tex["albedo_path"])[..., ::-1] / 255.0
    coverage = cv2.imread(tex["coverage_path"], cv2.IMREAD_GRAYSCALE) / 255.0
    known = cv2.resize(synthetic_texture() / 255.0, albedo.shape[1::-1], interpolation=cv2.INTER_AREA)
    seen = coverage > 0
    assert 0.01 < seen.mean() < 0.2  # the synthetic head's face is a small part of the photo
    err = texture_error(albedo, known, seen)
    assert err <= 0.10, err
    # the photo's other content is never invented: what was not seen is a smooth fill, not the photo
    assert texture_error(albedo, known, ~seen) > 2 * err
    assert events and events[-1][2] == "texture" and events[-1][0] == events[-1][1] == 24
