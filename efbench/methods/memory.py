"""Error feedback: the one memory rule every error-compensated method uses (the "memory" role
of GRACE, Xu et al., "GRACE: A Compressed Communication Framework for Distributed Machine
Learning", ICDCS 2021: compensate a vector with the error left over, compress, remember the new
error).

A memory e (one row per worker, (n, d), or a single row, (1, d), for a server's memory) and a
correction c to send (gamma g for a worker's step):

    u = e + c,   v = C(u),   e <- u - v,

v the message. Nothing is lost: the sum of all messages sent trails the sum of all corrections
by the memory alone, sum_k v_k = sum_k c_k - e_K, and a contractive C (E||C(u) - u||^2 <=
(1 - delta)||u||^2) keeps it bounded. The methods that use it:

* EC-SGD, Mem-SGD, EF-signSGD (:class:`efbench.methods.base.ErrorCompensated` and subclasses):
  Seide, Fu, Droppo, Li & Yu, "1-Bit Stochastic Gradient Descent and its Application to
  Data-Parallel Distributed Training of Speech DNNs", Interspeech 2014 (the idea); Stich &
  Karimireddy, "The Error-Feedback Framework: Better Rates for SGD with Delayed Gradients and
  Compressed Communication", arXiv 2019 / JMLR 2020 (the analysis, which also covers delays);
* DoubleSqueeze (Tang, Yu, Lian, Zhang & Liu, ICML 2019): on the workers and again on the
  server, whose memory is one row;
* DeepSqueeze (Tang et al., "DeepSqueeze: Decentralization Meets Error-Compensated
  Compression", 2019): c is the node's new model, not a step (``plain`` form);
* asynchronous EC-SGD (:class:`efbench.methods.asynchronous.AsyncECSGD`): the row of the
  worker whose gradient arrives, the delayed setting of Stich & Karimireddy 2019/2020.

The memory array itself stays in the method's state (``State.e``, which the compiled engine
stacks across runs and updates in place); this component owns its initial value and its update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from efbench.core.compressors import Compressor, Message


def compress(compressor: Compressor, ec_form: str, u: np.ndarray, gamma: float, rng) -> Message:
    """The message of u in one of the two EC forms (SPEC.md section 4): gamma C(u / gamma)
    (``scaled``: u in x units, C's parameters such as lambda in gradient units) or C(u)
    (``plain``: C's parameters in x units). They agree for a positively homogeneous C."""
    return compressor.compress_scaled(u, gamma, rng) if ec_form == "scaled" else compressor(u, rng)


@dataclass(frozen=True, slots=True)
class ErrorFeedback:
    """The error-feedback rule with compressor C in EC form ``ec_form`` (see the module
    docstring): e^0 = 0 (:meth:`init`), then each round (:meth:`update`)

        v = C(e + c)           (ec_form=plain)
          = gamma C((e + c) / gamma)   (ec_form=scaled)
        e <- e + c - v.
    """

    compressor: Compressor
    ec_form: str = "scaled"

    @staticmethod
    def init(rows: int, d: int) -> np.ndarray:
        """e^0 = 0: ``rows`` memories of dimension d (n workers, or 1 for a server)."""
        return np.zeros((rows, d))

    def update(
        self, e: np.ndarray, correction: np.ndarray, gamma: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, Message]:
        """v = C(e + correction) and e <- e + correction - v, e updated in place (a view of
        some rows updates those rows); returns v and the message that carries it."""
        e += correction
        msg = compress(self.compressor, self.ec_form, e, gamma, rng)
        e -= msg.values
        return msg.values, msg
