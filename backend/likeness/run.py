"""``likeness()``: a take and its footage in, the performer's likeness out, beside the take (docs/likeness.md).

Files, for a take ``NAME.npz`` (in ``output``, default the take's folder):

* ``NAME_identity.npz``: the identity (backend.likeness.identity; docs/formats.md "Identity file");
* ``NAME_albedo.png`` and ``NAME_coverage.png``: the texture and how well each texel was seen
  (backend.likeness.texture);
* ``NAME_detail/%06d.png``: the detail displacement per frame (backend.likeness.detail);
* ``NAME.likeness.json`` beside the take: the sidecar saying where those are and how they were made
  (``emoca_contract.take.read_likeness`` reads it). The take file itself is never rewritten; the sidecar is
  written last and atomically, merging what an earlier run wrote (a texture run after an identity run keeps the
  identity), so a half-finished run leaves the previous sidecar as it was.

Which head: an open take gets the ICT rig's identity, UVs and cameras (the fit's); a FLAME take the FLAME model's
(the user's FLAME file, or the synthetic test head when the take was captured on it) and the take's own
weak-perspective cameras and crops.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.likeness.identity import (
    Identity,
    IdentityOptions,
    OpenFit,
    confident_rows,
    flame_identity,
    open_cameras,
    open_identity,
    write_identity,
)
from backend.likeness.sidecar import relative, write_sidecar
from backend.likeness.texture import PosedFrames, TextureOptions, TextureResult, unwrap_clip, write_png
from emoca_contract.errors import EmocaError
from emoca_contract.take import Take, read_take

Progress = Callable[[int, int, str], None]
BATCH = 4  # frames unwrapped at once


@dataclass(frozen=True)
class LikenessOptions:
    """What to make and from what. ``identity_takes``: more takes of the same performer for the identity;
    ``flame``/``model``: the FLAME file and EMOCA model (default: the installed ones); ``frames``: every n-th
    confident frame for the texture (1: all)."""

    identity: bool = True
    texture: bool = True
    detail: bool = False
    identity_takes: tuple[str, ...] = ()
    flame: str | None = None
    model: str | None = None
    device: str = "auto"
    texels: int = 512
    frames: int = 1
    min_confidence: float = 0.5
    focal: float | None = None
    delight: bool = True


@dataclass
class Job:
    """One run's state: the take, where things go, the callbacks."""

    take: Take
    video: Path | None
    output: Path
    options: LikenessOptions
    progress: Progress | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    warn: Callable[[str], None] | None = None

    @property
    def stem(self) -> str:
        return self.take.path.name.removesuffix(".npz") if self.take.path else "take"

    def check(self, done: int, total: int, stage: str) -> None:
        if self.cancel.is_set():
            raise EmocaError("cancelled", "likeness cancelled")
        if self.progress is not None:
            self.progress(done, total, stage)


# ---------------------------------------------------------------------------------------------- heads
def flame_model(take: Take, flame: str | None):
    """The FLAME-layout head a FLAME take was captured on: the synthetic test head when its meta says so, else
    the given or installed FLAME file with its head_template.obj UVs. (FlameData, the FLAME file or None)."""
    from backend.synthetic.head import NAME, synthetic_head

    if take.meta.get("model", {}).get("flame") == NAME:
        return synthetic_head(), None
    from backend.assets.resolve import resolve_capture
    from backend.flame.io import load_flame, read_obj_uvs

    path = Path(flame) if flame is not None else resolve_capture().flame
    if path is None:
        raise EmocaError("asset_missing", "a FLAME take's likeness needs the FLAME model (generic_model.pkl)",
                         "Pass --flame PATH, or install FLAME (docs/assets.md).")  # fmt: skip
    model = load_flame(path)
    obj = path.parent / "head_template.obj"
    if model.uvs is None and obj.is_file():
        model.uvs, model.uv_faces = read_obj_uvs(obj, model.faces)
    return model, path


