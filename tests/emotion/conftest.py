"""Session fixtures for the emotion tests: official-layout folders (written once), the astronaut face crop."""

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
def astronaut_crop() -> np.ndarray:
    """224x224x3 uint8 crop of the astronaut's face: mediapipe FaceMesh landmark box, scaled 1.25 (EMOCA-like)."""
    import cv2
    import mediapipe as mp
    import skimage.data

    img = skimage.data.astronaut()  # RGB, 512x512, public domain
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        res = mesh.process(img)
    assert res.multi_face_landmarks, "mediapipe found no face on the astronaut"
    h, w = img.shape[:2]
    pts = np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    cx, cy, size = (x0 + x1) / 2, (y0 + y1) / 2, 1.25 * max(x1 - x0, y1 - y0)
    s = 224 / size
    m = np.float32([[s, 0, -(cx - size / 2) * s], [0, s, -(cy - size / 2) * s]])
    return cv2.warpAffine(img, m, (224, 224), flags=cv2.INTER_LINEAR)


@pytest.fixture(scope="session")
def astronaut_tensor(astronaut_crop):
    """The astronaut crop as (1,3,224,224) float in [0,1]."""
    return torch.from_numpy(astronaut_crop).permute(2, 0, 1)[None].float() / 255.0
