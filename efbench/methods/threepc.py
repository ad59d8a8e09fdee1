"""Three point compressors (3PC) and the one method that runs any of them.

Richtarik, Sokolov, Fatkhullin, Gasanov, Li & Gorbunov, "3PC: Three Point Compressors for
Communication-Efficient Distributed Training and a Better Theory for Lazy Aggregation",
ICML 2022. A three point compressor is a (possibly random) map g' = M_{h,y}(x) with
constants 0 < A <= 1, B >= 0 such that, for all h, y, x,

    E ||M_{h,y}(x) - x||^2 <= (1 - A) ||h - y||^2 + B ||x - y||^2.

The 3PC method (the paper's Algorithm 1), all n workers at once:

    x^{t+1}   = x^t - gamma g^t,   g^t = (1/n) sum_i g_i^t,
    g_i^{t+1} = M_{h = g_i^t, y = grad f_i(x^t)}(x = grad f_i(x^{t+1})),

with g_i^0 = grad f_i(x^0), sent in full in the first round. Its Theorem 5.5 (nonconvex) allows
gamma <= 1/(L_- + L_+ sqrt(B/A)); with L_- = L and L_+ <= L_tilde = sqrt((1/n) sum_i L_i^2)
the theory stepsize is gamma = 1/(L + L_tilde sqrt(B/A)).

A mechanism (:class:`Mechanism`) is one small class: its update rule (``__call__``, which also
returns the bits and coordinates each worker sent) and its (A, B). The paper's Table 1 gives
EF21, LAG, CLAG and 3PCv1..3PCv5; all are here. :class:`ThreePC` runs any of them by name
(``mechanism`` in the YAML); EF21, CLAG and LAG (``efbench.methods.base``) are the same method
with their mechanism fixed, and EF21 takes the extensions of Fatkhullin, Sokolov, Gorbunov,
Li & Richtarik, "EF21 with Bells & Whistles" (2021): EF21-SGD (a stochastic estimator),
EF21-PP (``participation``), EF21-BC (:class:`EF21BC`) and EF21-HB (:class:`EF21HB`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from efbench.core.compressors import Compressor, Identity, RandK, TopK, sparse_bits
from efbench.core.rules import PROB_OR_NULL, Bound, Choice, Int, Num, Rule, ruled
from efbench.errors import ConfigError, check_choice
from efbench.methods.base import Method, Round, State, _dense_message
from efbench.problems.base import Problem


def young(q: float) -> tuple[float, float]:
    """(A, B) of a map with E||M - x||^2 <= q ||x - h||^2 (q < 1), by Young's inequality
    ||x - h||^2 <= (1 + s)||h - y||^2 + (1 + 1/s)||x - y||^2 with the s minimising B/A,
    s = 1/sqrt(q) - 1: A = 1 - sqrt(q), B = q/A (EF21's lemma; q = 0 gives A = 1, B = 0)."""
    A = 1.0 - math.sqrt(q)
    return A, q / A


THREEPC_RULE = "[Richtarik et al. 2022, Thm 5.5]"
EF21_PP_RULE = "[Fatkhullin et al. 2021, EF21-PP theorem at its best s, rho: derived]"


def theory_gamma(constants: dict, A: float, B: float) -> float:
    """gamma = 1/(L + L_tilde sqrt(B/A)) (the 3PC theorem with L_+ <= L_tilde)."""
    return 1.0 / (constants["L"] + constants["L_tilde"] * math.sqrt(B / A))


class Sent(NamedTuple):
    """One application of a mechanism to r workers' rows."""

    g: np.ndarray  # (r, d) the new g_i
    bits: np.ndarray  # (r,) int64 bits each worker sent
    nnz: np.ndarray  # (r,) coordinates each worker sent
    spoke: np.ndarray  # (r,) bool: the worker sent a message (a lazy one may not)


def _everyone(rows: int) -> np.ndarray:
    return np.ones(rows, dtype=bool)


def _delta_bits(comp: Compressor, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bits and coordinates of sending the rows of ``delta`` exactly: its nonzeros as a sparse
    message or the dense vector, whichever is cheaper."""
    d = delta.shape[1]
    nnz = np.count_nonzero(delta, axis=1).astype(np.int64)
    sparse = sparse_bits(nnz, d, comp.float_bits, comp.index_bits)
    return np.minimum(sparse, comp.float_bits * d).astype(np.int64), nnz


MECHANISMS: dict[str, type[Mechanism]] = {}


@dataclass(kw_only=True)
class Mechanism:
    """A three point compressor M_{h,y}(x) with contractive compressor C (``compressor``),
    applied row-wise to (r, d) arrays h, y, x. Subclasses set ``key`` (its name in the
    ``mechanism`` setting of :class:`ThreePC`), write the update rule as the paper does in
    their docstring, and implement ``__call__``, ``constants`` and ``formula``. Their other
    dataclass fields are the method settings they take (zeta, k2, p, inner)."""

    compressor: Compressor
    key: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MECHANISMS[cls.key] = cls

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The method settings this mechanism takes (its fields beyond the compressor)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.name != "compressor")

    def validate(self, d: int) -> None:
        """Check the settings against the dimension; raise ConfigError naming the key."""

    def alpha(self, d: int) -> float:
        return self.compressor.contraction(d)

    def constants(self, d: int) -> tuple[float, float]:
        """The paper's (A, B) for dimension d."""
        raise NotImplementedError

    def formula(self) -> str:
        """How (A, B) are computed, for the printed stepsize formula."""
        raise NotImplementedError

    def __call__(self, h: np.ndarray, y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> Sent:
        raise NotImplementedError


@dataclass(kw_only=True)
class EF21Mechanism(Mechanism):
    """EF21 (Richtarik, Sokolov & Fatkhullin 2021): M = h + C(x - h); the worker sends
    C(x - h). A = 1 - sqrt(1 - alpha), B = (1 - alpha)/A."""

    key: ClassVar[str] = "ef21"

    def constants(self, d):
        return young(1.0 - self.alpha(d))

    def formula(self):
        return "A = 1 - sqrt(1 - alpha), B = (1 - alpha)/A"

    def __call__(self, h, y, x, rng):
        msg = self.compressor(x - h, rng)
        return Sent(h + msg.values, msg.bits, msg.nnz, _everyone(len(h)))


@dataclass(kw_only=True)
class CLAGMechanism(Mechanism):
    """CLAG (the paper's new lazy method): M = h + C(x - h) if ||x - h||^2 > zeta ||x - y||^2,
    else h (the worker sends nothing: 0 bits). A = 1 - sqrt(1 - alpha),
    B = max((1 - alpha)/A, zeta). A coordinate C sends whole lands on x_j exactly
    (:func:`_land`)."""

    zeta: float
    key: ClassVar[str] = "clag"

    def constants(self, d):
        A, B = young(1.0 - self.alpha(d))
        return A, max(B, self.zeta)

    def formula(self):
        return f"A = 1 - sqrt(1 - alpha), B = max((1 - alpha)/A, zeta), zeta={self.zeta:g}"

    def triggered(self, h: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The lazy trigger ||x - h||^2 > zeta ||x - y||^2 per row. Right after a full send
        h = y exactly (:func:`_land`, LAG's x), so the two norms are the same sum of the same
        numbers and zeta = 1 ties exactly: nothing is sent, as the paper's strict inequality
        says."""
        diff, moved = x - h, x - y
        return np.einsum("nd,nd->n", diff, diff) > self.zeta * np.einsum("nd,nd->n", moved, moved)

    def __call__(self, h, y, x, rng):
        fire = self.triggered(h, y, x)
        g = h.copy()
        bits = np.zeros(len(h), dtype=np.int64)
        nnz = np.zeros(len(h), dtype=np.int64)
        if fire.any():  # only the triggered workers compress: a random C draws for them alone
            hf, xf = h[fire], x[fire]
            diff = xf - hf
            msg = self.compressor(diff, rng)
            g[fire] = _land(hf, xf, diff, msg.values)
            bits[fire], nnz[fire] = msg.bits, msg.nnz
        return Sent(g, bits, nnz, fire)


def _land(h: np.ndarray, x: np.ndarray, diff: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """h + C(x - h) for the message ``sent`` = C(diff), diff = x - h: x_j where C sent
    diff_j whole (there h_j + (x_j - h_j) = x_j, which h_j + diff_j can miss by a rounding),
    h_j + sent_j elsewhere. Without it a lazy worker that sent everything would hold g_i a
    rounding error away from y = grad f_i(x^t), and zeta = 1's exact tie
    ||x - h||^2 = ||x - y||^2 in the next round would be broken by that error either way."""
    return np.where(sent == diff, x, h + sent)


@dataclass(kw_only=True)
class LAGMechanism(CLAGMechanism):
    """LAG (Chen, Giannakis, Sun & Yin 2018) as the paper's Table 1 writes it: M = x if
    ||x - h||^2 > zeta ||x - y||^2, else h; a triggered worker sends its gradient x itself,
    dense (F d bits), and g_i' = x exactly. A = 1, B = zeta. CLAG with the identity
    compressor is the same map (:func:`_land` lands every coordinate on x)."""

    key: ClassVar[str] = "lag"

    def __post_init__(self) -> None:
        self.compressor = Identity(float_bits=self.compressor.float_bits)

    def constants(self, d):
        return 1.0, self.zeta

    def formula(self):
        return f"A = 1, B = zeta, zeta={self.zeta:g}"

    def __call__(self, h, y, x, rng):
        fire = self.triggered(h, y, x)
        d = h.shape[1]
        bits = np.where(fire, self.compressor.float_bits * d, 0).astype(np.int64)
        return Sent(np.where(fire[:, None], x, h), bits, np.where(fire, d, 0).astype(np.int64), fire)


@dataclass(kw_only=True)
class V1(Mechanism):
    """3PCv1: M = y + C(x - y). A = 1, B = 1 - alpha. The server knows h = g_i^t but not
    y = grad f_i(x^t), so the worker sends M - h = (y - h) + C(x - y) exactly: its nonzeros,
    or F d bits dense, whichever is cheaper (in general dense; the authors' experiments count
    only the K values of C(x - y)). A coordinate C sends whole lands on x_j exactly
    (:func:`_land`): y_j + (x_j - y_j) can miss x_j by an ulp, and next round that rounding
    would be a nonzero of M - h that the paper's message does not have, charged as a sent
    coordinate."""

    key: ClassVar[str] = "3pcv1"

    def constants(self, d):
        return 1.0, 1.0 - self.alpha(d)

    def formula(self):
        return "A = 1, B = 1 - alpha"

    def __call__(self, h, y, x, rng):
        diff = x - y
        g = _land(y, x, diff, self.compressor(diff, rng).values)
        bits, nnz = _delta_bits(self.compressor, g - h)
        return Sent(g, bits, nnz, _everyone(len(h)))


@dataclass(kw_only=True)
class V2(Mechanism):
    """3PCv2: b = h + Q(x - y), M = b + C(x - b), Q unbiased (omega), C contractive (alpha).
    Q is Rand-K2 scaled by d/K2 (omega = d/K2 - 1), as in the authors' experiments; the
    worker sends both messages. A = alpha, B = (1 - alpha) omega."""

    k2: int
    key: ClassVar[str] = "3pcv2"
    q: RandK = field(init=False)

    def __post_init__(self) -> None:
        c = self.compressor
        self.q = RandK(k=self.k2, scaled=True, float_bits=c.float_bits, index_bits=c.index_bits)

    def validate(self, d):
        _check_k2(self.k2, d)

    def constants(self, d):
        alpha = self.alpha(d)
        return alpha, (1.0 - alpha) * self.q.omega(d)

    def formula(self):
        return f"A = alpha, B = (1 - alpha) omega, omega = d/k2 - 1, k2={self.k2}"

    def __call__(self, h, y, x, rng):
        q = self.q(x - y, rng)
        b = h + q.values
        c = self.compressor(x - b, rng)
        return Sent(b + c.values, q.bits + c.bits, q.nnz + c.nnz, _everyone(len(h)))


@dataclass(kw_only=True)
class V3(Mechanism):
    """3PCv3: b = M1_{h,y}(x) for another three point compressor M1 (``inner``, constants
    A1, B1), then M = b + C(x - b); the worker sends M1's message and C(x - b).
    A = 1 - (1 - alpha)(1 - A1), B = (1 - alpha) B1."""

    inner: Mechanism
    key: ClassVar[str] = "3pcv3"

    def validate(self, d):
        self.inner.validate(d)

    def constants(self, d):
        alpha = self.alpha(d)
        A1, B1 = self.inner.constants(d)
        return 1.0 - (1.0 - alpha) * (1.0 - A1), (1.0 - alpha) * B1

    def formula(self):
        return (
            f"A = 1 - (1 - alpha)(1 - A1), B = (1 - alpha) B1, M1 = {self.inner.key} ({self.inner.formula()})"
        )

    def __call__(self, h, y, x, rng):
        b = self.inner(h, y, x, rng)
        c = self.compressor(x - b.g, rng)
        return Sent(b.g + c.values, b.bits + c.bits, b.nnz + c.nnz, _everyone(len(h)))


@dataclass(kw_only=True)
class V4(Mechanism):
    """3PCv4: b = h + C2(x - h), M = b + C1(x - b), C1 = the compressor (alpha1), C2 = Top-K2
    (alpha2 = K2/d); the worker sends both messages. With alpha_bar = 1 - (1 - alpha1)(1 -
    alpha2): A = 1 - sqrt(1 - alpha_bar), B = (1 - alpha_bar)/A."""

    k2: int
    key: ClassVar[str] = "3pcv4"
    c2: TopK = field(init=False)

    def __post_init__(self) -> None:
        c = self.compressor
        self.c2 = TopK(k=self.k2, float_bits=c.float_bits, index_bits=c.index_bits)

    def validate(self, d):
        _check_k2(self.k2, d)

    def constants(self, d):
        return young((1.0 - self.alpha(d)) * (1.0 - self.c2.contraction(d)))

    def formula(self):
        return (
            "A = 1 - sqrt(1 - alpha_bar), B = (1 - alpha_bar)/A, "
            f"1 - alpha_bar = (1 - alpha)(1 - k2/d), k2={self.k2}"
        )

    def __call__(self, h, y, x, rng):
        b = self.c2(x - h, rng)
        g = h + b.values
        c = self.compressor(x - g, rng)
        return Sent(g + c.values, b.bits + c.bits, b.nnz + c.nnz, _everyone(len(h)))


@dataclass(kw_only=True)
class V5(Mechanism):
    """3PCv5: M = x with probability p (the worker sends x dense, F d bits), else
    h + C(x - y) (it sends C(x - y)). One coin a round for all workers, as in MARINA and the
    authors' experiments. A = 1 - sqrt(1 - p), B = (1 - p)(1 - alpha)/A."""

    p: float
    key: ClassVar[str] = "3pcv5"

    def constants(self, d):
        A, B = young(1.0 - self.p)
        return A, (1.0 - self.alpha(d)) * B

    def formula(self):
        return f"A = 1 - sqrt(1 - p), B = (1 - p)(1 - alpha)/A, p={self.p:g}"

    def __call__(self, h, y, x, rng):
        r, d = h.shape
        if rng.random() < self.p:
            dense = np.full(r, self.compressor.float_bits * d, dtype=np.int64)
            return Sent(x.copy(), dense, np.full(r, d, dtype=np.int64), _everyone(r))
        msg = self.compressor(x - y, rng)
        return Sent(h + msg.values, msg.bits, msg.nnz, _everyone(r))


def _check_k2(k2: object, d: int) -> None:
    if not isinstance(k2, (int, np.integer)) or isinstance(k2, bool) or not 1 <= k2 <= d:
        raise ConfigError(
            "method.k2", f"K of the second compressor must be an integer in 1..d = {d}, got {k2!r}"
        )


# the mechanisms 3PCv3 takes as its M1: those without an inner mechanism of their own
INNER_MECHANISMS = [k for k, c in MECHANISMS.items() if "inner" not in c.settings()]


def build_mechanism(key: str, compressor: Compressor, values: dict[str, Any]) -> Mechanism:
    """The mechanism ``key`` with the settings it takes from ``values`` (3PCv3's ``inner``
    names another mechanism, built with the same settings). Raises ConfigError naming the
    key for an unknown mechanism or inner mechanism, or a setting it needs left null."""
    check_choice("method.mechanism", key, MECHANISMS)
    cls = MECHANISMS[key]
    kwargs: dict[str, Any] = {}
    for name in cls.settings():
        v = values.get(name)
        if v is None:
            raise ConfigError(f"method.{name}", f"mechanism {key} needs it, got null")
        if name == "inner":
            check_choice("method.inner", v, INNER_MECHANISMS)
            v = build_mechanism(v, compressor, values)
        kwargs[name] = v
    return cls(compressor=compressor, **kwargs)


def _taken(mech: Mechanism) -> set[str]:
    """The settings a built mechanism reads, its inner mechanism's included."""
    names = set(mech.settings())
    inner = getattr(mech, "inner", None)
    return names | _taken(inner) if isinstance(inner, Mechanism) else names


@dataclass(kw_only=True)
class ThreePCState(State):
    """The 3PC method's estimates g_i and the gradients they were last formed at."""

    g: np.ndarray  # (n, d) g_i^t
    y: np.ndarray  # (n, d) grad f_i(x^t): the y of the next round's M_{h,y}(x)
    mech: Mechanism  # the method's three point compressor, validated for d
    first: bool  # round 0 (g_i^0 sent in full) is still to come


@dataclass(kw_only=True)
class ThreePointMethod(Method):
    """The 3PC method (Algorithm 1) for the mechanism :meth:`make_mechanism` builds; subclasses
    fix it (EF21, CLAG, LAG) or take it by name (:class:`ThreePC`). Round 0 sends
    g_i^0 = grad f_i(x^0) in full; round t >= 1 sends each worker's 3PC message; the server
    broadcasts the dense aggregate (F d bits) and x^{t+1} = x^t - gamma (1/n) sum_i g_i^t.
    With partial participation (:class:`EF21` only: EF21-PP) only the round's participants
    compute, update g_i and send; the others keep g_i and send 0 bits."""

    accepts: ClassVar[tuple[str, ...]] = ("identity", "contractive")
    stochastic: ClassVar[bool] = False  # its paper covers stochastic gradient estimators

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = self.estimator_spec.kind
        if kind != "full" and not self.stochastic:
            raise ConfigError(
                "method.estimator.kind",
                f"the analysis of method {self.name!r} uses full local gradients, got {kind!r}",
                ("full",),
            )
        self.make_mechanism()  # its settings are checked before any data are read

    def make_mechanism(self) -> Mechanism:
        raise NotImplementedError

    def constants_ab(self, d: int, n: int) -> tuple[float, float, str]:
        """(A, B) of the method's mechanism and how they are computed."""
        mech = self.make_mechanism()
        A, B = mech.constants(d)
        return A, B, mech.formula()

    def theory(self, constants, base):
        """gamma = 1/(L + L_tilde sqrt(B/A)) with the mechanism's (A, B): the 3PC theorem
        (:data:`THREEPC_RULE`), or EF21-PP's under partial participation
        (:func:`ef21_constants`, :data:`EF21_PP_RULE`)."""
        d, n = constants["d"], constants["n"]
        A, B, how = self.constants_ab(d, n)
        alpha = self.make_mechanism().alpha(d)
        source = THREEPC_RULE if self.participation.full else EF21_PP_RULE
        return theory_gamma(constants, A, B), (
            f"1/(L + L_tilde sqrt(B/A)) {source}, {how}, alpha={alpha:.4g}, A={A:.4g}, B={B:.4g}"
        )

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        mech = self.make_mechanism()
        mech.validate(problem.d)
        grad = problem.worker_grads(x0)
        return state.extend(ThreePCState, g=grad, y=grad, mech=mech, first=True)

    def step(self, problem, state, gamma, rng):
        if state.first:
            state.first = False
            rnd = Round(_dense_message(self, problem), 0, np.full(problem.n, problem.d), problem.m)
            first = True
        else:
            rnd, first = self.communicate(problem, state, rng), False
        state.x -= gamma * self.aggregate(problem, state, rnd, rng, first)
        return state, rnd

    def communicate(self, problem: Problem, state: ThreePCState, rng: np.random.Generator) -> Round:
        """Round t >= 1: g_i^{t+1} = M_{g_i^t, grad_i(x^t)}(grad_i(x^{t+1})) for the round's
        workers (every worker under full participation, which draws nothing)."""
        n = problem.n
        part = None if self.participation.full else self.participation.draw(rng, n)
        grad, state.est, calls = state.estimator(problem, state.est, state.x, rng)
        h, y, mech = state.g, state.y, state.mech
        if part is None:
            sent = mech(h, y, grad, rng)
            state.g, state.y = sent.g, grad
            return Round(sent.bits, 0, sent.nnz, calls, skipped=int(n - sent.spoke.sum()))
        g, y = h.copy(), y.copy()
        bits = np.zeros(n, dtype=np.int64)
        nnz = np.zeros(n, dtype=np.int64)
        spoke = np.zeros(n, dtype=bool)
        if part.any():
            sent = mech(h[part], y[part], grad[part], rng)
            g[part], bits[part], nnz[part], spoke[part] = sent.g, sent.bits, sent.nnz, sent.spoke
            y[part] = grad[part]
        state.g, state.y = g, y
        # gradients are simulated for all workers; only the participants' are charged
        return Round(bits, 0, nnz, calls * part, skipped=int(n - spoke.sum()))

    def aggregate(
        self, problem: Problem, state: ThreePCState, rnd: Round, rng: np.random.Generator, first: bool
    ) -> np.ndarray:
        """The step direction g^t = (1/n) sum_i g_i^t, broadcast dense (sets ``rnd.bits_down``)."""
        rnd.bits_down = self.downlink(problem.d)
        return problem.worker_mean(state.g)


@dataclass(kw_only=True)
class ThreePC(ThreePointMethod):
    """The 3PC method with the mechanism named by ``mechanism`` (``MECHANISMS``: ef21, lag,
    clag, 3pcv1..3pcv5) and the settings that mechanism takes: ``zeta`` (lag, clag trigger),
    ``k2`` (3pcv2: K of the unbiased Rand-K Q; 3pcv4: K of the Top-K C2), ``p`` (3pcv5:
    probability of a full send), ``inner`` (3pcv3: the mechanism M1). A setting the
    mechanism does not take must be null. Partial participation: only with ef21 (EF21-PP)."""

    labels: ClassVar[dict[str, str]] = {
        "3pcv1": "3PCv1",
        "3pcv2": "3PCv2",
        "3pcv3": "3PCv3",
        "3pcv4": "3PCv4",
        "3pcv5": "3PCv5",
    }

    mechanism: str = ruled("ef21", Choice(*MECHANISMS))
    zeta: float | None = ruled(None, Num(0, null=True))
    k2: int | None = ruled(None, Int(1, null=True, by_d=Bound("K", lambda d: d, "d")))  # of d entries
    p: float | None = ruled(None, PROB_OR_NULL)
    inner: str | None = ruled(
        None,
        Rule(
            "choice",
            choices=tuple(k for k, c in MECHANISMS.items() if "inner" not in c.settings()),
            null=True,
        ),
    )
    metrics: ClassVar[tuple[str, ...]] = ("skipped_frac",)

    def __post_init__(self) -> None:
        super().__post_init__()
        taken = _taken(self.make_mechanism())
        for name in ("zeta", "k2", "p", "inner"):
            if getattr(self, name) is not None and name not in taken:
                raise ConfigError(
                    f"method.{name}",
                    f"mechanism {self.mechanism} does not take it (set it to null)",
                    sorted(taken) or "none",
                )

    @property
    def partial(self) -> bool:
        """Only EF21's partial participation is analysed (EF21-PP)."""
        return self.mechanism == "ef21"

    def make_mechanism(self):
        values = {"zeta": self.zeta, "k2": self.k2, "p": self.p, "inner": self.inner}
        return build_mechanism(self.mechanism, self.compressor, values)

    def constants_ab(self, d, n):
        if self.mechanism == "ef21":
            return ef21_constants(self, d, n)
        return super().constants_ab(d, n)


def ef21_constants(method: Method, d: int, n: int) -> tuple[float, float, str]:
    """EF21's (A, B), or EF21-PP's when only some workers take part: each worker updates
    with probability p_i = p, so E||g_i' - x||^2 <= (1 - p alpha)||x - h||^2 and
    A = 1 - sqrt(1 - p alpha), B = (1 - p alpha)/A. This is the EF21-PP theorem's
    theta_p = p theta - rho (1 - p), beta_p = p beta + (1 - p)(1 + 1/rho) (theta = 1 - (1 + s)
    (1 - alpha), beta = (1 + 1/s)(1 - alpha); p_min = p_max = p) at its best s = rho =
    1/sqrt(1 - p alpha) - 1."""
    alpha = method.compressor.contraction(d)
    if method.participation.full:
        A, B = young(1.0 - alpha)
        return A, B, "A = 1 - sqrt(1 - alpha), B = (1 - alpha)/A"
    p = method.participation.probability(n)
    A, B = young(1.0 - p * alpha)
    return A, B, f"EF21-PP: A = 1 - sqrt(1 - p alpha), B = (1 - p alpha)/A, p={p:.4g}"


@dataclass(kw_only=True)
class EF21(ThreePointMethod):
    """EF21 (Richtarik, Sokolov & Fatkhullin 2021), the 3PC method with M = h + C(x - h):

        g_i^{t+1} = g_i^t + C(grad_i(x^{t+1}) - g_i^t),  x^{t+1} = x^t - gamma (1/n) sum_i g_i^t,

    g_i^0 = grad f_i(x^0), sent uncompressed in the first round (charged there). Extensions
    (Fatkhullin et al. 2021, "EF21 with Bells & Whistles"):

    * EF21-SGD: ``method.estimator.kind=sgd``, grad_i replaced by a minibatch estimate;
    * EF21-PP: ``participation=nice|independent``: worker i takes part with probability
      p_i = p (S_t the round's participants); i in S_t: g_i^{t+1} = g_i^t + C(grad_i(x^{t+1})
      - g_i^t), i not in S_t: g_i^{t+1} = g_i^t, 0 bits, no gradient charged;
    * EF21-BC and EF21-HB: :class:`EF21BC`, :class:`EF21HB`.
    """

    stochastic: ClassVar[bool] = True

    @property
    def partial(self) -> bool:
        """EF21-PP is analysed with full local gradients (not with EF21-SGD)."""
        return not self.estimator_spec.stochastic

    def make_mechanism(self):
        return EF21Mechanism(compressor=self.compressor)

    def constants_ab(self, d, n):
        return ef21_constants(self, d, n)

    def theory(self, constants, base):
        """The 3PC rule 1/(L + L_tilde sqrt(B/A)), A = 1 - sqrt(1 - alpha), B = (1 - alpha)/A
        (EF21's Theorem 1: theta, beta), with alpha -> p alpha under partial participation
        (:func:`ef21_constants`). EF21-SGD: the paper's rule needs the constants of its
        stochastic-gradient assumption (A_i, B_i, C_i: variances the problem does not give
        here), so the estimator's rule (``base``) is used."""
        if self.estimator_spec.stochastic:
            return base[0], base[1] + " (the estimator's rule: EF21-SGD's needs gradient-noise constants)"
        return super().theory(constants, base)


@dataclass(kw_only=True)
class CLAG(ThreePointMethod):
    """CLAG (Richtarik et al. 2022, 3PC): worker i is triggered when
    ||grad_i(x^{t+1}) - g_i^t||^2 > zeta ||grad_i(x^{t+1}) - grad_i(x^t)||^2 and then sends
    C(grad_i(x^{t+1}) - g_i^t), added to g_i^t; otherwise it sends nothing (0 bits, counted
    in ``skipped_frac``). g_i^0 = grad f_i(x^0) sent in full. zeta = 0 gives EF21; the
    identity compressor gives LAG."""

    zeta: float = ruled(1.0, Num(0))
    metrics: ClassVar[tuple[str, ...]] = ("skipped_frac",)  # from the rounds' skipped counts

    def make_mechanism(self):
        return CLAGMechanism(compressor=self.compressor, zeta=self.zeta)


@dataclass(kw_only=True)
class LAG(CLAG):
    """LAG (Chen et al. 2018): lazily aggregated full gradients, sent uncompressed when
    triggered (see CLAG); A = 1, B = zeta."""

    compressed: ClassVar[bool] = False

    def make_mechanism(self):
        return LAGMechanism(compressor=self.compressor, zeta=self.zeta)


@dataclass(kw_only=True)
class EF21BCState(ThreePCState):
    """EF21-BC's server side: its compressor and the g^t that workers and server share."""

    down: Compressor  # C_M
    server: np.ndarray | None = None  # (d,) g^t, from round 0 on


@dataclass(kw_only=True)
class EF21BC(EF21):
    """EF21-BC (Fatkhullin et al. 2021, Algorithm 5): EF21 on the workers and again on the
    server, which broadcasts a compressed message b instead of the dense aggregate:

        x^{t+1} = x^t - gamma g^t,
        c_i = C_w(grad f_i(x^{t+1}) - gt_i^t),  gt_i^{t+1} = gt_i^t + c_i   (workers send c_i),
        b^{t+1} = C_M(gt^{t+1} - g^t),  gt^{t+1} = (1/n) sum_i gt_i^{t+1},
        g^{t+1} = g^t + b^{t+1}                                              (server sends b),

    workers and server both keep g^t. Round 0: gt_i^0 = grad f_i(x^0) up, g^0 = gt^0 down,
    both dense. C_w is the compressor; C_M is Top-``down_k`` or, with ``down_k`` null, the
    same compressor. Downlink bits are C_M's message. Full local gradients."""

    down_k: int | None = ruled(None, Int(1, null=True, by_d=Bound("K", lambda d: d, "d")))  # of d entries
    stochastic: ClassVar[bool] = False
    partial: ClassVar[bool] = False  # EF21-BC is analysed with every worker in every round

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.down_k is not None and (
            not isinstance(self.down_k, (int, np.integer)) or isinstance(self.down_k, bool) or self.down_k < 1
        ):
            raise ConfigError("method.down_k", f"must be an integer >= 1 or null, got {self.down_k!r}")

    def server_compressor(self) -> Compressor:
        c = self.compressor
        if self.down_k is None:
            return c
        return TopK(k=self.down_k, float_bits=c.float_bits, index_bits=c.index_bits)

    def init(self, problem, x0, rng):
        if self.down_k is not None and self.down_k > problem.d:
            raise ConfigError("method.down_k", f"K = {self.down_k} is out of range for d = {problem.d}")
        state = super().init(problem, x0, rng)
        return state.extend(EF21BCState, down=self.server_compressor())

    def theory(self, constants, base):
        """EF21's rule with the workers' alpha, 1/(L + L_tilde sqrt(B/A)): the base stepsize
        of the authors' EF21-BC experiments (ef21_bc.py). The paper's EF21-BC theorem
        (constants of both alpha_w and alpha_M) is not reproduced: its appendix was not
        available to check."""
        gamma, formula = super().theory(constants, base)
        return gamma, formula + " (borrowed: EF21's rule, workers' alpha; EF21-BC theorem not reproduced)"

    def aggregate(self, problem, state, rnd, rng, first):
        gt = problem.worker_mean(state.g)
        if first:
            state.server = gt
            rnd.bits_down = self.downlink(problem.d)
        else:
            msg = state.down((gt - state.server)[None, :], rng)
            state.server = state.server + msg.values[0]
            rnd.bits_down = int(msg.bits[0])
        return state.server


@dataclass(kw_only=True)
class EF21HBState(ThreePCState):
    """EF21-HB's momentum."""

    v: np.ndarray  # (d,) v^t


@dataclass(kw_only=True)
class EF21HB(EF21):
    """EF21-HB (Fatkhullin et al. 2021, Algorithm 6): EF21 with Polyak's heavy ball,

        x^{t+1} = x^t - gamma v^t,  v^{t+1} = eta v^t + g^{t+1},  g^t = (1/n) sum_i g_i^t,

    v^0 = g^0, eta in [0, 1); eta = 0 is EF21. Full local gradients."""

    eta: float = ruled(0.4, Num(0))  # < 1: EF21-HB's own check
    stochastic: ClassVar[bool] = False
    partial: ClassVar[bool] = False  # EF21-HB is analysed with every worker in every round

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.eta < 1.0:
            raise ConfigError("method.eta", f"momentum must be in [0, 1), got {self.eta}")

    def init(self, problem, x0, rng):
        state = super().init(problem, x0, rng)
        return state.extend(EF21HBState, v=np.zeros(problem.d))

    def theory(self, constants, base):
        """EF21's rule 1/(L + L_tilde sqrt(B/A)): the base stepsize of the authors' EF21-HB
        experiments (ef21_hb.py). The paper's EF21-HB theorem (its dependence on eta) is not
        reproduced: its appendix was not available to check."""
        gamma, formula = super().theory(constants, base)
        return gamma, formula + f" (borrowed: EF21's rule; EF21-HB theorem not reproduced), eta={self.eta:g}"

    def aggregate(self, problem, state, rnd, rng, first):
        v = state.v
        v *= self.eta
        v += super().aggregate(problem, state, rnd, rng, first)
        return v
