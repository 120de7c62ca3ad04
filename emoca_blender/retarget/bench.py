"""Retarget benchmark and its test character: known weights recovered, and frames retargeted per second.

    python -m emoca_blender.retarget.bench [--frames 10000] [--check-frames 120]

Prints ``retarget_weight_error`` (the mean absolute difference between the weights a take carries and the weights
recovered from the character's evaluated mesh after retargeting, by least squares over its own key deltas),
``retarget_names_matched`` (the fraction of the 52 ARKit channels Auto Match finds, over every naming scheme of
:data:`SCHEMES`) and ``retarget_frames_per_s`` (a take of ``--frames`` frames retargeted onto the character's 52
keys and head and jaw bones: read, plan and bulk write, the whole ``retarget``).

The character (:func:`build_character`) is built here, procedurally, with its own topology (not ICT's, not
FLAME's): an ellipsoid head (+Z up, facing -Y as in Blender's front view) with a nose, one shape key per ARKit
channel named under a chosen naming scheme, each a known deformation (a smooth bump at its own place on the face,
the performer's left side at +X), plus keys no channel drives, and an armature with ``Head`` and ``Jaw`` bones.
The take (:func:`weights_take`) is an open take whose ARKit channels are the known weights (numpy only).
"""

from __future__ import annotations

import argparse
import sys
import time

import bpy
import numpy as np

from emoca_contract.arkit import ARKIT_NAMES
from emoca_contract.livelink import open_take_arrays
from emoca_contract.take import Take, base_meta

from .mapping import BoneSettings, auto_mapping
from .naming import match_names, words
from .run import retarget

SCHEMES = ("apple", "cc", "numbered", "snake_dot", "pascal", "camel_underscore")
EXTRA_KEYS = ("CC_Custom_Corrective", "Blink_Both", "Sculpt_Fix")  # keys no ARKit channel drives
SIDE_WORDS = {"left": "L", "right": "R"}


def scheme_name(name: str, scheme: str) -> str:
    """An ARKit channel's key name under a naming scheme: ``mouthSmileLeft`` -> ``CC_Mouth_Smile_L`` ("cc"),
    ``A24_Mouth_Smile_L`` ("numbered": Apple's position), ``mouth_smile.L`` ("snake_dot"), ``MouthSmileLeft``
    ("pascal"), ``mouthSmile_L`` ("camel_underscore"), unchanged ("apple")."""
    parts = words(name)
    side = SIDE_WORDS.get(parts[-1], "")
    base = parts[:-1] if side else parts
    title = "_".join(p.capitalize() for p in base)
    if scheme == "apple":
        return name
    if scheme == "cc":
        return "CC_" + title + (f"_{side}" if side else "")
    if scheme == "numbered":
        return f"A{ARKIT_NAMES.index(name) + 1:02d}_" + title + (f"_{side}" if side else "")
    if scheme == "snake_dot":
        return "_".join(base) + (f".{side}" if side else "")
    if scheme == "pascal":
        return name[0].upper() + name[1:]
    if scheme == "camel_underscore":
        return base[0] + "".join(p.capitalize() for p in base[1:]) + (f"_{side}" if side else "")
    raise ValueError(f"unknown naming scheme {scheme!r}")


def head_mesh(rings: int = 36, segments: int = 48) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """An ellipsoid head with a nose: vertices (V, 3) metres, faces (quads and pole triangles)."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]  # from the top down, poles apart
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    x, y, z = 0.075 * np.sin(t) * np.cos(p), 0.09 * np.sin(t) * np.sin(p), 0.11 * np.cos(t)
    nose = 0.02 * np.exp(-((x / 0.012) ** 2 + ((z + 0.005) / 0.02) ** 2)) * (y < 0)
    ring = np.stack([x.ravel(), (y - nose).ravel(), z.ravel()], 1)
    verts = np.concatenate([ring, [[0, 0, 0.11], [0, 0, -0.11]]])
    top, bottom = len(ring), len(ring) + 1
    faces: list[tuple[int, ...]] = []
    for r in range(rings - 2):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            faces.append((a, b, b + segments, a + segments))
    last = (rings - 2) * segments
    for s in range(segments):
        faces.append((top, (s + 1) % segments, s))
        faces.append((bottom, last + s, last + (s + 1) % segments))
    return verts, faces


def key_deltas(verts: np.ndarray, seed: int = 0) -> np.ndarray:
    """One known deformation per ARKit channel (52, V, 3): a smooth bump (2 cm wide, up to 6 mm) at its own
    place on the front of the face, in its own direction; a Right channel mirrors its Left twin across X = 0."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(ARKIT_NAMES), *verts.shape))
    twins: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    front = verts[verts[:, 1] < -0.03]
    for k, name in enumerate(ARKIT_NAMES):
        mirror = np.array([-1.0, 1.0, 1.0])
        if name.endswith("Right") and name[:-5] + "Left" in twins:
            centre, direction = (v * mirror for v in twins[name[:-5] + "Left"])
        else:
            centre = front[rng.integers(len(front))].copy()
            if name.endswith("Left"):
                centre[0] = abs(centre[0]) + 0.01
            elif not name.endswith("Right"):
                centre[0] = 0.0
            direction = rng.normal(size=3)
            direction = 0.006 * direction / np.linalg.norm(direction)
            twins[name] = (centre, direction)
        weight = np.exp(-((verts - centre) ** 2).sum(1) / (2 * 0.02**2))
        out[k] = weight[:, None] * direction[None, :]
    return out


