"""The detail displacement sequence (issue 14): the 16-bit encoding and its PNG writer, the sequence the Blender
tests use, and a FLAME-layout run: official-layout FLAME and EMOCA files with random weights (tests/fixtures),
a FLAME take with detail codes, the sequence written through ``likeness()``, read back and compared with the
decoder's own maps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from emoca_contract.take import read_likeness

from .helpers import detail_take, write, write_detail_sequence_files


def read16(path) -> np.ndarray:
    """A PNG through OpenCV (an independent reader), unchanged: (H, W) uint16 for a 16-bit grey PNG."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def test_the_encoding_round_trips_within_half_a_step_and_clips_outside_its_range():
    from backend.likeness.detail import MIDLEVEL, SCALE, decode, encode

    step = SCALE / 65535
    d = np.random.default_rng(0).uniform(-0.012, 0.012, (64, 64))  # the decoder's +-1 cm and the fixed map fit
    values = encode(d)
    assert values.dtype == np.uint16
    assert np.abs(decode(values) - d).max() <= step / 2 + 1e-12
    assert encode(np.array([0.0]))[0] in (32767, 32768) and abs(decode(encode(np.array([0.0])))[0]) <= step / 2
    assert encode(np.array([-1.0, 1.0])).tolist() == [0, 65535]  # beyond +-SCALE/2: clipped, not wrapped
    np.testing.assert_allclose(decode(np.array([0, 65535])), [-MIDLEVEL * SCALE, (1 - MIDLEVEL) * SCALE])


def test_the_png_writer_writes_16_bit_grey_that_opencv_reads_back(tmp_path):
    from backend.likeness.detail import png16

    values = np.random.default_rng(1).integers(0, 65536, (5, 7)).astype(np.uint16)
    values[0, 0], values[-1, -1] = 0, 65535
    (tmp_path / "x.png").write_bytes(png16(values))
    back = read16(tmp_path / "x.png")
    assert back.dtype == np.uint16 and back.shape == (5, 7)
    np.testing.assert_array_equal(back, values)


def test_the_known_sequence_for_the_blender_tests_is_what_the_sidecar_says(unicode_tmp):
    from backend.likeness.detail import MIDLEVEL, SCALE, decode

    made = write_detail_sequence_files(unicode_tmp, n_frames=5)
    side = read_likeness(made["take"])
    detail = side["detail"]
    assert detail["present"] and detail["frames"] == made["frames"] == [20, 21, 23, 24, 26]
    assert detail["pattern"] == "détail_detail/%06d.png" and detail["pattern_path"] == made["pattern"]
    assert (detail["scale"], detail["midlevel"], detail["size"], detail["bits"]) == (SCALE, MIDLEVEL, [256, 256], 16)
    assert sorted(p.name for p in made["folder"].iterdir()) == [f"{f:06d}.png" for f in made["frames"]]
    for f, expected in zip(made["frames"], made["maps"]):
        np.testing.assert_array_equal(decode(read16(made["pattern"] % f)), expected)
    centre = made["maps"][:, 128, 128] - made["maps"][:, 128, 0]  # the bump tells the frames apart
    assert len(set(np.round(centre, 6).tolist())) == 5


