"""Logistic problems without strong convexity: the nonconvex regularizer of the EF21 and
3PC experiments, and the plain logistic loss (l2 = 0).

Nonconvex (Richtarik, Sokolov & Fatkhullin 2021, EF21, Section 5; Richtarik et al. 2022,
3PC, with lambda = 0.1):

    f(x) = (1/N) sum_ij log(1 + exp(-y_ij <a_ij, x>)) + lam sum_j r(x_j),  r(t) = t^2 / (1 + t^2)
    r'(t) = 2t / (1 + t^2)^2,   r''(t) = (2 - 6 t^2) / (1 + t^2)^3  in  [-1/2, 2]

r'' is 2 at t = 0 and -1/2 at t^2 = 1, so the regularizer is (2 lam)-smooth and not
convex: L = L_data + 2 lam (attained at x = 0, where the logistic curvature is largest
too), L_i and L_ij likewise; mu does not exist and the constants say so (mu = kappa =
NaN). f* and x* are unknown: the runner records f* = NaN, so a run's gap, rel_gap and dist2
are NaN and ``grad_norm2`` (the EF21 papers' metric) measures progress.

l2 = 0: f is convex, not strongly (mu = 0). Its Hessian is singular wherever a feature is
never used (a1a) and a minimizer may not exist (separable data): :func:`optimum_without_mu`
says what it found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from efbench import cache
from efbench.problems.logistic import SOLVE_TOL, LogisticLoss, LogisticProblem, solved_cache, xstar_check


@dataclass(frozen=True)
class NonconvexTerm:
    """R(x) = lam sum_j r(x_j), r(t) = t^2 / (1 + t^2): not convex, (2 lam)-smooth."""

    lam: float
    convex: ClassVar[bool] = False

    def value(self, X: np.ndarray) -> np.ndarray:
        """lam sum_j r(x_j) for each point X[..., :]."""
        X2 = X * X
        return self.lam * np.sum(X2 / (1.0 + X2), axis=-1)

    def grad(self, X: np.ndarray) -> np.ndarray:
        """lam r'(x_j) = 2 lam x_j / (1 + x_j^2)^2, elementwise."""
        return 2.0 * self.lam * X / (1.0 + X * X) ** 2

    def curvature(self, X: np.ndarray) -> np.ndarray:
        """lam r''(x_j) = lam (2 - 6 x_j^2) / (1 + x_j^2)^3: R's diagonal Hessian."""
        X2 = X * X
        return self.lam * (2.0 - 6.0 * X2) / (1.0 + X2) ** 3

    def max_curvature(self) -> float:
        """2 lam: lam r''(t) is largest at t = 0, so L = L_data + l2 + 2 lam (L_i, L_ij likewise)."""
        return 2.0 * self.lam

    def constants(self) -> dict[str, float]:
        """lam, as ``lam_nc`` (its config key's name)."""
        return {"lam_nc": self.lam}

    def definition(self) -> tuple[float, ...]:
        """(lam,)."""
        return (float(self.lam),)


@dataclass
class NonconvexLogisticProblem(LogisticLoss):
    """The logistic loss (plus l2/2 ||x||^2, 0 in the papers) plus R(x) = lam sum_j x_j^2/(1 + x_j^2)
    (:class:`NonconvexTerm`): every method that reads the problem's values, gradients and
    Hessian products runs on it; the compiled step and FedNL, written for the plain logistic
    loss's gradients and Hessians, do not."""

    lam: float = 0.1
    compiled_gradients: ClassVar[bool] = False
    logistic_hessian: ClassVar[bool] = False
    config_key: ClassVar[str] = "problem.regularizer"

    @property
    def term(self) -> NonconvexTerm:
        """R with this problem's lam."""
        return NonconvexTerm(self.lam)


def optimum_without_mu(
    problem: LogisticProblem, cache_dir: str | Path | None, tol: float = SOLVE_TOL, max_iter: int = 200
) -> tuple[np.ndarray, float, str]:
    """(x*, f*, what they are) for l2 = 0, cached on disk under ``cache_dir`` as
    ``xstar-l2zero-<data fingerprint>.npz`` and verified before use
    (:func:`efbench.problems.logistic.xstar_check`: stationary to the tolerance the solver reached).

    Damped Newton from 0 with the pseudo-inverse of the singular Hessian (eigenvalues below
    1e-12 of the largest dropped; CG beyond d = 2000), until ||grad f|| <= tol ||grad f(0)||.
    If the point found has a positive margin y <a, x> on every nonzero row, the data are
    separable: f(t x) -> (share of zero rows) log 2 as t -> infinity, which is f* exactly,
    and no x* exists (NaN). Otherwise f* = f at the point found, approximate to the
    gradient it reached (a minimizer may still fail to exist, the data being separable
    along some directions only: then x* is only the solver's last point)."""
    path = None if cache_dir is None else Path(cache_dir) / f"xstar-l2zero-{problem.data_fingerprint}.npz"
    key = cache.fingerprint("xstar-l2zero", *problem.definition(), "pinv Newton", tol, max_iter)
    z = cache.load_or_compute(
        path,
        "xstar",
        key,
        lambda: solved_cache(problem, _newton_pinv(problem, tol, max_iter)),
        xstar_check(problem, tol),
    )
    x, rel = z["x"], float(z["rel_grad"])
    zero = problem.row_norm2.reshape(-1) == 0
    margins = problem.margins(x)
    if np.all(margins[~zero] > 0):
        fstar = float(np.mean(zero) * math.log(2.0))
        what = (
            f"l2 = 0 and the data are linearly separable: f* = (share of zero rows) log 2 = {fstar:.6g} "
            "exactly, not attained (no x*: dist2 is NaN)"
        )
        return np.full(problem.d, math.nan), fstar, what
    what = (
        f"l2 = 0 (convex, mu = 0): x*, f* from damped Newton, ||grad f(x*)|| = {rel:.1e} ||grad f(0)||: "
        "f* is approximate to that, and x* is a minimizer only if one exists"
    )
    return x, problem.loss(x), what


def _newton_pinv(problem: LogisticProblem, tol: float, max_iter: int) -> np.ndarray:
    d = problem.d
    x = np.zeros(d)
    f, g = problem.loss_grad(x)
    g0 = np.linalg.norm(g)
    for _ in range(max_iter):
        gn = np.linalg.norm(g)
        if gn <= tol * max(g0, 1e-300):
            break
        if d <= 2000:
            w, V = sla.eigh(problem.data_hessian(x))  # l2 = 0: the whole Hessian
            keep = w > 1e-12 * max(w[-1], 1e-300)
            p = -V[:, keep] @ ((V[:, keep].T @ g) / w[keep])
        else:
            op = spla.LinearOperator((d, d), matvec=lambda v, x=x: problem.hess_vec(x, v))
            p, _ = spla.cg(op, -g, rtol=min(0.1, gn / g0), maxiter=2000)
        t, slope = 1.0, g @ p
        while True:
            xn = x + t * p
            fn, gn_vec = problem.loss_grad(xn)
            if fn <= f + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12:  # no more decrease in floating point
            break
        x, f, g = xn, fn, gn_vec
    return x
