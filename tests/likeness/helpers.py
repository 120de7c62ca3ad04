"""Takes for the likeness tests: truthful FLAME takes of rendered synthetic-head clips, open takes whose
detections are a known ICT identity's embedded points, and FLAME takes with a known detail sequence and its
sidecar (:func:`write_detail_sequence_files`: numpy and the stdlib only, for the Blender tests on 4.2 and 5.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emoca_contract.take import Take


def flame_truth_take(truth: dict, detail: bool = False, seed: int = 0) -> Take:
    """A FLAME take carrying the codes a synthetic-head clip was rendered with (backend.synthetic.render_clip):
    the synthetic head's (not FLAME), no network in between."""
    from backend.synthetic.head import NAME
    from backend.synthetic.take import make_synthetic_take

    n = truth["n_frames"]
    take = make_synthetic_take(n, fps=truth["fps"], seed=seed)
    a = take.arrays
    a["shape"][:] = 0.0
    for key in ("exp", "jaw_pose", "global_pose", "cam", "crop"):
        a[key][:] = truth[key]
        a["raw_" + key] = a[key].copy()
    if detail:
        a["detail"] = np.random.default_rng(seed).normal(0, 1, (n, 128)).astype(np.float32)
    w, h = truth["size"]
    take.meta["model"]["flame"] = NAME
    take.meta["source"].update(path=str(truth["path"]), width=w, height=h, fps=truth["fps"])
    return take


def write(take: Take, path: Path) -> Path:
    from backend.take.writer import write_take

    return write_take(path, take.arrays, take.meta)


def open_take_from_points(points: np.ndarray, rotation: np.ndarray, arkit: np.ndarray, size: tuple[int, int]) -> Take:
    """An open take whose detector points are ``points`` (K, 478, 2) frame pixels, its head rotation
    ``rotation`` (K, 3) and scores ``arkit`` (K, 52)."""
    from backend.synthetic.take import make_synthetic_open_take

    k = len(points)
    take = make_synthetic_open_take(k)
    for key, value in (("detected_landmarks", points), ("global_pose", rotation), ("arkit", arkit)):
        take.arrays[key] = np.asarray(value, np.float32)
        take.arrays["raw_" + key] = take.arrays[key].copy()
    take.meta["source"].update(width=size[0], height=size[1])
    return take


def embedded_points(coefficients: np.ndarray, rotation: np.ndarray, translation: np.ndarray, focal: float,
                    size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Where a performer with ICT identity ``coefficients`` shows the embedded detector points (K, 478, 2) under
    a pinhole (the noise-free detections of a perfect detector)."""
    from backend.ict.rig import pose_rig
    from backend.likeness.embedding import load_embedding
    from backend.synthetic.ict_likeness import performer_rig

    rig = performer_rig(coefficients)
    verts = pose_rig(rig, np.zeros((len(rotation), len(rig["shape_names"]))), rotation) + translation[:, None]
    x = load_embedding().points(verts)
    w, h = size
    return np.stack([(w - 1) / 2 + focal * x[..., 0] / -x[..., 2], (h - 1) / 2 - focal * x[..., 1] / -x[..., 2]], -1)


def detail_take(n_frames: int = 6, frames: tuple[int, ...] | None = None, fps: float = 25.0, seed: int = 0,
                invalid: tuple[int, ...] = ()) -> Take:  # fmt: skip
    """A FLAME take with detail codes (numpy only): ``frames`` its frame column (default: from 20, with gaps,
    as a frame range with dropped frames gives), times from the frame numbers, rows ``invalid`` without a face."""
    from backend.synthetic.take import make_synthetic_take

    take = make_synthetic_take(n_frames, fps=fps, seed=seed, invalid=invalid)
    numbers = np.asarray(frames if frames is not None else 20 + np.cumsum([0] + [1, 2] * n_frames)[:n_frames])
    take.arrays["frame"] = numbers.astype(np.int64)
    take.arrays["time"] = numbers / fps
    codes = np.random.default_rng(seed).normal(0, 1, (n_frames, 128)).astype(np.float32)
    take.arrays["detail"] = np.where(take.arrays["valid"][:, None], codes, 0).astype(np.float32)
    return take


def known_detail_maps(frames: np.ndarray, size: int = 256) -> np.ndarray:
    """Displacement maps (K, size, size) metres that tell frames and places apart: a bump at the UV square's
    centre of height 0.5 mm times (frame number mod 10 + 1), on a ramp rising 1 mm from the left edge to the right
    (row 0 is v = 1, column 0 is u = 0)."""
    u = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(u, 1 - u)
    bump = np.exp(-((uu - 0.5) ** 2 + (vv - 0.5) ** 2) / (2 * 0.08**2))
    height = 0.0005 * (np.asarray(frames) % 10 + 1)
    return height[:, None, None] * bump + 0.001 * uu


def write_detail_sequence_files(folder: Path, name: str = "détail", n_frames: int = 6,
                                frames: tuple[int, ...] | None = None, fps: float = 25.0) -> dict:  # fmt: skip
    """A FLAME take with a detail sequence and its sidecar in ``folder``, as ``python -m backend likeness TAKE
    --detail`` writes them but with :func:`known_detail_maps` for maps (numpy and the stdlib only: no torch, no
    image library; for the Blender tests on 4.2 and 5.0). Returns take (Path), sidecar (Path), folder (the
    sequence's, Path), frames (list), pattern (absolute, one %d) and maps (K, 256, 256) metres as written (after
    the 16-bit quantisation: what a reader decodes)."""
    from backend.likeness.detail import decode, detail_section, encode, write_map
    from backend.likeness.sidecar import write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    take = detail_take(n_frames, frames, fps)
    path = write(take, folder / f"{name}.npz")
    sequence = folder / f"{name}_detail"
    sequence.mkdir(exist_ok=True)
    numbers = take["frame"]
    maps = known_detail_maps(numbers)
    for f, d in zip(numbers.tolist(), maps):
        write_map(sequence / f"{int(f):06d}.png", d)
    section = detail_section(take, sequence.name, False, False, "known maps (tests/likeness/helpers.py)")
    sidecar = write_sidecar(path, {"detail": section})
    return {"take": path, "sidecar": sidecar, "folder": sequence, "frames": [int(f) for f in numbers],
            "pattern": str(sequence / "%06d.png"), "maps": decode(encode(maps))}  # fmt: skip
