"""Training data: cached preprocessing of a real folder (image + video), annotations, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.training.data import (  # noqa: E402
    FaceFolderDataset,
    augment,
    preprocess_folder,
    read_affectnet_csv,
)

pytestmark = pytest.mark.torch


def test_augment_moves_landmarks_with_the_image():
    rng = np.random.default_rng(3)
    img = np.zeros((96, 96, 3), np.uint8)
    pts = np.array([[30.0, 40.0], [70.0, 25.0], [50.0, 75.0]])
    for x, y in pts.astype(int):
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    for _ in range(5):
        out, (moved,) = augment(img, [pts], rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        for x, y in moved:
            # the bright dot followed its landmark (within a pixel; noise/JPEG may dim it)
            patch = out[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2]
            assert patch.max() > 100
        assert not np.allclose(moved, pts)  # something moved (scale/rotation/translation are random)


def test_affectnet_csv(tmp_path):
    p = tmp_path / "training.csv"
    p.write_text(
        "subDirectory_filePath,face_x,expression,valence,arousal\n12/a.jpg,0,1,0.5,-0.25\n12/b.jpg,0,9,0.1,0.2\n",
        encoding="utf-8",
    )
    ann = read_affectnet_csv(p)
    assert ann["12/a.jpg"] == {"expression": 1, "valence": 0.5, "arousal": -0.25}
    assert ann["a.jpg"]["expression"] == 1
    assert ann["b.jpg"]["expression"] == -1  # 9 = Uncertain: excluded, as in the official split


@pytest.mark.slow
def test_folder_is_preprocessed_once_with_annotations(unicode_tmp):
    import cv2

    from backend.synthetic.clips import astronaut_image, make_astronaut_clip

    data = unicode_tmp / "faces"
    data.mkdir()
    cv2.imwrite(str(data / "astro.png"), astronaut_image()[..., ::-1])
    make_astronaut_clip(data / "clip.mp4", n_frames=10)
    (data / "labels.csv").write_text(
        "subDirectory_filePath,expression,valence,arousal\nastro.png,1,0.6,0.3\n", encoding="utf-8"
    )
    cache = unicode_tmp / "cache"
    path = preprocess_folder(data, cache, image_size=128, video_every=5)
    mtime = path.stat().st_mtime_ns
    assert preprocess_folder(data, cache, image_size=128, video_every=5) == path  # cached: no new work
    assert path.stat().st_mtime_ns == mtime
    ds = FaceFolderDataset(data, cache, image_size=128, video_every=5)
    assert len(ds) == 3  # the image and frames 0 and 5 of the clip
    names = ds.names
    item = ds[names.index("astro.png")]
    assert item["image"].shape == (3, 128, 128)
    assert float(item["valence"]) == pytest.approx(0.6) and int(item["expression"]) == 1
    l68 = item["landmarks68"]
    # the official crop (scale 1.25 around a 1.1x landmark box) leaves the landmarks well inside [-1, 1]
    assert float(l68.abs().max()) < 0.85 and float(l68.abs().max()) > 0.4
    vid = ds[names.index("clip.mp4#5")]
    assert bool(vid["lmk_mp_valid"]) and np.isnan(float(vid["valence"]))
    aug = FaceFolderDataset(data, cache, image_size=128, augment=True, video_every=5)
    assert aug.cache == path and not torch.equal(aug[0]["image"], ds[0]["image"])
