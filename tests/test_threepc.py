"""3PC (Richtarik et al. 2022) and the EF21 family (Fatkhullin et al. 2021): EF21, CLAG and LAG
as the 3PC method equal a plain step-by-step reference bit for bit; every mechanism's defining
inequality with the paper's (A, B); EF21-PP, EF21-BC, EF21-HB's defining properties; theory
stepsizes on hand-computed constants; convergence; bits; bad settings; the CLI."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem, trajectory
from reference import ef21_gamma
from test_cli import cfg_of, efbench

from efbench.core.compressors import Identity, RandK, Sign, TopK
from efbench.core.participation import Participation
from efbench.errors import ConfigError
from efbench.methods.estimators import make_estimator
from efbench.methods.threepc import (
    CLAG,
    EF21,
    EF21BC,
    EF21HB,
    LAG,
    MECHANISMS,
    V1,
    V2,
    V3,
    V4,
    V5,
    CLAGMechanism,
    EF21Mechanism,
    LAGMechanism,
    ThreePC,
    young,
)
from efbench.problems.logistic import solve
from efbench.run.runner import run

SGD = {"kind": "sgd", "sampling": "uniform", "batch": 2}
C_HAND = {"L": 2.0, "L_tilde": 3.0, "d": 4, "n": 5}  # hand-computed constants (Top-1 of d = 4: alpha = 1/4)


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    return p, p.loss(solve(p)), p.constants()


PROBLEMS = {
    "small": lambda: small_problem(n=4, m=25, d=6, l2=0.05, seed=2),
    # phishing-sized (20 workers, d = 68), 20% nonzeros: full passes run on CSR
    "phishing_like": lambda: small_problem(n=20, m=300, d=68, l2=1e-3, seed=7, density=0.2),
}


# ---- a plain reference of EF21, CLAG and LAG, step by step and worker by worker ----
def reference_ef21(p, C, gamma, steps, rng, estimator=None):
    """EF21 step by step: g_i^0 = grad f_i(x^0) sent dense; then each worker sends
    c_i = C(grad_i(x) - g_i), g_i += c_i, and x -= gamma mean_i g_i."""
    F, n, d = C.float_bits, p.n, p.d
    est = make_estimator(estimator or {"kind": "full"}, p)
    x = np.zeros(d)
    g = p.worker_grads(x)
    x = x - gamma * p.worker_mean(g)
    xs, rounds = [x.copy()], [([F * d] * n, [d] * n, p.m, 0, F * d)]
    for _ in range(1, steps):
        grad, _, calls = est(p, None, x, rng)
        c = C(grad - g, rng)
        g = g + c.values
        x = x - gamma * p.worker_mean(g)
        xs.append(x.copy())
        rounds.append((c.bits.tolist(), c.nnz.tolist(), calls, 0, F * d))
    return np.array(xs), rounds


def reference_clag(p, C, zeta, gamma, steps, rng):
    """CLAG step by step, worker by worker: worker i sends C(grad_i(x) - g_i) only when
    ||grad_i(x) - g_i||^2 > zeta ||grad_i(x) - grad_i(x_prev)||^2, else nothing (0 bits).
    C is a sparsifier here (Top-K, unscaled Rand-K, identity), so g_i + C(grad_i - g_i) is
    grad_i on the coordinates it keeps and g_i elsewhere. LAG is this with the identity
    compressor: g_i = grad_i, F d bits."""
    F, n, d = C.float_bits, p.n, p.d
    x = np.zeros(d)
    g = p.worker_grads(x)
    prev = g.copy()
    x = x - gamma * p.worker_mean(g)
    xs, rounds = [x.copy()], [([F * d] * n, [d] * n, p.m, 0, F * d)]
    for _ in range(1, steps):
        grad = p.worker_grads(x)
        bits, nnz, skipped = [0] * n, [0] * n, 0
        for i in range(n):
            diff, moved = grad[i] - g[i], grad[i] - prev[i]
            if diff @ diff > zeta * (moved @ moved):
                c = C(diff[None, :], rng)
                g[i] = np.where(c.values[0] != 0, grad[i], g[i])
                bits[i], nnz[i] = int(c.bits[0]), int(c.nnz[0])
            else:
                skipped += 1
        prev = grad
        x = x - gamma * p.worker_mean(g)
        xs.append(x.copy())
        rounds.append((bits, nnz, p.m, skipped, F * d))
    return np.array(xs), rounds


def package_run(method, p, gamma, steps, seed):
    xs, rounds, _ = trajectory(method, p, gamma, steps, seed=seed)
    recs = [(r.bits_up.tolist(), np.asarray(r.nnz).tolist(), r.calls, r.skipped, r.bits_down) for r in rounds]
    assert all(r.link_bits is None for r in rounds)
    return xs[1:], recs


CASES = [
    ("ef21_top1", lambda: EF21(name="ef21", compressor=TopK(k=1)), "ef21", TopK(k=1), None),
    ("ef21_rand2", lambda: EF21(name="ef21", compressor=RandK(k=2)), "ef21", RandK(k=2), None),
    ("ef21_sign", lambda: EF21(name="ef21", compressor=Sign()), "ef21", Sign(), None),
    (
        "ef21_sgd_top2",
        lambda: EF21(name="ef21", compressor=TopK(k=2), estimator=SGD),
        "ef21",
        TopK(k=2),
        None,
    ),
    ("clag_top2", lambda: CLAG(name="clag", zeta=1.0, compressor=TopK(k=2)), "clag", TopK(k=2), 1.0),
    ("clag_rand3", lambda: CLAG(name="clag", zeta=4.0, compressor=RandK(k=3)), "clag", RandK(k=3), 4.0),
    ("lag_z1", lambda: LAG(name="lag", zeta=1.0), "clag", Identity(), 1.0),
    ("lag_z4", lambda: LAG(name="lag", zeta=4.0), "clag", Identity(), 4.0),
]


@pytest.mark.parametrize(
    "problem, case",
    [(pr, c) for pr in PROBLEMS for c in CASES if pr == "small" or c[0] != "ef21_sgd_top2"],
    ids=lambda v: v if isinstance(v, str) else v[0],
)
def test_ef21_clag_lag_equal_the_reference_bit_for_bit(problem, case):
    """Trajectories and Round records (bits, coordinates, calls, skipped, broadcast) of
    EF21, CLAG and LAG as 3PC methods equal the plain reference exactly, for two seeds."""
    name, make, kind, C, zeta = case
    p = PROBLEMS[problem]()
    c = p.constants()
    steps = 150 if problem == "small" else 25
    for seed in (0, 1):
        method = make()
        gamma = 2.0 * method.theory(c, (1.0 / c["L"], "1/L"))[0]
        if name == "ef21_sgd_top2":
            gamma = 0.2
        xs, recs = package_run(method, p, gamma, steps, seed)
        rng = np.random.default_rng(seed)
        if kind == "ef21":
            ref_x, ref_r = reference_ef21(p, C, gamma, steps, rng, method.estimator)
        else:
            ref_x, ref_r = reference_clag(p, C, zeta, gamma, steps, rng)
        assert np.array_equal(xs, ref_x), (name, seed)
        assert recs == ref_r, (name, seed)
        if kind == "clag":
            assert sum(r[3] for r in recs) > 0, "some rounds must be lazy"


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_lag_sends_the_gradient_itself_and_ties_at_zeta_one(problem):
    """LAG (3PC's Table 1: M = x if ||x - h||^2 > zeta ||x - y||^2, else h): a worker that
    sends leaves g_i = grad f_i(x^t) exactly, so in the next round ||x - h||^2 and
    ||x - y||^2 are the same number and zeta = 1 sends nothing: no worker sends in two
    consecutive rounds (round 1 follows everyone's g_i^0). CLAG with the identity
    compressor is LAG bit for bit."""
    p = PROBLEMS[problem]()
    gamma = 1.0 / p.constants()["L"]
    lag = LAG(name="lag", zeta=1.0)
    rng = np.random.default_rng(0)
    state = lag.init(p, np.zeros(p.d), rng)
    xs, sent = [state.x.copy()], []
    for _ in range(200):
        x_before = state.x.copy()
        state, rnd = lag.step(p, state, gamma, rng)
        spoke = rnd.bits_up > 0
        np.testing.assert_array_equal(state.g[spoke], p.worker_grads(x_before)[spoke])
        assert set(rnd.bits_up[~spoke].tolist()) <= {0} and set(rnd.bits_up[spoke].tolist()) <= {32 * p.d}
        xs.append(state.x.copy())
        sent.append(spoke)
    sent = np.array(sent)
    assert sent[0].all() and 0 < sent[1:].sum() < sent[1:].size
    assert not np.any(sent[1:] & sent[:-1])
    clag = trajectory(CLAG(name="clag", zeta=1.0, compressor=Identity()), p, gamma, 200)
    assert np.array_equal(clag[0], np.array(xs))
    assert [(r.bits_up > 0).tolist() for r in clag[1]] == sent.tolist()


def test_threepc_by_name_is_ef21_clag_lag(setup):
    """ThreePC with mechanism ef21 / clag / lag runs the same trajectories as EF21, CLAG, LAG."""
    p, fs, c = setup
    for named, fixed in (
        (
            ThreePC(name="3pc", mechanism="ef21", compressor=TopK(k=2)),
            EF21(name="ef21", compressor=TopK(k=2)),
        ),
        (
            ThreePC(name="3pc", mechanism="clag", zeta=2.0, compressor=RandK(k=2)),
            CLAG(name="clag", zeta=2.0, compressor=RandK(k=2)),
        ),
        (ThreePC(name="3pc", mechanism="lag", zeta=2.0, compressor=TopK(k=1)), LAG(name="lag", zeta=2.0)),
    ):
        a, ra, _ = trajectory(named, p, 0.3, 100, seed=4)
        b, rb, _ = trajectory(fixed, p, 0.3, 100, seed=4)
        assert np.array_equal(a, b) and [r.bits_up.tolist() for r in ra] == [r.bits_up.tolist() for r in rb]
        assert named.theory(c, (1.0, ""))[0] == fixed.theory(c, (1.0, ""))[0]


# ---- the defining inequality E||M(h, y, x) - x||^2 <= (1 - A)||h - y||^2 + B||x - y||^2 ----
def sides(mech, h, y, x, A, B, draws=1, seed=0):
    """Per row: the mean of ||M - x||^2 over ``draws`` calls, its standard error, and the bound."""
    rng = np.random.default_rng(seed)
    vals = np.array([np.sum((mech(h, y, x, rng).g - x) ** 2, axis=1) for _ in range(draws)])
    se = vals.std(axis=0, ddof=1) / math.sqrt(draws) if draws > 1 else np.zeros(len(h))
    rhs = (1 - A) * np.sum((h - y) ** 2, axis=1) + B * np.sum((x - y) ** 2, axis=1)
    return vals.mean(axis=0), se, rhs


def tight_triple(v, s, rng):
    """h, y, x with x - h = v, y - h = v/(1 + s), x - y = s v/(1 + s): Young's inequality
    ||x - h||^2 <= (1 + s)||h - y||^2 + (1 + 1/s)||x - y||^2 holds with equality."""
    h = rng.normal(size=v.shape)
    y = h + v / (1 + s)
    return h, y, y + s * v / (1 + s)


def young_s(q):
    return 1 / math.sqrt(q) - 1  # the s of young(q)


def random_triples(rng, rows, d, scale=1.0):
    h = rng.normal(size=(rows, d))
    y = h + rng.normal(size=(rows, d)) * rng.uniform(0.1, 3, size=(rows, 1))
    x = y + rng.normal(size=(rows, d)) * rng.uniform(0.1, 3, size=(rows, 1)) * scale
    return h, y, x


D = 6
SIGNS = np.where(np.random.default_rng(9).random((8, D)) < 0.5, -1.0, 1.0)  # equal magnitudes


def check_random(mech, draws=1, rows=400):
    """The inequality on random triples (a Monte Carlo mean within 5 standard errors)."""
    A, B = mech.constants(D)
    assert 0 < A <= 1 and B >= 0
    for scale in (0.1, 1.0, 10.0):
        h, y, x = random_triples(np.random.default_rng(1), rows, D, scale)
        lhs, se, rhs = sides(mech, h, y, x, A, B, draws)
        assert np.all(lhs <= rhs * (1 + 1e-12) + 5 * se), (mech.key, scale)


def test_ef21_mechanism_inequality_is_tight():
    """EF21 with Top-2 of d = 6 (alpha = 1/3): on the Young-tight triple of equal-magnitude
    coordinates both sides are equal; anywhere else the inequality holds."""
    mech = EF21Mechanism(compressor=TopK(k=2))
    A, B = mech.constants(D)
    assert (A, B) == pytest.approx(young(2 / 3), rel=1e-15)
    h, y, x = tight_triple(SIGNS, young_s(2 / 3), np.random.default_rng(0))
    lhs, _, rhs = sides(mech, h, y, x, A, B)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9)
    check_random(mech)


def test_ef21_mechanism_with_random_compressor_is_tight_in_expectation():
    """Rand-2 (unscaled): E||C(v) - v||^2 = (1 - 2/d)||v||^2 exactly, so on the Young-tight
    triple E||M - x||^2 equals the bound (Monte Carlo over the compressor)."""
    mech = EF21Mechanism(compressor=RandK(k=2))
    A, B = mech.constants(D)
    v = np.repeat(np.random.default_rng(2).normal(size=(1, D)), 20000, axis=0)
    h, y, x = tight_triple(v, young_s(2 / 3), np.random.default_rng(0))
    lhs, se, rhs = sides(mech, h, y, x, A, B)
    assert abs(lhs.mean() - rhs[0]) <= 5 * lhs.std() / math.sqrt(len(lhs))
    check_random(mech, draws=200, rows=50)


def test_lag_and_clag_mechanisms():
    """LAG: A = 1, B = zeta, equality at the trigger's boundary with h = y (nothing sent);
    triggered rows land on x exactly. CLAG: EF21's bound when triggered, the trigger's when
    not, B = max((1 - alpha)/A, zeta); the coordinates C sends whole land on x exactly."""
    lag = LAGMechanism(compressor=TopK(k=1), zeta=1.0)  # the compressor is replaced by the identity
    assert lag.constants(D) == (1.0, 1.0) and isinstance(lag.compressor, Identity)
    x = np.random.default_rng(3).normal(size=(5, D))
    h = np.zeros((5, D))
    sent = lag(h, h, x, np.random.default_rng(0))  # ||x - h||^2 = 1 * ||x - y||^2: not triggered
    assert not sent.spoke.any() and sent.bits.tolist() == [0] * 5 and np.array_equal(sent.g, h)
    lhs, _, rhs = sides(lag, h, h, x, 1.0, 1.0)
    np.testing.assert_array_equal(lhs, rhs)
    sent = lag(h, h + 0.5 * x, x, np.random.default_rng(0))  # ||x - h||^2 = 4 ||x - y||^2: triggered
    assert sent.spoke.all() and sent.bits.tolist() == [32 * D] * 5
    np.testing.assert_array_equal(sent.g, x)
    check_random(LAGMechanism(compressor=Identity(), zeta=3.0))

    for zeta in (0.5, 8.0):
        clag = CLAGMechanism(compressor=TopK(k=2), zeta=zeta)
        A, B = clag.constants(D)
        A0, B0 = young(2 / 3)
        assert (A, B) == pytest.approx((A0, max(B0, zeta)), rel=1e-15)
        check_random(clag)
    h, x = np.full((1, 3), 0.7), np.array([[2.9, 0.7, 1.0]])  # 0.7 + (2.9 - 0.7) != 2.9 in floats
    sent = CLAGMechanism(compressor=TopK(k=1), zeta=0.5)(h, h, x, None)
    np.testing.assert_array_equal(sent.g, [[2.9, 0.7, 0.7]])  # Top-1 keeps x_0 - h_0: g_0 = x_0
    clag = CLAGMechanism(compressor=TopK(k=2), zeta=0.5)  # B = B0: the triggered EF21 case is tight
    h, y, x = tight_triple(SIGNS, young_s(2 / 3), np.random.default_rng(0))
    lhs, _, rhs = sides(clag, h, y, x, *clag.constants(D))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9)


def test_3pcv1_mechanism():
    """3PCv1 = y + C(x - y): A = 1, B = 1 - alpha, equality for equal-magnitude x - y."""
    mech = V1(compressor=TopK(k=2))
    assert mech.constants(D) == (1.0, 1 - 2 / 6)
    rng = np.random.default_rng(4)
    h = rng.normal(size=SIGNS.shape)
    y = rng.normal(size=SIGNS.shape)
    lhs, _, rhs = sides(mech, h, y, y + SIGNS, 1.0, 2 / 3)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    check_random(mech)


def test_3pcv2_mechanism_is_tight_in_expectation():
    """3PCv2 with Q = Rand-1 scaled (omega = d - 1) and C = Rand-2 unscaled (alpha = 1/3):
    E||M - x||^2 = (1 - alpha)(||h - y||^2 + omega||x - y||^2) = the bound with A = alpha,
    B = (1 - alpha) omega, exactly in expectation."""
    mech = V2(compressor=RandK(k=2), k2=1)
    A, B = mech.constants(D)
    assert (A, B) == (2 / 6, (1 - 2 / 6) * (D - 1))
    rng = np.random.default_rng(5)
    h, y, x = (np.repeat(rng.normal(size=(1, D)), 40000, axis=0) for _ in range(3))
    lhs, _, rhs = sides(mech, h, y, x, A, B)
    assert abs(lhs.mean() - rhs[0]) <= 5 * lhs.std() / math.sqrt(len(lhs))
    check_random(V2(compressor=TopK(k=2), k2=2), draws=300, rows=40)


def test_3pcv3_mechanism():
    """3PCv3 with M1 = EF21 and C = Rand-2 unscaled: A = 1 - (1 - alpha)(1 - A1), B = (1 - alpha)
    B1, tight in expectation on the Young-tight triple of M1; with M1 = LAG, the inequality."""
    mech = V3(compressor=RandK(k=2), inner=EF21Mechanism(compressor=RandK(k=2)))
    A1, B1 = young(2 / 3)
    A, B = mech.constants(D)
    assert (A, B) == pytest.approx((1 - (2 / 3) * (1 - A1), (2 / 3) * B1), rel=1e-15)
    v = np.repeat(np.random.default_rng(6).normal(size=(1, D)), 40000, axis=0)
    h, y, x = tight_triple(v, young_s(2 / 3), np.random.default_rng(0))
    lhs, _, rhs = sides(mech, h, y, x, A, B)
    assert abs(lhs.mean() - rhs[0]) <= 5 * lhs.std() / math.sqrt(len(lhs))
    check_random(V3(compressor=TopK(k=2), inner=LAGMechanism(compressor=Identity(), zeta=2.0)))


def test_3pcv4_mechanism_is_tight_in_expectation():
    """3PCv4 with C2 = Top-1 and C1 = Rand-2 unscaled on equal-magnitude x - h:
    E||M - x||^2 = (1 - alpha1)(1 - alpha2)||x - h||^2, and on the Young-tight triple the
    bound with A = 1 - sqrt(1 - alpha_bar), B = (1 - alpha_bar)/A is reached."""
    mech = V4(compressor=RandK(k=2), k2=1)
    q = (1 - 2 / 6) * (1 - 1 / 6)
    A, B = mech.constants(D)
    assert (A, B) == young(q)
    v = np.repeat(SIGNS[:1], 40000, axis=0)
    h, y, x = tight_triple(v, young_s(q), np.random.default_rng(0))
    lhs, _, rhs = sides(mech, h, y, x, A, B)
    assert abs(lhs.mean() - rhs[0]) <= 5 * lhs.std() / math.sqrt(len(lhs))
    check_random(V4(compressor=TopK(k=2), k2=2))


def test_3pcv5_mechanism_is_tight_in_expectation():
    """3PCv5 (x with probability p, else h + C(x - y)) with Top-2: on h - y = e/t, e = C(a) - a
    for equal-magnitude a = x - y and t = 1/sqrt(1 - p) - 1, E||M - x||^2 equals the bound
    A = 1 - sqrt(1 - p), B = (1 - p)(1 - alpha)/A (Monte Carlo over the coin)."""
    p = 0.3
    mech = V5(compressor=TopK(k=2), p=p)
    A, B = mech.constants(D)
    A0, B0 = young(1 - p)
    assert (A, B) == pytest.approx((A0, (2 / 3) * B0), rel=1e-15)
    a = SIGNS
    e = TopK(k=2)(a, None).values - a
    y = np.random.default_rng(7).integers(-5, 5, size=a.shape).astype(float)  # x - y = a exactly
    h, x = y + e / young_s(1 - p), y + a
    lhs, se, rhs = sides(mech, h, y, x, A, B, draws=6000)
    assert np.all(np.abs(lhs - rhs) <= 5 * se + 1e-12 * rhs)
    check_random(mech, draws=200, rows=50)


def test_every_mechanism_is_registered():
    assert set(MECHANISMS) == {"ef21", "lag", "clag", "3pcv1", "3pcv2", "3pcv3", "3pcv4", "3pcv5"}


# ---- theory stepsizes on hand-computed constants ----
def test_theory_stepsizes_on_hand_computed_constants():
    """gamma = 1/(L + L_tilde sqrt(B/A)) with L = 2, L_tilde = 3, Top-1 of d = 4 (alpha = 1/4)."""
    c, top1 = C_HAND, TopK(k=1)

    def gamma(**kw):
        return ThreePC(name="3pc", compressor=top1, **kw).theory(c, (1.0, ""))[0]

    # EF21, CLAG, LAG: exactly the rule of the code before (reference.ef21_gamma)
    assert EF21(name="ef21", compressor=top1).theory(c, (1.0, ""))[0] == ef21_gamma(c, 0.25)[0]
    assert gamma(mechanism="ef21") == ef21_gamma(c, 0.25)[0]
    for zeta in (0.0, 1.0, 100.0):
        assert (
            CLAG(name="clag", zeta=zeta, compressor=top1).theory(c, (1.0, ""))[0]
            == ef21_gamma(c, 0.25, zeta)[0]
        )
        assert LAG(name="lag", zeta=zeta).theory(c, (1.0, ""))[0] == ef21_gamma(c, 1.0, zeta)[0]
    theta = 1 - math.sqrt(0.75)
    assert gamma(mechanism="ef21") == pytest.approx(1 / (2 + 3 * math.sqrt(0.75 / theta**2)), rel=1e-14)
    assert gamma(mechanism="lag", zeta=4.0) == pytest.approx(1 / (2 + 3 * 2), rel=1e-14)
    assert gamma(mechanism="3pcv1") == pytest.approx(1 / (2 + 3 * math.sqrt(0.75)), rel=1e-14)
    # 3PCv2, k2 = 1: omega = 3, A = 1/4, B = 3/4 * 3 -> sqrt(B/A) = 3
    assert gamma(mechanism="3pcv2", k2=1) == pytest.approx(1 / 11, rel=1e-14)
    # 3PCv3 with M1 = LAG (A1 = 1, B1 = zeta = 4): A = 1, B = 3/4 * 4 = 3
    assert gamma(mechanism="3pcv3", inner="lag", zeta=4.0) == pytest.approx(
        1 / (2 + 3 * math.sqrt(3)), rel=1e-14
    )
    # 3PCv4, k2 = 1: 1 - alpha_bar = 9/16, A = 1/4, B = 9/4 -> sqrt(B/A) = 3
    assert gamma(mechanism="3pcv4", k2=1) == pytest.approx(1 / 11, rel=1e-14)
    # 3PCv5, p = 3/4: A = 1/2, B = 1/4 * 3/4 / (1/2) = 3/8 -> sqrt(B/A) = sqrt(3/4)
    assert gamma(mechanism="3pcv5", p=0.75) == pytest.approx(1 / (2 + 3 * math.sqrt(0.75)), rel=1e-14)
    # EF21-SGD: the estimator's rule; EF21-BC, EF21-HB: EF21's rule, said so in the formula
    g, formula = EF21(name="ef21", compressor=top1, estimator=SGD).theory(c, (0.5, "base"))
    assert g == 0.5 and formula.startswith("base (the estimator's rule")
    for m in (EF21BC(name="bc", compressor=top1, down_k=2), EF21HB(name="hb", compressor=top1, eta=0.9)):
        g, formula = m.theory(c, (1.0, ""))
        assert g == ef21_gamma(c, 0.25)[0] and "theorem not reproduced" in formula


def test_young_constants_minimise_b_over_a():
    """young(q) = (1 - sqrt(q), q/A) is the s > 0 minimising B/A of (1 - A, B) = q((1 + s),
    (1 + 1/s)) (EF21's Lemma): a fine grid over s finds no smaller ratio."""
    for q in (0.1, 0.5, 0.75, 0.99):
        A, B = young(q)
        s = np.geomspace(1e-4, 1e4, 200001)
        s = s[q * (1 + s) < 1]
        grid = (q * (1 + 1 / s)) / (1 - q * (1 + s))
        assert grid.min() >= B / A * (1 - 1e-12) and grid.min() <= B / A * (1 + 1e-6)


def test_ef21_pp_theory_is_the_papers_rule_at_its_best_parameters():
    """EF21-PP (p_i = p): the theorem's theta_p = p theta - rho (1 - p), beta_p = p beta +
    (1 - p)(1 + 1/rho), theta = 1 - (1 + s)(1 - alpha), beta = (1 + 1/s)(1 - alpha), minimised
    over s, rho > 0, is A = 1 - sqrt(1 - p alpha), B = (1 - p alpha)/A; nice sampling of 2 of
    5 workers gives p = 2/5."""
    part = Participation(kind="nice", size=2)
    m = EF21(name="ef21", compressor=TopK(k=1), participation=part)
    gamma, formula = m.theory(C_HAND, (1.0, ""))
    A, B = young(1 - 0.4 * 0.25)
    assert gamma == pytest.approx(1 / (2 + 3 * math.sqrt(B / A)), rel=1e-14) and "EF21-PP" in formula
    p, alpha = 0.4, 0.25
    s = np.geomspace(1e-3, 10, 1500)[:, None]
    rho = np.geomspace(1e-3, 10, 1500)[None, :]
    theta_p = p * (1 - (1 + s) * (1 - alpha)) - rho * (1 - p)
    beta_p = p * (1 + 1 / s) * (1 - alpha) + (1 - p) * (1 + 1 / rho)
    ratio = np.where(theta_p > 0, beta_p / np.where(theta_p > 0, theta_p, 1), np.inf)
    assert ratio.min() == pytest.approx(B / A, rel=1e-4) and ratio.min() >= B / A * (1 - 1e-12)
    independent = EF21(
        name="ef21", compressor=TopK(k=1), participation=Participation(kind="independent", p=0.4)
    )
    assert independent.theory(C_HAND, (1.0, ""))[0] == gamma


# ---- EF21-PP, EF21-BC, EF21-HB ----
def test_ef21_pp_with_everyone_is_ef21(setup):
    """Every worker taking part (nice with size = n, independent with p = 1) is EF21, exactly."""
    p, fs, c = setup
    ef21 = trajectory(EF21(name="ef21", compressor=TopK(k=2)), p, 0.3, 120)
    for part in (Participation(kind="nice", size=p.n), Participation(kind="independent", p=1.0)):
        pp = trajectory(EF21(name="ef21", compressor=TopK(k=2), participation=part), p, 0.3, 120)
        assert np.array_equal(pp[0], ef21[0])
        assert [r.bits_up.tolist() for r in pp[1]] == [r.bits_up.tolist() for r in ef21[1]]


def test_ef21_pp_only_participants_update_and_send(setup):
    """nice(2 of 4): each round exactly 2 workers send C(grad_i - g_i) and update g_i; the
    others keep g_i, send 0 bits and are charged no gradient."""
    p, fs, c = setup
    C = TopK(k=2)
    m = EF21(name="ef21", compressor=C, participation=Participation(kind="nice", size=2))
    rng = np.random.default_rng(0)
    state = m.init(p, np.zeros(p.d), rng)
    state, _ = m.step(p, state, 0.3, rng)
    counts = np.zeros(p.n)
    for _ in range(200):
        g_before, x_before = state.g.copy(), state.x.copy()
        state, rnd = m.step(p, state, 0.3, rng)
        took = rnd.bits_up > 0
        assert took.sum() == 2 and rnd.skipped == p.n - 2
        counts += took
        expected = g_before[took] + C(p.worker_grads(x_before)[took] - g_before[took], None).values
        np.testing.assert_array_equal(state.g[took], expected)
        np.testing.assert_array_equal(state.g[~took], g_before[~took])
        assert rnd.bits_up[took].tolist() == [2 * (32 + 3)] * 2
        assert np.array_equal(rnd.calls, np.where(took, p.m, 0)) and not rnd.nnz[~took].any()
    assert np.all(np.abs(counts / 200 - 0.5) < 0.15)  # p_i = 2/4


def test_ef21_bc_identity_downlink_is_ef21_and_server_contracts(setup):
    """C_M = Top-d (identity) gives EF21 step by step (up to rounding: g + (gt - g)); with
    C_M = Top-2 the server's error contracts, ||g^{t+1} - gt^{t+1}||^2 <= (1 - 2/d)
    ||gt^{t+1} - g^t||^2, and the broadcast costs Top-2's bits."""
    p, fs, c = setup
    ef21 = trajectory(EF21(name="ef21", compressor=TopK(k=1)), p, 0.3, 150)
    bc = trajectory(EF21BC(name="bc", compressor=TopK(k=1), down_k=p.d), p, 0.3, 150)
    np.testing.assert_allclose(bc[0], ef21[0], rtol=1e-10, atol=1e-12)
    assert [r.bits_up.tolist() for r in bc[1]] == [r.bits_up.tolist() for r in ef21[1]]
    assert bc[1][0].bits_down == 32 * p.d and {r.bits_down for r in bc[1][1:]} == {p.d + 32 * p.d}

    m = EF21BC(name="bc", compressor=TopK(k=1), down_k=2)
    rng = np.random.default_rng(0)
    state = m.init(p, np.zeros(p.d), rng)
    state, _ = m.step(p, state, 0.3, rng)
    for _ in range(100):
        server, x_before = state.server.copy(), state.x.copy()
        state, rnd = m.step(p, state, 0.3, rng)
        gt = p.worker_mean(state.g)
        b = TopK(k=2)((gt - server)[None, :], None).values[0]  # the broadcast b^{t+1}
        np.testing.assert_array_equal(state.server, server + b)
        np.testing.assert_array_equal(state.x, x_before - 0.3 * state.server)
        err = np.sum((state.server - gt) ** 2)
        assert err <= (1 - 2 / p.d) * np.sum((gt - server) ** 2) * (1 + 1e-12) + 1e-30
        assert rnd.bits_down == 2 * (32 + 3)


def test_ef21_hb_with_zero_momentum_is_ef21_and_keeps_its_recursion(setup):
    """eta = 0 is EF21 bit for bit; eta = 0.7: v^t = eta v^{t-1} + g^t and x^{t+1} = x^t -
    gamma v^t at every step."""
    p, fs, c = setup
    ef21 = trajectory(EF21(name="ef21", compressor=TopK(k=2)), p, 0.3, 150)
    hb0 = trajectory(EF21HB(name="hb", compressor=TopK(k=2), eta=0.0), p, 0.3, 150)
    assert np.array_equal(hb0[0], ef21[0])
    m = EF21HB(name="hb", compressor=TopK(k=2), eta=0.7)
    rng = np.random.default_rng(0)
    state = m.init(p, np.zeros(p.d), rng)
    v_prev = np.zeros(p.d)
    for _ in range(100):
        x_before = state.x.copy()
        state, _ = m.step(p, state, 0.3, rng)
        v = state.v
        np.testing.assert_array_equal(v, 0.7 * v_prev + p.worker_mean(state.g))
        np.testing.assert_array_equal(state.x, x_before - 0.3 * v)
        v_prev = v.copy()


# ---- convergence, bits, settings ----
CONVERGING = [
    ("ef21", lambda: EF21(name="ef21", compressor=TopK(k=1)), 3000),
    ("clag", lambda: CLAG(name="clag", zeta=2.0, compressor=TopK(k=2)), 3000),
    ("lag", lambda: LAG(name="lag", zeta=2.0), 3000),
    ("3pcv1", lambda: ThreePC(name="v1", mechanism="3pcv1", compressor=TopK(k=1)), 1500),
    ("3pcv2", lambda: ThreePC(name="v2", mechanism="3pcv2", k2=2, compressor=TopK(k=2)), 4000),
    (
        "3pcv3",
        lambda: ThreePC(name="v3", mechanism="3pcv3", inner="clag", zeta=1.0, compressor=TopK(k=1)),
        3000,
    ),
    ("3pcv4", lambda: ThreePC(name="v4", mechanism="3pcv4", k2=1, compressor=TopK(k=1)), 3000),
    ("3pcv5", lambda: ThreePC(name="v5", mechanism="3pcv5", p=0.2, compressor=TopK(k=1)), 3000),
    (
        "ef21_pp",
        lambda: EF21(name="pp", compressor=TopK(k=2), participation=Participation(kind="nice", size=2)),
        4000,
    ),
    ("ef21_bc", lambda: EF21BC(name="bc", compressor=TopK(k=2), down_k=2), 3000),
    ("ef21_hb", lambda: EF21HB(name="hb", compressor=TopK(k=1), eta=0.5), 3000),
]


@pytest.mark.parametrize("case", CONVERGING, ids=[c[0] for c in CONVERGING])
def test_converges_with_its_theory_stepsize(setup, case):
    p, fs, c = setup
    name, make, steps = case
    m = make()
    traj, rounds, _ = trajectory(m, p, m.theory(c, (1.0 / c["L"], "1/L"))[0], steps)
    assert p.loss(traj[-1]) - fs < 1e-6 * (p.loss(traj[0]) - fs), name


def test_exact_bits_of_a_round(setup):
    """d = 6, F = 32, index width 3: Top-2 = 2 (32 + 3) = 70 bits, Rand-1 = 35; 3PCv2 and
    3PCv4 send both messages (105); 3PCv5 sends 70 or, on a full round, 32 d = 192 dense.
    3PCv1 sends g' - h = (y - h) + C(x - y): round 1 has h = g^0 = y, so only C(x - y) (70);
    later rounds dense (192)."""
    p, fs, c = setup
    for m, first, later in (
        (ThreePC(name="v2", mechanism="3pcv2", k2=1, compressor=TopK(k=2)), {105}, {105}),
        (ThreePC(name="v4", mechanism="3pcv4", k2=1, compressor=TopK(k=2)), {105}, {105}),
        (ThreePC(name="v5", mechanism="3pcv5", p=0.5, compressor=TopK(k=2)), {70, 192}, {70, 192}),
        (ThreePC(name="v1", mechanism="3pcv1", compressor=TopK(k=2)), {70}, {192}),
    ):
        _, rounds, _ = trajectory(m, p, 0.2, 40)
        assert rounds[0].bits_up.tolist() == [192] * p.n  # g_i^0 in full
        assert set(rounds[1].bits_up.tolist()) <= first, m.mechanism
        assert {b for r in rounds[2:] for b in r.bits_up.tolist()} == later, m.mechanism
        assert all(r.bits_down == 192 for r in rounds)
    _, rounds, _ = trajectory(ThreePC(name="v5", mechanism="3pcv5", p=0.5, compressor=TopK(k=2)), p, 0.2, 40)
    assert all(len(set(r.bits_up.tolist())) == 1 for r in rounds)  # one coin for all workers


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda: ThreePC(name="x", mechanism="3pcv9"), "method.mechanism"),
        (lambda: ThreePC(name="x", mechanism="3pcv2"), "method.k2"),
        (lambda: ThreePC(name="x", mechanism="clag"), "method.zeta"),
        (lambda: ThreePC(name="x", mechanism="ef21", zeta=1.0), "method.zeta"),
        (lambda: ThreePC(name="x", mechanism="3pcv1", k2=2), "method.k2"),
        (lambda: ThreePC(name="x", mechanism="3pcv5", p=0.0), "method.p"),
        (lambda: ThreePC(name="x", mechanism="3pcv3", inner="3pcv3"), "method.inner"),
        (lambda: ThreePC(name="x", mechanism="3pcv3", inner="lag"), "method.zeta"),
        (lambda: ThreePC(name="x", mechanism="lag", zeta=-1.0), "method.zeta"),
        (lambda: CLAG(name="clag", compressor=TopK(k=1), estimator=SGD), "method.estimator.kind"),
        (lambda: CLAG(name="clag", participation=Participation(kind="nice", size=2)), "participation"),
        (
            lambda: EF21(name="ef21", estimator=SGD, participation=Participation(kind="nice", size=2)),
            "participation",
        ),
        (
            lambda: ThreePC(
                name="x", mechanism="lag", zeta=1.0, participation=Participation(kind="nice", size=2)
            ),
            "participation",
        ),
        (lambda: EF21HB(name="hb", eta=1.0), "method.eta"),
        (lambda: EF21BC(name="bc", down_k=0), "method.down_k"),
        (lambda: ThreePC(name="x", mechanism="ef21", compressor=RandK(k=1, scaled=True)), "compressor"),
    ],
)
def test_bad_settings_name_their_key(make, key):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.key == key


