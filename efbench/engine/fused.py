"""The compiled multi-step kernel of the error-compensated SGD family (engine ``numba``).

``ec_advance`` moves every run of a batch from one log point to the next in one call:
sampling, the SGD or L-SVRG gradient, error feedback, compression, bit counting, the
L-SVRG refreshes and the budget checks, assembled from :mod:`efbench.core.blocks` (the same
functions the numpy engine calls). The formulas are those of
:class:`efbench.methods.base.ErrorCompensated` with tau = 1:

    g_i = w_i [grad f_{i r_i}(x) - grad f_{i r_i}(w_i)] + grad f_i(w_i)   (L-SVRG)
    g_i = w_i grad f_{i r_i}(x)                                            (SGD)
    u_i = e_i + gamma g_i,  v_i = C(u_i),  e_i = u_i - v_i,  x -= mean_i v_i

with C = identity, hard threshold (|u_j| >= gamma lambda in the scaled form, lambda in the
plain one) or TopK. Random numbers come from each run's numpy Generator, drawn before
the call in the order the numpy engine draws them (per step: n sample draws, then the
L-SVRG coin or coins), so both engines consume the same stream and send the same messages.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from efbench.core import blocks, network
from efbench.core.blocks import (
    IDENTITY,
    compress_row,
    csr_worker_grad,
    dense_worker_grad,
    margin_coef,
    mean_sq_norm,
    message_bits,
    sample_dot,
    sample_row,
)
from efbench.core.compressors import index_width
from efbench.core.network import COUNTS, add_round
from efbench.engine.counts import Counters, Points
from efbench.methods.base import FusedSpec, State
from efbench.problems.base import Problem

log = logging.getLogger("efbench")

NO_COIN, SHARED_COIN, WORKER_COINS = 0, 1, 2
# a log point's counts (Snaps.C): bits sum, bits max, nnz sum, calls, COUNTS, err2
SNAPSHOT_COLUMNS = 4 + len(COUNTS) + 1


class Data(NamedTuple):
    """The problem as the kernel reads it: rows (n m, d) dense in ``flat`` or as CSR arrays
    (``indptr``, ``indices``, ``values``; empty when dense), labels (n m,), rows per worker,
    and the sampler's table (``cdf`` empty: uniform; ``weights``: 1/(m p_ij))."""

    flat: np.ndarray
    yflat: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    m: int
    cdf: np.ndarray
    weights: np.ndarray


class Arrays(NamedTuple):
    """The runs' state, updated in place: models X (R, d), error memories E (R, n, d), and
    the L-SVRG points W and their gradients GW (R, n, d; empty without L-SVRG)."""

    X: np.ndarray
    E: np.ndarray
    W: np.ndarray
    GW: np.ndarray


class PerRun(NamedTuple):
    """Each run's own settings (R,): threshold lambda, K and L-SVRG refresh probability."""

    lam: np.ndarray
    k: np.ndarray
    p: np.ndarray


class Settings(NamedTuple):
    """What the runs of one call share: the compressor code (:mod:`efbench.core.blocks`),
    the EC form, l2, the bits a float and an index cost, L-SVRG and its coin mode."""

    comp: int
    scaled: bool
    l2: float
    float_bits: int
    index_width: int
    index_bits: bool
    lsvrg: bool
    coin: int


class Budget(NamedTuple):
    """A run stops before a step once its mean uplink bits per worker reach ``bits``, its
    epochs reach ``epochs``, or it has been silent for ``stall_floor`` or more steps
    (:meth:`efbench.engine.counts.Counters.stalled`)."""

    bits: float
    epochs: float
    stall_floor: int


class Counts(NamedTuple):
    """The runs' counters, cumulative and updated in place (those of
    :class:`efbench.engine.counts.Counters`): ``live`` (R,) which runs step, uplink ``bits``
    and ``nnz`` (R, n), oracle ``calls`` per worker, ``steps`` taken in this call, the
    rounds' network quantities ``net`` (R, len(COUNTS)), ``silent`` rounds in a row, and
    the steps ``done`` before this call."""

    live: np.ndarray
    bits: np.ndarray
    nnz: np.ndarray
    calls: np.ndarray
    steps: np.ndarray
    net: np.ndarray
    silent: np.ndarray
    done: np.ndarray


class Snaps(NamedTuple):
    """The log points kept without leaving the compiled loop: after its ``marks[j]``-th step
    of the call, run r keeps its model in X[r, j] and its counts in C[r, j]
    (SNAPSHOT_COLUMNS)."""

    marks: np.ndarray
    X: np.ndarray
    C: np.ndarray


