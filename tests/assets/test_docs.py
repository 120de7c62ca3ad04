"""docs/assets.md agrees with the code: every asset, archive name and JSON field is documented."""

from __future__ import annotations

from pathlib import Path

from backend import assets

DOC = (Path(__file__).resolve().parents[2] / "docs" / "assets.md").read_text(encoding="utf-8")


def test_every_asset_and_archive_is_documented():
    for spec in assets.SPECS:
        assert f"`{spec.key}`" in DOC, spec.key
        assert spec.relpath in DOC, spec.relpath
    for name, item in assets.FETCH_ITEMS.items():
        assert f"`{name}`" in DOC, name
        path = item.path
        if path.startswith("emoca/assets/EMOCA/models/"):
            path = "emoca/assets/EMOCA/models/<name>.zip"
        assert path in DOC, item.path
    for name in assets.DEFAULT_FETCH:
        assert name in DOC


def test_json_fields_are_documented(asset_env):
    doc = assets.status_document(assets.status(), deep=False)
    for key in doc:
        assert f'"{key}"' in DOC, key
    for key in doc["assets"][0]:
        assert f'"{key}"' in DOC, key
    for cap, fields in doc["capabilities"].items():
        assert f'"{cap}"' in DOC, cap
        for f in fields:
            assert f'"{f}"' in DOC, (cap, f)
