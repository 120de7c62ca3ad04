"""Emotion estimated from facial actions: EMFACS prototypes scored on the 52 ARKit blendshape channels, and the
fusion of that estimate with an image network's class probabilities (numpy only; docs/emotion.md).

Conventions:

* ``arkit`` (B, 52) float scores in [0, 1] in :data:`emoca_contract.arkit.ARKIT_NAMES` order (MediaPipe's Face
  Landmarker blendshapes); "Left"/"Right" are the performer's own sides.
* Action-unit intensities (B, U) in [0, 1] in :data:`ACTION_UNITS` order: FACS action units (Ekman, Friesen &
  Hager 2002) read off the ARKit channels by :data:`AU_FROM_ARKIT`, after a dead zone (``floor``) that ignores
  the small scores a resting face gets. ``AU12u`` / ``AU14u`` are the *one-sided* parts of AU12 / AU14
  (``|left - right|``; AU12 / AU14 themselves are the two-sided part ``min(left, right)``), so a symmetric
  smile and a one-sided smirk (contempt) are told apart.
* Class evidence (B, 7) in [0, 1] in :data:`PROTOTYPE_CLASSES` order; probabilities (B, 8) in
  :data:`EXPRESSION_CLASSES` order (AffectNet's: Neutral first), rows summing to 1.

The estimate is a *rule-based estimate* from published prototypes, not a trained classifier and not a measure
of what anyone feels: label it so wherever it is shown.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np

from emoca_contract.arkit import ARKIT_INDEX, ARKIT_NAMES
from emoca_contract.errors import EmocaError

__all__ = [
    "ACTION_UNITS",
    "AU_FROM_ARKIT",
    "EMFACS_PROTOTYPES",
    "ESTIMATE_NAME",
    "EXPRESSION_CLASSES",
    "PROTOTYPE_CLASSES",
    "ExpressionEmotionOptions",
    "action_units",
    "align_classes",
    "check_arkit",
    "class_evidence",
    "evidence_probabilities",
    "expression_probabilities",
    "fuse_probabilities",
    "prototype_matrix",
]

ESTIMATE_NAME = "ARKit expression estimate (EMFACS prototypes)"
EXPRESSION_CLASSES: tuple[str, ...] = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
PROTOTYPE_CLASSES: tuple[str, ...] = EXPRESSION_CLASSES[1:]  # Neutral has no prototype: it is "no action"

# FACS action unit -> the ARKit channel(s) that show it. Paired channels are averaged over the two sides, except
# AU12/AU14 (two-sided part = min, one-sided part = |difference|, see the module docstring). Why each:
# AU1 inner brow raiser = browInnerUp; AU2 outer brow raiser = browOuterUp*; AU4 brow lowerer = browDown*;
# AU5 upper lid raiser = eyeWide*; AU6 cheek raiser = cheekSquint* or eyeSquint* (both are orbicularis oculi,
# whose orbital part AU6 is; MediaPipe's cheekSquint is near zero even in broad smiles, so the larger of the
# two is taken per side); AU7 lid tightener = eyeSquint*; AU9 nose wrinkler = noseSneer*; AU10 upper lip raiser
# = mouthUpperUp*; AU12 lip corner puller = mouthSmile*; AU14 dimpler = mouthDimple*; AU15 lip corner depressor
# = mouthFrown*; AU16 lower lip depressor = mouthLowerDown*; AU17 chin raiser = mouthShrugLower; AU20 lip
# stretcher = mouthStretch*; AU23 lip tightener (and AU24 pressor: ARKit has one channel for both) =
# mouthPress*; AU26 jaw drop = jawOpen. AU11 (nasolabial deepener) and AU25 (lips part) have no channel.
AU_FROM_ARKIT: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),
    "AU4": ("browDownLeft", "browDownRight"),
    "AU5": ("eyeWideLeft", "eyeWideRight"),
    "AU6": ("cheekSquintLeft", "cheekSquintRight", "eyeSquintLeft", "eyeSquintRight"),
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),
    "AU9": ("noseSneerLeft", "noseSneerRight"),
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),
    "AU16": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "AU17": ("mouthShrugLower",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),
    "AU23": ("mouthPressLeft", "mouthPressRight"),
    "AU26": ("jawOpen",),
    "AU12u": ("mouthSmileLeft", "mouthSmileRight"),
    "AU14u": ("mouthDimpleLeft", "mouthDimpleRight"),
}
ACTION_UNITS: tuple[str, ...] = tuple(AU_FROM_ARKIT)

# Each class's prototype as action-unit weights: 1 for the actions of the prototype, 0.5 for actions that only
# its major variants add. Source: the EMFACS prototypes and major variants (W. V. Friesen & P. Ekman, EMFACS-7,
# 1983) as tabulated in the FACS Investigator's Guide (Ekman, Friesen & Hager 2002, Table 10-1) and in the
# commonly used summary happiness 6+12, sadness 1+4+15, surprise 1+2+5B+26, fear 1+2+4+5+7+20+26, anger
# 4+5+7+23, disgust 9+15+16, contempt R12A+R14A. Disgust is "AU9 and/or AU10" in the guide, so both are core.
# Fear takes AU7 at half weight (the guide's prototypes omit it), which keeps fear apart from a smile's squint.
EMFACS_PROTOTYPES: dict[str, dict[str, float]] = {
    "Happy": {"AU6": 1.0, "AU12": 1.0},
    "Sad": {"AU1": 1.0, "AU4": 1.0, "AU15": 1.0, "AU17": 0.5},
    "Surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
    "Fear": {"AU1": 1.0, "AU2": 1.0, "AU4": 1.0, "AU5": 1.0, "AU20": 1.0, "AU7": 0.5, "AU26": 0.5},
    "Disgust": {"AU9": 1.0, "AU10": 1.0, "AU15": 0.5, "AU16": 0.5, "AU17": 0.5},
    "Anger": {"AU4": 1.0, "AU7": 1.0, "AU23": 1.0, "AU5": 0.5, "AU17": 0.5},
    "Contempt": {"AU12u": 1.0, "AU14u": 1.0},
}


@dataclass(frozen=True)
class ExpressionEmotionOptions:
    """How the ARKit scores become class probabilities, and how much they count in the fusion.

    ``floor``: ARKit scores at or below it count as no action (a resting face scores up to ~0.1 on several
    channels); above it, intensities are rescaled to [0, 1]. ``neutral_level``: the prototype evidence at which
    a class and Neutral are equally likely (evidence is the prototype's intensity: 0.12 means "a prototype
    shown at 12%, past the floor, reads 50/50 with Neutral"). ``sharpness``: the softmax gain on evidence
    (higher: more decisive). ``arkit_weight``: the ARKit estimate's weight in the linear opinion pool with the
    image network (0: the image network alone; 1: the ARKit estimate alone). The defaults are set by hand on
    prototype faces and the astronaut, not fitted to labelled data (there is none in the project).
    """

    floor: float = 0.1
    neutral_level: float = 0.12
    sharpness: float = 25.0
    arkit_weight: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "floor": 0.0 <= self.floor < 1.0,
            "neutral_level": 0.0 <= self.neutral_level <= 1.0,
            "sharpness": 0.0 < self.sharpness <= 1000.0,
            "arkit_weight": 0.0 <= self.arkit_weight <= 1.0,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise EmocaError(
                "config_invalid",
                f"expression-emotion options out of range: {', '.join(bad)}",
                "floor in [0, 1), neutral_level in [0, 1], sharpness in (0, 1000], arkit_weight in [0, 1].",
            )


def check_arkit(arkit: typing.Any, batch: int | None = None) -> np.ndarray:
    """Validate ARKit scores: array-like (B, 52) (numpy, or a CPU tensor), finite -> (B, 52) float64 clipped to
    [0, 1]. ``batch``: the row count they must have (the crops they belong to)."""
    a = np.asarray(arkit, dtype=np.float64)
    n = len(ARKIT_NAMES)
    if a.ndim != 2 or a.shape[1] != n or (batch is not None and a.shape[0] != batch):
        want = f"({batch if batch is not None else 'B'},{n})"
        raise EmocaError(
            "config_invalid",
            f"ARKit scores must be {want} in ARKIT_NAMES order; got shape {a.shape}",
            "Pass one row of the 52 blendshape scores per crop.",
        )
    if not np.isfinite(a).all():
        raise EmocaError(
            "config_invalid",
            f"ARKit scores contain {int((~np.isfinite(a)).any(axis=1).sum())} non-finite row(s)",
            "Leave frames without a detected face out of the emotion batch (they are invalid rows).",
        )
    return np.clip(a, 0.0, 1.0)


def _channels(a: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(B,52), k names -> (B,k) columns."""
    return a[:, [ARKIT_INDEX[n] for n in names]]


def action_units(arkit: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """(B,52) checked ARKit scores -> (B,U) action-unit intensities in [0,1], :data:`ACTION_UNITS` order."""
    a = np.clip((arkit - floor) / (1.0 - floor), 0.0, 1.0)
    cols = []
    for au, names in AU_FROM_ARKIT.items():
        c = _channels(a, names)
        if au == "AU6":  # per side the larger of cheekSquint and eyeSquint, then both sides averaged
            cols.append(np.maximum(c[:, :2], c[:, 2:]).mean(axis=1))
        elif au in ("AU12", "AU14"):
            cols.append(c.min(axis=1))
        elif au.endswith("u"):
            cols.append(np.abs(c[:, 0] - c[:, 1]))
        else:
            cols.append(c.mean(axis=1))
    return np.stack(cols, axis=1)


def prototype_matrix() -> np.ndarray:
    """(7,U) prototype weights, rows in :data:`PROTOTYPE_CLASSES` order, columns in :data:`ACTION_UNITS` order."""
    w = np.zeros((len(PROTOTYPE_CLASSES), len(ACTION_UNITS)))
    for k, cls in enumerate(PROTOTYPE_CLASSES):
        for au, weight in EMFACS_PROTOTYPES[cls].items():
            w[k, ACTION_UNITS.index(au)] = weight
    return w


def class_evidence(au: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(B,U) intensities, (K,U) prototype weights -> (B,K) evidence in [0,1].

    evidence = intensity x specificity: the prototype's weighted mean intensity (how strongly its actions show)
    times the cosine between the face's actions and the prototype (how much of the face's activity the
    prototype explains; actions outside it lower it). A prototype shown exactly at intensity s scores s; a
    face with no action scores 0 everywhere."""
    dot = au @ prototypes.T  # (B,K)
    intensity = dot / prototypes.sum(axis=1)
    norm = np.linalg.norm(au, axis=1, keepdims=True) * np.linalg.norm(prototypes, axis=1)
    specificity = np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)
    return np.clip(intensity * specificity, 0.0, 1.0)


def evidence_probabilities(evidence: np.ndarray, neutral_level: float, sharpness: float) -> np.ndarray:
    """(B,K) prototype evidence -> (B,K+1) probabilities [Neutral | classes]: a softmax of ``sharpness`` x
    evidence, where Neutral's evidence is the constant ``neutral_level``."""
    z = sharpness * np.concatenate([np.full((len(evidence), 1), neutral_level), evidence], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expression_probabilities(arkit: typing.Any, options: ExpressionEmotionOptions | None = None) -> np.ndarray:
    """ARKit scores (B,52) -> (B,8) float64 class probabilities in :data:`EXPRESSION_CLASSES` order."""
    opt = options or ExpressionEmotionOptions()
    au = action_units(check_arkit(arkit), opt.floor)
    return evidence_probabilities(class_evidence(au, prototype_matrix()), opt.neutral_level, opt.sharpness)


def align_classes(probs: np.ndarray, classes: typing.Sequence[str], target: typing.Sequence[str]) -> np.ndarray:
    """(B,C) probabilities over ``classes`` -> (B,T) over ``target`` (by name), rows renormalised: the mass of
    classes ``target`` lacks (e.g. Contempt for fer's 7 classes) is dropped, not moved to a neighbour."""
    unknown = [c for c in target if c not in classes]
    if unknown:
        raise EmocaError(
            "config_invalid",
            f"the expression estimate has no class {unknown}",
            f"Its classes: {list(classes)}.",
        )
    p = probs[:, [list(classes).index(c) for c in target]]
    return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)


def fuse_probabilities(p_image: np.ndarray, p_arkit: np.ndarray, arkit_weight: float) -> np.ndarray:
    """(B,C) image-network and (B,C) ARKit-estimate probabilities over the same classes -> (B,C) fused.

    A linear opinion pool, (1 - w) p_image + w p_arkit: unlike a product, a near-zero from one side cannot veto
    the other (fer's Disgust stays below 0.01 on real disgust faces; the face's actions still count)."""
    return (1.0 - arkit_weight) * p_image + arkit_weight * p_arkit
