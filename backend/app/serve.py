"""`python -m backend serve`: the stdio JSON-lines protocol loop (docs/formats.md#protocol).

Requests arrive on stdin, events leave on stdout, one JSON object per line. stdout carries ONLY protocol lines:
at start the real stdout file descriptor is duplicated into a private handle and fd 1 (and ``sys.stdout``) are
pointed at stderr, so stray prints from libraries (Python or C) cannot corrupt the stream.

A request is checked whole before any job starts: its fields' types by ``protocol.decode``, its arguments
(capture options, rig sizes) by :func:`request_args`; a malformed one is answered at once with an ``error`` event
of code ``protocol`` or ``config_invalid`` naming the field, never ``internal``.

Jobs (capture, export_rig, train, arkit_map, face_landmarks, likeness) run in worker threads (train: a child
process whose events are relayed) and are cancelled through a per-job event; a cancelled job reports error code
``cancelled`` and leaves no files (a finished ARKit map stays in its cache: it is right for the next request).
The loop ends when stdin closes (running jobs are cancelled first), when stdout is closed by the reader
(BrokenPipe: quietly), or when the parent process dies (a watcher thread sees ``os.getppid()`` change).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import IO, Any

from backend import __version__, assets
from backend.capture.options import CaptureOptions
from emoca_contract import protocol
from emoca_contract.errors import EmocaError

JOIN_TIMEOUT_S = 5.0
# The parent as early as we can see it: if it died before this line ran, nobody is there to notice anyway.
_START_PPID = os.getppid()


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-parent-watch", action="store_true", help="do not exit when the parent process dies")


def run(args: argparse.Namespace) -> int:
    out = _private_stdout()
    return serve(sys.stdin.buffer, out, watch_parent=not args.no_parent_watch)


def _private_stdout() -> IO[str]:
    """A private handle on the real stdout; fd 1 and sys.stdout then go to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


class _Job:
    def __init__(self, id_: str, kind: str):
        self.id, self.kind = id_, kind
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None


