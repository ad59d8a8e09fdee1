"""Local-step methods: Local-SGD / FedAvg, Scaffnew (ProxSkip) and GradSkip.

All three send dense models (the compressor setting is ignored, as for ``gd``/``sgd``) and
average them, as an all-reduce does (``collective = allreduce``; ``network.collective=ps``
charges the server's broadcast instead).

What one ``step`` is differs, and the counts say so:

* :class:`LocalSGD`: one ``step`` is one communication round: tau local steps on every
  worker, then the average. ``Round.calls`` = tau x batch (tau x m with full local
  gradients), so the trace's ``epochs`` are the oracle calls, ``step`` the rounds.
* :class:`Scaffnew` and :class:`GradSkip`: one ``step`` is one local iteration t of the
  papers; a shared coin makes it a communication round with probability p. An iteration
  without communication sends 0 bits both ways and counts all n workers as ``skipped``, so
  ``skipped_frac`` is the fraction of local-only iterations, ``rounds_up`` the communication
  rounds, and ``time_sim`` charges latency and bandwidth in communication rounds only (every
  iteration pays its compute). The metrics are evaluated at the average of the workers'
  models, which is the server model after a communication; ``consensus`` =
  (1/n) sum_i ||x_i - xbar||^2 shows how far the local models have drifted.

The theory stepsizes take L_max = max_i L_i and mu (= l2: every f_i is l2-strongly convex),
because the analyses ask every f_i to be L-smooth and mu-strongly convex.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from efbench.core.estimation import EstimatorSpec
from efbench.core.rules import POSITIVE, PROB_OR_NULL, Int, ruled
from efbench.errors import ConfigError
from efbench.methods.base import Method, Round, State, _dense_message, _mean_sq_norm
from efbench.methods.samplers import BUILTIN as BUILTIN_SAMPLINGS
from efbench.methods.samplers import sampling_of
from efbench.problems.base import Problem

LOCAL_ESTIMATORS = ("full", "sgd")


def local_smoothness(constants: dict, estimator: Mapping | EstimatorSpec) -> tuple[float, str]:
    """The smoothness of what one local step differentiates, with its name: L_max =
    max_i L_i for full local gradients; for sampled ones the sampling's L_S (every sampled
    function f_ij / (m p_ij) is L_S-smooth: L_US uniform, L_IS importance, else L_S)."""
    spec = EstimatorSpec.of(estimator)
    if not spec.stochastic:
        return constants["L_i_max"], "L_max"
    return constants[spec.smoothness], spec.smoothness


def problem_constants(problem: Problem, estimator: Mapping | EstimatorSpec) -> dict[str, float]:
    """The problem's constants, with L_S for a sampling of one's own (as the runner adds it)."""
    constants, spec = problem.constants(), EstimatorSpec.of(estimator)
    if spec.stochastic and spec.sampling not in BUILTIN_SAMPLINGS:
        constants["L_S"] = sampling_of(spec.sampling).smoothness(problem)
    return constants


def _check_estimator(method: Method, kinds: tuple[str, ...]) -> None:
    kind = method.estimator_spec.kind
    if kind not in kinds:
        raise ConfigError(
            "method.estimator.kind", f"method {method.name!r} does not take the {kind!r} estimator", kinds
        )


def _check_probability(key: str, v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0):
        raise ConfigError(key, f"must be a probability in (0, 1], got {v!r}", "(0, 1] or null")


@dataclass(kw_only=True)
class LocalSGD(Method):
    """Local-SGD / FedAvg (McMahan et al. 2017; Stich 2019; Khaled, Mishchenko & Richtarik
    2020 for heterogeneous data). One step is one communication round k:

        x_i^{k,0} = x^k,   x_i^{k,s+1} = x_i^{k,s} - gamma g_i(x_i^{k,s}),  s = 0..tau-1,
        x^{k+1}   = x^k + eta_s (1/n) sum_i (x_i^{k,tau} - x^k),

    g_i a stochastic gradient of f_i (the estimator's sampling and batch) or grad f_i
    (``estimator.kind=full``: Local-GD); tau = ``local_steps``, eta_s = ``server_stepsize``
    (1: FedAvg's plain average of the models). Each worker sends its model (d floats), the
    server broadcasts x^{k+1}; tau x batch (or tau x m) oracle calls per worker and round.
    With heterogeneous data the fixed point is not x*: it converges to a neighbourhood whose
    size grows with gamma (tau - 1) and the spread of the grad f_i(x*).
    """

    labels: ClassVar[dict[str, str]] = {"local_sgd": "Local-SGD"}

    local_steps: int = ruled(10, Int(1))  # tau
    server_stepsize: float = ruled(1.0, POSITIVE)
    compressed: ClassVar[bool] = False
    collective: ClassVar[str] = "allreduce"

    def __post_init__(self) -> None:
        super().__post_init__()
        tau = self.local_steps
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
            raise ConfigError("method.local_steps", f"must be an integer >= 1, got {tau!r}", "1, 2, ...")
        eta = self.server_stepsize
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 < eta < math.inf:
            raise ConfigError("method.server_stepsize", f"must be a number > 0, got {eta!r}", "a number > 0")
        _check_estimator(self, LOCAL_ESTIMATORS)

    def theory(self, constants, base):
        """gamma = 1/(4 L), the local stepsize condition gamma <= 1/(4L) of Khaled, Mishchenko
        & Richtarik (2020) (Stich 2019's schedule starts at 4/(mu a) <= 1/(4L) too, a >=
        16 kappa), L the smoothness of every local function: L_max for full local gradients,
        the sampling's L_S for sampled ones."""
        L, name = local_smoothness(constants, self.estimator)
        return 1.0 / (4.0 * L), (
            f"1/(4 {name}) [borrowed: Khaled, Mishchenko & Richtarik 2020's condition gamma <= 1/(4L)], "
            f"{name}={L:.6g}, tau={self.local_steps}"
        )

    def step(self, problem, state, gamma, rng):
        x = state.x
        X = np.tile(x, (problem.n, 1))
        calls = 0
        for _ in range(self.local_steps):
            G, state.est, c = state.estimator(problem, state.est, X, rng)
            X -= gamma * G
            calls += c
        X -= x  # the workers' updates x_i - x
        state.x = x + self.server_stepsize * problem.worker_mean(X)
        d = problem.d
        return state, Round(_dense_message(self, problem), self.downlink(d), np.full(problem.n, d), calls)


@dataclass(kw_only=True)
class ScaffnewState(State):
    """The workers' local models and control variates; ``x`` is their average."""

    X: np.ndarray  # (n, d) x_i
    h: np.ndarray  # (n, d) h_i, summing to 0 over i
    p: float  # the communication probability


@dataclass(kw_only=True)
class Scaffnew(Method):
    """Scaffnew: ProxSkip applied to the consensus problem (Mishchenko, Malinovsky, Stich &
    Richtarik, ICML 2022, Algorithm 2). One step is one iteration t:

        xhat_i = x_i - gamma (g_i(x_i) - h_i)                         (local step)
        theta_t ~ Bernoulli(p), one coin shared by all workers
        theta_t = 1:  x_i <- (1/n) sum_j (xhat_j - (gamma/p) h_j)     (communicate: average)
        theta_t = 0:  x_i <- xhat_i                                   (skip communication)
        h_i <- h_i + (p/gamma) (x_i - xhat_i)                          (control variate)

    x_i^0 = x^0, h_i^0 = 0 (the algorithm asks sum_i h_i^0 = 0; the update keeps sum_i h_i = 0),
    g_i = grad f_i (``estimator.kind=full``, the paper's deterministic method) or a stochastic
    gradient (its stochastic variant). With full gradients x_i -> x* and h_i -> grad f_i(x*)
    for any heterogeneity; p = 1 is gradient descent.
    """

    labels: ClassVar[dict[str, str]] = {"scaffnew": "Scaffnew"}

    p: float | None = ruled(None, PROB_OR_NULL)  # communication probability; None: sqrt(gamma_theory mu)
    compressed: ClassVar[bool] = False
    collective: ClassVar[str] = "allreduce"
    metrics: ClassVar[tuple[str, ...]] = ("skipped_frac", "consensus")
    estimators: ClassVar[tuple[str, ...]] = LOCAL_ESTIMATORS

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_probability("method.p", self.p)
        _check_estimator(self, self.estimators)

    def rule(self, constants: dict) -> tuple[float, float, str]:
        """(gamma, p, formula) of the paper's theory. Full gradients (ProxSkip Theorem 3.6,
        every f_i L-smooth and mu-strongly convex): gamma = 1/L_max, p = sqrt(mu/L_max) =
        1/sqrt(kappa), rate min(gamma mu, p^2) per iteration, sqrt(kappa) log(1/eps)
        communications. Stochastic gradients (its stochastic-gradient theorem: gamma <= 1/A
        for E||g_i(x) - grad f_i(x*)||^2 <= 2 A D_{f_i}(x, x*) + C): A = 2 L_S for sampled
        functions that are convex and L_S-smooth, and p = sqrt(gamma mu) again balances the
        rate min(gamma mu, p^2)."""
        L, name = local_smoothness(constants, self.estimator)
        full = not self.estimator_spec.stochastic
        gamma = 1.0 / L if full else 1.0 / (2.0 * L)
        mu = constants["mu"]
        if self.p is None and not mu > 0:  # NaN (nonconvex) or 0 (l2 = 0)
            raise ConfigError(
                "method.p",
                f"the default p = sqrt(gamma mu) needs mu > 0, and this problem has mu = {mu}",
                "a probability in (0, 1]",
            )
        p = math.sqrt(gamma * mu) if self.p is None else float(self.p)
        proxskip = "Mishchenko et al. 2022 (ProxSkip)"
        rule = (
            f"1/{name} [{proxskip}, Thm 3.6]"
            if full
            else f"1/A, A = 2 {name} [{proxskip}, stochastic-gradient theorem; A = 2 {name}: derived]"
        )
        how = "sqrt(gamma mu)" if self.p is None else "set"
        return gamma, p, f"{rule}, {name}={L:.6g}; p = {how} = {p:.4g}"

    def theory(self, constants, base):
        gamma, _, formula = self.rule(constants)
        return gamma, formula

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        p = self.rule(problem_constants(problem, self.estimator))[1]
        return state.extend(
            ScaffnewState, X=np.tile(x0, (problem.n, 1)), h=np.zeros((problem.n, problem.d)), p=p
        )

    def info(self, state):
        return {"p": state.p}

    def measure(self, problem, state, fstar):
        return {"consensus": _mean_sq_norm(state.X - state.x)}

    def step(self, problem, state, gamma, rng):
        G, state.est, calls = state.estimator(problem, state.est, state.X, rng)
        theta = rng.random() < state.p
        return self.advance(problem, state, gamma, G, state.h, theta, calls)

    def advance(
        self,
        problem: Problem,
        state: ScaffnewState,
        gamma: float,
        G: np.ndarray,
        hhat: np.ndarray,
        theta: bool,
        calls: Any,
    ) -> tuple[ScaffnewState, Round]:
        """The local step with shifts ``hhat`` and, when ``theta``, the averaging and the
        control-variate update: the part Scaffnew and GradSkip share."""
        n, d = problem.n, problem.d
        p = state.p
        xhat = state.X - gamma * (G - hhat)
        if theta:
            xbar = problem.worker_mean(xhat - (gamma / p) * hhat)
            state.h = hhat + (p / gamma) * (xbar - xhat)
            state.X = np.tile(xbar, (n, 1))
            state.x = xbar
            return state, Round(_dense_message(self, problem), self.downlink(d), np.full(n, d), calls)
        state.h, state.X = hhat, xhat
        state.x = problem.worker_mean(xhat)
        zero = np.zeros(n, dtype=np.int64)
        return state, Round(zero, 0, zero, calls, skipped=n)


@dataclass(kw_only=True)
class GradSkipState(ScaffnewState):
    """GradSkip's gradient probabilities and each worker's last gradient."""

    q: np.ndarray  # (n,) q_i, worker i's probability of a gradient step
    g: np.ndarray  # (n, d) grad f_i at the worker's current x_i, when fresh
    fresh: np.ndarray  # (n,) bool: g_i is at x_i


@dataclass(kw_only=True)
class GradSkip(Scaffnew):
    """GradSkip (Maranjyan, Safaryan & Richtarik 2022, Algorithm 1): Scaffnew in which worker i
    skips gradient computations with its own probability. One step is one iteration t:

        theta_t ~ Bernoulli(p) (shared),  eta_{i,t} ~ Bernoulli(q_i) (worker i's own)
        hhat_i = eta_i h_i + (1 - eta_i) grad f_i(x_i)
        xhat_i = x_i - gamma (grad f_i(x_i) - hhat_i)
        theta_t = 1:  x_i <- (1/n) sum_j (xhat_j - (gamma/p) hhat_j),  theta_t = 0:  x_i <- xhat_i
        h_i <- hhat_i + (p/gamma) (x_i - xhat_i)

    eta_i = 0 gives xhat_i = x_i: worker i stays where it is until the next communication and
    reuses grad f_i(x_i), so it computes m oracle calls in an iteration only when x_i moved
    since its last gradient (``Round.calls`` per worker, as computed). q_i = 1 is Scaffnew.
    Full local gradients only (the paper's setting). ``q`` null takes the paper's choice
    q_i = (1 - mu/L_i)/(1 - p^2) (capped at 1), which with p = 1/sqrt(kappa_max) keeps the
    stepsize 1/L_max while a well-conditioned worker (small kappa_i = L_i/mu) takes about
    min(kappa_i, sqrt(kappa_max)) gradient steps per communication instead of sqrt(kappa_max);
    a number is the same q for every worker.
    """

    labels: ClassVar[dict[str, str]] = {"gradskip": "GradSkip"}

    q: float | None = ruled(None, PROB_OR_NULL)  # gradient probability
    estimators: ClassVar[tuple[str, ...]] = ("full",)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_probability("method.q", self.q)

    def rule(self, constants):
        """The theorem's condition gamma <= min_i p^2 / (L_i (1 - q_i (1 - p^2))) (rate
        min(gamma mu, 1 - max_i q_i (1 - p^2)); q_i = 1 gives ProxSkip's 1/L_i). p =
        sqrt(mu/L_max) unless set. With q null (q_i = (1 - mu/L_i)/(1 - p^2), capped at 1) the
        minimum is min(p^2/mu, 1/L_max), = 1/L_max at the default p; with one q for all
        workers it is p^2 / (L_max (1 - q (1 - p^2)))."""
        L, mu = constants["L_i_max"], constants["mu"]
        if (self.p is None or self.q is None) and not mu > 0:  # NaN (nonconvex) or 0 (l2 = 0)
            key = "method.p" if self.p is None else "method.q"
            raise ConfigError(
                key,
                f"GradSkip's default p = sqrt(mu/L_max) and q_i = (1 - mu/L_i)/(1 - p^2) need "
                f"mu > 0, and this problem has mu = {mu}",
                "a probability in (0, 1]",
            )
        p = math.sqrt(mu / L) if self.p is None else float(self.p)
        how = "sqrt(mu/L_max)" if self.p is None else "set"
        source = "[Maranjyan, Safaryan & Richtarik 2022, GradSkip's theorem; its minimum over i: derived]"
        if self.q is None:
            gamma = min(p * p / mu, 1.0 / L)
            text = f"min(p^2/mu, 1/L_max) {source}, q_i = (1 - mu/L_i)/(1 - p^2)"
        else:
            gamma = p * p / (L * (1.0 - self.q * (1.0 - p * p)))
            text = f"p^2/(L_max (1 - q (1 - p^2))) {source}, q={self.q:g}"
        return gamma, p, f"{text}, L_max={L:.6g}, mu={mu:.6g}; p = {how} = {p:.4g}"

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        n, p = problem.n, state.p
        if self.q is not None:
            q = np.full(n, float(self.q))
        elif p >= 1.0:  # communication every iteration: nothing to skip
            q = np.ones(n)
        else:
            L_i = problem.worker_smoothness + problem.l2  # the L_i of the logistic f_i
            q = np.minimum(1.0, (1.0 - problem.constants()["mu"] / L_i) / (1.0 - p * p))
        return state.extend(GradSkipState, q=q, g=np.zeros((n, problem.d)), fresh=np.zeros(n, dtype=bool))

    def info(self, state):
        q = state.q
        return {"p": state.p, "q_min": float(q.min()), "q_mean": float(q.mean())}

    def step(self, problem, state, gamma, rng):
        n, m = problem.n, problem.m
        G, fresh = state.g, state.fresh
        stale = np.flatnonzero(~fresh)
        if stale.size == n:
            G[:] = problem.worker_grads(state.X)
        elif stale.size:
            G[stale] = problem.worker_grads(state.X[stale], stale)
        calls = np.where(fresh, 0.0, float(m))
        theta = rng.random() < state.p
        q = state.q
        # a worker with q_i = 1 never skips: no draw, so q = 1 is Scaffnew's random stream
        eta = rng.random(n) < q if (q < 1.0).any() else np.ones(n, dtype=bool)
        hhat = state.h if eta.all() else np.where(eta[:, None], state.h, G)
        # x_i stays where it is, so grad f_i(x_i) is still G_i, unless the server averages
        # (theta) or x_i takes a local step by G_i - h_i: with eta_i = 1 that step is zero
        # when h_i = G_i, as after a skip (h_i <- hhat_i = G_i)
        moves = eta & (G != state.h).any(axis=1)
        state.fresh = ~moves & (not theta)
        return self.advance(problem, state, gamma, G, hhat, theta, calls)
