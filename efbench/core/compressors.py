"""Compressors C: R^d -> R^d applied row-wise to an (n, d) array (SPEC.md section 2).

Every call returns a :class:`Message`: the decoded values, the exact number of bits of
each worker's message, and the number of coordinates it carries.

Bit accounting (``float_bits`` = F, default 32; index width I = ceil(log2 d)):

* dense float vector: F d;
* sparse message of k values: the cheaper of an index list, k (F + I), and a bitmap
  plus values, d + k F. With ``index_bits=false`` (the authors' reference code) only
  the values, k F, are charged;
* sign, stochastic sign: F + d (one norm and one bit per coordinate, sign(0) sent as +);
* natural: (1 + exponent bits) per coordinate: 9 d for F = 32, 12 d for F = 64;
* qsgd(s): F + d (1 + ceil(log2(s + 1)));  ternary: F + 2 d;
* rounding(Delta): the sparse rule with value width ceil(log2 levels), levels =
  2 max|q| + 1 for the integers q = round(x / Delta) of that message;
* natural_dithering(s): F + d (1 + ceil(log2(s + 1))), as qsgd;
* lowrank(r): the two factors, F (a + b) r, for the a x b matrix x is folded into;
* compose: the positions of the K kept coordinates, min(K I, d) (none with
  ``index_bits=false``), plus the inner compressor's message of the K kept values.

Adding a compressor = one subclass here plus one YAML file in ``efbench/conf/compressor``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from efbench.core import blocks
from efbench.core.rules import POSITIVE, Choice, Int, Num, Rule, check_fields, ruled
from efbench.errors import ConfigError

KINDS = ("identity", "contractive", "unbiased", "absolute")


class Message(NamedTuple):
    values: np.ndarray  # (n, d) decoded message
    bits: np.ndarray  # (n,) int64 exact size of each worker's message
    nnz: np.ndarray  # (n,) coordinates carried


def row_norms(X: np.ndarray) -> np.ndarray:
    """||x_i||_2 of each row, (n, 1), finite wherever it is representable: where x_j^2
    overflows, the norm of x / max|x_j| times max|x_j|."""
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    big = np.isinf(norm[:, 0]) & np.all(np.isfinite(X), axis=1)
    if big.any():
        top = np.max(np.abs(X[big]), axis=1, keepdims=True)
        norm[big] = top * np.linalg.norm(X[big] / top, axis=1, keepdims=True)
    return norm


def index_width(d: int) -> int:
    """ceil(log2 d): bits to name one of d coordinates."""
    return (d - 1).bit_length()


def sparse_bits(nnz: np.ndarray, d: int, value_bits: int | np.ndarray, index_bits: bool) -> np.ndarray:
    """Bits of sparse messages: min(index list, bitmap + values), or values only
    (:func:`efbench.core.blocks.message_bits`, the compiled step's rule)."""
    return blocks.message_bits_ufunc(
        np.asarray(nnz, dtype=np.int64), d, value_bits, index_width(d), bool(index_bits)
    )


@dataclass(kw_only=True)
class Compressor:
    """Base class: subclasses implement ``compress`` and set ``kind``."""

    label: ClassVar[str] = ""  # as figures and tables show it, e.g. "Top-{k}": its fields by name

    float_bits: int = 32
    index_bits: bool = True
    kind: ClassVar[str] = "contractive"

    def __post_init__(self) -> None:
        if self.float_bits not in (16, 32, 64):
            raise ConfigError("bits.float_bits", f"got {self.float_bits}", (16, 32, 64))
        check_fields(self, "compressor")

    def validate(self, d: int) -> None:
        """Check parameters against the dimension; raise ConfigError naming the key."""

    @classmethod
    def display(cls, keys: Mapping[str, str]) -> str:
        """The label of a compressor config whose keys are ``keys`` (values as shown):
        :attr:`label` filled in, or the class name where a key it shows is missing."""
        try:
            return cls.label.format_map(keys) or cls.__name__
        except KeyError:
            return cls.__name__

    homogeneous: ClassVar[bool] = True  # C(t x) = t C(x) for t > 0

    randomized: ClassVar[bool] = False  # draws from the generator

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> Message:
        return self.compress(X, rng)

    def _compiled(self, X: np.ndarray, code: int, thr: float = 0.0, k: int = 1) -> Message:
        """The compressors the compiled step shares: :func:`efbench.core.blocks.compress_rows`."""
        n, d = X.shape
        out = np.empty_like(X)
        bits = np.empty(n, dtype=np.int64)
        nnz = np.empty(n, dtype=np.int64)
        blocks.compress_rows(
            X, code, thr, k, self.float_bits, index_width(d), self.index_bits, out, bits, nnz
        )
        return Message(out, bits, nnz)

    def compress_scaled(self, U: np.ndarray, gamma: float, rng: np.random.Generator) -> Message:
        """The message gamma C(U / gamma) (error feedback in gradient units), without the two
        extra passes where C is positively homogeneous."""
        if self.homogeneous:
            return self(U, rng)
        msg = self(U / gamma, rng)
        return Message(gamma * msg.values, msg.bits, msg.nnz)

    def compress(self, X: np.ndarray, rng: np.random.Generator) -> Message:
        raise NotImplementedError

    def dense(self, X: np.ndarray) -> np.ndarray:
        return np.full(X.shape[:-1], self.float_bits * X.shape[-1], dtype=np.int64)

    def omega(self, d: int) -> float:
        """Variance factor of an unbiased compressor: E||C(x) - x||^2 <= omega ||x||^2."""
        if self.kind == "identity":
            return 0.0
        raise NotImplementedError(f"{type(self).__name__} is not unbiased")

    def contraction(self, d: int) -> float:
        """Contraction constant: E||C(x) - x||^2 <= (1 - delta) ||x||^2 (the alpha of EF21).
        An unbiased compressor counts as contractive after scaling by 1/(1 + omega)."""
        if self.kind == "identity":
            return 1.0
        if self.kind == "unbiased":
            return 1.0 / (1.0 + self.omega(d))
        raise NotImplementedError(f"{type(self).__name__} has no contraction constant")

    def Delta(self, d: int) -> float:
        """Constant of an absolute compressor: ||C(x) - x||^2 <= Delta^2 for every x
        (SPEC.md section 2: hard threshold Delta^2 = d lambda^2)."""
        if self.kind == "identity":
            return 0.0
        raise NotImplementedError(f"{type(self).__name__} is not an absolute compressor")


@dataclass(kw_only=True)
class Identity(Compressor):
    """C(x) = x; 32 d bits."""

    label: ClassVar[str] = "uncompressed"  # as figures and tables show it: its fields by name

    kind: ClassVar[str] = "identity"

    def compress(self, X, rng):
        return self._compiled(X, blocks.IDENTITY)


TIES = ("index", "keep")  # TopK's tie rules (compressor.ties)


@dataclass(kw_only=True)
class TopK(Compressor):
    """Keep the K coordinates of largest |x_j|; contractive with delta = K/d
    (Alistarh et al. 2018; Stich et al. 2018). Ties with the K-th largest magnitude are
    common on binary LIBSVM features; ``ties`` says what is sent, on every engine:

    * ``index`` (default): exactly K values, the tied ones taken lowest index first;
    * ``keep``: every nonzero x_j with |x_j| >= the K-th largest magnitude, as the authors'
      reference code selects them (eduardgorbunov/ef_sigma_k, ``topk``: ``np.abs(x) >=
      kth``), and the bits of all of them are charged (more
      than K values where ties occur, fewer where x has fewer than K nonzeros). Still
      contractive with delta = K/d: it keeps a superset of the K largest.
    """

    label: ClassVar[str] = "Top-{k}"  # as figures and tables show it: its fields by name

    k: int = ruled(1, Int(1))
    ties: str = ruled("index", Choice(*TIES))

    def validate(self, d):
        _check_k(self.k, d)

    @property
    def code(self) -> int:
        """The compiled selection (:func:`efbench.core.blocks.compress_row`) of this tie rule."""
        return blocks.TOPK_KEEP if self.ties == "keep" else blocks.TOPK

    def contraction(self, d):
        return self.k / d

    def compress(self, X, rng):
        return self._compiled(X, self.code, k=int(self.k))


@dataclass(kw_only=True)
class RandK(Compressor):
    """Keep K coordinates drawn uniformly without replacement; ``scaled`` multiplies by d/K,
    which makes it unbiased (E C(x) = x) with variance factor d/K - 1."""

    label: ClassVar[str] = "Rand-{k}"  # as figures and tables show it: its fields by name

    randomized: ClassVar[bool] = True
    k: int = ruled(1, Int(1))
    scaled: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kind = "unbiased" if self.scaled else "contractive"

    def validate(self, d):
        _check_k(self.k, d)

    def omega(self, d):
        if not self.scaled:
            return super().omega(d)
        return d / self.k - 1.0

    def contraction(self, d):
        return self.k / d  # unscaled: E||C(x) - x||^2 = (1 - K/d) ||x||^2; scaled: 1/(1 + omega)

    def compress(self, X, rng):
        n, d = X.shape
        k = self.k
        idx = np.argpartition(rng.random((n, d)), k - 1, axis=1)[:, :k] if k < d else None
        out = np.zeros_like(X)
        if idx is None:
            out[:] = X
        else:
            np.put_along_axis(out, idx, np.take_along_axis(X, idx, axis=1), axis=1)
        if self.scaled:
            out *= d / k
        nnz = np.full(n, k)
        return Message(out, sparse_bits(nnz, d, self.float_bits, self.index_bits), nnz)


@dataclass(kw_only=True)
class HardThreshold(Compressor):
    """Hard threshold: keep x_j with |x_j| >= lambda. Absolute compressor:
    ||C(x) - x||^2 <= d lambda^2 (Danilova & Gorbunov 2022; Sahu et al. 2021)."""

    label: ClassVar[str] = "HT λ={lam}"  # as figures and tables show it: its fields by name

    lam: float = ruled(0.01, Num(0))
    kind: ClassVar[str] = "absolute"

    def Delta(self, d):
        return math.sqrt(d) * self.lam  # every dropped |x_j| < lambda

    homogeneous: ClassVar[bool] = False

    def compress(self, X, rng, lam=None):
        return self._compiled(X, blocks.THRESHOLD, float(self.lam if lam is None else lam))

    def compress_scaled(self, U, gamma, rng):
        # gamma C(U/gamma) keeps U_j where |U_j| >= gamma lambda
        return self.compress(U, rng, gamma * self.lam)


@dataclass(kw_only=True)
class Sign(Compressor):
    """Scaled sign (||x||_1 / d) sign(x) (Karimireddy et al. 2019); contractive with
    ||C(x) - x||^2 = ||x||^2 - ||x||_1^2 / d."""

    label: ClassVar[str] = "Sign"  # as figures and tables show it: its fields by name

    def contraction(self, d):
        return 1.0 / d  # ||x||_1^2 >= ||x||^2, tight at a basis vector

    def compress(self, X, rng):
        n, d = X.shape
        scale = np.abs(X).sum(axis=1, keepdims=True) / d
        big = np.isinf(scale[:, 0]) & np.all(np.isfinite(X), axis=1)
        if big.any():  # the sum overflowed, the mean (<= max |x_j|) does not
            top = np.abs(X[big]).max(axis=1, keepdims=True)
            scale[big] = top * (np.abs(X[big]) / top).mean(axis=1, keepdims=True)
        out = np.where(X >= 0, scale, -scale)
        return Message(out, np.full(n, self.float_bits + d, dtype=np.int64), np.full(n, d))


@dataclass(kw_only=True)
class StochasticSign(Compressor):
    """Stochastic sign (Safaryan and Richtarik, ICML 2021): each coordinate is sent as
    s_j = +1 with probability 1/2 + x_j / (2 ||x||_2), else -1, with the norm; the decoded
    message ||x|| s is unbiased (E ||x|| s_j = x_j) with E||C(x)||^2 = d ||x||^2, so
    omega = d - 1. F + d bits (the norm and one bit per coordinate)."""

    label: ClassVar[str] = "StochSign"  # as figures and tables show it: its fields by name

    randomized: ClassVar[bool] = True
    kind: ClassVar[str] = "unbiased"

    def omega(self, d):
        return d - 1.0

    def compress(self, X, rng):
        n, d = X.shape
        norm = row_norms(X)
        plus = 0.5 + 0.5 * np.divide(X, norm, out=np.zeros_like(X), where=norm > 0)
        out = np.where(rng.random(X.shape) < plus, norm, -norm)
        return Message(out, np.full(n, self.float_bits + d, dtype=np.int64), np.full(n, d))


@dataclass(kw_only=True)
class Natural(Compressor):
    """Natural compression (Horvath et al. 2019): |x_j| in [2^a, 2^(a+1)] is rounded to
    2^(a+1) with probability |x_j| / 2^a - 1, else to 2^a: unbiased, omega = 1/8."""

    label: ClassVar[str] = "Natural"  # as figures and tables show it: its fields by name

    randomized: ClassVar[bool] = True
    kind: ClassVar[str] = "unbiased"
    homogeneous: ClassVar[bool] = False  # the grid of powers of two is not scale-invariant

    def omega(self, d):
        return 1.0 / 8.0

    def compress(self, X, rng):
        n, d = X.shape
        mant, expo = np.frexp(np.abs(X))  # |x| = mant * 2^expo, mant in [0.5, 1)
        low = np.ldexp(1.0, expo - 1)
        up = rng.random(X.shape) < (2.0 * mant - 1.0)
        out = np.sign(X) * low * np.where(up, 2.0, 1.0)
        exponent_bits = {16: 5, 32: 8, 64: 11}[self.float_bits]
        return Message(out, np.full(n, (1 + exponent_bits) * d, dtype=np.int64), np.full(n, d))


@dataclass(kw_only=True)
class QSGD(Compressor):
    """QSGD (Alistarh et al. 2017): ||x||_2 sign(x_j) xi_j(s), xi_j stochastic rounding of
    s|x_j|/||x|| to the grid {0, 1/s, ..., 1}; unbiased, omega = min(d/s^2, sqrt(d)/s)."""

    label: ClassVar[str] = "QSGD s={s}"  # as figures and tables show it: its fields by name

    s: int = ruled(1, Int(1))
    randomized: ClassVar[bool] = True
    kind: ClassVar[str] = "unbiased"

    def omega(self, d):
        return min(d / self.s**2, np.sqrt(d) / self.s)

    def compress(self, X, rng):
        n, d = X.shape
        norm = row_norms(X)
        r = self.s * np.divide(np.abs(X), norm, out=np.zeros_like(X), where=norm > 0)
        lvl = np.floor(r)
        lvl += rng.random(X.shape) < (r - lvl)
        out = norm * np.sign(X) * (lvl / self.s)  # lvl / s <= 1 first: no overflow near the float max
        bits = self.float_bits + d * (1 + index_width(self.s + 1))
        return Message(out, np.full(n, bits, dtype=np.int64), np.count_nonzero(lvl, axis=1))


@dataclass(kw_only=True)
class Ternary(Compressor):
    """TernGrad (Wen et al. 2017): ||x||_inf sign(x_j) b_j, b_j ~ Bernoulli(|x_j| / ||x||_inf);
    E||C(x)||^2 = ||x||_inf ||x||_1 <= sqrt(d) ||x||^2, so omega = sqrt(d) - 1."""

    label: ClassVar[str] = "TernGrad"  # as figures and tables show it: its fields by name

    randomized: ClassVar[bool] = True
    kind: ClassVar[str] = "unbiased"

    def omega(self, d):
        return np.sqrt(d) - 1.0

    def compress(self, X, rng):
        n, d = X.shape
        M = np.abs(X).max(axis=1, keepdims=True)
        p = np.divide(np.abs(X), M, out=np.zeros_like(X), where=M > 0)
        b = rng.random(X.shape) < p
        out = np.where(b, np.sign(X) * M, 0.0)
        return Message(out, np.full(n, self.float_bits + 2 * d, dtype=np.int64), np.count_nonzero(b, axis=1))


@dataclass(kw_only=True)
class Rounding(Compressor):
    """Deterministic rounding to the grid Delta Z: absolute compressor with
    ||C(x) - x||^2 <= d Delta^2 / 4."""

    label: ClassVar[str] = "Rounding δ={delta}"  # as figures and tables show it: its fields by name

    delta: float = ruled(0.01, POSITIVE)
    kind: ClassVar[str] = "absolute"
    homogeneous: ClassVar[bool] = False

    def Delta(self, d):
        return math.sqrt(d) * self.delta / 2.0  # |x_j - delta round(x_j / delta)| <= delta / 2

    def compress(self, X, rng):
        d = X.shape[1]
        q = np.rint(X / self.delta)
        nnz = np.count_nonzero(q, axis=1)
        # ceil(log2(2 max|q| + 1)) = bit_length(max|q|) + 1 (0 for q = 0), exact even where
        # 2 max|q| would overflow; values of a diverged run (inf, nan) are not levels
        top = np.abs(np.where(np.isfinite(q), q, 0.0)).max(axis=1)
        width = np.where(top > 0, np.frexp(top)[1] + 1, 0).astype(np.int64)
        return Message(q * self.delta, sparse_bits(nnz, d, width, self.index_bits), nnz)


def row_pnorms(X: np.ndarray, p: float) -> np.ndarray:
    """||x_i||_p of each row, (n, 1), computed as max|x_j| ||x / max|x_j| ||_p: no overflow
    or underflow in the powers (inf or nan where the row has them)."""
    top = np.max(np.abs(X), axis=1, keepdims=True)
    scale = np.where((top > 0) & np.isfinite(top), top, 1.0)
    return scale * np.linalg.norm(X / scale, ord=p, axis=1, keepdims=True)


@dataclass(kw_only=True)
class NaturalDithering(Compressor):
    """Natural dithering (Horvath, Ho, Horvath, Sahu, Canini and Richtarik 2019, "Natural
    compression for distributed deep learning", Section 4): with y_j = |x_j| / ||x||_p and
    the s + 1 levels 0 < 2^(1-s) < ... < 1/2 < 1 (p = ``norm``), y_j between the neighbouring levels
    l < u is sent as u with probability (y_j - l) / (u - l), else l, and
    C(x)_j = ||x||_p sign(x_j) level_j: unbiased, with (their Theorem 7; r = min(p, 2))

        omega = 1/8 + d^(1/r) 2^(1-s) min(1, d^(1/r) 2^(1-s)).

    (Between two powers of two the rounding variance is at most y^2/8, as for natural
    compression; below 2^(1-s) it is at most min(y 2^(1-s), 4^(-s)); summing and
    ||x||_p ||x||_1 <= d^(1/r) ||x||_2^2 gives the bound.) F + d (1 + ceil(log2(s + 1)))
    bits: the norm, and a sign and a level per coordinate."""

    label: ClassVar[str] = "NatDith s={s}"  # as figures and tables show it: its fields by name

    s: int = ruled(4, Int(1))
    norm: float = ruled(2.0, Rule("num", lo=1, infinite=True))  # the p of ||x||_p
    randomized: ClassVar[bool] = True
    kind: ClassVar[str] = "unbiased"

    def omega(self, d):
        t = d ** (1.0 / min(self.norm, 2.0)) * 2.0 ** (1 - self.s)
        return 1.0 / 8.0 + t * min(1.0, t)

    def compress(self, X, rng):
        n, d = X.shape
        norm = row_pnorms(X, self.norm)
        # |x_j| <= ||x||_p; the min keeps a norm rounded below max|x_j| from adding a level
        y = np.minimum(np.divide(np.abs(X), norm, out=np.zeros_like(X), where=norm > 0), 1.0)
        bottom = 2.0 ** (1 - self.s)
        mant, expo = np.frexp(y)  # y = mant 2^expo, mant in [1/2, 1): 2^(expo-1) <= y < 2^expo
        low = np.where(y >= bottom, np.ldexp(1.0, expo - 1), 0.0)
        high = np.where(y >= bottom, 2.0 * low, bottom)
        level = np.where(rng.random(X.shape) < (y - low) / (high - low), high, low)
        out = norm * (np.sign(X) * level)
        bits = self.float_bits + d * (1 + index_width(self.s + 1))
        return Message(out, np.full(n, bits, dtype=np.int64), np.count_nonzero(level, axis=1))


def lowrank_shape(d: int) -> tuple[int, int]:
    """The near-square a x b matrix (a >= b, a b >= d) a vector of length d is folded into,
    row by row, zero padded: a = ceil(sqrt(d)), b = ceil(d / a) (a b - d < a)."""
    a = math.isqrt(d - 1) + 1
    return a, -(-d // a)


@dataclass(kw_only=True)
class LowRank(Compressor):
    """Rank-r compression by one step of power iteration: PowerSGD (Vogels, Karimireddy and
    Jaggi, NeurIPS 2019, Algorithm 1), applied to each worker's vector on its own. x is
    folded into M (a x b, :func:`lowrank_shape`); with Q (b x r) drawn N(0, 1):

        P = M Q,   P^ = orthogonalize(P) (reduced QR),   Q' = M^T P^,   C(x) = P^ Q'^T,

    unfolded and cut back to d. The worker sends P^ and Q': F (a + b) r bits.

    Q is drawn afresh every call: Algorithm 1 without the warm start (reusing the previous
    Q'), which the paper adds on top of the single power step; :meth:`compress_with_state`
    takes a caller's Q for it. Contractive in expectation over Q, delta = r / b: C(x) =
    P^ P^^T M projects M onto range(M Q) = range(M U), U the orthonormal factor of Q, which
    is uniform (Haar), so E||C(x) - x||^2 = ||M||^2 - E||P^^T M||^2 <= ||M||^2 - E||M U||^2
    = (1 - r/b) ||x||^2 (E U U^T = (r/b) I; equality for M = I); cutting the padding only
    drops error terms. Each single draw has ||C(x) - x|| <= ||x|| (a projection). Biased:
    E C(x) != x."""

    label: ClassVar[str] = "PowerSGD r={rank}"  # as figures and tables show it: its fields by name

    rank: int = ruled(1, Int(1))
    randomized: ClassVar[bool] = True

    def validate(self, d):
        a, b = lowrank_shape(d)
        r = self.rank
        if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or not 1 <= r <= b:
            raise ConfigError(
                "compressor.rank", f"rank {r!r} for d={d}, folded into {a} x {b}", f"1 <= rank <= {b}"
            )

    def contraction(self, d):
        return self.rank / lowrank_shape(d)[1]

    def compress(self, X, rng):
        return self.compress_with_state(X, rng)[0]

    def compress_with_state(
        self, X: np.ndarray, rng: np.random.Generator, Q: np.ndarray | None = None
    ) -> tuple[Message, np.ndarray]:
        """C(x) of each row from the power step started at Q (n, b, r), a Gaussian draw
        when None; returns the message and each row's Q' = M^T P^, to start the next call
        from (PowerSGD's warm start). Q' is up to a positive factor per row (it is computed
        on M / max|x_j|, which keeps the products finite), which leaves range(M Q') alone.
        A warm-started Q is not Gaussian: delta = r/b is not claimed for it."""
        n, d = X.shape
        a, b = lowrank_shape(d)
        top = np.max(np.abs(X), axis=1, keepdims=True)
        scale = np.where((top > 0) & np.isfinite(top), top, 1.0)
        M = np.zeros((n, a * b))
        M[:, :d] = X / scale
        M = M.reshape(n, a, b)
        if Q is None:
            Q = rng.standard_normal((n, b, self.rank))
        P = np.linalg.qr(M @ Q).Q
        Qn = np.swapaxes(M, 1, 2) @ P
        out = (P @ np.swapaxes(Qn, 1, 2)).reshape(n, a * b)[:, :d] * scale
        bits = np.full(n, self.float_bits * (a + b) * self.rank, dtype=np.int64)
        return Message(out, bits, np.full(n, d)), Qn


INNER = {"natural": Natural, "qsgd": QSGD, "natural_dithering": NaturalDithering}


@dataclass(kw_only=True)
class Compose(Compressor):
    """Sparsify, then quantize what is kept: C(x) = c Q(S(x)), S = TopK or RandK keeping K
    coordinates, Q an unbiased compressor (``inner``: natural, qsgd or natural_dithering with
    ``s`` levels, ||.||_2) applied to the K kept values, whose variance factor is that of
    dimension K: omega_Q = omega_Q(K).

    * ``outer=topk``, c = 1 / (1 + omega_Q): contractive, delta = K / (d (1 + omega_Q)). With
      v = TopK(x), E Q(v) = v, E||Q(v)||^2 <= (1 + omega_Q) ||v||^2, <v, x> = ||v||^2 and
      ||v||^2 >= (K/d) ||x||^2:
      E||c Q(v) - x||^2 <= (c^2 (1 + omega_Q) - 2c) ||v||^2 + ||x||^2
                        = ||x||^2 - ||v||^2 / (1 + omega_Q) <= (1 - delta) ||x||^2
      (Beznosikov, Horvath, Richtarik and Safaryan 2020, "On biased compression for
      distributed learning": an unbiased compressor, scaled by 1/(1 + omega), after one in
      B3(d/K) is in B3(d (1 + omega) / K)).
    * ``outer=randk``, c = d / K: unbiased, omega = (d/K) (1 + omega_Q) - 1 (E||C(x)||^2 =
      (d/K)^2 (1 + omega_Q) (K/d) ||x||^2).

    Bits: the positions of the K kept coordinates, min(K I, d) (the sparse rule's index
    part; none with ``index_bits=false``), plus Q's message of the K values. TopK ties are
    broken by index, lowest first, as :class:`TopK`."""

    label: ClassVar[str] = "{outer}-{k} ∘ {inner}"  # as figures and tables show it: its fields by name

    outer: str = ruled("topk", Choice("topk", "randk"))
    k: int = ruled(1, Int(1))
    inner: str = ruled("natural", Choice(*INNER))
    s: int = ruled(4, Int(1))  # levels of a qsgd or natural_dithering inner
    randomized: ClassVar[bool] = True

    @classmethod
    def display(cls, keys: Mapping[str, str]) -> str:
        inner = INNER.get(keys.get("inner", ""))
        shown = {
            **keys,
            "outer": "Top" if keys.get("outer") == "topk" else "Rand",
            "inner": inner.display(keys) if inner else keys.get("inner", ""),
        }
        return super().display(shown)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kind = "unbiased" if self.outer == "randk" else "contractive"
        self.homogeneous = INNER.get(self.inner, Natural).homogeneous

    def quantizer(self) -> Compressor:
        """The inner compressor Q."""
        cls = INNER[self.inner]
        levels = {} if cls is Natural else {"s": self.s}
        return cls(float_bits=self.float_bits, index_bits=self.index_bits, **levels)

    def validate(self, d):
        _check_k(self.k, d)
        self.quantizer().validate(self.k)

    def omega(self, d):
        if self.outer != "randk":
            return super().omega(d)
        return d / self.k * (1.0 + self.quantizer().omega(self.k)) - 1.0

    def contraction(self, d):
        if self.outer != "topk":
            return super().contraction(d)
        return self.k / d / (1.0 + self.quantizer().omega(self.k))

    def compress(self, X, rng):
        n, d = X.shape
        k = self.k
        if self.outer == "topk":
            idx = np.argsort(-np.abs(X), axis=1, kind="stable")[:, :k]
            factor = 1.0 / (1.0 + self.quantizer().omega(k))
        else:
            idx = np.argpartition(rng.random((n, d)), k - 1, axis=1)[:, :k]
            factor = d / k
        msg = self.quantizer()(np.take_along_axis(X, idx, axis=1), rng)
        out = np.zeros_like(X)
        np.put_along_axis(out, idx, msg.values * factor, axis=1)
        index = min(k * index_width(d), d) if self.index_bits else 0
        return Message(out, msg.bits + index, np.full(n, k))


def _check_k(k: object, d: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ConfigError("compressor.k", f"must be an integer, got {k!r}", f"1..{d}")
    if not 1 <= k <= d:
        raise ConfigError("compressor.k", f"K={k} is out of range for d={d}", f"1 <= K <= {d}")
