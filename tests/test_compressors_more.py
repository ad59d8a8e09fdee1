"""Natural dithering, low rank (PowerSGD), sparsify-then-quantize compositions, the absolute
compressors' Delta, and the constant each run's summary records (issue 12, point 9).

Monte Carlo checks draw T independent messages in one call: the compressors act row by
row, so T copies of x as rows are T draws."""

import json
import math

import numpy as np
import pytest
from test_cli import cfg_of, efbench

from efbench.core.compressors import (
    QSGD,
    Compose,
    HardThreshold,
    Identity,
    LowRank,
    Natural,
    NaturalDithering,
    Rounding,
    TopK,
    lowrank_shape,
)
from efbench.errors import ConfigError
from efbench.run.runner import run

T = 20000


def _draws(comp, x, rng, t=T):
    return comp(np.tile(x, (t, 1)), rng).values


def _x(rng, d):
    return rng.standard_normal(d) * np.logspace(-2, 1, d)


def _check_unbiased(values, x, var=None):
    """``var``: the exact variance of each coordinate, where known (a rare level may not
    show in the sample's)."""
    mean = values.mean(axis=0)
    se = np.sqrt((values.var(axis=0) if var is None else var) / len(values))
    # within 5 standard errors (plus rounding) of x, coordinatewise
    assert np.all(np.abs(mean - x) <= 5 * se + 1e-9 * np.abs(x)), np.max(np.abs(mean - x) / (se + 1e-300))


# ---------------------------------------------------------------- natural dithering


def nd_omega(d, s, p):
    """Horvath et al. 2019, natural dithering: 1/8 + d^(1/r) 2^(1-s) min(1, d^(1/r) 2^(1-s))."""
    t = d ** (1 / min(p, 2)) / 2 ** (s - 1)
    return 1 / 8 + t * min(1, t)


def test_natural_dithering_omega_hand_computed():
    assert NaturalDithering(s=2, norm=2).omega(16) == 1 / 8 + 2.0  # t = 4 / 2
    assert NaturalDithering(s=4, norm=2).omega(16) == 1 / 8 + 0.25  # t = 4 / 8: t^2
    assert NaturalDithering(s=4, norm=1).omega(16) == 1 / 8 + 2.0  # t = 16 / 8
    assert NaturalDithering(s=3, norm=5.0).omega(9) == 1 / 8 + 0.75**2  # r = 2: t = 3 / 4
    assert NaturalDithering(s=1, norm=2).omega(4) == 1 / 8 + 2.0 * 1  # t = 2: t min(1, t)


PARAMS = [(1, 2.0), (2, 2.0), (3, 1.0), (4, 3.0), (8, 2.0)]


@pytest.mark.parametrize("s, p", PARAMS)
def test_natural_dithering_unbiased_and_variance_bound(s, p, rng):
    d = 16
    comp = NaturalDithering(s=s, norm=p)
    for x in (_x(rng, d), np.r_[1.0, np.full(d - 1, 0.01)], np.ones(d)):
        # exactly: ||x||_p^2 (u_j - y_j)(y_j - l_j) for the two levels l_j <= y_j <= u_j
        norm = np.linalg.norm(x, ord=p)
        y = np.abs(x) / norm
        levels = np.r_[0.0, 2.0 ** -np.arange(s - 1, -1, -1)]
        hi = levels[np.searchsorted(levels, y, side="left")]
        lo = levels[np.searchsorted(levels, y, side="right") - 1]
        want = norm**2 * (hi - y) * (y - lo)
        v = _draws(comp, x, rng)
        _check_unbiased(v, x, want)
        err = np.sum((v - x) ** 2, axis=1)
        assert err.mean() <= comp.omega(d) * np.sum(x**2) * 1.03
        # the spread of err: each e_j^2 is norm^2 (u - y)^2 w.p. q = (y - l)/(u - l), else norm^2 (y - l)^2
        q = np.divide(y - lo, hi - lo, out=np.zeros(d), where=hi > lo)
        spread = np.sum(q * (1 - q) * (norm**2 * ((hi - y) ** 2 - (y - lo) ** 2)) ** 2)
        assert abs(err.mean() - want.sum()) <= 5 * np.sqrt(spread / T) + 1e-12 * np.sum(x**2)


