"""Compiled building blocks, each formula defined once (numba).

The numpy path (compressors, samplers, gradients of :mod:`efbench.problems.logistic`) and the fused
multi-step kernel (:mod:`efbench.engine.fused`) call these same functions, so the two engines
cannot drift apart: what differs between them is only how the loop is driven. Plain,
readable numpy versions of the same formulas live in ``tests/reference.py`` and are
compared with these.

* logistic loss of a margin t = y <a, x>: ``log(1 + e^-t)`` and its derivative
  ``-sigmoid(-t)``, from one exp(-|t|) (no overflow for any t);
* sampling: worker i's row for a uniform draw u (uniform: ``i m + floor(m u)``; importance:
  the position of ``u + i`` in the concatenated, shifted per-worker CDFs) and its weight;
* compressors identity, hard threshold and TopK on one row, with two TopK tie rules:
  ``TOPK`` sends exactly K values, ties with the K-th largest magnitude taken lowest index
  first; ``TOPK_KEEP`` (the authors' code) sends every nonzero value tied with it;
* the bit rule of a sparse message (SPEC.md section 2): ``k F + min(k I, d)``, or ``k F``
  with values-only accounting.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, vectorize

IDENTITY, THRESHOLD, TOPK, TOPK_KEEP = 0, 1, 2, 3


@njit(cache=True)
def loss_and_dloss(t: float) -> tuple[float, float]:
    """log(1 + e^-t) and its derivative -sigmoid(-t), from one exp(-|t|)."""
    ex = math.exp(-abs(t))
    if t >= 0.0:
        return math.log1p(ex), -ex / (1.0 + ex)
    return -t + math.log1p(ex), -1.0 / (1.0 + ex)


@njit(cache=True)
def margin_coef(y: float, z: float) -> float:
    """d/dz log(1 + exp(-y z)) = -y sigmoid(-y z): the per-sample gradient is coef * a."""
    return y * loss_and_dloss(y * z)[1]


@vectorize(cache=True)  # compiled at its first call: no compiling at import
def margin_coef_ufunc(y: float, z: float) -> float:  # pragma: no cover - compiled
    """:func:`margin_coef` element-wise over arrays."""
    return margin_coef(y, z)


@vectorize(cache=True)  # compiled at its first call: no compiling at import
def margin_loss_ufunc(t: float) -> float:  # pragma: no cover - compiled
    """log(1 + e^-t) element-wise (:func:`loss_and_dloss`)."""
    return loss_and_dloss(t)[0]


@njit(cache=True)
def sample_row(u: float, i: int, m: int, cdf: np.ndarray, weights: np.ndarray) -> tuple[int, float]:
    """Worker i's flat row index for the uniform draw u in [0, 1), and its weight 1/(m p_ij):
    uniform (``cdf`` empty) j = floor(m u), weight 1; importance: the position of u + i in
    the per-worker CDFs shifted by the worker index, capped at the worker's last row (u + i
    may round up into the next block)."""
    if cdf.size == 0:
        return i * m + int(u * m), 1.0
    r = min(np.searchsorted(cdf, u + i, side="right"), i * m + m - 1)
    return r, weights[r]


@njit(cache=True)
def draw_rows(
    u: np.ndarray, m: int, cdf: np.ndarray, weights: np.ndarray, rows: np.ndarray, w: np.ndarray
) -> None:  # pragma: no cover - compiled
    """:func:`sample_row` for draws u (n, tau): flat rows and weights into ``rows``, ``w``."""
    for i in range(u.shape[0]):
        for t in range(u.shape[1]):
            rows[i, t], w[i, t] = sample_row(u[i, t], i, m, cdf, weights)


@njit(cache=True)
def kth_largest_abs(row: np.ndarray, k: int, heap: np.ndarray) -> float:  # pragma: no cover
    """The k-th largest |row_j| by a min-heap of the k largest seen so far (``heap`` holds
    them after the call): one pass, most entries fail one comparison with the root."""
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
def _emit(row, out, j, v, keep, accumulate) -> None:  # pragma: no cover - compiled, inlined
    if accumulate:  # error feedback: out += C(row), row = row - C(row)
        out[j] += v if keep else 0.0
        row[j] = 0.0 if keep else v
    else:
        out[j] = v if keep else 0.0


@njit(cache=True)
def compress_row(
    row: np.ndarray,
    comp: int,
    thr: float,
    k: int,
    heap: np.ndarray,
    out: np.ndarray,
    accumulate: bool = False,
) -> int:  # pragma: no cover - compiled
    """C(row) into ``out`` (zeros where not sent); returns the coordinates sent. With
    ``accumulate`` (error feedback, the compiled step) it adds C(row) to ``out`` and leaves
    row - C(row) in ``row`` in the same pass.

    identity: all d; hard threshold: |row_j| >= thr; TopK: the k largest |row_j|, ties with
    the k-th taken lowest index first, k values sent (even when nan defeats the comparisons);
    TopK keeping ties: every nonzero row_j with |row_j| >= the k-th largest magnitude, so
    more than k values where others tie with the k-th, fewer where the row has fewer than k
    nonzeros (the authors' reference code: ``np.abs(x) >= kth``).
    """
    d = row.shape[0]
    if comp == IDENTITY or (comp == TOPK and k >= d):
        for j in range(d):
            _emit(row, out, j, row[j], True, accumulate)
        return d
    if comp == THRESHOLD:
        count = 0
        for j in range(d):  # selects, not branches: vectorized, no mispredictions
            v = row[j]
            keep = abs(v) >= thr
            _emit(row, out, j, v, keep, accumulate)
            count += keep
        return count
    kth = kth_largest_abs(row, k, heap)
    if comp == TOPK_KEEP:
        count = 0
        for j in range(d):  # zeros tied with a zero k-th are not sent: they carry nothing
            v = row[j]
            keep = (abs(v) >= kth) & (v != 0.0)
            _emit(row, out, j, v, keep, accumulate)
            count += keep
        return count
    ties = k  # those above the k-th largest are all in the heap; the rest are ties
    for h in range(k):
        if heap[h] > kth:
            ties -= 1
    for j in range(d):  # those above the k-th: a select, vectorized
        v = row[j]
        _emit(row, out, j, v, abs(v) > kth, accumulate)
    for j in range(d):  # then the ties with it, lowest index first (the k-th itself among them)
        if ties == 0:
            break
        v = row[j]
        if abs(v) == kth:
            ties -= 1
            if accumulate:
                out[j] += v
                row[j] = 0.0
            else:
                out[j] = v
    return k


@njit(cache=True)
def message_bits(count: int, d: int, value_bits: int, index_width: int, index_bits: bool) -> int:
    """Bits of a sparse message of ``count`` values: min(index list k (F + I), bitmap + values
    d + k F) = k F + min(k I, d); values only (k F) without ``index_bits``."""
    if not index_bits:
        return count * value_bits
    return count * value_bits + min(count * index_width, d)


@vectorize(cache=True)  # compiled at its first call: no compiling at import
def message_bits_ufunc(count, d, value_bits, index_width, index_bits):  # pragma: no cover - compiled
    """:func:`message_bits` element-wise."""
    return message_bits(count, d, value_bits, index_width, index_bits)


@njit(cache=True)
def compress_rows(
    X: np.ndarray,
    comp: int,
    thr: float,
    k: int,
    value_bits: int,
    index_width: int,
    index_bits: bool,
    out: np.ndarray,
    bits: np.ndarray,
    nnz: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """:func:`compress_row` on every row of X (rows, d), with each message's bits."""
    heap = np.empty(max(k, 1))
    d = X.shape[1]
    for r in range(X.shape[0]):
        c = compress_row(X[r], comp, thr, k, heap, out[r])
        nnz[r] = c
        bits[r] = (
            value_bits * d if comp == IDENTITY else message_bits(c, d, value_bits, index_width, index_bits)
        )


@njit(cache=True)
def csr_row_dot(indptr, indices, data, r, x) -> float:  # pragma: no cover - compiled
    z = 0.0
    for q in range(indptr[r], indptr[r + 1]):
        z += data[q] * x[indices[q]]
    return z


EVAL_CHUNKS = 16  # a full pass sums its rows in this many fixed blocks, whatever the cores
SERIAL_WORK = 200_000  # a full pass with fewer multiply-adds runs on one core (no thread start)


@njit(cache=True)
def _loss_grad_rows(flat, indptr, indices, data, y, lo, hi, X, XT, loss, GT) -> None:  # pragma: no cover
    """Over rows lo..hi-1, for each point x_s (X[s] = XT[:, s]): loss[s] = sum_r
    log(1 + exp(-y_r <a_r, x_s>)) and GT[:, s] = sum_r coef_rs a_r, overwritten. Row outer,
    point inner: the rows are read once for all S points, each point's sums in row order.
    Dense rows are summed in plain loops, as CSR rows with every entry (no BLAS call per row
    and point: 3x faster on small d, as fast on gisette's d = 5000 with the rows on 2 cores)."""
    S = XT.shape[1]
    z = np.empty(S)
    loss[:] = 0.0
    GT[:] = 0.0
    sparse = indptr.size > 0
    d = flat.shape[1]
    if S == 1:  # the same sums with scalars: 2-3x faster than length-1 loops
        x, g1 = XT[:, 0], GT[:, 0]
        total = 0.0
        for r in range(lo, hi):
            q0, q1 = (indptr[r], indptr[r + 1]) if sparse else (0, d)
            t = 0.0
            for q in range(q0, q1):
                t += data[q] * x[indices[q]] if sparse else flat[r, q] * x[q]
            lr, dr = loss_and_dloss(y[r] * t)
            total += lr
            c = y[r] * dr
            for q in range(q0, q1):
                if sparse:
                    g1[indices[q]] += c * data[q]
                else:
                    g1[q] += c * flat[r, q]
        loss[0] = total
        return
    for r in range(lo, hi):
        q0, q1 = (indptr[r], indptr[r + 1]) if sparse else (0, d)
        z[:] = 0.0
        for q in range(q0, q1):
            xr, v = (XT[indices[q]], data[q]) if sparse else (XT[q], flat[r, q])
            for s in range(S):
                z[s] += v * xr[s]
        for s in range(S):
            lr, dr = loss_and_dloss(y[r] * z[s])
            loss[s] += lr
            z[s] = y[r] * dr
        for q in range(q0, q1):
            g, v = (GT[indices[q]], data[q]) if sparse else (GT[q], flat[r, q])
            for s in range(S):
                g[s] += z[s] * v


@njit(cache=True)
def _loss_grad_block(flat, indptr, indices, data, y, X, XT, loss, GT) -> None:  # pragma: no cover
    """:func:`loss_grad_many` for one block of points: the EVAL_CHUNKS row blocks in order."""
    N, S = y.shape[0], XT.shape[1]
    lpart, part = np.empty(S), np.empty(GT.shape)
    loss[:] = 0.0
    GT[:] = 0.0
    for c in range(EVAL_CHUNKS):
        _loss_grad_rows(
            flat,
            indptr,
            indices,
            data,
            y,
            c * N // EVAL_CHUNKS,
            (c + 1) * N // EVAL_CHUNKS,
            X,
            XT,
            lpart,
            part,
        )
        loss += lpart
        GT += part


@njit(cache=True, parallel=True)
def loss_grad_many(flat, indptr, indices, data, y, X, loss, GT, threads) -> None:  # pragma: no cover
    """For each point x_s = X[s] (S, d), one pass over the rows a_r (CSR where indptr is
    non-empty, else the dense ``flat``) with labels y_r: loss[s] = sum_r log(1 + exp(-y_r
    <a_r, x_s>)) and GT[:, s] = sum_r coef_rs a_r, the data parts of N f and N grad f.
    Each point's sums run over EVAL_CHUNKS fixed row blocks, added in block order, so a point's
    value is the same bit for bit whatever S and the cores: a single point's blocks go to the
    cores; several points are split into one group per core; a small pass stays on one.
    Unsigned indices: numba then skips its negative-index check (2x on a9a)."""
    S, d = X.shape
    XT = np.ascontiguousarray(X.T)
    N = y.shape[0]
    if (indptr[-1] if indptr.size else N * d) * S < SERIAL_WORK or threads == 1:
        _loss_grad_block(flat, indptr, indices, data, y, X, XT, loss, GT)
        return
    if S == 1:
        lparts, parts = np.empty((EVAL_CHUNKS, 1)), np.empty((EVAL_CHUNKS, d, 1))
        for c in prange(EVAL_CHUNKS):
            lo, hi = c * N // EVAL_CHUNKS, (c + 1) * N // EVAL_CHUNKS
            _loss_grad_rows(flat, indptr, indices, data, y, lo, hi, X, XT, lparts[c], parts[c])
        loss[:] = 0.0
        GT[:] = 0.0
        for c in range(EVAL_CHUNKS):
            loss += lparts[c]
            GT += parts[c]
        return
    groups = min(S, threads)
    for b in prange(groups):
        lo, hi = b * S // groups, (b + 1) * S // groups
        part = np.empty((d, hi - lo))
        _loss_grad_block(
            flat, indptr, indices, data, y, X[lo:hi], np.ascontiguousarray(XT[:, lo:hi]), loss[lo:hi], part
        )
        GT[:, lo:hi] = part


@njit(cache=True)
def csr_worker_grad(indptr, indices, data, y, x, i, m, out) -> None:  # pragma: no cover - compiled
    """out = (1/m) sum_j coef_ij a_ij over worker i's m rows (flat i m .. i m + m - 1): the
    data part of grad f_i(x)."""
    out[:] = 0.0
    for r in range(i * m, i * m + m):
        c = margin_coef(y[r], csr_row_dot(indptr, indices, data, r, x)) / m
        for q in range(indptr[r], indptr[r + 1]):
            out[indices[q]] += c * data[q]


@njit(cache=True, parallel=True)
def csr_worker_grams(indptr, indices, data, w, m, out) -> None:  # pragma: no cover - compiled
    """out[i] += sum_r w_r a_r a_r^T over worker i's m rows (flat i m .. i m + m - 1), for
    CSR rows: only the pairs of a row's nonzeros are visited (nnz_r^2 a row, not d^2).
    ``out`` (n, d, d); workers in parallel, each row in order."""
    for i in prange(out.shape[0]):
        H = out[i]
        for r in range(i * m, i * m + m):
            lo, hi = indptr[r], indptr[r + 1]
            for p in range(lo, hi):
                vp = w[r] * data[p]
                row = H[indices[p]]
                for q in range(lo, hi):
                    row[indices[q]] += vp * data[q]


@njit(cache=True)
def dense_worker_grad(flat, y, x, i, m, out) -> None:  # pragma: no cover - compiled
    """:func:`csr_worker_grad` on dense rows."""
    out[:] = 0.0
    for r in range(i * m, i * m + m):
        a = flat[r]
        c = margin_coef(y[r], np.dot(a, x)) / m
        for j in range(a.shape[0]):
            out[j] += c * a[j]


@njit(cache=True)
def sample_dot(flat, indptr, indices, data, r, x) -> float:  # pragma: no cover - compiled
    """<a_r, x> for flat row r: over its CSR entries where the data are kept sparse (indptr
    non-empty), else the BLAS dot of the dense row (a plain loop is add-latency bound)."""
    if indptr.size > 0:
        return csr_row_dot(indptr, indices, data, r, x)
    return np.dot(flat[r], x)


@njit(cache=True)
def sample_dots(flat, indptr, indices, data, rows, x) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`sample_dot` of rows (n,) with x (d,), or row i with x[i] for x (n, d): the
    margins of the sampled rows, computed as the compiled step computes them."""
    out = np.empty(rows.shape[0])
    for i in range(rows.shape[0]):
        out[i] = sample_dot(flat, indptr, indices, data, rows[i], x if x.ndim == 1 else x[i])
    return out


@njit(cache=True)
def sq_norm(v: np.ndarray) -> float:  # pragma: no cover - compiled
    """||v||^2 summed coordinate by coordinate in order (the same bits for a row whatever
    array it sits in: numpy's reductions change order with the size of the batch)."""
    row = 0.0
    for j in range(v.shape[0]):
        row += v[j] * v[j]
    return row


@njit(cache=True)
def row_sq_norms(V: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """||V_s||^2 for each row of V (S, d) (:func:`sq_norm`): the trace's grad_norm2 and
    dist2 of a batch of log points, each as it would be alone."""
    out = np.empty(V.shape[0])
    for s in range(V.shape[0]):
        out[s] = sq_norm(V[s])
    return out


@njit(cache=True)
def mean_sq_norm(V: np.ndarray) -> float:  # pragma: no cover - compiled
    """(1/n) sum_i ||V_i||^2 for V (n, d), summed row by row in order: the error-feedback
    metric err2 (and the consensus distance), as both engines compute it."""
    total = 0.0
    for i in range(V.shape[0]):
        total += sq_norm(V[i])
    return total / V.shape[0]


@njit(cache=True)
def worker_mean(V: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out = (1/n) sum_i V_i, summed in worker order as the compiled step sums messages."""
    out[:] = 0.0
    for i in range(V.shape[0]):
        for j in range(V.shape[1]):
            out[j] += V[i, j]
    n = V.shape[0]
    for j in range(V.shape[1]):
        out[j] /= n
