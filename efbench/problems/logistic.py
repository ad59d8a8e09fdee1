"""Distributed l2-regularized logistic regression (SPEC.md section 1).

    f(x)     = (1/n) sum_i f_i(x),   f_i(x) = (1/m) sum_j f_ij(x)
    f_ij(x)  = log(1 + exp(-y_ij <a_ij, x>)) + (l2/2) ||x||^2
    grad f_ij(x) = -y_ij sigmoid(-y_ij <a_ij, x>) a_ij + l2 x

The n m rows a_ij are kept worker by worker (row i m + j), dense as one array (N, d) (so that
every worker's gradient is one vectorized call), in CSR, or both: see :class:`RowProblem`,
which every problem extends with its formulas (:class:`efbench.problems.base.Problem`):
:class:`LogisticLoss` those of the logistic loss (plus a separable term:
:mod:`efbench.problems.nonconvex`), :class:`LogisticProblem` the plain one, and
:class:`QuadraticProblem` the counterexample's quadratics. The loss of a margin and its
derivative are :func:`efbench.core.blocks.loss_and_dloss` (the compiled step's too): no
overflow for x far from 0.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numba
import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.special import expit

from efbench import cache
from efbench.core import blocks
from efbench.problems.base import Term
from efbench.problems.datasets import SPARSE_DENSITY, max_dense_bytes

CACHE_BLOCK_BYTES = 8 << 20  # dense per-worker passes go through the rows in blocks of this size
# Sparse rows are kept dense too up to this size (a9a 32 MB, w8a 119 MB): sampled rows are
# then plain gathers and the dense solvers run; rcv1 (7.6 GB) and real-sim (12 GB) are CSR only.
DENSE_COPY_BYTES = 256 << 20
_NO_CSR = (np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0))
SOLVE_TOL = 1e-10  # x* is solved to ||grad f(x*)|| <= SOLVE_TOL ||grad f(0)||
# A cached x* is used while its gradient is within this factor of what it was solved to: a
# gradient computed again in another order of the sums moves by rounding only.
XSTAR_SLACK = 10.0
# A cached eigenpair (lam, v) is used while ||A^T A v - lam v|| <= EIG_RTOL lam: Lanczos
# stops at a residual of 1e-12 lam (ARPACK's tol), a dense solve at rounding.
EIG_RTOL = 1e-6


def top_eigenpair(A: np.ndarray | sp.spmatrix) -> tuple[float, np.ndarray]:
    """The largest eigenvalue lam of A^T A (= sigma_max(A)^2) and a unit eigenvector v (d,),
    via the smaller Gram matrix or Lanczos; A dense or sparse (then the Gram matrix is a
    sparse product). With fewer rows than columns the Gram matrix is G = A A^T, and
    G u = lam u gives A^T A (A^T u) = lam A^T u: v = A^T u / ||A^T u|| (any unit vector when
    lam = 0). v makes lam checkable in two passes over A: ||A^T A v - lam v|| ~ 0."""
    r, c = A.shape
    if min(r, c) <= 1500:
        G = A.T @ A if c <= r else A @ A.T
        G = G.toarray() if sp.issparse(G) else G
        top = G.shape[0] - 1
        w, U = sla.eigh(G, subset_by_index=[top, top])
        v = U[:, 0]
        if c > r:
            v = np.asarray(A.T @ v).ravel()
            norm = np.linalg.norm(v)
            v = v / norm if norm > 0 else np.eye(1, c).ravel()
        return float(w[0]), v
    op = spla.LinearOperator((c, c), matvec=lambda v: A.T @ (A @ v), dtype=A.dtype)
    w, U = spla.eigsh(op, k=1, which="LA", tol=1e-12)
    return float(w[0]), U[:, 0]


@numba.njit(cache=True)
def _add_scaled_rows(indptr, indices, data, rows, coef, g) -> None:  # pragma: no cover - compiled
    """g[i] += coef[i] a_{rows[i]} over the row's CSR entries, each as c a_j + g_j: the
    values of the dense c a + g, whose other entries are 0 + g_j = g_j (up to the sign of a
    zero)."""
    for i in range(rows.shape[0]):
        for q in range(indptr[rows[i]], indptr[rows[i] + 1]):
            j = indices[q]
            g[i, j] = data[q] * coef[i] + g[i, j]


@dataclass
class RowProblem:
    """What the problems share: the n m data rows a_ij, worker by worker (flat row i m + j),
    their labels y (n, m) in {-1, +1}, and the coefficient l2 of the (l2/2) ||x||^2 every
    f_ij carries. The formulas are the subclasses' (:class:`efbench.problems.base.Problem`).

    ``A`` is given dense, shape (n, m, d), or as a scipy sparse matrix of the n m rows,
    worker by worker, shape (n m, d) (what :func:`efbench.problems.datasets.partition` gives for a
    sparse file). What is kept:

    * dense rows given: the array, ``flat`` its (N, d) view; a CSR copy ``csr`` too when
      fewer than SPARSE_DENSITY of the entries are nonzero (full passes then run on it);
    * sparse rows given: ``csr``, and a dense copy when it takes at most DENSE_COPY_BYTES
      (and the memory limit); without it (rcv1, real-sim) the problem is CSR only: ``A``
      does not exist, ``flat`` is an empty (0, d) array (the compiled blocks' way to say
      "read the CSR arrays") and every method reads the CSR rows: a sampled gradient adds
      c a_r on the row's nonzeros (batch 1), or its minibatch's rows are made dense
      (:meth:`gather`, (n, tau, d)).
    """

    A: np.ndarray = field(repr=False)
    y: np.ndarray
    l2: float
    flat: np.ndarray = field(init=False, repr=False)
    yflat: np.ndarray = field(init=False, repr=False)
    row_norm2: np.ndarray = field(init=False, repr=False)
    row_offsets: np.ndarray = field(init=False, repr=False)  # (n, 1): first flat row of worker i
    csr: sp.csr_matrix | None = field(init=False, repr=False)  # the rows in CSR, or None

    def __post_init__(self) -> None:
        self.y = np.ascontiguousarray(self.y, dtype=np.float64)
        self.yflat = self.y.reshape(-1)
        self.csr = None
        if sp.issparse(self.A):
            self._keep_rows(self.A)
        else:
            self.A = np.ascontiguousarray(self.A, dtype=np.float64)
            self.flat = self.A.reshape(-1, self.A.shape[2])
            # LIBSVM data are often sparse (a9a 11%, w8a 4% nonzeros): full passes (metrics,
            # full gradients) then run on CSR, 3-5x faster; sampled rows stay dense gathers.
            density = np.count_nonzero(self.flat) / max(self.flat.size, 1)
            if density < SPARSE_DENSITY:
                self.csr = sp.csr_matrix(self.flat)
        n, m = self.y.shape
        if self.has_dense:
            self.row_norm2 = np.einsum("nmd,nmd->nm", self.A, self.A)
        else:
            self.row_norm2 = np.asarray(self.csr.multiply(self.csr).sum(axis=1)).reshape(n, m)
        self.row_offsets = (np.arange(n) * m)[:, None]
        self._chunk_rows = max(1, CACHE_BLOCK_BYTES // (8 * self.d))
        if self.csr is not None:
            self._csr_t = self.csr.T.tocsr()
            # unsigned copies for the compiled passes (see efbench.core.blocks.csr_loss_grad)
            self._csr_u = (
                self.csr.indptr.astype(np.uint64),
                self.csr.indices.astype(np.uint64),
                self.csr.data,
            )

    def _keep_rows(self, rows: sp.spmatrix) -> None:
        """Keep sparse rows (N, d): in CSR, canonical (sorted indices, no stored zeros: the
        CSR a dense array of the same rows gives, so both give the same sums), and dense too
        where that fits (see the class docstring)."""
        n, m = self.y.shape
        csr = sp.csr_matrix(rows, dtype=np.float64, copy=True)
        if csr.shape[0] != n * m:
            raise ValueError(f"{csr.shape[0]} rows for labels of shape {self.y.shape} (n m = {n * m})")
        csr.sum_duplicates()
        csr.eliminate_zeros()
        N, d = csr.shape
        dense_bytes = 8.0 * N * d
        if dense_bytes <= min(DENSE_COPY_BYTES, max_dense_bytes()):
            self.flat = csr.toarray()
            self.A = self.flat.reshape(n, m, d)
            if csr.nnz < SPARSE_DENSITY * N * d:
                self.csr = csr
        else:
            del self.A  # CSR only: reading A says why (__getattr__)
            self.flat = np.zeros((0, d))
            self.csr = csr

    def __getattr__(self, name: str):
        # reached only when the attribute is missing: A of a problem kept in CSR only
        if name == "A" and "csr" in self.__dict__:
            n, m = self.y.shape
            raise AttributeError(
                f"{type(self).__name__}.A: the rows are kept in CSR only (problem.csr, {n * m} x "
                f"{self.d}, {self.csr.nnz} nonzeros); the dense (n, m, d) array would take "
                f"{8e-9 * n * m * self.d:.3g} GB"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def has_dense(self) -> bool:
        """Whether the dense rows are kept: ``A`` (n, m, d) and ``flat`` (N, d)."""
        return self.flat.shape[0] > 0

    @property
    def csr_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, values) as the compiled blocks take them; empty: dense rows."""
        return self._csr_u if self.csr is not None else _NO_CSR

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def m(self) -> int:
        return self.y.shape[1]

    @property
    def d(self) -> int:
        return self.flat.shape[1]

    def worker_mean(self, V: np.ndarray) -> np.ndarray:
        """(1/n) sum_i V_i for V (n, d) (:func:`efbench.core.blocks.worker_mean`)."""
        out = np.empty(V.shape[1])
        blocks.worker_mean(V, out)
        return out

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Flat row indices (into the n*m rows) of within-worker sample indices idx (n, tau)."""
        return idx + self.row_offsets

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.csr @ x if self.csr is not None else self.flat @ x

    def _rmatvec(self, c: np.ndarray) -> np.ndarray:
        return self._csr_t @ c if self.csr is not None else self.flat.T @ c

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The rows a_r for flat indices rows (n, tau), dense: shape (n, tau, d) (from CSR
        when the problem keeps no dense rows: the same values)."""
        flat = rows.reshape(-1)
        a = self.flat.take(flat, axis=0) if self.has_dense else self.csr[flat].toarray()
        return a.reshape(*rows.shape, self.d)

    def worker_rows(self, i: int) -> np.ndarray | sp.csr_matrix:
        """Worker i's rows A_i (m, d): dense where the dense rows are kept, else CSR."""
        if self.has_dense:
            return self.A[i]
        return self.csr[i * self.m : (i + 1) * self.m]

    @functools.cached_property
    def data_fingerprint(self) -> str:
        """Hash of the split data (not of l2): the key of everything cached about it. Sparse
        data are hashed in CSR form (w8a: 7 MB instead of the 119 MB dense array)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(np.asarray((self.n, self.m, self.d)).tobytes())
        if self.csr is not None:
            for part in self.csr_arrays:
                h.update(part.tobytes())
        else:
            h.update(self.flat.tobytes())
        h.update(self.y.tobytes())
        return h.hexdigest()


class LogisticLoss(RowProblem):
    """The logistic loss of the rows plus (l2/2) ||x||^2 plus the separable ``term`` R each
    subclass declares (None: none), every f_ij carrying both whole:

        f_ij(x) = log(1 + exp(-y_ij <a_ij, x>)) + (l2/2) ||x||^2 + R(x)

    the formulas :class:`LogisticProblem` (no R) and
    :class:`efbench.problems.nonconvex.NonconvexLogisticProblem` share. The logistic and l2
    parts are computed together (in the compiled step's order), R is added to them.
    """

    term: ClassVar[Term | None]

    # ---- full passes --------------------------------------------------------------
    def loss(self, x: np.ndarray) -> float:
        """f(x) = mean_ij log(1 + exp(-y_ij <a_ij, x>)) + l2/2 ||x||^2 + R(x)."""
        z = self.yflat * self._matvec(x)
        f = float(np.mean(blocks.margin_loss_ufunc(z)) + 0.5 * self.l2 * (x @ x))
        if self.term is not None:
            f += float(self.term.value(x))
        return f

    def grad(self, x: np.ndarray) -> np.ndarray:
        """grad f(x), shape (d,)."""
        return self.loss_grad(x)[1]

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """f(x) and grad f(x) from one pass over the data."""
        f, g = self.loss_grad_many(x[None])
        return float(f[0]), g[0]

    def loss_grad_many(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f and grad f at each point X[s] (S, d): (S,), (S, d). Each point's value is the
        same whatever S (a run's metrics do not depend on the batch it runs in)."""
        N = self.yflat.size
        C = np.ascontiguousarray(X)
        loss = np.empty(C.shape[0])
        GT = np.empty((self.d, C.shape[0]))
        blocks.loss_grad_many(self.flat, *self.csr_arrays, self.yflat, C, loss, GT, numba.get_num_threads())
        G = np.ascontiguousarray(GT.T)
        G /= N
        G += self.l2 * C
        f = loss / N + 0.5 * self.l2 * np.einsum("sd,sd->s", C, C)
        if self.term is not None:  # on X as given: R's sums over j in X's own memory order, as always
            G += self.term.grad(X)
            f = f + self.term.value(X)
        return f, G

    def worker_grads(self, x: np.ndarray, workers: np.ndarray | None = None) -> np.ndarray:
        """grad f_i(x_i) for every worker, shape (n, d); x is (d,) or one point per worker (n, d).
        ``workers`` (k,) restricts it to those workers (the compiled per-worker pass, as the
        fused step's L-SVRG refreshes): x is then (d,) or (k, d) and the result (k, d)."""
        if workers is not None or self.csr is not None:
            ids = np.arange(self.n) if workers is None else np.asarray(workers, dtype=np.int64)
            X = np.atleast_2d(x)
            out = np.empty((ids.size, self.d))
            for t, i in enumerate(ids):
                xt = X[t if X.shape[0] > 1 else 0]
                if self.csr is not None:
                    blocks.csr_worker_grad(*self._csr_u, self.yflat, xt, i, self.m, out[t])
                else:
                    blocks.dense_worker_grad(self.flat, self.yflat, xt, i, self.m, out[t])
        else:
            step = max(1, self._chunk_rows // self.m)  # whole workers per cache-sized block
            out = np.empty((self.n, self.d))
            for lo in range(0, self.n, step):
                A = self.A[lo : lo + step]
                k = A.shape[0]
                xs = x if x.ndim == 1 else x[lo : lo + k, :, None]
                z = (A @ xs) if x.ndim == 1 else (A @ xs)[:, :, 0]
                coef = blocks.margin_coef_ufunc(self.y[lo : lo + k], z) / self.m
                out[lo : lo + k] = (coef[:, None, :] @ A)[:, 0, :]
        out += self.l2 * x
        if self.term is not None:
            out += self.term.grad(x)
        return out

    # ---- sampled rows -------------------------------------------------------------------
    def sample_grads(
        self,
        x: np.ndarray,
        rows: np.ndarray,
        weights: np.ndarray | None = None,
        gathered: np.ndarray | None = None,
    ) -> np.ndarray:
        """Mean over t of w_it * grad f_{r_it}(x_i): minibatch gradients, shape (n, d).

        ``rows`` (n, tau) are flat row indices (see :meth:`rows`), worker i's within its
        block; ``weights`` (n, tau) are importance weights 1/(m p_ij) (None: all ones);
        ``gathered`` are the rows from :meth:`gather` when the caller has them already
        (L-SVRG evaluates two points on the same samples). The l2 term and R are weighted
        by the minibatch's mean weight (each sample's f_ij carries them).
        """
        g = self._logistic_sample_grads(x, rows, weights, gathered)
        if self.term is not None:
            r = self.term.grad(x)
            g += r if weights is None else weights.mean(axis=-1, keepdims=True) * r
        return g

    def _logistic_sample_grads(
        self, x: np.ndarray, rows: np.ndarray, weights: np.ndarray | None, gathered: np.ndarray | None
    ) -> np.ndarray:
        """:meth:`sample_grads` without R."""
        yy = self.yflat.take(rows)
        if rows.shape[-1] == 1:  # the common tau = 1 case, in place on a fresh (n, d) array
            yy = yy[..., 0]
            z = blocks.sample_dots(self.flat, *self.csr_arrays, rows[..., 0], x)
            coef = blocks.margin_coef_ufunc(yy, z)
            # (w l2) x and c a + (w l2) x in the compiled step's order: the same bits
            l2x = self.l2 * x
            if weights is not None:
                w = weights[..., 0]
                coef *= w
                l2x = (w * self.l2)[..., None] * x
            if gathered is None and not self.has_dense:  # CSR only: add c a_r on its nonzeros
                g = np.empty((rows.shape[0], self.d))
                g[:] = l2x
                _add_scaled_rows(*self._csr_u, rows[..., 0], coef, g)
                return g
            a = self.gather(rows) if gathered is None else gathered
            g = a[..., 0, :] * coef[..., None]
            g += l2x
            return g
        a = self.gather(rows) if gathered is None else gathered
        z = np.einsum("...td,...d->...t", a, x)
        coef = blocks.margin_coef_ufunc(yy, z)
        wbar = 1.0
        if weights is not None:
            coef = coef * weights
            wbar = weights.mean(axis=-1, keepdims=True)
        return np.einsum("...t,...td->...d", coef, a) / rows.shape[-1] + self.l2 * wbar * x

    def margins(self, x: np.ndarray) -> np.ndarray:
        """y_r <a_r, x> for every row r, (N,): a dense product where the dense rows are kept
        (as the solvers have always computed it), else from CSR."""
        return self.yflat * (self.flat @ x if self.has_dense else self.csr @ x)

    def data_hessian(self, x: np.ndarray) -> np.ndarray:
        """(1/N) A^T diag(s(1-s)) A, s = sigmoid(y <a, x>): the Hessian of the unregularized
        loss, dense (d, d), from the dense rows where they are kept, else from the nonzeros."""
        s = expit(self.margins(x))
        w = s * (1 - s) / self.yflat.size
        if self.has_dense:
            return (self.flat.T * w) @ self.flat
        return (self._csr_t @ self.csr.multiply(w[:, None])).toarray()

    def hess_vec(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Hessian-vector product: (1/N) A^T diag(s(1-s)) A v + l2 v + diag(r''(x_j)) v."""
        s = expit(self.yflat * self._matvec(x))
        hv = self._rmatvec(s * (1 - s) * self._matvec(v)) / self.yflat.size + self.l2 * v
        return hv if self.term is None else hv + self.term.curvature(x) * v

    # ---- constants ------------------------------------------------------------------
    def regularizer_curvature(self) -> float:
        """The largest eigenvalue of the regularizers' Hessian: l2 (of l2/2 ||x||^2), plus
        max r'' of R."""
        return self.l2 if self.term is None else self.l2 + self.term.max_curvature()

    def strong_convexity(self) -> float:
        """mu: l2 (0 with l2 = 0: convex, not strongly); NaN with a nonconvex R (mu does
        not exist)."""
        return self.l2 if self.term is None or self.term.convex else math.nan

    def sample_smoothness(self) -> np.ndarray:
        """L_ij = ||a_ij||^2 / 4 + the regularizers' curvature, (n, m): the smoothness of
        each sample's loss (what importance sampling weighs rows by)."""
        return self.row_norm2 / 4 + self.regularizer_curvature()

    def constants(self) -> dict[str, float]:
        """SPEC.md constants: L, mu, L_US = max L_ij, L_IS = max Lbar_i, max/mean L_i,
        L_tilde; kappa = L/mu (inf for mu = 0, NaN where mu does not exist); R's parameters."""
        reg = self.regularizer_curvature()
        L_ij = self.sample_smoothness()
        Lbar = L_ij.mean(axis=1)
        L_i = self.worker_smoothness + reg
        L = self.data_smoothness + reg
        mu = self.strong_convexity()
        out = {
            "n": self.n,
            "m": self.m,
            "d": self.d,
            "l2": self.l2,
            "L": L,
            "mu": mu,
            "kappa": L / mu if mu > 0 else (math.inf if mu == 0 else math.nan),
            "L_US": float(L_ij.max()),
            "L_IS": float(Lbar.max()),
            "L_i_max": float(L_i.max()),
            "L_i_mean": float(L_i.mean()),
            "L_tilde": float(np.sqrt(np.mean(L_i**2))),  # EF21's sqrt((1/n) sum_i L_i^2)
            "Lbar_i_min": float(Lbar.min()),
            "Lbar_i_mean": float(Lbar.mean()),
        }
        if self.term is not None:
            out.update(self.term.constants())
        return out

    @property
    def data_smoothness(self) -> float:
        """L of the unregularized loss: lambda_max(A^T A) / (4 n m)."""
        return self.data_top_pair[0]

    @property
    def worker_smoothness(self) -> np.ndarray:
        """L_i of the unregularized local losses: lambda_max(A_i^T A_i) / (4 m), shape (n,)."""
        return self.worker_top_pairs[0]

    @functools.cached_property
    def data_top_pair(self) -> tuple[float, np.ndarray]:
        """(data_smoothness, v): v a unit eigenvector of A^T A for its largest eigenvalue."""
        lam, v = top_eigenpair(self.flat if self.has_dense else self.csr)
        return lam / (4 * self.n * self.m), v

    @functools.cached_property
    def worker_top_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(worker_smoothness, V): V[i] (n, d) a unit eigenvector of A_i^T A_i for its
        largest eigenvalue."""
        pairs = [top_eigenpair(self.worker_rows(i)) for i in range(self.n)]
        return np.array([lam for lam, _ in pairs]) / (4 * self.m), np.array([v for _, v in pairs])

    def definition(self) -> tuple[object, ...]:
        """What f is defined by, as the key of what is cached about it (x*): the kind of
        problem, the split data, l2 and R's parameters."""
        base = (type(self).__qualname__, self.data_fingerprint, float(self.l2))
        return base if self.term is None else (*base, *self.term.definition())


class LogisticProblem(LogisticLoss):
    """Distributed l2-regularized logistic regression, f_ij(x) = log(1 + exp(-y_ij <a_ij, x>))
    + (l2/2) ||x||^2: mu = l2 (convex, not strongly, for l2 = 0). The problem the compiled
    step and FedNL's Hessians are written for."""

    term: ClassVar[None] = None
    compiled_gradients: ClassVar[bool] = True
    logistic_hessian: ClassVar[bool] = True
    config_key: ClassVar[str] = "problem.regularizer"


def solve(problem: LogisticProblem, tol: float = SOLVE_TOL, max_iter: int = 100) -> np.ndarray:
    """x* by damped Newton (dense Cholesky for d <= 2000, else CG on Hessian-vector products),
    until ||grad f(x)|| <= tol * ||grad f(0)||. Strong convexity (l2 > 0) makes it global."""
    d = problem.d
    x = np.zeros(d)
    g0 = np.linalg.norm(problem.grad(x))
    f = problem.loss(x)
    for _ in range(max_iter):
        g = problem.grad(x)
        gn = np.linalg.norm(g)
        if gn <= tol * max(g0, 1e-300):
            return x
        if d <= 2000:
            H = problem.data_hessian(x) + problem.l2 * np.eye(d)
            p = sla.solve(H, -g, assume_a="pos")
        else:
            op = spla.LinearOperator((d, d), matvec=lambda v, x=x: problem.hess_vec(x, v))
            p, _ = spla.cg(op, -g, rtol=min(0.1, gn / g0), maxiter=2000)
        t = 1.0
        while True:
            xn = x + t * p
            fn = problem.loss(xn)
            if fn <= f + 1e-4 * t * (g @ p) or t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12:  # no more decrease in floating point: x is as good as it gets
            return x
        x, f = xn, fn
    return x


def relative_gradient(problem: LogisticProblem, x: np.ndarray) -> float:
    """||grad f(x)|| / ||grad f(0)||: how far x is from stationary, as :func:`solve` measures
    it (one pass over the data for both points: a point's gradient is the same whatever
    the batch it is computed in)."""
    _, G = problem.loss_grad_many(np.stack([np.zeros(problem.d), x]))
    return float(np.linalg.norm(G[1]) / max(np.linalg.norm(G[0]), 1e-300))


def solved_cache(problem: LogisticProblem, x: np.ndarray) -> dict[str, np.ndarray]:
    """What an x* cache file holds: x and ``rel_grad``, the :func:`relative_gradient` the
    solver reached (where floating point stops it short of its tolerance, the check of the
    cached x* must allow that much)."""
    return {"x": x, "rel_grad": np.float64(relative_gradient(problem, x))}


def xstar_check(problem: LogisticProblem, tol: float) -> Callable[[dict[str, np.ndarray]], str | None]:
    """The check of a cached x* (:func:`efbench.cache.load_or_compute`): finite, of shape
    (d,), and stationary to the tolerance it was solved to,
    ||grad f(x*)|| <= XSTAR_SLACK max(tol, rel_grad) ||grad f(0)||. One pass over the data,
    against the solve it saves: the first-order optimality condition grad f(x*) = 0 of the
    convex f (with l2 > 0, mu-strongly convex: ||x - x*|| <= ||grad f(x)|| / mu, Nesterov
    2004, Introductory Lectures on Convex Optimization, section 2.1.3), so a wrong x* of the
    right shape (zeros) is caught."""

    def wrong(z: dict[str, np.ndarray]) -> str | None:
        x, rel = z.get("x"), z.get("rel_grad")
        if x is None or rel is None or x.shape != (problem.d,) or rel.shape != () or not np.isfinite(x).all():
            return f"x* is not a finite vector of {problem.d} entries with its gradient norm"
        bound = XSTAR_SLACK * max(tol, float(rel))
        now = relative_gradient(problem, x)
        if not now <= bound:
            return f"||grad f(x*)|| = {now:.2e} ||grad f(0)||, above the {bound:.1e} it was solved to"
        return None

    return wrong


def load_spectra(problem: LogisticLoss, cache_dir: str | Path | None) -> None:
    """Fill the data-only eigenvalue constants of ``problem`` (:attr:`LogisticLoss.data_top_pair`,
    :attr:`LogisticLoss.worker_top_pairs`) from the verified cache
    ``<cache_dir>/spectra-<data fingerprint>.npz``, or compute and cache them: on w8a they cost
    a second per run otherwise. A cached pair is used only if it is a top eigenpair of the
    data: :func:`spectra_check`."""
    if cache_dir is None:
        return
    path = Path(cache_dir) / f"spectra-{problem.data_fingerprint}.npz"
    key = cache.fingerprint("spectra", problem.data_fingerprint)

    def compute() -> dict[str, np.ndarray]:
        (L, v), (L_i, V_i) = problem.data_top_pair, problem.worker_top_pairs
        return {"L": np.float64(L), "v": v, "L_i": L_i, "V_i": V_i}

    z = cache.load_or_compute(path, "spectra", key, compute, functools.partial(spectra_check, problem))
    problem.__dict__.update(data_top_pair=(float(z["L"]), z["v"]), worker_top_pairs=(z["L_i"], z["V_i"]))


def spectra_check(problem: LogisticLoss, z: dict[str, np.ndarray]) -> str | None:
    """What is wrong with cached spectra ``z`` of ``problem``, or None. Each L = lam / (4 rows)
    must come with a unit vector v, an eigenvector for lam: ||A^T A v - lam v|| <= EIG_RTOL lam
    (a unit vector's residual bounds the distance from lam to the spectrum of the symmetric
    A^T A: Parlett 1998, The Symmetric Eigenvalue Problem, section 4.5), and
    lam >= max_r ||a_r||^2 = max_r e_r^T A A^T e_r (a lower bound on lambda_max).
    Two passes over the data, against the eigen-solves it saves."""
    n, m, d = problem.n, problem.m, problem.d
    for name, shape in (("L", ()), ("v", (d,)), ("L_i", (n,)), ("V_i", (n, d))):
        if name not in z or z[name].shape != shape or not np.isfinite(z[name]).all():
            return f"{name} is missing, not finite or not of shape {shape}"
    v = z["v"]
    checks = [
        ("L", 4 * n * m * float(z["L"]), v, problem._rmatvec(problem._matvec(v)), problem.row_norm2.max())
    ]
    for i in range(n):
        rows, v = problem.worker_rows(i), z["V_i"][i]
        checks.append(
            (f"L_i[{i}]", 4 * m * float(z["L_i"][i]), v, rows.T @ (rows @ v), problem.row_norm2[i].max())
        )
    for name, lam, v, gram_v, row_max in checks:
        residual = np.linalg.norm(gram_v - lam * v)
        unit = abs(np.linalg.norm(v) - 1) <= EIG_RTOL
        if not (unit and residual <= EIG_RTOL * lam and lam >= row_max * (1 - EIG_RTOL)):
            return f"{name} is not lambda_max of its rows' Gram matrix / (4 rows) (residual {residual:.2e})"
    return None


def optimum(
    problem: LogisticProblem, cache_dir: str | Path | None, tol: float = SOLVE_TOL
) -> tuple[np.ndarray, float]:
    """(x*, f*) solved once per data partition and l2 (:func:`solve`), cached on disk under
    ``cache_dir`` as ``xstar-<data fingerprint>-<l2>.npz`` and verified before use
    (:func:`xstar_check`)."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"xstar-{problem.data_fingerprint}-{problem.l2!r}.npz"
    key = cache.fingerprint("xstar", *problem.definition(), "damped Newton", tol)
    z = cache.load_or_compute(
        path, "xstar", key, lambda: solved_cache(problem, solve(problem, tol)), xstar_check(problem, tol)
    )
    return z["x"], problem.loss(z["x"])


class QuadraticProblem(RowProblem):
    """One quadratic per worker, f_i(x) = <a_i, x>^2 + (l2/2) ||x||^2 (m = 1 "sample" each):
    the setting of the counterexamples for compressed GD (Beznosikov et al. 2020). x* = 0;
    grad^2 f_i = 2 a_i a_i^T + l2 I, so f_i is (2 ||a_i||^2 + l2)-smooth.

    ``A`` is (n, 1, d) holding a_i; labels are unused.
    """

    compiled_gradients: ClassVar[bool] = False
    logistic_hessian: ClassVar[bool] = False
    config_key: ClassVar[str] = "dataset"

    @classmethod
    def counterexample(cls) -> QuadraticProblem:
        """n = d = 3, a_1 = (-5, 3, 3) and its permutations, l2 = 1. At x = t (1, 1, 1), t > 0,
        grad f_i(x) = t (2 <a_i, 1> a_i + 1) has its largest entry, -9t, at coordinate i, so
        Top1 compressed GD moves x to t (1 + 3 gamma) (1, 1, 1): it diverges for every
        gamma > 0, while f is 1-strongly convex with minimizer 0 and every grad f_i(0) = 0."""
        a = np.full((3, 3), 3.0)
        np.fill_diagonal(a, -5.0)
        return cls(a[:, None, :], np.ones((3, 1)), 1.0)

    def loss(self, x: np.ndarray) -> float:
        """f(x) = (1/n) sum_i <a_i, x>^2 + (l2/2) ||x||^2."""
        z = self.A[:, 0, :] @ x
        return float(np.mean(z**2) + 0.5 * self.l2 * (x @ x))

    def grad(self, x: np.ndarray) -> np.ndarray:
        """grad f(x) = (1/n) sum_i grad f_i(x)."""
        return self.worker_grads(x).mean(axis=0)

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        return self.loss(x), self.grad(x)

    def loss_grad_many(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.loss_grad(x) for x in X]
        return np.array([f for f, _ in pairs]), np.array([g for _, g in pairs])

    def worker_grads(self, x: np.ndarray, workers: np.ndarray | None = None) -> np.ndarray:
        """grad f_i(x_i) = 2 <a_i, x_i> a_i + l2 x_i."""
        a = self.A[:, 0, :] if workers is None else self.A[workers, 0, :]
        z = a @ x if x.ndim == 1 else np.einsum("nd,nd->n", a, x)
        return 2.0 * z[:, None] * a + self.l2 * x

    def sample_grads(
        self,
        x: np.ndarray,
        rows: np.ndarray,
        weights: np.ndarray | None = None,
        gathered: np.ndarray | None = None,
    ) -> np.ndarray:
        """m = 1: the only sample is the worker's whole function (its weight 1/(m p) is 1)."""
        return self.worker_grads(x)

    def hess_vec(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """grad^2 f v = (2/n) sum_i a_i <a_i, v> + l2 v."""
        a = self.A[:, 0, :]
        return 2.0 * a.T @ (a @ v) / self.n + self.l2 * v

    @property
    def worker_smoothness(self) -> np.ndarray:
        """2 ||a_i||^2: the smoothness of <a_i, x>^2, (n,)."""
        a = self.A[:, 0, :]
        return 2.0 * np.sum(a * a, axis=1)

    def sample_smoothness(self) -> np.ndarray:
        """L_i1 = L_i = 2 ||a_i||^2 + l2, (n, 1)."""
        return (self.worker_smoothness + self.l2)[:, None]

    def constants(self) -> dict[str, float]:
        """L, mu the extreme eigenvalues of grad^2 f = (2/n) sum_i a_i a_i^T + l2 I; L_i = 2 ||a_i||^2
        + l2 (= L_ij = Lbar_i: m = 1)."""
        a = self.A[:, 0, :]
        H = 2.0 * a.T @ a / self.n + self.l2 * np.eye(self.d)
        ev = np.linalg.eigvalsh(H)
        L_i = self.worker_smoothness + self.l2
        return {
            "n": self.n,
            "m": self.m,
            "d": self.d,
            "l2": self.l2,
            "L": float(ev[-1]),
            "mu": float(ev[0]),
            "kappa": float(ev[-1] / ev[0]),
            "L_US": float(L_i.max()),
            "L_IS": float(L_i.max()),
            "L_i_max": float(L_i.max()),
            "L_i_mean": float(L_i.mean()),
            "L_tilde": float(np.sqrt(np.mean(L_i**2))),  # EF21's sqrt((1/n) sum_i L_i^2)
            "Lbar_i_min": float(L_i.min()),
            "Lbar_i_mean": float(L_i.mean()),
        }
