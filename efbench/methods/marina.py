"""MARINA and its variants (Gorbunov, Burlachenko, Li & Richtarik, "MARINA: Faster Non-Convex
Distributed Learning with Compression", ICML 2021): compressed gradient differences with an
occasional synchronisation of full gradients.

Each ``step`` is one communication round: the workers' messages form g^k at x^k, the server
broadcasts it (dense, F d bits) and x^{k+1} = x^k - gamma g^k. Round 0 sends the full local
gradients, g^0 = grad f(x^0). In round k >= 1 one coin c ~ Be(p), shared by all workers, picks

    c = 1 (sync):        g^k = (1/n) sum_i grad f_i(x^k)                 every worker sends F d bits
    c = 0 (compressed):  g^k = g^{k-1} + (1/n) sum_i Q(Delta_i^k)        Q unbiased,

with Delta_i^k = grad f_i(x^k) - grad f_i(x^{k-1}) (MARINA, Algorithm 1), its minibatch estimate
(VR-MARINA, Algorithm 2) or, with ``participation=nice``, averaged over the r sampled workers
only (PP-MARINA, Algorithm 4). The default p is the sync probability the authors use (see
:meth:`MARINA.probability`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from efbench.core.rules import PROB_OR_NULL, ruled
from efbench.errors import ConfigError
from efbench.methods.base import Method, Round, State
from efbench.problems.base import Problem

# the theorems' one smoothness constant split into L (descent step) and L_tilde (variance)
SPLIT = "L and L_tilde split as in its proof: derived"


@dataclass(kw_only=True)
class MARINAState(State):
    """MARINA's estimate g^k, the workers' stored gradients and the coin's counts."""

    g: np.ndarray  # (d,) g^k, known to every worker
    prev: np.ndarray  # (n, d) grad f_i at the last point worker i evaluated
    fresh: np.ndarray  # (n,) bool: prev[i] is at the previous x
    x_prev: np.ndarray  # (d,) x^{k-1}
    first: bool  # round 0 (full gradients) is still to come
    p: float  # the sync probability
    omega: float  # the compressor's variance factor
    coins: int  # coins tossed (rounds after the first)
    syncs: int  # of which synchronised


