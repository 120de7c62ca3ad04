"""`python -m backend bench likeness`: the likeness (docs/likeness.md), its speed and its accuracy on a known head.

On a clip of the ICT head with a known identity mix and a known painted texture (backend.synthetic.ict_likeness,
the same clip as tests/likeness/test_known_likeness.py: 40 frames of 640x480), captured with the real open path:

* ``identity_landmark_error``: the fitted identity's landmarks from the truth's, a fraction of the face's size
  (``identity_mean_head_error``: the same for ICT's mean head, the fit's starting point), ``identity_seconds``;
  ``identity_second_landmark_error`` and ``identity_second_mean_head_error``: the same on the clip of
  ``SECOND_IDENTITY`` (the performer the fit's constants were checked on);
* ``texture_error``: the recovered albedo's mean absolute error over the texels seen, a fraction of the true
  texture's range there (``texture_flat_error``: one colour everywhere, the baseline a texture must beat);
  ``texture_seconds_per_100_frames``: the texture step (decoding, posing, unwrapping, de-lighting, filling) per
  100 frames of footage; ``texture_seen``: the fraction of texels seen.

``detail_maps_per_s``: 16-bit displacement maps written per second (the detail decoder, the encoding and the PNG
writer) for a FLAME take with detail codes, through the installed EMOCA model, else an untrained network of the
same cost (``detail_model`` says which). Registered in backend.app.bench.BENCHMARKS as "likeness".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

N_FRAMES = 40  # the known-likeness test's clip
DETAIL_FRAMES = 32


def known_likeness(folder: Path, device: str) -> dict:
    """Render, capture and make the likeness of the known clip; the figures (module docstring)."""
    from backend.capture.options import CaptureOptions
    from backend.capture.pipeline import capture
    from backend.likeness.identity import landmark_error
    from backend.likeness.run import Job, LikenessOptions, make_identity, make_texture
    from backend.likeness.texture import linear_to_srgb, texture_error
    from backend.synthetic.ict_likeness import identity_offsets, write_likeness_clip
    from emoca_contract.take import read_take

    truth = write_likeness_clip(folder / "known.mp4", n_frames=N_FRAMES)
    take_path = capture(truth["path"], folder / "known.npz", CaptureOptions(device=device, model="open"))[0]
    job = Job(read_take(take_path), truth["path"], folder, LikenessOptions(device=device))
    t0 = time.perf_counter()
    identity, fit = make_identity(job)
    t1 = time.perf_counter()
    result, _ = make_texture(job, identity, fit)
    t2 = time.perf_counter()
    albedo = np.rint(result.albedo * 255) / 255  # what the PNGs hold
    seen = np.rint(result.coverage * 255) > 0
    known = linear_to_srgb(truth["texture"])
    flat = np.broadcast_to(albedo[seen].mean(0), albedo.shape)
    offsets = identity_offsets(truth["identity"])
    assert identity.offsets is not None
    return {
        "identity_landmark_error": round(landmark_error(identity.offsets, offsets), 5),
        "identity_mean_head_error": round(landmark_error(np.zeros_like(offsets), offsets), 5),
        "identity_seconds": round(t1 - t0, 2),
        "texture_error": round(texture_error(albedo, known, seen), 4),
        "texture_flat_error": round(texture_error(flat, known, seen), 4),
        "texture_seen": round(float(seen.mean()), 3),
        "texture_seconds_per_100_frames": round((t2 - t1) / max(result.frames, 1) * 100, 2),
    }


def second_identity(folder: Path, device: str) -> dict:
    """The identity figures on the second known performer's clip (module docstring)."""
    from backend.capture.options import CaptureOptions
    from backend.capture.pipeline import capture
    from backend.likeness.identity import landmark_error, open_identity
    from backend.synthetic.ict_likeness import SECOND_IDENTITY, identity_offsets, write_likeness_clip
    from emoca_contract.take import read_take

    truth = write_likeness_clip(folder / "second.mp4", n_frames=N_FRAMES, identity=SECOND_IDENTITY)
    take = read_take(capture(truth["path"], folder / "second.npz", CaptureOptions(device=device, model="open"))[0])
    offsets = identity_offsets(SECOND_IDENTITY)
    fitted = open_identity([take]).identity.offsets
    assert fitted is not None
    return {"identity_second_landmark_error": round(landmark_error(fitted, offsets), 5),
            "identity_second_mean_head_error": round(landmark_error(np.zeros_like(offsets), offsets), 5)}  # fmt: skip


def detail_speed(folder: Path, device: str) -> dict:
    """Maps written per second by the detail writer for a synthetic FLAME take with detail codes."""
    from backend.assets.resolve import resolve_capture
    from backend.likeness.detail import write_detail_sequence
    from backend.models.reconstructor import FaceReconstructor
    from backend.synthetic.take import make_synthetic_take

    paths = resolve_capture()
    rec = FaceReconstructor.from_paths(paths.model, paths.flame, device=device, landmarks=paths.landmarks)
    take = make_synthetic_take(DETAIL_FRAMES, seed=1)
    take.arrays["detail"] = np.random.default_rng(1).normal(0, 1, (DETAIL_FRAMES, 128)).astype(np.float32)
    write_detail_sequence(rec, take, folder / "warmup", paths.flame, batch=4)  # first-call costs out of the timing
    t0 = time.perf_counter()
    write_detail_sequence(rec, take, folder / "detail", paths.flame)
    seconds = time.perf_counter() - t0
    return {"detail_maps_per_s": round(DETAIL_FRAMES / seconds, 1), "detail_model": str(rec.info.get("name")),
            "detail_device": str(rec.device)}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="emoca_bench_likeness_") as tmp:
        folder = Path(tmp)
        return {**known_likeness(folder, args.device), **second_identity(folder, args.device),
                **detail_speed(folder, args.device)}  # fmt: skip


if __name__ == "__main__":
    from backend.app.bench import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    for key, value in run(parser.parse_args()).items():
        print(f"{key}: {value}")
