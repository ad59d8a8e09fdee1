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
  2 max|q| + 1 for the integers q = round(x / Delta) of that message.

Adding a compressor = one subclass here plus one YAML file in ``conf/compressor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from efbench import blocks
from efbench.errors import ConfigError, check_positive

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
    (:func:`efbench.blocks.message_bits`, the compiled step's rule)."""
    return blocks.message_bits_ufunc(
        np.asarray(nnz, dtype=np.int64), d, value_bits, index_width(d), bool(index_bits)
    )


@dataclass(kw_only=True)
class Compressor:
    """Base class: subclasses implement ``compress`` and set ``kind``."""

    float_bits: int = 32
    index_bits: bool = True
    kind: ClassVar[str] = "contractive"

    def __post_init__(self) -> None:
        if self.float_bits not in (16, 32, 64):
            raise ConfigError("bits.float_bits", f"got {self.float_bits}", (16, 32, 64))

    def validate(self, d: int) -> None:
        """Check parameters against the dimension; raise ConfigError naming the key."""

    homogeneous: ClassVar[bool] = True  # C(t x) = t C(x) for t > 0

    randomized: ClassVar[bool] = False  # draws from the generator

    def __call__(self, X: np.ndarray, rng: np.random.Generator) -> Message:
        return self.compress(X, rng)

    def _compiled(self, X: np.ndarray, code: int, thr: float = 0.0, k: int = 1) -> Message:
        """The compressors the compiled step shares: :func:`efbench.blocks.compress_rows`."""
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

    def delta(self, d: int) -> float:
        """Contraction constant: E||C(x) - x||^2 <= (1 - delta) ||x||^2 (the alpha of EF21).
        An unbiased compressor counts as contractive after scaling by 1/(1 + omega)."""
        if self.kind == "identity":
            return 1.0
        if self.kind == "unbiased":
            return 1.0 / (1.0 + self.omega(d))
        raise NotImplementedError(f"{type(self).__name__} has no contraction constant")


@dataclass(kw_only=True)
class Identity(Compressor):
    """C(x) = x; 32 d bits."""

    kind: ClassVar[str] = "identity"

    def compress(self, X, rng):
        return self._compiled(X, blocks.IDENTITY)


@dataclass(kw_only=True)
class TopK(Compressor):
    """Keep the K coordinates of largest |x_j|; contractive with delta = K/d
    (Alistarh et al. 2018; Stich et al. 2018). Ties with the K-th largest magnitude are
    broken by index, lowest first (common on binary LIBSVM features), on every engine."""

    k: int = 1

    def validate(self, d):
        _check_k(self.k, d)

    def delta(self, d):
        return self.k / d

    def compress(self, X, rng):
        return self._compiled(X, blocks.TOPK, k=int(self.k))


@dataclass(kw_only=True)
class RandK(Compressor):
    """Keep K coordinates drawn uniformly without replacement; ``scaled`` multiplies by d/K,
    which makes it unbiased (E C(x) = x) with variance factor d/K - 1."""

    randomized: ClassVar[bool] = True
    k: int = 1
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

    def delta(self, d):
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

    lam: float = 0.01
    kind: ClassVar[str] = "absolute"

    def validate(self, d):
        check_positive("compressor.lam", self.lam, allow_zero=True)

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

    def delta(self, d):
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

    s: int = 1
    randomized: ClassVar[bool] = True
    kind: ClassVar[str] = "unbiased"

    def validate(self, d):
        if int(self.s) != self.s or self.s < 1:
            raise ConfigError("compressor.s", f"number of levels must be an integer >= 1, got {self.s}")

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

    delta: float = 0.01
    kind: ClassVar[str] = "absolute"
    homogeneous: ClassVar[bool] = False

    def validate(self, d):
        check_positive("compressor.delta", self.delta)

    def compress(self, X, rng):
        d = X.shape[1]
        q = np.rint(X / self.delta)
        nnz = np.count_nonzero(q, axis=1)
        # ceil(log2(2 max|q| + 1)) = bit_length(max|q|) + 1 (0 for q = 0), exact even where
        # 2 max|q| would overflow; values of a diverged run (inf, nan) are not levels
        top = np.abs(np.where(np.isfinite(q), q, 0.0)).max(axis=1)
        width = np.where(top > 0, np.frexp(top)[1] + 1, 0).astype(np.int64)
        return Message(q * self.delta, sparse_bits(nnz, d, width, self.index_bits), nnz)


def _check_k(k: object, d: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ConfigError("compressor.k", f"must be an integer, got {k!r}", f"1..{d}")
    if not 1 <= k <= d:
        raise ConfigError("compressor.k", f"K={k} is out of range for d={d}", f"1 <= K <= {d}")
