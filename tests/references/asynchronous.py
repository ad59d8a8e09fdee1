"""Asynchronous SGD with delays: Mishchenko, Bach, Even & Woodworth, "Asynchronous SGD Beats
Minibatch SGD Under Arbitrary Delays", NeurIPS 2022, Algorithm 1 (every worker always busy;
Koloskova, Stich & Jaggi, NeurIPS 2022, Algorithm 1 at full concurrency):

    x^{k+1} = x^k - gamma g_{i_k}(x^{k - d_k}),

i_k the worker whose gradient arrives k-th and x^{k - d_k} the iterate it was sent when it
started. The arrivals are simulated plainly: worker i's c-th gradient arrives at c tau_i
(deterministic times, exact rationals) or after a fresh Exp(1) time from its start (random
times: n draws at the start, one each time a worker starts again); arrivals at the same time
are applied in worker order (efbench's choice). The arriving worker sends

    Async-SGD     gamma g, dense (F d bits)
    Async-QSGD    gamma Q(g) (``scaled``) or Q(gamma g) (``plain``)
    Async-EC-SGD  v = gamma C(e_i / gamma + g) or C(e_i + gamma g), e_i <- e_i + gamma g - v
                  (error feedback on the arriving worker's memory: Stich & Karimireddy 2020)

and the server steps x <- x - v. Draws each update: the arriving worker's minibatch, its
compressor, then (random times) its next compute time.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from references.plain import Trace, ec_compress, local_grad, sample_rows


def async_sgd(A, Y, l2, taus, x0, gamma, steps, rng, batch=None, C=None, form="scaled", ec=False) -> Trace:
    """``taus``: the compute times (None: random); ``C``: Async-QSGD's Q or, with ``ec``,
    Async-EC-SGD's compressor."""
    n, m, d = A.shape
    if taus is None:
        arrive = list(rng.exponential(1.0, size=n))
    else:
        taus = [Fraction(t) for t in taus]
        arrive = list(taus)
    jobs = [0] * n
    held = [x0.copy() for _ in range(n)]
    e = np.zeros((n, d))
    x, trace = x0.copy(), Trace(x0)
    for _ in range(steps):
        i = min(range(n), key=lambda j: (arrive[j], j))
        rows = slice(None) if batch is None else sample_rows(rng, m, batch)
        g = local_grad(A[i][rows], Y[i][rows], held[i], l2)
        if C is None:
            v, bits = gamma * g, 32 * d
        elif ec:
            v, bits, _ = ec_compress(C, e[i] + gamma * g, gamma, form, rng)
            e[i] = e[i] + gamma * g - v
        else:
            v, bits, _ = ec_compress(C, gamma * g, gamma, form, rng)
        x = x - v
        held[i] = x
        jobs[i] += 1
        arrive[i] = arrive[i] + rng.exponential(1.0) if taus is None else (jobs[i] + 1) * taus[i]
        trace.record(x, [bits if j == i else 0 for j in range(n)], 32 * d)
    return trace
