"""Communication graphs for decentralized methods and their mixing matrices.

W uses Metropolis-Hastings weights, W_ij = 1 / (1 + max(deg_i, deg_j)) on edges and
W_ii = 1 - sum_j W_ij: symmetric and doubly stochastic for any graph (Xiao & Boyd 2004).
On the complete graph this is 11^T / n. The spectral gap is 1 - max(|lambda_2|, |lambda_n|).
"""

from __future__ import annotations

import math

import numpy as np

from efbench.errors import check_choice

TOPOLOGIES = ("ring", "torus", "complete")


def adjacency(name: str, n: int) -> np.ndarray:
    """Boolean (n, n) adjacency of the named graph (no self-loops)."""
    check_choice("topology.name", name, TOPOLOGIES)
    adj = np.zeros((n, n), dtype=bool)
    if name == "complete":
        adj[:] = True
    elif name == "ring" or n < 4:
        i = np.arange(n)
        adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = True
    else:
        # the most square r x c grid with r c = n, wrapped around in both directions
        r = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
        c = n // r
        idx = np.arange(n).reshape(r, c)
        for shift, axis in ((1, 0), (1, 1)):
            nb = np.roll(idx, shift, axis=axis)
            adj[idx.ravel(), nb.ravel()] = adj[nb.ravel(), idx.ravel()] = True
    np.fill_diagonal(adj, False)
    return adj


def mixing_matrix(name: str, n: int) -> np.ndarray:
    """Metropolis-Hastings mixing matrix W of the named graph on n nodes."""
    adj = adjacency(name, n)
    deg = adj.sum(axis=1)
    W = np.where(adj, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    W[np.diag_indices(n)] = 1.0 - W.sum(axis=1)
    return W


def spectral_gap(W: np.ndarray) -> float:
    """1 - the second largest |eigenvalue| of the symmetric W."""
    ev = np.sort(np.abs(np.linalg.eigvalsh(W)))
    return float(1.0 - (ev[-2] if len(ev) > 1 else 0.0))
