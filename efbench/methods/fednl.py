"""FedNL, Federated Newton Learn (Safaryan, Islamov, Qian & Richtarik, "FedNL: Making
Newton-Type Methods Applicable to Federated Learning", ICML 2022), Algorithm 1, on the
l2-regularized logistic loss.

Each worker i keeps a Hessian estimate H_i^k (the server keeps their mean H^k); round k:

    worker i:  sends grad f_i(x^k),  S_i^k = C(grad^2 f_i(x^k) - H_i^k),
               l_i^k = ||H_i^k - grad^2 f_i(x^k)||_F;   H_i^{k+1} = H_i^k + alpha S_i^k
    server:    Option 1:  x^{k+1} = x^k - [H^k]_mu^{-1} grad f(x^k)
               Option 2:  x^{k+1} = x^k - (H^k + l^k I)^{-1} grad f(x^k)
               H^{k+1} = H^k + alpha S^k,   S^k = (1/n) sum_i S_i^k,  l^k = (1/n) sum_i l_i^k

[A]_mu is the projection onto {M = M^T : M >= mu I} in the Frobenius norm: the eigenvalues
of A clipped from below at mu = l2 (the strong convexity of f). H_i^0 = grad^2 f_i(x^0), the
paper's choice. The step uses H^k, learned up to the previous round: with the identity
compressor (alpha = 1) FedNL is Newton's method with a one-round-old Hessian,
x^{k+1} = x^k - [grad^2 f(x^{k-1})]_mu^{-1} grad f(x^k) (x^{-1} = x^0).

Matrix compressors C (``hessian_compressor``), contractive in the Frobenius norm,
||C(M) - M||_F^2 <= (1 - delta) ||M||_F^2 for symmetric M:

* ``identity``: delta = 1.
* ``topk``: the K entries of largest magnitude among the d(d+1)/2 of the upper triangle
  (ties taken lowest index first, as :class:`efbench.core.compressors.TopK`), mirrored.
  delta = K/d^2: the Frobenius norm counts an off-diagonal entry twice, so with s the
  smallest kept square, kept weight W >= K entries of squares >= s and dropped weight
  d^2 - W of squares <= s, the dropped share is at most (d^2 - W)/d^2 <= 1 - K/d^2 (tight:
  K diagonal entries kept, all others of the same magnitude). The vector bound
  2K/(d(d+1)) of the authors' code does not hold for the Frobenius norm.
* ``rankr``: sum of the R eigenpairs of largest |lambda| (the best rank-R approximation of
  a symmetric matrix, Eckart-Young), delta = R/d.

alpha (Hessian learning rate): the paper gives two choices for contractive compressors,
alpha = 1 - sqrt(1 - delta) (``alpha: null``) and alpha = 1 (the default, with Rank-1: the
setting of the paper's experiments); any alpha in (0, 1] is accepted.

FedNL is a local method (the paper's rates hold near x*; FedNL-LS and FedNL-CR globalize
it and are not implemented): from x^0 = 0 with mu = l2 = 1e-4 L, Top-d with alpha = 1
diverges on a9a and phishing (an indefinite H^k clipped at a tiny mu gives a huge step),
while Rank-1 with alpha = 1 converges (a9a: relative gap 1e-7 in 30 rounds, 1e-14 in 60).

Bits per worker and round (F = ``bits.float_bits``, N = d(d+1)/2, sparse rule of
:func:`efbench.core.compressors.sparse_bits` over the N upper-triangle positions):

    gradient  F d (dense)
    S_i^k     identity F N;  topk sparse_bits(K, N) = K F + min(K ceil(log2 N), N);
              rankr R (d + 1) F (R eigenvalues and R unit eigenvectors)
    l_i^k     F under Option 2; Option 1 does not use it, so it is not sent
    round 0   F d + F N: the gradient and the dense upper triangle of H_i^0 = grad^2 f_i(x^0);
              S_i^0 = C(0) = 0 and l_i^0 = 0 are known to the server without being sent.

The server broadcasts x^{k+1} (F d). Oracle calls: m per worker and round (the local
gradient and Hessian come from one pass over the local data; a Hessian is not counted
separately). The vector compressor group is not used (gradients travel dense, as in the
paper): the setting is ignored, as for ``gd``. FedNL takes unit Newton steps: the method
prescribes the stepsize 1 (the stepsize group is ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import expit

from efbench.core import blocks
from efbench.core.compressors import Identity, TopK
from efbench.core.rules import PROB_OR_NULL, Bound, Choice, Int, ruled
from efbench.core.stepsize import Schedule
from efbench.errors import ConfigError, check_choice
from efbench.methods.base import Method, Round, State
from efbench.problems.datasets import MAX_DENSE_ENV, max_dense_bytes
from efbench.problems.logistic import LogisticProblem

HESSIAN_COMPRESSORS = ("identity", "topk", "rankr")
# (n, d, d) arrays a round holds: H_i, the new Hessians, their difference and its compression
HESSIAN_COPIES = 4
OPTIONS = (1, 2)


def worker_hessians(problem: LogisticProblem, x: np.ndarray) -> np.ndarray:
    """grad^2 f_i(x) = (1/m) A_i^T diag(s_i (1 - s_i)) A_i + l2 I for every worker, (n, d, d),
    s_ij = sigmoid(<a_ij, x>) (the labels drop out: s(1 - s) is even), as B_i^T B_i with
    B_i = diag(sqrt(s_i (1 - s_i) / m)) A_i for dense rows, summed over each row's nonzero pairs
    for CSR rows (:func:`efbench.core.blocks.csr_worker_grams`); symmetrized, so that its upper
    triangle is the matrix."""
    n, m, d = problem.n, problem.m, problem.d
    z = problem.flat @ x if problem.csr is None else problem.csr @ x
    w = expit(z) * expit(-z) / m  # s (1 - s) without cancellation for large |z|
    if problem.csr is not None:  # sparse rows (a9a, w8a): the pairs of each row's nonzeros only
        H = np.zeros((n, d, d))
        blocks.csr_worker_grams(*problem.csr_arrays, w, m, H)
    else:
        H = np.empty((n, d, d))
        B = problem.flat * np.sqrt(w)[:, None]
        for i in range(n):  # one BLAS product per worker: faster than a batched matmul
            H[i] = B[i * m : (i + 1) * m].T @ B[i * m : (i + 1) * m]
    H = 0.5 * (H + H.transpose(0, 2, 1))
    H[:, np.arange(d), np.arange(d)] += problem.l2
    return H


def _symmetric(V: np.ndarray, d: int) -> np.ndarray:
    """The symmetric matrices (n, d, d) whose upper triangles (row-major) are the rows of V."""
    iu = np.triu_indices(d)
    M = np.zeros((V.shape[0], d, d))
    M[:, iu[0], iu[1]] = V
    M[:, iu[1], iu[0]] = V
    return M


@dataclass(kw_only=True)
class FedNLState(State):
    """FedNL's Hessian estimates and its learning rate."""

    H_i: np.ndarray  # (n, d, d) H_i^k, worker i's estimate
    H: np.ndarray  # (d, d) H^k = (1/n) sum_i H_i^k, kept by the server
    alpha: float  # the Hessian learning rate
    delta: float  # the matrix compressor's contraction constant
    first: bool  # round 0 (H_i^0 sent whole) is still to come


