"""The 52 ARKit blendshape channels: their names and their one order (stdlib only).

The order is Apple's ``ARFaceAnchor.BlendShapeLocation`` order as Unreal's ``EARFaceBlendShape`` and Live Link
Face's CSV columns list it (eyes left, eyes right, jaw, mouth, brows, cheeks, nose, tongue). Names are the
lowerCamel case names (``mouthSmileLeft``), as MediaPipe's Face Landmarker reports them; "Left" and "Right" are
the performer's own left and right (ARKit's convention; a test that renders and re-detects checks which side the
open head's ``_L`` keys move). Takes store ``arkit`` columns in this order; ``meta.arkit.names`` repeats them.
"""

from __future__ import annotations

ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawRight",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthLeft",
    "mouthRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)
ARKIT_INDEX: dict[str, int] = {name: i for i, name in enumerate(ARKIT_NAMES)}

# Live Link Face's CSV carries these after the 52 blendshapes (radians in the app's export).
LIVE_LINK_POSE_NAMES: tuple[str, ...] = (
    "HeadYaw",
    "HeadPitch",
    "HeadRoll",
    "LeftEyeYaw",
    "LeftEyePitch",
    "LeftEyeRoll",
    "RightEyeYaw",
    "RightEyePitch",
    "RightEyeRoll",
)


def live_link_name(name: str) -> str:
    """The CSV column name of an ARKit channel: ``mouthSmileLeft`` -> ``MouthSmileLeft``."""
    return name[:1].upper() + name[1:]
