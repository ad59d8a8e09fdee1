"""A run directory's files, written so that nothing can pair or damage them.

A run's result is ``trace.parquet`` (the logged metrics) and ``summary.json`` (status,
final metrics, config and its hash) whose ``trace_sha256`` names the exact trace it belongs
to: a reader verifies the pair (:func:`verified`) and treats anything else as unreadable.
Both files are written in full to temporary files first, then renamed into place (the
summary last), so a failed write leaves the previous result as it was, and a process killed
between the two renames leaves a pair that does not verify: never a result that looks whole.

A finished result (completed or diverged) is replaced only by another finished result. A
launch that fails (invalid config, unwritable folder, ...) over a directory holding a
result writes its error to ``error.json`` beside it; one that is stopped writes its steps
as ``attempt.parquet`` and ``attempt.json`` beside it (a pair like the result's); either
way the result stays as it was. The next run that finishes there removes both.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from efbench.errors import EfbenchError
from efbench.files import atomic_write_bytes, write_temp

FINISHED = ("completed", "diverged", "stalled")  # the statuses of a run whose result is whole
UNREADABLE = "unreadable"  # a summary or trace that cannot be read or does not verify
TRACE, SUMMARY, ERROR, LOCK = "trace.parquet", "summary.json", "error.json", ".lock"
ATTEMPT_TRACE, ATTEMPT = "attempt.parquet", "attempt.json"  # a stopped relaunch beside a result
RESERVE = ".reserve"  # the disk space a computing run holds for its result


class WriteError(EfbenchError):
    """A run directory that cannot be written."""

    def __init__(self, path: Path, exc: OSError):
        super().__init__(f"cannot write {path}: {exc.strerror or exc}")


def _json(summary: dict[str, Any]) -> bytes:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.dumps(summary, indent=2, default=default, allow_nan=True).encode()


def reserve(out_dir: Path, nbytes: int) -> None:
    """Claim ``nbytes`` of disk in ``out_dir`` (made if missing) for the run's result, before it
    computes anything: a full disk or an unwritable folder raises WriteError now, not after the
    compute. The space is held by ``.reserve`` until the result is written (:func:`commit`,
    :func:`record_error` give it back first)."""
    path = out_dir / RESERVE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.write(fd, bytes(nbytes))  # a file system without fallocate: real blocks
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _release(out_dir)
        raise WriteError(out_dir, exc) from None


def _release(out_dir: Path) -> None:
    try:
        (out_dir / RESERVE).unlink(missing_ok=True)
    except OSError:
        pass


def lock(out_dir: Path) -> int | None:
    """Claim ``out_dir`` for this process (an advisory ``flock`` on its ``.lock``, released
    when the descriptor is closed or the process ends, even by SIGKILL): the descriptor, or
    None when another launch holds it. Two launches never compute one run directory."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise WriteError(out_dir, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def locked(out_dir: Path) -> bool:
    """Whether another launch is computing ``out_dir`` now."""
    try:
        fd = os.open(out_dir / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def identity(out_dir: Path) -> tuple[int, int, int] | None:
    """Which summary file ``out_dir`` holds (a result is replaced by renaming: a new summary
    is a new inode), or None: compared before and after a launch, whether it wrote one."""
    try:
        st = (out_dir / SUMMARY).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def holds_result(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished result whose trace verifies."""
    prev = read_summary(out_dir)
    return prev is not None and prev.get("status") in FINISHED and verified(out_dir, prev)


def commit(out_dir: Path, trace: bytes, summary: dict[str, Any]) -> Path:
    """Write a run's trace (parquet bytes) and summary as one result (see the module); a run
    that did not finish, over a finished result, is written beside it as the attempt. Returns
    the summary's path."""
    summary["trace_sha256"] = hashlib.sha256(trace).hexdigest()
    finished = summary.get("status") in FINISHED
    names = (TRACE, SUMMARY) if finished or not holds_result(out_dir) else (ATTEMPT_TRACE, ATTEMPT)
    temps: list[str] = []
    _release(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:  # checked before either is replaced: never half a pair
            if (out_dir / name).is_dir():
                raise IsADirectoryError(
                    errno.EISDIR, "a directory stands where the result goes", str(out_dir / name)
                )
        temps.append(write_temp(out_dir / names[0], trace))
        temps.append(write_temp(out_dir / names[1], _json(summary)))
        os.replace(temps[0], out_dir / names[0])
        os.replace(temps[1], out_dir / names[1])
    except OSError as exc:
        for t in temps:
            Path(t).unlink(missing_ok=True)
        raise WriteError(out_dir, exc) from None
    for name in (ERROR, ATTEMPT, ATTEMPT_TRACE) if names[1] == SUMMARY else (ERROR,):
        (out_dir / name).unlink(missing_ok=True)
    return out_dir / names[1]


def record_error(out_dir: Path, summary: dict[str, Any]) -> None:
    """Record a failed launch: as the directory's summary when it holds no result, else in
    ``error.json`` beside the result, which stays as it was."""
    prev = read_summary(out_dir)
    has_result = (prev is not None and prev.get("status") != "error") or (out_dir / TRACE).exists()
    name = ERROR if has_result else SUMMARY
    _release(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / name, _json(summary))
    except OSError as exc:
        raise WriteError(out_dir / name, exc) from None


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    """The directory's summary, or None when it is missing or unreadable."""
    try:
        summ = json.loads((out_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summ if isinstance(summ, dict) else None


def trace_rows(path: Path) -> int | None:
    """Rows of a readable trace file (read from its parquet footer), else None."""
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError, pa.ArrowException):
        return None


def verified(out_dir: Path, summary: dict[str, Any]) -> bool:
    """Whether the directory's trace is the one ``summary`` was written with (by its hash;
    summaries written before hashes existed: by its row count)."""
    path = out_dir / TRACE
    want = summary.get("trace_sha256")
    if want is None:
        rows = trace_rows(path)
        return rows is not None and summary.get("trace_rows") in (None, rows)
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == want and trace_rows(path) is not None


def status_of(out_dir: Path) -> str:
    """What the latest launch in ``out_dir`` left: ``running`` while one computes it, ``error``
    when it failed, ``interrupted`` when it was stopped (also beside a finished result of an
    earlier config, which it leaves as it was), else its result's status (``unreadable`` when
    the summary or its trace cannot be read or verified)."""
    if locked(out_dir):
        return "running"
    if (out_dir / ERROR).exists():
        return "error"
    if (out_dir / ATTEMPT).exists():
        return "interrupted"
    summ = read_summary(out_dir)
    if summ is None:
        return UNREADABLE
    status = summ.get("status", UNREADABLE)
    if status != "error" and not verified(out_dir, summ):
        return UNREADABLE
    return status
