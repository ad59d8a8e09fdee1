"""Methods: convergence on small problems, coincidences the theory predicts, bits per round."""

import numpy as np
import pytest
from conftest import small_problem, trajectory

from efbench.core.compressors import HardThreshold, Identity, RandK, TopK
from efbench.errors import ConfigError
from efbench.methods.base import CompressedGD, ErrorCompensated, Uncompressed
from efbench.problems.logistic import solve

FULL = {"kind": "full"}
SGD_US = {"kind": "sgd", "sampling": "uniform", "batch": 1}
LSVRG = {"kind": "lsvrg", "sampling": "importance", "batch": 1, "p": None, "coin": "shared"}


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    xs = solve(p)
    return p, xs, p.loss(xs), p.constants()


def test_gd_converges_linearly(setup):
    p, xs, fs, c = setup
    traj, _, _ = trajectory(Uncompressed(name="gd", estimator=FULL), p, 1 / c["L"], 400)
    assert p.loss(traj[-1]) - fs < 1e-12


@pytest.mark.parametrize("cls", [ErrorCompensated, CompressedGD])
def test_identity_compressor_reproduces_gd(setup, cls):
    p, xs, fs, c = setup
    gd, _, _ = trajectory(Uncompressed(name="gd", estimator=FULL), p, 0.7 / c["L"], 50)
    ec, _, _ = trajectory(cls(name="x", estimator=FULL, compressor=Identity()), p, 0.7 / c["L"], 50)
    np.testing.assert_allclose(ec, gd, rtol=1e-12, atol=1e-14)


def test_ec_sgd_identity_reproduces_sgd_with_same_seed(setup):
    p, xs, fs, c = setup
    a, _, _ = trajectory(Uncompressed(name="sgd", estimator=SGD_US), p, 0.1, 100, seed=3)
    b, _, _ = trajectory(
        ErrorCompensated(name="ec", estimator=SGD_US, compressor=Identity()), p, 0.1, 100, seed=3
    )
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def final_gap(method, p, gamma, steps, tail=1000):
    traj, _, _ = trajectory(method, p, gamma, steps)
    fs = p.loss(solve(p))
    return np.mean([p.loss(x) for x in traj[-tail:]]) - fs


def test_ec_gd_topk_single_worker_converges_to_optimum():
    p = small_problem(n=1, m=100, d=6, l2=0.05, seed=2)
    m = ErrorCompensated(name="ec_gd", estimator=FULL, compressor=TopK(k=1))
    traj, rounds, state = trajectory(m, p, 0.1 / p.constants()["L"], 3000)
    assert p.loss(traj[-1]) - p.loss(solve(p)) < 1e-12
    assert np.all([r.nnz.tolist() == [1] for r in rounds])


def test_ec_gd_heterogeneous_workers_stall_in_gamma_squared_neighbourhood(setup):
    """With n > 1 the local gradients at x* differ from 0, so classical error feedback keeps
    a neighbourhood of size O(gamma^2 zeta^2 / delta^2) (Stich & Karimireddy 2019)."""
    p, xs, fs, c = setup
    m = ErrorCompensated(name="ec_gd", estimator=FULL, compressor=TopK(k=1))
    g1 = final_gap(m, p, 0.5 / c["L"], 10000)
    g2 = final_gap(m, p, 0.125 / c["L"], 10000)
    assert g2 > 0 and g1 > 8 * g2


