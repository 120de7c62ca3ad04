"""Real encoded clips shared by the footage tests (written once per session into a temp folder)."""

from __future__ import annotations

import pytest

from backend.synthetic import clips as synthetic


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("footage_clips")


@pytest.fixture(scope="session")
def astronaut_clip(clip_dir):
    return synthetic.make_astronaut_clip(clip_dir / "astronaut.mp4")


@pytest.fixture(scope="session")
def two_faces_clip(clip_dir):
    return synthetic.make_two_faces_clip(clip_dir / "two_faces.mp4")


@pytest.fixture(scope="session")
def counter_clip(clip_dir):
    return synthetic.make_counter_clip(clip_dir / "counter.mp4", n_frames=60)


@pytest.fixture(scope="session")
def mp_reference():
    """mediapipe's 478 landmarks on the astronaut still (static mode): the points the clip's transforms move."""
    from backend.footage.detect import MediaPipeDetector

    with MediaPipeDetector(max_faces=1, tracking=False) as det:
        found = det.detect(synthetic.astronaut_image())
    assert len(found) == 1
    return found[0].landmarks
