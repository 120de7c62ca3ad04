"""The stdio protocol and the error codes: the contract between the add-on and the backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from emoca_contract import protocol
from emoca_contract.errors import ERROR_CODES, EmocaError

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_every_event_type():
    msgs = [
        protocol.progress("a", 3, 10, "encode", fps=24.5, eta=1.2),
        protocol.make("log", level="info", message="hello é"),
        protocol.make("warning", message="fell back to fer", code="asset_missing"),
        protocol.make("result", id="a", files=["/tmp/x.npz"]),
        protocol.error("no_face", "no face in clip.mp4", id_="a"),
    ]
    for msg in msgs:
        line = protocol.encode(msg)
        assert line.endswith("\n") and "\n" not in line[:-1]
        assert protocol.decode(line) == msg
        assert json.loads(line)["version"] == protocol.PROTOCOL_VERSION


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "launch", "version": 1}', "unknown message type"),
        ('{"type": "status", "version": 99, "id": "x"}', "version 99"),
        ('{"type": "capture", "version": 1, "id": "x"}', "lacks input, output"),
    ],
)
def test_bad_lines_are_refused_with_a_reason(line, fragment):
    with pytest.raises(protocol.ProtocolError, match=fragment):
        protocol.decode(line)


def test_every_request_type_has_required_fields():
    for t in protocol.REQUEST_TYPES + protocol.EVENT_TYPES:
        assert t in protocol.REQUIRED_FIELDS


def test_error_codes_are_documented_with_their_fix():
    doc = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, flags=re.M))
    assert documented == set(ERROR_CODES), documented ^ set(ERROR_CODES)


def test_backend_error_carries_code_message_and_hint():
    exc = EmocaError("asset_missing", "generic_model.pkl not found in /x")
    assert exc.to_dict()["hint"] == ERROR_CODES["asset_missing"]
    assert "generic_model.pkl" in str(exc)
    with pytest.raises(ValueError):
        EmocaError("no_such_code", "x")


def test_protocol_module_is_stdlib_only():
    """The add-on loads emoca_contract/protocol.py inside Blender, where torch and friends do not exist."""
    src = (ROOT / "emoca_contract" / "protocol.py").read_text(encoding="utf-8")
    imports = set(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", src, flags=re.M))
    assert imports <= {"__future__", "json", "typing"}, imports


def test_contract_package_imports_only_numpy_the_stdlib_and_itself():
    """Blender's Python loads the whole contract; it has numpy and the stdlib, nothing of the backend's."""
    import ast
    import sys

    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    files = sorted((ROOT / "emoca_contract").glob("*.py"))
    assert {p.stem for p in files} >= {"errors", "protocol", "take", "rig", "rotations"}
    for path in files:
        imports = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imports |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imports.add((node.module or "").split(".")[0])
        # the contract's own modules are imported relatively, so the add-on can load it by path
        assert imports <= allowed, (path.name, imports - allowed)
