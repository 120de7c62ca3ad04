"""The mapping: made by name, edited, saved to and loaded from JSON presets; every bad preset field is named."""

from __future__ import annotations

import json

import pytest

from emoca_blender.retarget.mapping import (
    BoneSettings,
    Entry,
    Mapping,
    auto_mapping,
    from_json,
    load_preset,
    save_preset,
    to_json,
)
from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.errors import EmocaError


def cc_names() -> list[str]:
    from emoca_blender.retarget.bench import scheme_name

    return [scheme_name(n, "cc") for n in ARKIT_NAMES]


def test_auto_mapping_drives_each_matched_key_with_unit_gain():
    mapping, report = auto_mapping(ARKIT_NAMES, [*cc_names(), "Sculpt_Fix"], bones=BoneSettings(head_bone="Head"))
    assert len(mapping.entries) == 52 and report.unmatched_targets == ["Sculpt_Fix"]
    assert mapping.entries[0] == Entry("eyeBlinkLeft", "CC_Eye_Blink_L", 1.0, 0.0, 0.0, 1.0)
    assert mapping.bones.head_bone == "Head"


def test_a_preset_round_trips_and_travels_to_a_character_with_the_same_names(unicode_tmp):
    mapping, _ = auto_mapping(ARKIT_NAMES, cc_names())
    edited = Mapping(
        entries=(*mapping.entries, Entry("jawOpen", "CC_Mouth_Open_Extra", 0.5, 0.1, 0.0, 0.4)),
        bones=BoneSettings(head_bone="Head", jaw_bone="Jaw", head_axes="X,-Z,Y", jaw_open_gain=0.3),
        name="CC character é",
    )
    path = save_preset(edited, unicode_tmp / "cc preset.json")
    loaded = load_preset(path)
    assert loaded == edited
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "emoca-retarget-preset" and doc["version"] == 1
    assert doc["entries"][-1] == {"source": "jawOpen", "target": "CC_Mouth_Open_Extra", "gain": 0.5,
                                  "offset": 0.1, "clamp": [0.0, 0.4]}  # fmt: skip
    assert loaded.sources().count("jawOpen") == 1 and "CC_Mouth_Open_Extra" in loaded.targets()


def test_with_bones_changes_only_the_bones_and_refuses_unknown_settings():
    mapping = Mapping(entries=(Entry("jawOpen", "Jaw_Open"),))
    changed = mapping.with_bones(jaw_bone="Jaw", jaw_open_axis="-X")
    assert changed.entries == mapping.entries and changed.bones.jaw_bone == "Jaw"
    with pytest.raises(EmocaError, match="unknown bone setting 'jaw_bones'"):
        mapping.with_bones(jaw_bones="Jaw")


def good_doc() -> dict:
    return to_json(Mapping(entries=(Entry("jawOpen", "Jaw_Open"),), bones=BoneSettings(head_bone="Head")))


BAD = {
    "not a preset": (lambda d: d.update(format="emoca-take"), "input_unsupported", "not a preset"),
    "newer version": (lambda d: d.update(version=2), "input_unsupported", "preset version 2"),
    "entries not a list": (lambda d: d.update(entries={}), "input_corrupt", "entries: is not a list"),
    "entry not an object": (lambda d: d["entries"].append(3), "input_corrupt", r"entries\[1\]"),
    "empty source": (lambda d: d["entries"][0].update(source=" "), "input_corrupt", r"entries\[0\].source"),
    "gain text": (lambda d: d["entries"][0].update(gain="1"), "input_corrupt", r"entries\[0\].gain"),
    "gain nan": (lambda d: d["entries"][0].update(gain=float("nan")), "input_corrupt", "not a finite number"),
    "clamp upside down": (lambda d: d["entries"][0].update(clamp=[1, 0]), "input_corrupt", "min 1 is above max 0"),
    "clamp short": (lambda d: d["entries"][0].update(clamp=[0]), "input_corrupt", "is not \\[min, max\\]"),
    "bad axes": (lambda d: d["bones"].update(head_axes="X,X,Z"), "input_corrupt", "each of X, Y and Z"),
    "bad axis": (lambda d: d["bones"].update(jaw_open_axis="W"), "input_corrupt", "jaw_open_axis"),
    "unknown bone field": (lambda d: d["bones"].update(neck_bone="Neck"), "input_corrupt", "neck_bone"),
    "same bone twice": (lambda d: d["bones"].update(jaw_bone="Head"), "input_corrupt", "both drive bone 'Head'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_preset_names_the_field(case, tmp_path):
    damage, code, message = BAD[case]
    doc = good_doc()
    damage(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(EmocaError, match=message) as err:
        load_preset(path)
    assert err.value.code == code and str(path) in err.value.message


def test_a_missing_or_unreadable_preset_file(tmp_path):
    with pytest.raises(EmocaError) as err:
        load_preset(tmp_path / "none.json")
    assert err.value.code == "input_missing"
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(EmocaError, match="not JSON") as err:
        load_preset(path)
    assert err.value.code == "input_corrupt"
    assert from_json(good_doc()).entries == (Entry("jawOpen", "Jaw_Open"),)