@njit(cache=True)
def _add_step(e, x, gamma, c, c2, wl2, sn, sg, lsvrg, data, row, saved):  # pragma: no cover
    """e += gamma g for the sampled row's gradient g (SGD, or L-SVRG's
    g = [grad f_row(x) - grad f_row(w)] + grad f_i(w)); c, c2 the row's loss coefficients at x
    and w times its weight, wl2 the weighted l2."""
    d = e.size
    if data.indptr.size > 0:
        # the dense formula with a_j = 0 off the row's entries, then the entries from the
        # saved e_j: the same arithmetic, without reading a dense row
        q0, q1 = data.indptr[row], data.indptr[row + 1]
        for q in range(q0, q1):
            saved[q - q0] = e[data.indices[q]]
        zc, zc2 = c * 0.0, c2 * 0.0 if lsvrg else 0.0
        if lsvrg:
            for j in range(d):
                e[j] += gamma * (zc + wl2 * x[j] - (zc2 + wl2 * sn[j]) + sg[j])
            for q in range(q0, q1):
                j, aj = data.indices[q], data.values[q]
                e[j] = saved[q - q0] + gamma * (c * aj + wl2 * x[j] - (c2 * aj + wl2 * sn[j]) + sg[j])
        else:
            for j in range(d):
                e[j] += gamma * (zc + wl2 * x[j])
            for q in range(q0, q1):
                j, aj = data.indices[q], data.values[q]
                e[j] = saved[q - q0] + gamma * (c * aj + wl2 * x[j])
    else:
        a = data.flat[row]
        if lsvrg:
            for j in range(d):
                e[j] += gamma * (c * a[j] + wl2 * x[j] - (c2 * a[j] + wl2 * sn[j]) + sg[j])
        else:
            for j in range(d):
                e[j] += gamma * (c * a[j] + wl2 * x[j])


@njit(cache=True)
def _refresh(r, t, x, data, arrays, per_run, settings, draws, grad):  # pragma: no cover
    """L-SVRG's refreshes after a step: w_i = x and grad f_i(w_i) recomputed where the coin
    says so (m oracle calls each). Returns how many workers refreshed."""
    n, d, m, l2 = arrays.E.shape[1], x.size, data.m, settings.l2
    refreshed = 0
    for i in range(n):
        u = draws[r, t, n] if settings.coin == SHARED_COIN else draws[r, t, n + i]
        if u < per_run.p[r]:
            refreshed += 1
            arrays.W[r, i] = x
            if data.indptr.size > 0:
                csr_worker_grad(data.indptr, data.indices, data.values, data.yflat, x, i, m, grad)
            else:
                dense_worker_grad(data.flat, data.yflat, x, i, m, grad)
            for j in range(d):
                arrays.GW[r, i, j] = grad[j] + l2 * x[j]
    return refreshed


