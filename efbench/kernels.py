"""Compiled (numba) loops where numpy's per-call cost or temporaries dominate.

``ec_step``: the fused step of ``engine=numba`` (and ``auto``) for the error-compensated SGD
family. One compiled loop over seeds and workers replaces the ~20 numpy calls of a step,
whose fixed per-call cost dominates at a9a/w8a sizes. It computes exactly the formulas of
:class:`efbench.methods.ErrorCompensated` with the SGD or L-SVRG estimator (tau = 1) and
the identity, hard-threshold or TopK compressor; random draws stay with numpy's Generator
(made before the kernel), so a run consumes the same random numbers on either engine.
Results agree with the numpy engine to rounding (dot products are summed in another
order), not bit for bit.

``csr_loss_grad`` / ``csr_worker_grads``: full passes over sparse rows (metrics, full
gradients, L-SVRG refreshes) in one sweep instead of two scipy products and temporaries.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

IDENTITY, THRESHOLD, TOPK = 0, 1, 2


@njit(cache=True)
def _expit(t: float) -> float:
    if t >= 0.0:
        return 1.0 / (1.0 + math.exp(-t))
    et = math.exp(t)
    return et / (1.0 + et)


@njit(cache=True)
def _kth_largest_abs(row, k, heap):  # pragma: no cover - compiled
    """The k-th largest |row_j|, by a min-heap of the k largest seen so far: one pass, and
    most entries fail the comparison with the root, so about d comparisons when k << d
    (numba's np.partition copies and is several times slower at d = 5000)."""
    for j in range(k):
        a = abs(row[j])
        c = j
        while c > 0:  # sift up
            parent = (c - 1) // 2
            if heap[parent] <= a:
                break
            heap[c] = heap[parent]
            c = parent
        heap[c] = a
    root = heap[0]  # in a register: the common case is one comparison with it
    for j in range(k, row.shape[0]):
        a = abs(row[j])
        if a <= root:
            continue
        c = 0
        while True:  # replace the root, sift down
            child = 2 * c + 1
            if child >= k:
                break
            if child + 1 < k and heap[child + 1] < heap[child]:
                child += 1
            if heap[child] >= a:
                break
            heap[c] = heap[child]
            c = child
        heap[c] = a
        root = heap[0]
    return heap[0]


@njit(cache=True)
def ec_step(flat, yflat, u, m, flat_cdf, flat_weights, x, e, gamma, l2, comp, thr, k, float_bits,
            index_width, index_bits, snap, snap_grad, lsvrg):  # pragma: no cover - compiled
    """One EC step for all seeds and workers, in place on x (S, d) and e (S, n, d) (S = 1
    for a single run, more for batched seeds); returns the bits and the coordinates of each
    worker's message, (S, n) each.

    Worker i's sample comes from its uniform draw u_si exactly as
    :meth:`efbench.estimators.Sampler.draw` makes it: row i m + floor(m u_si), or (importance,
    ``flat_cdf`` non-empty) the position of u_si + i in the shifted CDFs, weight 1/(m p_ij).

    g_i = w_i [grad f_{i r_i}(x) - grad f_{i r_i}(snap_i)] + snap_grad_i   (L-SVRG)
    g_i = w_i grad f_{i r_i}(x)                                             (SGD)
    u_i = e_i + gamma g_i,  v_i = C(u_i),  e_i = u_i - v_i,  x -= mean_i v_i
    with C keeping all coordinates, those with |u_j| >= thr, or the k largest |u_j|.
    """
    S, n, d = e.shape
    vsum = np.empty(d)
    heap = np.empty(max(k, 1))
    bits = np.empty((S, n), dtype=np.int64)
    nnz = np.empty((S, n), dtype=np.int64)
    # 1-d views of rows hoisted out of the j loops: numba then drops the index arithmetic
    # and negative-index checks of 2-d/3-d indexing there (1.4x on a9a)
    for s in range(S):
        xs = x[s]
        vsum[:] = 0.0
        for i in range(n):
            if flat_cdf.size == 0:
                r = i * m + int(u[s, i] * m)
                w = 1.0
            else:
                r = min(np.searchsorted(flat_cdf, u[s, i] + i, side="right"), i * m + m - 1)
                w = flat_weights[r]
            a = flat[r]
            ei = e[s, i]
            yy = yflat[r]
            wl2 = w * l2
            z = np.dot(a, xs)  # BLAS: a plain loop is bound by the latency of its additions
            c = yy * (_expit(yy * z) - 1.0) * w
            if lsvrg:
                sn, sg = snap[s, i], snap_grad[s, i]
                z2 = np.dot(a, sn)
                c2 = yy * (_expit(yy * z2) - 1.0) * w
                for j in range(d):
                    ei[j] += gamma * (c * a[j] + wl2 * xs[j] - (c2 * a[j] + wl2 * sn[j]) + sg[j])
            else:
                for j in range(d):
                    ei[j] += gamma * (c * a[j] + wl2 * xs[j])
            count = 0
            if comp == IDENTITY:
                for j in range(d):
                    vsum[j] += ei[j]
                    ei[j] = 0.0
                count = d
            elif comp == THRESHOLD:
                for j in range(d):  # selects, not branches: vectorized, no mispredictions
                    v = ei[j]
                    keep = abs(v) >= thr
                    vsum[j] += v if keep else 0.0
                    ei[j] = 0.0 if keep else v
                    count += keep
            else:
                kth = _kth_largest_abs(ei, k, heap)
                ties = k  # those above the k-th largest (all in the heap), then ties in index order
                for h in range(k):
                    if heap[h] > kth:
                        ties -= 1
                for j in range(d):
                    a_j = abs(ei[j])
                    if a_j > kth or (a_j == kth and ties > 0):
                        if a_j == kth:
                            ties -= 1
                        vsum[j] += ei[j]
                        ei[j] = 0.0
                count = k  # k values are sent (even when nan made the comparisons fail)
            nnz[s, i] = count  # bits: the rule of efbench.compressors.sparse_bits / dense
            if comp == IDENTITY:
                bits[s, i] = float_bits * d
            elif index_bits:
                bits[s, i] = count * float_bits + min(count * index_width, d)
            else:
                bits[s, i] = count * float_bits
        for j in range(d):
            xs[j] -= vsum[j] / n
    return bits, nnz


@njit(cache=True)
def _loss_and_coef(t: float) -> tuple[float, float]:
    """log(1 + e^-t) and sigmoid(-t), from one exp(-|t|): no overflow for any t."""
    ex = math.exp(-abs(t))
    if t >= 0.0:
        return math.log1p(ex), ex / (1.0 + ex)
    return -t + math.log1p(ex), 1.0 / (1.0 + ex)


@njit(cache=True)
def csr_loss_grad(indptr, indices, data, y, x):  # pragma: no cover - compiled
    """One pass over CSR rows a_r with labels y_r: returns sum_r log(1 + exp(-y_r <a_r, x>))
    and sum_r -y_r sigmoid(-y_r <a_r, x>) a_r, the data part of N f(x) and N grad f(x).
    Unsigned indices: numba then skips its negative-index check (2x on a9a)."""
    g = np.zeros(x.shape[0])
    loss = 0.0
    for r in range(y.shape[0]):
        z = 0.0
        for q in range(indptr[r], indptr[r + 1]):
            z += data[q] * x[indices[q]]
        t = y[r] * z
        lr, sr = _loss_and_coef(t)
        loss += lr
        c = -y[r] * sr
        for q in range(indptr[r], indptr[r + 1]):
            g[indices[q]] += c * data[q]
    return loss, g


@njit(cache=True)
def csr_worker_grads(indptr, indices, data, y, X, workers, m):  # pragma: no cover - compiled
    """(len(workers), d): row t is (1/m) sum_j -y_ij sigmoid(-y_ij <a_ij, x_t>) a_ij over the
    m rows of worker i = workers[t] (flat rows i m .. i m + m - 1), the data part of
    grad f_i(x_t); X is (len(workers), d), one point per worker, or (1, d), one for all."""
    out = np.zeros((workers.shape[0], X.shape[1]))
    for t in range(workers.shape[0]):
        i = workers[t]
        ot, xt = out[t], X[t if X.shape[0] > 1 else 0]
        for r in range(i * m, i * m + m):
            z = 0.0
            for q in range(indptr[r], indptr[r + 1]):
                z += data[q] * xt[indices[q]]
            c = -y[r] * _expit(-y[r] * z) / m
            for q in range(indptr[r], indptr[r + 1]):
                ot[indices[q]] += c * data[q]
    return out
