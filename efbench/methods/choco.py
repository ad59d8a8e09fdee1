"""CHOCO-SGD (Koloskova, Stich & Jaggi, "Decentralized Stochastic Optimization and Gossip
Algorithms with Compressed Communication", ICML 2019, Algorithm 2): decentralized SGD whose
nodes gossip compressed updates of public copies x_hat_j of their models.

Each node i keeps its model x_i and the copies x_hat_j of itself and of its neighbours j
(here one array X_hat (n, d): every node holds the same copy of x_hat_j). One step:

    x_i^{t+1/2} = x_i^t - eta_t g_i(x_i^t)
    q_i^t       = Q(x_i^{t+1/2} - x_hat_i^t)                 sent to every neighbour
    x_hat_j^{t+1} = x_hat_j^t + q_j^t                         for j = i and its neighbours
    x_i^{t+1}   = x_i^{t+1/2} + gamma sum_j w_ij (x_hat_j^{t+1} - x_hat_i^{t+1})

with x_hat_i^0 = 0 (Algorithm 2's input). The gossip term is gamma ((W - I) X_hat)_i, whose
columns sum to 0 (W doubly stochastic): the average of the x_i moves exactly as the average
of the local SGD steps, whatever Q sends.

Q is a compression operator of the paper's Definition: E||Q(x) - x||^2 <= (1 - delta)||x||^2
(contractive compressors, identity). An unbiased Q with variance factor omega is used scaled,
Q(x)/(1 + omega), which satisfies it with delta = 1/(1 + omega) (the paper's rescaled qsgd
and rand_k); absolute compressors are not covered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from efbench.core import blocks
from efbench.core.rules import Num, ruled
from efbench.core.topology import spectral_gap
from efbench.methods.base import Decentralized, DecentralizedState

log = logging.getLogger("efbench")


def consensus_theory(rho: float, beta: float, delta: float) -> float:
    """gamma* = rho^2 delta / (16 rho + rho^2 + 4 beta^2 + 2 rho beta^2 - 8 rho delta): the
    consensus stepsize of the CHOCO-Gossip and CHOCO-SGD theorems (Koloskova et al. 2019; restated
    in Koloskova, Lin, Stich & Jaggi, ICLR 2020, Theorem 4.1), for spectral gap rho = 1 -
    |lambda_2(W)|, beta = ||I - W||_2 and compression constant delta."""
    return rho**2 * delta / (16 * rho + rho**2 + 4 * beta**2 + 2 * rho * beta**2 - 8 * rho * delta)


CONSENSUS_FORMULA = (
    "rho^2 delta/(16 rho + rho^2 + 4 beta^2 + 2 rho beta^2 - 8 rho delta) "
    "[Koloskova et al. 2019; restated in Koloskova et al. 2020, Thm 4.1]"
)


@dataclass(kw_only=True)
class ChocoState(DecentralizedState):
    """CHOCO-SGD's public copies and its consensus constants."""

    X_hat: np.ndarray  # (n, d) x_hat_j, every node's copy of node j's model
    gamma_c: float  # the consensus step gamma
    beta: float  # ||I - W||_2
    delta: float  # the compressor's contraction constant
    scale: float  # 1/(1 + omega) for an unbiased Q, else 1


@dataclass(kw_only=True)
class ChocoSGD(Decentralized):
    """CHOCO-SGD (Koloskova, Stich & Jaggi 2019, Algorithm 2); see the module docstring.

    ``consensus_step`` is the gamma of the gossip step; null: the theory value
    :func:`consensus_theory` of the graph's W and the compressor's delta. The learning rate
    eta is the run's stepsize. Metrics at the average model; ``consensus`` = (1/n) sum_i
    ||x_i - xbar||^2 and ``err2`` = (1/n) sum_i ||x_i - x_hat_i||^2, the compression error
    the copies still carry.
    """

    labels: ClassVar[dict[str, str]] = {"choco_sgd": "CHOCO-SGD"}

    consensus_step: float | None = ruled(None, Num(0, lo_open=True, null=True))  # the gossip step
    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive", "unbiased")
    metrics: ClassVar[tuple[str, ...]] = ("consensus", "err2")

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        W = state.W
        rho = spectral_gap(W)
        beta = float(np.linalg.norm(np.eye(problem.n) - W, 2))
        delta = float(self.compressor.contraction(problem.d))
        theory = consensus_theory(rho, beta, delta)
        gamma = theory if self.consensus_step is None else float(self.consensus_step)
        unbiased = self.compressor.kind == "unbiased"
        scale = 1.0 / (1.0 + self.compressor.omega(problem.d)) if unbiased else 1.0
        state = state.extend(
            ChocoState,
            X_hat=np.zeros((problem.n, problem.d)),
            gamma_c=gamma,
            beta=beta,
            delta=delta,
            scale=scale,
        )
        source = "theory" if self.consensus_step is None else "method.consensus_step"
        log.info(
            "%s: consensus step gamma = %.6g (%s; theory %s = %.6g, rho=%.6g, beta=%.6g, delta=%.6g)",
            self.name,
            gamma,
            source,
            CONSENSUS_FORMULA,
            theory,
            rho,
            beta,
            delta,
        )
        return state

    def info(self, state):
        return {
            **super().info(state),
            "consensus_step": state.gamma_c,
            "beta": state.beta,
            "delta": state.delta,
        }

    def measure(self, problem, state, fstar):
        return {
            **super().measure(problem, state, fstar),
            "err2": float(blocks.mean_sq_norm(state.X - state.X_hat)),
        }

    def step(self, problem, state, gamma, rng):
        X, X_hat = state.X, state.X_hat
        G, state.est, calls = state.estimator(problem, state.est, X, rng)
        X -= gamma * G  # x^{t+1/2}, in place: x^t is not needed again
        msg = self.compressor(X - X_hat, rng)
        q = msg.values if state.scale == 1.0 else state.scale * msg.values
        X_hat += q
        X += state.gamma_c * (state.W @ X_hat - X_hat)
        return self.finish(problem, state, msg.bits, msg.nnz, calls)