# ---------------------------------------------------------------------------------------------- FLAME layout
@pytest.fixture(scope="module")
def flame_assets(tmp_path_factory):
    """Official-layout files with random weights: FLAME/geometry/generic_model.pkl (5023 vertices), the UV face
    mask (FLAME/mask/uv_face_eye_mask.png) and fixed displacement, and an EMOCA model folder (cfg.yaml + the
    detail-stage checkpoint with D_detail)."""
    import cv2

    from backend.flame.io import load_flame
    from tests.fixtures import checkpoints as ck
    from tests.fixtures import flame_files as ff

    root = tmp_path_factory.mktemp("detail_assets")
    geometry = root / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    ff.write_flame_pkl(geometry / "generic_model.pkl", n_vertices=5023, n_faces=9976)
    ff.write_landmark_embedding(geometry / "landmark_embedding.npy", n_faces=9976)
    rng = np.random.default_rng(5)
    mask = np.zeros((256, 256), np.uint8)
    mask[40:220, 30:230] = 255
    mask[100:140, :] = 128  # a half-weight band
    (root / "FLAME" / "mask").mkdir()
    cv2.imwrite(str(root / "FLAME" / "mask" / "uv_face_eye_mask.png"), mask)
    fixed = rng.uniform(-0.0015, 0.0015, (256, 256)).astype(np.float32)
    (geometry / "fixed_uv_displacements").mkdir()
    np.save(geometry / "fixed_uv_displacements" / "fixed_displacement_256.npy", fixed)
    network = ck.random_network_state(seed=0)
    flame = load_flame(geometry / "generic_model.pkl", cache_dir=root / "cache")
    folder = ck.write_emoca_folder(root / "EMOCA" / "models", network, flame, name="EMOCA")
    yield {"flame": geometry / "generic_model.pkl", "model": folder, "mask": mask / 255.0, "fixed": fixed}
    shutil.rmtree(root, ignore_errors=True)  # hundreds of MB of random weights


@pytest.mark.torch
@pytest.mark.slow
def test_a_flame_layout_model_writes_the_detail_sequence(flame_assets, unicode_tmp):
    from backend.likeness.detail import SCALE, decode, detail_maps
    from backend.likeness.run import LikenessOptions, likeness
    from backend.models.reconstructor import FaceReconstructor
    from emoca_contract.take import read_take

    take_path = write(detail_take(6, invalid=(3,)), unicode_tmp / "prise.npz")
    stages: list[tuple[int, int, str]] = []
    options = LikenessOptions(identity=False, texture=False, detail=True, model=str(flame_assets["model"]),
                              flame=str(flame_assets["flame"]), device="cpu")  # fmt: skip
    result = likeness(take_path, None, options=options, progress=lambda d, t, s: stages.append((d, t, s)))

    take = read_take(take_path)
    frames = take["frame"].tolist()
    side = read_likeness(take_path)
    detail = side["detail"]
    assert set(side) >= {"format", "version", "take", "detail"} and "identity" not in side and "texture" not in side
    assert detail["present"] and detail["frames"] == frames and detail["valid"] == take["valid"].tolist()
    assert detail["pattern"] == "prise_detail/%06d.png" and detail["face_eye_mask"] and detail["fixed_displacement"]
    assert result["files"] == [str(unicode_tmp / "prise_detail")] and stages[-1] == (6, 6, "detail")
    folder = unicode_tmp / "prise_detail"
    assert sorted(p.name for p in folder.iterdir()) == [f"{f:06d}.png" for f in frames]  # one per take frame
    assert not [p.name for p in unicode_tmp.iterdir() if "partial" in p.name]
    written = np.stack([read16(detail["pattern_path"] % f) for f in frames])
    assert written.dtype == np.uint16 and written.shape == (6, 256, 256)

    rec = FaceReconstructor.from_paths(flame_assets["model"], flame_assets["flame"], device="cpu")
    ok = np.flatnonzero(take["valid"])
    raw = detail_maps(rec, take, ok)  # the decoder's maps, metres
    assert np.abs(raw).max() > 1e-4  # random weights still make a displacement
    expected = raw * flame_assets["mask"] + flame_assets["fixed"]
    step = SCALE / 65535
    assert np.abs(decode(written[ok]) - expected).max() <= step / 2 + 1e-7  # float32 decoder vs the file
    assert np.abs(decode(written[3])).max() <= step / 2  # the row without a face: a flat map
    band = decode(written[ok][:, 120, 40]) - flame_assets["fixed"][120, 40]
    np.testing.assert_allclose(band, raw[:, 120, 40] * 128 / 255, atol=step)  # the mask's half-weight band