def flame_posed(take: Take, flame_layer, faces: np.ndarray, rows: np.ndarray) -> PosedFrames:
    """A FLAME take's rows posed by the FLAME layer in their own cameras (the take's unsmoothed codes: what each
    frame showed)."""
    import torch

    from backend.likeness.heads import crop_frames

    def raw(key: str) -> np.ndarray:
        return take["raw_" + key][rows] if "raw_" + key in take else take[key][rows]

    pose = np.concatenate([raw("global_pose"), raw("jaw_pose")], 1)
    with torch.no_grad():
        out = flame_layer(torch.as_tensor(take["shape"][rows]), torch.as_tensor(raw("exp")), torch.as_tensor(pose))
    verts = out.vertices.double().numpy()
    return crop_frames(verts, faces, raw("cam").astype(np.float64), raw("crop").astype(np.float64))


def open_posed(cams, identity: Identity, faces: np.ndarray, index: np.ndarray) -> PosedFrames:
    """Rows ``index`` (into ``cams``) of an open take posed on the mean rig with the identity, in the fit's
    cameras."""
    from backend.ict.rig import pose_rig
    from backend.likeness.heads import mean_open_rig, pinhole_frames

    rig = {**mean_open_rig(), "identity": identity.offsets}
    verts = pose_rig(rig, cams.values[index], cams.head[index]) + cams.translation[index][:, None]
    k = len(index)
    return pinhole_frames(verts, faces, np.full(k, cams.focal), np.tile(cams.centre, (k, 1)))


# ---------------------------------------------------------------------------------------------- frames
def check_footage(take: Take, info) -> None:
    """EmocaError('input_unsupported') unless the footage has the take's frame size."""
    src = take.meta.get("source", {})
    if src.get("width") and (int(src["width"]), int(src["height"])) != (info.width, info.height):
        raise EmocaError("input_unsupported", f"{info.path}: {info.width}x{info.height} frames, but the take was "
                         f"captured from {src['width']}x{src['height']} footage",
                         "Give the footage the take was captured from.")  # fmt: skip


