"""Renders of the synthetic head: landmark/pixel alignment with camera.project, and a real encoded clip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend.flame.camera import normalized_to_crop_pixels, project  # noqa: E402
from backend.render.renderer import render_attributes  # noqa: E402
from backend.synthetic.render_clip import head_rig, render_crops, render_head_clip  # noqa: E402

pytestmark = pytest.mark.torch


def _params(n=2):
    exp = torch.zeros(n, 50)
    exp[:, 0] = torch.linspace(-1, 1.5, n)
    exp[:, 1] = 0.8
    pose = torch.zeros(n, 6)
    pose[:, 1] = torch.linspace(-0.2, 0.25, n)  # yaw
    pose[:, 3] = 0.1
    cam = torch.tensor([[8.0, 0.01, -0.02]]).repeat(n, 1)
    return {"exp": exp, "pose": pose, "cam": cam}


def test_projected_landmarks_land_on_the_rendered_surface_point():
    rig = head_rig(0)
    p = _params()
    out = rig.flame(torch.zeros(2, rig.n_shape), p["exp"], p["pose"])
    verts = project(out.vertices, p["cam"])
    lmk3d = out.landmarks2d  # model space, on the surface
    size = 224
    img, frag = render_attributes(verts, rig.faces, out.vertices, image_size=size)  # model-space xyz per pixel
    uv = normalized_to_crop_pixels(project(lmk3d, p["cam"])[..., :2], size)
    s = float(p["cam"][0, 0])
    checked = 0
    for b in range(2):
        for k in range(17, 68):  # interior landmarks (the contour may be on the silhouette)
            j, i = int(uv[b, k, 0]), int(uv[b, k, 1])  # the pixel containing the projected point
            if not frag.mask[b, i, j]:
                continue
            got = img[b, :, i, j]
            # same surface point up to one pixel (2/size normalised = 2/(size*s) metres) in x/y
            tol = 1.5 * 2 / (size * s)
            assert abs(float(got[0] - lmk3d[b, k, 0])) < tol, (b, k)
            assert abs(float(got[1] - lmk3d[b, k, 1])) < tol, (b, k)
            checked += 1
    assert checked > 80


def test_render_crops_shapes_and_content():
    r = render_crops(_params(3), image_size=96)
    assert r["images"].shape == (3, 3, 96, 96) and r["landmarks2d"].shape == (3, 68, 2)
    a = r["alpha"][:, 0]
    assert 0.2 < float(a.mean()) < 0.9  # the face fills a good part of the crop, with margins
    assert float((r["images"] * (1 - r["alpha"])).abs().max()) == 0  # black background
    # different expressions give different images
    assert float((r["images"][0] - r["images"][2]).abs().mean()) > 0.005


@pytest.mark.slow
def test_head_clip_is_a_real_video_that_mediapipe_detects(tmp_path):
    import av

    from backend.synthetic.render_clip import detection_rate

    gt = render_head_clip(tmp_path / "head é.mp4", n_frames=12, fps=25)
    with av.open(str(gt["path"])) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("h264", 640, 360)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 12
    assert gt["exp"].shape == (12, 50) and gt["crop"].shape == (12, 3, 3) and gt["cam"].shape == (12, 3)
    assert np.ptp(gt["exp"][:, :7], axis=0).min() > 0.1  # every tracked expression moves
    # the GT landmarks (frame px) sit inside the rendered head's box
    lm = gt["landmarks2d"]
    box = gt["head_box"]
    assert (lm[..., 0] >= box[:, None, 0] - 1).all() and (lm[..., 0] <= box[:, None, 2] + 1).all()
    rate = detection_rate(gt["path"], gt["head_box"])
    assert rate >= 0.9, rate
