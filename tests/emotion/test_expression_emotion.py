"""The expression-based emotion estimate (EMFACS prototypes on ARKit channels) and its fusion with the image net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _face(**channels: float) -> np.ndarray:
    """(52,) ARKit scores: each keyword is a channel name, or a stem whose Left and Right channels both get it."""
    a = np.zeros(len(ARKIT_NAMES), np.float32)
    for name, value in channels.items():
        names = [name] if name in ARKIT_INDEX else [name + "Left", name + "Right"]
        for n in names:
            a[ARKIT_INDEX[n]] = value
    return a


# A face per class, from the EMFACS prototype's actions read as ARKit channels (docs/emotion.md), at 0.6.
PROTOTYPE_FACES = {
    "Happy": dict(mouthSmile=0.6, eyeSquint=0.4),
    "Surprise": dict(browInnerUp=0.6, browOuterUp=0.6, eyeWide=0.6, jawOpen=0.6),
    "Disgust": dict(noseSneer=0.6, mouthUpperUp=0.6),
    "Anger": dict(browDown=0.6, eyeSquint=0.6, mouthPress=0.6),
    "Sad": dict(browInnerUp=0.6, browDown=0.6, mouthFrown=0.6),
    "Fear": dict(browInnerUp=0.6, browOuterUp=0.6, browDown=0.6, eyeWide=0.6, mouthStretch=0.6, jawOpen=0.3),
    "Contempt": dict(mouthSmileLeft=0.6, mouthDimpleLeft=0.6),
}


def _estimate(face: np.ndarray, **options) -> dict[str, float]:
    from backend.models.expression_emotion import (
        EXPRESSION_CLASSES,
        ExpressionEmotionOptions,
        expression_probabilities,
    )

    p = expression_probabilities(face[None], ExpressionEmotionOptions(**options))[0]
    assert p.shape == (8,) and p.sum() == pytest.approx(1.0)
    return dict(zip(EXPRESSION_CLASSES, p.tolist(), strict=True))


def _top(p: dict[str, float]) -> str:
    return max(p, key=lambda c: p[c])


# ------------------------------------------------------------------------------------------- the estimate
@pytest.mark.parametrize("cls", sorted(PROTOTYPE_FACES))
def test_each_prototype_face_is_named_by_the_estimate(cls):
    p = _estimate(_face(**PROTOTYPE_FACES[cls]))
    assert _top(p) == cls, p
    assert p[cls] > 0.5, p


def test_a_still_face_reads_neutral():
    assert _top(_estimate(_face())) == "Neutral"
    resting = _face(eyeSquint=0.08, browDown=0.06, mouthPress=0.05, eyeLookDown=0.3, mouthClose=0.1)
    p = _estimate(resting)
    assert _top(p) == "Neutral" and p["Neutral"] > 0.6, p  # below the floor, and gaze is not an expression


def test_mild_surprise_is_not_neutral():
    """The issue: mild surprise read as Neutral with fer alone."""
    p = _estimate(_face(browInnerUp=0.3, browOuterUp=0.3, eyeWide=0.25, jawOpen=0.25))
    assert _top(p) == "Surprise" and p["Surprise"] > p["Neutral"], p


def test_a_broad_smile_with_the_upper_lip_raised_stays_happy():
    """MediaPipe raises mouthUpperUp (AU10, a disgust action) in broad smiles: the smile must still win."""
    p = _estimate(_face(mouthSmile=0.94, mouthUpperUp=0.63, eyeSquint=0.45, mouthLowerDown=0.16))
    assert _top(p) == "Happy" and p["Disgust"] < 0.05, p


@pytest.mark.parametrize("cls", sorted(PROTOTYPE_FACES))
def test_more_of_the_prototype_means_more_of_the_class(cls):
    scales = np.linspace(0.1, 1.0, 10)
    probs = [_estimate(_face(**{k: v * s / 0.6 for k, v in PROTOTYPE_FACES[cls].items()}))[cls] for s in scales]
    assert all(b > a for a, b in zip(probs, probs[1:], strict=False)), probs


def test_surprise_and_fear_are_told_apart_by_the_brow_lowerer_and_lip_stretch():
    surprise, fear = _estimate(_face(**PROTOTYPE_FACES["Surprise"])), _estimate(_face(**PROTOTYPE_FACES["Fear"]))
    assert surprise["Surprise"] > surprise["Fear"] and fear["Fear"] > fear["Surprise"]


def test_contempt_is_one_sided_on_either_side_and_a_symmetric_smile_is_not():
    left = _estimate(_face(mouthSmileLeft=0.6, mouthDimpleLeft=0.6))
    right = _estimate(_face(mouthSmileRight=0.6, mouthDimpleRight=0.6))
    assert _top(left) == _top(right) == "Contempt"
    assert left["Contempt"] == pytest.approx(right["Contempt"])
    both = _estimate(_face(mouthSmile=0.6, mouthDimple=0.6))
    assert _top(both) == "Happy" and both["Contempt"] < 0.05, both


def test_action_units_read_the_documented_channels():
    from backend.models.expression_emotion import ACTION_UNITS, AU_FROM_ARKIT, action_units

    assert set(AU_FROM_ARKIT) == set(ACTION_UNITS)
    for au, names in AU_FROM_ARKIT.items():
        for name in names:
            a = _face(**{name: 0.8})
            units = dict(zip(ACTION_UNITS, action_units(a[None].astype(np.float64), floor=0.0)[0], strict=True))
            moved = {k for k, v in units.items() if v > 0}
            assert au in moved or au in ("AU12", "AU14"), (au, name, units)  # two-sided part: min of the sides
            assert all(name in AU_FROM_ARKIT[k] for k in moved), (name, moved)
    untouched = [n for n in ARKIT_NAMES if not any(n in v for v in AU_FROM_ARKIT.values())]
    assert "eyeLookDownLeft" in untouched and "tongueOut" in untouched  # gaze and tongue: no emotion reading
    for name in untouched:
        assert not action_units(_face(**{name: 1.0})[None].astype(np.float64)).any(), name


def test_the_floor_ignores_small_scores_and_rescales_the_rest():
    from backend.models.expression_emotion import ACTION_UNITS, action_units

    i = ACTION_UNITS.index("AU26")
    au = action_units(np.stack([_face(jawOpen=v) for v in (0.05, 0.1, 0.55, 1.0)]).astype(np.float64), floor=0.1)
    np.testing.assert_allclose(au[:, i], [0.0, 0.0, 0.5, 1.0], atol=1e-6)


def test_the_documented_prototypes_and_mapping_match_the_code():
    """docs/emotion.md lists every class's prototype actions and every action unit's ARKit channels."""
    from backend.models.expression_emotion import AU_FROM_ARKIT, EMFACS_PROTOTYPES

    text = (Path(__file__).resolve().parents[2] / "docs" / "emotion.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    for cls, weights in EMFACS_PROTOTYPES.items():
        row = next(line for line in lines if line.startswith(f"| {cls} |") and "AU" in line)
        for au, w in weights.items():
            assert f"{au} ({w:g})" in row, (cls, au, row)
    for au, names in AU_FROM_ARKIT.items():
        row = next(line for line in lines if line.startswith(f"| {au} |"))
        for name in names:
            assert f"`{name}`" in row, (au, name, row)


def test_bad_arkit_input_and_options_are_refused():
    from backend.models.expression_emotion import ExpressionEmotionOptions, check_arkit, expression_probabilities

    for bad in (np.zeros((2, 51)), np.zeros(52), np.full((1, 52), np.nan)):
        with pytest.raises(EmocaError) as e:
            expression_probabilities(bad)
        assert e.value.code == "config_invalid"
    with pytest.raises(EmocaError) as e:
        check_arkit(np.zeros((3, 52)), batch=2)
    assert e.value.code == "config_invalid" and "(2,52)" in e.value.message
    with pytest.raises(EmocaError) as e:
        ExpressionEmotionOptions(arkit_weight=1.5, floor=-0.1)
    assert e.value.code == "config_invalid" and "arkit_weight" in e.value.message and "floor" in e.value.message


# ------------------------------------------------------------------------------------------- fusion
@pytest.fixture(scope="module")
def fer_model():
    from backend.models.emotion import load_emotion_model

    return load_emotion_model(None)


def test_the_astronaut_is_happy_from_her_face_and_fused(fer_model, astronaut_face, astronaut_tensor):
    """Real image, real detector: the estimate from her ARKit scores, fer, and their fusion all say Happy."""
    from backend.models.emotion import VA_FUSED_ESTIMATED
    from backend.models.expression_emotion import EXPRESSION_CLASSES, expression_probabilities

    est = expression_probabilities(astronaut_face["arkit"][None])[0]
    assert EXPRESSION_CLASSES[int(est.argmax())] == "Happy" and est.max() > 0.8
    alone = fer_model.predict(astronaut_tensor)
    fused = fer_model.predict(astronaut_tensor, arkit=astronaut_face["arkit"][None])
    assert fused["expression"].shape == (1, 7)
    torch.testing.assert_close(fused["expression"].sum(1), torch.ones(1))
    happy = fer_model.classes.index("Happy")
    assert int(fused["expression"][0].argmax()) == happy and fused["expression"][0, happy] > 0.9
    assert fused["valence"][0] > 0.5 and alone["valence"][0] > 0.5
    meta = fer_model.emotion_meta(fused=True)
    assert meta["valence_arousal"] == VA_FUSED_ESTIMATED and "estimate" in meta["model"]
    assert meta["classes"] == fer_model.classes and meta["fusion"]["dropped_classes"] == ["Contempt"]


@pytest.mark.parametrize("cls", ["Disgust", "Surprise", "Anger", "Sad", "Fear"])
def test_fusion_moves_fers_answer_towards_the_face(fer_model, astronaut_tensor, cls):
    """fer on a real smiling face, with the ARKit scores of another expression: the fused output gives that
    expression more probability and fer's own answer less; valence/arousal follow the fused classes."""
    from backend.models.emotion import circumplex_va

    face = _face(**PROTOTYPE_FACES[cls])[None]
    alone = fer_model.predict(astronaut_tensor)["expression"][0]
    out = fer_model.predict(astronaut_tensor, arkit=torch.from_numpy(face))
    fused = out["expression"][0]
    k, happy = fer_model.classes.index(cls), fer_model.classes.index("Happy")
    assert fused[k] > alone[k] + 0.3, (cls, alone.tolist(), fused.tolist())
    assert fused[happy] < alone[happy] - 0.3
    v, a = circumplex_va(out["expression"], fer_model.classes)
    torch.testing.assert_close(out["valence"], v)
    torch.testing.assert_close(out["arousal"], a)