@dataclass(kw_only=True)
class FedNL(Method):
    """FedNL (Safaryan et al., ICML 2022), Algorithm 1 with Option 1 (projection [H^k]_mu) or
    Option 2 (H^k + l^k I); see the module docstring for the rule, delta, alpha and bits.

    ``hessian_compressor``: identity | topk (``hessian_k`` entries of the upper triangle,
    null: d) | rankr (``rank`` eigenpairs; Rank-1 by default, as in the paper's experiments).
    ``alpha``: 1 by default, null = 1 - sqrt(1 - delta).
    """

    labels: ClassVar[dict[str, str]] = {"fednl": "FedNL"}

    hessian_compressor: str = ruled("rankr", Choice("identity", "topk", "rankr"))
    # at most the d(d+1)/2 entries of a Hessian's upper triangle
    hessian_k: int | None = ruled(
        None, Int(1, null=True, by_d=Bound("K", lambda d: d * (d + 1) // 2, "d(d+1)/2"))
    )
    rank: int = ruled(1, Int(1, by_d=Bound("R", lambda d: d, "d")))  # eigenpairs of a d x d Hessian
    option: int = ruled(1, Choice(1, 2))
    alpha: float | None = ruled(1.0, PROB_OR_NULL)
    compressed: ClassVar[bool] = False  # gradients are sent dense: the compressor group is ignored
    metrics: ClassVar[tuple[str, ...]] = ("hess_err",)

    def __post_init__(self) -> None:
        index_bits = self.compressor.index_bits  # the sparse Hessian messages follow bits.index_bits
        super().__post_init__()
        self.compressor = Identity(float_bits=self.compressor.float_bits, index_bits=index_bits)
        check_choice("method.hessian_compressor", self.hessian_compressor, HESSIAN_COMPRESSORS)
        if isinstance(self.option, bool) or self.option not in OPTIONS:
            raise ConfigError("method.option", f"got {self.option!r}", OPTIONS)
        if self.hessian_k is not None:
            _check_int("method.hessian_k", self.hessian_k)
        _check_int("method.rank", self.rank)
        number = isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool)
        if self.alpha is not None and not (number and 0.0 < self.alpha <= 1.0):
            raise ConfigError("method.alpha", f"got {self.alpha!r}", "a number in (0, 1] or null")

    def schedule(self, default, constants):
        return Schedule(1.0, "Newton step (1)")

    def matrix_delta(self, d: int) -> float:
        """delta of the matrix compressor on symmetric d x d matrices (Frobenius norm)."""
        if self.hessian_compressor == "topk":
            return self._k(d) / d**2
        if self.hessian_compressor == "rankr":
            return self.rank / d
        return 1.0

    def _k(self, d: int) -> int:
        return d if self.hessian_k is None else int(self.hessian_k)

    def init(self, problem, x0, rng):
        if not problem.logistic_hessian:  # worker_hessians are the l2-regularized logistic loss's
            raise ConfigError(
                problem.config_key,
                f"FedNL's Hessians are the logistic loss's, not a {type(problem).__name__}'s",
            )
        if not problem.l2 > 0:  # mu = l2: Option 1 projects onto M >= mu I, the analysis needs mu > 0
            raise ConfigError("problem.l2", f"FedNL needs a strongly convex f, got l2 = {problem.l2}", "> 0")
        d, N = problem.d, problem.d * (problem.d + 1) // 2
        need, limit = HESSIAN_COPIES * 8.0 * problem.n * d * d, max_dense_bytes()
        if need > limit:  # rcv1 (d = 47236): 18 GB a matrix
            raise ConfigError(
                "method",
                f"fednl keeps {HESSIAN_COPIES} dense d x d matrices per worker (n = {problem.n}, "
                f"d = {d}): {need / 1e9:.3g} GB, over the {limit / 1e9:g} GB limit (${MAX_DENSE_ENV})",
            )
        if self.hessian_compressor == "topk" and self._k(d) > N:
            raise ConfigError(
                "method.hessian_k", f"K={self._k(d)} is out of range for d={d}", f"1 <= K <= d(d+1)/2 = {N}"
            )
        if self.hessian_compressor == "rankr" and self.rank > d:
            raise ConfigError("method.rank", f"R={self.rank} is out of range for d={d}", f"1 <= R <= {d}")
        state = super().init(problem, x0, rng)
        delta = self.matrix_delta(d)
        H_i = worker_hessians(problem, x0)
        return state.extend(
            FedNLState,
            H_i=H_i,
            H=H_i.mean(axis=0),
            alpha=1.0 - math.sqrt(1.0 - delta) if self.alpha is None else float(self.alpha),
            delta=delta,
            first=True,
        )

    def info(self, state):
        return {"alpha": state.alpha, "delta": state.delta}

    def measure(self, problem, state, fstar):
        """hess_err = (1/n) sum_i ||H_i^k - grad^2 f_i(x^k)||_F^2."""
        D = state.H_i - worker_hessians(problem, state.x)
        return {"hess_err": float(np.einsum("nij,nij->", D, D)) / problem.n}

    def compress(self, D: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """C(D_i) for symmetric D (n, d, d): the decoded matrices, each message's bits and floats."""
        n, d, _ = D.shape
        F = self.compressor.float_bits
        if self.hessian_compressor == "rankr":
            lam_r, U_r = top_eigenpairs(D, self.rank)
            S = np.matmul(U_r * lam_r[:, None, :], U_r.transpose(0, 2, 1))
            S = 0.5 * (S + S.transpose(0, 2, 1))  # exactly symmetric, as H_i must stay
            count = self.rank * (d + 1)
            return S, np.full(n, F * count, dtype=np.int64), np.full(n, count)
        iu = np.triu_indices(d)
        V = D[:, iu[0], iu[1]]
        kw = {"float_bits": F, "index_bits": self.compressor.index_bits}
        comp = TopK(k=self._k(d), **kw) if self.hessian_compressor == "topk" else Identity(**kw)
        msg = comp(V, rng)
        return _symmetric(msg.values, d), msg.bits, msg.nnz

    def step(self, problem, state, gamma, rng):
        n, d = problem.n, problem.d
        F = self.compressor.float_bits
        grads = problem.worker_grads(state.x)
        D = worker_hessians(problem, state.x) - state.H_i
        l_i = np.sqrt(np.einsum("nij,nij->n", D, D))
        S, s_bits, s_nnz = self.compress(D, rng)
        if state.first:  # H_i^0 sent whole; S_i^0 = C(0) and l_i^0 = 0 go unsent
            state.first = False
            N = d * (d + 1) // 2
            bits, nnz = np.full(n, F * (d + N), dtype=np.int64), np.full(n, d + N)
        else:
            extra = 1 if self.option == 2 else 0  # l_i^k, one float, used by Option 2 only
            bits, nnz = s_bits + F * (d + extra), s_nnz + d + extra
        lam, U = np.linalg.eigh(state.H)
        if self.option == 1:
            lam = np.maximum(lam, problem.l2)  # [H^k]_mu, mu = l2
        else:
            lam = lam + l_i.mean()
        g = problem.worker_mean(grads)
        state.x -= gamma * (U @ ((U.T @ g) / lam))
        a = state.alpha
        state.H_i += a * S
        state.H += a * S.mean(axis=0)
        return state, Round(bits, self.downlink(d), nnz, problem.m)


# the dimension from which the R << d top eigenpairs are found by Lanczos (ARPACK) instead of
# a full eigendecomposition: on w8a (d = 300) Rank-1's full eigh of each worker's d x d
# difference was most of a round
LANCZOS_MIN_D = 64


def top_eigenpairs(D: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``rank`` eigenpairs of largest |lambda| of each symmetric D_i (n, d, d): (n, R)
    eigenvalues and (n, d, R) unit eigenvectors. A full eigendecomposition (ties kept in
    ascending order) for small d or large R; for d >= LANCZOS_MIN_D and R <= d/8, implicitly
    restarted Lanczos (ARPACK's eigsh, converged to machine precision, from a fixed start),
    which the rank-R matrix U diag(lambda) U^T does not tell apart beyond rounding. A zero
    D_i has zero pairs."""
    n, d, _ = D.shape
    if d < LANCZOS_MIN_D or rank > d // 8:
        lam, U = np.linalg.eigh(D)
        top = np.argsort(-np.abs(lam), axis=1, kind="stable")[:, :rank]
        return np.take_along_axis(lam, top, axis=1), np.take_along_axis(U, top[:, None, :], axis=2)
    from scipy.sparse.linalg import eigsh

    lam_r, U_r = np.zeros((n, rank)), np.zeros((n, d, rank))
    U_r[:, 0, :] = 1.0  # a zero D_i: any unit vectors times zero eigenvalues
    start = np.full(d, 1.0 / np.sqrt(d))
    for i in range(n):
        if np.any(D[i]):
            w, V = eigsh(D[i], k=rank, which="LM", tol=0.0, v0=start)
            order = np.argsort(-np.abs(w), kind="stable")
            lam_r[i], U_r[i] = w[order], V[:, order]
    return lam_r, U_r


def _check_int(key: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {v!r}")
