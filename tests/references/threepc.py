"""The 3PC method and the EF21 extensions.

Richtarik, Sokolov, Fatkhullin, Gasanov, Li & Gorbunov, "3PC: Three Point Compressors for
Communication-Efficient Distributed Training and a Better Theory for Lazy Aggregation", ICML
2022, Algorithm 1 with the mechanisms of its Table 1 (Section 3):

    x^{t+1} = x^t - gamma g^t,  g^t = (1/n) sum_i g_i^t,
    g_i^{t+1} = M_{h = g_i^t, y = grad f_i(x^t)}(x = grad f_i(x^{t+1})),   g_i^0 = grad f_i(x^0),

    EF21    M = h + C(x - h)
    3PCv1   M = y + C(x - y)
    3PCv2   b = h + Q(x - y),  M = b + C(x - b)          (Q: Rand-K2 scaled by d/K2)
    3PCv3   b = M1_{h,y}(x),   M = b + C(x - b)          (M1: another 3PC, here EF21 or LAG)
    3PCv4   b = h + C2(x - h), M = b + C1(x - b)         (C2: Top-K2)
    3PCv5   M = x with probability p, else h + C(x - y)
    LAG     M = x if ||x - h||^2 > zeta ||x - y||^2, else h

efbench's documented choices followed here: round 0 sends g_i^0 dense (F d bits); 3PCv1
sends M - h exactly (its nonzeros or F d bits dense, the cheaper); 3PCv5 tosses one coin a
round for all workers; a LAG worker that fires sends x dense, one that does not sends 0 bits.
3PCv1's y + C(x - y) is taken in exact arithmetic (see :func:`v1`).
The mechanisms act on all workers at once, each phase (all of Q, then all of C) drawing from
the generator worker by worker, as efbench's do.

Fatkhullin, Sokolov, Gorbunov, Li & Richtarik, "EF21 with Bells & Whistles" (2021):

* EF21-PP (its partial-participation algorithm): each round a sample S_t (here tau-nice: tau
  workers without replacement); i in S_t: g_i^{t+1} = g_i^t + C(grad f_i(x^{t+1}) - g_i^t), others keep g_i.
* EF21-BC (Algorithm 5): x^{t+1} = x^t - gamma g^t; workers c_i = C_w(grad f_i(x^{t+1}) -
  gt_i^t), gt_i^{t+1} = gt_i^t + c_i; server b^{t+1} = C_M(gt^{t+1} - g^t), g^{t+1} = g^t +
  b^{t+1}, gt the mean of the gt_i; g^0 = gt^0 sent dense (efbench's choice).
* EF21-HB (Algorithm 6): x^{t+1} = x^t - gamma v^t, v^{t+1} = eta v^t + g^{t+1}, v^0 = g^0.
"""

from __future__ import annotations

import numpy as np
from references.plain import RandK, TopK, Trace, local_grad, message_bits


def ef21(C):
    def mech(H, Yg, X, rng):
        sent = [C(X[i] - H[i], rng) for i in range(len(H))]
        return [H[i] + sent[i][0] for i in range(len(H))], [bits for _, bits, _ in sent]

    return mech


def lag(zeta):
    def mech(H, Yg, X, rng):
        fire = [np.sum((X[i] - H[i]) ** 2) > zeta * np.sum((X[i] - Yg[i]) ** 2) for i in range(len(H))]
        G = [X[i].copy() if fire[i] else H[i] for i in range(len(H))]
        return G, [32 * X.shape[1] if f else 0 for f in fire]

    return mech


def v1(C):
    """C a sparsifier (Top-K, unscaled Rand-K): y + C(x - y) is x_j where C keeps coordinate
    j and y_j elsewhere, as in exact arithmetic; M - h then has the zeros of the paper's
    message (on the coordinates kept last round and not this one, h_j = y_j)."""

    def mech(H, Yg, X, rng):
        G = [np.where(C(X[i] - Yg[i], rng)[0] != 0, X[i], Yg[i]) for i in range(len(H))]
        d = X.shape[1]
        return G, [min(message_bits(int(np.count_nonzero(G[i] - H[i])), d), 32 * d) for i in range(len(H))]

    return mech


def v2(C, k2):
    Q = RandK(k2, scaled=True)

    def mech(H, Yg, X, rng):
        q = [Q(X[i] - Yg[i], rng) for i in range(len(H))]
        B = [H[i] + q[i][0] for i in range(len(H))]
        c = [C(X[i] - B[i], rng) for i in range(len(H))]
        return [B[i] + c[i][0] for i in range(len(H))], [q[i][1] + c[i][1] for i in range(len(H))]

    return mech


def v3(C, inner):
    def mech(H, Yg, X, rng):
        B, bits = inner(H, Yg, X, rng)
        c = [C(X[i] - B[i], rng) for i in range(len(H))]
        return [B[i] + c[i][0] for i in range(len(H))], [bits[i] + c[i][1] for i in range(len(H))]

    return mech


def v4(C, k2):
    return v3(C, ef21(TopK(k2)))  # b = h + C2(x - h) is EF21's map with C2


def v5(C, p):
    def mech(H, Yg, X, rng):
        if rng.random() < p:
            return [X[i].copy() for i in range(len(H))], [32 * X.shape[1]] * len(H)
        sent = [C(X[i] - Yg[i], rng) for i in range(len(H))]
        return [H[i] + sent[i][0] for i in range(len(H))], [bits for _, bits, _ in sent]

    return mech


def grads(A, Y, l2, x):
    return np.array([local_grad(A[i], Y[i], x, l2) for i in range(A.shape[0])])


def three_pc(A, Y, l2, mech, x0, gamma, steps, rng, nice=None, server=None, eta=None) -> Trace:
    """Algorithm 1 with mechanism ``mech``; ``nice`` = tau: EF21-PP's tau-nice sampling
    (``mech`` must be EF21's); ``server`` = C_M: EF21-BC; ``eta``: EF21-HB's momentum."""
    n, _, d = A.shape
    x, trace = x0.copy(), Trace(x0)
    y = grads(A, Y, l2, x)  # grad f_i(x^t)
    g = y.copy()  # g_i^0, sent dense
    g_server = g.mean(axis=0)  # g^t: the mean of the g_i, or EF21-BC's server estimate
    v = g_server.copy()  # the step direction: g^t, or EF21-HB's v^t (v^0 = g^0)
    bits, down = [32 * d] * n, 32 * d
    for t in range(steps):
        if t > 0:
            part = list(range(n)) if nice is None else sorted(rng.choice(n, size=nice, replace=False))
            new = grads(A, Y, l2, x)
            sent, sent_bits = mech(g[part], y[part], new[part], rng)
            bits = [0] * n
            for s, i in enumerate(part):
                g[i], y[i], bits[i] = sent[s], new[i], sent_bits[s]
            if server is None:
                g_server = g.mean(axis=0)
            else:
                b, down, _ = server(g.mean(axis=0) - g_server, rng)
                g_server = g_server + b
            v = g_server if eta is None else eta * v + g_server
        x = x - gamma * v
        trace.record(x, bits, down)
    return trace
