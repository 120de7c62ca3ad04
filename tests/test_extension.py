"""The extension zip: built and validated by Blender's own tool, installed into the real Blender, enabled, disabled.

Runs with whichever bpy this interpreter has (5.0.1 in the main run, 4.2 LTS in the legacy run). Blender is
driven in a subprocess so that its user folders can point at a temp dir (BLENDER_USER_RESOURCES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.blender, pytest.mark.slow]


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ext")
    subprocess.run(
        ["make", "-s", "extension", f"PY={sys.executable}", f"EXT_DIR={out / 'src'}", f"DIST={out / 'dist'}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    zips = list((out / "dist").glob("emoca_blender-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


def test_zip_bundles_the_backend_and_excludes_tests_and_docs(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "emoca_contract/protocol.py" in names and "emoca_contract/take.py" in names
    assert "backend/__main__.py" in names
    assert any(n.startswith("requirements/") for n in names)
    assert not any(n.startswith(("tests/", "docs/")) or "__pycache__" in n for n in names)
    # the vendored open assets travel with their licences (backend/vendor/README.md)
    for vendored in ("mediapipe/face_landmarker_v2_with_blendshapes.task", "mediapipe/LICENSE", "ict/ict_face.npz",
                     "ict/LICENSE", "ict/CREDITS.md", "README.md"):  # fmt: skip
        assert "backend/vendor/" + vendored in names, vendored


def test_zip_manifest_declares_the_network_its_environment_button_uses(extension_zip):
    """Create Backend Environment downloads from PyPI: the built (and Blender-validated) manifest says so."""
    manifest = tomllib.loads(zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode("utf-8"))
    assert set(manifest["permissions"]) == {"files", "network"}
    assert "Create Backend Environment" in manifest["permissions"]["network"]


INSTALL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import bpy
    import addon_utils
    zip_path = sys.argv[1]
    module = "bl_ext.user_default.emoca_blender"

    def ours():
        found = []
        for name in dir(bpy.types):
            cls = getattr(bpy.types, name, None)
            if getattr(cls, "__module__", "").startswith(module):
                found.append(name)
        return sorted(found)

    before = ours()
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    enabled = addon_utils.check(module)
    registered = ours()
    prefs = module in bpy.context.preferences.addons and bpy.context.preferences.addons[module].preferences
    ops = sorted(o for o in dir(bpy.ops.emoca)) if hasattr(bpy.ops, "emoca") else []
    bpy.ops.preferences.addon_disable(module=module)
    after = ours()
    still_loaded = [m for m in sys.modules if m.startswith(module)]
    bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "cv2", "av", "mediapipe")]
    print("RESULT" + json.dumps(dict(before=before, enabled=list(enabled), registered=registered,
        prefs=bool(prefs), prefs_type=type(prefs).__name__, ops=ops, after=after, heavy_modules=bad)))
    """
)


def test_installs_registers_and_unregisters_in_real_blender(extension_zip, tmp_path):
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender user é"))
    proc = subprocess.run(
        [sys.executable, "-c", INSTALL_SCRIPT, str(extension_zip)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(line[len("RESULT") :])
    assert res["before"] == []
    assert res["enabled"] == [True, True], res
    assert res["prefs"], "add-on preferences are not registered"
    panels = [n for n in res["registered"] if "_PT_" in n]
    operators = [n for n in res["registered"] if "_OT_" in n]
    assert panels and operators, res["registered"]
    assert {"capture", "import_rig"} <= set(res["ops"]), res["ops"]
    assert res["after"] == [], f"left registered after disabling: {res['after']}"
    assert res["heavy_modules"] == [], "enabling the add-on imported backend-only modules"
    installed = tmp_path / "blender user é" / "extensions" / "user_default" / "emoca_blender"
    assert (installed / "backend" / "__main__.py").is_file()
    assert (installed / "emoca_contract" / "protocol.py").is_file()


BUNDLED_BACKEND_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from importlib import import_module
    import bpy
    bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
    client = import_module("bl_ext.user_default.emoca_blender.client")
    api = import_module("bl_ext.user_default.emoca_blender.api")
    rig_file = api.export_rig(sys.argv[2], python=sys.executable)  # the backend process, via the protocol
    arm = api.import_rig(rig_file)
    print("RESULT" + json.dumps({"backend_root": str(client.backend_root()), "rig": str(rig_file),
                                 "armature": arm.name, "bones": sorted(b.name for b in arm.data.bones)}))
    """
)


@pytest.mark.torch
def test_installed_extension_runs_its_bundled_backend(extension_zip, tmp_path):
    user = tmp_path / "user"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user), PYTHONPATH="")
    out = tmp_path / "rig é.npz"
    proc = subprocess.run(
        [sys.executable, "-c", BUNDLED_BACKEND_SCRIPT, str(extension_zip), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads(line[len("RESULT") :])
    # the backend that ran is the copy inside the installed extension, not this checkout
    assert Path(res["backend_root"]).is_relative_to(user) and Path(res["backend_root"]).name == "backend"
    assert out.is_file() and res["bones"] == ["eye_L", "eye_R", "head", "jaw", "neck", "root"]  # the open head
