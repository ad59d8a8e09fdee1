"""FedNL: Safaryan, Islamov, Qian & Richtarik, "FedNL: Making Newton-Type Methods Applicable
to Federated Learning", ICML 2022, Algorithm 1 (FedNL), Options 1 and 2, unit steps:

    worker i:  g_i = grad f_i(x^k),  S_i = C(grad^2 f_i(x^k) - H_i^k),
               l_i = ||H_i^k - grad^2 f_i(x^k)||_F,  H_i^{k+1} = H_i^k + alpha S_i
    server:    Option 1:  x^{k+1} = x^k - [H^k]_mu^{-1} g^k   ([.]_mu: eigenvalues clipped below at mu)
               Option 2:  x^{k+1} = x^k - (H^k + l^k I)^{-1} g^k
               H^k = (1/n) sum_i H_i^k,  g^k, l^k the means of g_i, l_i

H_i^0 = grad^2 f_i(x^0) and mu = l2 (efbench's choices). Matrix compressors C on symmetric
d x d matrices: Top-K of the d(d+1)/2 upper-triangle entries (row-major, ties lowest index
first) mirrored; Rank-R: the R eigenpairs of largest |lambda|. Bits (efbench's accounting):
round 0 sends g_i and the upper triangle of H_i^0 (F (d + N), N = d(d+1)/2); later rounds
F d for g_i, C's message (Top-K: K values among N positions; Rank-R: R (d + 1) floats) and,
under Option 2, the float l_i.
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, local_grad, local_hessian, message_bits


def top_k(D: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    d = len(D)
    upper = [(i, j) for i in range(d) for j in range(i, d)]
    keep = sorted(range(len(upper)), key=lambda t: (-abs(D[upper[t]]), t))[:k]
    S = np.zeros_like(D)
    for t in keep:
        i, j = upper[t]
        S[i, j] = S[j, i] = D[i, j]
    return S, message_bits(k, len(upper))


def rank_r(D: np.ndarray, r: int) -> tuple[np.ndarray, int]:
    lam, U = np.linalg.eigh(D)
    top = sorted(range(len(lam)), key=lambda t: (-abs(lam[t]), t))[:r]
    return sum(lam[t] * np.outer(U[:, t], U[:, t]) for t in top), 32 * r * (len(D) + 1)


def fednl(A, Y, l2, compress, alpha, option, x0, steps) -> Trace:
    """``compress``: D -> (C(D), bits of the message)."""
    n, _, d = A.shape
    N = d * (d + 1) // 2
    x, trace = x0.copy(), Trace(x0)
    H = [local_hessian(A[i], Y[i], x, l2) for i in range(n)]
    for k in range(steps):
        g = np.mean([local_grad(A[i], Y[i], x, l2) for i in range(n)], axis=0)
        D = [local_hessian(A[i], Y[i], x, l2) - H[i] for i in range(n)]
        sent = [compress(D[i]) for i in range(n)]
        Hbar = np.mean(H, axis=0)
        if option == 1:
            lam, U = np.linalg.eigh(Hbar)
            step = U @ np.diag(1.0 / np.maximum(lam, l2)) @ U.T @ g
        else:
            l_k = np.mean([np.linalg.norm(D[i], "fro") for i in range(n)])
            step = np.linalg.solve(Hbar + l_k * np.eye(d), g)
        x = x - step
        H = [H[i] + alpha * sent[i][0] for i in range(n)]
        bits = [32 * (d + N)] * n if k == 0 else [b + 32 * (d + (option == 2)) for _, b in sent]
        trace.record(x, bits, 32 * d)
    return trace
