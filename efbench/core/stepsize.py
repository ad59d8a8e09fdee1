"""Stepsize rules (SPEC.md section 4): constant, theory, reference and decreasing.

``theory`` reads the constants: 1/L for full gradients; 1/(L + L_S/(n tau)) for
stochastic estimators with sampling constant L_S = L_US (uniform), L_IS (importance) or,
for any other sampling, max_ij L_ij / (m p_ij) (:meth:`efbench.methods.samplers.Sampling.smoothness`),
the EC-SGD rule of Danilova & Gorbunov (2022) up to absolute factors. ``reference`` is
1/L, the authors' code's 1/(L_data + l2). ``decreasing`` is gamma_0 / (1 + k/k0) or
gamma_0 / sqrt(1 + k/k0), gamma_0 from ``base`` (theory, reference or a number).
A ``multiplier`` scales every rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from efbench.core.estimation import KINDS, EstimatorSpec
from efbench.errors import ConfigError, check_choice, check_positive

RULES = ("constant", "theory", "reference", "decreasing")
DECAYS = ("inv", "inv_sqrt")


@dataclass(frozen=True)
class Schedule:
    gamma0: float
    formula: str
    decay: str | None = None
    k0: float = 1.0
    multiplier: float = 1.0  # stepsize.multiplier, for a method whose schedule is its own (Mem-SGD)

    def __call__(self, k: int) -> float:
        if self.decay is None:
            return self.gamma0
        t = 1.0 + k / self.k0
        return self.gamma0 / (t if self.decay == "inv" else math.sqrt(t))

    def at(self, ks: np.ndarray) -> np.ndarray:
        """gamma_k for each k of ``ks``: the same floating-point operations as ``__call__``."""
        if self.decay is None:
            return np.full(np.shape(ks), self.gamma0)
        t = 1.0 + np.asarray(ks, dtype=np.float64) / self.k0
        return self.gamma0 / (t if self.decay == "inv" else np.sqrt(t))

    def values(self, k: int, count: int) -> np.ndarray:
        """gamma_k, ..., gamma_{k+count-1} (the compiled step takes a block of them)."""
        return self.at(np.arange(k, k + count))


ESTIMATOR_RULE = "borrowed: Danilova & Gorbunov 2022's EC-SGD rule without its absolute factors"


def theory_gamma(constants: dict, estimator: Mapping | EstimatorSpec) -> tuple[float, str]:
    """The theory stepsize for a method's estimator block, with its formula and where it
    comes from (:data:`ESTIMATOR_RULE`): the rule of the methods without one of their own."""
    L, spec = constants["L"], EstimatorSpec.of(estimator)
    if spec.kind == "full":
        return 1.0 / L, f"1/L [{ESTIMATOR_RULE}, exact gradients]"
    if spec.kind not in ("sgd", "lsvrg"):  # a new kind brings its own rule, not SGD's
        raise ConfigError("method.estimator.kind", f"{spec.kind!r} has no theory stepsize", KINDS)
    tau, key = spec.batch, spec.smoothness
    n = constants["n"]
    extra = f", L_S={constants['L_S']:.6g}" if key == "L_S" else ""
    formula = f"1/(L + {key}/(n*tau)) [{ESTIMATOR_RULE}], tau={tau}{extra}"
    return 1.0 / (L + constants[key] / (n * tau)), formula


def make_schedule(
    cfg: dict,
    constants: dict,
    estimator: dict,
    theory: Callable[[tuple[float, str]], tuple[float, str]] | None = None,
) -> Schedule:
    """Build the stepsize schedule from the ``stepsize`` config block; ``theory`` maps the
    estimator's theory rule to the method's own (``Method.theory``: DIANA, EF21, MARINA and
    others have rules of their own, each naming its theorem)."""
    rule = cfg.get("rule")
    check_choice("stepsize.rule", rule, RULES)
    mult = check_positive("stepsize.multiplier", cfg.get("multiplier", 1.0))

    def base(which: object) -> tuple[float, str]:
        if which == "theory":
            base = theory_gamma(constants, estimator)
            return base if theory is None else theory(base)
        if which == "reference":
            return 1.0 / constants["L"], "1/L"
        key = "stepsize.gamma" if rule == "constant" else "stepsize.base"
        if which is None:
            raise ConfigError(key, "a stepsize value is required", "a number > 0")
        return check_positive(key, which), "constant"

    if rule == "decreasing":
        decay = cfg.get("decay", "inv")
        check_choice("stepsize.decay", decay, DECAYS)
        k0 = check_positive("stepsize.k0", cfg.get("k0", 1.0))
        g0, formula = base(cfg.get("base", "theory"))
        shape = "/(1+k/k0)" if decay == "inv" else "/sqrt(1+k/k0)"
        return Schedule(mult * g0, f"{mult} * {formula}{shape}, k0={k0}", decay, k0, mult)
    g0, formula = base(cfg.get("gamma") if rule == "constant" else rule)
    return Schedule(mult * g0, f"{mult} * {formula}" if mult != 1.0 else formula, multiplier=mult)
