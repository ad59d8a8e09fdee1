"""The loop baseline: the same methods written the way most research scripts are, one
Python iteration per worker per step over 1-D numpy vectors. Used only by bench.py to
measure what simulating the workers as (n, d) arrays buys; it is deliberately fair
(precomputed sampling CDFs, argpartition for TopK), not deliberately slow."""

from __future__ import annotations

import numpy as np
from scipy.special import expit


class LoopEC:
    """EC-SGD (uniform or importance sampling) / EC-LSVRG / EF21 with a per-worker loop."""

    def __init__(self, A, y, l2, method, compressor, k_or_lam, gamma, seed=0):
        self.A, self.y, self.l2 = A, y, l2
        self.n, self.m, self.d = A.shape
        self.method, self.comp, self.param, self.gamma = method, compressor, k_or_lam, gamma
        self.rng = np.random.default_rng(seed)
        self.x = np.zeros(self.d)
        self.e = [np.zeros(self.d) for _ in range(self.n)]
        L = np.einsum("nmd,nmd->nm", A, A) / 4 + l2
        self.cdf = [np.cumsum(L[i] / L[i].sum()) for i in range(self.n)]
        self.w = [L[i].mean() / L[i] for i in range(self.n)]
        self.snap = [self.x.copy() for _ in range(self.n)]
        self.snap_grad = [self.full_grad(i, self.x) for i in range(self.n)]
        self.g = [self.full_grad(i, self.x) for i in range(self.n)]  # EF21 state

    def grad_ij(self, i, j, x):
        a = self.A[i, j]
        yy = self.y[i, j]
        return -yy * expit(-yy * (a @ x)) * a + self.l2 * x

    def full_grad(self, i, x):
        z = self.y[i] * (self.A[i] @ x)
        return self.A[i].T @ (-self.y[i] * expit(-z)) / self.m + self.l2 * x

    def compress(self, v):
        if self.comp == "topk":
            out = np.zeros_like(v)
            idx = np.argpartition(np.abs(v), self.d - self.param)[self.d - self.param :]
            out[idx] = v[idx]
            return out
        return np.where(np.abs(v) >= self.param, v, 0.0)

    def step(self):
        total = np.zeros(self.d)
        for i in range(self.n):
            if self.method == "ef21":
                c = self.compress(self.full_grad(i, self.x) - self.g[i])
                self.g[i] = self.g[i] + c
                total += self.g[i]
                continue
            if self.method == "ec_sgd_is":
                j = min(int(np.searchsorted(self.cdf[i], self.rng.random(), side="right")), self.m - 1)
                g = self.w[i][j] * self.grad_ij(i, j, self.x)
            else:
                j = int(self.rng.integers(self.m))
                g = self.grad_ij(i, j, self.x)
                if self.method == "ec_lsvrg":
                    g = g - self.grad_ij(i, j, self.snap[i]) + self.snap_grad[i]
                    if self.rng.random() < 1.0 / self.m:
                        self.snap[i] = self.x.copy()
                        self.snap_grad[i] = self.full_grad(i, self.x)
            u = self.e[i] + self.gamma * g
            v = self.compress(u)
            self.e[i] = u - v
            total += v
        if self.method == "ef21":
            self.x = self.x - self.gamma * total / self.n
        else:
            self.x = self.x - total / self.n
