"""Plain, readable numpy versions of the formulas the package compiles (efbench.core.blocks,
efbench.engine.fused): one worker and one coordinate at a time where that reads best. Tests
compare the package with these step by step (the pattern of scikit-learn's
``tests/test_sag.py``)."""

from __future__ import annotations

import math

import numpy as np

from efbench.methods.samplers import Sampling


def sigmoid(t: float) -> float:
    return 1.0 / (1.0 + np.exp(-t))


def sample_grad(a: np.ndarray, y: float, x: np.ndarray, l2: float) -> np.ndarray:
    """grad of log(1 + exp(-y <a, x>)) + l2/2 ||x||^2."""
    return -y * sigmoid(-y * (a @ x)) * a + l2 * x


def worker_grad(A_i: np.ndarray, y_i: np.ndarray, x: np.ndarray, l2: float) -> np.ndarray:
    return np.mean([sample_grad(a, y, x, l2) for a, y in zip(A_i, y_i, strict=True)], axis=0)


def sample_index(u: float, probs: np.ndarray | None, m: int) -> int:
    """Inverse-CDF sampling of one of m rows from a uniform draw u (uniform when probs is None)."""
    if probs is None:
        return int(np.floor(u * m))
    return min(int(np.searchsorted(np.cumsum(probs), u, side="right")), m - 1)


def topk(v: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest |v_j|; among equal magnitudes the lowest index first."""
    order = sorted(range(v.size), key=lambda j: (-abs(v[j]), j))
    out = np.zeros_like(v)
    for j in order[:k]:
        out[j] = v[j]
    return out


def hard_threshold(v: np.ndarray, lam: float) -> np.ndarray:
    return np.where(np.abs(v) >= lam, v, 0.0)


def message_bits(count: int, d: int, float_bits: int, index_bits: bool) -> int:
    """The cheaper of an index list and a bitmap plus values; values only without indices."""
    if not index_bits:
        return count * float_bits
    index_width = int(np.ceil(np.log2(d))) if d > 1 else 0
    return min(count * (float_bits + index_width), d + count * float_bits)


class ECReference:
    """Error-compensated SGD / L-SVRG, tau = 1, one worker at a time (SPEC.md section 4):

        u_i = e_i + gamma g_i,  v_i = C(u_i)  (scaled form: gamma C(u_i / gamma)),
        e_i = u_i - v_i,        x -= mean_i v_i,

    with draws taken from ``rng`` in the package's order: n sample draws, then the L-SVRG
    coin (one for all workers, or one per worker)."""

    def __init__(
        self,
        A,
        Y,
        l2,
        comp,
        lam=0.0,
        k=1,
        scaled=True,
        probs=None,
        lsvrg=False,
        p=0.0,
        coin="shared",
        float_bits=32,
        index_bits=True,
    ):
        self.A, self.Y, self.l2 = A, Y, l2
        self.n, self.m, self.d = A.shape
        self.comp, self.lam, self.k, self.scaled = comp, lam, k, scaled
        self.probs, self.lsvrg, self.p, self.coin = probs, lsvrg, p, coin
        self.float_bits, self.index_bits = float_bits, index_bits

    def init(self, x0):
        e = np.zeros((self.n, self.d))
        w = np.tile(x0, (self.n, 1))
        gw = np.array([worker_grad(self.A[i], self.Y[i], x0, self.l2) for i in range(self.n)])
        return x0.copy(), e, w, gw

    def compress(self, u, gamma):
        if self.comp == "identity":
            return u.copy(), self.d
        if self.comp == "ht":
            v = hard_threshold(u, gamma * self.lam if self.scaled else self.lam)
            return v, int(np.count_nonzero(np.abs(u) >= (gamma * self.lam if self.scaled else self.lam)))
        return topk(u, self.k), min(self.k, self.d)

    def step(self, x, e, w, gw, gamma, rng):
        """One round; returns x, e, w, gw, bits (n,), nnz (n,), oracle calls per worker (mean)."""
        n, m = self.n, self.m
        u_draw = rng.random(n)
        refresh = np.zeros(n, bool)
        if self.lsvrg:
            refresh = (
                rng.random(n) < self.p if self.coin == "per_worker" else np.full(n, rng.random() < self.p)
            )
        v_all, bits, nnz = [], [], []
        for i in range(n):
            pi = None if self.probs is None else self.probs[i]
            j = sample_index(u_draw[i], pi, m)
            wt = 1.0 if pi is None else 1.0 / (m * pi[j])
            a, y = self.A[i, j], self.Y[i, j]
            g = wt * sample_grad(a, y, x, self.l2)
            if self.lsvrg:
                g = g - wt * sample_grad(a, y, w[i], self.l2) + gw[i]
            u = e[i] + gamma * g
            v, count = self.compress(u, gamma)
            e[i] = u - v
            v_all.append(v)
            nnz.append(count)
            bits.append(
                self.float_bits * self.d
                if self.comp == "identity"
                else message_bits(count, self.d, self.float_bits, self.index_bits)
            )
        calls = 1.0
        if self.lsvrg:
            for i in np.flatnonzero(refresh):
                w[i] = x
                gw[i] = worker_grad(self.A[i], self.Y[i], x, self.l2)
            calls = 2.0 + m * refresh.mean()
        x = x - np.mean(v_all, axis=0)
        return x, e, w, gw, np.array(bits), np.array(nnz), calls


class HalfImportance(Sampling):
    """A sampling defined outside efbench (as a user would): the mixture of uniform and
    importance sampling, p_ij = 1/(2m) + L_ij / (2 sum_j L_ij)."""

    def probabilities(self, problem):
        L = problem.row_norm2 / 4 + problem.l2
        return 0.5 / problem.m + 0.5 * L / L.sum(axis=1, keepdims=True)


def ef21_gamma(constants: dict, alpha: float, zeta: float = 0.0) -> tuple[float, str]:
    """The 3PC rule gamma = 1/(L + L_tilde sqrt(B/A)) (Richtarik et al. 2022) for EF21 / CLAG
    with a contractive compressor of constant alpha, written out: A = theta = 1 -
    sqrt(1 - alpha), B = max((1 - alpha)/theta, zeta) (zeta = 0: EF21's beta/theta)."""
    L, Lt = constants["L"], constants["L_tilde"]
    theta = 1.0 - math.sqrt(1.0 - alpha)
    B = max((1.0 - alpha) / theta, zeta)
    return 1.0 / (L + Lt * math.sqrt(B / theta)), "reference"