def frame_images(video: Path, take: Take, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices (k,), images (k, H, W, 3) uint8) in batches of :data:`BATCH`, decoding the footage once."""
    from backend.footage.video import FrameRange, open_footage

    if len(rows) == 0:
        return
    frames = take["frame"]
    wanted = {int(frames[r]): int(r) for r in rows}
    pending: list[tuple[int, np.ndarray]] = []
    with open_footage(video, FrameRange(min(wanted), max(wanted) + 1)) as footage:
        check_footage(take, footage.info)
        for frame in footage:
            if frame.index in wanted:
                pending.append((wanted[frame.index], frame.image))
            if len(pending) == BATCH:
                yield np.array([p[0] for p in pending]), np.stack([p[1] for p in pending])
                pending = []
    if pending:
        yield np.array([p[0] for p in pending]), np.stack([p[1] for p in pending])


def texture_rows(take: Take, options: LikenessOptions) -> np.ndarray:
    """Every ``frames``-th confident row."""
    rows = np.flatnonzero(confident_rows(take, options.min_confidence))
    return rows[:: max(1, options.frames)]


# ---------------------------------------------------------------------------------------------- steps
def make_identity(job: Job) -> tuple[Identity, OpenFit | None]:
    """The identity from the take (and ``identity_takes``): ICT's modes fitted, or FLAME's robust mean shape."""
    takes = [job.take, *[read_take(p) for p in job.options.identity_takes]]
    opts = IdentityOptions(min_confidence=job.options.min_confidence, focal=job.options.focal)
    name = job.take.clip_name
    if job.take.kind == "open":
        fit = open_identity(takes, opts, name)
        return fit.identity, fit
    shapedirs = None
    try:
        model, _ = flame_model(job.take, job.options.flame)
        shapedirs = model.shapedirs
    except EmocaError as exc:  # the coefficients alone serve a FLAME rig, which holds its own basis
        if job.warn is not None:
            job.warn(f"identity offsets not computed ({exc.message}); the coefficients are written")
    return flame_identity(takes, opts, shapedirs, name), None


def make_texture(job: Job, identity: Identity, fit: OpenFit | None) -> tuple[TextureResult, dict]:
    """Unwrap the footage over the take's confident rows; (the result, the sidecar's extra texture fields)."""
    from backend.likeness.heads import flame_layout, mean_open_rig, open_layout

    if job.video is None:
        raise EmocaError("config_invalid", "a texture needs the take's footage (VIDEO)")
    rows = texture_rows(job.take, job.options)
    topts = TextureOptions(texels=job.options.texels, delight=job.options.delight)
    total = len(rows)
    if job.take.kind == "open":
        assert fit is not None and identity.offsets is not None
        layout = open_layout()
        cams = open_cameras(
            job.take, fit, rows=rows, options=IdentityOptions(min_confidence=job.options.min_confidence)
        )
        where = {int(r): i for i, r in enumerate(cams.rows)}
        rest = np.asarray(mean_open_rig()["v_template"], np.float64) + identity.offsets

        def pose(batch_rows: np.ndarray) -> PosedFrames:
            return open_posed(cams, identity, layout.faces, np.array([where[int(r)] for r in batch_rows]))

        head = "ict"
    else:
        import torch

        from backend.flame.layer import FLAME

        model, _ = flame_model(job.take, job.options.flame)
        layout = flame_layout(model)
        layer = FLAME(model).eval()
        with torch.no_grad():
            shape = torch.as_tensor(identity.coefficients[None])
            rest = layer(shape, torch.zeros(1, job.take.n_exp), torch.zeros(1, 6)).vertices[0].double().numpy()

        def pose(batch_rows: np.ndarray) -> PosedFrames:
            return flame_posed(job.take, layer, layout.faces, batch_rows)

        head = "flame"
    batches = ((images, pose(batch_rows)) for batch_rows, images in frame_images(job.video, job.take, rows))
    result = unwrap_clip(batches, layout, layout.faces, rest, topts, check=lambda d: job.check(d, total, "texture"))
    return result, {"head": head, "uv_range": [list(r) for r in layout.uv_range]}


def make_detail(job: Job, folder: Path) -> dict:
    """The detail sequence from the EMOCA model's decoder, written into ``folder``."""
    from backend.assets.resolve import resolve_capture
    from backend.likeness.detail import check_detail_take, write_detail_sequence
    from backend.models.reconstructor import FaceReconstructor

    check_detail_take(job.take)
    paths = resolve_capture(job.options.model, job.options.flame)
    if paths.model is None:
        raise EmocaError("asset_missing", "detail maps need an EMOCA model with the detail branch",
                         "Pass --model PATH, or install EMOCA (docs/assets.md).")  # fmt: skip
    rec = FaceReconstructor.from_paths(paths.model, paths.flame, device=job.options.device, precision="fp32",
                                       landmarks=paths.landmarks)  # fmt: skip
    total = job.take.n_frames
    return write_detail_sequence(rec, job.take, folder, paths.flame, check=lambda d: job.check(d, total, "detail"))


