"""Setting up from Blender (issue 13, cases 10, 12, 13): the backend environment is found or named missing (never
Blender's own Python in silence), *Check* tests it first and honours the preferences' paths, *Import Assets*
runs the backend's import, and *Create Backend Environment* respects Online Access, shows its progress, can be
cancelled and refuses a second press.

Real subprocesses throughout: broken environments are real virtual environments (one without packages, one that
sees only numpy, like Blender's bundled Python), steps are real commands.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from emoca_blender import client, environment, preferences, steps
from emoca_contract import __version__
from emoca_contract.errors import ERROR_CODES, EmocaError

from .test_operators import _Layout

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]


def _venv(path: Path, numpy: bool) -> Path:
    """A real virtual environment without pip; with ``numpy`` it sees this interpreter's numpy and nothing else."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    if numpy:
        import numpy as np

        site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        shelf = path / "numpy only"
        shelf.mkdir()
        (shelf / "numpy").symlink_to(Path(np.__file__).parent)
        (Path(site) / "numpy_only.pth").write_text(str(shelf) + "\n")
    return python


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    return _venv(tmp_path_factory.mktemp("env") / "bare", numpy=False)


@pytest.fixture(scope="module")
def numpy_python(tmp_path_factory) -> Path:
    """What Blender's own Python is to the backend: numpy, no torch, av or mediapipe."""
    return _venv(tmp_path_factory.mktemp("env") / "numpy", numpy=True)


# ------------------------------------------------------------------ case 10: the backend environment
def test_backend_missing_is_a_documented_code():
    assert "backend_missing" in ERROR_CODES and "Create Backend Environment" in ERROR_CODES["backend_missing"]
    doc = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert "| `backend_missing` |" in doc


def test_blenders_own_python_is_never_the_silent_fallback(tmp_path):
    inside = environment.own_python(binary_path="/opt/blender/blender", executable="/opt/blender/python3.11")
    assert inside is None  # Blender's bundled Python has none of the backend's packages
    assert environment.own_python(binary_path="", executable=sys.executable) == sys.executable  # bpy as a module
    with pytest.raises(EmocaError) as err:
        environment.choose_backend_python(configured="", from_env="", created=None, own=None)
    assert err.value.code == "backend_missing" and "Create Backend Environment" in err.value.hint
    assert environment.choose_backend_python("", "", None, sys.executable) == sys.executable
    made = tmp_path / "made" / "bin" / "python"
    assert environment.choose_backend_python("", "", made, sys.executable) == str(made)
    assert environment.choose_backend_python("/a/python", "/b/python", made, None) == "/a/python"
    assert environment.choose_backend_python("", "/b/python", made, None) == "/b/python"


def test_an_unfinished_environment_is_not_used(tmp_path):
    root = tmp_path / "backend_env"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    assert environment.created_python(root) is None  # made, but its installation never finished
    environment.mark_ready(root)
    assert environment.created_python(root) == root / "bin" / "python"


@pytest.mark.parametrize("which", ["numpy_python", "bare_python"])
def test_capture_in_a_broken_environment_says_backend_missing(which, request, tmp_path):
    """Before: ``[internal] ModuleNotFoundError: No module named 'torch' ... This is a bug``."""
    python = request.getfixturevalue(which)
    with client.BackendProcess(python) as proc:
        job = client.CaptureJob(proc, {"input": str(tmp_path / "c.mp4"), "output": str(tmp_path / "c.npz"),
                                       "options": {}})  # fmt: skip
        job.start()
        deadline = time.monotonic() + 120
        while job.step() == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert job.state == "failed"
    assert job.error.code == "backend_missing", job.error.report()
    missing = "torch" if which == "numpy_python" else "numpy"
    assert f"'{missing}'" in job.error.message and "Create Backend Environment" in job.error.hint
    assert "This is a bug" not in job.error.report()


