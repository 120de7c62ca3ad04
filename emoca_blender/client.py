"""Start the backend (`python -m backend serve`) and talk to it over the stdio protocol (docs/formats.md).

Stdlib only. The protocol is the shared contract's (``emoca_contract.protocol``, loaded by path with the rest of
the contract, see contract.py), so both sides speak one schema without the add-on importing the backend. A
reader thread turns stdout lines into events on a queue (the UI thread never blocks on the pipe); a second
thread collects stderr into a log. Never touch bpy from these threads.

Stopping never waits on the UI thread: :meth:`BackendProcess.stop` closes the backend's stdin (it cancels its
jobs and exits) and :meth:`BackendProcess.reap`, polled with the time since, terminates and then kills a backend
that lingers. A backend whose interpreter lacks a third-party module (torch, numpy, ...) is
``EmocaError('backend_missing')``, never ``internal``: the environment is missing or broken, not the code.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emoca_contract import protocol
from emoca_contract.errors import EmocaError
from emoca_contract.take import read_take

_IDS = itertools.count(1)
TERMINATE_AFTER_S = 3.0  # a stopped backend still running this long after stop() is terminated
KILL_AFTER_S = 5.0  # ... and killed after this long
PROJECT_PACKAGES = ("backend", "emoca_contract")  # a missing one of these is a bug, not a broken environment
_NO_MODULE = re.compile(r"No module named '([^']+)'")
_CLI_ERROR = re.compile(r"^error \[([a-z_]+)\]: (.*)$", re.M)
_CLI_HINT = re.compile(r"^hint: (.*)$", re.M)


def backend_root() -> Path:
    """The backend package folder: ``<addon>/backend`` in the extension zip, ``../backend`` in the dev repo."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "backend", here.parent / "backend"):
        if (candidate / "__init__.py").is_file() and (candidate / "__main__.py").is_file():
            return candidate
    raise EmocaError(
        "backend_missing",
        f"the backend folder was not found next to {here}",
        "Reinstall the extension (its zip bundles backend/).",
    )


def requirements_dir() -> Path:
    """The pinned requirements (``requirements/`` beside the backend folder)."""
    return backend_root().parent / "requirements"


def new_id(prefix: str = "req") -> str:
    return f"{prefix}-{os.getpid()}-{next(_IDS)}"


def missing_module(text: str) -> str | None:
    """The third-party module a backend failure says is missing (``No module named 'torch'``), else None."""
    for name in _NO_MODULE.findall(text):
        if name.split(".")[0] not in PROJECT_PACKAGES:
            return name
    return None


def environment_error(python: str, text: str) -> EmocaError | None:
    """``backend_missing`` when ``text`` (an error message, a backend log) says a third-party module is missing."""
    name = missing_module(text)
    if name is None:
        return None
    return EmocaError(
        "backend_missing",
        f"the backend's Python {python} has no module '{name}': the backend environment is missing or incomplete",
    )


def cli_error(stderr: str, what: str) -> EmocaError:
    """The EmocaError a failed ``python -m backend ...`` printed (``error [code]: message`` + ``hint: ...``);
    output in no such form is ``internal``, naming ``what`` failed and the output's end."""
    found, hint = _CLI_ERROR.search(stderr), _CLI_HINT.search(stderr)
    if found is None:
        return EmocaError("internal", f"{what} failed: {stderr.strip()[-400:] or 'no output'}")
    return EmocaError.from_dict({"code": found[1], "message": found[2], "hint": hint[1] if hint else None})


