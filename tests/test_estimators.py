"""Gradient estimators: unbiasedness, sampling probabilities, oracle counts (SPEC.md section 3)."""

import numpy as np
import pytest
from conftest import small_problem
from reference import HalfImportance

from efbench.errors import ConfigError
from efbench.methods.estimators import LSVRG, SGD, Sampler, make_estimator


@pytest.fixture
def skewed():
    """Rows with very different norms, so importance sampling differs from uniform."""
    p = small_problem(n=3, m=12, d=5, l2=0.01, seed=4)
    p.A[:] *= np.linspace(0.2, 3.0, p.m)[None, :, None]
    p.__post_init__()
    return p


def test_importance_probabilities(skewed):
    s = Sampler.build("importance", skewed)
    L_ij = skewed.row_norm2 / 4 + skewed.l2
    np.testing.assert_allclose(s.probabilities(), L_ij / (skewed.m * L_ij.mean(axis=1, keepdims=True)))
    np.testing.assert_allclose(s.flat_weights.reshape(L_ij.shape), L_ij.mean(axis=1, keepdims=True) / L_ij)


@pytest.mark.parametrize("kind", ["uniform", "importance"])
def test_sampler_frequencies(kind, skewed, rng):
    s = Sampler.build(kind, skewed)
    T = 60000
    rows, w = s.draw(rng, T)
    idx = rows - skewed.row_offsets
    assert idx.min() >= 0 and idx.max() < skewed.m  # each worker samples its own block
    p = s.probabilities()
    if w is not None:
        np.testing.assert_allclose(w, 1 / (skewed.m * np.take_along_axis(p, idx, axis=1)))
    for i in range(skewed.n):
        freq = np.bincount(idx[i], minlength=skewed.m) / T
        assert np.all(np.abs(freq - p[i]) <= 5 * np.sqrt(p[i] * (1 - p[i]) / T))


@pytest.mark.parametrize("kind", ["uniform", "importance"])
def test_sgd_estimator_exactly_unbiased(kind, skewed, rng):
    """E g_i = sum_j p_ij grad f_ij(x) / (m p_ij) = grad f_i(x), by enumeration over j."""
    s = Sampler.build(kind, skewed)
    x = rng.standard_normal(skewed.d)
    p = s.probabilities()
    w = None if s.flat_weights is None else s.flat_weights.reshape(skewed.n, skewed.m)
    expect = np.zeros((skewed.n, skewed.d))
    for j in range(skewed.m):
        rows = skewed.rows(np.full((skewed.n, 1), j))
        wj = None if w is None else w[:, j : j + 1]
        expect += p[:, j : j + 1] * skewed.sample_grads(x, rows, wj)
    np.testing.assert_allclose(expect, skewed.worker_grads(x), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["uniform", "importance"])
def test_sgd_minibatch_monte_carlo(kind, skewed, rng):
    est = SGD(Sampler.build(kind, skewed), batch=4)
    x = rng.standard_normal(skewed.d)
    T = 20000
    gs = np.array([est(skewed, None, x, rng)[0] for _ in range(T)])
    se = gs.std(axis=0) / np.sqrt(T)
    assert np.all(np.abs(gs.mean(axis=0) - skewed.worker_grads(x)) <= 5 * se + 1e-12)


@pytest.mark.parametrize("kind", ["uniform", "importance"])
def test_lsvrg_unbiased_and_variance_reduced(kind, skewed, rng):
    est = LSVRG(Sampler.build(kind, skewed), 1, p=1e-12)
    x = rng.standard_normal(skewed.d)
    state = est.init(skewed, x + 0.01, rng)
    T = 20000
    gs = np.array([est(skewed, state, x, rng)[0] for _ in range(T)])
    se = gs.std(axis=0) / np.sqrt(T)
    assert np.all(np.abs(gs.mean(axis=0) - skewed.worker_grads(x)) <= 5 * se + 1e-12)
    plain = SGD(Sampler.build(kind, skewed))
    sg = np.array([plain(skewed, None, x, rng)[0] for _ in range(2000)])
    # near the reference point the L-SVRG variance is far below plain SGD's
    assert gs.var(axis=0).sum() < 1e-2 * sg.var(axis=0).sum()