def test_natural_dithering_levels_are_the_neighbouring_powers_of_two(rng):
    s, p, d = 3, 2.0, 12
    X = rng.standard_normal((200, d)) * np.logspace(-3, 0, d)
    msg = NaturalDithering(s=s, norm=p)(X, rng)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    y, level = np.abs(X) / norm, msg.values * np.sign(X) / norm
    levels = np.array([0.0, 0.25, 0.5, 1.0])
    assert np.all(np.isclose(level[..., None], levels, rtol=1e-12, atol=0).any(axis=-1))
    lo = levels[np.searchsorted(levels, y, side="right") - 1]
    hi = levels[np.searchsorted(levels, y, side="left")]
    assert np.all((np.isclose(level, lo, rtol=1e-12, atol=0)) | np.isclose(level, hi, rtol=1e-12, atol=0))
    assert np.all(msg.nnz == np.count_nonzero(msg.values, axis=1))
    # a coordinate on a level is sent as it is; the largest of a p = inf norm is the level 1
    x = np.array([[4.0, -2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(NaturalDithering(s=3, norm=math.inf)(x, rng).values, x)


def test_natural_dithering_bits_hand_computed(rng):
    X = np.zeros((2, 123))
    X[0, :3] = [5.0, -4.0, 3.0]
    assert list(NaturalDithering(s=4)(X, rng).bits) == [32 + 123 * (1 + 3)] * 2  # 5 levels: 3 bits
    assert list(NaturalDithering(s=3)(X, rng).bits) == [32 + 123 * (1 + 2)] * 2  # 4 levels: 2 bits
    assert list(NaturalDithering(s=1, float_bits=64)(X, rng).bits) == [64 + 123 * 2] * 2
    assert np.all(NaturalDithering()(X, rng).values[1] == 0)


def test_natural_dithering_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"compressor\.s"):
        NaturalDithering(s=0).validate(5)
    with pytest.raises(ConfigError, match=r"compressor\.norm.*>= 1"):
        NaturalDithering(norm=0.5).validate(5)


# ---------------------------------------------------------------- low rank (PowerSGD)


def test_lowrank_shape():
    assert [lowrank_shape(d) for d in (1, 2, 9, 10, 12, 30, 123, 300)] == [
        (1, 1),
        (2, 1),
        (3, 3),
        (4, 3),
        (4, 3),
        (6, 5),
        (12, 11),
        (18, 17),
    ]
    for d in range(1, 2000):
        a, b = lowrank_shape(d)
        assert a == math.ceil(math.sqrt(d)) and b <= a and d <= a * b < d + a


def test_lowrank_recovers_a_rank_r_matrix(rng):
    a, b = lowrank_shape(132)  # 12 x 11, no padding (a padded rank-r M is not rank r)
    for true_rank, rank in [(1, 1), (2, 2), (2, 4), (3, 5)]:
        M = rng.standard_normal((4, a, true_rank)) @ rng.standard_normal((4, true_rank, b))
        X = M.reshape(4, a * b)
        msg = LowRank(rank=rank)(X, rng)
        np.testing.assert_allclose(msg.values, X, rtol=0, atol=1e-12 * np.abs(X).max())
    # rank below the matrix's: not exact
    M = rng.standard_normal((a, 3)) @ rng.standard_normal((3, b))
    assert not np.allclose(LowRank(rank=2)(M.reshape(1, -1), rng).values, M.reshape(1, -1))


def test_lowrank_delta_is_attained_by_an_identity_block(rng):
    """d = 12 folds into 4 x 3; M = [I_3; 0]: C(x) projects M onto a random r-dimensional
    subspace of the span of its columns, ||C(x)||^2 = r, so ||C(x) - x||^2 = 3 - r =
    (1 - r/b) ||x||^2 at every draw: delta = r/b (b = 3, the side Q is drawn on) is tight."""
    x = np.vstack([np.eye(3), np.zeros((1, 3))]).reshape(1, 12)
    for r in (1, 2, 3):
        v = LowRank(rank=r)(np.tile(x, (50, 1)), rng).values
        np.testing.assert_allclose(np.sum((v - x) ** 2, axis=1), 3 - r, atol=1e-12)
        assert LowRank(rank=r).contraction(12) == r / 3


@pytest.mark.parametrize("d, rank", [(12, 1), (123, 1), (123, 3), (30, 2)])
def test_lowrank_contracts_in_expectation(d, rank, rng):
    comp = LowRank(rank=rank)
    x = _x(rng, d)
    v = _draws(comp, x, rng, t=4000)
    err = np.sum((v - x) ** 2, axis=1)
    assert comp.contraction(d) == rank / lowrank_shape(d)[1]
    # each draw: a projection (never expands); on average: at most (1 - delta) ||x||^2
    assert np.all(err <= np.sum(x**2) * (1 + 1e-12))
    assert err.mean() + 3 * err.std() / np.sqrt(len(err)) <= (1 - comp.contraction(d)) * np.sum(x**2)
    if d == lowrank_shape(d)[0] * lowrank_shape(d)[1]:  # no padding: Pythagoras
        np.testing.assert_allclose(err, np.sum(x**2) - np.sum(v**2, axis=1), rtol=1e-9)


def test_lowrank_bits_and_rank_range(rng):
    X = rng.standard_normal((3, 123))  # 12 x 11
    assert list(LowRank(rank=2)(X, rng).bits) == [32 * (12 + 11) * 2] * 3
    assert list(LowRank(rank=1, float_bits=16)(X, rng).bits) == [16 * 23] * 3
    assert list(LowRank(rank=1)(X, rng).nnz) == [123] * 3
    LowRank(rank=11).validate(123)
    for r in (0, 12, 1.5, True):
        with pytest.raises(ConfigError, match=r"compressor\.rank.*(1 <= rank <= 11|an integer >= 1)"):
            LowRank(rank=r).validate(123)


def test_lowrank_warm_start_converges_to_the_best_rank_r_approximation(rng):
    """Threading Q' into the next call is power iteration: the error falls to Eckart-Young's
    sum of the dropped squared singular values; a fresh Q each call stays above it."""
    a, b = 6, 5
    U, _ = np.linalg.qr(rng.standard_normal((a, a)))
    V, _ = np.linalg.qr(rng.standard_normal((b, b)))
    sigma = np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    x = (U[:, :b] * sigma @ V.T).reshape(1, a * b)
    comp = LowRank(rank=2)
    best = np.sum(sigma[2:] ** 2)
    Q = None
    for _ in range(40):
        msg, Q = comp.compress_with_state(x, rng, Q)
    assert Q.shape == (1, b, 2)
    assert np.sum((msg.values - x) ** 2) == pytest.approx(best, rel=1e-9)
    cold = np.sum((_draws(comp, x[0], rng, t=200) - x) ** 2, axis=1)
    assert cold.mean() > 1.05 * best and np.all(cold >= best * (1 - 1e-9))


# ---------------------------------------------------------------- compositions


def test_compose_constants_hand_computed():
    # topk: delta = K / (d (1 + omega_Q(K))); qsgd(2) on K = 4: omega = min(4/4, 2/2) = 1
    assert Compose(outer="topk", k=4, inner="qsgd", s=2).contraction(16) == 4 / 16 / 2
    assert Compose(outer="topk", k=3, inner="natural").contraction(12) == 3 / 12 / (9 / 8)
    # randk: omega = (d/K) (1 + omega_Q(K)) - 1
    assert Compose(outer="randk", k=4, inner="natural").omega(16) == 4 * 9 / 8 - 1
    c = Compose(outer="randk", k=4, inner="natural_dithering", s=2)
    assert c.omega(16) == 4 * (1 + nd_omega(4, 2, 2)) - 1 and c.contraction(16) == 1 / (1 + c.omega(16))
    assert Compose(outer="topk").kind == "contractive" and Compose(outer="randk").kind == "unbiased"


def test_compose_topk_keeps_topk_positions_and_scales_the_quantized_values(rng):
    X = rng.standard_normal((50, 20))
    X[0] = np.r_[np.ones(10), -np.ones(10)]  # ties: lowest index first, as TopK
    for inner, q in [("natural", Natural()), ("qsgd", QSGD(s=3))]:
        comp = Compose(outer="topk", k=5, inner=inner, s=3)
        msg = comp(X, np.random.default_rng(1))
        top = TopK(k=5)(X, rng).values != 0
        np.testing.assert_array_equal(msg.values != 0, top & (msg.values != 0))
        assert np.all(msg.nnz == 5)
        # the kept values are Q(v) / (1 + omega_Q(5)), with the same draws as Q on v alone
        idx = np.argsort(-np.abs(X), axis=1, kind="stable")[:, :5]
        v = np.take_along_axis(X, idx, axis=1)
        want = q(v, np.random.default_rng(1)).values / (1 + q.omega(5))
        np.testing.assert_allclose(np.take_along_axis(msg.values, idx, axis=1), want, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(np.sort(idx[0]), np.arange(5))


@pytest.mark.parametrize("inner, s", [("natural", 4), ("qsgd", 2), ("qsgd", 1), ("natural_dithering", 2)])
def test_compose_topk_contracts(inner, s, rng):
    d, k = 16, 4
    comp = Compose(outer="topk", k=k, inner=inner, s=s)
    for x in (_x(rng, d), np.ones(d)):  # all equal: TopK keeps exactly K/d of ||x||^2
        err = np.sum((_draws(comp, x, rng) - x) ** 2, axis=1)
        assert err.mean() <= (1 - comp.contraction(d)) * np.sum(x**2) + 3 * err.std() / np.sqrt(T)


@pytest.mark.parametrize("inner, s", [("natural", 4), ("qsgd", 2), ("natural_dithering", 3)])
def test_compose_randk_unbiased_with_its_omega(inner, s, rng):
    d, k = 12, 3
    comp = Compose(outer="randk", k=k, inner=inner, s=s)
    x = _x(rng, d)
    v = _draws(comp, x, rng, t=60000)
    _check_unbiased(v, x)
    assert np.mean(np.sum((v - x) ** 2, axis=1)) <= comp.omega(d) * np.sum(x**2) * 1.03


def test_compose_bits_hand_computed(rng):
    # d = 123: I = 7; K = 3 positions: min(21, 123) = 21 bits; K = 60: the bitmap, 123
    X = np.zeros((1, 123))
    X[0, :3] = [5.0, -4.0, 3.0]
    assert list(Compose(k=3, inner="natural")(X, rng).bits) == [21 + 9 * 3]
    assert list(Compose(k=3, inner="qsgd", s=4)(X, rng).bits) == [21 + 32 + 3 * (1 + 3)]
    assert list(Compose(k=3, inner="qsgd", s=4, index_bits=False)(X, rng).bits) == [32 + 12]
    assert list(Compose(k=60, inner="natural", float_bits=64)(X, rng).bits) == [123 + 12 * 60]
    assert list(Compose(outer="randk", k=2, inner="natural_dithering", s=1)(X, rng).bits) == [14 + 32 + 4]


def test_compose_bad_settings_name_the_key():
    for settings, key in [
        ({"outer": "bottomk"}, r"compressor\.outer.*topk, randk"),
        ({"inner": "sign"}, r"compressor\.inner.*natural, qsgd, natural_dithering"),
        ({"k": 11}, r"compressor\.k"),
        ({"inner": "qsgd", "s": 0}, r"compressor\.s"),
    ]:
        with pytest.raises(ConfigError, match=key):  # when built (its fields' rules) or validated
            Compose(**settings).validate(10)


@pytest.mark.parametrize(
    "comp",
    [
        Compose(outer="topk", k=3, inner="natural"),
        Compose(outer="randk", k=3, inner="qsgd"),
        NaturalDithering(s=3),
        LowRank(rank=2),
    ],
    ids=repr,
)
def test_compress_scaled_is_gamma_c_of_u_over_gamma(comp):
    U = np.random.default_rng(3).standard_normal((6, 9))
    for gamma in (0.3, 7.0):
        fast = comp.compress_scaled(U, gamma, np.random.default_rng(11))
        ref = comp(U / gamma, np.random.default_rng(11))
        np.testing.assert_allclose(fast.values, gamma * ref.values, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(fast.bits, ref.bits)


# ---------------------------------------------------------------- absolute compressors


def test_absolute_Delta_bounds_and_is_attained(rng):
    d = 15
    X = rng.standard_normal((200, d)) * np.logspace(-2, 1, d)
    for comp, Delta in [
        (HardThreshold(lam=0.4), math.sqrt(d) * 0.4),
        (Rounding(delta=0.3), math.sqrt(d) * 0.15),
    ]:
        assert comp.Delta(d) == pytest.approx(Delta, rel=1e-15)
        assert np.all(np.sum((comp(X, rng).values - X) ** 2, axis=1) <= comp.Delta(d) ** 2 * (1 + 1e-12))
    # attained in the limit: every coordinate just below the threshold / half a grid step
    x = np.full((1, d), 0.4 * (1 - 1e-9))
    assert np.sum((HardThreshold(lam=0.4)(x, rng).values - x) ** 2) == pytest.approx(d * 0.16, rel=1e-8)
    x = np.full((1, d), 0.15 * (1 - 1e-9))
    assert np.sum((Rounding(delta=0.3)(x, rng).values - x) ** 2) == pytest.approx(d * 0.0225, rel=1e-8)
    assert Identity().Delta(d) == 0.0
    with pytest.raises(NotImplementedError):
        TopK(k=1).Delta(d)


# ---------------------------------------------------------------- the summary records the constant


def test_summary_records_each_kinds_constant(tmp_path):
    """Breast cancer: d = 30, folded into 6 x 5 for the low rank."""
    cases = [
        (["method=ef21", "compressor=lowrank", "compressor.rank=2"], {"compressor_delta": 2 / 5}),
        (["method=ef21", "compressor=compose", "compressor.k=3"], {"compressor_delta": 3 / 30 / (9 / 8)}),
        (["method=diana", "compressor=natural_dithering"], {"compressor_omega": nd_omega(30, 4, 2)}),
        (
            ["method=diana", "compressor=compose", "compressor.outer=randk", "compressor.k=5"],
            {"compressor_omega": 6 * 9 / 8 - 1},
        ),
        (["method=ec_gd", "compressor=ht", "compressor.lam=0.1"], {"compressor_Delta": math.sqrt(30) * 0.1}),
        (
            ["method=ec_gd", "compressor=rounding", "compressor.delta=0.2"],
            {"compressor_Delta": math.sqrt(30) * 0.1},
        ),
        (["method=ec_gd", "compressor=identity"], {"compressor_delta": 1.0, "compressor_omega": 0.0}),
    ]
    keys = {"compressor_delta", "compressor_omega", "compressor_Delta"}
    for i, (overrides, want) in enumerate(cases):
        s = run(cfg_of(*overrides, "budget.iters=5"), tmp_path / str(i))
        assert s["status"] == "completed"
        assert {k: s[k] for k in keys & set(s)} == pytest.approx(want, rel=1e-12), overrides


def test_cli_run_records_lowrank_delta(tmp_path):
    proc = efbench(
        "method=ef21", "compressor=lowrank", "budget.iters=20", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == "completed" and s["compressor_delta"] == 1 / 5
    assert "compressor_omega" not in s and "compressor_Delta" not in s
    # EF21 starts from the dense gradient (32 d), then 32 (6 + 5) bits a round
    assert s["final"]["bits_up_mean"] == 32 * 30 + 19 * 32 * 11
    bad = efbench("compressor=lowrank", "compressor.rank=6", f"hydra.run.dir={tmp_path}/b", cwd=tmp_path)
    assert bad.returncode == 2
    errors = [line for line in (bad.stdout + bad.stderr).splitlines() if "error" in line]
    want = "efbench: error: compressor.rank: rank 6 for d=30, folded into 6 x 5 (allowed: 1 <= rank <= 5)"
    assert len(errors) == 1 and errors[0].endswith(want)