def backend_env() -> dict[str, str]:
    """The backend's environment: Blender's Python settings removed, the backend's parent on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(backend_root().parent)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BackendProcess:
    """One ``python -m backend serve`` subprocess.

    ``events`` gets every protocol event (dicts); a line that is not protocol becomes a ``log`` event with
    level ``warning``; when stdout closes an ``{"type": "exit", "returncode": ...}`` pseudo-event follows.
    """

    def __init__(self, python: str | os.PathLike, extra_args: list[str] | None = None):
        self.python = str(python)
        if not Path(self.python).exists():
            raise EmocaError("backend_missing", f"backend Python not found: {self.python}")
        self.proto = protocol
        self.events: queue.Queue = queue.Queue()
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=2000)
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # Ctrl-C in Blender's terminal does not hit the backend
        self.proc = subprocess.Popen(
            [self.python, "-m", "backend", "serve", *(extra_args or [])],
            cwd=str(backend_root().parent),
            env=backend_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr  # PIPE opens all three
        self._stdin, self._stdout, self._stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        self._lock = threading.Lock()
        self._terminated = False
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True, name="emoca-backend-stderr")
        self._stderr_reader.start()
        threading.Thread(target=self._read_stdout, daemon=True, name="emoca-backend-stdout").start()

    # ---- threads
    def _read_stdout(self) -> None:
        for line in self._stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.events.put(self.proto.decode(line))
            except self.proto.ProtocolError as exc:
                self.events.put({"type": "log", "level": "warning", "message": f"not protocol: {exc}"})
        returncode = self.proc.wait()
        self._stderr_reader.join(timeout=2.0)  # the log is complete before anyone reads why the backend exited
        self.events.put({"type": "exit", "returncode": returncode})

    def _read_stderr(self) -> None:
        for line in self._stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    # ---- API
    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, last: int | None = None) -> str:
        lines = list(self.stderr_lines)
        return "\n".join(lines[-last:] if last else lines)

    def failure(self, event: dict) -> EmocaError:
        """What an ``error`` event or the ``exit`` pseudo-event means: the backend's coded error, or (exit) an
        unexpected end; a missing third-party module in either is ``backend_missing``."""
        if event.get("type") == "exit":
            text = self.log()
            error = EmocaError("internal", f"the backend exited (status {event.get('returncode')}) before "
                               f"finishing\n{self.log(30)}")  # fmt: skip
        else:
            text = str(event.get("message", ""))
            error = EmocaError.from_dict(event, self.log(20))
        if error.code == "internal":
            return environment_error(self.python, text) or error
        return error

    def send(self, msg: dict) -> None:
        """Send one request (validated by the protocol module first)."""
        self.proto.validate(msg)
        with self._lock:
            try:
                self._stdin.write(self.proto.encode(msg))
                self._stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise EmocaError("internal", f"the backend is not running ({exc})\n{self.log(20)}") from exc

    def request(self, type_: str, **fields) -> str:
        """Send a request of ``type_`` with a fresh id; return the id."""
        req_id = fields.pop("id", None) or new_id(type_)
        self.send(self.proto.make(type_, id=req_id, **fields))
        return req_id

    def poll(self) -> list[dict]:
        """All events received since the last poll (never blocks)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def cancel(self, req_id: str) -> None:
        """Ask the backend to cancel ``req_id`` (it stops within a second and writes nothing final)."""
        if self.alive:
            try:
                self.send(self.proto.make("cancel", id=req_id))
            except EmocaError:
                pass

    def stop(self) -> None:
        """Ask the backend to exit: close its stdin (it cancels running jobs and exits on EOF). Never waits."""
        with self._lock:
            try:
                if not self._stdin.closed:
                    self._stdin.close()
            except OSError:
                pass

    def reap(self, elapsed: float) -> bool:
        """Whether the backend is gone, ``elapsed`` seconds after :meth:`stop`: one still running is terminated
        past TERMINATE_AFTER_S and killed past KILL_AFTER_S. Never waits (poll it from a timer)."""
        if self.proc.poll() is not None:
            return True
        if elapsed >= KILL_AFTER_S:
            self.proc.kill()
        elif elapsed >= TERMINATE_AFTER_S and not self._terminated:
            self.proc.terminate()
            self._terminated = True
        return False

    def close(self, timeout: float = 5.0) -> int | None:
        """Blocking (background mode, scripts): stop, wait ``timeout``, then terminate/kill if it lingers."""
        self.stop()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_request(
    python: str | os.PathLike,
    type_: str,
    *,
    on_event: Callable[[dict], None] | None = None,
    timeout: float | None = None,
    should_cancel: Callable[[], bool] | None = None,
    **fields: Any,
) -> dict:
    """Blocking: start the backend, send one request, wait for its ``result`` event and return it.

    For background mode (``bpy.app.background``: no modal operators there) and scripts. ``on_event`` sees every
    event; ``should_cancel`` is polled every 0.1 s and cancels the request when it returns True. An ``error``
    event (or the backend dying) raises EmocaError with the backend's code, message and hint.
    """
    start = time.monotonic()
    with BackendProcess(python) as proc:
        req_id = proc.request(type_, **fields)
        cancelled = False
        while True:
            try:
                event = proc.events.get(timeout=0.1)
            except queue.Empty:
                event = None
            if event is not None:
                if on_event is not None:
                    on_event(event)
                etype = event.get("type")
                if etype == "result" and event.get("id") == req_id:
                    return event
                if etype == "error" and event.get("id") in (req_id, None):
                    raise proc.failure(event)
                if etype == "exit":
                    if cancelled:
                        raise EmocaError("cancelled", f"{type_} was cancelled")
                    raise proc.failure(event)
            if not cancelled and (
                (should_cancel and should_cancel()) or (timeout is not None and time.monotonic() - start > timeout)
            ):
                proc.cancel(req_id)
                cancelled = True
                cancel_time = time.monotonic()
            if cancelled and time.monotonic() - cancel_time > 10:
                raise EmocaError("cancelled", f"{type_} was cancelled")


