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

from efbench import kernels
from efbench.compressors import Compressor, HardThreshold, Identity, Sign, TopK, index_width
from efbench.errors import ConfigError, check_choice, check_positive
from efbench.estimators import LSVRG, SGD, make_estimator, worker_shape
from efbench.problems import LogisticProblem
from efbench.stepsize import Schedule
from efbench.topology import mixing_matrix, spectral_gap

EC_FORMS = ("scaled", "plain")
ENGINES = ("auto", "numpy", "numba")


@dataclass
class Round:
    bits_up: np.ndarray  # (n,) bits each worker sent this round
    bits_down: int  # bits the server broadcast
    nnz: np.ndarray  # (n,) coordinates each worker sent
    calls: Any  # oracle calls per worker: scalar or (n,)
    skipped: Any = 0  # workers that sent nothing this round (lazy aggregation)


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

    def info(self) -> dict[str, float]:
        """Method constants worth printing and storing with the run (after ``init``)."""
        return {}

    @property
    def engine_used(self) -> str:
        """The engine that runs the steps (after ``init``): numpy unless a method fuses them."""
        return "numpy"

    def theory_factor(self, n: int, d: int) -> tuple[float, str]:
        """Extra factor of the theory stepsize this method needs, with its formula."""
        return 1.0, ""

    def schedule(self, default: Schedule, constants: dict) -> Schedule:
        """The stepsize schedule: the configured one unless the method prescribes its own."""
        return default

    def downlink(self, d: int) -> int:
        return self.compressor.float_bits * d

    def compress_step(self, gamma: float, u: np.ndarray, rng) -> tuple[np.ndarray, Any]:
        """v = gamma C(u / gamma) (``scaled``, lambda in gradient units) or C(u) (``plain``,
        lambda in x units): the two EC forms of SPEC.md section 4."""
        scaled = self.ec_form == "scaled"
        msg = self.compressor.compress_scaled(u, gamma, rng) if scaled else self.compressor(u, rng)
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
        state.x -= gamma * problem.worker_mean(g)
        msg_bits = self.compressor.dense(g)
        return state, Round(msg_bits, self.downlink(problem.d), np.full(g.shape[:-1], problem.d), calls)


@dataclass(kw_only=True)
class CompressedGD(Method):
    """CGD: x^{k+1} = x^k - (1/n) sum_i gamma C(g_i^k), no error feedback. Known to diverge
    with biased compressors (Beznosikov et al. 2020): shown, not hidden."""

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        v, msg = self.compress_step(gamma, gamma * g, rng)
        state.x -= problem.worker_mean(v)
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

    engine: str = "auto"  # auto: the fused numba step where it applies (FusedEC.unsupported)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("engine", self.engine, ENGINES)
        self._fused: FusedEC | None = None

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = np.zeros(worker_shape(problem, x0))
        self._fused = None
        if self.engine != "numpy":
            why = FusedEC.unsupported(self, problem)
            if why is None:
                self._fused = FusedEC.build(self, problem)
            elif self.engine == "numba":
                raise ConfigError("engine", f"numba runs ec_sgd*/ec_lsvrg with sampling.batch=1 and the "
                                  f"identity, ht or topk compressor, not {why}", ("auto", "numpy"))
        return state

    @property
    def engine_used(self) -> str:
        return "numpy" if self._fused is None else "numba"

    def step(self, problem, state, gamma, rng):
        if self._fused is not None:
            return self._fused.step(problem, state, gamma, rng)
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        u = state.e
        u += gamma * g  # e + gamma g, in place: e is rebuilt from it below
        v, msg = self.compress_step(gamma, u, rng)
        u -= v
        state.x -= problem.worker_mean(v)
        return state, Round(msg.bits, self.downlink(problem.d), msg.nnz, calls)


