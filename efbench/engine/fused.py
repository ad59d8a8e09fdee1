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
from pathlib import Path

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
from efbench.core.network import COUNTS, add_round

NO_COIN, SHARED_COIN, WORKER_COINS = 0, 1, 2
# a log point's counts (ec_advance's snaps): bits sum, bits max, nnz sum, calls, COUNTS, err2
SNAPSHOT_COLUMNS = 4 + len(COUNTS) + 1


@njit(cache=True)
def _advance_run(
    r, data, state, draws, gammas, params, settings, budget, counters, snaps
):  # pragma: no cover
    """Run r of :func:`ec_advance`, with its own scratch arrays (runs go in parallel)."""
    flat, yflat, csr_indptr, csr_indices, csr_data, m, cdf, weights = data
    X, E, SNAP, SNAPG = state
    lam, k, p = params
    comp, scaled, l2, float_bits, index_width, index_bits, lsvrg, coin = settings
    max_bits, max_epochs, stall_floor = budget
    live, bits, nnz, calls, steps, rounds, silent, done = counters
    marks, SX, SC = snaps
    mark = 0
    n, d = E.shape[1], E.shape[2]
    T = draws.shape[1]
    vsum = np.empty(d)
    grad = np.empty(d)
    heap = np.empty(max(k.max(), 1))
    sparse = csr_indptr.size > 0
    saved = np.empty(d)
    c2 = 0.0
    sn, sg = X[0], X[0]
    x = X[r]
    steps[r] = 0
    if not live[r]:
        return
    for t in range(T):
        if bits[r].sum() / n >= max_bits or calls[r] / m >= max_epochs:
            break
        if silent[r] >= max(stall_floor, done[r] + steps[r] - silent[r]):  # engine.Counters.stalled
            break
        gamma = gammas[r, t]
        thr = gamma * lam[r] if scaled else lam[r]
        vsum[:] = 0.0
        step_max, step_min = 0.0, np.inf
        for i in range(n):
            row, w = sample_row(draws[r, t, i], i, m, cdf, weights)
            yy = yflat[row]
            e = E[r, i]
            c = margin_coef(yy, sample_dot(flat, csr_indptr, csr_indices, csr_data, row, x)) * w
            wl2 = w * l2
            if lsvrg:
                sn, sg = SNAP[r, i], SNAPG[r, i]
                c2 = margin_coef(yy, sample_dot(flat, csr_indptr, csr_indices, csr_data, row, sn)) * w
            if sparse:
                # the dense formula with a_j = 0 off the row's entries, then the entries
                # from the saved e_j: the same arithmetic, without reading a dense row
                q0, q1 = csr_indptr[row], csr_indptr[row + 1]
                for q in range(q0, q1):
                    saved[q - q0] = e[csr_indices[q]]
                zc, zc2 = c * 0.0, c2 * 0.0 if lsvrg else 0.0
                if lsvrg:
                    for j in range(d):
                        e[j] += gamma * (zc + wl2 * x[j] - (zc2 + wl2 * sn[j]) + sg[j])
                    for q in range(q0, q1):
                        j, aj = csr_indices[q], csr_data[q]
                        e[j] = saved[q - q0] + gamma * (c * aj + wl2 * x[j] - (c2 * aj + wl2 * sn[j]) + sg[j])
                else:
                    for j in range(d):
                        e[j] += gamma * (zc + wl2 * x[j])
                    for q in range(q0, q1):
                        j, aj = csr_indices[q], csr_data[q]
                        e[j] = saved[q - q0] + gamma * (c * aj + wl2 * x[j])
            else:
                a = flat[row]
                if lsvrg:
                    for j in range(d):
                        e[j] += gamma * (c * a[j] + wl2 * x[j] - (c2 * a[j] + wl2 * sn[j]) + sg[j])
                else:
                    for j in range(d):
                        e[j] += gamma * (c * a[j] + wl2 * x[j])
            count = compress_row(e, comp, thr, k[r], heap, vsum, True)
            nnz[r, i] += count
            b = (
                float_bits * d
                if comp == IDENTITY
                else message_bits(count, d, float_bits, index_width, index_bits)
            )
            bits[r, i] += b
            step_max, step_min = max(step_max, b), min(step_min, b)
        step_calls = 1.0
        refreshed = 0
        if lsvrg:
            for i in range(n):  # w_i^{k+1} = x^k where the coin says so: m oracle calls
                u = draws[r, t, n] if coin == SHARED_COIN else draws[r, t, n + i]
                if u < p[r]:
                    refreshed += 1
                    SNAP[r, i] = x
                    if sparse:
                        csr_worker_grad(csr_indptr, csr_indices, csr_data, yflat, x, i, m, grad)
                    else:
                        dense_worker_grad(flat, yflat, x, i, m, grad)
                    for j in range(d):
                        SNAPG[r, i, j] = grad[j] + l2 * x[j]
            step_calls = (2.0 * n + m * refreshed) / n
        calls[r] += step_calls
        # the round's network quantities (efbench.core.network.Counts): largest and smallest
        # message, a round with messages, the slowest worker's oracle calls
        slowest = (2.0 + m if refreshed else 2.0) if lsvrg else 1.0
        add_round(rounds[r], step_max, step_min, step_max, step_max > 0, slowest)
        silent[r] = 0 if step_max > 0 else silent[r] + 1
        for j in range(d):  # the order of blocks.worker_mean
            x[j] -= vsum[j] / n
        steps[r] += 1
        if mark < marks.size and steps[r] == marks[mark]:  # a log point: keep x and the counts
            SX[r, mark] = x
            c = SC[r, mark]
            c[0], c[1], c[2], c[3] = bits[r].sum(), bits[r].max(), nnz[r].sum(), calls[r]
            c[4 : 4 + rounds.shape[1]] = rounds[r]
            c[SNAPSHOT_COLUMNS - 1] = mean_sq_norm(E[r])
            mark += 1


