"""The vendored detector modes (backend.likeness.response): they still describe how the real Face Landmarker's
points move with an identity mode, better than the surface's own motion does; a damaged file is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from emoca_contract.errors import EmocaError

pytestmark = pytest.mark.torch

MODE = 3  # a shape mode (mode 0 is mostly the face's size)


def test_the_vendored_modes_predict_fresh_detections():
    from backend.likeness.embedding import VIEW_SIZE, load_embedding
    from backend.likeness.response import STEP, load_modes
    from backend.likeness.response_build import detected_views, view_jacobians

    cal = load_modes()
    assert cal.modes.shape == (40, 478, 3) and cal.provenance["head"].startswith("ICT-FaceKit mean head")
    c = np.zeros(MODE + 1)
    c[MODE] = STEP
    delta = (detected_views(c, VIEW_SIZE) - detected_views(-c, VIEW_SIZE)) / (2 * STEP)  # (V, 478, 2)
    jac, surface = view_jacobians(VIEW_SIZE)
    used = load_embedding().weight > 0
    ok = np.isfinite(delta).all(-1) & used[None]
    measured = delta[ok]

    def unexplained(motion: np.ndarray) -> float:
        predicted = np.einsum("vpab,pb->vpa", jac, motion)[ok]
        return float(np.linalg.norm(predicted - measured) / np.linalg.norm(measured))

    detector, own = unexplained(cal.modes[MODE]), unexplained(surface[MODE])
    assert detector < 0.5 and detector < 0.7 * own, (detector, own)


def test_a_missing_or_damaged_calibration_is_a_clear_error(tmp_path):
    from backend.likeness.response import load_modes

    with pytest.raises(EmocaError) as e:
        load_modes(tmp_path / "none.npz")
    assert e.value.code == "asset_missing" and "backend.likeness.response" in e.value.hint
    np.savez(tmp_path / "bad.npz", modes=np.zeros((40, 68, 3)), fit=np.zeros((40, 68)), provenance=np.array("{}"))
    with pytest.raises(EmocaError) as e:
        load_modes(tmp_path / "bad.npz")
    assert e.value.code == "asset_invalid"
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EmocaError) as e:
        load_modes(tmp_path / "junk.npz")
    assert e.value.code == "asset_invalid"


def test_a_calibration_file_is_written_whole_with_its_provenance(tmp_path):
    """The vendored calibration files (embedding, detector modes) are written to a .partial and renamed: the
    arrays and provenance come back, and no .partial is left."""
    import json

    from backend.likeness.embedding import write_calibration

    path = write_calibration(tmp_path / "modes é.npz", {"modes": np.arange(6.0).reshape(2, 3)}, {"step": 2.0})
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["modes"], np.arange(6.0).reshape(2, 3))
        assert json.loads(str(z["provenance"])) == {"step": 2.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modes é.npz"]
