"""Gradient estimators g_i^k at each worker (SPEC.md section 3), all workers at once.

Each estimator is an init/step pair over explicit state, like optax transforms:
``state = est.init(problem, x, rng)`` and ``g, state, calls = est(problem, state, x, rng)``
where ``g`` is (n, d) and ``calls`` the gradient-oracle calls of this step per worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from efbench.errors import ConfigError, check_choice
from efbench.problems import LogisticProblem

SAMPLINGS = ("uniform", "importance")
ESTIMATORS = ("full", "sgd", "lsvrg")
COINS = ("shared", "per_worker")


@dataclass
class Sampler:
    """Draws j per worker: uniform, or importance p_ij = L_ij / (m Lbar_i) with weights
    1 / (m p_ij) = Lbar_i / L_ij (Gower et al. 2019). Importance draws use one
    ``searchsorted`` over the concatenated per-worker CDFs shifted by the worker index."""

    kind: str
    n: int
    m: int
    flat_cdf: np.ndarray | None = None
    weights: np.ndarray | None = None  # (n, m): 1 / (m p_ij)

    def __post_init__(self) -> None:
        self.offsets_i = np.arange(self.n)[:, None]
        self.offsets = self.offsets_i.astype(float)
        self.offsets_m = self.offsets_i * self.m

    @classmethod
    def build(cls, kind: str, problem: LogisticProblem) -> Sampler:
        check_choice("sampling.name", kind, SAMPLINGS)
        n, m = problem.n, problem.m
        if kind == "uniform":
            return cls(kind, n, m)
        L_ij = problem.row_norm2 / 4 + problem.l2
        p = L_ij / L_ij.sum(axis=1, keepdims=True)
        cdf = np.cumsum(p, axis=1)
        cdf[:, -1] = 1.0
        return cls(kind, n, m, (cdf + np.arange(n)[:, None]).ravel(), 1.0 / (m * p))

    def probabilities(self) -> np.ndarray:
        if self.weights is None:
            return np.full((self.n, self.m), 1.0 / self.m)
        return 1.0 / (self.m * self.weights)

    def draw(self, rng: np.random.Generator, tau: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Indices (n, tau) and importance weights (n, tau) (None for uniform)."""
        if self.flat_cdf is None:
            return rng.integers(0, self.m, size=(self.n, tau)), None
        u = rng.random((self.n, tau))
        u += self.offsets
        idx = np.searchsorted(self.flat_cdf, u, side="right")
        idx -= self.offsets_m
        np.minimum(idx, self.m - 1, out=idx)  # guards u + i rounding up to the next block
        return idx, self.weights[self.offsets_i, idx]


@dataclass
class Full:
    """g_i = grad f_i(x): m oracle calls per worker."""

    def init(self, problem, x, rng):
        return None

    def __call__(self, problem: LogisticProblem, state, x, rng):
        return problem.worker_grads(x), state, problem.m


@dataclass
class SGD:
    """g_i = (1/tau) sum_t grad f_{i j_t}(x) / (m p_{i j_t}), j_t ~ p_i (uniform or importance)."""

    sampler: Sampler
    batch: int = 1

    def init(self, problem, x, rng):
        return None

    def __call__(self, problem, state, x, rng):
        idx, w = self.sampler.draw(rng, self.batch)
        return problem.sample_grads(x, idx, w), state, self.batch


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
        w = np.broadcast_to(x, (problem.n, problem.d)).copy()
        return LSVRGState(w, problem.worker_grads(w))

    def __call__(self, problem, state: LSVRGState, x, rng):
        idx, wts = self.sampler.draw(rng, self.batch)
        rows = problem.A[problem.worker_index, idx]
        g = problem.sample_grads(x, idx, wts, rows) - problem.sample_grads(state.w, idx, wts, rows)
        g += state.gw
        calls = np.full(problem.n, 2.0 * self.batch)
        if self.coin == "shared":
            refresh = np.full(problem.n, rng.random() < self.p)
        else:
            refresh = rng.random(problem.n) < self.p
        if refresh.any():
            state.w[refresh] = x if x.ndim == 1 else x[refresh]
            state.gw[refresh] = problem.worker_grads(state.w)[refresh]
            calls += refresh * problem.m
        return g, state, calls


def make_estimator(spec: dict, problem: LogisticProblem) -> Full | SGD | LSVRG:
    """Build the estimator named in a method's ``estimator`` config block."""
    kind = spec.get("kind", "full")
    check_choice("method.estimator.kind", kind, ESTIMATORS)
    if kind == "full":
        return Full()
    batch = spec.get("batch", 1)
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError("sampling.batch", f"minibatch size must be an integer >= 1, got {batch!r}")
    sampler = Sampler.build(spec.get("sampling", "uniform"), problem)
    if kind == "sgd":
        return SGD(sampler, batch)
    p = spec.get("p")
    p = 1.0 / problem.m if p is None else float(p)
    if not 0.0 < p <= 1.0:
        raise ConfigError("method.estimator.p", f"refresh probability must be in (0, 1], got {p}")
    coin = spec.get("coin", "shared")
    check_choice("method.estimator.coin", coin, COINS)
    return LSVRG(sampler, batch, p, coin)
