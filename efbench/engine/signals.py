"""SIGINT and SIGTERM as a request to stop: the steps taken so far are written as an
``interrupted`` result, and the process exits with 128 + the signal's number (130, 143).

While runs step (:func:`deferred`), a signal only sets a flag that the engine reads
between calls of at most :data:`CHUNK_SECONDS` of stepping: raising inside a compiled
call would lose the call's state (numba reports a ``SystemError`` and the run's arrays
are mid-update). Elsewhere (building the problem, writing) SIGTERM raises like SIGINT
(:func:`terminate_like_interrupt`), since SLURM, ``timeout`` and container stops send it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHUNK_SECONDS = 0.2  # the longest stepping between two looks at the flag


class Interrupted(KeyboardInterrupt):
    """A stop requested by ``signum``: a KeyboardInterrupt, so code that handles Ctrl-C
    handles it too."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)  # args: what pickling (to a launcher's parent) rebuilds
        self.signum, self.detail = int(signum), detail

    def __str__(self) -> str:
        text = f"interrupted by {signal.Signals(self.signum).name}"
        return f"{text}: {self.detail}" if self.detail else text

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interrupted_by(exc: BaseException) -> Interrupted | None:
    """The Interrupted behind ``exc``: itself, Ctrl-C's KeyboardInterrupt, or the cause of
    the SystemError numba raises when a signal's exception surfaces in a compiled call."""
    while exc is not None:
        if isinstance(exc, Interrupted):
            return exc
        if isinstance(exc, KeyboardInterrupt):
            return Interrupted(signal.SIGINT)
        exc = exc.__cause__ or exc.__context__
    return None


_swallowed: list[int] = []  # signals whose exception was raised where Python drops it


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _unraisable(hook: Callable[[object], None]) -> Callable[[object], None]:
    def note(info: object) -> None:
        stop = interrupted_by(info.exc_value) if info.exc_value is not None else None
        if stop is None:
            hook(info)
        else:  # silently: it is not an error, and deferred() acts on it
            _swallowed.append(stop.signum)

    return note


def terminate_like_interrupt() -> None:
    """SIGTERM raises :class:`Interrupted` as Ctrl-C raises KeyboardInterrupt (main thread).

    A signal that arrives inside a callback from C (numba compiling through llvmlite's
    ctypes hooks, a finalizer) raises where Python can only print "Exception ignored" and
    go on; such a stop is remembered instead, and the next :func:`deferred` block sees it
    at once, so the run stops at its first step rather than never."""
    _swallowed.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)
        if not getattr(sys.unraisablehook, "efbench", False):
            sys.unraisablehook = _unraisable(sys.unraisablehook)
            sys.unraisablehook.efbench = True


@contextmanager
def deferred() -> Iterator[Callable[[], int | None]]:
    """Inside, SIGINT and SIGTERM set a flag instead of raising; yields a function giving
    the first such signal's number (None: none yet). The previous handlers come back on
    exit. Outside the main thread, where no signal is delivered, the flag never rises."""
    got, _swallowed[:] = _swallowed[:], []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def note(signum: int, frame: object) -> None:
        got.append(signum)

    old = {s: signal.signal(s, note) for s in SIGNALS}
    try:
        yield lambda: got[0] if got else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def children() -> list[int]:
    """This process's child processes but joblib's resource tracker, which ends by itself
    (Linux /proc; elsewhere none)."""
    pids: list[int] = []
    try:
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    keep = []
    for pid in pids:
        with suppress(OSError):
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                keep.append(pid)
    return keep


SWEEP_PID = "EFBENCH_SWEEP_PID"  # the sweeping process, set by the efbench sweeper
STOPPED_DIR = "EFBENCH_SWEEP_STOPPED"  # where a sweep's workers say their runs are written