@dataclass
class FusedEC:
    """The numba step of :class:`ErrorCompensated` (see :mod:`efbench.kernels`): SGD or
    L-SVRG estimator with tau = 1, identity / hard-threshold / TopK compressor, a single run
    or batched seeds (x of shape (S, 1, d)). Holds the kernel's constant arguments so that
    a step is the draws and one compiled call; the draws are those of the numpy engine, in
    the same order (samples, then the L-SVRG coins)."""

    method: ErrorCompensated
    comp: int
    lam: float
    k: int
    cdf: np.ndarray  # the sampler's shifted CDFs (empty: uniform sampling)
    weights: np.ndarray
    lsvrg: bool
    args: tuple = ()  # index width, float bits, index bits, scaled form, downlink bits

    @staticmethod
    def unsupported(method: ErrorCompensated, problem: LogisticProblem) -> str | None:
        """Why the fused step cannot run this method (None: it can)."""
        est, comp = method.est, method.compressor
        if type(method) is not ErrorCompensated:
            return method.name
        if not isinstance(est, (SGD, LSVRG)):
            return f"the {type(est).__name__} estimator"
        if est.batch != 1:
            return f"sampling.batch={est.batch}"
        if not isinstance(comp, (Identity, HardThreshold, TopK)):
            return f"the {type(comp).__name__} compressor"
        if type(problem) is not LogisticProblem:  # the kernel's gradients are the logistic loss's
            return f"the {type(problem).__name__}"
        return None

    @classmethod
    def build(cls, method: ErrorCompensated, problem: LogisticProblem) -> FusedEC:
        est, comp = method.est, method.compressor
        code = {Identity: kernels.IDENTITY, HardThreshold: kernels.THRESHOLD, TopK: kernels.TOPK}[type(comp)]
        s, empty = est.sampler, np.zeros(0)
        fused = cls(method, code, float(getattr(comp, "lam", 0.0)), int(getattr(comp, "k", 0)),
                    empty if s.flat_cdf is None else s.flat_cdf,
                    empty if s.flat_weights is None else s.flat_weights, isinstance(est, LSVRG))
        fused.args = (index_width(problem.d), comp.float_bits, comp.index_bits, method.ec_form == "scaled",
                      method.downlink(problem.d))
        # compile (or load from numba's cache) now, off the clock, on throwaway arrays
        x0 = np.zeros(problem.d)
        state = State(x=x0, e=np.zeros((problem.n, problem.d)))
        if fused.lsvrg:
            state.est = est.init(problem, x0, np.random.default_rng(0))
        fused.step(problem, state, 1.0, np.random.default_rng(0))
        return fused

    def step(self, p: LogisticProblem, state: State, gamma: float, rng: np.random.Generator):
        iw, fb, ib, scaled, down = self.args
        u = rng.random(p.n)  # the draws of Sampler.draw(rng, 1), then the coins: same stream
        x_k, calls = None, 1
        if self.lsvrg:
            snap, snap_grad = state.est.w, state.est.gw
            refresh = self.method.est.coins(rng, p.n)
            calls = 2.0  # 2 tau, tau = 1
            if refresh.any():
                x_k = state.x.copy()  # w^{k+1} = x^k where refreshed
        else:
            snap, snap_grad = state.e, state.e
        single = state.x.ndim == 1  # the kernel takes a leading seed axis: S = 1 here
        x = state.x[None] if single else state.x[:, 0]
        if single:
            u, e, snap, snap_grad = u[None], state.e[None], snap[None], snap_grad[None]
        else:
            e = state.e
        bits, nnz = kernels.ec_step(p.flat, p.yflat, u, p.m, self.cdf, self.weights, x, e, gamma,
                            p.l2, self.comp, gamma * self.lam if scaled else self.lam, self.k, fb, iw,
                            ib, snap, snap_grad, self.lsvrg)
        if single:
            bits, nnz = bits[0], nnz[0]
        if x_k is not None:
            calls = self.method.est.apply(p, state.est, x_k, refresh)
        return state, Round(bits, down, nnz, calls)


