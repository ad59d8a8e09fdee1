"""Mem-SGD: Stich, Cordonnier & Jaggi, "Sparsified SGD with Memory", NeurIPS 2018,
Algorithm 1 (with the averaging of its Theorem 2.4), every worker running it on its own
memory and the server averaging their messages:

    v_i^t = comp(m_i^t + eta_t g_i^t),  m_i^{t+1} = m_i^t + eta_t g_i^t - v_i^t,
    x^{t+1} = x^t - (1/n) sum_i v_i^t,  m_i^0 = 0,

eta_t = a / (mu (b + t)) (the paper's shape with efbench's a, b; the stepsize is handed in
as a function of t), and the weighted average xbar_T = sum_{t<T} w_t x^t / sum_{t<T} w_t,
w_t = (b + t)^2 (Theorem 2.4), which efbench reports after round T as ``x_avg``, computed
here from its definition.
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, gradients


def mem_sgd(A, Y, l2, comp, b, x0, eta, steps, rng, batch=1) -> Trace:
    """Gradients first (their sample draws), then each worker's message in order."""
    n, _, d = A.shape
    x, mem, trace = x0.copy(), np.zeros((n, d)), Trace(x0)
    past = []
    for t in range(steps):
        past.append(x)
        w = np.array([(b + s) ** 2 for s in range(t + 1)])
        x_avg = (w[:, None] * np.array(past)).sum(axis=0) / w.sum()
        G = gradients(A, Y, l2, x, rng, batch)
        sent = [comp(mem[i] + eta(t) * G[i], rng) for i in range(n)]
        V = np.array([v for v, _, _ in sent])
        mem = mem + eta(t) * G - V
        x = x - V.mean(axis=0)
        trace.record(x, [bits for _, bits, _ in sent], 32 * d, x_avg=x_avg)
    return trace
