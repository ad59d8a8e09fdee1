"""MARINA, VR-MARINA and PP-MARINA: Gorbunov, Burlachenko, Li & Richtarik, "MARINA: Faster
Non-Convex Distributed Learning with Compression", ICML 2021, Algorithms 1, 2 and 4:

    g^0 = grad f(x^0);  each round k: c_k ~ Be(p),  x^{k+1} = x^k - gamma g^k,
    c_k = 1:  g^{k+1} = (1/n) sum_i grad f_i(x^{k+1})                              (all send F d)
    c_k = 0:  g^{k+1} = g^k + (1/|S|) sum_{i in S} Q(Delta_i^k)

    MARINA     S = all workers,  Delta_i = grad f_i(x^{k+1}) - grad f_i(x^k)
    VR-MARINA  S = all workers,  Delta_i = (1/b') sum_{j in I_i} [grad f_ij(x^{k+1}) - grad f_ij(x^k)],
               I_i b' rows drawn uniformly with replacement
    PP-MARINA  S = r workers drawn without replacement (r-nice), Delta_i as MARINA's

Round 0 sends the local gradients dense (efbench's choice; the algorithm assumes g^0 known).
Draw order, each round after the first: the coin, then on a compressed round the r-nice
sample (PP) or every worker's minibatch (VR), then Q worker by worker.
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, local_grad, sample_rows


def marina(A, Y, l2, Q, p, x0, gamma, steps, rng, r=None, batch=None) -> Trace:
    """MARINA; ``r``: PP-MARINA with r of the n workers; ``batch`` = b': VR-MARINA."""
    n, m, d = A.shape

    def full(x):
        return [local_grad(A[i], Y[i], x, l2) for i in range(n)]

    x, trace = x0.copy(), Trace(x0)
    g, x_prev = np.mean(full(x), axis=0), None
    for k in range(steps):
        bits = [32 * d] * n
        if k > 0 and not rng.random() < p:  # c = 0: compressed round
            senders = list(range(n)) if r is None else sorted(rng.choice(n, size=r, replace=False))
            if batch is None:
                Delta = [local_grad(A[i], Y[i], x, l2) - local_grad(A[i], Y[i], x_prev, l2) for i in senders]
            else:
                rows = [sample_rows(rng, m, batch) for _ in senders]
                Delta = [
                    local_grad(A[i][j], Y[i][j], x, l2) - local_grad(A[i][j], Y[i][j], x_prev, l2)
                    for i, j in zip(senders, rows, strict=True)
                ]
            sent = [Q(D, rng) for D in Delta]
            g = g + np.mean([v for v, _, _ in sent], axis=0)
            bits = [0] * n
            for i, (_, b, _) in zip(senders, sent, strict=True):
                bits[i] = b
        elif k > 0:  # c = 1: synchronise
            g = np.mean(full(x), axis=0)
        x_prev, x = x, x - gamma * g
        trace.record(x, bits, 32 * d)
    return trace