def _dense_message(method: Method, problem: LogisticProblem) -> np.ndarray:
    return np.full(problem.n, method.compressor.float_bits * problem.d, dtype=np.int64)


@dataclass(kw_only=True)
class EF21(Method):
    """EF21 (Richtarik, Sokolov & Fatkhullin 2021), full or stochastic gradients:

        g_i^k = g_i^{k-1} + C(grad_i(x^k) - g_i^{k-1}),  x^{k+1} = x^k - gamma (1/n) sum_i g_i^k,

    g_i^0 = grad f_i(x^0), sent uncompressed in the first round (charged there).
    """

    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive")

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.extra["g"] = problem.worker_grads(x0)
        state.extra["first"] = True
        return state

    def step(self, problem, state, gamma, rng):
        g = state.extra["g"]
        if state.extra.pop("first", False):
            rnd = Round(_dense_message(self, problem), 0, np.full(problem.n, problem.d), problem.m)
        else:
            grad, state.est, calls = self.est(problem, state.est, state.x, rng)
            msg = self.compressor(grad - g, rng)
            g += msg.values
            rnd = Round(msg.bits, 0, msg.nnz, calls)
        state.x -= gamma * problem.worker_mean(g)
        rnd.bits_down = self.downlink(problem.d)
        return state, rnd


@dataclass(kw_only=True)
class CLAG(Method):
    """CLAG (Richtarik et al. 2022, 3PC): worker i is triggered when
    ||grad_i(x^k) - g_i^{k-1}||^2 > zeta ||grad_i(x^k) - grad_i(x^{k-1})||^2 and then sends
    C(grad_i(x^k) - g_i^{k-1}), added to g_i^{k-1}; otherwise it sends nothing (0 bits).
    x^{k+1} = x^k - gamma (1/n) sum_i g_i^k; g_i^0 = grad f_i(x^0) sent in full. With the
    identity compressor this is LAG (Chen et al. 2018); zeta = 0 gives EF21."""

    zeta: float = 1.0
    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("method.zeta", self.zeta, allow_zero=True)

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        grad = problem.worker_grads(x0)
        state.extra.update(g=grad.copy(), prev=grad, first=True)
        return state

    def step(self, problem, state, gamma, rng):
        g = state.extra["g"]
        n = problem.n
        if state.extra.pop("first", False):
            rnd = Round(_dense_message(self, problem), 0, np.full(n, problem.d), problem.m)
        else:
            grad = problem.worker_grads(state.x)
            diff = grad - g
            moved = grad - state.extra["prev"]
            fire = np.einsum("nd,nd->n", diff, diff) > self.zeta * np.einsum("nd,nd->n", moved, moved)
            state.extra["prev"] = grad
            bits = np.zeros(n, dtype=np.int64)
            nnz = np.zeros(n, dtype=np.int64)
            if fire.any():
                msg = self.compressor(diff[fire], rng)
                g[fire] += msg.values
                bits[fire], nnz[fire] = msg.bits, msg.nnz
            rnd = Round(bits, 0, nnz, problem.m, skipped=int(n - fire.sum()))
        state.x -= gamma * problem.worker_mean(g)
        rnd.bits_down = self.downlink(problem.d)
        return state, rnd


@dataclass(kw_only=True)
class LAG(CLAG):
    """LAG: lazily aggregated full gradients, sent uncompressed when triggered (see CLAG)."""

    compressed: ClassVar[bool] = False


