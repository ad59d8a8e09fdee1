"""Compressors: unbiasedness, contraction / absolute bounds, exact bits (SPEC.md section 2)."""

import numpy as np
import pytest

from efbench.core.compressors import (
    QSGD,
    HardThreshold,
    Identity,
    Natural,
    RandK,
    Rounding,
    Sign,
    StochasticSign,
    Ternary,
    TopK,
    sparse_bits,
)
from efbench.errors import ConfigError

UNBIASED = [RandK(k=3, scaled=True), Natural(), QSGD(s=1), QSGD(s=4), Ternary(), StochasticSign()]
ALL = [Identity(), TopK(k=3), RandK(k=3), HardThreshold(lam=0.5), Sign(), Rounding(delta=0.3), *UNBIASED]


def _x(rng, n=5, d=10):
    return rng.standard_normal((n, d)) * np.logspace(-2, 1, d)


@pytest.mark.parametrize("comp", UNBIASED, ids=lambda c: repr(c))
def test_unbiased_compressors_monte_carlo(comp, rng):
    X = _x(rng, n=3)
    T = 40000
    acc = np.zeros_like(X)
    sq = np.zeros_like(X)
    for _ in range(T):
        v = comp(X, rng).values
        acc += v
        sq += v * v
    mean = acc / T
    se = np.sqrt(np.maximum(sq / T - mean**2, 0) / T)
    # the Monte Carlo mean is within 5 standard errors (plus rounding) of x, coordinatewise
    assert np.all(np.abs(mean - X) <= 5 * se + 1e-9 * np.abs(X)), np.max(np.abs(mean - X) / (se + 1e-300))


def test_biased_compressors_are_detectably_biased(rng):
    X = _x(rng, n=1)
    T = 20000
    mean = sum(RandK(k=3)(X, rng).values for _ in range(T)) / T
    np.testing.assert_allclose(mean, 0.3 * X, rtol=0.1, atol=1e-3)


def test_topk_contraction_and_selection(rng):
    X = _x(rng, n=50, d=20)
    for k in (1, 5, 20):
        msg = TopK(k=k)(X, rng)
        err = np.sum((msg.values - X) ** 2, axis=1)
        assert np.all(err <= (1 - k / 20) * np.sum(X**2, axis=1) + 1e-12)
        kept = np.abs(msg.values) > 0
        assert np.all(kept.sum(axis=1) == k)
        # every kept |x_j| is at least every dropped |x_j|
        absx = np.abs(X)
        assert np.all(np.where(kept, absx, np.inf).min(axis=1) >= np.where(kept, 0, absx).max(axis=1))


def test_randk_contraction_in_expectation(rng):
    X = _x(rng, n=1, d=20)
    T = 20000
    err = np.mean([np.sum((RandK(k=5)(X, rng).values - X) ** 2) for _ in range(T)])
    assert err == pytest.approx((1 - 5 / 20) * np.sum(X**2), rel=0.03)


def test_sign_is_contractive_with_exact_error(rng):
    X = _x(rng, n=30, d=12)
    msg = Sign()(X, rng)
    err = np.sum((msg.values - X) ** 2, axis=1)
    want = np.sum(X**2, axis=1) - np.sum(np.abs(X), axis=1) ** 2 / 12
    np.testing.assert_allclose(err, want, rtol=1e-10, atol=1e-12)
    assert np.all(err <= (1 - 1 / 12) * np.sum(X**2, axis=1) + 1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.5, 10.0])
def test_hard_threshold_absolute_bound(lam, rng):
    X = _x(rng, n=40, d=15)
    msg = HardThreshold(lam=lam)(X, rng)
    err = np.sum((msg.values - X) ** 2, axis=1)
    assert np.all(err <= 15 * lam**2 + 1e-15)
    assert np.all(msg.nnz == np.sum(np.abs(X) >= lam, axis=1))
    np.testing.assert_array_equal(msg.values[np.abs(X) >= lam], X[np.abs(X) >= lam])


def test_rounding_absolute_bound(rng):
    X = _x(rng, n=40, d=15)
    msg = Rounding(delta=0.3)(X, rng)
    assert np.all(np.abs(msg.values - X) <= 0.15 + 1e-12)
    np.testing.assert_allclose(msg.values / 0.3, np.rint(msg.values / 0.3), atol=1e-9)


def test_unbiased_variance_bounds(rng):
    X = _x(rng, n=1, d=16)
    x2 = np.sum(X**2)
    T = 20000
    for comp, omega in [
        (Natural(), 1 / 8),
        (QSGD(s=2), min(16 / 4, 4 / 2)),
        (RandK(k=4, scaled=True), 16 / 4 - 1),
        (StochasticSign(), 16 - 1),
    ]:
        var = np.mean([np.sum((comp(X, rng).values - X) ** 2) for _ in range(T)])
        assert var <= omega * x2 * 1.05
        assert comp.omega(16) == omega


def test_stochastic_sign_probabilities_and_exact_variance(rng):
    """P(s_j = +1) = 1/2 + x_j / (2 ||x||); ||C(x)||^2 = d ||x||^2 always, so the variance
    is exactly (d - 1) ||x||^2; F + d bits."""
    x = np.array([[3.0, -4.0, 0.0, 0.0]])  # ||x|| = 5
    T = 40000
    plus = np.mean([StochasticSign()(x, rng).values[0] > 0 for _ in range(T)], axis=0)
    want = 0.5 + x[0] / 10
    assert np.all(np.abs(plus - want) <= 5 * np.sqrt(want * (1 - want) / T) + 1e-12)
    msg = StochasticSign(float_bits=16)(x, rng)
    assert np.sum(msg.values**2) == pytest.approx(4 * 25.0, rel=1e-15)
    assert list(msg.bits) == [16 + 4] and list(msg.nnz) == [4]
    assert np.all(StochasticSign()(np.zeros((2, 5)), rng).values == 0)


