"""The threads a process computes with. When several jobs run at once on one machine (a
joblib sweep, ``efbench-paper --jobs N``), each process would otherwise size numba's pool
and the BLAS / OpenMP pools to every core and spin-wait on them, so N processes run N
times as many busy threads as there are cores. :func:`share_cores` caps each process's BLAS
pools to its share of the cores and makes idle OpenMP threads sleep instead of spin.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("efbench")
# idle OpenMP threads (numba's omp layer, OpenBLAS built with OpenMP) sleep at once: read
# by the OpenMP runtime when it starts, so set before the first parallel call
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
ALL_ENV = "EFBENCH_THREADS"


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def share_cores(jobs: int) -> int:
    """When ``jobs`` > 1 processes compute at once: cap this process's BLAS pools to cores //
    jobs (at least 1) and make idle OpenMP threads sleep, so no BLAS thread spins on a core
    another job computes on. numba's pool keeps every core, so a job's compiled batch can
    use a core the other leaves idle: on 2 cores (benchmarks/threads.py) capping it too made
    no difference beyond the machine's noise. $EFBENCH_THREADS=numba caps numba's pool as
    well, ``all`` changes nothing (the cases the benchmark compares). Returns the BLAS
    threads of this process."""
    mode = os.environ.get(ALL_ENV, "")
    if jobs <= 1 or mode == "all":
        return cores()
    from threadpoolctl import threadpool_limits

    share = max(1, cores() // jobs)
    for key, value in PASSIVE.items():
        os.environ.setdefault(key, value)
    threadpool_limits(limits=share)  # the pools loaded by now: numpy's BLAS
    if mode == "numba":
        import numba

        numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    log.info("threads: BLAS %d per process (%d jobs at once on %d cores)", share, jobs, cores())
    return share
