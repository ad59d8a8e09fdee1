"""DIANA: Mishchenko, Gorbunov, Takac & Richtarik, "Distributed Learning with Compressed
Gradient Differences" (2019), Algorithm 1 without the prox (the regularizer is in f); with
stochastic gradients as in Horvath, Kovalev, Mishchenko, Richtarik & Stich, "Stochastic
Distributed Learning with Gradient Quantization and Variance Reduction" (2019).

Worker i:  Delta_i^k = g_i^k - h_i^k,  Dhat_i^k = Q(Delta_i^k),  h_i^{k+1} = h_i^k + alpha Dhat_i^k
Server:    ghat^k = h^k + (1/n) sum_i Dhat_i^k,  x^{k+1} = x^k - gamma ghat^k,
           h^{k+1} = h^k + alpha (1/n) sum_i Dhat_i^k,

h_i^0 = 0 (efbench's choice; the algorithm takes any h_i^0 and h^0 their mean). Workers send
Q's message; the server broadcasts x (F d bits).
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, gradients


def diana(A, Y, l2, Q, alpha, x0, gamma, steps, rng, batch=None) -> Trace:
    """All gradients first (their sample draws), then Q worker by worker (its draws)."""
    n, _, d = A.shape
    x, h, hbar, trace = x0.copy(), np.zeros((n, d)), np.zeros(d), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, x, rng, batch)
        sent = [Q(G[i] - h[i], rng) for i in range(n)]
        Dhat = np.array([v for v, _, _ in sent])
        x = x - gamma * (hbar + Dhat.mean(axis=0))
        h = h + alpha * Dhat
        hbar = hbar + alpha * Dhat.mean(axis=0)
        trace.record(x, [bits for _, bits, _ in sent], 32 * d)
    return trace