def test_settings_out_of_range_for_the_data_name_their_key(setup):
    p, fs, c = setup
    for m, key in (
        (ThreePC(name="x", mechanism="3pcv2", k2=7), "method.k2"),
        (ThreePC(name="x", mechanism="3pcv4", k2=7), "method.k2"),
        (EF21BC(name="bc", down_k=7), "method.down_k"),
    ):
        with pytest.raises(ConfigError) as err:
            m.init(p, np.zeros(p.d), np.random.default_rng(0))
        assert err.value.key == key


# ---- the CLI, on phishing and a9a ----
NEW = [
    ["method=3pcv1"],
    ["method=3pcv2", "method.k2=2"],
    ["method=3pcv3"],
    ["method=3pcv4", "method.k2=2"],
    ["method=3pcv5"],
    ["method=ef21_bc", "method.down_k=5"],
    ["method=ef21_hb"],
    ["method=ef21", "participation=nice", "participation.size=5"],
]


@pytest.mark.parametrize("dataset", ["phishing", "a9a"])
def test_new_methods_run_on_libsvm_data(dataset, mirror, data_cache, tmp_path):
    common = [f"dataset={dataset}", f"data.mirror={mirror}", f"data.dir={data_cache}"]
    common += ["compressor=topk", "compressor.k=3", "budget.iters=30", "log_every=15"]
    for i, overrides in enumerate(NEW if dataset == "phishing" else NEW[-1:]):
        s = run(cfg_of(*common, *overrides), tmp_path / str(i))
        assert s["status"] == "completed" and s["steps"] == 30, overrides
        assert "1/(L + L_tilde sqrt(B/A))" in s["stepsize_formula"]
        tr = pd.read_parquet(tmp_path / str(i) / "trace.parquet")
        assert tr["gap"].iloc[-1] < tr["gap"].iloc[0] and tr["bits_up_mean"].is_monotonic_increasing
        if "method=ef21_bc" in overrides:  # 29 broadcasts of Top-5 after the dense g^0
            assert tr["bits_down"].iloc[-1] == 32 * s["constants"]["d"] + 29 * 5 * (32 + 7)
        if "participation=nice" in overrides:  # 5 of 20 workers a round: mean bits 1/4 of EF21's
            assert tr["bits_up_mean"].iloc[-1] == 32 * s["constants"]["d"] + 29 * 5 / 20 * 3 * (32 + 7)


def test_cli_bad_setting_is_one_line(tmp_path):
    for args, needle in (
        (
            ["method=3pcv2", "method.k2=0"],
            "efbench: error: method.k2: got 0 (allowed: an integer >= 1 or null)",
        ),
        (["method=3pcv5", "+method.zeta=1"], "efbench: error: method.zeta: mechanism 3pcv5 does not take it"),
    ):
        r = efbench(*args, "compressor=topk", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
        out = r.stderr + r.stdout
        assert r.returncode == 2 and "Traceback" not in out, args
        assert needle in out, out
        assert sum("error" in line for line in out.splitlines()) == 1, out
