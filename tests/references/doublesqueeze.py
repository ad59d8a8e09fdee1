"""DoubleSqueeze: Tang, Yu, Lian, Zhang & Liu, "DoubleSqueeze: Parallel Stochastic Gradient
Descent with Double-Pass Error-Compensated Compression", ICML 2019, Algorithm 1, in its own
gradient units (efbench's ``ec_form=scaled``; its memories are gamma times these):

    worker i:  v_i = C(g_i + delta_i),        delta_i <- g_i + delta_i - v_i
    server:    v   = C((1/n) sum_i v_i + delta),  delta <- (1/n) sum_i v_i + delta - v
    x <- x - gamma v,   delta_i^0 = delta^0 = 0.

Workers send C's message; the server broadcasts its own compressed v (its bits are the
downlink).
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, gradients


def double_squeeze(A, Y, l2, C, x0, gamma, steps, rng, batch=1) -> Trace:
    """Gradients (their sample draws), the workers' C in order, then the server's C."""
    n, _, d = A.shape
    x, delta_w, delta_s, trace = x0.copy(), np.zeros((n, d)), np.zeros(d), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, x, rng, batch)
        sent = [C(G[i] + delta_w[i], rng) for i in range(n)]
        V = np.array([v for v, _, _ in sent])
        delta_w = G + delta_w - V
        v, down, _ = C(V.mean(axis=0) + delta_s, rng)
        delta_s = V.mean(axis=0) + delta_s - v
        x = x - gamma * v
        trace.record(x, [bits for _, bits, _ in sent], down)
    return trace