@njit(cache=True)
def _advance_run(
    r, data, arrays, draws, gammas, per_run, settings, budget, counts, snaps
):  # pragma: no cover
    """Run r of :func:`ec_advance`, with its own scratch arrays (runs go in parallel)."""
    n, d, m = arrays.E.shape[1], arrays.E.shape[2], data.m
    lsvrg, comp, l2 = settings.lsvrg, settings.comp, settings.l2
    bits, nnz, calls, steps, silent = counts.bits, counts.nnz, counts.calls, counts.steps, counts.silent
    vsum, grad, saved = np.empty(d), np.empty(d), np.empty(d)
    heap = np.empty(max(per_run.k.max(), 1))
    c2 = 0.0
    sn, sg = arrays.X[0], arrays.X[0]
    x = arrays.X[r]
    mark = 0
    steps[r] = 0
    if not counts.live[r]:
        return
    for t in range(draws.shape[1]):
        if bits[r].sum() / n >= budget.bits or calls[r] / m >= budget.epochs:
            break
        if silent[r] >= max(budget.stall_floor, counts.done[r] + steps[r] - silent[r]):  # Counters.stalled
            break
        gamma = gammas[r, t]
        thr = gamma * per_run.lam[r] if settings.scaled else per_run.lam[r]
        vsum[:] = 0.0
        step_max, step_min = 0.0, np.inf
        for i in range(n):
            row, w = sample_row(draws[r, t, i], i, m, data.cdf, data.weights)
            yy = data.yflat[row]
            e = arrays.E[r, i]
            c = margin_coef(yy, sample_dot(data.flat, data.indptr, data.indices, data.values, row, x)) * w
            if lsvrg:
                sn, sg = arrays.W[r, i], arrays.GW[r, i]
                c2 = (
                    margin_coef(yy, sample_dot(data.flat, data.indptr, data.indices, data.values, row, sn))
                    * w
                )
            _add_step(e, x, gamma, c, c2, w * l2, sn, sg, lsvrg, data, row, saved)
            count = compress_row(e, comp, thr, per_run.k[r], heap, vsum, True)
            nnz[r, i] += count
            b = (
                settings.float_bits * d
                if comp == IDENTITY
                else message_bits(count, d, settings.float_bits, settings.index_width, settings.index_bits)
            )
            bits[r, i] += b
            step_max, step_min = max(step_max, b), min(step_min, b)
        refreshed = _refresh(r, t, x, data, arrays, per_run, settings, draws, grad) if lsvrg else 0
        calls[r] += (2.0 * n + m * refreshed) / n if lsvrg else 1.0
        # the round's network quantities (efbench.core.network.Counts): largest and smallest
        # message, a round with messages, the slowest worker's oracle calls
        slowest = (2.0 + m if refreshed else 2.0) if lsvrg else 1.0
        add_round(counts.net[r], step_max, step_min, step_max, step_max > 0, slowest)
        silent[r] = 0 if step_max > 0 else silent[r] + 1
        for j in range(d):  # the order of blocks.worker_mean
            x[j] -= vsum[j] / n
        steps[r] += 1
        if mark < snaps.marks.size and steps[r] == snaps.marks[mark]:  # a log point
            snaps.X[r, mark] = x
            c = snaps.C[r, mark]
            c[0], c[1], c[2], c[3] = bits[r].sum(), bits[r].max(), nnz[r].sum(), calls[r]
            c[4 : 4 + counts.net.shape[1]] = counts.net[r]
            c[SNAPSHOT_COLUMNS - 1] = mean_sq_norm(arrays.E[r])
            mark += 1


@njit(cache=True, parallel=True)
def ec_advance(data, arrays, draws, gammas, per_run, settings, budget, counts, snaps):  # pragma: no cover
    """Advance each run r of ``arrays`` by up to T = draws.shape[1] steps, in place.

    ``data``: :class:`Data`; ``arrays``: :class:`Arrays`; ``draws`` (R, T, n + c) each run's
    uniforms, c = 0, 1 or n coins; ``gammas`` (R, T) its stepsizes; ``per_run``:
    :class:`PerRun`; ``settings``: :class:`Settings`; ``budget``: :class:`Budget`;
    ``counts``: :class:`Counts`; ``snaps``: :class:`Snaps`. Before each step a run stops
    for good when it reaches its budget, exactly as the numpy engine checks it
    (:class:`efbench.engine.counts.Counters`); runs not ``counts.live`` take no step.
    """
    for r in prange(arrays.E.shape[0]):  # independent runs: the cores share them, bit for bit
        _advance_run(r, data, arrays, draws, gammas, per_run, settings, budget, counts, snaps)


# the sources the compiled step is built from: numba keys a cached kernel on its own file
# only, so after an upgrade that changed a building block it would load the old kernel
KERNEL_SOURCES = (Path(__file__), Path(blocks.__file__), Path(network.__file__))


