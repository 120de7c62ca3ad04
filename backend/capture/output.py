"""Where a capture writes, made safe before any work: the output location checked (:func:`check_output`), the
folders a run makes (removed again when it fails, and only those), an exclusive lock on the output
(:func:`acquire_lock`), the run's own hidden work folder beside the take (its chunks, and its finished takes until
they are moved into place by :func:`commit_takes`; a crashed run's work folder is removed by the next run of the
same output). :func:`open_output` does all of it; :class:`OutputSite` undoes it.

The lock is a file ``.NAME.npz.lock`` beside the take, created atomically and exclusively (a hard link of a file
already holding its owner, else ``O_CREAT | O_EXCL``: exactly one process wins, on Linux, macOS and Windows, local
or network folders), holding its owner as JSON: pid, host, start time, footage. A second capture of the same
output gets EmocaError ``output_busy`` naming the owner. A lock whose owner
ran on this host and is gone (a capture that crashed) is stale and taken over, under a second short-lived guard
file so that two processes never both take it over; a lock from another host is never taken over (its process
cannot be checked from here): the hint names the file to delete.

Conventions: ``target`` is the take path the capture writes (``OUT.npz``; with ``--face all`` the base of
``OUT_track<id>.npz``, which one lock covers). Nothing here deletes a file it did not create.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from backend.capture.options import output_paths
from backend.take.writer import output_error
from emoca_contract.errors import EmocaError

# A lock file whose owner cannot be read (a crash between creating and writing it) counts as stale after this
# many seconds; so does a takeover guard (taking a lock over takes milliseconds).
LOCK_GRACE_S = 10.0
# Tries at creating the lock while stale ones are being taken over (each try waits LOCK_RETRY_S).
LOCK_TRIES = 50
LOCK_RETRY_S = 0.02


# ---------------------------------------------------------------------------------------------------------------
# the location


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file (links and ``..`` included); a path that does not exist is compared by
    its resolved name."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_target(target: Path, input_path: str | os.PathLike) -> None:
    """A take may be written at ``target``: EmocaError config_invalid when it is the input footage,
    output_unwritable when a folder stands there."""
    if same_file(target, input_path):
        raise EmocaError(
            "config_invalid",
            f"{target}: the take would replace the input footage {input_path}",
            "Give the take its own name (-o NAME.npz) or a folder: the footage is never overwritten.",
        )
    if target.exists() and not target.is_file():
        raise EmocaError(
            "output_unwritable",
            f"{target}: a folder is there, not a take file",
            "Choose another take name (-o NAME.npz), or give that folder as the output to write into it.",
        )


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def check_output(
    output: str | os.PathLike, input_path: str | os.PathLike, preview: str | None = None, plot: str | None = None
) -> Path:
    """The take path (``target``) a capture of ``input_path`` into ``output`` writes, once checked, writing
    nothing, that it can go there: EmocaError config_invalid when the take, the preview or the plot would replace
    the input footage (or the plot or preview the take), or ``output`` is an existing file that is not a take;
    output_unwritable when a file stands where a folder must be, or a folder where the take must be."""
    out = Path(output)
    if out.is_file() and out.suffix.lower() != ".npz":
        what = "the input footage" if same_file(out, input_path) else "an existing file"
        raise EmocaError(
            "config_invalid",
            f"-o {out} is {what}, not a take file (NAME.npz) or a folder",
            "Give the take its own name (-o NAME.npz) or a folder: the footage is never overwritten.",
        )
    target = output_paths(out, Path(input_path), [0], "largest")[0]
    check_target(target, input_path)
    for option, extra in (("--preview", preview), ("--plot", plot)):
        if extra is not None and (same_file(extra, input_path) or same_file(extra, target)):
            what = "the input footage" if same_file(extra, input_path) else f"the take {target}"
            raise EmocaError(
                "config_invalid",
                f"{option} {extra} is {what}: writing it would replace that",
                f"Give {option} a file of its own.",
            )
    folder = _nearest_existing(target.parent)
    if not folder.is_dir():
        raise EmocaError(
            "output_unwritable",
            f"{target}: {folder} is a file, not a folder",
            "Choose an output in a folder (-o FOLDER/NAME.npz).",
        )
    return target


def make_folders(folder: Path, target: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those this call created, outermost first (a folder made
    meanwhile by another process is not ours). EmocaError output_unwritable when they cannot be made."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    made: list[Path] = []
    for f in reversed(missing):
        try:
            f.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            remove_folders(made)
            raise output_error(exc, target) from None
        made.append(f)
    return made


def remove_folders(made: list[Path]) -> None:
    """Remove the folders of ``made`` (outermost first) that are empty, innermost first: never one holding a file."""
    for f in reversed(made):
        try:
            f.rmdir()
        except OSError:  # not empty (another run writes there too) or gone: leave it
            pass


# ---------------------------------------------------------------------------------------------------------------
# the lock


def lock_path(target: Path) -> Path:
    """The lock file of the take ``target``: ``.NAME.npz.lock`` beside it."""
    return target.with_name(f".{target.name}.lock")


@dataclass(frozen=True)
class LockOwner:
    """Who holds an output's lock (the lock file's JSON)."""

    pid: int
    host: str
    started: str  # ISO 8601 local time
    input: str  # the footage being captured

    @classmethod
    def now(cls, input_label: str) -> LockOwner:
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started, input_label)

    def text(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_text(cls, text: str) -> LockOwner | None:
        """The owner a lock file names, None when it cannot be read (empty, cut short, not ours)."""
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["started"]), str(d["input"]))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}, capturing {self.input}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 on POSIX; OpenProcess on Windows, where
    ``os.kill(pid, 0)`` would end the process)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists, it is not ours
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def is_stale(owner: LockOwner | None, lock: Path) -> bool:
    """A lock nobody holds any more: its owner ran on this host and is gone, or it names no owner and is older
    than LOCK_GRACE_S. Another host's lock is never stale (its process cannot be checked from here)."""
    if owner is None:
        return _age_s(lock) > LOCK_GRACE_S
    return owner.host == socket.gethostname() and not pid_alive(owner.pid)


