"""What the references share, in plain numpy: the l2-regularized logistic loss of one worker
(gradient, minibatch gradient, Hessian), the compressors row by row, the exact size of a
message, and the record of a run.

Randomness is replayed, not shared: a reference is handed a ``numpy.random.Generator`` with
the seed efbench's run got, and makes the same calls on it in the same order (what each
draw is for is written where it is drawn). ``Generator.random((r, d))`` fills its array in
row-major order, so r calls ``random(d)`` one worker at a time read the same numbers. No
efbench code runs here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def sigmoid(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


def local_grad(A_i: np.ndarray, y_i: np.ndarray, x: np.ndarray, l2: float) -> np.ndarray:
    """grad f_i(x) = (1/m) sum_j -y_j sigmoid(-y_j <a_j, x>) a_j + l2 x over the rows given: a
    worker's full local gradient, or a minibatch estimate when given its sampled rows."""
    coef = -y_i * sigmoid(-y_i * (A_i @ x))
    return A_i.T @ coef / len(y_i) + l2 * x


def local_hessian(A_i: np.ndarray, y_i: np.ndarray, x: np.ndarray, l2: float) -> np.ndarray:
    """grad^2 f_i(x) = (1/m) sum_j s_j (1 - s_j) a_j a_j^T + l2 I, s_j = sigmoid(y_j <a_j, x>)."""
    s = sigmoid(y_i * (A_i @ x))
    return (A_i.T * (s * (1.0 - s))) @ A_i / len(y_i) + l2 * np.eye(A_i.shape[1])


def sample_rows(rng: np.random.Generator, m: int, batch: int) -> np.ndarray:
    """One worker's minibatch: ``batch`` rows j = floor(m u), u uniform on [0, 1) (uniform
    sampling with replacement; one ``random(batch)`` call)."""
    return (rng.random(batch) * m).astype(np.intp)


def gradients(A, Y, l2: float, X: np.ndarray, rng: np.random.Generator, batch: int | None) -> np.ndarray:
    """g_i for every worker i, at X_i (one point per worker, (n, d)) or at one point X (d,):
    grad f_i (``batch`` None) or the mean over ``batch`` rows drawn uniformly with replacement
    (SGD), workers drawing in order 0..n-1."""
    n, m, _ = A.shape
    G = []
    for i in range(n):
        x = X[i] if X.ndim == 2 else X
        rows = slice(None) if batch is None else sample_rows(rng, m, batch)
        G.append(local_grad(A[i][rows], Y[i][rows], x, l2))
    return np.array(G)


def message_bits(count: int, d: int, float_bits: int = 32) -> int:
    """A sparse message of ``count`` values among d coordinates: the cheaper of an index list
    (count (F + ceil(log2 d)) bits) and a bitmap with the values (d + count F)."""
    width = int(np.ceil(np.log2(d))) if d > 1 else 0
    return min(count * (float_bits + width), d + count * float_bits)


@dataclass
class TopK:
    """The k largest |v_j|, ties lowest index first (Alistarh et al. 2018; Stich et al. 2018)."""

    k: int

    def __call__(self, v, rng):
        keep = sorted(range(v.size), key=lambda j: (-abs(v[j]), j))[: self.k]
        out = np.zeros_like(v)
        out[keep] = v[keep]
        return out, message_bits(self.k, v.size), self.k


@dataclass
class RandK:
    """k coordinates uniformly without replacement, times d/k if ``scaled`` (unbiased).
    Draws d uniforms and keeps the k smallest; k = d draws nothing (efbench's RandK)."""

    k: int
    scaled: bool = False

    def __call__(self, v, rng):
        d = v.size
        keep = np.arange(d) if self.k == d else np.argsort(rng.random(d))[: self.k]
        out = np.zeros_like(v)
        out[keep] = v[keep] * (d / self.k if self.scaled else 1.0)
        return out, message_bits(self.k, d), self.k


class Natural:
    """Natural compression (Horvath et al. 2019): |v_j| in [2^a, 2^(a+1)) goes to 2^(a+1) with
    probability |v_j|/2^a - 1, else to 2^a, sign kept; one uniform per coordinate; 1 + 8 bits
    a coordinate (sign and exponent of a 32-bit float)."""

    def __call__(self, v, rng):
        u = rng.random(v.size)
        out = np.zeros_like(v)
        for j, vj in enumerate(v):
            if vj != 0.0:
                low = np.ldexp(1.0, np.frexp(abs(vj))[1] - 1)  # 2^a <= |v_j| < 2^(a+1), exactly
                out[j] = np.sign(vj) * low * (2.0 if u[j] < abs(vj) / low - 1.0 else 1.0)
        return out, 9 * v.size, v.size


class Sign:
    """Scaled sign (Karimireddy et al. 2019): (||v||_1/d) sign(v_j), a zero v_j sent as +
    (efbench's choice); F + d bits."""

    def __call__(self, v, rng):
        scale = np.abs(v).sum() / v.size
        return np.where(v >= 0, scale, -scale), 32 + v.size, v.size


def ec_compress(C, u: np.ndarray, gamma: float, form: str, rng):
    """gamma C(u / gamma) (``scaled``: C's parameters in gradient units) or C(u) (``plain``)."""
    if form == "plain":
        return C(u, rng)
    v, bits, nnz = C(u / gamma, rng)
    return gamma * v, bits, nnz


def ring(n: int) -> np.ndarray:
    """The ring's Metropolis-Hastings mixing matrix: 1/3 to itself and each of its two
    neighbours (n >= 3); each node sends its message to 2 neighbours."""
    W = np.eye(n) / 3.0
    for i in range(n):
        W[i, (i + 1) % n] = W[i, (i - 1) % n] = 1.0 / 3.0
    return W


@dataclass
class Trace:
    """A run step by step: x^0..x^K, and per round k = 1..K the bits each worker sent, the
    bits broadcast, and any other record after the round (``more``: name -> list)."""

    x0: np.ndarray
    x: list = field(default_factory=list)
    bits_up: list = field(default_factory=list)
    bits_down: list = field(default_factory=list)
    more: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x.append(np.array(self.x0, dtype=float))

    def record(self, x, bits_up, bits_down, **more) -> None:
        self.x.append(np.array(x, dtype=float))
        self.bits_up.append(list(bits_up))
        self.bits_down.append(bits_down)
        for key, value in more.items():
            self.more.setdefault(key, []).append(np.array(value, dtype=float))