class BackendJob:
    """A request on a BackendProcess, advanced by ``step()`` (what a modal operator runs on each timer tick).

    States: ``new``, ``running``, ``done``, ``failed`` (``error`` is an EmocaError) or ``cancelled``. Warnings,
    errors for this job's requests and the backend's exit are handled here; subclasses send the request in
    ``start()`` and handle ``progress`` and ``result`` in ``_handle``. Progress fields every job keeps:
    ``progress`` (0..1), ``stage``, ``fps``, ``eta`` (seconds or None).
    """

    def __init__(self, proc: BackendProcess):
        self.proc = proc
        self.state = "new"
        self.req_id: str | None = None
        self.warnings: list[str] = []
        self.error: EmocaError | None = None
        self.progress, self.stage, self.fps = 0.0, "starting", 0.0
        self.eta: float | None = None

    def start(self) -> None:
        """Send the job's request; the state becomes ``running``."""
        raise NotImplementedError

    def _active_request(self) -> str | None:
        """The request a cancel goes to."""
        return self.req_id

    def _request_ids(self) -> tuple:
        """Ids whose ``error`` events end this job (None: errors not tied to a request)."""
        return (self.req_id, None)

    def cancel(self) -> None:
        """Ask the backend to stop; it answers with a ``cancelled`` error (a capture writes no take; a training
        keeps the checkpoints written so far)."""
        request = self._active_request()
        if self.state == "running" and request is not None:
            self.proc.cancel(request)
            self.state = "cancelled"

    def step(self) -> str:
        for ev in self.proc.poll():
            if self.state != "running":
                break
            if not self._handle_common(ev):
                self._handle(ev)
        return self.state

    def _handle_common(self, ev: dict) -> bool:
        etype = ev.get("type")
        if etype == "warning" or (etype == "log" and ev.get("level") in ("warning", "error")):
            self.warnings.append(str(ev.get("message")))
        elif etype == "error" and ev.get("id") in self._request_ids():
            self.error = self.proc.failure(ev)
            self.state = "cancelled" if self.error.code == "cancelled" else "failed"
        elif etype == "exit":
            self.error = self.proc.failure(ev)
            self.state = "failed"
        else:
            return False
        return True

    def _handle(self, ev: dict) -> None:
        raise NotImplementedError


class CaptureJob(BackendJob):
    """The capture as a state machine fed with events: what the modal operator runs on each timer tick.

    ``start()`` sends the capture request; ``step()`` drains the backend's events and returns the state:
    ``running``, ``done`` (``take_files`` and, when a rig was asked for, ``rig_file`` are set), ``failed``
    (``error`` is an EmocaError) or ``cancelled``. With ``rig_output`` set, a finished capture is followed by an
    ``export_rig`` request on the same backend. Progress fields: ``progress`` (0..1), ``stage``, ``fps``, ``eta``.
    """

    def __init__(
        self, proc: BackendProcess, capture_fields: dict, rig_output: str | None = None, flame: str | None = None
    ):
        super().__init__(proc)
        self.fields = capture_fields
        self.rig_output = rig_output
        self.flame = flame
        self.rig_req: str | None = None
        self.take_files: list[str] = []
        self.rig_file: str | None = None

    def start(self) -> None:
        self.req_id = self.proc.request("capture", **self.fields)
        self.state = "running"

    def _active_request(self) -> str | None:
        return self.rig_req or self.req_id

    def _request_ids(self) -> tuple:
        return (self.req_id, self.rig_req, None)

    def _handle(self, ev: dict) -> None:
        etype, eid = ev.get("type"), ev.get("id")
        if etype == "progress" and eid == self.req_id:
            total = max(int(ev.get("total") or 0), 1)
            self.progress = min(float(ev.get("done") or 0) / total, 1.0)
            self.stage = str(ev.get("stage", ""))
            self.fps = float(ev.get("fps") or 0.0)
            self.eta = ev.get("eta")
        elif etype == "result" and eid == self.req_id:
            self.take_files = [str(f) for f in ev.get("files", []) if str(f).endswith(".npz")]
            self.progress = 1.0
            if self.rig_output is None or not self.take_files:
                self.state = "done"
            else:
                fields = rig_request_for_take(self.take_files[0], self.flame)
                self.rig_req = self.proc.request("export_rig", output=self.rig_output, **fields)
                self.stage = "rig"
        elif etype == "result" and eid == self.rig_req:
            self.rig_file = str((ev.get("files") or [self.rig_output])[0])
            self.state = "done"