@dataclass
class Staging:
    """Files written under temporary names and moved into place together at the end (so that a failed or
    cancelled run leaves the previous likeness as it was): (temporary, final) pairs."""

    moves: list[tuple[Path, Path]] = field(default_factory=list)

    def path(self, final: Path) -> Path:
        tmp = final.with_name(final.name + ".partial" + (final.suffix if final.suffix else ""))
        self.moves.append((tmp, final))
        return tmp

    def commit(self) -> None:
        import shutil

        for tmp, final in self.moves:
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(tmp, final)

    def discard(self) -> None:
        import shutil

        for tmp, _ in self.moves:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def likeness(
    take_path: str | os.PathLike,
    video: str | os.PathLike | None,
    output: str | os.PathLike | None = None,
    options: LikenessOptions = LikenessOptions(),
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Make what ``options`` asks for; returns {"sidecar": path, "files": [...], sections...}. Nothing is left
    behind by a run that fails or is cancelled (EmocaError 'cancelled')."""
    take = read_take(take_path)
    out = Path(output) if output is not None else Path(take_path).parent
    job = Job(take, Path(video) if video is not None else None, out, options, progress, cancel or threading.Event(),
              warn)  # fmt: skip
    if not (options.identity or options.texture or options.detail):
        raise EmocaError("config_invalid", "nothing to make: ask for --identity, --texture and/or --detail")
    if options.texture and video is None:
        raise EmocaError("config_invalid", "a texture needs the take's footage: give VIDEO")
    relative(out, Path(take_path).parent)  # the output must lie beside the take (the sidecar names files there)
    out.mkdir(parents=True, exist_ok=True)
    staging = Staging()
    try:
        sections, files = make_sections(job, staging)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    sidecar = write_sidecar(Path(take_path), sections)
    return {"sidecar": str(sidecar), "files": files, **sections}


def make_sections(job: Job, staging: Staging) -> tuple[dict[str, Any], list[str]]:
    """Run the steps asked for, writing through ``staging``: (the sidecar's sections, the final file paths)."""
    options, out, folder = job.options, job.output, Path(job.take.path or ".").parent
    sections: dict[str, Any] = {}
    files: list[str] = []
    identity, fit = (None, None)
    if options.identity or options.texture:
        job.check(0, 1, "identity")
        identity, fit = make_identity(job)
    if options.identity and identity is not None:
        head = "ict" if identity.kind == "open" else "flame"
        final = out / f"{job.stem}_identity.npz"
        write_identity(staging.path(final), identity, head)
        files.append(str(final))
        sections["identity"] = {"file": relative(final, folder), "name": identity.name, "kind": identity.kind,
                                "head": head, "coefficients": [round(float(c), 6) for c in identity.coefficients],
                                **identity.meta}  # fmt: skip
    if options.texture and identity is not None:
        result, extra = make_texture(job, identity, fit)
        albedo, coverage = out / f"{job.stem}_albedo.png", out / f"{job.stem}_coverage.png"
        write_png(staging.path(albedo), result.albedo)
        write_png(staging.path(coverage), result.coverage)
        files += [str(albedo), str(coverage)]
        h, w = result.coverage.shape
        light = None if result.light is None else [round(float(v), 5) for v in result.light]
        sections["texture"] = {"albedo": relative(albedo, folder), "coverage": relative(coverage, folder),
                               "size": [w, h], "colorspace": "sRGB", "frames": result.frames,
                               "seen": round(float(result.seen.mean()), 4), "delit": options.delight, "light": light,
                               **extra}  # fmt: skip
    if options.detail:
        final = out / f"{job.stem}_detail"
        detail = make_detail(job, staging.path(final))
        detail["pattern"] = relative(final, folder) + "/" + detail["pattern"].split("/", 1)[1]
        sections["detail"] = detail
        files.append(str(final))
    return sections, files


def identity_for_rig(takes: Sequence[str | os.PathLike], options: LikenessOptions = LikenessOptions()) -> Identity:
    """The identity to bake into a rig from one or more takes of one performer: the first take's identity file
    when its sidecar has one, else estimated now (no footage needed)."""
    from emoca_contract.take import read_identity, read_likeness

    first = read_take(takes[0])
    side = read_likeness(takes[0]) if len(takes) == 1 else None
    if side is not None and side.get("identity", {}).get("present"):
        data = read_identity(side["identity"]["file_path"])
        meta = data["meta"]
        return Identity(meta["kind"], meta.get("name", first.clip_name), data["coefficients"], data.get("offsets"),
                        meta)  # fmt: skip
    job = Job(first, None, Path(takes[0]).parent, LikenessOptions(identity_takes=tuple(str(t) for t in takes[1:]),
              flame=options.flame, min_confidence=options.min_confidence, focal=options.focal))  # fmt: skip
    return make_identity(job)[0]