def build_character(name: str = "Character", scheme: str = "cc", seed: int = 0, context=None):
    """The test character (module docstring) in the scene: (mesh object, armature object, deltas (52, V, 3),
    key names in ARKit order)."""
    context = context or bpy.context
    verts, faces = head_mesh()
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis", from_mix=False)
    deltas = key_deltas(verts, seed)
    names = [scheme_name(n, scheme) for n in ARKIT_NAMES]
    for key_name, delta in zip(names, deltas):
        kb = obj.shape_key_add(name=key_name, from_mix=False)
        kb.data.foreach_set("co", (verts + delta).astype(np.float32).ravel())
    for extra in EXTRA_KEYS:
        obj.shape_key_add(name=extra, from_mix=False)
    arm = bpy.data.objects.new(name + "_rig", bpy.data.armatures.new(name + "_rig"))
    context.scene.collection.objects.link(arm)
    view_layer = context.view_layer
    view_layer.objects.active = arm
    with context.temp_override(active_object=arm, object=arm):
        bpy.ops.object.mode_set(mode="EDIT")
        head = arm.data.edit_bones.new("Head")
        head.head, head.tail = (0, 0, -0.12), (0, 0, 0.0)  # up the neck
        jaw = arm.data.edit_bones.new("Jaw")
        jaw.head, jaw.tail, jaw.parent = (0, 0.0, -0.03), (0, -0.07, -0.08), head  # forward and down
        bpy.ops.object.mode_set(mode="OBJECT")
    arm.pose.bones["Jaw"].rotation_mode = "XYZ"  # one bone in Euler, one in quaternions
    obj.parent = arm
    obj.modifiers.new("Armature", "ARMATURE").object = arm
    return obj, arm, deltas, names


def weights_take(n_frames: int, fps: float = 30.0, seed: int = 0, name: str = "weights") -> Take:
    """An open take whose ARKit channels are known weights in [0, 1] (slow sinusoids) and whose head turns."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    freq, phase = rng.uniform(0.1, 1.2, (1, 52)), rng.uniform(0, 2 * np.pi, (1, 52))
    weights = 0.5 + 0.5 * np.sin(2 * np.pi * freq * t[:, None] + phase)
    head = 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5, (1, 3)) * t[:, None])
    arrays = open_take_arrays(t, np.arange(n_frames), weights, head)
    meta = base_meta(
        kind="open",
        source={"path": f"{name}.mp4", "fps": fps, "frame_count": n_frames},
        model={"name": "known weights (benchmark, not a capture)", "kind": "open"},
        arkit={"names": list(ARKIT_NAMES), "source": "known weights", "unobserved": []},
        emotion={"model": "none", "classes": []},
    )
    return Take(arrays=arrays, meta=meta)


def recover_weights(obj, deltas: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The weights (K, 52) that reproduce the evaluated mesh at each scene frame from the key deltas (lstsq)."""
    scene = bpy.context.scene
    rest = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.shape_keys.reference_key.data.foreach_get("co", rest)
    basis = deltas.reshape(len(deltas), -1).T  # (3V, 52)
    out = []
    for frame in frames:
        scene.frame_set(int(frame))
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        co = np.empty(len(evaluated.data.vertices) * 3, np.float32)
        evaluated.data.vertices.foreach_get("co", co)
        out.append(np.linalg.lstsq(basis, co.astype(np.float64) - rest, rcond=None)[0])
    return np.asarray(out)


def weight_error(check_frames: int, scheme: str = "cc") -> float:
    """Retarget a known-weights take onto the character; the mean |known - recovered| weight."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = 30
    obj, _arm, deltas, _names = build_character(scheme=scheme)
    take = weights_take(check_frames)
    result = retarget(obj, take)
    frames = np.arange(1, result.n_frames + 1)
    recovered = recover_weights(obj, deltas, frames)
    return float(np.abs(recovered - take["arkit"][: len(frames)]).mean())


def names_matched() -> float:
    """The fraction of ARKit channels Auto Match finds, over every scheme of :data:`SCHEMES`."""
    found = [len(match_names(ARKIT_NAMES, [scheme_name(n, s) for n in ARKIT_NAMES]).matches) for s in SCHEMES]
    return sum(found) / (len(SCHEMES) * len(ARKIT_NAMES))


def frames_per_second(n_frames: int) -> tuple[float, float]:
    """(frames per second, seconds) of retargeting an ``n_frames`` take onto the character, bones included."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = 30
    obj, _arm, _deltas, names = build_character()
    mapping, _ = auto_mapping(ARKIT_NAMES, names, bones=BoneSettings(head_bone="Head", jaw_bone="Jaw"))
    take = weights_take(n_frames)
    t0 = time.perf_counter()
    retarget(obj, take, mapping)
    seconds = time.perf_counter() - t0
    return n_frames / seconds, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emoca_blender.retarget.bench")
    ap.add_argument("--frames", type=int, default=10_000, help="frames of the timed take")
    ap.add_argument("--check-frames", type=int, default=120, help="frames whose weights are recovered")
    args = ap.parse_args(argv)
    error = weight_error(args.check_frames)
    matched = names_matched()
    fps, seconds = frames_per_second(args.frames)
    print(
        f"# {args.frames} frames x (52 keys + 2 bones) retargeted in {seconds:.3f} s; weights recovered on "
        f"{args.check_frames} frames (Blender {bpy.app.version_string})",
        file=sys.stderr,
    )
    print(f"retarget_weight_error: {error:.6f}")
    print(f"retarget_names_matched: {matched:.3f}")
    print(f"retarget_frames_per_s: {fps:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