def test_ec_lsvrg_removes_the_sampling_noise_of_ec_sgd(setup):
    p1 = small_problem(n=1, m=100, d=6, l2=0.05, seed=2)
    c1 = p1.constants()
    gamma = 0.5 / (c1["L"] + c1["L_IS"])
    sgd_is = {**SGD_US, "sampling": "importance"}
    lsvrg = final_gap(ErrorCompensated(name="l", estimator=LSVRG, compressor=TopK(k=2)), p1, gamma, 6000)
    sgd = final_gap(ErrorCompensated(name="s", estimator=sgd_is, compressor=TopK(k=2)), p1, gamma, 6000)
    assert lsvrg < 1e-12 and sgd > 1e-3
    p, xs, fs, c = setup  # heterogeneous workers: both keep a floor, L-SVRG's far lower
    gamma = 0.5 / (c["L"] + c["L_IS"] / p.n)
    lsvrg = final_gap(ErrorCompensated(name="l", estimator=LSVRG, compressor=TopK(k=2)), p, gamma, 6000)
    sgd = final_gap(ErrorCompensated(name="s", estimator=sgd_is, compressor=TopK(k=2)), p, gamma, 6000)
    assert lsvrg < sgd / 20
    exact = final_gap(ErrorCompensated(name="l", estimator=LSVRG, compressor=Identity()), p, gamma, 6000)
    assert exact < 1e-12


def test_ec_with_hard_threshold_reaches_a_lambda_neighbourhood(setup):
    p, xs, fs, c = setup
    gaps = []
    for lam in (0.1, 0.01, 0.001):
        m = ErrorCompensated(name="ec_gd", estimator=FULL, compressor=HardThreshold(lam=lam))
        traj, _, _ = trajectory(m, p, 0.5 / c["L"], 3000)
        gaps.append(p.loss(traj[-1]) - fs)
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-6


def test_ec_forms_coincide_for_homogeneous_and_differ_for_ht(setup):
    p, xs, fs, c = setup
    gamma = 0.3 / c["L"]
    for comp in (TopK(k=2), RandK(k=2)):
        a = trajectory(
            ErrorCompensated(name="e", estimator=SGD_US, compressor=comp, ec_form="scaled"), p, gamma, 60
        )[0]
        b = trajectory(
            ErrorCompensated(name="e", estimator=SGD_US, compressor=comp, ec_form="plain"), p, gamma, 60
        )[0]
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    ht = HardThreshold(lam=0.05)
    a = trajectory(ErrorCompensated(name="e", estimator=FULL, compressor=ht, ec_form="scaled"), p, gamma, 60)[
        0
    ]
    b = trajectory(ErrorCompensated(name="e", estimator=FULL, compressor=ht, ec_form="plain"), p, gamma, 60)[
        0
    ]
    assert np.abs(a - b).max() > 1e-4


def test_error_memory_identity(setup):
    """After k steps sum_i e_i / n = x^k - (x^0 - gamma sum_t mean_i g_i^t) (virtual iterate)."""
    p, xs, fs, c = setup
    m = ErrorCompensated(name="ec_gd", estimator=FULL, compressor=TopK(k=1))
    rng = np.random.default_rng(0)
    gamma = 0.4 / c["L"]
    state = m.init(p, np.zeros(p.d), rng)
    virtual = np.zeros(p.d)
    for _ in range(30):
        virtual -= gamma * p.worker_grads(state.x).mean(axis=0)
        state, _ = m.step(p, state, gamma, rng)
    np.testing.assert_allclose(virtual, state.x - state.e.mean(axis=0), atol=1e-12)


def test_bits_per_round(setup):
    p, xs, fs, c = setup
    _, rounds, _ = trajectory(ErrorCompensated(name="e", estimator=FULL, compressor=TopK(k=2)), p, 0.1, 3)
    # d = 6: index width 3; top-2 costs min(2 * 35, 6 + 64) = 70 bits; downlink 32 * 6
    assert all(r.bits_up.tolist() == [70] * p.n and r.bits_down == 192 for r in rounds)
    _, rounds, _ = trajectory(Uncompressed(name="gd", estimator=FULL, compressor=TopK(k=1)), p, 0.1, 2)
    assert all(r.bits_up.tolist() == [192] * p.n for r in rounds)  # gd ignores the compressor
    assert all(r.calls == p.m for r in rounds)


def test_invalid_ec_form():
    with pytest.raises(ConfigError, match=r"method\.ec_form.*scaled, plain"):
        ErrorCompensated(name="e", ec_form="both")