def test_run_request_in_a_broken_environment_says_backend_missing(numpy_python, tmp_path):
    with pytest.raises(EmocaError) as err:
        client.run_request(numpy_python, "capture", timeout=120, input=str(tmp_path / "c.mp4"),
                           output=str(tmp_path / "c.npz"), options={})  # fmt: skip
    assert err.value.code == "backend_missing"


def test_probe_names_what_the_environment_lacks(numpy_python):
    out = subprocess.run(environment.probe_command(str(numpy_python)), cwd=client.backend_root().parent,
                         env=client.backend_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    with pytest.raises(EmocaError) as err:
        environment.read_probe(out.stdout, out.returncode, str(numpy_python), __version__)
    assert err.value.code == "backend_missing"
    for name in ("torch", "av", "mediapipe"):
        assert name in err.value.message
    assert str(numpy_python) in err.value.message


def test_probe_refuses_a_backend_of_another_version(numpy_python):
    found = {"python": "3.11.7", "executable": "/x/python", "found": {"torch": "2.13.0", "av": "18", "mediapipe":
             "0.10", "numpy": "1.26"}, "missing": {}, "backend": "0.0.1"}  # fmt: skip
    with pytest.raises(EmocaError) as err:
        environment.read_probe(json.dumps(found), 0, "/x/python", "0.1.0")
    assert err.value.code == "backend_missing" and "0.0.1" in err.value.message and "0.1.0" in err.value.message
    assert environment.read_probe(json.dumps(found | {"backend": "0.1.0"}), 0, "/x/python", "0.1.0") == found | {
        "backend": "0.1.0"
    }


def test_check_in_a_broken_environment_says_so_first_and_only(numpy_python, monkeypatch, tmp_path):
    """Before: 25 asset lines and never a word about torch."""
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", str(numpy_python))
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path))
    with pytest.raises(RuntimeError, match="backend_missing"):
        bpy.ops.emoca.check_assets()
    report = bpy.context.window_manager.emoca_setup_job.check_report.splitlines()
    assert report[0].startswith("backend: MISSING") and "torch" in report[0]
    assert not any(line.startswith("flame2020") for line in report)


@pytest.mark.torch
def test_check_reports_the_environment_then_the_assets(monkeypatch, tmp_path, addon_prefs):
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path / "assets"))
    flame = tmp_path / "my flame" / "generic_model.pkl"
    flame.parent.mkdir()
    flame.write_bytes(b"\x80\x02}q\x00.")
    addon_prefs.flame_path = str(flame)
    addon_prefs.emoca_model = str(tmp_path / "no such model")
    try:
        assert bpy.ops.emoca.check_assets() == {"FINISHED"}
    finally:
        addon_prefs.flame_path = addon_prefs.emoca_model = ""
    report = bpy.context.window_manager.emoca_setup_job.check_report.splitlines()
    assert report[0].startswith("backend: ok") and "torch" in report[0] and __version__ in report[0]
    assert any(line.startswith("FLAME Model (preferences): found") and str(flame) in line for line in report)
    assert any(line.startswith("EMOCA Model Folder (preferences): MISSING") for line in report)
    assert any(line.startswith("flame2020: MISSING") and "preferences" in line for line in report)


# ------------------------------------------------------------------ case 12: Check honours the preferences, Import
def test_preference_paths_are_checked_by_kind(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "cfg.yaml").write_text("model: {}\n")
    flame = tmp_path / "generic_model.pkl"
    flame.write_bytes(b"x")
    lines = preferences.preference_lines({"flame": str(flame), "model": str(model), "emotion": ""})
    assert lines == [f"FLAME Model (preferences): found - {flame}",
                     f"EMOCA Model Folder (preferences): found - {model}"]  # fmt: skip
    lines = preferences.preference_lines({"flame": str(tmp_path), "model": str(flame), "emotion": str(tmp_path / "x")})
    assert [line.split(":")[1].split(" - ")[0].strip() for line in lines] == ["MISSING"] * 3


