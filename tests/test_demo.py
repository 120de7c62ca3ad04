"""`make demo`'s main job end to end on a short run (the same performance at 10 fps instead of 25): the ICT head
rendered performing a known sequence -> the open capture (real Face Landmarker) -> real Blender. The rig must
follow the performance within the issue's bounds, and demo.blend must reopen with the rig animated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend.app import demo

ROOT = Path(__file__).resolve().parents[1]
SHORT_FPS = 10.0  # the bench's short run (backend.app.bench.demo.BENCH_FPS)
ARKIT_RATIO_BOUND = 0.5  # issue 11, "Done when"
HEAD_ERROR_BOUND_DEG = 5.0

REOPEN = textwrap.dedent(
    """
    import json, sys
    import bpy
    from emoca_blender.animation import fcurves_for

    bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
    frames = json.loads(sys.argv[2])  # name -> scene frame to sample
    arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    key = next(o for o in bpy.data.objects if o.type == "MESH").data.shape_keys
    def paths(idd):
        return [fc.data_path for fc in fcurves_for(idd.animation_data.action, idd).fcurves]
    scene = bpy.context.scene
    samples = {}
    for name, frame in frames.items():
        scene.frame_set(frame)
        samples[name] = {
            "shapes": {k.name: k.value for k in key.key_blocks},
            "head": list(arm.pose.bones["head"].rotation_quaternion),
            "valence": arm["emoca_valence"],
        }
    print("REOPENED" + json.dumps({
        "actions": [a.name for a in bpy.data.actions], "arm_paths": paths(arm), "key_paths": paths(key),
        "range": [scene.frame_start, scene.frame_end], "camera": scene.camera is not None, "samples": samples,
    }))
    """
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One short demo run with no licensed assets: (stdout, output folder, summary)."""
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "démo"
    env = dict(
        os.environ,
        EMOCA_BLENDER_ASSETS=str(tmp / "no assets"),
        EMOCA_BLENDER_DATA=str(tmp / "d"),
        OMP_NUM_THREADS="2",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "demo", "--output", str(out), "--fps", str(SHORT_FPS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, out, json.loads((out / "demo_summary.json").read_text(encoding="utf-8"))


def _truth():
    from backend.synthetic.ict_clip import DEMO_PERFORMANCE, driven_channels, perform

    arkit, turn = perform(DEMO_PERFORMANCE, SHORT_FPS)
    return arkit, turn, driven_channels(DEMO_PERFORMANCE)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.blender
def test_the_demo_says_what_it_used_and_writes_everything(demo_run):
    stdout, out, summary = demo_run
    # honest: no licensed assets -> the open model on the open head, named as such
    assert "no licensed EMOCA/FLAME files" in stdout
    assert "open model: MediaPipe Face Landmarker" in stdout and "ICT-FaceKit" in stdout
    assert "open_arkit_error_ratio" in stdout and "head rotation error" in stdout
    assert summary["plan"]["kind"] == "open" and summary["model"]["kind"] == "open"
    for name in (
        "demo_clip.mp4",
        "demo_take.npz",
        "demo_rig.npz",
        "demo_preview.mp4",
        "demo_emotion.png",
        "demo.blend",
        "demo_summary.json",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.blender
def test_the_open_rig_follows_the_rendered_performance(demo_run):
    """Issue 11's bounds: ARKit error at most half of answering neutral, head within 5 degrees (no fitting)."""
    _, _, summary = demo_run
    errors = summary["errors"]
    arkit, _, channels = _truth()
    assert errors["frames_total"] == len(arkit)
    assert errors["face_fraction"] >= 0.95
    assert errors["channels"] == channels  # every channel the performance drives is scored
    assert errors["open_arkit_error_ratio"] <= ARKIT_RATIO_BOUND, errors
    assert errors["head_error_deg_mean"] <= HEAD_ERROR_BOUND_DEG, errors
    for name, c in errors["per_channel"].items():  # each driven channel rises where the performance drives it
        assert c["recovered_at_peak"] > 0.25, (name, c)


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.blender
def test_demo_blend_reopens_with_the_rig_animated(demo_run):
    _, out, summary = demo_run
    arkit, turn, channels = _truth()
    from emoca_contract.arkit import ARKIT_INDEX
    from emoca_contract.take import read_take

    # scene frame = source frame + 1 (the take starts at frame 1, one key per source frame)
    jaw = int(np.argmax(arkit[:, ARKIT_INDEX["jawOpen"]]))
    left = int(np.argmax(turn[:, 1]))
    frames = {"start": 1, "jaw": jaw + 1, "turn": left + 1}
    reopen = subprocess.run(
        [sys.executable, "-c", REOPEN, str(out / "demo.blend"), json.dumps(frames)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    line = next((ln for ln in reopen.stdout.splitlines() if ln.startswith("REOPENED")), None)
    assert line, reopen.stderr[-3000:]
    blend = json.loads(line[len("REOPENED") :])
    assert any(a.startswith("EMOCA_demo_clip") for a in blend["actions"]) and blend["camera"]
    assert blend["range"] == [1, len(arkit)]
    # keyed: a shape key per driven channel, the head bone, valence, arousal and one curve per emotion class
    keyed_shapes = {p.split('"')[1] for p in blend["key_paths"] if p.startswith("key_blocks[")}
    assert set(channels) <= keyed_shapes
    assert 'pose.bones["head"].rotation_quaternion' in blend["arm_paths"]
    classes = read_take(out / "demo_take.npz").meta["emotion"]["classes"]
    emotion = {p[2:-2] for p in blend["arm_paths"] if p.startswith('["emoca_')}
    assert emotion == {"emoca_valence", "emoca_arousal"} | {f"emoca_expr_{c}" for c in classes}
    assert summary["blender"]["emotion_curves"] and len(summary["blender"]["emotion_curves"]) == 2 + len(classes)
    # animated the way the performance goes: the jaw opens at its peak, the head turns at the turn's
    s = blend["samples"]
    assert s["start"]["shapes"]["jawOpen"] < 0.1 < 0.4 < s["jaw"]["shapes"]["jawOpen"]
    angle = lambda q: np.degrees(2 * np.arccos(min(1.0, abs(q[0]))))  # noqa: E731
    assert angle(s["start"]["head"]) < 5.0 and abs(angle(s["turn"]["head"]) - np.degrees(turn[left, 1])) < 5.0
    assert len({round(v["valence"], 6) for v in s.values()}) > 1  # the emotion curves move too


def test_the_demo_uses_the_licensed_files_when_they_are_installed():
    """With a trained EMOCA and FLAME the demo captures with them (on the FLAME rig) and says so."""
    trained = {
        "root": "/assets",
        "capture": {"trained": True, "message": "trained model EMOCA_v2_mp with FLAME 2020"},
        "emotion": {"message": "official ResNet-50 emotion network"},
        "flame_path": "/assets/FLAME/geometry/generic_model.pkl",
    }
    plan = demo.plan_for(trained)
    assert plan == demo.DemoPlan("flame", "/assets/FLAME/geometry/generic_model.pkl")
    text = "\n".join(demo.used_lines(trained, plan))
    assert "EMOCA (licensed, installed): trained model EMOCA_v2_mp" in text and "FLAME (licensed" in text
    untrained = {**trained, "capture": {"trained": False, "message": "none"}, "flame_path": None}
    assert demo.plan_for(untrained) == demo.DemoPlan("open", None)
    assert "open model" in "\n".join(demo.used_lines(untrained, demo.plan_for(untrained)))


def test_recovery_scores_a_perfect_and_a_neutral_answer():
    """The metric itself: the truth scores 0, answering neutral scores 1, rotations compare by their angle."""
    rng = np.random.default_rng(0)
    true = np.zeros((20, 52), np.float32)
    true[5:10, 3] = rng.uniform(0.2, 1.0, 5)
    true[8:15, 7] = 0.6
    from emoca_contract.arkit import ARKIT_NAMES

    channels = [ARKIT_NAMES[3], ARKIT_NAMES[7]]
    assert demo.arkit_recovery(true, true, channels)["open_arkit_error_ratio"] == 0.0
    neutral = demo.arkit_recovery(np.zeros_like(true), true, channels)
    assert neutral["open_arkit_error_ratio"] == pytest.approx(1.0)
    assert neutral["per_channel"][ARKIT_NAMES[7]]["true_peak"] == pytest.approx(0.6)
    half = demo.arkit_recovery(true * 0.5, true, channels)
    assert half["open_arkit_error_ratio"] == pytest.approx(0.5)
    a = np.array([[0.0, np.radians(20.0), 0.0], [np.radians(10.0), 0.0, 0.0]])
    b = np.array([[0.0, np.radians(15.0), 0.0], [0.0, np.radians(10.0), 0.0]])
    got = demo.rotation_error_deg(a, b)
    assert got[0] == pytest.approx(5.0) and 10.0 < got[1] < 20.0  # two 10-degree turns about different axes
    assert demo.emotion_curves(["emoca_valence", "emoca_joint_expdirs", "emoca_expr_Happy", "emoca_arousal"]) == [
        "emoca_valence",
        "emoca_expr_Happy",
        "emoca_arousal",
    ]


def test_prepare_output_replaces_only_the_demos_own_files(tmp_path):
    from emoca_contract.errors import EmocaError

    (tmp_path / "demo.blend").write_bytes(b"old")
    (tmp_path / "my_notes.txt").write_text("keep me")
    assert demo.prepare_output(tmp_path) == tmp_path
    assert not (tmp_path / "demo.blend").exists() and (tmp_path / "my_notes.txt").read_text() == "keep me"
    with pytest.raises(EmocaError) as err:
        demo.prepare_output(tmp_path / "my_notes.txt")
    assert err.value.code == "config_invalid"


@pytest.mark.torch
def test_the_performance_is_the_moves_it_is_made_of():
    from backend.synthetic.ict_clip import DEMO_PERFORMANCE, driven_channels, perform, performance_length
    from emoca_contract.arkit import ARKIT_INDEX

    fps = 25.0
    arkit, turn = perform(DEMO_PERFORMANCE, fps)
    assert len(arkit) == len(turn) == int(np.ceil(performance_length(DEMO_PERFORMANCE) * fps))
    assert arkit.min() >= 0.0 and arkit.max() <= 1.0
    assert not arkit[0].any() and not turn[0].any()  # it starts at rest
    at = lambda seconds: int(round(seconds * fps))  # noqa: E731
    jaw = next(m for m in DEMO_PERFORMANCE if m.name == "jaw open")
    assert arkit[at(jaw.start + jaw.length / 2), ARKIT_INDEX["jawOpen"]] == pytest.approx(0.7)
    assert arkit[at(jaw.start + jaw.length / 2), ARKIT_INDEX["mouthSmileLeft"]] == 0.0  # one move at a time
    left = next(m for m in DEMO_PERFORMANCE if m.name.startswith("head turn left"))
    assert np.degrees(turn[at(left.start + left.length / 2), 1]) == pytest.approx(20.0)
    assert driven_channels(DEMO_PERFORMANCE) == [
        "eyeBlinkLeft",
        "eyeBlinkRight",
        "jawOpen",
        "mouthSmileLeft",
        "mouthSmileRight",
        "browInnerUp",
        "browOuterUpLeft",
        "browOuterUpRight",
    ]


@pytest.mark.torch
def test_the_performers_look_moves_the_brows_down_and_adds_lashes():
    from backend.ict.rig import eye_centre, poly_centroids
    from backend.synthetic.ict_clip import PERFORMER, RIG_LOOK, ict_model, look_colors

    model, rig = ict_model()
    names = [str(n) for n in rig["material_names"]]
    brow = np.asarray(rig["material_colors"])[names.index("Brows"), :3]
    cen = poly_centroids(model.vertices, model.poly_vertices, model.poly_sizes)
    rig_brows = (look_colors(model, rig, RIG_LOOK) == brow).all(1)
    painted = (look_colors(model, rig, PERFORMER) == brow).all(1)
    assert (
        rig_brows.sum() > 100 and (np.asarray(rig["poly_materials"]) == names.index("Brows")).sum() == rig_brows.sum()
    )
    eyes = np.stack([eye_centre(model, s) for s in ("L", "R")])
    near_eye = np.linalg.norm(cen[:, None] - eyes[None], axis=-1).min(1) < 0.02
    brows, lashes = painted & ~near_eye, painted & near_eye
    # the brows: as many polygons, 4 mm lower (the lashes are the new polygons next to the eyes)
    assert abs(int(brows.sum()) - int(rig_brows.sum())) < 0.2 * rig_brows.sum()
    assert cen[rig_brows, 1].mean() - cen[brows, 1].mean() == pytest.approx(0.004, abs=0.0015)
    assert lashes.sum() > 20 and not (rig_brows & near_eye).any()
    # the upper lids: above the eyes' centres, reaching down to the eyes' corners only
    assert np.median(cen[lashes, 1]) > eyes[0, 1] and (cen[lashes, 1] > eyes[0, 1] - 0.006).all()
