"""The Train panel: TrainJob against the real backend, the train/stop/use-model operators, the panel's drawing."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest

from emoca_blender import api, client, panel, properties, training
from emoca_blender.preferences import capture_options
from emoca_contract.errors import EmocaError

from .test_operators import _Layout

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

# tiny_cpu cut down to seconds: 8 synthetic renders, batches of 4 (2 steps an epoch), no time cap
SHORT = ["data.synthetic.n_train=8", "data.synthetic.n_val=4", "data.batch_size=4", "learning.max_time_s=null"]


def _drive(job, until, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    state = job.step()
    while state == "running" and not until(job) and time.monotonic() < deadline:
        time.sleep(0.05)
        state = job.step()
    return state


# ------------------------------------------------------------------------------------------- no backend needed
def test_shipped_configs_are_offered_with_tiny_cpu_first():
    names = [p.stem for p in properties.shipped_configs()]
    assert {"tiny_cpu", "emoca_v1", "emoca_v2", "emotion_resnet50"} <= set(names)
    assert names[0] == "tiny_cpu"
    items = [i[0] for i in properties.CONFIG_ITEMS]
    assert items[:-1] == names and items[-1] == "CUSTOM"
    assert bpy.context.scene.emoca_train.config == "tiny_cpu"


def test_train_request_turns_the_panel_settings_into_overrides(tmp_path, fresh_scene):
    s = fresh_scene.emoca_train
    data = tmp_path / "faces"
    data.mkdir()
    s.config, s.data_dir, s.output_dir = "emoca_v2", str(data), str(tmp_path / "run")
    s.max_epochs, s.max_steps, s.overrides = 3, 0, "trainer.devices=2 'model.init=/a b/DECA'"
    config, overrides = training.train_request(s)
    assert Path(config).is_file() and Path(config).name == "emoca_v2.yaml"
    assert Path(config).parent == client.backend_root() / "training" / "configs"
    assert overrides == [
        f"output_dir={tmp_path / 'run'}",
        f"data.train={data}",
        "learning.max_epochs=3",
        "trainer.devices=2",
        "model.init=/a b/DECA",
    ]
    s.output_dir = ""  # unsaved .blend: the home folder; saved: beside it
    assert training.train_request(s)[1][0] == f"output_dir={Path.home() / 'emoca_runs' / 'emoca_v2'}"
    assert training.train_request(s, "/proj/shot.blend")[1][0] == "output_dir=/proj/emoca_runs/emoca_v2"


@pytest.mark.parametrize(
    "field, value, code, needle",
    [
        ("overrides", "learning.lr", "config_invalid", "learning.lr"),
        ("overrides", "a='unclosed", "config_invalid", "unclosed"),
        ("data_dir", "/nonexistent/faces", "input_missing", "/nonexistent/faces"),
        ("config_path", "/nonexistent/my.yaml", "input_missing", "/nonexistent/my.yaml"),
    ],
)
def test_train_request_refuses_bad_settings_clearly(fresh_scene, field, value, code, needle):
    s = fresh_scene.emoca_train
    if field == "config_path":
        s.config = "CUSTOM"
    setattr(s, field, value)
    with pytest.raises(EmocaError) as err:
        training.train_request(s)
    assert err.value.code == code and needle in err.value.message


def test_train_operator_reports_a_bad_setting_without_starting(fresh_scene):
    fresh_scene.emoca_train.config = "CUSTOM"  # and no file
    with pytest.raises(RuntimeError, match="no training config file"):
        bpy.ops.emoca.train()
    assert not bpy.context.window_manager.emoca_train_job.running


def test_run_folder_of_a_checkpoint_and_result_paths():
    assert client.run_folder_of("/r/run/coarse/checkpoints/last.ckpt") == Path("/r/run")
    assert client.run_folder_of("/r/emo/checkpoints/x.ckpt") == Path("/r/emo")
    assert client.train_result_paths({"files": ["/r/run/coarse/checkpoints/a.ckpt"]}) == (
        "/r/run",
        "/r/run/coarse/checkpoints/a.ckpt",
    )
    assert client.train_result_paths({"model_folder": "/m", "checkpoint": "/c/x.ckpt"}) == ("/m", "/c/x.ckpt")
    assert client.train_result_paths({"files": []}) == (None, None)


def test_use_trained_model_needs_a_finished_run(addon_prefs):
    bpy.context.window_manager.emoca_train_job.model_folder = ""
    with pytest.raises(RuntimeError, match="No trained model folder"):
        bpy.ops.emoca.use_trained_model()
    assert addon_prefs.emoca_model == ""


def test_train_panel_draws_settings_progress_stop_and_the_result(fresh_scene, tmp_path):
    class Ctx:
        scene = fresh_scene
        window_manager = bpy.context.window_manager

    job = Ctx.window_manager.emoca_train_job
    draw = panel.EMOCA_PT_view3d_train.draw
    assert panel.EMOCA_PT_view3d_train.bl_parent_id == "EMOCA_PT_view3d"

    def drawn():
        log = []
        draw(type("P", (), {"layout": _Layout(log)})(), Ctx)
        return log

    fresh_scene.emoca_train.config = "CUSTOM"
    log = drawn()
    assert ("prop", "config_path") in log and ("operator", "emoca.train") in log
    assert ("operator", "emoca.use_trained_model") not in log
    job.running, job.epoch, job.step, job.total, job.loss, job.progress = True, 2, 37, 100, 0.1234, 0.37
    log = drawn()
    assert ("operator", "emoca.train_stop") in log and ("operator", "emoca.train") not in log
    text = next(t for kind, t in log if kind == "progress")
    assert "epoch 2" in text and "step 37/100" in text and "loss 0.1234" in text
    job.running, job.model_folder, job.checkpoint = False, str(tmp_path), str(tmp_path / "last.ckpt")
    log = drawn()
    assert ("operator", "emoca.use_trained_model") in log
    assert any(kind == "label" and str(tmp_path) in (t or "") for kind, t in log)
    job.model_folder = job.checkpoint = ""


def test_stop_operator_only_runs_while_training():
    job = bpy.context.window_manager.emoca_train_job
    job.running = False
    assert not bpy.ops.emoca.train_stop.poll()
    job.running = True
    assert bpy.ops.emoca.train_stop() == {"FINISHED"} and job.stop_requested
    job.running = job.stop_requested = False


# ------------------------------------------------------------------------------------------- the real backend
@pytest.mark.torch
def test_train_job_reports_epoch_step_loss_and_the_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    with client.BackendProcess(sys.executable) as proc:
        job = client.TrainJob(proc, "tiny_cpu", [f"output_dir={out}", *SHORT, "learning.max_steps=6"])
        job.start()
        seen = []
        while job.state == "running":
            state = _drive(job, until=lambda j: j.n_progress > len(seen))
            if job.n_progress > len(seen):
                seen.append((job.epoch, job.global_step, job.total, job.loss))
            if state != "running":
                break
        assert job.state == "done", job.error
        assert proc.alive
    assert seen and all(
        total == 6 and 1 <= step <= 6 and math.isfinite(loss) and loss > 0 for _, step, total, loss in seen
    )
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)
    assert job.global_step == 6 and job.progress == 1.0
    assert Path(job.model_folder) == out and (out / "cfg.yaml").is_file()
    assert Path(job.checkpoint).is_file() and out in Path(job.checkpoint).parents
    assert job.capture_loadable is False  # tiny_cpu's small CNN is not capture's network


@pytest.mark.torch
def test_train_job_cancelled_mid_run_and_the_backend_keeps_serving(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with client.BackendProcess(sys.executable) as proc:
        job = client.TrainJob(
            proc,
            "tiny_cpu",
            [f"output_dir={tmp_path / 'run'}", *SHORT, "learning.max_steps=100000", "learning.max_epochs=100000"],
        )
        job.start()
        assert _drive(job, until=lambda j: j.n_progress > 0) == "running"
        assert job.global_step >= 1 and job.loss is not None
        job.cancel()
        assert job.state == "cancelled"
        deadline, answer, results = time.monotonic() + 60, None, []
        while answer is None and time.monotonic() < deadline:  # the backend confirms: error code 'cancelled'
            events = proc.poll()
            answer = next((e for e in events if e.get("type") == "error" and e.get("id") == job.req_id), None)
            results += [e for e in events if e.get("type") == "result" and e.get("id") == job.req_id]
            time.sleep(0.05)
        assert answer is not None and answer["code"] == "cancelled" and not results
        status_id = proc.request("status")  # still serving
        deadline, status = time.monotonic() + 60, None
        while status is None and time.monotonic() < deadline:
            status = next((e for e in proc.poll() if e.get("type") == "result" and e.get("id") == status_id), None)
            time.sleep(0.05)
        assert status is not None and proc.alive


@pytest.mark.torch
def test_train_operator_blocking_then_use_as_capture_model(tmp_path, monkeypatch, fresh_scene, addon_prefs):
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    s = fresh_scene.emoca_train
    s.config, s.output_dir, s.max_steps, s.overrides = "tiny_cpu", str(tmp_path / "run"), 3, " ".join(SHORT)
    assert bpy.app.background
    assert bpy.ops.emoca.train() == {"FINISHED"}
    job = bpy.context.window_manager.emoca_train_job
    assert not job.running and job.step == 3 and job.loss > 0
    assert Path(job.model_folder) == tmp_path / "run" and Path(job.checkpoint).is_file()
    assert not job.capture_loadable
    assert bpy.ops.emoca.use_trained_model() == {"FINISHED"}
    assert addon_prefs.emoca_model == job.model_folder
    assert capture_options(None, bpy.context)["model"] == job.model_folder  # what the next Capture sends


@pytest.mark.torch
def test_train_operator_reports_the_backends_config_error(tmp_path, monkeypatch, fresh_scene):
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    s = fresh_scene.emoca_train
    s.output_dir, s.overrides = str(tmp_path / "run"), "learning.max_stepz=3"  # a typo fails loudly
    with pytest.raises(RuntimeError, match="max_stepz"):
        bpy.ops.emoca.train()
    job = bpy.context.window_manager.emoca_train_job
    assert not job.running and job.message.startswith("Training failed") and not job.model_folder


@pytest.mark.torch
def test_api_train_returns_the_model_folder_and_the_checkpoint(tmp_path):
    run = api.train("tiny_cpu", f"output_dir={tmp_path / 'run'}", *SHORT, **{"learning.max_steps": 1}, verbose=False)
    assert isinstance(run, api.TrainResult)
    assert run.model_folder == tmp_path / "run" and (run.model_folder / "cfg.yaml").is_file()
    assert run.checkpoint.is_file() and run.checkpoint.suffix == ".ckpt" and run.model_folder in run.checkpoint.parents
    assert run.result["global_step"] == 1 and any(e.get("type") == "progress" for e in run.events)
