"""Fused, compiled steps (numba) for the error-compensated SGD family: ``engine=numba``.

One compiled loop over the workers replaces the ~20 numpy calls of a step, whose fixed
per-call cost dominates at a9a/w8a sizes. The kernel computes exactly the formulas of
:class:`efbench.methods.ErrorCompensated` with the SGD or L-SVRG estimator (tau = 1) and
the identity, hard-threshold or TopK compressor; random draws stay with numpy's Generator
(made before the kernel), so a run consumes the same random numbers on either engine.
Results agree with the numpy engine to rounding (dot products are summed in another
order), not bit for bit.
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
    for j in range(k, row.shape[0]):
        a = abs(row[j])
        if a <= heap[0]:
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
    for s in range(S):
        vsum[:] = 0.0
        for i in range(n):
            if flat_cdf.size == 0:
                r = i * m + int(u[s, i] * m)
                w = 1.0
            else:
                r = min(np.searchsorted(flat_cdf, u[s, i] + i, side="right"), i * m + m - 1)
                w = flat_weights[r]
            yy = yflat[r]
            z = 0.0
            for j in range(d):
                z += flat[r, j] * x[s, j]
            c = yy * (_expit(yy * z) - 1.0) * w
            c2 = 0.0
            if lsvrg:
                z2 = 0.0
                for j in range(d):
                    z2 += flat[r, j] * snap[s, i, j]
                c2 = yy * (_expit(yy * z2) - 1.0) * w
            ei = e[s, i]
            for j in range(d):
                g = c * flat[r, j] + w * l2 * x[s, j]
                if lsvrg:
                    g = g - (c2 * flat[r, j] + w * l2 * snap[s, i, j]) + snap_grad[s, i, j]
                ei[j] += gamma * g
            count = 0
            if comp == IDENTITY:
                for j in range(d):
                    vsum[j] += ei[j]
                    ei[j] = 0.0
                count = d
            elif comp == THRESHOLD:
                for j in range(d):
                    if abs(ei[j]) >= thr:
                        vsum[j] += ei[j]
                        ei[j] = 0.0
                        count += 1
            else:
                kth = _kth_largest_abs(ei, k, heap)
                for j in range(d):  # those above it, then ties in index order up to k
                    if abs(ei[j]) > kth:
                        vsum[j] += ei[j]
                        ei[j] = 0.0
                        count += 1
                for j in range(d):
                    if count < k and abs(ei[j]) == kth:
                        vsum[j] += ei[j]
                        ei[j] = 0.0
                        count += 1
                count = k  # k values are sent even when nan made the comparisons fail
            nnz[s, i] = count
            if comp == IDENTITY:
                bits[s, i] = float_bits * d
            elif index_bits:
                bits[s, i] = count * float_bits + min(count * index_width, d)
            else:
                bits[s, i] = count * float_bits
        for j in range(d):
            x[s, j] -= vsum[j] / n
    return bits, nnz