def rig_request_for_take(take_path: str | os.PathLike, flame: str | None = None) -> dict[str, str]:
    """The ``export_rig`` fields for the head a take was captured on: the open (ICT) head for an open take; for a
    FLAME take, FLAME (the given file, else the installed one) or the synthetic test head when the take says it
    was captured on it. The take is read (and validated) here, before any rig is built."""
    take = read_take(take_path)
    if take.kind == "open":
        return {"head": "ict"}
    if flame:
        return {"head": "flame", "flame": str(flame)}
    model_flame = str(take.meta.get("model", {}).get("flame", ""))
    return {"head": "flame"} if "FLAME" in model_flame and "not FLAME" not in model_flame else {"head": "synthetic"}


def run_folder_of(checkpoint: str | os.PathLike) -> Path:
    """The run (model) folder of a checkpoint: ``<run>/coarse/checkpoints/x.ckpt`` or ``<run>/checkpoints/x.ckpt``."""
    folder = Path(checkpoint).parent
    if folder.name == "checkpoints":
        folder = folder.parent
        if folder.name == "coarse":
            folder = folder.parent
    return folder


def train_result_paths(result: dict) -> tuple[str | None, str | None]:
    """(model_folder, checkpoint) of a ``train`` result event: the folder capture loads, and the best checkpoint."""
    ckpt = result.get("checkpoint") or next(
        (str(f) for f in result.get("files") or [] if str(f).endswith(".ckpt")), None
    )
    folder = result.get("model_folder") or (str(run_folder_of(ckpt)) if ckpt else None)
    return (str(folder) if folder else None), (str(ckpt) if ckpt else None)


class TrainJob(BackendJob):
    """A ``train`` request as a state machine fed with events (the Train panel's modal operator steps it).

    ``start()`` sends the request (``config``: a YAML path or a shipped config's name; ``overrides``: ``key=value``
    strings); ``step()`` drains the backend's events and returns the state: ``running``, ``done``
    (``model_folder``, ``checkpoint``, ``result`` set), ``failed`` (``error`` is an EmocaError) or ``cancelled``.
    Progress fields: ``epoch``, ``global_step`` (the training step), ``total`` (-1: unknown), ``loss`` (None
    until the first step), ``progress`` (0..1), ``stage``, ``fps`` (steps/s), ``eta`` (s or None), ``warnings``.
    """

    def __init__(self, proc: BackendProcess, config: str | os.PathLike, overrides: list[str] | None = None):
        super().__init__(proc)
        self.config = str(config)
        self.overrides = [str(o) for o in overrides or []]
        self.epoch, self.global_step, self.total = 0, 0, -1  # step() is the method: the step is global_step
        self.loss: float | None = None
        self.n_progress = 0  # progress events received
        self.model_folder: str | None = None
        self.checkpoint: str | None = None
        self.capture_loadable: bool | None = None
        self.result: dict = {}

    def start(self) -> None:
        self.req_id = self.proc.request("train", config=self.config, overrides=self.overrides)
        self.state = "running"

    def _handle(self, ev: dict) -> None:
        etype, eid = ev.get("type"), ev.get("id")
        if etype == "progress" and eid == self.req_id:
            self.n_progress += 1
            self.total = int(ev.get("total") or -1)
            self.global_step = int(ev.get("step", ev.get("done")) or 0)
            self.epoch = int(ev.get("epoch") or 0)
            loss = ev.get("loss")
            self.loss = float(loss) if isinstance(loss, (int, float)) else self.loss
            self.progress = min(float(ev.get("done") or 0) / self.total, 1.0) if self.total > 0 else 0.0
            self.stage = str(ev.get("stage", "train"))
            self.fps = float(ev.get("fps") or 0.0)
            self.eta = ev.get("eta")
        elif etype == "result" and eid == self.req_id:
            self.result = dict(ev)
            self.model_folder, self.checkpoint = train_result_paths(ev)
            self.capture_loadable = ev.get("capture_loadable")
            self.global_step = int(ev.get("global_step") or self.global_step)
            self.progress, self.stage = 1.0, "done"
            if self.model_folder is None:
                self.error = EmocaError(
                    "internal",
                    "training finished without reporting a model folder or checkpoint",
                    "See the backend log in the console.",
                )
                self.state = "failed"
            else:
                self.state = "done"
