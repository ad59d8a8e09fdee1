"""Distributed methods (SPEC.md section 4) as init/step pairs over explicit state.

All n workers are simulated at once as (n, d) arrays. ``step`` advances one round and
returns a :class:`Round` with the exact bits each worker sent, the server's broadcast,
the coordinates sent and the gradient-oracle calls. The server broadcasts the dense
aggregate (``float_bits * d`` downlink bits per round) unless a method says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from efbench.compressors import Compressor, Identity
from efbench.errors import ConfigError, check_choice
from efbench.estimators import make_estimator
from efbench.problems import LogisticProblem

EC_FORMS = ("scaled", "plain")


@dataclass
class Round:
    bits_up: np.ndarray  # (n,) bits each worker sent this round
    bits_down: int  # bits the server broadcast
    nnz: np.ndarray  # (n,) coordinates each worker sent
    calls: Any  # oracle calls per worker: scalar or (n,)


@dataclass
class State:
    x: np.ndarray
    est: Any = None
    e: np.ndarray | None = None  # error-feedback memory (n, d), where the method keeps one
    extra: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class Method:
    """Common configuration: a gradient estimator block and a compressor."""

    name: str
    estimator: dict = field(default_factory=lambda: {"kind": "full"})
    compressor: Compressor = field(default_factory=Identity)
    ec_form: str = "scaled"
    compressed: ClassVar[bool] = True
    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive", "unbiased", "absolute")

    def __post_init__(self) -> None:
        check_choice("method.ec_form", self.ec_form, EC_FORMS)
        if not self.compressed:
            self.compressor = Identity(float_bits=self.compressor.float_bits)
        if self.compressor.kind not in self.accepts:
            raise ConfigError(
                "compressor", f"method {self.name!r} does not take a {self.compressor.kind} "
                f"compressor ({type(self.compressor).__name__})", self.accepts)

    def init(self, problem: LogisticProblem, x0: np.ndarray, rng: np.random.Generator) -> State:
        self.est = make_estimator(self.estimator, problem)
        return State(x=x0.copy(), est=self.est.init(problem, x0, rng))

    def downlink(self, d: int) -> int:
        return self.compressor.float_bits * d

    def compress_step(self, gamma: float, u: np.ndarray, rng) -> tuple[np.ndarray, Any]:
        """v = gamma C(u / gamma) (``scaled``, lambda in gradient units) or C(u) (``plain``,
        lambda in x units): the two EC forms of SPEC.md section 4."""
        if self.ec_form == "scaled":
            msg = self.compressor(u / gamma, rng)
            return gamma * msg.values, msg
        msg = self.compressor(u, rng)
        return msg.values, msg

    def step(self, problem: LogisticProblem, state: State, gamma: float,
             rng: np.random.Generator) -> tuple[State, Round]:
        raise NotImplementedError


@dataclass(kw_only=True)
class Uncompressed(Method):
    """GD / SGD baseline: x^{k+1} = x^k - gamma (1/n) sum_i g_i^k, dense messages."""

    compressed: ClassVar[bool] = False

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        state.x -= (gamma / problem.n) * g.sum(axis=0)
        msg_bits = self.compressor.dense(g)
        return state, Round(msg_bits, self.downlink(problem.d), np.full(problem.n, problem.d), calls)


@dataclass(kw_only=True)
class CompressedGD(Method):
    """CGD: x^{k+1} = x^k - (1/n) sum_i gamma C(g_i^k), no error feedback. Known to diverge
    with biased compressors (Beznosikov et al. 2020): shown, not hidden."""

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        v, msg = self.compress_step(gamma, gamma * g, rng)
        state.x -= v.sum(axis=0) / problem.n
        return state, Round(msg.bits, self.downlink(problem.d), msg.nnz, calls)


@dataclass(kw_only=True)
class ErrorCompensated(Method):
    """Error-compensated SGD family (Stich & Karimireddy 2019; Danilova & Gorbunov 2022):

        v_i^k     = gamma C(e_i^k / gamma + g_i^k)     (ec_form=scaled)
                  = C(e_i^k + gamma g_i^k)             (ec_form=plain)
        e_i^{k+1} = e_i^k + gamma g_i^k - v_i^k
        x^{k+1}   = x^k - (1/n) sum_i v_i^k,   e_i^0 = 0

    With the full, SGD or L-SVRG estimator this is EC-GD, EC-SGD or EC-LSVRG.
    """

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = np.zeros((problem.n, problem.d))
        return state

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        u = state.e
        u += gamma * g  # e + gamma g, in place: e is rebuilt from it below
        v, msg = self.compress_step(gamma, u, rng)
        u -= v
        state.x -= v.sum(axis=0) / problem.n
        return state, Round(msg.bits, self.downlink(problem.d), msg.nnz, calls)
