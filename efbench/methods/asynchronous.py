"""Asynchronous SGD with delays, simulated exactly by an event queue (Mishchenko, Bach, Even &
Woodworth, "Asynchronous SGD Beats Minibatch SGD Under Arbitrary Delays", NeurIPS 2022,
Algorithm 1; Koloskova, Stich & Jaggi, "Sharper Convergence Guarantees for Asynchronous SGD
for Distributed and Federated Learning", NeurIPS 2022, Algorithm 1 with maximum concurrency).

Every worker is always computing. Worker i takes tau_i time units for one stochastic gradient
of its f_i at the iterate it received when it started. The server applies each gradient as
it arrives and sends the new iterate back to that worker only, which starts again at once:

    x^{k+1} = x^k - gamma g_{i_k}(x^{k - d_k}),

i_k the worker whose gradient arrives k-th and d_k its delay, the number of updates applied
since it received x^{k - d_k}. All workers start at time 0 with x^0. One ``step`` is one
server update: one arriving message (the other workers send nothing), one gradient computed
(calls 1 for a sample gradient, m for a full local gradient, on the arriving worker only),
and the model sent back to that worker (``bits_down``).

Compute times (``times``): ``fixed`` tau_i = 1; ``heterogeneous`` tau_i = 1 + i spread, or the
list ``durations``; ``random`` a fresh Exp(1) time for every job, drawn from the run's
generator when the job starts. Simultaneous arrivals are applied in worker order. Worker i's
c-th gradient arrives at c tau_i, computed in exact rational arithmetic of the given floats,
so ties stay ties.

With heterogeneous data and heterogeneous times, fast workers apply more gradients: the
iterates settle near the minimizer of sum_i f_i / tau_i, not of f (Koloskova et al. 2022,
Section 5, whose Algorithm 2 samples the next worker uniformly to avoid it; not simulated here).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np

from efbench.core import blocks
from efbench.core.rules import Choice, Num, Rule, ruled
from efbench.core.stepsize import theory_gamma
from efbench.errors import ConfigError, check_positive
from efbench.methods.base import EC_FORMS, Method, Round, State
from efbench.problems.base import Problem

TIMES = ("fixed", "random", "heterogeneous")
ESTIMATORS = ("full", "sgd")


@dataclass(kw_only=True)
class AsyncState(State):
    """The event queue of asynchronous SGD and what each worker is computing at."""

    queue: list[tuple[Fraction | float, int]]  # heap of (arrival time, worker) of the running jobs
    taus: list[Fraction] | None  # tau_i as exact rationals; None: random times
    jobs: np.ndarray  # (n,) int64 gradients each worker has delivered
    held: np.ndarray  # (n, d) the iterate each worker computes at
    start: np.ndarray  # (n,) int64 its index k: x^k
    k: int  # server updates applied
    delay_sum: int
    delay_max: int
    clock: float  # the simulated time of the last update
    cdf: np.ndarray  # the sampler's flat CDF (empty: uniform or full gradients)
    weights: np.ndarray  # the sampler's flat importance weights (empty: none)
    delay_bound: int | None  # tau_max for deterministic times (:meth:`AsyncSGD.delay_bound`)


@dataclass(kw_only=True)
class AsyncSGD(Method):
    """Asynchronous SGD (see the module docstring), dense messages: the arriving worker sends
    its gradient (F d bits) and the server steps x^{k+1} = x^k - gamma g.

    Metrics: ``delay_mean`` and ``delay_max`` of the gradients applied so far, and ``clock``,
    the simulated time of the last update (compute time only, in units of a fixed worker's
    gradient).
    """

    labels: ClassVar[dict[str, str]] = {"async_sgd": "Async-SGD"}

    times: str = ruled("fixed", Choice("fixed", "random", "heterogeneous"))
    spread: float = ruled(1.0, Num(0))  # heterogeneous: tau_i = 1 + i spread
    # heterogeneous: tau_i given, one per worker
    durations: list[float] | None = ruled(
        None, Rule("any", null=True, text="a list of compute times > 0, one per worker, or null")
    )
    compressed: ClassVar[bool] = False
    metrics: ClassVar[tuple[str, ...]] = ("delay_mean", "delay_max", "clock")

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = self.estimator_spec.kind
        if kind not in ESTIMATORS:
            raise ConfigError(
                "method.estimator.kind",
                f"method {self.name!r} computes one gradient at a time: {kind!r} is not simulated",
                ESTIMATORS,
            )
        if self.durations is not None:
            if self.times != "heterogeneous":
                raise ConfigError("method.durations", "is read only with method.times=heterogeneous")
            for t in self.durations:
                check_positive("method.durations", t)

    def compute_times(self, n: int) -> list[Fraction] | None:
        """tau_i as exact rationals of their float values; None for random times."""
        if self.times == "random":
            return None
        if self.times == "fixed":
            taus = [1.0] * n
        elif self.durations is None:
            taus = [1.0 + i * float(self.spread) for i in range(n)]
        else:
            if len(self.durations) != n:
                raise ConfigError(
                    "method.durations",
                    f"needs one compute time per worker: n_workers = {n}, got {len(self.durations)}",
                )
            taus = [float(t) for t in self.durations]
        return [Fraction(t) for t in taus]

    def delay_bound(self, n: int) -> int | None:
        """tau_max <= max_i sum_{j != i} ceil(tau_i / tau_j) for deterministic times: worker j
        completes at multiples of tau_j, and of its arrivals at the two ends of worker i's job
        (length tau_i) the worker order counts at most one. n - 1 for fixed times (attained
        after warm-up); None for random times, which have no bound."""
        taus = self.compute_times(n)
        if taus is None:
            return None
        return max(
            sum(math.ceil(ti / tj) for j, tj in enumerate(taus) if j != i) for i, ti in enumerate(taus)
        )

    def theory(self, constants, base):
        """gamma = min(gamma_1, 1/(4 L sqrt(tau_C tau_max))): the constant stepsize behind the
        rate O(sigma^2/eps^2 + sqrt(tau_C tau_max)/eps) of Koloskova et al. 2022, Theorem 6,
        with the 1/(4 L) scale of their Theorem 8 (eta <= 1/(4L); 1/(4 L tau_t) for delays
        tau_t > tau_C). Concurrency tau_C = n (every worker always busy), tau_max the delays'
        bound (:meth:`delay_bound`); gamma_1 is the estimator's rule for one worker's gradient
        per update (n = 1 in it), standing for the theorem's noise term. One worker has no
        delays: gamma_1 alone. Random times have no delay bound: refused."""
        n = int(constants["n"])
        g1, f1 = theory_gamma({**constants, "n": 1}, self.estimator)
        bound = self.delay_bound(n)
        if bound is None:
            raise ConfigError(
                "stepsize.rule",
                "the theory stepsize 1/(4 L sqrt(tau_C tau_max)) needs a bound on the delays, "
                "which method.times=random does not have",
                ("constant", "decreasing with a number as base"),
            )
        if bound == 0:
            return g1, f"{f1} (one worker: no delays)"
        g = 1.0 / (4.0 * constants["L"] * math.sqrt(n * bound))
        return min(g1, g), (
            "min(gamma_1, 1/(4 L sqrt(tau_C tau_max))) [derived: Koloskova et al. 2022, Thm 6 with "
            f"Thm 8's 1/(4L)], gamma_1 = {f1} with n=1, tau_C=n={n}, tau_max={bound} ({self.times} "
            "compute times)"
        )

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        n = problem.n
        taus = self.compute_times(n)
        if taus is None:
            first = rng.exponential(1.0, size=n).tolist()
        else:
            first = list(taus)
        queue = [(t, i) for i, t in enumerate(first)]
        heapq.heapify(queue)
        est = state.estimator
        sampler = getattr(est, "sampler", None)
        empty = np.zeros(0)
        return state.extend(
            AsyncState,
            queue=queue,
            taus=taus,
            jobs=np.zeros(n, dtype=np.int64),
            held=np.tile(x0, (n, 1)),
            start=np.zeros(n, dtype=np.int64),
            k=0,
            delay_sum=0,
            delay_max=0,
            clock=0.0,
            cdf=empty if sampler is None or sampler.flat_cdf is None else sampler.flat_cdf,
            weights=empty if sampler is None or sampler.flat_weights is None else sampler.flat_weights,
            delay_bound=self.delay_bound(n),
        )

    def info(self, state):
        out = {"tau_C": float(state.held.shape[0])}
        if state.delay_bound is not None:
            out["delay_bound"] = float(state.delay_bound)
        return out

    def measure(self, problem, state, fstar):
        return {
            "delay_mean": state.delay_sum / state.k if state.k else 0.0,
            "delay_max": float(state.delay_max),
            "clock": float(state.clock),
        }

    def gradient(
        self, problem: Problem, state, i: int, x: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        """Worker i's gradient at x (d,) and its oracle calls: grad f_i(x) (m calls) or the
        estimator's minibatch of tau samples from worker i alone, drawn as the SGD estimator
        draws one worker's (:meth:`efbench.methods.estimators.Sampler.draw`)."""
        if not self.estimator_spec.stochastic:
            return problem.worker_grads(x, np.array([i]))[0], float(problem.m)
        tau = state.estimator.batch
        u = rng.random((1, tau))
        rows = np.empty((1, tau), dtype=np.intp)
        w = np.empty((1, tau))
        for t in range(tau):
            rows[0, t], w[0, t] = blocks.sample_row(u[0, t], i, problem.m, state.cdf, state.weights)
        return problem.sample_grads(x, rows, None if state.cdf.size == 0 else w)[0], float(tau)

    def send(
        self, state, i: int, g: np.ndarray, gamma: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, int, int]:
        """The step the arriving worker i's message makes the server take, with the message's
        bits and coordinates: gamma g, dense."""
        d = g.shape[0]
        return gamma * g, self.compressor.float_bits * d, d

    def step(self, problem, state, gamma, rng):
        n = problem.n
        t, i = heapq.heappop(state.queue)
        k = state.k
        delay = int(k - state.start[i])
        g, calls = self.gradient(problem, state, i, state.held[i], rng)
        v, bits, nnz = self.send(state, i, g, gamma, rng)
        state.x -= v
        state.k = k + 1
        state.held[i] = state.x
        state.start[i] = k + 1
        state.jobs[i] += 1
        state.clock = float(t)
        if state.taus is None:
            nxt = t + rng.exponential(1.0)
        else:
            nxt = (int(state.jobs[i]) + 1) * state.taus[i]
        heapq.heappush(state.queue, (nxt, i))
        state.delay_sum += delay
        state.delay_max = max(state.delay_max, delay)
        bits_up = np.zeros(n, dtype=np.int64)
        bits_up[i] = bits
        nnz_up = np.zeros(n, dtype=np.int64)
        nnz_up[i] = nnz
        calls_up = np.zeros(n)
        calls_up[i] = calls
        return state, Round(bits_up, self.downlink(problem.d), nnz_up, calls_up, skipped=n - 1)


