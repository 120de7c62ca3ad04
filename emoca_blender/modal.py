"""The modal-job mixin: an operator that runs one backend job (client.CaptureJob, client.TrainJob) to its end.

In the UI the operator is modal: a 0.1 s window timer steps the job, the job's progress group on the
WindowManager (``properties.JobProgress``) and Blender's progress cursor follow it, and Esc (or the group's
``stop_requested``, set by a Stop button) cancels it. The UI thread never waits for the backend: when the job
ends (done, failed or cancelled) the backend is asked to stop (``BackendProcess.stop``) and the timer keeps
ticking, polling ``BackendProcess.reap`` (which terminates, then kills, a backend that lingers) until it is
gone; only then does the job end, so no second backend starts while the first still runs. In background mode
and from scripts (modal operators do not run there) ``execute`` runs the same steps in a blocking loop that
prints progress lines. Either way the job ends in one place, :meth:`BackendJobOperator._end`: the backend is
closed, the progress group updated, and the subclass's ``job_done`` gets the finished job (the one step that may
change the scene: one undo step).

A subclass sets ``job_props`` (the WindowManager attribute of its progress group), ``job_noun`` and
``cancelled_message``, and implements ``prepare`` (validate, remember the request), ``make_job``,
``progress_text`` and ``job_done``; it may extend ``sync``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import bpy

from emoca_contract.errors import EmocaError

from .client import BackendJob, BackendProcess, CaptureJob, TrainJob
from .preferences import backend_python
from .progress import print_line

JobT = TypeVar("JobT", bound=BackendJob)
TICK_S = 0.1  # how often the job is stepped (the timer; the blocking loop's sleep)
CLOSE_TIMEOUT_S = 3.0  # blocking path: how long a finished backend gets to exit before it is terminated


class BackendJobOperator(Generic[JobT]):
    """Mixin for a ``bpy.types.Operator`` that runs one backend job (see the module docstring)."""

    job_props: ClassVar[str] = "emoca_job"
    job_noun: ClassVar[str] = "Job"  # "Capture": "A capture is already running", "Capture failed: ..."
    cancelled_message: ClassVar[str] = "Cancelled"
    redraw_areas: ClassVar[tuple[str, ...]] = ("VIEW_3D",)

    if TYPE_CHECKING:  # bpy.types.Operator provides it

        def report(self, type: set[str], message: str) -> None: ...

    # ---- what a subclass provides
    def prepare(self, context) -> str:
        """Validate the settings and remember the request (raise EmocaError); return the job's start message."""
        raise NotImplementedError

    def make_job(self, context, proc: BackendProcess) -> JobT:
        raise NotImplementedError

    def progress_text(self, props) -> str:
        """The job's progress as one line (printed in the blocking loop)."""
        raise NotImplementedError

    def job_done(self, context, props) -> set[str]:
        """The finished job's result: record it, report, return the operator's result (may raise EmocaError)."""
        raise NotImplementedError

    def sync(self, props, job: JobT) -> None:
        """Copy the job's progress into its progress group (what the panel draws)."""
        props.progress, props.stage, props.fps = job.progress, job.stage, job.fps
        props.eta = float(job.eta) if isinstance(job.eta, (int, float)) else -1.0

    # ---- starting
    def _props(self, context):
        return getattr(context.window_manager, self.job_props)

    def _begin(self, context) -> bool:
        """Start the job and reset its progress group; on a bad setting report it and return False."""
        self._timer: Any = None
        self._proc: BackendProcess | None = None
        self._stopping: tuple[str, float] | None = None  # (the job's end state, when the backend was asked to stop)
        props = self._props(context)
        if props.running:
            self.report({"WARNING"}, f"A {self.job_noun.lower()} is already running")
            return False
        try:
            message = self.prepare(context)
            self._proc = BackendProcess(backend_python(context))
            self.job: JobT = self.make_job(context, self._proc)
            self.job.start()
        except EmocaError as exc:
            self._release(context)
            self.report({"ERROR"}, exc.report())
            return False
        props.running, props.stop_requested, props.message = True, False, message
        self.sync(props, self.job)
        return True

    # ---- Blender's entry points
    def execute(self, context) -> set[str]:
        """Blocking: background mode and scripts (``bpy.ops.emoca.x()``)."""
        if not self._begin(context):
            return {"CANCELLED"}
        props = self._props(context)
        state, printed = self.job.state, ""
        while state == "running":
            time.sleep(TICK_S)
            state = self._tick(context)
            line = self.progress_text(props)
            if state == "running" and line != printed:
                print_line(line)
                printed = line
        return self._end(context, state)

    def invoke(self, context, event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        if not self._begin(context):
            return {"CANCELLED"}
        wm = context.window_manager
        wm.progress_begin(0, 1000)
        self._timer = wm.event_timer_add(TICK_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event) -> set[str]:
        if self._stopping is not None:
            return self._poll_stop(context) if event.type == "TIMER" else self._swallow_esc(event)
        if event.type == "ESC":
            self.job.cancel()
            return self._stop(context, "cancelled")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._tick(context)
        context.window_manager.progress_update(int(self._props(context).progress * 1000))
        if state != "running":
            return self._stop(context, state)
        self._redraw(context)
        return {"RUNNING_MODAL"}

    def _redraw(self, context) -> None:
        for area in context.screen.areas if context.screen else []:
            if area.type in self.redraw_areas:
                area.tag_redraw()

    @staticmethod
    def _swallow_esc(event) -> set[str]:
        """While the backend stops, a second Esc is ours (it changes nothing); other events pass."""
        return {"RUNNING_MODAL"} if event.type == "ESC" else {"PASS_THROUGH"}

    def _stop(self, context, state: str) -> set[str]:
        """The job ended as ``state``: ask the backend to stop and keep ticking until it is gone (never wait)."""
        if self._proc is not None:
            self._proc.stop()
        self._stopping = (state, time.monotonic())
        self._props(context).stage = "stopping"
        return self._poll_stop(context)

    def _poll_stop(self, context) -> set[str]:
        """One tick while the backend stops: end the job once it is gone, else keep the operator running."""
        assert self._stopping is not None
        state, since = self._stopping
        if self._proc is not None and not self._proc.reap(time.monotonic() - since):
            self._redraw(context)
            return {"RUNNING_MODAL"}
        self._stopping = None
        return self._end(context, state)

    def cancel(self, context) -> None:
        """Blender quits or loads a file mid-job: cancel it and let go of the backend."""
        self.job.cancel()
        self._end(context, "cancelled")

    # ---- stepping and ending
    def _tick(self, context) -> str:
        """Step the job once: cancel on a stop request, report new warnings, sync the progress group."""
        props = self._props(context)
        if props.stop_requested:
            self.job.cancel()
            return self.job.state
        n_warnings = len(self.job.warnings)
        state = self.job.step()
        for message in self.job.warnings[n_warnings:]:
            self.report({"WARNING"}, message)
        self.sync(props, self.job)
        return state

    def _release(self, context) -> None:
        """Stop the timer, close the backend and mark the job as not running."""
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
            wm.progress_end()
        if self._proc is not None:
            self._proc.close(timeout=CLOSE_TIMEOUT_S)
            self._proc = None
        props = self._props(context)
        props.running, props.stop_requested = False, False

    def _end(self, context, state: str) -> set[str]:
        """The one end of every job: release, then the result (``done``), a cancel or a failure."""
        self._release(context)
        props = self._props(context)
        if state == "cancelled":
            props.message = self.cancelled_message
            self.report({"WARNING"}, self.cancelled_message)
            return {"CANCELLED"}
        try:
            if state == "done":
                return self.job_done(context, props)
            raise self.job.error or EmocaError("internal", f"the {self.job_noun.lower()} ended as {state!r}")
        except EmocaError as exc:
            props.message = f"{self.job_noun} failed: {exc.message}".splitlines()[0]
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}


# The operators' bases. Typed per job for the checker only: an Operator class deriving from a subscripted Generic
# (``BackendJobOperator[CaptureJob]``) makes Blender 4.2 crash when Python exits.
if TYPE_CHECKING:
    CaptureJobOperator = BackendJobOperator[CaptureJob]
    TrainJobOperator = BackendJobOperator[TrainJob]
else:
    CaptureJobOperator = TrainJobOperator = BackendJobOperator
