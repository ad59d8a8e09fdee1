"""Distributed methods (SPEC.md section 4) as init/step pairs over explicit state.

All n workers are simulated at once as (n, d) arrays. ``step`` advances one round and
returns a :class:`Round` with the exact bits each worker sent, the server's broadcast,
the coordinates sent and the gradient-oracle calls. The server broadcasts the dense
aggregate (``float_bits * d`` downlink bits per round) unless a method says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from efbench.core import blocks
from efbench.core.compressors import Compressor, HardThreshold, Identity, Sign, TopK
from efbench.core.estimation import EstimatorSpec
from efbench.core.participation import Participation
from efbench.core.rules import POSITIVE, PROB_OR_NULL, Choice, Num, check_fields, ruled
from efbench.core.stepsize import Schedule
from efbench.core.topology import mixing_matrix, spectral_gap
from efbench.errors import ConfigError
from efbench.methods.estimators import LSVRG, make_estimator
from efbench.methods.memory import ErrorFeedback, compress
from efbench.problems.base import Problem

EC_FORMS = ("scaled", "plain")


@dataclass
class Round:
    bits_up: np.ndarray  # (n,) bits each worker sent this round
    bits_down: int  # bits the server broadcast
    nnz: np.ndarray  # (n,) coordinates each worker sent
    calls: Any  # oracle calls per worker: scalar or (n,)
    skipped: Any = 0  # workers that sent nothing this round (lazy aggregation)
    link_bits: np.ndarray | None = None  # (n,) one neighbour's copy (gossip); None: bits_up


@dataclass
class State:
    """Everything a run carries from one step to the next; ``init`` returns it and ``step``
    returns it updated, so one method object serves any number of runs (optax's init/update).
    A method that carries more declares a subclass with its fields named and typed, which its
    ``init`` returns (:meth:`extend`) and its ``step`` reads."""

    x: np.ndarray
    estimator: Any = None  # the estimator bound to the problem (sampler tables), from init
    est: Any = None  # the estimator's own state
    e: np.ndarray | None = None  # error-feedback memory (n, d), where the method keeps one

    def extend(self, cls: type[S], **more: Any) -> S:
        """This state as its subclass ``cls``, every field carried over and ``more`` set: how
        a method's ``init`` adds its own fields to the state its parent's ``init`` returns."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(self)}, **more)


S = TypeVar("S", bound=State)


@dataclass(frozen=True)
class FusedSpec:
    """What the compiled step of :mod:`efbench.engine.fused` needs from a method: its compressor
    code and parameters, its sampler tables, and the L-SVRG coin."""

    comp: int
    lam: float
    k: int
    scaled: bool
    cdf: np.ndarray
    weights: np.ndarray
    lsvrg: bool
    coin: int
    p: float
    float_bits: int
    index_bits: bool

    def shape(self) -> tuple:
        """What must be equal for runs to share one kernel call (not lam, k, p)."""
        return (
            self.comp,
            self.scaled,
            self.lsvrg,
            self.coin,
            self.float_bits,
            self.index_bits,
            self.cdf.size,
        )


@dataclass(kw_only=True)
class Method:
    """Common configuration: a gradient estimator block and a compressor."""

    # display names of the method options it serves, where upper case with hyphens
    # (ec_sgd -> EC-SGD) is not the usual one
    labels: ClassVar[dict[str, str]] = {}

    name: str
    estimator: dict = field(default_factory=lambda: {"kind": "full"})
    compressor: Compressor = field(default_factory=Identity)
    participation: Participation = field(default_factory=Participation)
    ec_form: str = ruled("scaled", Choice(*EC_FORMS))
    # the ec_form values it computes (SPEC.md section 4), where it compresses a step gamma g
    # (:meth:`compress_step`, :meth:`memory`): another than the default is refused
    ec_forms: ClassVar[tuple[str, ...]] = ()
    compressed: ClassVar[bool] = True
    partial: ClassVar[bool] = False  # its analysis covers partial participation
    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive", "unbiased", "absolute")

    def __post_init__(self) -> None:
        check_fields(self, "method")
        if self.ec_form != "scaled" and self.ec_form not in self.ec_forms:
            raise ConfigError(
                "method.ec_form",
                f"method {self.name!r} computes {' or '.join(self.ec_forms) or 'no error-feedback form'}",
                ("scaled", *self.ec_forms) if self.ec_forms else "scaled, the default",
            )
        if not self.compressed:
            self.compressor = Identity(float_bits=self.compressor.float_bits)
        if not (self.participation.full or self.partial):
            raise ConfigError(
                "participation",
                f"the analysis of method {self.name!r} does not cover partial participation",
                ("full",),
            )
        if self.compressor.kind not in self.accepts:
            raise ConfigError(
                "compressor",
                f"method {self.name!r} does not take a {self.compressor.kind} "
                f"compressor ({type(self.compressor).__name__})",
                self.accepts,
            )

    metrics: ClassVar[tuple[str, ...]] = ()  # trace columns of this method beyond the common ones
    collective: ClassVar[str] = "ps"  # how its messages travel (core.network): ps | allreduce | gossip

    def init(self, problem: Problem, x0: np.ndarray, rng: np.random.Generator) -> State:
        est = make_estimator(self.estimator, problem)
        return State(x=x0.copy(), estimator=est, est=est.init(problem, x0, rng))

    def info(self, state: State) -> dict[str, float]:
        """Method constants worth printing and storing with the run (from its initial state)."""
        return {}

    def measure(self, problem: Problem, state: State, fstar: float) -> dict[str, float]:
        """The values of the declared ``metrics`` that come from the state."""
        return {}

    def check_shape(self, d: int, n: int) -> None:
        """Check the settings against the problem's dimension d and worker count n before any
        data are read (:func:`efbench.config.schema.validate`); raise ConfigError naming the key. A
        method with such a limit overrides it."""

    def unfused(self) -> str | None:
        """Why the compiled step cannot run this method, from its settings alone (None: it
        can, on a logistic problem): what ``engine=numba`` checks before any data are read."""
        return f"{self.name} has no compiled step"

    def fuse(self, problem: Problem) -> FusedSpec | str:
        """How the compiled step runs this method, or why it cannot."""
        return self.unfused() or f"{self.name} has no compiled step"

    def theory(self, constants: dict, base: tuple[float, str]) -> tuple[float, str]:
        """The stepsize its paper's theory gives, with its formula, from the problem's
        ``constants`` (L, mu, L_tilde, n, d, ...) and ``base``: the estimator's rule
        (1/L for full gradients, 1/(L + L_S/(n tau)) for SGD; SPEC.md section 5). A formula
        names its source in brackets: paper and theorem, and "derived" or "borrowed" where
        the constant is not the theorem's own. Methods without a rule of their own take
        ``base``, whose bracket says where it is borrowed from."""
        return base

    def schedule(self, default: Schedule, constants: dict) -> Schedule:
        """The stepsize schedule: the configured one unless the method prescribes its own."""
        return default

    def downlink(self, d: int) -> int:
        return self.compressor.float_bits * d

    def compress_step(self, gamma: float, u: np.ndarray, rng) -> tuple[np.ndarray, Any]:
        """v = gamma C(u / gamma) (``scaled``, lambda in gradient units) or C(u) (``plain``,
        lambda in x units): the two EC forms of SPEC.md section 4, without a memory."""
        msg = compress(self.compressor, self.ec_form, u, gamma, rng)
        return msg.values, msg

    @property
    def estimator_spec(self) -> EstimatorSpec:
        """The ``estimator`` block, typed, its defaults filled in (:class:`EstimatorSpec`)."""
        return EstimatorSpec.of(self.estimator)

    @property
    def memory(self) -> ErrorFeedback:
        """The error-feedback rule of this method's compressor and EC form, for the methods
        that keep a memory (:mod:`efbench.methods.memory`)."""
        return ErrorFeedback(self.compressor, self.ec_form)

    def step(
        self, problem: Problem, state: State, gamma: float, rng: np.random.Generator
    ) -> tuple[State, Round]:
        raise NotImplementedError


@dataclass(kw_only=True)
class Uncompressed(Method):
    """GD / SGD baseline: x^{k+1} = x^k - gamma (1/n) sum_i g_i^k, dense messages."""

    compressed: ClassVar[bool] = False
    collective: ClassVar[str] = "allreduce"  # dense gradients are summed in transit

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = state.estimator(problem, state.est, state.x, rng)
        state.x -= gamma * problem.worker_mean(g)
        msg_bits = self.compressor.dense(g)
        return state, Round(msg_bits, self.downlink(problem.d), np.full(g.shape[:-1], problem.d), calls)


@dataclass(kw_only=True)
class CompressedGD(Method):
    """CGD: x^{k+1} = x^k - (1/n) sum_i gamma C(g_i^k), no error feedback. Known to diverge
    with biased compressors (Beznosikov et al. 2020): shown, not hidden."""

    ec_forms: ClassVar[tuple[str, ...]] = EC_FORMS

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = state.estimator(problem, state.est, state.x, rng)
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

    With the full, SGD or L-SVRG estimator this is EC-GD, EC-SGD or EC-LSVRG. The memory rule
    is :class:`efbench.methods.memory.ErrorFeedback` with c = gamma g_i^k.
    """

    ec_forms: ClassVar[tuple[str, ...]] = EC_FORMS

    metrics: ClassVar[tuple[str, ...]] = ("err2",)

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = self.memory.init(problem.n, problem.d)
        return state

    def measure(self, problem, state, fstar):
        return {"err2": _mean_sq_norm(state.e)}

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = state.estimator(problem, state.est, state.x, rng)
        v, msg = self.memory.update(state.e, gamma * g, gamma, rng)
        state.x -= problem.worker_mean(v)
        return state, Round(msg.bits, self.downlink(problem.d), msg.nnz, calls)

    def unfused(self):
        kind = self.estimator_spec.kind
        if type(self) is not ErrorCompensated:
            return f"{self.name} has no compiled step"
        if kind not in ("sgd", "lsvrg"):
            return f"the {kind} estimator has no compiled step (stochastic or L-SVRG only)"
        if self.estimator_spec.batch != 1:
            return f"sampling.batch={self.estimator_spec.batch} has no compiled step (batch 1 only)"
        if type(self.compressor) not in FUSED_COMPRESSORS:
            return (
                f"the {type(self.compressor).__name__} compressor has no compiled step (identity, ht, topk)"
            )
        return None

    def fuse(self, problem):
        why = self.unfused()
        if why is not None:
            return why
        if not problem.compiled_gradients:  # the kernel's gradients are the l2-regularized logistic loss's
            return f"the {type(problem).__name__} has no compiled step"
        est = make_estimator(self.estimator, problem)
        comp = self.compressor
        code = comp.code if isinstance(comp, TopK) else FUSED_COMPRESSORS[type(comp)]  # its tie rule
        s, empty = est.sampler, np.zeros(0)
        lsvrg = isinstance(est, LSVRG)
        coin = (2 if est.coin == "per_worker" else 1) if lsvrg else 0
        return FusedSpec(
            code,
            float(getattr(comp, "lam", 0.0)),
            int(getattr(comp, "k", 1)),
            self.ec_form == "scaled",
            empty if s.flat_cdf is None else s.flat_cdf,
            empty if s.flat_weights is None else s.flat_weights,
            lsvrg,
            coin,
            est.p if lsvrg else 0.0,
            comp.float_bits,
            comp.index_bits,
        )


FUSED_COMPRESSORS = {Identity: blocks.IDENTITY, HardThreshold: blocks.THRESHOLD, TopK: blocks.TOPK}


def _mean_sq_norm(V: np.ndarray) -> float:
    """(1/n) sum_i ||V_i||^2 for V (n, d) (:func:`efbench.core.blocks.mean_sq_norm`)."""
    return float(blocks.mean_sq_norm(np.ascontiguousarray(V)))


def _dense_message(method: Method, problem: Problem) -> np.ndarray:
    return np.full(problem.n, method.compressor.float_bits * problem.d, dtype=np.int64)


@dataclass(kw_only=True)
class DIANAState(State):
    """DIANA's shifts: each worker's h_i, their mean, and the constants alpha, omega."""

    h: np.ndarray  # (n, d) h_i^k
    hbar: np.ndarray  # (d,) h^k = (1/n) sum_i h_i^k, kept by the server
    alpha: float
    omega: float


@dataclass(kw_only=True)
class DIANA(Method):
    """DIANA (Mishchenko et al. 2019; Horvath et al. 2019), unbiased compressors Q only:

        Delta_i = g_i^k - h_i^k,  g^k = h^k + (1/n) sum_i Q(Delta_i),
        h_i^{k+1} = h_i^k + alpha Q(Delta_i),  x^{k+1} = x^k - gamma g^k,

    alpha = 1/(1 + omega) by default (any alpha in (0, 1/(1 + omega)]); the theory stepsize
    is 1/((1 + 6 omega/n) L_max) (:meth:`theory`).
    """

    alpha: float | None = ruled(None, PROB_OR_NULL)
    accepts: ClassVar[tuple[str, ...]] = ("identity", "unbiased")

    def check_shape(self, d: int, n: int) -> None:
        """alpha in (0, 1/(1 + omega)], omega the compressor's at dimension d."""
        self._alpha(d)

    def _alpha(self, d: int) -> tuple[float, float]:
        """alpha (1/(1 + omega) unless set) and omega at dimension d, alpha checked."""
        omega = self.compressor.omega(d)
        a = 1.0 / (1.0 + omega) if self.alpha is None else float(self.alpha)
        if not 0.0 < a <= 1.0 / (1.0 + omega) + 1e-12:
            raise ConfigError(
                "method.alpha",
                f"must be in (0, 1/(1+omega)] = (0, {1 / (1 + omega):.4g}]"
                f" for this compressor, got {self.alpha}",
            )
        return a, omega

    def init(self, problem, x0, rng):
        a, omega = self._alpha(problem.d)
        state = super().init(problem, x0, rng)
        return state.extend(
            DIANAState, h=np.zeros((problem.n, problem.d)), hbar=np.zeros(problem.d), alpha=a, omega=omega
        )

    def info(self, state):
        return {"alpha": state.alpha, "omega": state.omega}

    def theory(self, constants, base):
        """gamma = 1/((1 + 6 omega/n) L), L = L_max = max_i L_i: the unified theorem of
        Gorbunov, Hanzely & Richtarik (AISTATS 2020, Theorem 4.1: gamma <= min(1/mu,
        1/(A + C M)) for any M > B/rho) with DIANA's parameters

            E||g^k - grad f(x*)||^2 <= 2 A D_f(x^k, x*) + B sigma^k + D_1,
            E sigma^{k+1}           <= (1 - rho) sigma^k + 2 C D_f(x^k, x*) + D_2,
            A = (1 + 2 omega/n) L,  B = 2 omega/n,  rho = alpha,  C = alpha L,

        sigma^k = (1/n) sum_i ||h_i^k - grad f_i(x*)||^2, at M = 2 B/rho = 4 omega/(n alpha):
        A + C M = (1 + 6 omega/n) L for every alpha <= 1/(1 + omega). A and B follow from
        E||Q(v) - v||^2 <= omega ||v||^2 and ||grad f_i(x) - grad f_i(x*)||^2 <= 2 L
        D_{f_i}(x, x*), which asks every f_i to be convex and L-smooth: L is L_max, not the
        smoothness of f; rho and C from alpha (1 + omega) <= 1. A stochastic estimator with
        bounded variance sigma_i^2 (the logistic sample gradients are bounded) adds D_1 =
        (1 + omega) sigma^2/n and D_2 = alpha sigma^2, a neighbourhood of x*, and leaves A, B,
        rho, C: the same stepsize (the paper's DIANA with stochastic gradients), not the
        estimator's rule ``base``. omega = 0 (identity) is gradient descent's 1/L_max."""
        omega = self.compressor.omega(constants["d"])
        L = constants["L_i_max"]
        return 1.0 / ((1.0 + 6.0 * omega / constants["n"]) * L), (
            f"1/((1 + 6 omega/n) L_max) [Gorbunov et al. 2020, Thm 4.1 with DIANA's A, B, rho, C, "
            f"M = 2B/rho], omega={omega:.4g}, n={constants['n']}, L_max={L:.6g}"
        )

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = state.estimator(problem, state.est, state.x, rng)
        msg = self.compressor(g - state.h, rng)
        qbar = problem.worker_mean(msg.values)
        state.x -= gamma * (state.hbar + qbar)
        state.h += state.alpha * msg.values
        state.hbar += state.alpha * qbar
        return state, Round(msg.bits, self.downlink(problem.d), msg.nnz, calls)


@dataclass(kw_only=True)
class MemSGDState(State):
    """Mem-SGD's weighted average of the iterates and what it is updated with."""

    x_avg: np.ndarray  # (d,) xbar_t = sum_{s < t} w_s x_s / sum_{s < t} w_s (x^0 before any step)
    ratio: float  # W_t / w_t, W_t = sum_{s <= t} w_s: the inverse of x_t's share in xbar
    t: int  # steps taken
    b: float  # the schedule's shift: w_t = (b + t)^2


@dataclass(kw_only=True)
class MemSGD(ErrorCompensated):
    """Mem-SGD (Stich, Cordonnier & Jaggi 2018), per worker:

        v_t = comp(m_t + eta_t g_t),  m_{t+1} = m_t + eta_t g_t - v_t,  x_{t+1} = x_t - mean_i v_t,

    with eta_t = a / (mu (b + t)) (b = a L / mu by default, so eta_0 = 1/L) and the weighted
    average xbar_T = sum_t w_t x_t / sum_t w_t, w_t = (b + t)^2, reported beside x_T.
    """

    labels: ClassVar[dict[str, str]] = {"mem_sgd": "Mem-SGD"}
    ec_forms: ClassVar[tuple[str, ...]] = ("plain",)  # m_t + eta_t g_t

    a: float = ruled(2.0, POSITIVE)
    b: float | None = ruled(None, Num(0, lo_open=True, null=True))
    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive")

    def __post_init__(self) -> None:
        self.ec_form = "plain"
        super().__post_init__()

    metrics: ClassVar[tuple[str, ...]] = ("err2", "gap_avg")

    def shift(self, constants: dict) -> float:
        """b: a L / mu unless set."""
        return self.a * constants["L"] / constants["mu"] if self.b is None else float(self.b)

    def schedule(self, default, constants):
        """eta_t = a/(mu (b + t)) times stepsize.multiplier (1 by default: the paper's schedule;
        a tuning sweep scales it as it scales every other method's stepsize)."""
        b = self.shift(constants)
        mult = default.multiplier
        return Schedule(
            mult * self.a / (constants["mu"] * b),
            (f"{mult:g} * " if mult != 1.0 else "")
            + f"a/(mu (b + k)) [the schedule shape of Stich, Cordonnier & Jaggi 2018; a, b set here], "
            f"a={self.a:g}, b={b:.6g}",
            "inv",
            b,
            mult,
        )

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        return state.extend(MemSGDState, x_avg=x0.copy(), ratio=1.0, t=0, b=self.shift(problem.constants()))

    def measure(self, problem, state, fstar):
        return {
            **super().measure(problem, state, fstar),
            "gap_avg": problem.loss(state.x_avg) - fstar,
        }

    def step(self, problem, state, gamma, rng):
        t, b = state.t, state.b
        # the running weighted mean of x_t moves by w_t / W_t, W_t = sum_{s <= t} w_s; its
        # inverse W_t / w_t = 1 + (W_{t-1} / w_{t-1}) (w_{t-1} / w_t) takes weight ratios
        # only, so (b + t)^2 neither overflows (a huge b) nor vanishes (a tiny one)
        state.ratio = 1.0 if t == 0 else 1.0 + state.ratio * ((b + t - 1) / (b + t)) ** 2
        state.x_avg += (state.x - state.x_avg) / state.ratio
        state.t += 1
        return super().step(problem, state, gamma, rng)


@dataclass(kw_only=True)
class EFSignSGD(ErrorCompensated):
    """EF-signSGD (Karimireddy et al. 2019): p_i = gamma g_i + e_i, v_i = (||p_i||_1/d) sign(p_i),
    e_i = p_i - v_i, x -= mean_i v_i. The compressor is always the scaled sign."""

    labels: ClassVar[dict[str, str]] = {"ef_signsgd": "EF-signSGD"}
    ec_forms: ClassVar[tuple[str, ...]] = ("plain",)  # p_i = gamma g_i + e_i

    def __post_init__(self) -> None:
        self.compressor = Sign(float_bits=self.compressor.float_bits)
        self.ec_form = "plain"
        super().__post_init__()


@dataclass(kw_only=True)
class DoubleSqueezeState(State):
    """DoubleSqueeze's server memory, beside the workers' (``e``)."""

    e_server: np.ndarray  # (1, d) e_s


@dataclass(kw_only=True)
class DoubleSqueeze(Method):
    """DoubleSqueeze (Tang et al. 2019): error-compensated compression on the workers and
    again on the server before the broadcast; downlink bits are the server message's.

        v_i = C(e_i + gamma g_i),  e_i <- e_i + gamma g_i - v_i
        u   = C(e_s + (1/n) sum_i v_i),  e_s <- e_s + (1/n) sum_i v_i - u,   x -= u
    (``ec_form=scaled`` compresses in gradient units: gamma C(. / gamma)). Both are
    :class:`efbench.methods.memory.ErrorFeedback`.
    """

    ec_forms: ClassVar[tuple[str, ...]] = EC_FORMS

    labels: ClassVar[dict[str, str]] = {"double_squeeze": "DoubleSqueeze"}

    metrics: ClassVar[tuple[str, ...]] = ("err2",)

    def measure(self, problem, state, fstar):
        return {"err2": _mean_sq_norm(state.e)}

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = self.memory.init(problem.n, problem.d)
        return state.extend(DoubleSqueezeState, e_server=self.memory.init(1, problem.d))

    def step(self, problem, state, gamma, rng):
        g, state.est, calls = state.estimator(problem, state.est, state.x, rng)
        v, msg = self.memory.update(state.e, gamma * g, gamma, rng)
        w, down = self.memory.update(state.e_server, problem.worker_mean(v), gamma, rng)
        state.x -= w[0]
        return state, Round(msg.bits, int(down.bits[0]), msg.nnz, calls)


@dataclass(kw_only=True)
class DecentralizedState(State):
    """The node models of a decentralized method and its graph; ``x`` is their average."""

    X: np.ndarray  # (n, d) x_i, node i's model
    W: np.ndarray  # (n, n) the mixing matrix
    deg: np.ndarray  # (n,) int64 each node's neighbours (copies of a message it sends)


@dataclass(kw_only=True)
class Decentralized(Method):
    """Common part of the decentralized methods: node models X (n, d) on a graph with mixing
    matrix W; ``state.x`` is their average, on which the metrics are evaluated. Every
    message goes to each neighbour: a node's bits are deg_i times its message."""

    topology: str = ruled("ring", Choice("ring", "complete", "torus"))
    metrics: ClassVar[tuple[str, ...]] = ("consensus",)
    collective: ClassVar[str] = "gossip"

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        W = mixing_matrix(self.topology, problem.n)
        deg = (np.count_nonzero(W, axis=1) - (np.diag(W) != 0)).astype(np.int64)
        return state.extend(DecentralizedState, X=np.tile(x0, (problem.n, 1)), W=W, deg=deg)

    def info(self, state):
        return {"spectral_gap": spectral_gap(state.W), "max_degree": int(state.deg.max())}

    def measure(self, problem, state, fstar):
        """consensus = (1/n) sum_i ||x_i - xbar||^2."""
        return {"consensus": _mean_sq_norm(state.X - state.x)}

    def downlink(self, d):
        return 0

    def finish(self, problem, state, msg_bits, nnz, calls):
        state.x = state.X.mean(axis=0)
        link = np.broadcast_to(msg_bits, (problem.n,))
        return state, Round(state.deg * msg_bits, 0, nnz, calls, link_bits=link)


@dataclass(kw_only=True)
class DPSGD(Decentralized):
    """D-PSGD (Lian et al. 2017): X^{k+1} = W X^k - gamma G(X^k), models sent uncompressed."""

    compressed: ClassVar[bool] = False

    def step(self, problem, state, gamma, rng):
        X = state.X
        G, state.est, calls = state.estimator(problem, state.est, X, rng)
        state.X = state.W @ X - gamma * G
        dense = _dense_message(self, problem)
        return self.finish(problem, state, dense, np.full(problem.n, problem.d), calls)


@dataclass(kw_only=True)
class DCDPSGD(Decentralized):
    """DCD-PSGD (Tang et al. 2018): Z = W X - gamma G(X) - X; each node broadcasts C(Z_i),
    and all copies move by it: X^{k+1} = X^k + C(Z). Unbiased compressors."""

    accepts: ClassVar[tuple[str, ...]] = ("identity", "unbiased")

    def step(self, problem, state, gamma, rng):
        X = state.X
        G, state.est, calls = state.estimator(problem, state.est, X, rng)
        msg = self.compressor(state.W @ X - gamma * G - X, rng)
        X += msg.values
        return self.finish(problem, state, msg.bits, msg.nnz, calls)


@dataclass(kw_only=True)
class DeepSqueeze(Decentralized):
    """DeepSqueeze (Tang et al. 2019): error-compensated compression of the models,

    V = X - gamma G(X),  C_i = C(V_i + delta_i),  delta_i <- V_i + delta_i - C_i,
    X^{k+1} = V + eta (W - I) C,

    delta the memory ``e`` of :class:`efbench.methods.memory.ErrorFeedback`, in the ``plain``
    form whatever ``ec_form`` says: what is compressed is a model, not a step gamma g.
    """

    labels: ClassVar[dict[str, str]] = {"deep_squeeze": "DeepSqueeze"}
    ec_forms: ClassVar[tuple[str, ...]] = ("plain",)

    eta: float = ruled(0.05, POSITIVE)  # the consensus step
    metrics: ClassVar[tuple[str, ...]] = ("consensus", "err2")

    def measure(self, problem, state, fstar):
        return {**super().measure(problem, state, fstar), "err2": _mean_sq_norm(state.e)}

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        state.e = self.memory.init(problem.n, problem.d)
        return state

    @property
    def memory(self) -> ErrorFeedback:
        return ErrorFeedback(self.compressor, "plain")  # a model has no gradient units to scale to

    def step(self, problem, state, gamma, rng):
        X = state.X
        G, state.est, calls = state.estimator(problem, state.est, X, rng)
        V = X - gamma * G
        c, msg = self.memory.update(state.e, V, gamma, rng)
        state.X = V + self.eta * (state.W @ c - c)
        return self.finish(problem, state, msg.bits, msg.nnz, calls)
