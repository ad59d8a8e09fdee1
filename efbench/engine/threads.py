"""The threads a process computes with. When several jobs run at once on one machine (a
joblib sweep, ``efbench-paper --jobs N``), each process would otherwise size numba's pool
and the BLAS / OpenMP pools to every core and spin-wait on them, so N processes run N
times as many busy threads as there are cores. :func:`share_cores` caps each process to
its share of the cores and makes idle OpenMP threads sleep instead of spin.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("efbench")
# idle OpenMP threads (numba's omp layer, OpenBLAS built with OpenMP) sleep at once: read
# by the OpenMP runtime when it starts, so set before the first parallel call
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
_SHARED: list[int] = []  # the share this process was given (logged once)


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def share_cores(jobs: int) -> int:
    """Cap this process's numba, BLAS and OpenMP threads to cores // jobs (at least 1) when
    ``jobs`` > 1 processes compute at once, with passive waiting; nothing changes for one
    job. Returns the threads this process computes with."""
    if jobs <= 1:
        return cores()
    import numba
    from threadpoolctl import threadpool_limits

    share = max(1, cores() // jobs)
    for key, value in PASSIVE.items():
        os.environ.setdefault(key, value)
    numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=share)  # the pools loaded by now (numpy's BLAS); numba's: above
    if _SHARED != [share]:
        _SHARED[:] = [share]
        log.info("threads: %d per process (%d jobs at once on %d cores)", share, jobs, cores())
    return share