@dataclass(kw_only=True)
class DIANA(Method):
    """DIANA (Mishchenko et al. 2019; Horvath et al. 2019), unbiased compressors Q only:

        Delta_i = g_i^k - h_i^k,  g^k = h^k + (1/n) sum_i Q(Delta_i),
        h_i^{k+1} = h_i^k + alpha Q(Delta_i),  x^{k+1} = x^k - gamma g^k,

    alpha = 1/(1 + omega) by default; the theory stepsize is divided by 1 + 2 omega / n.
    """

    alpha: float | None = None
    accepts: ClassVar[tuple[str, ...]] = ("identity", "unbiased")

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        omega = self.compressor.omega(problem.d)
        a = 1.0 / (1.0 + omega) if self.alpha is None else float(self.alpha)
        if not 0.0 < a <= 1.0 / (1.0 + omega) + 1e-12:
            raise ConfigError("method.alpha", f"must be in (0, 1/(1+omega)] = (0, {1 / (1 + omega):.4g}]"
                              f" for this compressor, got {self.alpha}")
        self._alpha, self._omega = a, omega
        state.extra.update(h=np.zeros((problem.n, problem.d)), hbar=np.zeros(problem.d))
        return state

    def info(self):
        return {"alpha": self._alpha, "omega": self._omega}

    def theory_factor(self, n, d):
        omega = self.compressor.omega(d)
        return 1.0 / (1.0 + 2.0 * omega / n), "/(1 + 2 omega/n)"

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        h, hbar = state.extra["h"], state.extra["hbar"]
        msg = self.compressor(g - h, rng)
        qbar = problem.worker_mean(msg.values)
        state.x -= gamma * (hbar + qbar)
        h += self._alpha * msg.values
        hbar += self._alpha * qbar
        return state, Round(msg.bits, self.downlink(problem.d), msg.nnz, calls)


@dataclass(kw_only=True)
class MemSGD(ErrorCompensated):
    """Mem-SGD (Stich, Cordonnier & Jaggi 2018), per worker:

        v_t = comp(m_t + eta_t g_t),  m_{t+1} = m_t + eta_t g_t - v_t,  x_{t+1} = x_t - mean_i v_t,

    with eta_t = a / (mu (b + t)) (b = a L / mu by default, so eta_0 = 1/L) and the weighted
    average xbar_T = sum_t w_t x_t / sum_t w_t, w_t = (b + t)^2, reported beside x_T.
    """

    a: float = 2.0
    b: float | None = None
    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive")

    def __post_init__(self) -> None:
        self.ec_form = "plain"
        super().__post_init__()
        check_positive("method.a", self.a)
        if self.b is not None:
            check_positive("method.b", self.b)

    def schedule(self, default, constants):
        b = self.a * constants["L"] / constants["mu"] if self.b is None else float(self.b)
        self._b = b
        return Schedule(self.a / (constants["mu"] * b),
                        f"a/(mu (b + k)), a={self.a:g}, b={b:.6g}", "inv", b)

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        if not hasattr(self, "_b"):  # not built through the runner, which calls schedule() first
            self.schedule(None, problem.constants())
        state.extra.update(x_avg=x0.copy(), w_sum=0.0, t=0)
        return state

    def step(self, problem, state, gamma, rng):
        ex = state.extra
        w = (self._b + ex["t"]) ** 2
        ex["w_sum"] += w
        ex["x_avg"] += (w / ex["w_sum"]) * (state.x - ex["x_avg"])  # running weighted mean of x_t
        ex["t"] += 1
        return super().step(problem, state, gamma, rng)


@dataclass(kw_only=True)
class EFSignSGD(ErrorCompensated):
    """EF-signSGD (Karimireddy et al. 2019): p_i = gamma g_i + e_i, v_i = (||p_i||_1/d) sign(p_i),
    e_i = p_i - v_i, x -= mean_i v_i. The compressor is always the scaled sign."""

    def __post_init__(self) -> None:
        self.compressor = Sign(float_bits=self.compressor.float_bits)
        self.ec_form = "plain"
        super().__post_init__()