@dataclass(kw_only=True)
class AsyncQSGD(AsyncSGD):
    """Asynchronous SGD with an unbiased compressor Q and no error feedback: the arriving
    worker sends Q(g) and the server steps x^{k+1} = x^k - gamma Q(g) (``ec_form=scaled``;
    ``plain``: Q(gamma g))."""

    ec_forms: ClassVar[tuple[str, ...]] = EC_FORMS

    labels: ClassVar[dict[str, str]] = {"async_qsgd": "Async-QSGD"}

    compressed: ClassVar[bool] = True
    accepts: ClassVar[tuple[str, ...]] = ("identity", "unbiased")

    def theory(self, constants, base):
        """The asynchronous rule divided by 1 + omega (derived): Q(g) is a stochastic
        gradient with E||Q(g)||^2 <= (1 + omega) E||g||^2, which the smoothness term of the
        descent step pays, as for compressed SGD."""
        g, formula = super().theory(constants, base)
        omega = self.compressor.omega(int(constants["d"]))
        return g / (1.0 + omega), (
            f"{formula} / (1 + omega) [derived: E||Q(g)||^2 <= (1 + omega) E||g||^2], omega={omega:.4g}"
        )

    def send(self, state, i, g, gamma, rng):
        v, msg = self.compress_step(gamma, gamma * g[None, :], rng)
        return v[0], int(msg.bits[0]), int(msg.nnz[0])