@njit(cache=True, parallel=True)
def ec_advance(data, state, draws, gammas, params, settings, budget, counters, snaps):  # pragma: no cover
    """Advance each run r of X (R, d), E (R, n, d) by up to T = draws.shape[1] steps, in place.

    ``data`` = (flat rows, labels, CSR indptr, indices, values (empty when dense), m,
    sampler CDF (empty: uniform), weights); ``state`` = (X, E, SNAP, SNAPG), SNAP and SNAPG
    (R, n, d) the L-SVRG points w_i and grad f_i(w_i); ``draws`` (R, T, n + c) each run's
    uniforms, c = 0, 1 or n coins; ``gammas`` (R, T) its stepsizes; ``params`` = (lam, k,
    p), each (R,): threshold, K and refresh probability; ``settings`` = (compressor code,
    scaled form, l2, float bits, index width, index bits, L-SVRG, coin mode); ``budget`` =
    (max_bits, max_epochs, stall_floor); ``counters`` = (live, bits, nnz, calls, steps,
    rounds, silent, done). Before each step a run stops for good when its mean cumulative
    uplink bits per worker reach ``max_bits``, its epochs (oracle calls / m) reach
    ``max_epochs``, or it has sent no bits in its last silent[r] >= max(stall_floor, the steps
    before them) steps (done[r]: its steps before this call), exactly as the numpy engine
    checks them (:class:`efbench.engine.loop.Counters`); runs with ``live[r]`` false take no step.
    Counters ``bits``, ``nnz`` (R, n), ``calls``, ``silent`` (R,) and ``rounds`` (R,
    len(efbench.core.network.COUNTS)) are cumulative; ``steps`` (R,) receives the steps each run
    took in this call. ``snaps`` =
    (marks, SX, SC): after its marks[j]-th step of this call, run r keeps its model in
    SX[r, j] and in SC[r, j] its bits summed and largest over the workers, coordinates sent,
    oracle calls per worker, the rounds' network counts and err2 (the log points, kept
    without leaving the compiled loop).
    """
    for r in prange(state[1].shape[0]):  # independent runs: the cores share them, bit for bit
        _advance_run(r, data, state, draws, gammas, params, settings, budget, counters, snaps)


# the sources the compiled step is built from: numba keys a cached kernel on its own file
# only, so after an upgrade that changed a building block it would load the old kernel
KERNEL_SOURCES = (Path(__file__), Path(blocks.__file__), Path(network.__file__))


def drop_stale_kernels(cache: Path) -> None:
    """Remove this module's kernels cached in ``cache`` when any of KERNEL_SOURCES changed
    since they were compiled (a stamp of their hash beside numba's cache files), so they
    compile anew."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in KERNEL_SOURCES)).hexdigest()
    stamp = cache / "fused.sources"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:  # no stamp yet: kernels cached before it are of unknown sources
        pass
    try:
        for old in cache.glob("fused.*.nb[ic]"):
            old.unlink(missing_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass


drop_stale_kernels(Path(getattr(ec_advance._cache, "_cache_path", Path(__file__).parent / "__pycache__")))
