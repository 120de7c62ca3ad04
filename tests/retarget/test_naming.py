"""Name matching: the naming variants artists meet read as the same ARKit channel, and what does not match is said."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from emoca_blender.retarget.naming import canonical, match_names, words
from emoca_contract.arkit import ARKIT_NAMES

ROOT = Path(__file__).resolve().parents[2]
PURE = ("naming", "mapping", "bones", "engine", "sources", "options")

VARIANTS = {
    "mouthSmileLeft": "exact",
    "mouthSmile_L": "same letters",
    "MouthSmileLeft": "same letters",
    "Mouth_Smile_L": "same letters",
    "mouth_smile_left": "same letters",
    "mouth-smile.l": "same letters",
    "mouthSmile.L": "same letters",
    "mouthSmile_Left": "same letters",
    "MOUTHSMILELEFT": "same letters",
    "mouthsmile_l": "same letters",
    "L_mouthSmile": "same letters",
    "A24_Mouth_Smile_L": "prefix",
    "CC_Mouth_Smile_L": "prefix",
    "CC_Base_Mouth_Smile_L": "prefix",
}


@pytest.mark.parametrize("target", list(VARIANTS))
def test_every_variant_of_a_name_matches_its_channel(target):
    found = match_names(ARKIT_NAMES, [target])
    assert [(m.source, m.target, m.how) for m in found.matches] == [("mouthSmileLeft", target, VARIANTS[target])]
    assert found.unmatched_targets == [] and "mouthSmileLeft" not in found.unmatched_sources


def test_the_dropped_prefix_is_the_names_own_text():
    (match,) = match_names(ARKIT_NAMES, ["CC_Base_Mouth_Smile_L"]).matches
    assert match.prefix == "CC_Base" and "prefix 'CC_Base'" in match.describe()
    (match,) = match_names(ARKIT_NAMES, ["A24_Mouth_Smile_L"]).matches
    assert match.prefix == "A24"


def test_words_split_case_changes_separators_and_digits():
    assert words("CC_Mouth_Smile_L") == ["cc", "mouth", "smile", "l"]
    assert words("eyeLookInRight") == ["eye", "look", "in", "right"]
    assert words("A25_jawOpen") == ["a", "25", "jaw", "open"]
    assert words("HTMLParser.L") == ["html", "parser", "l"]
    assert canonical("mouthSmile.L").side == "L" and canonical("Brow_Down_R").side == "R"
    assert canonical("mouth_L_R").side == "?"  # both sides: matches nothing
    assert match_names(ARKIT_NAMES, ["mouth_L_R"]).matches == []


def test_sides_never_cross_and_swap_sides_mirrors_them():
    found = match_names(ARKIT_NAMES, ["Eye_Blink_L", "Eye_Blink_R"])
    assert {(m.source, m.target) for m in found.matches} == {("eyeBlinkLeft", "Eye_Blink_L"),
                                                             ("eyeBlinkRight", "Eye_Blink_R")}  # fmt: skip
    swapped = match_names(ARKIT_NAMES, ["Eye_Blink_L", "Eye_Blink_R"], swap_sides=True)
    assert {(m.source, m.target) for m in swapped.matches} == {("eyeBlinkRight", "Eye_Blink_L"),
                                                               ("eyeBlinkLeft", "Eye_Blink_R")}  # fmt: skip
    assert all(m.how == "same letters" for m in swapped.matches)


def test_arkit_direction_names_read_as_sides_consistently():
    found = match_names(ARKIT_NAMES, ["Jaw_L", "Mouth_R", "jawOpen", "JAW_FORWARD"])
    assert {m.source: m.target for m in found.matches} == {
        "jawLeft": "Jaw_L", "mouthRight": "Mouth_R", "jawOpen": "jawOpen", "jawForward": "JAW_FORWARD"
    }  # fmt: skip


def test_unmatched_keys_and_channels_are_reported():
    found = match_names(ARKIT_NAMES, ["CC_Mouth_Smile_L", "Blink_Both", "Sculpt_Fix", "mouthSmileLeft_2"])
    assert found.unmatched_targets == ["Blink_Both", "Sculpt_Fix", "mouthSmileLeft_2"]
    assert len(found.unmatched_sources) == len(ARKIT_NAMES) - 1
    lines = found.lines()
    assert lines[0] == "matched 1 channels" and any("Blink_Both" in line for line in lines)
    assert any(line.startswith("channels with no key (51)") for line in lines)


def test_of_two_keys_for_one_channel_the_best_is_kept_and_the_other_reported():
    found = match_names(ARKIT_NAMES, ["CC_jawOpen", "Jaw_Open", "jawOpen"])
    assert [(m.source, m.target, m.how) for m in found.matches] == [("jawOpen", "jawOpen", "exact")]
    assert sorted(found.duplicates) == [("CC_jawOpen", "jawOpen", "jawOpen"), ("Jaw_Open", "jawOpen", "jawOpen")]
    assert found.unmatched_targets == []
    found = match_names(ARKIT_NAMES, ["A18_Jaw_Open", "CC_Base_Jaw_Open"])
    assert [m.target for m in found.matches] == ["A18_Jaw_Open"]  # the shorter prefix


def test_all_52_names_match_under_each_scheme_of_the_benchmark():
    from emoca_blender.retarget.bench import SCHEMES, scheme_name

    for scheme in SCHEMES:
        names = [scheme_name(n, scheme) for n in ARKIT_NAMES]
        assert len(set(names)) == 52, scheme
        found = match_names(ARKIT_NAMES, names)
        assert [(m.source, m.target) for m in found.matches] == list(zip(ARKIT_NAMES, names)), scheme


@pytest.mark.parametrize("module", PURE)
def test_the_logic_modules_do_not_import_bpy(module):
    tree = ast.parse((ROOT / "emoca_blender" / "retarget" / f"{module}.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                 and n.level == 0}  # fmt: skip
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
    assert not imported & {"bpy", "mathutils", "bpy_extras"}, imported
    assert relative <= set(PURE) | {None}, relative  # only the other bpy-free modules of the package