def _take_over(lock: Path, seen: str) -> None:
    """Remove the stale ``lock`` if it still holds ``seen``, under a guard file: of two processes that found it
    stale, the second finds the first one's new lock there (not ``seen``) and leaves it."""
    guard = lock.with_name(lock.name + ".takeover")
    try:
        fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        if _age_s(guard) > LOCK_GRACE_S:  # a takeover that crashed half-way
            guard.unlink(missing_ok=True)
        return
    try:
        if lock.read_text(encoding="utf-8") == seen:
            lock.unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def _busy(target: Path, lock: Path, owner: LockOwner | None) -> EmocaError:
    who = owner.describe() if owner is not None else "its owner cannot be read"
    return EmocaError(
        "output_busy",
        f"{target}: another capture is writing this output ({who})",
        f"Wait for it to finish or choose another output (-o). If no capture is running, delete {lock}.",
    )


@dataclass
class OutputLock:
    """A held lock: ``release()`` removes the lock file (if it is still this owner's)."""

    path: Path
    owner: LockOwner

    def release(self) -> None:
        try:
            if self.path.read_text(encoding="utf-8") == self.owner.text():
                self.path.unlink()
        except FileNotFoundError:
            pass


def _create_lock(lock: Path, owner: LockOwner) -> bool:
    """Create ``lock`` holding ``owner``; False when it exists already. The owner is written to a file of this
    process's own first and hard-linked into place (atomic, and exclusive like O_EXCL), so no other process ever
    reads a lock before its owner is in it; where the file system has no hard links, O_EXCL and a write."""
    draft = lock.with_name(f"{lock.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    draft.write_text(owner.text(), encoding="utf-8")
    try:
        os.link(draft, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (FAT, some network shares)
        return _create_lock_exclusive(lock, owner)
    finally:
        draft.unlink(missing_ok=True)


def _create_lock_exclusive(lock: Path, owner: LockOwner) -> bool:
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(owner.text())
    return True


def acquire_lock(target: Path, input_label: str) -> OutputLock:
    """The exclusive lock on the take ``target``: EmocaError output_busy when another live capture holds it (a
    stale lock is taken over), output_unwritable when the lock file cannot be created (the folder cannot be
    written: the first write of a capture, so an unwritable output fails here, before any work)."""
    target = Path(target)
    lock = lock_path(target)
    owner = LockOwner.now(input_label)
    for _ in range(LOCK_TRIES):
        try:
            if _create_lock(lock, owner):
                return OutputLock(lock, owner)
        except OSError as exc:  # the folder does not take new files
            raise output_error(exc, target) from None
        try:
            seen = lock.read_text(encoding="utf-8")
        except FileNotFoundError:  # released meanwhile: try again
            continue
        except OSError as exc:
            raise output_error(exc, target) from None
        holder = LockOwner.from_text(seen)
        if holder is None and _age_s(lock) < LOCK_RETRY_S * LOCK_TRIES:  # its owner may be writing it (no links)
            time.sleep(LOCK_RETRY_S)
            continue
        if not is_stale(holder, lock):
            raise _busy(target, lock, holder)
        _take_over(lock, seen)
        time.sleep(LOCK_RETRY_S)
    raise _busy(target, lock, LockOwner.from_text(lock.read_text(encoding="utf-8")) if lock.exists() else None)


# ---------------------------------------------------------------------------------------------------------------
# one run's place


@dataclass
class OutputSite:
    """One capture's hold on its output: the checked ``target``, the folders it made, its lock and its own work
    folder (hidden, beside the target, unique to the run)."""

    target: Path
    lock: OutputLock
    work: Path
    made: list[Path] = field(default_factory=list)

    def close(self, failed: bool) -> None:
        """Remove the work folder (what is left of its chunks and unfinished takes) and the lock; after a failure
        also the folders the run made, when they are empty. Takes already moved into place are never touched."""
        shutil.rmtree(self.work, ignore_errors=True)
        self.lock.release()
        if failed:
            remove_folders(self.made)


def open_output(
    output: str | os.PathLike, input_path: str | os.PathLike, preview: str | None = None, plot: str | None = None
) -> OutputSite:
    """Check the output (:func:`check_output`), make its folders, lock it and make the run's work folder: the
    first thing a capture does, so that an output problem is found before any footage is read or network
    loaded. EmocaError config_invalid / output_unwritable / output_busy."""
    target = check_output(output, input_path, preview, plot)
    made = make_folders(target.parent, target)
    try:
        lock = acquire_lock(target, str(input_path))
    except BaseException:
        remove_folders(made)
        raise
    try:
        remove_leftovers(target)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".capture", dir=target.parent))
    except OSError as exc:
        lock.release()
        remove_folders(made)
        raise output_error(exc, target) from None
    return OutputSite(target, lock, work, made)


def remove_leftovers(target: Path) -> None:
    """Remove the work folders that captures of ``target`` which crashed (killed, power cut) left beside it. Only
    a run holding the lock makes one, so with the lock held none of them belongs to a running capture."""
    for folder in target.parent.glob(f".{glob.escape(target.name)}.*.capture"):
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def commit_takes(staged: list[Path], targets: list[Path], input_path: str | os.PathLike, done: list[Path]) -> None:
    """Move the finished takes ``staged`` (in the work folder) onto ``targets``, each atomically (``os.replace``:
    a take already there is replaced whole, never half), appending each to ``done`` as soon as it is in place.
    Every target is checked first (:func:`check_target`), so a refused one moves none."""
    for dst in targets:
        check_target(dst, input_path)
    for src, dst in zip(staged, targets):
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise output_error(exc, dst) from None
        done.append(dst)
