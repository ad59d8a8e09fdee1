"""Theory stepsizes and their sources: DIANA's rule (Gorbunov, Hanzely & Richtarik 2020) on
hand-computed constants and against the inequalities it rests on, and every method config's
printed formula naming where its constant comes from."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import small_problem
from test_cli import cfg_of

from efbench.config.build import build_method
from efbench.core.compressors import Identity, Natural, RandK
from efbench.core.stepsize import theory_gamma
from efbench.errors import ConfigError
from efbench.methods.base import DIANA
from efbench.problems.logistic import solve

CONF = Path(__file__).resolve().parents[1] / "efbench" / "conf" / "method"
FULL = {"kind": "full"}
SGD = {"kind": "sgd", "sampling": "importance", "batch": 3}
HAND = {"L": 2.0, "L_i_max": 2.5, "L_IS": 7.0, "d": 4, "n": 5}  # Rand-1 scaled of d = 4: omega = 3


def test_diana_theory_on_hand_computed_constants():
    """gamma = 1/((1 + 6 omega/n) L_max): omega = 3, n = 5, L_max = 2.5 gives 1/11.5, for
    any alpha <= 1/(1 + omega) and for the SGD estimator too (the theorem's stochastic case
    keeps A, B, rho, C: the estimator's rule ``base`` is not used). omega = 1/8 (natural):
    1/((1 + 6/40) 2.5); omega = 0 (identity): 1/L_max."""
    for estimator in (FULL, SGD):
        for alpha in (None, 0.1):
            m = DIANA(name="diana", estimator=estimator, compressor=RandK(k=1, scaled=True), alpha=alpha)
            gamma, formula = m.theory(HAND, (0.123, "base"))
            assert gamma == pytest.approx(1 / 11.5, rel=1e-15)
            assert formula.startswith("1/((1 + 6 omega/n) L_max) [Gorbunov et al. 2020, Thm 4.1")
            assert "omega=3," in formula and "L_max=2.5" in formula and "base" not in formula
    natural = DIANA(name="diana", estimator=FULL, compressor=Natural()).theory(HAND, (1.0, ""))[0]
    assert natural == pytest.approx(1 / ((1 + 6 / 40) * 2.5), rel=1e-15)
    assert DIANA(name="diana", estimator=FULL, compressor=Identity()).theory(HAND, (1.0, ""))[0] == 0.4


def rand1_outcomes(v):
    """The d equally likely values of Rand-1 scaled, Q(v) = d v_j e_j: the exact law."""
    d = v.size
    out = np.zeros((d, d))
    out[np.arange(d), np.arange(d)] = d * v
    return out


def test_diana_parameters_satisfy_the_unified_assumption():
    """The inequalities behind the rule, in exact expectation over Rand-1 scaled (omega = d - 1)
    at random (x, h_i) of a logistic problem, sigma = (1/n) sum_i ||h_i - grad f_i(x*)||^2:

        E||g - grad f(x*)||^2 <= 2 A D_f(x, x*) + B sigma,  A = (1 + 2 omega/n) L_max, B = 2 omega/n,
        E sigma^+ = (1 - alpha) sigma + alpha (1/n) sum_i ||grad f_i(x) - grad f_i(x*)||^2
                  <= (1 - rho) sigma + 2 C D_f(x, x*),  rho = alpha = 1/(1 + omega), C = alpha L_max,

    and the theory stepsize is 1/(A + C M) at M = 2 B/rho."""
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    c = p.constants()
    n, d, L = p.n, p.d, c["L_i_max"]
    comp = RandK(k=1, scaled=True)
    omega = comp.omega(d)
    assert omega == d - 1
    alpha = 1 / (1 + omega)
    A, B, rho, C = (1 + 2 * omega / n) * L, 2 * omega / n, alpha, alpha * L
    xstar = solve(p)
    gstar, fstar = p.worker_grads(xstar), p.loss(xstar)
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = xstar + rng.normal(size=d) * rng.uniform(0.1, 5)
        h = gstar + rng.normal(size=(n, d)) * rng.uniform(0.01, 1)
        grads = p.worker_grads(x)
        D = p.loss(x) - fstar  # grad f(x*) = 0
        sigma = np.mean(np.sum((h - gstar) ** 2, axis=1))
        var = sum(np.mean(np.sum((rand1_outcomes(v) - v) ** 2, axis=1)) for v in grads - h) / n**2
        lhs = np.sum(p.worker_mean(grads) ** 2) + var
        assert lhs <= 2 * A * D + B * sigma
        nxt = np.mean(
            [
                np.mean(np.sum((h[i] + alpha * rand1_outcomes(grads[i] - h[i]) - gstar[i]) ** 2, axis=1))
                for i in range(n)
            ]
        )
        drift = np.mean(np.sum((grads - gstar) ** 2, axis=1))
        assert nxt == pytest.approx((1 - alpha) * sigma + alpha * drift, rel=1e-10)
        assert nxt <= (1 - rho) * sigma + 2 * C * D
    diana = DIANA(name="diana", estimator=FULL, compressor=comp)
    assert diana.theory(c, (1.0, ""))[0] == pytest.approx(1 / (A + C * 2 * B / rho), rel=1e-14)


# ---- every method config: its theory formula names its source ----
COMPRESSORS = (["compressor=topk"], ["compressor=randk", "compressor.scaled=true"], ["compressor=identity"])
VARIANTS = [
    ["method=ef21", "participation=nice", "participation.size=2"],  # EF21-PP
    ["method=ef21", "method.estimator.kind=sgd"],  # EF21-SGD: the estimator's rule
    ["method=marina", "participation=nice", "participation.size=2"],  # PP-MARINA
    ["method=scaffnew", "method.estimator.kind=sgd"],
    ["method=diana", "method.estimator.kind=full"],
    ["method=async_sgd", "method.times=heterogeneous"],
]
CITATION = re.compile(r"\[[^\]]*(\d{4}|derived|borrowed)[^\]]*\]")


def built(overrides, p):
    """The method of the first compressor (Top-K, scaled Rand-K, identity) it accepts."""
    for comp in COMPRESSORS:
        try:
            return build_method(cfg_of(*overrides, *comp), p.d, p.n)
        except ConfigError:
            continue
    raise AssertionError(f"no compressor fits {overrides}")


@pytest.mark.parametrize(
    "overrides",
    [[f"method={path.stem}"] for path in sorted(CONF.glob("*.yaml"))] + VARIANTS,
    ids=lambda o: " ".join(o),
)
def test_every_theory_formula_names_its_source(overrides):
    """The formula printed at run start and stored as ``stepsize_formula`` carries a bracketed
    source: a paper with its year (and theorem where the docstring has it), or "derived" /
    "borrowed" where the constant is not a theorem's own."""
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    c = p.constants()
    method = built(overrides, p)
    gamma, formula = method.theory(c, theory_gamma(c, method.estimator))
    assert gamma > 0 and CITATION.search(formula), formula