@dataclass(kw_only=True)
class DoubleSqueeze(Method):
    """DoubleSqueeze (Tang et al. 2019): error-compensated compression on the workers and
    again on the server before the broadcast; downlink bits are the server message's.

        v_i = C(e_i + gamma g_i),  e_i <- e_i + gamma g_i - v_i
        u   = C(e_s + (1/n) sum_i v_i),  e_s <- e_s + (1/n) sum_i v_i - u,   x -= u
    (``ec_form=scaled`` compresses in gradient units: gamma C(. / gamma)).
    """

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = np.zeros((problem.n, problem.d))
        state.extra["e_server"] = np.zeros((1, problem.d))
        return state

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = self.est(problem, state.est, state.x, rng)
        u = state.e
        u += gamma * g
        v, msg = self.compress_step(gamma, u, rng)
        u -= v
        es = state.extra["e_server"]
        es += problem.worker_mean(v)
        w, down = self.compress_step(gamma, es, rng)
        es -= w
        state.x -= w[0]
        return state, Round(msg.bits, int(down.bits[0]), msg.nnz, calls)


@dataclass(kw_only=True)
class Decentralized(Method):
    """Common part of the decentralized methods: node models X (n, d) on a graph with mixing
    matrix W; ``state.x`` is their average, on which the metrics are evaluated. Every
    message goes to each neighbour: a node's bits are deg_i times its message."""

    topology: str = "ring"

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        self.W = mixing_matrix(self.topology, problem.n)
        self.deg = (np.count_nonzero(self.W, axis=1) - (np.diag(self.W) != 0)).astype(np.int64)
        state.extra["X"] = np.tile(x0, (problem.n, 1))
        return state

    def info(self):
        return {"spectral_gap": spectral_gap(self.W), "max_degree": int(self.deg.max())}

    def downlink(self, d):
        return 0

    def finish(self, problem, state, msg_bits, nnz, calls):
        state.x = state.extra["X"].mean(axis=0)
        return state, Round(self.deg * msg_bits, 0, nnz, calls)


@dataclass(kw_only=True)
class DPSGD(Decentralized):
    """D-PSGD (Lian et al. 2017): X^{k+1} = W X^k - gamma G(X^k), models sent uncompressed."""

    compressed: ClassVar[bool] = False

    def step(self, problem, state, gamma, rng):
        X = state.extra["X"]
        G, state.est, calls = self.est(problem, state.est, X, rng)
        state.extra["X"] = self.W @ X - gamma * G
        dense = _dense_message(self, problem)
        return self.finish(problem, state, dense, np.full(problem.n, problem.d), calls)


@dataclass(kw_only=True)
class DCDPSGD(Decentralized):
    """DCD-PSGD (Tang et al. 2018): Z = W X - gamma G(X) - X; each node broadcasts C(Z_i),
    and all copies move by it: X^{k+1} = X^k + C(Z). Unbiased compressors."""

    accepts: ClassVar[tuple[str, ...]] = ("identity", "unbiased")

    def step(self, problem, state, gamma, rng):
        X = state.extra["X"]
        G, state.est, calls = self.est(problem, state.est, X, rng)
        msg = self.compressor(self.W @ X - gamma * G - X, rng)
        X += msg.values
        return self.finish(problem, state, msg.bits, msg.nnz, calls)


@dataclass(kw_only=True)
class DeepSqueeze(Decentralized):
    """DeepSqueeze (Tang et al. 2019): error-compensated compression of the models,

        V = X - gamma G(X),  C_i = C(V_i + delta_i),  delta_i <- V_i + delta_i - C_i,
        X^{k+1} = V + eta (W - I) C.
    """

    eta: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("method.eta", self.eta)

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = np.zeros((problem.n, problem.d))
        return state

    def step(self, problem, state, gamma, rng):
        X = state.extra["X"]
        G, state.est, calls = self.est(problem, state.est, X, rng)
        V = X - gamma * G
        u = V + state.e
        msg = self.compressor(u, rng)
        state.e = u - msg.values
        state.extra["X"] = V + self.eta * (self.W @ msg.values - msg.values)
        return self.finish(problem, state, msg.bits, msg.nnz, calls)