def test_lsvrg_oracle_calls_and_coins(skewed, rng):
    x = rng.standard_normal(skewed.d)
    est = LSVRG(Sampler.build("uniform", skewed), 2, p=1.0, coin="shared")
    state = est.init(skewed, np.zeros(skewed.d), rng)
    _, state, calls = est(skewed, state, x, rng)
    np.testing.assert_array_equal(calls, 4 + skewed.m)
    np.testing.assert_array_equal(state.w, np.broadcast_to(x, state.w.shape))
    np.testing.assert_allclose(state.gw, skewed.worker_grads(x))
    est = LSVRG(Sampler.build("uniform", skewed), 1, p=0.5, coin="per_worker")
    state = est.init(skewed, np.zeros(skewed.d), rng)
    mixed = False
    for _ in range(50):
        _, state, calls = est(skewed, state, x + rng.standard_normal(skewed.d), rng)
        assert set(np.unique(calls)) <= {2.0, 2.0 + skewed.m}
        mixed |= len(np.unique(calls)) == 2
        np.testing.assert_allclose(state.gw, skewed.worker_grads(state.w))
    assert mixed  # per-worker coins refresh some workers and not others
    est = LSVRG(Sampler.build("uniform", skewed), 1, p=0.5, coin="shared")
    state = est.init(skewed, np.zeros(skewed.d), rng)
    for _ in range(50):
        _, state, calls = est(skewed, state, x, rng)
        assert len(np.unique(calls)) == 1


def test_make_estimator_validation(skewed):
    assert make_estimator({"kind": "lsvrg"}, skewed).p == pytest.approx(1 / skewed.m)
    with pytest.raises(ConfigError, match=r"method\.estimator\.kind.*allowed: full, sgd, lsvrg"):
        make_estimator({"kind": "adam"}, skewed)
    with pytest.raises(ConfigError, match=r"sampling\.name"):
        make_estimator({"kind": "sgd", "sampling": "stratified"}, skewed)
    with pytest.raises(ConfigError, match=r"sampling\.batch"):
        make_estimator({"kind": "sgd", "batch": 0}, skewed)
    with pytest.raises(ConfigError, match=r"method\.estimator\.p"):
        make_estimator({"kind": "lsvrg", "p": 1.5}, skewed)
    with pytest.raises(ConfigError, match=r"method\.estimator\.coin"):
        make_estimator({"kind": "lsvrg", "coin": "none"}, skewed)


def test_samplings_give_their_smoothness_constant(skewed):
    from efbench.methods.samplers import Importance, Uniform

    c = skewed.constants()
    assert Uniform().smoothness(skewed) == pytest.approx(c["L_US"], rel=1e-12)
    assert Importance().smoothness(skewed) == pytest.approx(c["L_IS"], rel=1e-12)
    assert c["L_IS"] < HalfImportance().smoothness(skewed) < c["L_US"]


def test_a_sampling_of_ones_own_draws_its_probabilities(skewed):
    s = Sampler.build("reference.HalfImportance", skewed)
    p = HalfImportance().probabilities(skewed)
    np.testing.assert_allclose(s.probabilities(), p, rtol=1e-12)
    rows, w = s.draw(np.random.default_rng(0), 20000)
    idx = rows - skewed.row_offsets
    for i in range(skewed.n):  # frequencies within 5 standard errors of p_i
        freq = np.bincount(idx[i], minlength=skewed.m) / idx.shape[1]
        assert np.all(np.abs(freq - p[i]) <= 5 * np.sqrt(p[i] * (1 - p[i]) / idx.shape[1]))
    np.testing.assert_allclose(w * skewed.m * p.reshape(-1)[rows], 1.0, rtol=1e-12)
    with pytest.raises(ConfigError, match="sampling.name: unknown sampling 'nope.Nope'"):
        Sampler.build("nope.Nope", skewed)


def test_the_estimator_block_is_read_once_with_its_defaults_and_a_new_kind_brings_its_own_stepsize():
    from efbench.core.estimation import EstimatorSpec
    from efbench.core.stepsize import theory_gamma

    spec = EstimatorSpec.of({"kind": "sgd", "sampling": "importance"})
    assert (spec.batch, spec.p, spec.coin, spec.stochastic, spec.smoothness) == (
        1,
        None,
        "shared",
        True,
        "L_IS",
    )
    assert EstimatorSpec.of({}) == EstimatorSpec(kind="full") and not EstimatorSpec().stochastic
    assert EstimatorSpec.of({"kind": "sgd", "sampling": "mypkg.Half"}).smoothness == "L_S"
    c = {"L": 2.0, "n": 4, "L_US": 8.0, "L_IS": 4.0, "L_S": 6.0}
    assert theory_gamma(c, {"kind": "sgd", "batch": 2})[0] == 1.0 / (2.0 + 8.0 / 8)
    assert theory_gamma(c, EstimatorSpec(kind="lsvrg", sampling="importance"))[0] == 1.0 / (2.0 + 4.0 / 4)
    with pytest.raises(ConfigError, match=r"method\.estimator\.kind: 'saga' has no theory stepsize"):
        theory_gamma(c, {"kind": "saga"})  # not SGD's rule, silently