@dataclass(kw_only=True)
class MARINA(Method):
    """MARINA (Gorbunov et al. 2021, Algorithm 1), unbiased compressors Q only:

        x^{k+1} = x^k - gamma g^k,  c_k ~ Be(p),
        g^{k+1} = grad f(x^{k+1})                                         if c_k = 1,
        g^{k+1} = g^k + (1/n) sum_i Q(grad f_i(x^{k+1}) - grad f_i(x^k))  otherwise,

    g^0 = grad f(x^0). Each worker keeps grad f_i(x^k) from its last round, so a round costs m
    oracle calls per worker. With ``participation=nice`` (r = participation.size) this is
    PP-MARINA (Algorithm 4): on compressed rounds only the r workers of an r-nice sample S_k
    send, g^{k+1} = g^k + (1/r) sum_{i in S_k} Q(Delta_i), the others send nothing and compute
    nothing; a sampled worker whose stored gradient is older than x^k also evaluates
    grad f_i(x^k) (2 m calls). Sync rounds involve every worker.
    """

    p: float | None = ruled(None, PROB_OR_NULL)  # sync probability; None: the authors' choice (probability)
    accepts: ClassVar[tuple[str, ...]] = ("identity", "unbiased")
    partial: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ("sync_frac",)  # fraction of coin rounds that synced
    estimator_kind: ClassVar[str] = "full"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.participation.kind == "independent":
            raise ConfigError(
                "participation",
                f"PP-MARINA's analysis samples r workers without replacement (r-nice); "
                f"method {self.name!r} does not take independent participation",
                ("full", "nice"),
            )
        p = self.p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0):
            raise ConfigError(
                "method.p", f"the sync probability must be in (0, 1], got {p!r}", "(0, 1] or null"
            )
        kind = self.estimator_spec.kind
        if kind != self.estimator_kind:
            raise ConfigError(
                "method.estimator.kind",
                f"method {self.name!r} takes the {self.estimator_kind} estimator, got {kind!r}",
                (self.estimator_kind,),
            )

    def probability(self, d: int, n: int, m: int) -> float:
        """p, unless set: 1/(1 + omega), times r/n for PP-MARINA: the paper's p = zeta_Q/d
        (Corollary 2.1; zeta_Q the expected nonzeros of Q) and p = zeta_Q r/(d n) (Corollary
        4.1) for RandK (zeta_Q = K, omega = d/K - 1), and the rule of the authors' code
        (FL_PyTorch, Burlachenko et al. 2021) for every Q; read literally, zeta_Q/d = 1 for a
        dense quantizer (natural, qsgd, ...), which would sync every round."""
        if self.p is not None:
            return float(self.p)
        return self.participation.probability(n) / (1.0 + self.compressor.omega(d))

    def theory(self, constants, base):
        """Theorem 2.1: gamma = 1/(L + L_tilde sqrt((1 - p) omega/(p n))); PP-MARINA (Theorem
        4.1): 1/(L + L_tilde sqrt((1 - p)(1 + omega)/(p r))). The theorems state the bound with
        one constant, 1/(L (1 + sqrt(.))); their proofs use it twice: as the smoothness of f in
        the descent step (here L) and as the mean-squared smoothness (1/n) sum_i
        ||grad f_i(x) - grad f_i(y)||^2 <= L_tilde^2 ||x - y||^2 in the variance of g (here
        L_tilde = sqrt(mean L_i^2) >= L), the split the 3PC rule of EF21 makes too. The
        theorems' single constant can be no smaller than L_tilde; this rule equals their bound
        with it when L = L_tilde and is larger otherwise."""
        n, d = constants["n"], constants["d"]
        p = self.probability(d, n, constants["m"])
        omega = self.compressor.omega(d)
        if self.participation.full:
            ratio = (1.0 - p) * omega / (p * n)
            formula = (
                f"1/(L + L_tilde sqrt((1-p) omega/(p n))) [Gorbunov et al. 2021, Thm 2.1; {SPLIT}], "
                f"p={p:.4g}, omega={omega:.4g}"
            )
        else:
            r = self.participation.size
            ratio = (1.0 - p) * (1.0 + omega) / (p * r)
            formula = (
                f"1/(L + L_tilde sqrt((1-p)(1+omega)/(p r))) [Gorbunov et al. 2021, Thm 4.1; {SPLIT}], "
                f"p={p:.4g}, omega={omega:.4g}, r={r}"
            )
        return 1.0 / (constants["L"] + constants["L_tilde"] * math.sqrt(ratio)), formula

    def init(self, problem: Problem, x0: np.ndarray, rng: np.random.Generator) -> MARINAState:
        state = super().init(problem, x0, rng)
        grads = problem.worker_grads(x0)
        return state.extend(
            MARINAState,
            g=problem.worker_mean(grads),
            prev=grads,
            fresh=np.ones(problem.n, dtype=bool),
            x_prev=x0.copy(),
            first=True,
            p=self.probability(problem.d, problem.n, problem.m),
            omega=self.compressor.omega(problem.d),
            coins=0,
            syncs=0,
        )

    def info(self, state):
        return {"p": state.p, "omega": state.omega}

    def measure(self, problem, state, fstar):
        return {"sync_frac": state.syncs / state.coins if state.coins else 0.0}

    def step(self, problem, state, gamma, rng):
        n, d, m = problem.n, problem.d, problem.m
        dense = np.full(n, self.compressor.float_bits * d, dtype=np.int64)
        if state.first:
            state.first = False
            rnd = Round(dense, 0, np.full(n, d), m)
        else:
            state.coins += 1
            if rng.random() < state.p:
                state.syncs += 1
                grads = problem.worker_grads(state.x)
                state.g = problem.worker_mean(grads)
                state.prev, state.fresh = grads, np.ones(n, dtype=bool)
                rnd = Round(dense, 0, np.full(n, d), m)
            else:
                rnd = self.compressed_round(problem, state, rng)
        state.x_prev = state.x.copy()
        state.x -= gamma * state.g
        rnd.bits_down = self.downlink(d)
        return state, rnd

    def compressed_round(self, problem: Problem, state: MARINAState, rng: np.random.Generator) -> Round:
        """g^k = g^{k-1} + mean over the senders of Q(grad f_i(x^k) - grad f_i(x^{k-1}))."""
        n, m = problem.n, problem.m
        if self.participation.full:
            grads = problem.worker_grads(state.x)
            msg = self.compressor(grads - state.prev, rng)
            state.prev = grads
            state.g += problem.worker_mean(msg.values)
            return Round(msg.bits, 0, msg.nnz, m)
        sent = self.participation.draw(rng, n)
        idx = np.flatnonzero(sent)
        calls = np.where(sent, float(m), 0.0)
        stale = idx[~state.fresh[idx]]
        if stale.size:  # it sat out the last round: grad f_i(x^{k-1}) is not in its memory
            state.prev[stale] = problem.worker_grads(state.x_prev, stale)
            calls[stale] += m
        grads = problem.worker_grads(state.x, idx)
        msg = self.compressor(grads - state.prev[idx], rng)
        state.prev[idx] = grads
        state.fresh = sent
        state.g += problem.worker_mean(msg.values)  # (1/r) sum over the r senders
        bits = np.zeros(n, dtype=np.int64)
        nnz = np.zeros(n, dtype=np.int64)
        bits[idx], nnz[idx] = msg.bits, msg.nnz
        return Round(bits, 0, nnz, calls, skipped=n - idx.size)


