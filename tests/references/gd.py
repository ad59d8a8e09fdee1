"""GD / SGD and compressed GD without error feedback.

* GD / SGD (the baseline): x^{k+1} = x^k - gamma (1/n) sum_i g_i^k, each worker sending g_i^k
  dense (F d bits) and the server broadcasting the average (F d).
* CGD, compressed (stochastic) gradient descent without error feedback, in the distributed
  form of Beznosikov, Horvath, Richtarik & Safaryan, "On Biased Compression for Distributed
  Learning" (arXiv:2002.12410; a one-line update, no numbered algorithm box):
  x^{k+1} = x^k - (1/n) sum_i gamma C(g_i^k). efbench's ``ec_form`` decides where C is applied (documented in
  ``Method.compress_step``): gamma C(g_i) (``scaled``) or C(gamma g_i) (``plain``); the two
  agree for a positively homogeneous C, and differ for Natural compression.
"""

from __future__ import annotations

import numpy as np
from references.plain import Trace, ec_compress, gradients


def gd(A, Y, l2, x0, gamma, steps, rng, batch=None) -> Trace:
    """GD (``batch`` None) or minibatch SGD."""
    n, _, d = A.shape
    x, trace = x0.copy(), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, x, rng, batch)
        x = x - gamma * G.mean(axis=0)
        trace.record(x, [32 * d] * n, 32 * d)
    return trace


def cgd(A, Y, l2, C, form, x0, gamma, steps, rng, batch=None) -> Trace:
    """CGD: all workers' gradients first (their sample draws), then their messages in worker
    order (the compressor's draws)."""
    n, _, d = A.shape
    x, trace = x0.copy(), Trace(x0)
    for _ in range(steps):
        G = gradients(A, Y, l2, x, rng, batch)
        sent = [ec_compress(C, gamma * G[i], gamma, form, rng) for i in range(n)]
        x = x - np.mean([v for v, _, _ in sent], axis=0)
        trace.record(x, [bits for _, bits, _ in sent], 32 * d)
    return trace
