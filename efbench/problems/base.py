"""What the methods and the engine read of a problem: the :class:`Problem` protocol (SPEC.md section 1).

    f(x) = (1/n) sum_i f_i(x),   f_i(x) = (1/m) sum_j f_ij(x)

over n workers of m samples each, x in R^d. The problems
(:class:`efbench.problems.logistic.LogisticProblem`,
:class:`efbench.problems.nonconvex.NonconvexLogisticProblem`,
:class:`efbench.problems.logistic.QuadraticProblem`) are siblings that satisfy it; a method
that needs more than these formulas (the compiled step, FedNL's Hessians) asks the problem
whether it has it (its capability class variables), never for its class.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp


@runtime_checkable
class Problem(Protocol):
    """f = (1/n) sum_i f_i, f_i = (1/m) sum_j f_ij, on n m data rows a_ij kept worker by worker
    (flat row r = i m + j), dense, in CSR or both."""

    # capabilities: what a method may assume beyond the formulas below
    compiled_gradients: ClassVar[bool]
    """Whether f_ij is exactly the l2-regularized logistic loss log(1 + exp(-y_ij <a_ij, x>)) +
    (l2/2) ||x||^2 of the rows (``flat``, ``yflat``, ``csr_arrays``) and ``l2``: what the compiled
    step (:mod:`efbench.engine.fused`) computes in place of :meth:`sample_grads`."""
    logistic_hessian: ClassVar[bool]
    """Whether grad^2 f_i(x) = (1/m) A_i^T diag(s_ij (1 - s_ij)) A_i + l2 I, s_ij =
    sigmoid(<a_ij, x>), from the rows and ``l2``: what FedNL computes its Hessians by."""
    config_key: ClassVar[str]
    """The config key whose value makes this kind of problem: what a refusal of it names."""

    l2: float
    """The coefficient of the (l2/2) ||x||^2 every f_ij carries."""
    flat: np.ndarray
    """The rows a_r, (n m, d), or (0, d) when only ``csr`` keeps them."""
    yflat: np.ndarray
    """The labels y_r in {-1, +1}, (n m,)."""
    csr: sp.csr_matrix | None
    """The rows in CSR, or None when only ``flat`` keeps them."""

    @property
    def n(self) -> int:
        """Workers."""

    @property
    def m(self) -> int:
        """Samples per worker."""

    @property
    def d(self) -> int:
        """Dimension of x."""

    @property
    def has_dense(self) -> bool:
        """Whether ``flat`` holds the rows."""

    @property
    def csr_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, values) of ``csr`` as the compiled blocks take them; empty: dense rows."""

    @property
    def worker_smoothness(self) -> np.ndarray:
        """L_i of f_i without its regularizers ((l2/2) ||x||^2 and any separable term), (n,): the
        smoothness of worker i's data term."""

    def loss(self, x: np.ndarray) -> float:
        """f(x)."""

    def grad(self, x: np.ndarray) -> np.ndarray:
        """grad f(x), (d,)."""

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(f(x), grad f(x))."""

    def loss_grad_many(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f(X[s]) and grad f(X[s]) for points X (S, d): (S,), (S, d); each point's values are
        the same whatever S (a run's metrics do not depend on the batch it runs in)."""

    def worker_grads(self, x: np.ndarray, workers: np.ndarray | None = None) -> np.ndarray:
        """grad f_i(x_i) for every worker i, (n, d); x is (d,) or one point per worker (n, d).
        ``workers`` (k,) restricts it to those workers: x is then (d,) or (k, d), the result (k, d)."""

    def sample_grads(
        self,
        x: np.ndarray,
        rows: np.ndarray,
        weights: np.ndarray | None = None,
        gathered: np.ndarray | None = None,
    ) -> np.ndarray:
        """(1/tau) sum_t w_it grad f_{r_it}(x_i), (n, d): minibatch gradients at flat rows
        ``rows`` (n, tau), importance weights w = 1/(m p_ij) (None: all ones), and the rows from
        :meth:`gather` when the caller has them already."""

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The rows a_r at flat indices ``rows`` (n, tau), dense: (n, tau, d)."""

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Flat row indices i m + j of the within-worker sample indices j = idx (n, tau)."""

    def worker_mean(self, V: np.ndarray) -> np.ndarray:
        """(1/n) sum_i V_i for V (n, d)."""

    def hess_vec(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """grad^2 f(x) v, (d,)."""

    def sample_smoothness(self) -> np.ndarray:
        """L_ij, (n, m): f_ij is L_ij-smooth (what importance sampling weighs rows by)."""

    def constants(self) -> dict[str, float]:
        """SPEC.md constants: n, m, d, l2, L, mu, kappa = L/mu, L_US = max L_ij, L_IS = max Lbar_i,
        max and mean L_i, L_tilde = sqrt((1/n) sum_i L_i^2), min and mean Lbar_i; mu = NaN where
        it does not exist."""


class Term(Protocol):
    """A separable term R(x) = sum_j r(x_j) that every f_ij of a logistic problem carries whole
    (:class:`efbench.problems.logistic.LogisticLoss`), besides its (l2/2) ||x||^2."""

    convex: ClassVar[bool]
    """Whether r is convex (else f has no mu)."""

    def value(self, X: np.ndarray) -> np.ndarray:
        """R(X[..., :]) for each point."""

    def grad(self, X: np.ndarray) -> np.ndarray:
        """r'(x_j), elementwise."""

    def curvature(self, X: np.ndarray) -> np.ndarray:
        """r''(x_j), elementwise: the diagonal of grad^2 R."""

    def max_curvature(self) -> float:
        """max_t r''(t): R is that smooth."""

    def constants(self) -> dict[str, float]:
        """The term's parameters, among the problem's constants."""

    def definition(self) -> tuple[float, ...]:
        """The term's parameters, in the key of what is cached about the problem."""