@dataclass(kw_only=True)
class VRMARINA(MARINA):
    """VR-MARINA for finite sums (Gorbunov et al. 2021, Algorithm 2): as MARINA, but on a
    compressed round worker i sends

        Q( (1/b') sum_{j in I_i^k} [grad f_ij(x^{k+1}) - grad f_ij(x^k)] ),

    I_i^k a minibatch of b' = ``sampling.batch`` rows drawn uniformly with replacement (with
    ``sampling=importance`` each term is weighted by 1/(m p_ij): still unbiased): 2 b' oracle
    calls; a sync round costs m (full local gradients). Full participation only.
    """

    partial: ClassVar[bool] = False
    estimator_kind: ClassVar[str] = "sgd"

    def probability(self, d, n, m):
        """p, unless set: min(1/(1 + omega), b'/(m + b')), Corollary 3.1's
        min(zeta_Q/d, b'/(m + b')) with zeta_Q/d read as in :meth:`MARINA.probability`."""
        if self.p is not None:
            return float(self.p)
        b = self.estimator_spec.batch
        return min(1.0 / (1.0 + self.compressor.omega(d)), b / (m + b))

    def theory(self, constants, base):
        """Theorem 3.1: gamma = 1/(L + sqrt((1 - p)/(p n) (omega L_tilde^2 + (1 + omega)
        L_S^2/b'))), with L_tilde as in :meth:`MARINA.theory` and L_S bounding the average
        smoothness of the sampled differences, (1/m) sum_j ||grad f_ij(x) - grad f_ij(y)||^2
        /(m p_ij) <= L_S^2 ||x - y||^2: L_US (uniform), L_IS (importance) or the sampling's
        max_ij L_ij/(m p_ij)."""
        n, d = constants["n"], constants["d"]
        b = self.estimator_spec.batch
        p = self.probability(d, n, constants["m"])
        omega = self.compressor.omega(d)
        key = self.estimator_spec.smoothness
        var = omega * constants["L_tilde"] ** 2 + (1.0 + omega) * constants[key] ** 2 / b
        gamma = 1.0 / (constants["L"] + math.sqrt((1.0 - p) / (p * n) * var))
        return gamma, (
            f"1/(L + sqrt((1-p)/(p n) (omega L_tilde^2 + (1+omega) {key}^2/b))) "
            f"[Gorbunov et al. 2021, Thm 3.1; {SPLIT}], p={p:.4g}, omega={omega:.4g}, b={b}"
        )

    def compressed_round(self, problem, state, rng):
        b = state.estimator.batch
        rows, w = state.estimator.sampler.draw(rng, b)
        a = problem.gather(rows)
        diff = problem.sample_grads(state.x, rows, w, a)
        diff -= problem.sample_grads(state.x_prev, rows, w, a)
        msg = self.compressor(diff, rng)
        state.g += problem.worker_mean(msg.values)
        return Round(msg.bits, 0, msg.nnz, 2 * b)