@dataclass(kw_only=True)
class AsyncECSGD(AsyncSGD):
    """Asynchronous error-compensated SGD: the arriving worker i sends

        v = gamma C(e_i / gamma + g)   (ec_form=scaled)   or   C(e_i + gamma g)   (plain),
        e_i <- e_i + gamma g - v,      x^{k+1} = x^k - v,

    the error feedback of :class:`efbench.methods.base.ErrorCompensated` on the gradient that
    arrives (:class:`efbench.methods.memory.ErrorFeedback` on worker i's row; Stich &
    Karimireddy 2020 analyse error feedback and delays in one framework). Any compressor, as
    for EC-SGD; the theory stepsize is the asynchronous rule, which the compressor does not
    enter (as EC-SGD's rule in efbench). ``err2`` = (1/n) sum_i ||e_i||^2."""

    ec_forms: ClassVar[tuple[str, ...]] = EC_FORMS

    labels: ClassVar[dict[str, str]] = {"async_ec_sgd": "Async-EC-SGD"}

    compressed: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ("delay_mean", "delay_max", "clock", "err2")

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = self.memory.init(problem.n, problem.d)
        return state

    def measure(self, problem, state, fstar):
        return {**super().measure(problem, state, fstar), "err2": float(blocks.mean_sq_norm(state.e))}

    def send(self, state, i, g, gamma, rng):
        v, msg = self.memory.update(state.e[i : i + 1], gamma * g, gamma, rng)  # worker i's row, in place
        return v[0], int(msg.bits[0]), int(msg.nnz[0])
