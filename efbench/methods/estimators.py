"""Gradient estimators g_i^k at each worker (SPEC.md section 3), all workers at once.

Each estimator is an init/step pair over explicit state, like optax transforms:
``state = est.init(problem, x, rng)`` and ``g, state, calls = est(problem, state, x, rng)``
where ``g`` is (n, d) and ``calls`` the gradient-oracle calls of this step per worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from efbench.core import blocks
from efbench.core.estimation import KINDS, EstimatorSpec
from efbench.errors import ConfigError, check_choice
from efbench.methods.samplers import sampling_of
from efbench.problems.base import Problem

ESTIMATORS = KINDS
COINS = ("shared", "per_worker")


@dataclass
class Sampler:
    """Draws one sample per worker and minibatch slot, returned as flat row indices (n, tau).

    Uniform: j = floor(m u). Any other sampling p_ij (:mod:`efbench.methods.samplers`): weights
    1 / (m p_ij), the row found in the concatenated per-worker CDFs shifted by the worker
    index, whose position is directly the flat row index (:func:`efbench.core.blocks.sample_row`,
    also the compiled step's sampler)."""

    kind: str
    n: int
    m: int
    flat_cdf: np.ndarray | None = None  # (n m,): cumulative p_ij + i
    flat_weights: np.ndarray | None = None  # (n m,): 1 / (m p_ij)

    @classmethod
    def build(cls, kind: str, problem: Problem) -> Sampler:
        n, m = problem.n, problem.m
        p = sampling_of(kind).probabilities(problem)
        if p is None:
            return cls(kind, n, m)
        if p.shape != (n, m) or not np.all(p > 0) or not np.allclose(p.sum(axis=1), 1.0):
            raise ConfigError("sampling.name", f"{kind} must give (n, m) positive probabilities summing to 1")
        cdf = np.cumsum(p, axis=1)
        cdf[:, -1] = 1.0
        return cls(kind, n, m, (cdf + np.arange(n)[:, None]).ravel(), (1.0 / (m * p)).ravel())

    def probabilities(self) -> np.ndarray:
        if self.flat_weights is None:
            return np.full((self.n, self.m), 1.0 / self.m)
        return 1.0 / (self.m * self.flat_weights.reshape(self.n, self.m))

    def draw(self, rng: np.random.Generator, tau: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Flat row indices (n, tau) and importance weights (n, tau) (None for uniform)."""
        u = rng.random((self.n, tau))
        rows = np.empty(u.shape, dtype=np.intp)
        w = np.empty(u.shape)
        empty = np.zeros(0)
        cdf = empty if self.flat_cdf is None else self.flat_cdf
        blocks.draw_rows(u, self.m, cdf, empty if self.flat_weights is None else self.flat_weights, rows, w)
        return rows, None if self.flat_cdf is None else w


@dataclass
class Full:
    """g_i = grad f_i(x): m oracle calls per worker."""

    def init(self, problem, x, rng):
        return None

    def __call__(self, problem: Problem, state, x, rng):
        return problem.worker_grads(x), state, problem.m


@dataclass
class SGD:
    """g_i = (1/tau) sum_t grad f_{i j_t}(x) / (m p_{i j_t}), j_t ~ p_i (uniform or importance)."""

    sampler: Sampler
    batch: int = 1

    def init(self, problem, x, rng):
        return None

    def __call__(self, problem, state, x, rng):
        rows, w = self.sampler.draw(rng, self.batch)
        return problem.sample_grads(x, rows, w), state, self.batch


@dataclass
class LSVRGState:
    w: np.ndarray  # (n, d) reference points w_i
    gw: np.ndarray  # (n, d) grad f_i(w_i)


@dataclass
class LSVRG:
    """Loopless SVRG (Kovalev et al. 2020):
    g_i = [grad f_ij(x) - grad f_ij(w_i)] / (m p_ij) + grad f_i(w_i);
    w^{k+1} = x^k with probability p (one coin for all workers, or one per worker),
    a refresh costing m oracle calls; each step costs 2 tau calls."""

    sampler: Sampler
    batch: int = 1
    p: float = 0.0
    coin: str = "shared"

    def init(self, problem, x, rng):
        w = np.tile(x, (problem.n, 1))
        return LSVRGState(w, problem.worker_grads(w))

    def __call__(self, problem, state: LSVRGState, x, rng):
        rows, wts = self.sampler.draw(rng, self.batch)
        a = problem.gather(rows)
        g = problem.sample_grads(x, rows, wts, a)
        g -= problem.sample_grads(state.w, rows, wts, a)
        g += state.gw
        return g, state, self.refresh(problem, state, x, rng)

    def refresh(
        self, problem: Problem, state: LSVRGState, x: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Flip the coin(s), then :meth:`apply` them. Returns the step's oracle calls per worker."""
        return self.apply(problem, state, x, self.coins(rng, problem.n))

    def coins(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Which workers refresh: one coin for all or one per worker, each true with
        probability p (the compiled step reads the same draws: :mod:`efbench.engine.fused`)."""
        if self.coin == "per_worker":
            return rng.random(n) < self.p
        return np.full(n, rng.random() < self.p)

    def apply(self, problem: Problem, state: LSVRGState, x: np.ndarray, refresh: np.ndarray) -> np.ndarray:
        """Move refreshed w_i to x and recompute grad f_i there. Returns the step's oracle
        calls per worker: 2 tau, plus m where refreshed."""
        idx = np.flatnonzero(refresh)
        if idx.size:  # only the refreshed workers' gradients: m calls each, not n m
            state.w[idx] = x if x.ndim == 1 else x[idx]
            state.gw[idx] = problem.worker_grads(state.w[idx], idx)
        return 2.0 * self.batch + refresh * problem.m


def make_estimator(block: Mapping | EstimatorSpec, problem: Problem) -> Full | SGD | LSVRG:
    """Build the estimator named in a method's ``estimator`` config block."""
    spec = EstimatorSpec.of(block)
    kind = spec.kind
    check_choice("method.estimator.kind", kind, ESTIMATORS)
    if kind == "full":
        return Full()
    batch = spec.batch
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError("sampling.batch", f"minibatch size must be an integer >= 1, got {batch!r}")
    sampler = Sampler.build(spec.sampling, problem)
    if kind == "sgd":
        return SGD(sampler, batch)
    p = 1.0 / problem.m if spec.p is None else float(spec.p)
    if not 0.0 < p <= 1.0:
        raise ConfigError("method.estimator.p", f"refresh probability must be in (0, 1], got {p}")
    coin = spec.coin
    check_choice("method.estimator.coin", coin, COINS)
    return LSVRG(sampler, batch, p, coin)
