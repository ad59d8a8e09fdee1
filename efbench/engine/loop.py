"""The one loop: a batch of R runs on one problem, from step 0 to their budgets.

A single run is a batch of one. Each run has its own method object (its own compressor
parameter, method scalars), stepsize schedule, starting point and random generator, so
its trace does not depend on the batch it runs in: the numpy engine steps each run in
turn, one log point at a time; the compiled engine (:mod:`efbench.engine.fused`) advances all
runs through any number of log points in one call (about CHUNK_SECONDS of steps), with
per-run stepsizes, thresholds, K and refresh probabilities, checks the bit and epoch
budgets inside and keeps each run's model and counts at each log point. Metrics are then
evaluated for all those points at once (:meth:`efbench.problems.logistic.LogisticProblem.loss_grad_many`);
a run diverged at a point ends there (:func:`divergence`), and a run with a bits-only budget
whose messages stopped ends ``stalled`` (:meth:`Counters.stalled`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from efbench.core import blocks, network
from efbench.core.network import Profile
from efbench.core.stepsize import Schedule
from efbench.engine import signals
from efbench.engine.counts import Counters, Points
from efbench.engine.fused import Budget, FusedBatch
from efbench.errors import ConfigError
from efbench.methods.base import FusedSpec, Method
from efbench.problems.base import Problem

log = logging.getLogger("efbench")
ENGINES = ("auto", "numpy", "numba")
DIVERGE_LEVEL = 10.0  # the config's diverge_level: f above this times f(x0) for too long diverges
DIVERGE_FROM = 1000  # ... judged from this step on (and at a run's end): earlier, a transient
STALL_STEPS = 10_000  # a bits-only budget's run sending nothing this long (or longer: Counters.stalled)


@dataclass
class RunSpec:
    """One run of a batch: its method, stepsize schedule, starting point and seed."""

    method: Method
    schedule: Schedule
    x0: np.ndarray
    seed: int
    network: Profile = field(default_factory=Profile)  # for the trace's simulated time


@dataclass
class Limits:
    """Budgets (a run stops at the first reached), the log schedule and the divergence test
    (:func:`divergence`)."""

    iters: float
    bits: float  # mean cumulative uplink bits per worker
    epochs: float
    log_every: int | None  # log every this many steps; None: log-spaced steps
    diverge_factor: float
    log_per_decade: float = 10.0
    diverge_level: float = DIVERGE_LEVEL

    @property
    def stall_floor(self) -> float:
        """STALL_STEPS when the bits are the only budget (a run that stops sending would step
        forever), else inf: an iteration or epoch budget ends every run."""
        bits_only = math.isinf(self.iters) and math.isinf(self.epochs) and math.isfinite(self.bits)
        return float(STALL_STEPS) if bits_only else math.inf

    def next_log(self, k: int) -> int:
        """The first log point after step k: the next multiple of ``log_every``, or the next
        of the log-spaced steps 1, 2, ..., each about 10^(1/log_per_decade) times the last."""
        if self.log_every:
            return (k // self.log_every + 1) * self.log_every
        return max(k + 1, math.floor(k * 10.0 ** (1.0 / self.log_per_decade)))


def divergence(
    step: np.ndarray, f: np.ndarray, f0: float, lim: Limits, below: int = 0, final: bool = False
) -> tuple[int | None, int]:
    """The index of the first of a run's log points (steps ``step``, ascending; values ``f``)
    at which it diverged, or None; and the step of its last point with f <= level f(x^0), to
    pass back with its next points (0 at first: x^0 is such a point; at the diverged point,
    the last such step before it). ``final``: the last of these points is the run's last.

    A run has diverged at its log point k when

    (a) f(x^k) is not finite or f(x^k) > diverge_factor f(x^0) (a blow-up, found at once), or
    (b) f(x^j) > diverge_level f(x^0) at every log point j in [k/2, k], and k >= DIVERGE_FROM
        or k is the run's last step: f stayed above level f(x^0) for the last half of the run.

    Every loss here is nonnegative (the logistic terms log(1 + e^t) > 0, l2/2 ||x||^2, the
    nonconvex regularizer lam x^2/(1 + x^2), the counterexample's squares), so f* >= 0 and (b)
    implies a relative gap (f - f*)/(f(x^0) - f*) > level, without needing f* (the nonconvex
    problem has none). The logistic loss grows only linearly in ||x||: a stepsize far above
    2/L throws x to where f is hundreds of times f(x^0) and keeps it there, oscillating or
    growing like ||x||, without overflowing, so (a) alone, with its large factor, calls such
    a run completed.

    A converging run does not meet (b). A method that descends never exceeds f(x^0): GD with
    gamma <= 1/L by the descent lemma, f(x^{k+1}) <= f(x^k) - gamma (1 - L gamma/2)
    ||grad f(x^k)||^2; EF21 and the 3PC methods (Richtarik et al. 2022, Theorem 5.5's proof)
    because Phi^k = f(x^k) - f* + (gamma/2A) G^k does not increase (in expectation for random
    compressors) and G^0 = 0 with g_i^0 = grad f_i(x^0). The error-feedback analyses (Stich &
    Karimireddy 2020; Gorbunov, Kovalev, Makarenko & Richtarik 2020; Danilova & Gorbunov
    2022) bound E||x~^k - x*||^2 by a contracting multiple of ||x^0 - x*||^2 plus a
    neighbourhood proportional to gamma: f(x^k) settles near f* <= f(x^0). Above the theory
    a run may overshoot and still converge: EF21 + Top-1 with gamma = 30 = 76/L on
    breast_cancer (4500 times its theory stepsize) climbs to 60 f(x^0) in 6 steps, comes back
    below 10 f(x^0) only at step 125 and reaches f* by step 500. Such an excursion from step 1
    is a transient until DIVERGE_FROM (8 times that), and a later one until it has lasted as
    long as the run before it; at the budget's end a run whose last half is above the level
    has failed, whatever came before. Measured at the theory stepsize, 2000 steps, on
    breast_cancer and a9a: every method with its default compressor, Top-1 or Rand-1 (and
    with the nonconvex regularizer) stays at or below f(x^0) at every log point, but for
    DoubleSqueeze and DeepSqueeze: up to 2.6 f(x^0), then converging, or, with Rand-1,
    climbing for good (8 f(x^0) at step 2000 on breast_cancer; 29 and 136 on a9a, diverged).
    """
    bad = ~np.isfinite(f)
    last_low = np.full(step.shape, below)
    if f0 > 0:  # f(x^0) = 0 = f*: no multiple of it is a bound
        bad |= f > lim.diverge_factor * f0
        low = f <= lim.diverge_level * f0  # NaN: not low
        last_low = np.maximum.accumulate(np.where(low, step, below))
        judged = step >= DIVERGE_FROM
        judged[-1:] |= final
        bad |= ~low & judged & (2 * last_low < step)
    i = int(np.argmax(bad)) if bad.any() else None
    return i, int(last_low[-1 if i is None else i]) if step.size else below


@dataclass
class Outcome:
    """What a run produced: its status, steps, trace (as columns) and timings."""

    status: str
    steps: int
    columns: dict[str, np.ndarray]  # the trace: one array per column, a value per log point
    step_time: float
    wall: float
    engine: str
    info: dict[str, float] = field(default_factory=dict)
    stopped_by: int | None = None  # the signal that interrupted the batch
    log_time: float = 0.0  # seconds evaluating and recording metrics: the batch's / its runs

    @property
    def rows(self) -> list[dict[str, float]]:
        """The trace as one dict per log point."""
        names = list(self.columns)
        values = zip(*(self.columns[c].tolist() for c in names), strict=True)
        return [dict(zip(names, v, strict=True)) for v in values]

    def last(self) -> dict[str, float]:
        """The last log point's values."""
        return {name: col[-1].item() for name, col in self.columns.items()}

    def __len__(self) -> int:
        return len(self.columns["step"])


def choose_engine(engine: str, runs: list[RunSpec], problem: Problem) -> list[FusedSpec] | None:
    """The runs' compiled specs when the compiled step runs them, else None (numpy).
    ``engine=numba`` refuses what it cannot fuse, naming why."""
    if engine not in ENGINES:
        raise ConfigError("engine", f"unknown value {engine!r}", ENGINES)
    if engine == "numpy":
        return None
    specs = [r.method.fuse(problem) for r in runs]
    why = next((s for s in specs if isinstance(s, str)), None)
    if why is None and (
        len({s.shape() for s in specs}) > 1 or not all(np.array_equal(s.cdf, specs[0].cdf) for s in specs)
    ):
        why = "the runs of this batch differ in more than lam, K, p and the stepsize"
    if why is None:
        return specs
    if engine == "numba":
        raise ConfigError("engine", f"numba cannot run this: {why}", ("auto", "numpy"))
    return None


def execute(
    problem: Problem,
    fstar: float,
    xstar: np.ndarray,
    runs: list[RunSpec],
    lim: Limits,
    engine: str = "auto",
    progress: bool = False,
    desc: str = "",
) -> list[Outcome]:
    """Run every run of the batch to its budget (or divergence); return their outcomes."""
    batch = _Batch(problem, fstar, xstar, runs, lim, choose_engine(engine, runs, problem))
    bar = tqdm(
        total=None if math.isinf(lim.iters) else int(lim.iters) * len(runs),
        disable=not progress,
        mininterval=0.5,
        delay=1.0,
        desc=desc,
        unit="it",
        leave=False,
    )
    with signals.deferred() as pending, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        stopped_by = batch.step_all(bar, pending)
    bar.close()
    return batch.finish(stopped_by)


class _Batch:
    """The runs of one :func:`execute` call as they step: their states, counters, traces and
    statuses, advanced together from one log point to the next."""

    def __init__(
        self,
        problem: Problem,
        fstar: float,
        xstar: np.ndarray,
        runs: list[RunSpec],
        lim: Limits,
        specs: list | None,
    ):
        self.problem, self.fstar, self.xstar, self.runs, self.lim = problem, fstar, xstar, runs, lim
        R = len(runs)
        self.rngs = [np.random.default_rng(r.seed) for r in runs]
        self.states = [r.method.init(problem, r.x0, g) for r, g in zip(runs, self.rngs, strict=True)]
        self.infos = [r.method.info(s) for r, s in zip(runs, self.states, strict=True)]
        self.fused = None if specs is None else FusedBatch(problem, specs, runs, self.states)
        self.counters = Counters(R, problem.n, problem.m)
        self.f0 = np.array([problem.loss(r.x0) for r in runs])
        self.traces: list[list[dict[str, np.ndarray]]] = [[] for _ in runs]  # column blocks per run
        self.status = ["completed"] * R
        self.below = [0] * R  # each run's last logged step with f <= diverge_level f(x0): divergence()
        self.steps = np.zeros(R, dtype=np.int64)
        self.step_time = np.zeros(R)
        self.t_start = time.perf_counter()
        self.log_time = 0.0

    def who(self, r: int) -> str:
        R = len(self.runs)
        return f"run {r + 1} of {R} (seed {self.runs[r].seed}): " if R > 1 else ""

    def diverged(self, r: int, step: int, fk: float) -> None:
        lim, f0 = self.lim, self.f0
        self.status[r], self.steps[r] = "diverged", step
        why = (
            f"f = {fk:.4g} is not below diverge_factor = {lim.diverge_factor:g} times f(x0)"
            if not fk <= lim.diverge_factor * f0[r]
            else f"f above diverge_level = {lim.diverge_level:g} times f(x0) = {f0[r]:.4g} at "
            f"every log point after step {self.below[r]}"
        )
        log.info("%sdiverged at step %d: %s", self.who(r), step, why)

    def now(self, r: int) -> Points:
        measured = self.runs[r].method.measure(self.problem, self.states[r], self.fstar)
        x, elapsed = self.states[r].x, time.perf_counter() - self.t_start
        return self.counters.point(r, int(self.steps[r]), x, measured, elapsed)

    def record(self, pts: Points) -> None:
        """Append a row for each point, evaluating f and grad f at all points at once; a run
        found diverged at a point (:func:`divergence`) stops there (rows after it are
        dropped, its steps end there). The rows are built as columns over all points, then
        cut per run."""
        t0 = time.perf_counter()
        problem, n, f0 = self.problem, self.problem.n, self.f0
        finite = np.all(np.isfinite(pts.X), axis=1)
        f, G = problem.loss_grad_many(np.where(finite[:, None], pts.X, 0.0))
        f = np.where(finite, f, math.inf)
        gap = f - self.fstar
        D = pts.X - self.xstar
        k = pts.step
        common = {
            "step": k,
            "epochs": pts.calls / problem.m,
            "f": f,
            "gap": gap,
            "rel_gap": gap / (f0[pts.run] - self.fstar),
            "grad_norm2": np.where(finite, blocks.row_sq_norms(G), math.inf),
            "dist2": blocks.row_sq_norms(D),
            "bits_up_mean": pts.bits_sum / n,
            "bits_up_max": pts.bits_max,
            "bits_down": pts.bits_down,
            "nnz_mean": np.divide(pts.nnz_sum / n, k, out=np.zeros(k.size), where=k > 0),
        }
        skipped_frac = np.divide(pts.skipped, pts.rounds * n, out=np.zeros(k.size), where=pts.rounds > 0)
        counts = dict(zip(network.COUNTS, pts.net.T, strict=True))
        for r in dict.fromkeys(pts.run.tolist()):  # each run's points, in order
            if self.status[r] == "diverged":
                continue
            idx = np.flatnonzero(pts.run == r)
            at, self.below[r] = divergence(k[idx], f[idx], f0[r], self.lim, self.below[r])
            if self.status[r] == "completed" and at is not None:
                idx = idx[: at + 1]
                self.diverged(r, int(k[idx[-1]]), float(f[idx[-1]]))
            run = self.runs[r]
            cols = {name: v[idx] for name, v in common.items()}
            for name in run.method.metrics:
                cols[name] = (skipped_frac if name == "skipped_frac" else pts.measured[name])[idx]
            cols.update((name, v[idx]) for name, v in counts.items())
            cols["rounds_down"] = pts.rounds_down[idx]
            prof = run.network
            if prof.c_grad == "measured":  # the runner sets it from the run's final rate
                prof = replace(prof, c_grad=0.0)
            cols["time_sim"] = network.simulated_time(
                prof, prof.collective_of(run.method.collective), n, cols
            )
            cols["gamma"] = run.schedule.at(np.maximum(k[idx] - 1, 0))
            cols["time"] = pts.time[idx]
            self.traces[r].append(cols)
        self.log_time += time.perf_counter() - t0

    def step_all(self, bar: tqdm, pending: Callable[[], int | None]) -> int | None:
        """Advance the live runs in calls of about CHUNK_SECONDS until each has reached its
        budget, diverged or stalled, or a signal has come (returned: its number)."""
        lim, fused = self.lim, self.fused
        live = list(range(len(self.runs)))  # runs that may take more steps
        waiting = [self.now(r) for r in live]  # step 0: evaluated with the first log points
        k, at = 0, lim.next_log(0)
        chunk = 16  # steps per call, then as many as take CHUNK_SECONDS: a signal is answered soon
        while live and k < lim.iters:
            # the compiled step runs to the chunk's end, keeping the log points on its way;
            # the numpy engine stops at the next log point
            T = int(min(lim.iters, k + chunk) - k if fused is not None else min(at, lim.iters, k + chunk) - k)
            marks = []
            while at <= k + T:
                marks.append(at - k)
                at = lim.next_log(at)
            if k + T == lim.iters and (not marks or marks[-1] != T):
                marks.append(T)  # the last step: its row comes with the others
            t0 = time.perf_counter()
            if fused is not None:
                budget = Budget(float(lim.bits), float(lim.epochs), lim.stall_floor)
                took, snaps = fused.advance(live, T, self.rngs, self.counters, budget, self.step_time, marks)
            else:
                took = _numpy_advance(
                    self.problem,
                    self.runs,
                    self.states,
                    self.rngs,
                    live,
                    k,
                    T,
                    self.counters,
                    lim,
                    self.step_time,
                )
            chunk = max(1, int(signals.CHUNK_SECONDS * T / max(time.perf_counter() - t0, 1e-9)))
            self.steps[live] += took
            for r, t in zip(live, took, strict=True):
                if t < T and self.counters.stalled(r, lim):
                    self.stalled(r)
            if fused is not None:
                # the wall clock at a point inside the call, by its share of the call's steps
                points = [snaps(k, t0 - self.t_start, time.perf_counter() - t0)]
            else:
                points = [self.now(r) for t, r in enumerate(live) if marks and took[t] == T]
            k += T
            if waiting or any(p.run.size for p in points):
                self.record(Points.concat(waiting + points))
                waiting = []
            live = [r for r, t in zip(live, took, strict=True) if t == T and self.status[r] == "completed"]
            bar.update(int(took.sum()))
            stopped_by = pending()
            if stopped_by is not None:
                for r in live:
                    self.status[r] = "interrupted"
                return stopped_by
        if waiting:  # no step was taken
            self.record(Points.concat(waiting))
        return None

    def stalled(self, r: int) -> None:
        self.status[r] = "stalled"
        log.warning(
            "%sstalled at step %d: no uplink bits in its last %d steps, so budget.bits "
            "= %g is not reached (a bits-only run stops when silent as long as it ran "
            "before, and at least %d steps)",
            self.who(r),
            self.steps[r],
            self.counters.silent[r],
            self.lim.bits,
            STALL_STEPS,
        )

    def finish(self, stopped_by: int | None) -> list[Outcome]:
        """Each run's last point recorded where it is not yet, the end-of-budget divergence
        rule applied, and the outcomes."""
        R, traces, steps = len(self.runs), self.traces, self.steps
        last = [r for r in range(R) if traces[r][-1]["step"][-1] != steps[r]]
        if last:
            self.record(Points.concat([self.now(r) for r in last]))
        for r in range(R):  # a run at its budget's end: (b) of divergence() applies before DIVERGE_FROM
            end = traces[r][-1]
            if (
                self.status[r] == "completed"
                and divergence(end["step"][-1:], end["f"][-1:], self.f0[r], self.lim, self.below[r], True)[0]
                == 0
            ):
                self.diverged(r, int(steps[r]), float(end["f"][-1]))
        wall = time.perf_counter() - self.t_start
        name = "numpy" if self.fused is None else "numba"
        return [
            Outcome(
                self.status[r],
                int(steps[r]),
                {name: np.concatenate([block[name] for block in traces[r]]) for name in traces[r][0]},
                float(self.step_time[r]),
                wall,
                name,
                self.infos[r],
                stopped_by,
                self.log_time / R,
            )
            for r in range(R)
        ]


def _numpy_advance(problem, runs, states, rngs, live, k, T, counters, lim, step_time) -> np.ndarray:
    """Each live run in turn, up to T steps from step k: the numpy engine."""
    took = np.zeros(len(live), dtype=np.int64)
    for t, r in enumerate(live):
        run, state, rng = runs[r], states[r], rngs[r]
        t0 = time.perf_counter()
        for j in range(T):
            if counters.over_budget(r, lim):
                break
            state, rnd = run.method.step(problem, state, run.schedule(k + j), rng)
            counters.add(r, rnd)
            took[t] += 1
        states[r] = state
        step_time[r] += time.perf_counter() - t0
    return took