def test_disgust_fires_when_the_face_shows_it(fer_model, astronaut_tensor):
    """The issue: fer's Disgust stayed <= 0.005. A product of experts would let that near-zero veto; the pool
    gives the face's disgust at least its weight's share."""
    from backend.models.expression_emotion import ExpressionEmotionOptions

    k = fer_model.classes.index("Disgust")
    alone = fer_model.predict(astronaut_tensor)["expression"][0, k]
    assert alone < 0.01  # fer on this face: Disgust does not fire
    w = ExpressionEmotionOptions().arkit_weight
    fused = fer_model.predict(astronaut_tensor, arkit=_face(**PROTOTYPE_FACES["Disgust"])[None])["expression"][0, k]
    assert fused > 0.8 * w


def test_without_arkit_nothing_changes_and_the_weights_bound_the_fusion(fer_model, astronaut_tensor):
    from backend.models.emotion import EmotionModel
    from backend.models.expression_emotion import (
        EXPRESSION_CLASSES,
        ExpressionEmotionOptions,
        align_classes,
        expression_probabilities,
    )

    x = torch.cat([astronaut_tensor, torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))])
    faces = np.stack([_face(**PROTOTYPE_FACES["Sad"]), _face(**PROTOTYPE_FACES["Surprise"])])
    plain = fer_model.predict(x)
    for key, value in fer_model.predict(x, arkit=None).items():
        torch.testing.assert_close(value, plain[key])
    assert fer_model.emotion_meta() == {
        "model": fer_model.name,
        "classes": fer_model.classes,
        "valence_arousal": fer_model.va_source,
    }

    def with_weight(w: float) -> EmotionModel:
        options = ExpressionEmotionOptions(arkit_weight=w)
        m = fer_model
        return EmotionModel(m.net, m.arch, m.name, m.classes, m.va_source, m.source, expression=options)

    torch.testing.assert_close(with_weight(0.0).predict(x, arkit=faces)["expression"], plain["expression"])
    est = align_classes(expression_probabilities(faces), EXPRESSION_CLASSES, fer_model.classes)
    only_face = with_weight(1.0).predict(x, arkit=faces)["expression"]
    np.testing.assert_allclose(only_face.numpy(), est, atol=1e-6)
    w = fer_model.expression.arkit_weight
    pooled = fer_model.predict(x, arkit=faces)["expression"].numpy()
    np.testing.assert_allclose(pooled, (1 - w) * plain["expression"].numpy() + w * est, atol=1e-6)
    with pytest.raises(EmocaError) as e:
        fer_model.predict(x, arkit=faces[:1])
    assert e.value.code == "config_invalid"