@pytest.fixture
def mask_zip(tmp_path) -> Path:
    """A download in the official layout that needs no scipy or torch to write (the Blender 4.2 run has none)."""
    from tests.assets import helpers as H

    return H.make_zip(tmp_path / "downloads" / "FLAME masks.zip", {"FLAME/mask/uv_face_mask.png": H.png_bytes()})


def test_import_assets_places_the_files_and_shows_the_status(mask_zip, monkeypatch, tmp_path):
    root = tmp_path / "assets root"
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(root))
    result = bpy.ops.emoca.import_assets(directory=str(mask_zip.parent), files=[{"name": mask_zip.name}])
    assert result == {"FINISHED"}
    assert (root / "FLAME" / "mask" / "uv_face_mask.png").is_file()
    report = bpy.context.window_manager.emoca_setup_job.check_report.splitlines()
    assert report[0].startswith("imported: 1 file")
    assert any(line.startswith("uv_face_mask: found") for line in report)
    assert any(line.startswith("flame2020: MISSING") for line in report)


def test_import_assets_reports_the_backends_code(monkeypatch, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not a zip")
    monkeypatch.setenv("EMOCA_BACKEND_PYTHON", sys.executable)
    monkeypatch.setenv("EMOCA_BLENDER_ASSETS", str(tmp_path / "root"))
    with pytest.raises(RuntimeError, match=r"\[(asset_invalid|input_corrupt)\]"):
        bpy.ops.emoca.import_assets(directory=str(tmp_path), files=[{"name": junk.name}])


# ------------------------------------------------------------------ case 13: creating the environment
def test_manifest_declares_the_download_honestly():
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    reason = manifest["permissions"]["network"]
    assert "Create Backend Environment" in reason or "backend" in reason.lower()
    assert len(reason) <= 64 and (reason[-1].isalnum() or reason[-1] in ")]}")
    install = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    assert "network" in install and "Allow Online Access" in install


def test_create_environment_respects_online_access(fresh_scene):
    assert bpy.app.online_access is False  # the bpy module starts offline, as Blender does until allowed
    props = bpy.context.window_manager.emoca_setup_job
    with pytest.raises(RuntimeError, match="Online Access"):
        bpy.ops.emoca.create_env()
    assert not props.running


@pytest.mark.parametrize("operator", ["create_env", "check_assets", "import_assets"])
def test_a_second_press_is_refused_while_setup_runs(operator):
    props = bpy.context.window_manager.emoca_setup_job
    props.running = True
    try:
        with pytest.raises(RuntimeError, match="already running"):
            getattr(bpy.ops.emoca, operator)()
    finally:
        props.running = False


def _wait(run: steps.StepRun, until, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not until(run) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_steps_run_in_order_with_progress_and_a_log(tmp_path):
    run = steps.StepRun(
        [steps.Step("first", [sys.executable, "-c", "print('one')"]),
         steps.Step("second", [sys.executable, "-c", "import sys; print('two'); print('err', file=sys.stderr)"],
                    capture=True)],
        log_path=tmp_path / "setup.log",
    )  # fmt: skip
    assert run.progress() == 0.0 and run.state == "new"
    run.start()
    _wait(run, lambda r: r.finished)
    assert run.state == "done" and run.progress() == 1.0
    assert run.outputs == ["", "two\n"]
    log = (tmp_path / "setup.log").read_text(encoding="utf-8")
    assert "$ " in log and "one" in log and "err" in log


def test_a_running_step_is_cancelled_without_waiting_for_it(tmp_path):
    run = steps.StepRun(
        [steps.Step("quick", [sys.executable, "-c", "print('ready', flush=True)"]),
         steps.Step("slow", [sys.executable, "-c", "import time; time.sleep(120)"]),
         steps.Step("never", [sys.executable, "-c", "open('never-ran', 'w')"])],
        log_path=tmp_path / "setup.log", cwd=str(tmp_path),
    )  # fmt: skip
    run.start()
    _wait(run, lambda r: r.index == 1 and r.running_process())
    assert run.stage() == "Step 2 of 3: slow" and run.progress() == pytest.approx(1 / 3)
    run.cancel()  # returns at once; the worker ends the process
    _wait(run, lambda r: r.finished)
    assert run.state == "cancelled" and not (tmp_path / "never-ran").exists()


def test_a_failed_step_stops_the_run_and_names_it(tmp_path):
    run = steps.StepRun([steps.Step("breaks", [sys.executable, "-c", "import sys; sys.exit(4)"]),
                         steps.Step("never", [sys.executable, "-c", "open('never-ran', 'w')"])],
                        log_path=tmp_path / "setup.log", cwd=str(tmp_path))  # fmt: skip
    run.run()
    assert run.state == "failed" and "breaks" in run.failure and "4" in run.failure
    assert not (tmp_path / "never-ran").exists()


def test_the_preferences_show_progress_and_stop_where_the_button_is(addon_prefs):
    props = bpy.context.window_manager.emoca_setup_job
    for running in (False, True):
        props.running, props.stage, props.progress = running, "Step 2 of 3: Installing", 0.4
        log: list = []
        preferences.draw_preferences(_Layout(log), addon_prefs, bpy.context)
        ops = [name for kind, name in log if kind == "operator"]
        if running:
            assert ("progress", "Step 2 of 3: Installing") in log and "emoca.setup_stop" in ops
            assert "emoca.create_env" not in ops and "emoca.import_assets" not in ops
        else:
            assert {"emoca.create_env", "emoca.import_assets", "emoca.check_assets"} <= set(ops)
    props.running = False


class _SlowSetup(steps.SetupOperator):
    """The setup mixin outside an Operator class (modal mode cannot start headless: drive its ticks)."""

    setup_noun = "Slow setup"

    def __init__(self, run: steps.StepRun):
        self.reports: list[tuple[set, str]] = []
        self._run = run

    def report(self, type, message):  # noqa: A002 - Blender's signature
        self.reports.append((type, message))

    def finish(self, context, props, run):
        return {"FINISHED"}


def _slow_run(tmp_path) -> steps.StepRun:
    return steps.StepRun([steps.Step("sleeping", [sys.executable, "-c", "import time; time.sleep(120)"])],
                         log_path=tmp_path / "slow.log")  # fmt: skip


def test_stop_ends_a_modal_setup_on_its_next_ticks(tmp_path):
    """What the Stop button does: the timer's next tick cancels the run; the operator ends once it stopped."""
    from types import SimpleNamespace

    context, props = bpy.context, bpy.context.window_manager.emoca_setup_job
    op = _SlowSetup(_slow_run(tmp_path))
    op._run.start()
    _wait(op._run, lambda r: r.running_process())
    props.running = True
    op._timer = context.window_manager.event_timer_add(steps.TICK_S, window=context.window)
    tick = SimpleNamespace(type="TIMER")
    assert op.modal(context, tick) == {"RUNNING_MODAL"} and props.stage == "Step 1 of 1: sleeping"
    assert op.modal(context, SimpleNamespace(type="MOUSEMOVE")) == {"PASS_THROUGH"}
    bpy.ops.emoca.setup_stop()
    result, deadline = {"RUNNING_MODAL"}, time.monotonic() + 60
    while result == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        time.sleep(0.05)
        result = op.modal(context, tick)
    assert result == {"CANCELLED"} and op._run.state == "cancelled"
    assert not props.running and not props.stop_requested and props.message == "Slow setup stopped"


def test_a_closed_window_stops_the_setup_and_frees_the_buttons(tmp_path):
    props = bpy.context.window_manager.emoca_setup_job
    op = _SlowSetup(_slow_run(tmp_path))
    op._run.start()
    _wait(op._run, lambda r: r.running_process())
    props.running = True
    op.cancel(bpy.context)
    _wait(op._run, lambda r: r.finished)
    assert op._run.state == "cancelled" and not props.running and "closed" in props.message
