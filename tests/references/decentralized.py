"""Decentralized SGD on a graph with mixing matrix W (n nodes, node models x_i); the reported
iterate is their average, and every message goes to each neighbour (a node's bits are its
degree times its message).

* D-PSGD: Lian, Zhang, Zhang, Hsieh, Zhang & Liu, "Can Decentralized Algorithms Outperform
  Centralized Algorithms?", NeurIPS 2017, Algorithm 1:
  x_i^{k+1} = sum_j W_ij x_j^k - gamma g_i(x_i^k); models sent dense (F d).
* DCD-PSGD: Tang, Gan, Zhang, Zhang & Liu, "Communication Compression for Decentralized
  Training", NeurIPS 2018, Algorithm 1: x_i^{k+1/2} = sum_j W_ij x_j^k - gamma g_i(x_i^k),
  z_i = x_i^{k+1/2} - x_i^k, every copy of x_i moves by C(z_i): x_i^{k+1} = x_i^k + C(z_i).
* DeepSqueeze: Tang, Lian, Qiu, Yuan, Yan, Zhang & Liu, "DeepSqueeze: Decentralization Meets
  Error-Compensated Compression", 2019, Algorithm 1: v_i = x_i - gamma g_i(x_i),
  c_i = C(v_i + delta_i), delta_i <- v_i + delta_i - c_i,
  x_i <- v_i + eta sum_j (W_ij - I_ij) c_j,  delta_i^0 = 0.
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, gradients


def _record(trace, X, deg, bits) -> None:
    trace.record(X.mean(axis=0), [deg[i] * bits[i] for i in range(len(deg))], 0, X=X)


def _degrees(W):
    return [int(np.count_nonzero(W[i])) - 1 for i in range(len(W))]


def dpsgd(A, Y, l2, W, x0, gamma, steps, rng, batch=1) -> Trace:
    n, _, d = A.shape
    X, deg, trace = np.tile(x0, (n, 1)), _degrees(W), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, X, rng, batch)
        X = np.array([sum(W[i, j] * X[j] for j in range(n)) - gamma * G[i] for i in range(n)])
        _record(trace, X, deg, [32 * d] * n)
    return trace


def dcd_psgd(A, Y, l2, C, W, x0, gamma, steps, rng, batch=1) -> Trace:
    """Gradients (their sample draws), then each node's C in order."""
    n = A.shape[0]
    X, deg, trace = np.tile(x0, (n, 1)), _degrees(W), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, X, rng, batch)
        half = [sum(W[i, j] * X[j] for j in range(n)) - gamma * G[i] for i in range(n)]
        sent = [C(half[i] - X[i], rng) for i in range(n)]
        X = np.array([X[i] + sent[i][0] for i in range(n)])
        _record(trace, X, deg, [bits for _, bits, _ in sent])
    return trace


def deep_squeeze(A, Y, l2, C, W, eta, x0, gamma, steps, rng, batch=1) -> Trace:
    """Gradients (their sample draws), then each node's C in order."""
    n, _, d = A.shape
    X, delta, deg, trace = np.tile(x0, (n, 1)), np.zeros((n, d)), _degrees(W), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, X, rng, batch)
        V = X - gamma * G
        sent = [C(V[i] + delta[i], rng) for i in range(n)]
        c = np.array([v for v, _, _ in sent])
        delta = V + delta - c
        X = np.array([V[i] + eta * sum((W[i, j] - (i == j)) * c[j] for j in range(n)) for i in range(n)])
        _record(trace, X, deg, [bits for _, bits, _ in sent])
    return trace