def test_a_regressing_network_blends_its_valence_with_the_estimate(emodeca_folder):
    """EmoDECA regresses valence/arousal: fused V/A are (1-w) regressed + w the estimate's circumplex mapping,
    over all 8 AffectNet classes (Contempt included)."""
    from backend.models.emotion import VA_FUSED_REGRESSED, circumplex_va, load_emotion_model
    from backend.models.expression_emotion import EXPRESSION_CLASSES, expression_probabilities

    model = load_emotion_model(emodeca_folder[0])
    g = torch.Generator().manual_seed(5)
    codes = {"shape": torch.randn(2, 100, generator=g), "exp": torch.randn(2, 50, generator=g)}
    codes["pose"] = 0.1 * torch.randn(2, 6, generator=g)
    faces = np.stack([_face(**PROTOTYPE_FACES["Contempt"]), _face(**PROTOTYPE_FACES["Happy"])])
    plain, fused = model.predict(None, codes), model.predict(None, codes, arkit=faces)
    assert model.classes == list(EXPRESSION_CLASSES)
    ve, ae = circumplex_va(expression_probabilities(faces), EXPRESSION_CLASSES)
    w = model.expression.arkit_weight
    np.testing.assert_allclose(fused["valence"].numpy(), (1 - w) * plain["valence"].numpy() + w * ve, atol=1e-5)
    np.testing.assert_allclose(fused["arousal"].numpy(), (1 - w) * plain["arousal"].numpy() + w * ae, atol=1e-5)
    contempt = model.classes.index("Contempt")
    assert fused["expression"][0, contempt] > plain["expression"][0, contempt] + 0.3
    meta = model.emotion_meta(fused=True)
    assert meta["valence_arousal"] == VA_FUSED_REGRESSED and meta["fusion"]["dropped_classes"] == []
