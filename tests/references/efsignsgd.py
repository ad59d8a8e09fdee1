"""EF-signSGD: Karimireddy, Rebjock, Stich & Jaggi, "Error Feedback Fixes SignSGD and other
Gradient Compression Schemes", ICML 2019, Algorithm 1, on every worker, the server averaging
the messages:

    p_i = gamma g_i + e_i,  Delta_i = (||p_i||_1 / d) sign(p_i),  e_i <- p_i - Delta_i,
    x <- x - (1/n) sum_i Delta_i,   e_i^0 = 0.

Each message is one float and d signs (F + d bits).
"""

from __future__ import annotations

import numpy as np
from references.plain import Sign, Trace, gradients


def ef_signsgd(A, Y, l2, x0, gamma, steps, rng, batch=1) -> Trace:
    n, _, d = A.shape
    x, e, trace, sign = x0.copy(), np.zeros((n, d)), Trace(x0), Sign()
    for _ in range(steps):
        G = gradients(A, Y, l2, x, rng, batch)
        P = gamma * G + e
        sent = [sign(P[i], rng) for i in range(n)]
        Delta = np.array([v for v, _, _ in sent])
        e = P - Delta
        x = x - Delta.mean(axis=0)
        trace.record(x, [bits for _, bits, _ in sent], 32 * d)
    return trace
