"""The add-on imports only bpy, numpy, the stdlib and itself (never torch, cv2, av, mediapipe or backend.*)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "cv2", "av", "mediapipe", "backend", "scipy", "fer", "face_alignment", "lightning")

SCRIPT = """
import sys, importlib, pkgutil
sys.path.insert(0, sys.argv[1])
import bpy
before = set(sys.modules)
import emoca_blender
for m in pkgutil.iter_modules(emoca_blender.__path__):
    importlib.import_module("emoca_blender." + m.name)
emoca_blender.register()
emoca_blender.client.protocol.make('status', id='x')
emoca_blender.unregister()
new = set(sys.modules) - before
print("\\n".join(sorted(new)))
"""


def test_importing_and_registering_pulls_in_no_heavy_module():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = out.stdout.split()
    assert any(m.startswith("emoca_blender.") for m in loaded)
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert not bad, bad


def test_source_has_no_forbidden_import_statement():
    for path in (ROOT / "emoca_blender").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
