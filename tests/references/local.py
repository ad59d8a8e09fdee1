"""Local-step methods, all sending dense models (F d bits) when they communicate.

* Local-SGD / FedAvg (McMahan et al. 2017; Khaled, Mishchenko & Richtarik, "Tighter Theory
  for Local SGD on Identical and Heterogeneous Data", AISTATS 2020, whose update this is, with
  the server (global) stepsize eta_s of Karimireddy et al., SCAFFOLD, ICML 2020, Algorithm 1,
  FedAvg at eta_s = 1): one round is
  x_i^{0} = x, tau steps x_i <- x_i - gamma g_i(x_i), then x <- x + eta_s (1/n) sum_i (x_i - x).
* Scaffnew: Mishchenko, Malinovsky, Stich & Richtarik, "ProxSkip: Yes! Local Gradient Steps
  Provably Lead to Communication Acceleration! Finally!", ICML 2022, Algorithm 2: one
  iteration is xhat_i = x_i - gamma (g_i(x_i) - h_i); theta ~ Be(p);
  theta = 1: x_i = (1/n) sum_j (xhat_j - (gamma/p) h_j), else x_i = xhat_i;
  h_i <- h_i + (p/gamma)(x_i - xhat_i);  h_i^0 = 0 (efbench's choice of the zero-sum start).
* GradSkip: Maranjyan, Safaryan & Richtarik, "GradSkip: Communication-Accelerated Local
  Gradient Methods with Better Computational Complexity", 2022, Algorithm 1: theta ~ Be(p),
  eta_i ~ Be(q_i); hhat_i = eta_i h_i + (1 - eta_i) grad f_i(x_i);
  xhat_i = x_i - gamma (grad f_i(x_i) - hhat_i); x_i as Scaffnew's with hhat;
  h_i <- hhat_i + (p/gamma)(x_i - xhat_i). Every gradient evaluated here, as written; the
  oracle calls are what an implementation must compute: m where x_i moved since worker i's
  last gradient, else 0.

The reported iterate is the mean of the x_i (the server model after a communication).
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, gradients, local_grad


def local_sgd(A, Y, l2, tau, eta_s, x0, gamma, steps, rng, batch=None) -> Trace:
    """Each local step draws every worker's minibatch, in worker order."""
    n, _, d = A.shape
    x, trace = x0.copy(), Trace(x0)
    for _ in range(steps):
        X = np.tile(x, (n, 1))
        for _ in range(tau):
            X = X - gamma * gradients(A, Y, l2, X, rng, batch)
        x = x + eta_s * (X - x).mean(axis=0)
        trace.record(x, [32 * d] * n, 32 * d)
    return trace


def _communicate(X_hat, H_hat, gamma, p, theta):
    """x_i and h_i after the (possible) averaging, from xhat and the shifts hhat."""
    if not theta:
        return X_hat, H_hat
    xbar = (X_hat - (gamma / p) * H_hat).mean(axis=0)
    X = np.tile(xbar, (len(X_hat), 1))
    return X, H_hat + (p / gamma) * (X - X_hat)


def scaffnew(A, Y, l2, p, x0, gamma, steps, rng, batch=None) -> Trace:
    """Gradients (their sample draws) first, then the coin."""
    n, _, d = A.shape
    X, H, trace = np.tile(x0, (n, 1)), np.zeros((n, d)), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, X, rng, batch)
        theta = rng.random() < p
        X, H = _communicate(X - gamma * (G - H), H, gamma, p, theta)
        trace.record(X.mean(axis=0), [32 * d * theta] * n, 32 * d * theta, X=X, h=H)
    return trace


def gradskip(A, Y, l2, p, q, x0, gamma, steps, rng) -> Trace:
    """The coin theta, then every worker's eta_i (drawn only when some q_i < 1)."""
    n, m, d = A.shape
    X, H, trace = np.tile(x0, (n, 1)), np.zeros((n, d)), Trace(x0)
    last = [None] * n  # the point of worker i's last gradient
    for _ in range(steps):
        G = np.array([local_grad(A[i], Y[i], X[i], l2) for i in range(n)])
        calls = [0.0 if last[i] is not None and np.array_equal(last[i], X[i]) else float(m) for i in range(n)]
        last = [X[i].copy() for i in range(n)]
        theta = rng.random() < p
        eta = rng.random(n) < q if min(q) < 1 else np.ones(n, dtype=bool)
        H_hat = np.array([H[i] if eta[i] else G[i] for i in range(n)])
        X, H = _communicate(X - gamma * (G - H_hat), H_hat, gamma, p, theta)
        trace.record(X.mean(axis=0), [32 * d * theta] * n, 32 * d * theta, X=X, h=H, calls=calls)
    return trace
