"""The stdio protocol and the error codes: the contract between the add-on and the backend."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest

from emoca_contract import protocol
from emoca_contract.errors import ERROR_CODES, EmocaError
from emoca_contract.fields import check_fields

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


# ---------------------------------------------------------------------------------------------- typed fields
def _line(**fields) -> str:
    return json.dumps({"version": 1, **fields})


CAPTURE = {"type": "capture", "id": "c", "input": "clip.mp4", "output": "take.npz"}


@pytest.mark.parametrize(
    "line, field, expected",
    [
        # issue 13 case 7: each came back as `internal` "This is a bug"
        (_line(**{**CAPTURE, "input": 12}), "'input'", "a string"),
        (_line(**{**CAPTURE, "options": "abc"}), "'options'", "an object or null"),
        (_line(**{**CAPTURE, "output": None}), "'output'", "a string"),
        (_line(**{**CAPTURE, "id": [1]}), "'id'", "a string or an integer"),
        (_line(type="train", id="t", config="c", overrides="a=1"), "'overrides'", "a list (each a string) or null"),
        (_line(type="export_rig", id="r", output="rig.npz", n_exp="50"), "'n_exp'", "an integer or null"),
        (_line(type="export_rig", id="r", output="rig.npz", n_exp=True), "'n_exp'", "an integer or null"),
        (_line(type="progress", id="c", done="3", total=10, stage="encode"), "'done'", "an integer"),
        (_line(type="progress", id="c", done=3, total=10, stage="encode", eta="soon"), "'eta'", "a number or null"),
        (_line(type="result", id="c", files=["a", 1]), "'files'", "a list (each a string)"),
        (_line(type="error", code=5, message="m"), "'code'", "a string"),
    ],
)
def test_wrongly_typed_fields_are_refused_naming_the_field_and_the_type(line, field, expected):
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.decode(line)
    assert field in str(err.value) and f"expected {expected}," in str(err.value)
    assert err.value.code == "protocol" and err.value.code in ERROR_CODES


@pytest.mark.parametrize(
    "line, fragment",
    [
        ('{"type": "status", "version": true, "id": "x"}', "version True"),  # True == 1 in Python
        ('{"type": ["capture"], "version": 1}', "unknown message type"),  # unhashable: was a raw TypeError
        ("[" * 100_000, "not JSON"),  # nesting deeper than the recursion limit: was a raw RecursionError
        ('{"type": "status", "version": 1, "id": ' + "1" * 5000 + "}", "not JSON"),  # Python's int digit limit
    ],
)
def test_lines_that_used_to_escape_as_raw_exceptions(line, fragment):
    with pytest.raises(protocol.ProtocolError, match=fragment):
        protocol.decode(line)


def test_optional_fields_may_be_null_or_absent_and_extra_fields_pass():
    msg = protocol.decode(_line(**CAPTURE, options=None))
    assert msg["options"] is None
    msg = protocol.decode(_line(type="result", id=7, files=[], model="FLAME 2020", tracks=[1, 2]))
    assert msg["model"] == "FLAME 2020" and msg["id"] == 7
    assert protocol.decode(_line(type="progress", id="c", done=1, total=2, stage="s", fps=30, eta=None))["fps"] == 30


def test_the_field_table_is_the_required_table_and_uses_wire_types_only():
    for type_, fields in protocol.FIELDS.items():
        assert protocol.REQUIRED_FIELDS[type_] == tuple(n for n, f in fields.items() if f.required)
        for field in fields.values():
            protocol.matches(None, field.want)  # a table bug (not a wire type) raises TypeError
            assert protocol.describe(field.want)
    assert set(protocol.FIELDS) == set(protocol.REQUEST_TYPES + protocol.EVENT_TYPES)


@pytest.mark.parametrize(
    "value, want, ok",
    [
        (3, int, True),
        (True, int, False),
        (3.0, int, False),
        (3, float, True),
        (False, float, False),
        (None, int | None, True),
        ("x", int | None, False),
        ([1, 2], list[int], True),
        ([1, "2"], list[int], False),
        ((1, 2), tuple[int, ...], True),
        ([1, 2], tuple[int, ...], True),
        ([1, 2], tuple[int, str], False),
        ({"a": 1}, dict[str, int], True),
        ({"a": "1"}, dict[str, int], False),
        ({"a": [1]}, dict[str, typing.Any], True),
        ({}, list, False),
        (Path("x"), Path | None, True),
        ("x", Path | None, False),  # a class that is not a JSON type matches its own instances only
    ],
)
def test_wire_type_language(value, want, ok):
    assert protocol.matches(value, want) is ok
    assert (protocol.type_problem(value, want) is None) is ok


def test_check_fields_checks_a_dataclass_by_its_annotations():
    @dataclasses.dataclass
    class Opts:
        name: str = "x"
        count: int | None = None
        ratio: float = 0.5
        tags: list[str] = dataclasses.field(default_factory=list)

    assert check_fields(Opts, {"count": 3, "ratio": 1, "tags": ["a"]}, "test option") == {
        "count": 3,
        "ratio": 1,
        "tags": ["a"],
    }
    for data, fragment in [
        ({"count": "3"}, "test option 'count': expected an integer or null, got string '3'"),
        ({"ratio": None}, "test option 'ratio': expected a number, got null None"),
        ({"tags": "a"}, "test option 'tags': expected a list (each a string)"),
        ({"colour": 1}, "unknown test option(s) ['colour']; known: ['count', 'name', 'ratio', 'tags']"),
        ("abc", "test options must be an object"),
    ]:
        with pytest.raises(EmocaError) as err:
            check_fields(Opts, data, "test option")
        assert err.value.code == "config_invalid" and fragment in err.value.message, err.value.message


def _protocol_doc_rows() -> dict[str, str]:
    doc = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Protocol (stdio, JSON lines)") :]
    return dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", section, flags=re.M))


def test_the_protocol_section_of_formats_md_lists_every_field_and_its_requirement():
    rows = _protocol_doc_rows()
    for type_, fields in protocol.FIELDS.items():
        named = set(re.findall(r"`(\w+)`", rows[type_]))
        required = set(re.findall(r"\*\*`(\w+)`\*\*", rows[type_]))
        assert set(fields) <= named, (type_, set(fields) - named)
        if type_ != "cancel":  # its row reads "`id` of the request to cancel"
            assert required == set(protocol.REQUIRED_FIELDS[type_]), (type_, required)
