"""One crop recipe: capture, the still-image encoder and the training data crop the same face identically.

A crop that differs between training and inference is a classic EMOCA failure (the networks see faces framed
differently from what they learnt). Real mediapipe on a real photo, through each path's own entry point.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.flame.camera import crop_to_frame, transform_points  # noqa: E402
from backend.footage.crop import face_crop, invert  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """The astronaut photo as a PNG in a folder of its own (lossless: every path decodes the same pixels)."""
    import cv2

    from backend.synthetic.clips import astronaut_image

    folder = tmp_path_factory.mktemp("one crop") / "visage é"
    folder.mkdir()
    path = folder / "astronaute.png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(astronaut_image(), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture(scope="module")
def reference(photo):
    """The decoded frame, a still-image detection of its face, and the recipe's crop of it."""
    from backend.footage.detect import make_detector
    from backend.footage.video import open_footage

    with open_footage(photo) as footage:
        image = next(iter(footage)).image
    with make_detector("mediapipe", tracking=False) as detector:
        (det,) = detector.detect(image)
    crop, tform = face_crop(image, det.landmarks68(), "kpt68")
    return {"image": image, "det": det, "crop": crop, "tform": tform}


def test_capture_crops_with_the_recipe(reference):
    from backend.capture.reader import process_frame
    from backend.footage.detect import make_detector
    from backend.footage.track import FaceTracker

    with make_detector("mediapipe", tracking=False) as detector:
        (face,) = process_frame(reference["image"], detector, FaceTracker())
    np.testing.assert_array_equal(face.crop, reference["crop"])
    np.testing.assert_allclose(face.tform, invert(reference["tform"]), rtol=1e-6, atol=1e-4)


def test_encode_crops_with_the_recipe(photo, reference):
    from backend.app.encode import collect_crops

    notes: list[str] = []
    (record,) = collect_crops([photo], "auto", "mediapipe", 4, notes)
    assert record["detected"] and not notes
    np.testing.assert_array_equal(record["crop_image"], reference["crop"])
    np.testing.assert_allclose(record["crop"], invert(reference["tform"]), atol=1e-9)


def test_training_crops_with_the_recipe_and_the_documented_landmark_mapping(photo, reference, tmp_path):
    from backend.training.data import FaceFolderDataset, preprocess_folder

    cache = preprocess_folder(photo.parent, tmp_path / "cache")
    with np.load(cache) as z:
        np.testing.assert_array_equal(z["crops"][0], reference["crop"])
        # landmarks in crop pixels: the detection moved by the same frame -> crop transform
        want = transform_points(reference["det"].landmarks68(), reference["tform"])
        np.testing.assert_allclose(z["landmarks68"][0], want, atol=1e-3)
    # the normalised training targets are what capture reads back: crop_to_frame of them is the detection
    item = FaceFolderDataset(photo.parent, tmp_path / "cache")[0]
    back = crop_to_frame(item["landmarks68"].numpy()[None].astype(np.float64), invert(reference["tform"])[None])[0]
    np.testing.assert_allclose(back, reference["det"].landmarks68(), atol=2e-3)
