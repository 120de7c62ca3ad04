"""Setup commands run one after another off the UI thread, and the operator mixin that runs them.

Create Backend Environment (venv + pip), Import Assets and Check are each a :class:`StepRun`: a list of
:class:`Step` commands run in order by a worker thread, with a log file, progress (the step and its label) and a
cancel that terminates the running command. The worker thread only runs subprocesses and writes the run's
plain fields; never bpy. The UI thread reads them on a timer (:class:`SetupOperator` in modal mode) or waits for
them (``bpy.app.background``: modal operators do not run there).

One setup runs at a time: its progress group is ``WindowManager.emoca_setup_job`` (properties.SetupProgress),
which the preferences draw where the buttons are, with a Stop button while it runs.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import bpy

from emoca_contract.errors import EmocaError

TICK_S = 0.25  # how often a running setup is polled
FINISHED_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Step:
    """One command of a setup. ``capture``: keep its stdout and stderr (``StepRun.outputs``/``errors``, also
    written to the log when it ends); otherwise both stream into the log as it runs (pip's progress)."""

    label: str
    command: list[str]
    capture: bool = False
    timeout: float | None = None  # seconds; None: no limit


@dataclass
class StepRun:
    """Steps run in order (see the module docstring). ``state``: new, running, done, failed (``failure`` says
    which step and why) or cancelled. ``before``/``after`` run in the worker, first and after the last step."""

    steps: list[Step]
    log_path: Path | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    before: Callable[[], None] | None = None
    after: Callable[[], None] | None = None
    state: str = "new"
    index: int = 0  # the step running (or the last one run)
    outputs: list[str] = field(default_factory=list)  # per finished step: stdout ("" unless captured)
    errors: list[str] = field(default_factory=list)  # per finished step: stderr ("" unless captured)
    returncodes: list[int] = field(default_factory=list)
    failure: str = ""
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def start(self) -> None:
        """Run the steps in a worker thread (returns at once)."""
        self.state = "running"
        threading.Thread(target=self.run, daemon=True, name="emoca-setup").start()

    def cancel(self) -> None:
        """Stop: the running command is terminated and no further step starts. Returns at once."""
        self._cancel.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def running_process(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def progress(self) -> float:
        """0..1: the share of steps finished."""
        return 1.0 if self.state == "done" else len(self.returncodes) / max(len(self.steps), 1)

    def stage(self) -> str:
        """``Step 2 of 3: Installing ...``."""
        return f"Step {self.index + 1} of {len(self.steps)}: {self.steps[self.index].label}" if self.steps else ""

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(max(fh.seek(0, 2) - 16384, 0))
            text = fh.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def run(self) -> None:
        """Blocking: run every step (what the worker thread does; background mode calls it directly)."""
        self.state = "running"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path or os.devnull, "w", encoding="utf-8") as log:
            try:
                self.state = self._run_all(log)
            except OSError as exc:  # a command that cannot start (no such interpreter, no permission)
                self.failure = f"{self.steps[self.index].label}: {exc}" if self.steps else str(exc)
                self.state = "failed"
            finally:
                self._proc = None

    def _run_all(self, log: IO[str]) -> str:
        if self.before is not None:
            self.before()
        for i, step in enumerate(self.steps):
            self.index = i
            if self._cancel.is_set():
                return "cancelled"
            code = self._run_step(step, log)
            if self._cancel.is_set():
                return "cancelled"
            if code != 0:
                self.failure = self.failure or f"{step.label} failed (exit status {code})"
                return "failed"
        if self.after is not None:
            self.after()
        return "done"

    def _run_step(self, step: Step, log: IO[str]) -> int:
        log.write("$ " + " ".join(step.command) + "\n")
        log.flush()
        pipe = subprocess.PIPE if step.capture else log
        proc = subprocess.Popen(step.command, stdout=pipe, stderr=pipe if step.capture else subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd, text=True, encoding="utf-8",
                                errors="replace")  # fmt: skip
        self._proc = proc
        try:
            out, err = proc.communicate(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.failure = f"{step.label} took longer than {step.timeout:g} s"
        if step.capture:
            log.write((out or "") + (err or ""))
            log.flush()
        self.outputs.append(out or "")
        self.errors.append(err or "")
        self.returncodes.append(proc.returncode)
        return proc.returncode


class SetupOperator:
    """Mixin for a ``bpy.types.Operator`` that runs one :class:`StepRun` (see the module docstring).

    A subclass sets ``setup_noun`` and implements ``make_run`` (validate and build the run; raise EmocaError to
    refuse) and ``finish`` (read the finished run's outputs; report; may raise EmocaError); it may override
    ``failed`` (the EmocaError a failed run means).
    """

    setup_noun: ClassVar[str] = "Setup"

    if TYPE_CHECKING:  # bpy.types.Operator provides it

        def report(self, type: set[str], message: str) -> None: ...

    def make_run(self, context) -> StepRun:
        raise NotImplementedError

    def finish(self, context, props, run: StepRun) -> set[str]:
        raise NotImplementedError

    def failed(self, context, props, run: StepRun) -> EmocaError:
        return EmocaError("internal", f"{self.setup_noun}: {run.failure}", f"See the log: {run.log_path}")

    # ---- Blender's entry points
    def execute(self, context) -> set[str]:
        """Start the run: modal with a timer in the UI, blocking in background mode and scripts."""
        props = context.window_manager.emoca_setup_job
        if props.running:
            self.report({"ERROR"}, f"{props.stage or 'A setup'} is already running; wait for it or press Stop")
            return {"CANCELLED"}
        try:
            self._run = self.make_run(context)
        except EmocaError as exc:
            props.message = exc.message.splitlines()[0]
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        props.running, props.stop_requested, props.log = True, False, ""
        props.message = f"{self.setup_noun}..."
        sync(props, self._run)
        if bpy.app.background:
            self._run.run()
            return self._end(context)
        self._run.start()
        wm = context.window_manager
        self._timer: Any = wm.event_timer_add(TICK_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        props = context.window_manager.emoca_setup_job
        if props.stop_requested:
            self._run.cancel()
        sync(props, self._run)
        redraw_preferences(context)
        if not self._run.finished:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._end(context)

    def cancel(self, context) -> None:
        """Blender ends the operator (its window closed, Blender quits, a file loads): stop the run, let go."""
        self._run.cancel()
        props = context.window_manager.emoca_setup_job
        props.running, props.stop_requested = False, False
        props.message = f"{self.setup_noun} stopped: its window was closed"

    def _end(self, context) -> set[str]:
        """The one end of every setup: cancelled, failed or done."""
        props = context.window_manager.emoca_setup_job
        run = self._run
        props.running, props.stop_requested = False, False
        sync(props, run)
        if run.state == "cancelled":
            props.message = f"{self.setup_noun} stopped"
            self.report({"WARNING"}, props.message)
            return {"CANCELLED"}
        try:
            if run.state != "done":
                raise self.failed(context, props, run)
            return self.finish(context, props, run)
        except EmocaError as exc:
            props.message = f"{self.setup_noun} failed: {exc.message}".splitlines()[0]
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}


def sync(props, run: StepRun) -> None:
    """Copy a run's progress into its progress group (what the preferences draw)."""
    props.progress, props.stage = run.progress(), run.stage()


def redraw_preferences(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas if window.screen else []:
            if area.type == "PREFERENCES":
                area.tag_redraw()
