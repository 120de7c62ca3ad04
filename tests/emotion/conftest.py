"""Session fixtures for the emotion tests: official-layout folders (written once), the astronaut through the real
Face Landmarker (its crop and its ARKit blendshape scores)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def emotion_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emotion nets é")


@pytest.fixture(scope="session")
def resnet_folder(emotion_dir):
    """(folder, ckpt path) of a random-weight ResNet50-style folder (165 MB, written once per session)."""
    from tests.fixtures.emotion_files import write_emotion_folder

    folder = emotion_dir / "ResNet50"
    return folder, write_emotion_folder(folder, "resnet50", seed=1)


@pytest.fixture(scope="session")
def emodeca_folder(emotion_dir):
    from tests.fixtures.emotion_files import write_emotion_folder

    folder = emotion_dir / "EMOCA-emorec"
    return folder, write_emotion_folder(folder, "emodeca", seed=2)


@pytest.fixture(scope="session")
def astronaut_face() -> dict:
    """The astronaut through the real Face Landmarker (the vendored bundle, IMAGE mode): ``image`` (512,512,3)
    uint8, ``landmarks`` (478,2) pixels, ``arkit`` (52,) scores in ARKIT_NAMES order (tongueOut: 0, never
    estimated)."""
    import mediapipe as mp
    import skimage.data
    from mediapipe.tasks.python import BaseOptions, vision

    from backend.vendor import FACE_LANDMARKER_TASK
    from emoca_contract.arkit import ARKIT_INDEX

    img = np.ascontiguousarray(skimage.data.astronaut())  # RGB, 512x512, public domain
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(FACE_LANDMARKER_TASK)),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        output_face_blendshapes=True,
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        res = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=img))
    assert res.face_landmarks, "the Face Landmarker found no face on the astronaut"
    h, w = img.shape[:2]
    pts = np.array([[p.x * w, p.y * h] for p in res.face_landmarks[0]])
    arkit = np.zeros(len(ARKIT_INDEX), np.float32)
    for c in res.face_blendshapes[0]:
        if c.category_name in ARKIT_INDEX:  # drops MediaPipe's '_neutral'
            arkit[ARKIT_INDEX[c.category_name]] = c.score
    return {"image": img, "landmarks": pts, "arkit": arkit}


@pytest.fixture(scope="session")
def astronaut_crop(astronaut_face) -> np.ndarray:
    """224x224x3 uint8 crop of the astronaut's face: the landmark box, scaled 1.25 (EMOCA-like)."""
    import cv2

    pts = astronaut_face["landmarks"]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    cx, cy, size = (x0 + x1) / 2, (y0 + y1) / 2, 1.25 * max(x1 - x0, y1 - y0)
    s = 224 / size
    m = np.float32([[s, 0, -(cx - size / 2) * s], [0, s, -(cy - size / 2) * s]])
    return cv2.warpAffine(astronaut_face["image"], m, (224, 224), flags=cv2.INTER_LINEAR)


@pytest.fixture(scope="session")
def astronaut_tensor(astronaut_crop):
    """The astronaut crop as (1,3,224,224) float in [0,1]."""
    return torch.from_numpy(astronaut_crop).permute(2, 0, 1)[None].float() / 255.0