def drop_stale_kernels(cache: Path) -> bool:
    """Remove this module's kernels cached in ``cache`` when any of KERNEL_SOURCES changed
    since they were compiled (a stamp of their hash beside numba's cache files), so they
    compile anew. Returns whether they will: the first run after an install or an upgrade."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in KERNEL_SOURCES)).hexdigest()
    stamp = cache / "fused.sources"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:  # no stamp yet: kernels cached before it are of unknown sources
        pass
    try:
        for old in cache.glob("fused.*.nb[ic]"):
            old.unlink(missing_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass
    return True


# the kernels compile as they are first used in this process (the runner says so)
COMPILING = drop_stale_kernels(
    Path(getattr(ec_advance._cache, "_cache_path", Path(__file__).parent / "__pycache__"))
)


class FusedBatch:
    """The batch's arrays as the compiled step takes them: models X (R, d), error memories
    E (R, n, d) and L-SVRG points (R, n, d), each run's State holding views of its rows."""

    def __init__(self, problem: Problem, specs: list[FusedSpec], runs: list, states: list[State]):
        """``runs``: the batch's :class:`efbench.engine.loop.RunSpec` (their schedules and methods)."""
        self.p, self.spec = problem, specs[0]
        self.X = np.stack([s.x for s in states])
        self.E = np.stack([s.e for s in states])
        lsvrg = self.spec.lsvrg
        self.W = np.stack([s.est.w for s in states]) if lsvrg else self.E[:, :0]
        self.GW = np.stack([s.est.gw for s in states]) if lsvrg else self.E[:, :0]
        for r, s in enumerate(states):
            s.x, s.e = self.X[r], self.E[r]
            if lsvrg:
                s.est.w, s.est.gw = self.W[r], self.GW[r]
        self.lam = np.array([s.lam for s in specs])
        self.k = np.array([s.k for s in specs], dtype=np.int64)
        self.prob = np.array([s.p for s in specs])
        self.schedules = [r.schedule for r in runs]
        self.down = np.array([r.method.downlink(problem.d) for r in runs], dtype=np.int64)
        self.coins = {NO_COIN: 0, SHARED_COIN: 1, WORKER_COINS: problem.n}[self.spec.coin]
        self.csr = problem.csr_arrays
        self.index_width = index_width(problem.d)
        if not ec_advance.signatures:  # first call in this process: compile or load from disk
            t0 = time.perf_counter()
            self.advance(
                [], 1, [], Counters(len(runs), problem.n, problem.m), Budget(0.0, 0.0, 1), np.zeros(1)
            )
            log.info(
                "compiled step ready in %.2f s (compiled once, then loaded from numba's cache)",
                time.perf_counter() - t0,
            )

    def advance(
        self,
        live: list[int],
        T: int,
        rngs,
        counters: Counters,
        budget: Budget,
        step_time: np.ndarray,
        marks: list[int] = (),
    ) -> tuple[np.ndarray, Callable[[int, float, float], Points]]:
        """Up to T steps of the live runs in one compiled call, keeping each run's model and
        counts after the steps ``marks`` (counted from this call's start): returns the steps
        each live run took, and ``points(k, start, duration)``: the :class:`Points` the live
        runs reached (see there)."""
        p, s, n = self.p, self.spec, self.p.n
        R = self.X.shape[0]
        draws = np.zeros((R, T, n + self.coins))
        gammas = np.zeros((R, T))
        mask = np.zeros(R, dtype=bool)
        mask[live] = True
        for r in live:
            draws[r] = rngs[r].random((T, n + self.coins))
            gammas[r] = self.schedules[r].values(int(counters.rounds[r]), T)
        steps = np.zeros(R, dtype=np.int64)
        at = np.asarray(marks, dtype=np.int64)
        SX = np.empty((R, at.size, self.X.shape[1]))
        SC = np.empty((R, at.size, SNAPSHOT_COLUMNS))
        before = counters.rounds.copy(), counters.rounds_down.copy(), counters.bits_down.copy()
        t0 = time.perf_counter()
        ec_advance(
            Data(p.flat, p.yflat, *self.csr, p.m, s.cdf, s.weights),
            Arrays(self.X, self.E, self.W, self.GW),
            draws,
            gammas,
            PerRun(self.lam, self.k, self.prob),
            Settings(s.comp, s.scaled, p.l2, s.float_bits, self.index_width, s.index_bits, s.lsvrg, s.coin),
            budget,
            Counts(
                mask,
                counters.bits,
                counters.nnz,
                counters.calls,
                steps,
                counters.net,
                counters.silent,
                counters.rounds,
            ),
            Snaps(at, SX, SC),
        )
        elapsed = time.perf_counter() - t0
        counters.rounds += steps
        counters.bits_down += steps * self.down
        counters.rounds_down += steps * (self.down > 0)
        if live:
            step_time[live] += elapsed / len(live)

        took = steps[live]

        def points(k: int, start: float, duration: float) -> Points:
            """The live runs' points at the marks they reached, for a call that started at
            step k, ``start`` seconds into the batch, and took ``duration`` seconds."""
            t, j = np.nonzero(at[None, :] <= took[:, None])  # by run, then mark
            r = np.asarray(live, dtype=np.int64)[t]
            mk = at[j]
            c = SC[r, j]
            return Points(
                r,
                k + mk,
                SX[r, j],
                c[:, 0],
                c[:, 1],
                c[:, 2],
                c[:, 3],
                c[:, 4 : 4 + len(network.COUNTS)],
                (before[0][r] + mk).astype(np.float64),
                (before[1][r] + mk * (self.down[r] > 0)).astype(np.float64),
                (before[2][r] + mk * self.down[r]).astype(np.float64),
                np.zeros(r.size),
                {"err2": c[:, -1]},
                start + mk / T * duration,
            )

        return took, points