def test_natural_values_are_signed_powers_of_two(rng):
    X = _x(rng)
    v = Natural()(X, rng).values
    lo = 2.0 ** np.floor(np.log2(np.abs(X)))
    assert np.all((np.abs(v) == lo) | (np.abs(v) == 2 * lo))
    assert np.all(np.sign(v) == np.sign(X))


def test_bits_hand_computed(rng):
    # d = 123 (a9a): index width ceil(log2 123) = 7
    X = np.zeros((2, 123))
    X[0, :3] = [5.0, -4.0, 3.0]
    X[1, :60] = 1.0
    assert list(TopK(k=1)(X, rng).bits) == [39, 39]
    ht = HardThreshold(lam=2.5)(X, rng)
    assert list(ht.nnz) == [3, 0] and list(ht.bits) == [3 * 39, 0]
    ht = HardThreshold(lam=0.5)(X, rng)
    # 60 values: index list 60*39 = 2340 > bitmap 123 + 60*32 = 2043
    assert list(ht.bits) == [3 * 39, 2043]
    assert list(HardThreshold(lam=0.5, index_bits=False)(X, rng).bits) == [96, 1920]
    assert list(HardThreshold(lam=0.5, float_bits=64, index_bits=False)(X, rng).bits) == [192, 3840]
    assert list(Identity()(X, rng).bits) == [32 * 123] * 2
    assert list(Sign()(X, rng).bits) == [32 + 123] * 2
    assert list(Natural()(X, rng).bits) == [9 * 123] * 2
    assert list(Natural(float_bits=64)(X, rng).bits) == [12 * 123] * 2
    assert list(QSGD(s=4)(X, rng).bits) == [32 + 123 * (1 + 3)] * 2  # ceil(log2 5) = 3
    assert list(QSGD(s=1)(X, rng).bits) == [32 + 123 * 2] * 2
    assert list(Ternary()(X, rng).bits) == [32 + 246] * 2
    assert list(RandK(k=2)(X, rng).bits) == [78, 78]
    # rounding: q = (5, -4, 3) at delta 1: levels 11 -> 4 bits, 3 values * (4 + 7)
    r = Rounding(delta=1.0)(X, rng)
    assert list(r.nnz) == [3, 60] and r.bits[0] == 3 * (4 + 7)
    assert r.bits[1] == min(60 * (2 + 7), 123 + 60 * 2)  # q = 1: levels 3 -> 2 bits


def test_sparse_bits_rule():
    # index width 10: index list 42 bits a value until the bitmap (1024 bits) is cheaper
    assert sparse_bits(np.array([0, 1, 100, 500]), 1024, 32, True).tolist() == [0, 42, 4200, 1024 + 500 * 32]
    assert sparse_bits(np.array([5]), 1, 32, True).tolist() == [min(5 * 32, 1 + 5 * 32)]


@pytest.mark.parametrize("comp", ALL, ids=lambda c: repr(c))
def test_rowwise_and_seeded(comp):
    X = _x(np.random.default_rng(0), n=6, d=9)
    a = comp(X, np.random.default_rng(7))
    b = comp(X, np.random.default_rng(7))
    np.testing.assert_array_equal(a.values, b.values)
    # row-wise: compressing one row alone gives the same row (deterministic compressors)
    if comp.kind in ("identity", "contractive", "absolute") and not isinstance(comp, RandK):
        one = comp(X[2:3], np.random.default_rng(7))
        np.testing.assert_array_equal(one.values[0], a.values[2])
        assert one.bits[0] == a.bits[2]
    assert a.values.shape == X.shape and a.bits.shape == (6,) and a.bits.dtype == np.int64


def test_zero_vector_is_safe(rng):
    Z = np.zeros((2, 5))
    for comp in ALL:
        v = comp(Z, rng).values
        assert np.all(v == 0), comp


@pytest.mark.parametrize("k", [0, -1, 11, 2.5])
def test_k_out_of_range_names_the_key(k):
    with pytest.raises(ConfigError, match=r"compressor\.k.*(1 <= K <= 10|an integer >= 1)"):
        TopK(k=k).validate(10)
    with pytest.raises(ConfigError, match=r"compressor\.k"):
        RandK(k=k).validate(10)


def test_negative_threshold_and_delta_rejected():
    with pytest.raises(ConfigError, match=r"compressor\.lam"):
        HardThreshold(lam=-0.1).validate(5)
    with pytest.raises(ConfigError, match=r"compressor\.delta"):
        Rounding(delta=0).validate(5)
    with pytest.raises(ConfigError, match=r"compressor\.s"):
        QSGD(s=0).validate(5)
    with pytest.raises(ConfigError, match=r"bits\.float_bits"):
        TopK(k=1, float_bits=12)


@pytest.mark.parametrize("comp", ALL, ids=lambda c: repr(c))
def test_compress_scaled_is_gamma_c_of_u_over_gamma(comp):
    U = _x(np.random.default_rng(3), n=6, d=9)
    for gamma in (0.3, 7.0):
        fast = comp.compress_scaled(U, gamma, np.random.default_rng(11))
        ref = comp(U / gamma, np.random.default_rng(11))
        np.testing.assert_allclose(fast.values, gamma * ref.values, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(fast.bits, ref.bits)
