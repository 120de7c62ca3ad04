"""Property-based tests of the protocol decoder and of what the backend makes of a decoded request.

Every line either decodes into a message whose known fields all have their wire types, or is refused with a
ProtocolError (reported as the error code ``protocol``); a decoded request then either gives the job's checked
arguments or an ``EmocaError('config_invalid')`` (backend.app.serve.request_args, what serve runs before it
starts a job). Nothing else ever comes out: serve never answers ``internal`` for a malformed request.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from backend.app.serve import request_args
from backend.capture.options import CaptureOptions
from backend.footage.video import FrameRange
from emoca_contract import protocol
from emoca_contract.errors import ERROR_CODES, EmocaError
from emoca_contract.fields import field_types
from tests.fuzz.strategies import JSON, examples, typed_or_not, wire_values

pytestmark = pytest.mark.slow  # a few thousand cases: seconds each on 2 cores (make test runs them)

TYPES = sorted(protocol.FIELDS)


def _decode_or_refuse(line: str | bytes) -> dict | None:
    """The decoder's property; the message when it decodes."""
    try:
        msg = protocol.decode(line)
    except protocol.ProtocolError as exc:
        assert exc.code == "protocol" and exc.code in ERROR_CODES and str(exc)
        event("refused")
        return None
    assert msg["type"] in protocol.FIELDS and msg["version"] == protocol.PROTOCOL_VERSION
    for name, field in protocol.FIELDS[msg["type"]].items():
        assert name in msg or not field.required
        assert name not in msg or protocol.matches(msg[name], field.want), (name, msg[name])
    assert protocol.decode(protocol.encode(msg)) == json.loads(protocol.encode(msg))  # re-encodes as one line
    event(f"decoded {msg['type']}")
    return msg


# What a decoded request may be refused with before its job starts: a bad field, or (capture: its inputs, files,
# folders, globs and manifests, are expanded into clips first) an input that is missing, empty or not footage.
REFUSALS = ("config_invalid", "input_missing", "input_empty", "input_unsupported")


def _job_args_or_refuse(msg: dict) -> None:
    """What serve does with a decoded request before starting a job: checked arguments or a clear refusal."""
    if msg["type"] not in ("capture", "export_rig", "train"):
        return
    try:
        args = request_args(msg["type"], msg)
    except EmocaError as exc:
        assert exc.code in REFUSALS, exc.report()
        event(exc.code)
        return
    if msg["type"] == "capture":
        assert isinstance(args["options"], CaptureOptions)
    event(f"{msg['type']} accepted")


@settings(max_examples=examples(600))
@given(line=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_lines_decode_or_are_refused(line):
    _decode_or_refuse(line)


@st.composite
def messages(draw) -> dict:
    """A well-typed message built from the field table (optional fields sometimes left out, extra fields
    sometimes added), then up to two corruptions: a field replaced by any JSON value or removed, the type or the
    version replaced. About half the messages stay valid, so the checks behind decoding are reached too."""
    type_ = draw(st.sampled_from(TYPES))
    msg: dict = {"type": type_, "version": protocol.PROTOCOL_VERSION}
    for name, field in protocol.FIELDS[type_].items():
        if field.required or draw(st.booleans()):
            msg[name] = draw(wire_values(field.want))
    if draw(st.booleans()):
        msg.update(draw(st.dictionaries(st.text(max_size=8), JSON, max_size=2)))
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(msg)))
        if draw(st.booleans()):
            msg[name] = draw(JSON)
        else:
            del msg[name]
    return msg


@settings(max_examples=examples(900))
@given(msg=messages())
def test_messages_from_the_field_table_decode_or_are_refused(msg):
    decoded = _decode_or_refuse(json.dumps(msg))
    if decoded is not None:
        _job_args_or_refuse(decoded)


# the names and types CaptureOptions.from_dict checks (its fields, plus the smoothing words)
OPTION_TYPES = {**field_types(CaptureOptions, {"FrameRange": FrameRange}), "smooth": str | None,
                "smooth_strength": float | None}  # fmt: skip


@st.composite
def capture_options(draw) -> dict:
    """Capture options: known names with values of their field's type (or any JSON), sometimes unknown names."""
    names = draw(st.lists(st.sampled_from(sorted(OPTION_TYPES)), max_size=5, unique=True))
    options = {name: draw(typed_or_not(OPTION_TYPES[name])) for name in names}
    if draw(st.booleans()):
        options["smooth"] = draw(st.sampled_from(["off", "butterworth", "one_euro", "x"]))
    if draw(st.integers(0, 9)) == 0:
        options[draw(st.text(max_size=8))] = draw(JSON)
    return options


@settings(max_examples=examples(600))
@given(options=capture_options() | JSON)
def test_capture_options_give_capture_options_or_config_invalid(options):
    request = {"type": "capture", "version": 1, "id": "c", "input": "a.mp4", "output": "a.npz"}
    msg = _decode_or_refuse(json.dumps({**request, "options": options}))
    if msg is not None:
        _job_args_or_refuse(msg)