def stop_children(signum: int, timeout: float = 60.0) -> None:
    """Pass ``signum`` on to the child processes (a launcher's workers, which then write
    their runs as interrupted) and wait up to ``timeout`` seconds until each has ended or
    said it is done (:func:`worker_done`)."""
    pids = children()
    for pid in pids:
        with suppress(OSError):
            os.kill(pid, signum)
    done = Path(os.environ.get(STOPPED_DIR, "/nonexistent"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            with suppress(OSError):
                os.waitpid(pid, os.WNOHANG)  # reap our own children, or they stay as zombies
        if all(not Path(f"/proc/{pid}").exists() or (done / str(pid)).exists() for pid in pids):
            return
        time.sleep(0.05)


def worker_done(exit_code: int) -> None:
    """In a launcher's worker whose runs are written after a stop: say so to the sweeping
    process, then wait to be ended (or for that process to be gone). Ending at once would
    let the launcher, seeing a worker die, kill the other workers before they have written
    their runs."""
    with suppress(OSError):
        (Path(os.environ[STOPPED_DIR]) / str(os.getpid())).touch()
    parent, deadline = os.environ.get(SWEEP_PID), time.monotonic() + 120.0
    try:
        while str(os.getppid()) == parent and time.monotonic() < deadline:  # ended by the launcher
            time.sleep(0.1)
    finally:
        os._exit(exit_code)


def stop_children_then_raise() -> None:
    """In a sweeping process: SIGINT and SIGTERM are passed on to the launcher's workers,
    which write their runs as interrupted, before the sweep is stopped with
    :class:`Interrupted` (stopping first would let the launcher kill them mid-write)."""

    def handler(signum: int, frame: object) -> None:
        stop_children(signum)
        raise Interrupted(signum)

    if threading.current_thread() is threading.main_thread():
        os.environ.setdefault(STOPPED_DIR, tempfile.mkdtemp(prefix="efbench-stop-"))
        for s in SIGNALS:
            signal.signal(s, handler)


SWEEP_SID = "EFBENCH_SWEEP_SID"  # the sweeping process's session: its local workers share it
_watching: list[int] = []
busy = threading.Event()  # set while this process computes a job (efbench.app.cli.main)


def sweep_worker() -> str | None:
    """In a launcher's local worker process (started in the sweeping process's session):
    ``"alive"`` while the sweeping process is its parent (joblib's workers), ``"orphan"`` once
    that process is gone; else None (the sweeping process itself, a plain run, a worker's own
    process started further down, such as submitit's local jobs, which the sweep's watchdog
    ends, or a cluster job, which runs in a session of its own and must outlive a launcher
    that ends)."""
    sweep = os.environ.get(SWEEP_PID)
    if not sweep or sweep == str(os.getpid()) or os.environ.get(SWEEP_SID) != str(os.getsid(0)):
        return None
    if sweep == str(os.getppid()):
        return "alive"
    return None if _alive(int(sweep)) else "orphan"


def stop_when_parent_dies(interval: float = 0.2, grace: float = 60.0) -> None:
    """In a launcher's worker process: when the process that started it dies (even by
    SIGKILL, which it cannot pass on), end this one within about ``interval`` seconds. A job
    that is computing (:data:`busy`) is sent SIGTERM first, so its runs are written as
    interrupted (the job then ends the process: :func:`worker_done`), with ``grace`` seconds
    to do so; an idle worker, which would otherwise wait for work that never comes, ends at
    once. Once per process."""
    if _watching:
        return
    parent = os.getppid()
    _watching.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        if busy.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + grace
            while busy.is_set() and time.monotonic() < deadline:
                time.sleep(interval)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="efbench-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def started_by(sweep_pid: int) -> list[int]:
    """The live processes that carry ``sweep_pid``'s worker variable (Linux /proc; elsewhere
    none), wherever they were reparented, but this one."""
    mark = f"{SWEEP_PID}={sweep_pid}\0".encode()
    pids = []
    for d in Path("/proc").iterdir():
        with suppress(OSError):
            if d.name.isdigit() and int(d.name) != os.getpid() and mark in (d / "environ").read_bytes():
                pids += [int(d.name)] if _alive(int(d.name)) else []
    return pids


def watchdog(sweep_pid: int, interval: float = 0.2, grace: float = 60.0) -> None:
    """A sweeping process's keeper, run as a process of its own (:func:`start_watchdog`):
    once the sweep is gone (even by SIGKILL), its workers get SIGTERM, which a computing job
    answers by writing its runs as interrupted, and a worker that never got a job (and so
    never ran efbench's own parent watch) by ending; those left after ``grace`` seconds are
    killed."""
    while _alive(sweep_pid):
        time.sleep(interval)
    pids = started_by(sweep_pid)
    for pid in pids:
        with suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(interval)
    for pid in filter(_alive, pids):
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_watchdog() -> None:
    """Start :func:`watchdog` for this (sweeping) process; Linux only, where /proc lists the
    workers."""
    if not Path(f"/proc/{os.getpid()}/environ").exists():
        return
    code = f"from efbench.engine.signals import watchdog; watchdog({os.getpid()})"
    subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != SWEEP_PID},
    )