class Server:
    """The protocol loop state: the output channel and the running jobs."""

    def __init__(self, stdout: IO[str]):
        self.stdout = stdout
        self.lock = threading.Lock()
        self.jobs: dict[str, _Job] = {}
        self.helpers: list[threading.Thread] = []  # status threads: joined before exit, never cancelled
        self.closed = threading.Event()  # stdout gone: stop everything

    # -- output -----------------------------------------------------------------------------------------------
    def emit(self, msg: dict) -> None:
        if self.closed.is_set():
            return
        try:
            line = protocol.encode(msg)
            with self.lock:
                self.stdout.write(line)
                self.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):  # ValueError: write to a closed file
            self._pipe_closed()

    def _pipe_closed(self) -> None:
        """Nobody reads us any more: cancel the jobs and leave quietly (the stdin loop may be blocked)."""
        if self.closed.is_set():
            return
        self.closed.set()

        def leave() -> None:
            self.cancel_all()
            self.join_all(2.0)
            os._exit(0)

        threading.Thread(target=leave, name="pipe-closed", daemon=True).start()

    def error(self, exc: EmocaError, id_: str | None) -> None:
        self.emit(protocol.error(exc.code, exc.message, exc.hint, id_=id_))

    # -- requests ---------------------------------------------------------------------------------------------
    def handle_line(self, line: str | bytes) -> None:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        line = line.strip()
        if not line:
            return
        try:
            msg = protocol.decode(line)
        except protocol.ProtocolError as exc:
            self.error(EmocaError("protocol", str(exc)), _guess_id(line))
            return
        kind = msg["type"]
        if kind not in protocol.REQUEST_TYPES:
            self.error(EmocaError("protocol", f"{kind!r} is an event, not a request"), msg.get("id"))
            return
        id_ = str(msg["id"])
        if kind == "cancel":
            job = self.jobs.get(id_)
            if job is None:
                self.emit(protocol.make("warning", id=id_, code="protocol", message=f"no running job {id_!r}"))
            else:
                job.cancel.set()
                if job.process is not None:
                    _terminate(job.process)
            return
        if kind == "status":  # in a thread: importing torch must not hold up a cancel behind it
            t = threading.Thread(target=self._status, args=(id_,), name=f"status-{id_}", daemon=True)
            self.helpers.append(t)
            t.start()
            return
        if id_ in self.jobs:
            self.error(EmocaError("protocol", f"a job with id {id_!r} is already running"), id_)
            return
        try:  # a malformed request is answered at once and never starts a job
            args = request_args(kind, msg)
        except EmocaError as exc:
            self.error(exc, id_)
            return
        target: Callable[[_Job, dict, dict], None] = {
            "capture": self._capture,
            "export_rig": self._export_rig,
            "train": self._train,
            "arkit_map": self._arkit_map,
            "face_landmarks": self._face_landmarks,
            "likeness": self._likeness,
        }[kind]
        job = _Job(id_, kind)
        job.thread = threading.Thread(
            target=self._run_job, args=(target, job, msg, args), name=f"job-{id_}", daemon=True
        )
        self.jobs[id_] = job
        job.thread.start()

    def _status(self, id_: str) -> None:
        try:
            self.emit(protocol.make("result", id=id_, files=[], **status_info()))
        except Exception as exc:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self.error(EmocaError("internal", f"status failed: {type(exc).__name__}: {exc}"), id_)

    def _run_job(self, target: Callable[[_Job, dict, dict], None], job: _Job, msg: dict, args: dict) -> None:
        try:
            target(job, msg, args)
        except EmocaError as exc:
            self.error(exc, job.id)
        except Exception as exc:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            self.error(EmocaError("internal", f"{type(exc).__name__}: {exc}"), job.id)
        finally:
            self.jobs.pop(job.id, None)

    def _capture(self, job: _Job, msg: dict, args: dict) -> None:
        from backend.capture.pipeline import capture, summary

        if "clips" in args:
            self._capture_batch(job, args)
            return
        options = args["options"]

        def progress(done, total, stage, fps, eta):
            self.emit(protocol.progress(job.id, done, total, stage, fps, eta))

        def warn(message: str) -> None:
            self.emit(protocol.make("warning", id=job.id, message=message))

        paths = capture(msg["input"], msg["output"], options, progress=progress, cancel=job.cancel, warn=warn)
        self.emit(protocol.make("result", id=job.id, files=[str(p) for p in paths], **summary(paths)))

    def _capture_batch(self, job: _Job, args: dict) -> None:
        """A batch capture request (docs/capture.md): per-clip progress and ``log`` events, one ``result`` with
        every take and the report; a cancel stops every clip and worker (``error`` cancelled)."""
        from backend.app.capture import clip_line
        from backend.capture.dispatch import capture_batch

        clips = args["clips"]

        def progress(i, done, total, stage, fps, eta):
            extra = {"clip": clips[i].name, "clip_index": i, "clips": len(clips)}
            self.emit(protocol.progress(job.id, done, total, stage, fps, eta, **extra))

        def on_clip(i, result):
            line = clip_line(i, len(clips), result)
            self.emit(protocol.make("log", id=job.id, level="info", message=line, clip_result=result.to_dict()))

        def warn(message: str) -> None:
            self.emit(protocol.make("warning", id=job.id, message=message))

        report = capture_batch(clips, args["batch"], args["ray"], progress, on_clip, job.cancel, warn)
        if report.cancelled:
            kept = report.count("done") + report.count("skipped")
            raise EmocaError("cancelled", f"batch cancelled: {kept} of {len(clips)} clips have complete takes (kept)")
        self.emit(protocol.make("result", id=job.id, files=report.files(), **report.to_dict()))

    def _export_rig(self, job: _Job, msg: dict, args: dict) -> None:
        from backend.rigs.export import export_rig

        def note(message: str) -> None:
            self.emit(protocol.make("log", id=job.id, level="info", message=message))

        res = export_rig(msg["output"], msg.get("flame"), note=note, **args)
        if job.cancel.is_set():  # too late to stop the write itself: remove what it wrote
            for f in res.get("files", []):
                Path(f).unlink(missing_ok=True)
            raise EmocaError("cancelled", "export cancelled")
        res = dict(res)
        files = [str(f) for f in res.pop("files", [msg["output"]])]
        self.emit(protocol.make("result", id=job.id, files=files, **_plain(res)))

    def _arkit_map(self, job: _Job, msg: dict, args: dict) -> None:
        from backend.app.arkit_map import map_document
        from backend.retarget.map import map_for_head

        def note(message: str) -> None:
            self.emit(protocol.make("log", id=job.id, level="info", message=message))

        path, m, built = map_for_head(note=note, **args)
        if job.cancel.is_set():  # the map is built and cached (still right for next time); this request is over
            raise EmocaError("cancelled", "the ARKit map request was cancelled")
        self.emit(protocol.make("result", id=job.id, files=[str(path)], **_plain(map_document(path, m, built))))

    def _face_landmarks(self, job: _Job, msg: dict, args: dict) -> None:
        from backend.retarget.detect import face_landmarks

        found = face_landmarks(msg["image"])
        if job.cancel.is_set():
            raise EmocaError("cancelled", "face_landmarks was cancelled")
        self.emit(protocol.make("result", id=job.id, files=[], **found))

    def _likeness(self, job: _Job, msg: dict, args: dict) -> None:
        from backend.likeness.run import likeness

        def progress(done: int, total: int, stage: str) -> None:
            self.emit(protocol.progress(job.id, done, total, stage))

        def warn(message: str) -> None:
            self.emit(protocol.make("warning", id=job.id, message=message))

        res = likeness(msg["take"], msg.get("video"), msg.get("output"), args["options"], progress, job.cancel, warn)
        files = [str(f) for f in res.pop("files")]
        self.emit(protocol.make("result", id=job.id, files=files, **_plain(res)))

    def _train(self, job: _Job, msg: dict, args: dict) -> None:
        overrides = [str(o) for o in (msg.get("overrides") or [])]
        cmd = [sys.executable, "-m", "backend", "train", str(msg["config"]), *overrides, "--progress", "json"]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        job.process = proc
        final = False
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = protocol.decode(line)
            except protocol.ProtocolError:
                print(line.rstrip("\n"), file=sys.stderr)  # not protocol: it is a log line
                continue
            ev["id"] = job.id  # the child speaks for this request
            final = final or ev["type"] in ("result", "error")
            if job.cancel.is_set() and ev["type"] in ("result", "error"):
                continue
            self.emit(ev)
        code = proc.wait()
        if job.cancel.is_set():
            raise EmocaError("cancelled", "training cancelled")
        if not final:
            raise EmocaError("internal", f"training exited with status {code} without a result")

    # -- shutdown ---------------------------------------------------------------------------------------------
    def cancel_all(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel.set()
            if job.process is not None:
                _terminate(job.process)

    def join_all(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        threads = [job.thread for job in list(self.jobs.values())] + list(self.helpers)
        for t in threads:
            if t is not None and t is not threading.current_thread():
                t.join(timeout)


def request_args(kind: str, msg: dict) -> dict:
    """The checked arguments of a job request whose fields have their wire types (``protocol.validate``):
    capture ``{"options": CaptureOptions}``, export_rig the optional keyword arguments of ``export_rig``.
    Raises EmocaError('config_invalid') for an option or value out of range."""
    if kind == "capture":
        return capture_args(msg)
    if kind == "export_rig":
        keys = ("head", "landmarks", "n_shape", "n_exp", "shape_from", "identity_from")
        extra = {k: msg[k] for k in keys if msg.get(k) is not None}
        negative = [k for k in ("n_shape", "n_exp") if extra.get(k, 0) < 0]
        if negative:
            raise EmocaError("config_invalid", f"export_rig {negative[0]} is {extra[negative[0]]}: must be >= 0")
        return extra
    if kind == "arkit_map":
        return arkit_map_args(msg)
    if kind == "likeness":
        from backend.app.likeness import likeness_options

        fields = {**msg, "no_delight": msg.get("delight") is False}
        return {"options": likeness_options(fields)}
    return {}


def capture_args(msg: dict) -> dict:
    """A capture request's checked arguments: ``{"options"}`` for one clip; for a batch (``inputs``, an ``input``
    naming several clips, or ``jobs``/``overwrite``/``ray``) also ``clips`` (every ClipJob, expanded and checked
    now), ``batch`` (BatchOptions) and ``ray`` (RayOptions or None)."""
    from backend.capture.batch import BatchOptions
    from backend.capture.manifest import clip_jobs, is_batch_input

    options = CaptureOptions.from_dict(msg.get("options"))
    inputs = [msg["input"], *(msg.get("inputs") or [])]
    flags = [msg.get(k) for k in ("jobs", "overwrite", "ray", "ray_return")]
    if len(inputs) == 1 and not any(f is not None for f in flags) and not is_batch_input(inputs[0]):
        return {"options": options}
    jobs = msg.get("jobs")
    if jobs is not None and jobs < 1:
        raise EmocaError("config_invalid", f"capture jobs is {jobs}: must be >= 1")
    if msg.get("ray_return") and msg.get("ray") is None:
        raise EmocaError("config_invalid", "capture ray_return needs ray (the Ray cluster to return the takes from)")
    ray = None
    if msg.get("ray") is not None:
        from backend.capture.ray_backend import RayOptions

        ray = RayOptions(address=msg["ray"], return_takes=bool(msg.get("ray_return")))
    batch = BatchOptions(jobs, bool(msg.get("overwrite")))
    return {"options": options, "clips": clip_jobs(inputs, msg["output"], options), "batch": batch, "ray": ray}


def arkit_map_args(msg: dict) -> dict:
    """An ``arkit_map`` request's keyword arguments for ``backend.retarget.map.map_for_head``, checked."""
    from backend.app.arkit_map import options_from
    from backend.retarget.map import HEADS, MapOptions

    head = msg.get("head") or "flame"
    if head not in HEADS:
        raise EmocaError("config_invalid", f"arkit_map head {head!r}: expected one of {', '.join(HEADS)}")
    n_exp = msg.get("n_exp")
    opt = options_from(MapOptions.n_exp if n_exp is None else n_exp, MapOptions.samples)
    return {"head": head, "flame": msg.get("flame"), "landmarks": msg.get("landmarks"), "opt": opt,
            "force": bool(msg.get("force"))}  # fmt: skip


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()

        def reap() -> None:
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()

        threading.Thread(target=reap, daemon=True).start()


def _guess_id(line: str) -> str | None:
    import json

    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, an int over the digit limit, nesting too deep
        return None
    id_ = obj.get("id") if isinstance(obj, dict) else None
    return str(id_)[:200] if isinstance(id_, (str, int)) else None  # an id of another type is not an id


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return _plain(obj.to_dict())
    return str(obj)


def status_info() -> dict:
    """Versions, device, and what is installed: ``assets`` is the ``assets status --json`` document
    (docs/assets.md), without validation (a status request must answer at once)."""
    info: dict[str, Any] = {
        "backend_version": __version__,
        "protocol_version": protocol.PROTOCOL_VERSION,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = bool(torch.cuda.is_available())
        info["device"] = torch.cuda.get_device_name(0) if info["cuda"] else "cpu"
    except Exception as exc:  # torch missing or broken (it is the backend environment's to provide): say so
        info["torch"] = None
        info["device"] = f"unavailable ({exc})"
    info["assets"] = assets.status_document(assets.status(validate=False))
    return info


def _watch_parent(server: Server, ppid: int, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        if os.getppid() != ppid:
            server.cancel_all()
            server.join_all(2.0)
            os._exit(0)


def serve(stdin: IO | None = None, stdout: IO[str] | None = None, watch_parent: bool = True) -> int:
    """Run the protocol loop until stdin closes (lines as str or bytes); returns the exit status (0)."""
    stdin = stdin or sys.stdin
    server = Server(stdout or sys.stdout)
    stop = threading.Event()
    if watch_parent:
        threading.Thread(
            target=_watch_parent, args=(server, _START_PPID, stop), daemon=True, name="parent-watch"
        ).start()
    try:
        for line in stdin:
            if server.closed.is_set():
                break
            server.handle_line(line)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.cancel_all()
        server.join_all()
    if server.closed.is_set():
        # stdout is gone: leave without Python's flush-at-exit complaining about the broken pipe
        try:
            sys.stdout.flush()
        finally:
            os._exit(0)
    return 0
