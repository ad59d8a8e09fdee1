"""CHOCO-SGD (Koloskova, Stich & Jaggi 2019) and asynchronous SGD with simulated delays
(Mishchenko et al. 2022; Koloskova et al. 2022): their defining identities, event order,
bits, theory stepsizes and refused settings."""

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem, trajectory
from test_cli import cfg_of, efbench

from efbench.core.compressors import HardThreshold, Identity, Natural, RandK, TopK
from efbench.core.topology import adjacency, mixing_matrix
from efbench.errors import ConfigError
from efbench.methods.asynchronous import AsyncECSGD, AsyncQSGD, AsyncSGD
from efbench.methods.base import Uncompressed
from efbench.methods.choco import ChocoSGD, consensus_theory
from efbench.problems.logistic import LogisticProblem, solve
from efbench.run.runner import run

FULL = {"kind": "full"}
SGD = {"kind": "sgd", "sampling": "uniform", "batch": 1}


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    xs = solve(p)
    return p, p.loss(xs), p.constants()


# ---- CHOCO-SGD ------------------------------------------------------------------------


@pytest.mark.parametrize("topo", ["ring", "complete"])
@pytest.mark.parametrize("gamma_c", [1.0, 0.4])
def test_choco_identity_gossips_the_half_step(setup, topo, gamma_c):
    """Q = identity: x_hat^{t+1} = x^{t+1/2}, so x^{t+1} = x^{t+1/2} + gamma (W - I) x^{t+1/2};
    gamma = 1 is W (X - eta G(X)), step by step."""
    p, fs, c = setup
    eta = 0.5 / c["L"]
    m = ChocoSGD(name="c", estimator=FULL, topology=topo, compressor=Identity(), consensus_step=gamma_c)
    rng = np.random.default_rng(0)
    state = m.init(p, np.zeros(p.d), rng)
    W = mixing_matrix(topo, p.n)
    X = np.zeros((p.n, p.d))
    for _ in range(30):
        half = X - eta * p.worker_grads(X)
        X = half + gamma_c * (W - np.eye(p.n)) @ half
        state, _ = m.step(p, state, eta, rng)
        np.testing.assert_allclose(state.X_hat, half, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.X, X, rtol=1e-12, atol=1e-14)
        if gamma_c == 1.0:
            np.testing.assert_allclose(state.X, W @ half, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.x, X.mean(axis=0), rtol=1e-12, atol=1e-14)


def top_k(V, k):
    """Plain TopK of each row: the k largest |v_j|, ties to the lowest index."""
    out = np.zeros_like(V)
    for i, row in enumerate(V):
        keep = np.argsort(-np.abs(row), kind="stable")[:k]
        out[i, keep] = row[keep]
    return out


def test_choco_step_is_algorithm_2_with_topk(setup):
    """Algorithm 2 written out with x_hat^0 = 0 from a start x^0 != 0, step by step."""
    p, fs, c = setup
    eta, gamma_c = 0.5 / c["L"], 0.3
    x0 = np.linspace(-1.0, 1.0, p.d)
    m = ChocoSGD(name="c", estimator=FULL, topology="ring", compressor=TopK(k=2), consensus_step=gamma_c)
    rng = np.random.default_rng(0)
    state = m.init(p, x0, rng)
    W = mixing_matrix("ring", p.n)
    X, X_hat = np.tile(x0, (p.n, 1)), np.zeros((p.n, p.d))
    for _ in range(25):
        half = X - eta * p.worker_grads(X)
        X_hat = X_hat + top_k(half - X_hat, 2)
        X = half + gamma_c * np.array(
            [sum(W[i, j] * (X_hat[j] - X_hat[i]) for j in range(p.n)) for i in range(p.n)]
        )
        state, _ = m.step(p, state, eta, rng)
        np.testing.assert_allclose(state.X_hat, X_hat, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state.X, X, rtol=1e-12, atol=1e-14)
    assert m.measure(p, state, fs)["err2"] == pytest.approx(np.mean(np.sum((X - X_hat) ** 2, axis=1)))


@pytest.mark.parametrize("comp", [TopK(k=2), RandK(k=1), Natural()], ids=lambda q: type(q).__name__)
def test_choco_gossip_keeps_the_average_of_the_local_steps(setup, comp):
    """sum_i sum_j w_ij (x_hat_j - x_hat_i) = 0 for any Q: xbar^{t+1} = mean_i (x_i - eta g_i(x_i))."""
    p, fs, c = setup
    eta = 0.5 / c["L"]
    m = ChocoSGD(name="c", estimator=FULL, topology="ring", compressor=comp, consensus_step=0.3)
    rng = np.random.default_rng(1)
    state = m.init(p, np.zeros(p.d), rng)
    for _ in range(40):
        X = state.X.copy()
        expected = (X - eta * p.worker_grads(X)).mean(axis=0)
        state, _ = m.step(p, state, eta, rng)
        np.testing.assert_allclose(state.x, expected, rtol=1e-12, atol=1e-13)
    assert np.ptp(state.X, axis=0).max() > 1e-3  # the nodes do differ


def test_choco_converges_with_topk_on_a_ring(setup):
    p, fs, c = setup
    f0 = p.loss(np.zeros(p.d)) - fs
    m = ChocoSGD(name="c", estimator=FULL, topology="ring", compressor=TopK(k=1), consensus_step=0.3)
    eta = lambda t: 1.0 / c["L"] / (1 + t / 100)  # noqa: E731
    early = trajectory(m, p, eta, 500)[2]
    traj, _, late = trajectory(m, p, eta, 4000)
    gaps = np.array([p.loss(x) for x in traj[[500, 4000]]]) - fs
    assert gaps[1] < 2e-5 * f0 and gaps[1] < gaps[0] / 4
    assert m.measure(p, late, fs)["consensus"] < m.measure(p, early, fs)["consensus"] / 10
    # the theory consensus step (small: rho^2 delta / ~18) still moves towards the optimum
    slow = ChocoSGD(name="c", estimator=FULL, topology="ring", compressor=TopK(k=1))
    traj, _, _ = trajectory(slow, p, 0.5 / c["L"], 1000)
    assert p.loss(traj[-1]) - fs < 1e-2 * f0


@pytest.mark.parametrize("n, topo", [(4, "ring"), (6, "torus"), (4, "complete")])
def test_choco_charges_each_message_once_per_neighbour(topo, n):
    p = small_problem(n=n, m=10, d=6, l2=0.05, seed=4)
    deg = adjacency(topo, n).sum(axis=1)
    for comp, per_msg in ((TopK(k=2), 2 * (32 + 3)), (Natural(), 9 * 6), (Identity(), 32 * 6)):
        m = ChocoSGD(name="c", estimator=SGD, topology=topo, compressor=comp)
        _, rounds, _ = trajectory(m, p, 0.1, 3)
        for r in rounds:
            assert r.bits_up.tolist() == (deg * per_msg).tolist()
            assert r.link_bits.tolist() == [per_msg] * n and r.bits_down == 0
            assert r.calls == 1


def test_choco_theory_consensus_step_on_hand_computed_constants(setup):
    """Ring of 4 (weights 1/3): rho = 2/3, beta = ||I - W|| = 4/3. Top-3 of d = 6: delta = 1/2,
    gamma = (2/9) / (484/27) = 3/242. Natural (omega = 1/8): delta = 8/9, gamma = 8/321.
    Complete graph of 4, identity: rho = beta = delta = 1, gamma = 1/15."""
    p, fs, c = setup
    assert consensus_theory(2 / 3, 4 / 3, 0.5) == pytest.approx(3 / 242, rel=1e-14)
    for topo, comp, want in (
        ("ring", TopK(k=3), 3 / 242),
        ("ring", Natural(), 8 / 321),
        ("complete", Identity(), 1 / 15),
    ):
        state = ChocoSGD(name="c", estimator=FULL, topology=topo, compressor=comp).init(
            p, np.zeros(p.d), None
        )
        assert state.gamma_c == pytest.approx(want, rel=1e-12), (topo, comp)
    state = ChocoSGD(name="c", topology="ring", compressor=TopK(k=3), consensus_step=0.25).init(
        p, np.zeros(p.d), None
    )
    info = ChocoSGD(name="c", topology="ring", compressor=TopK(k=3)).info(state)
    assert state.gamma_c == 0.25 and info["beta"] == pytest.approx(4 / 3) and info["delta"] == 0.5


def test_choco_scales_an_unbiased_compressor_down(setup):
    """x_hat^1 = Q(x^{1/2}) / (1 + omega): natural compression's powers of two times 8/9."""
    p, fs, c = setup
    m = ChocoSGD(name="c", estimator=FULL, topology="ring", compressor=Natural(), consensus_step=0.3)
    _, _, state = trajectory(m, p, 0.5 / c["L"], 1)
    q = state.X_hat * (1 + 1 / 8)
    np.testing.assert_allclose(np.log2(np.abs(q)), np.round(np.log2(np.abs(q))), atol=1e-12)


def test_choco_refuses_what_the_paper_does_not_cover(setup):
    with pytest.raises(ConfigError, match="compressor: method 'c' does not take a absolute"):
        ChocoSGD(name="c", compressor=HardThreshold())
    with pytest.raises(ConfigError, match=r"method\.consensus_step"):
        ChocoSGD(name="c", compressor=TopK(k=1), consensus_step=0.0)


# ---- asynchronous SGD -------------------------------------------------------------------


def events(method, p, steps, gamma=0.1, seed=0):
    """The arriving worker, its delay and the clock of each server update, and the final state."""
    rng = np.random.default_rng(seed)
    state = method.init(p, np.zeros(p.d), rng)
    workers, delays, clocks = [], [], []
    for _ in range(steps):
        before = state.delay_sum
        state, rnd = method.step(p, state, gamma, rng)
        (i,) = np.flatnonzero(rnd.calls)
        workers.append(int(i))
        delays.append(state.delay_sum - before)
        clocks.append(method.measure(p, state, 0.0)["clock"])
    return workers, delays, clocks, state


@pytest.mark.parametrize("est", [FULL, SGD], ids=["gd", "sgd"])
def test_async_one_worker_is_sgd_step_by_step(est):
    p = small_problem(n=1, m=40, d=6, l2=0.05, seed=1)
    ref = trajectory(Uncompressed(name="sgd", estimator=est), p, 0.3, 200, seed=3)[0]
    for m in (
        AsyncSGD(name="a", estimator=est),
        AsyncSGD(name="a", estimator=est, times="heterogeneous", spread=2.0),
        AsyncECSGD(name="a", estimator=est, compressor=Identity()),
    ):
        # full gradients: one worker's pass against the all-workers pass, summed otherwise
        np.testing.assert_allclose(trajectory(m, p, 0.3, 200, seed=3)[0], ref, rtol=1e-12, atol=1e-14)


def test_async_fixed_times_delay_is_n_minus_one_after_warm_up(setup):
    """All n arrive together at t = 1, 2, ... in worker order: the first round applies
    gradients of x^0 (delays 0..n-1), every later one delay n - 1."""
    p, fs, c = setup
    workers, delays, clocks, state = events(AsyncSGD(name="a", estimator=SGD), p, 40)
    assert workers == list(range(4)) * 10
    assert delays == [0, 1, 2, 3] + [3] * 36
    assert clocks == [float(1 + k // 4) for k in range(40)]
    m = AsyncSGD(name="a", estimator=SGD).measure(p, state, fs)
    assert m["delay_max"] == 3 and m["delay_mean"] == pytest.approx((6 + 3 * 36) / 40)


def test_async_heterogeneous_schedule_and_iterates_match_a_hand_replay():
    """tau = 1, 2, 3 (spread 1): arrivals at t = 1 (w0), 2 (w0, w1), 3 (w0, w2), 4 (w0, w1),
    5 (w0), 6 (w0, w1, w2); worker 2's second job sees w1 at 4 and 6, w0 at 4, 5, 6: delay 5,
    the bound max_i sum_j ceil(tau_i/tau_j). Each update is x^{k+1} = x^k - gamma grad
    f_{i_k}(x^{k - d_k})."""
    p = small_problem(n=3, m=20, d=5, l2=0.05, seed=6)
    m = AsyncSGD(name="a", estimator=FULL, times="heterogeneous", spread=1.0)
    workers, delays, clocks, state = events(m, p, 11, gamma=0.4)
    assert workers == [0, 0, 1, 0, 2, 0, 1, 0, 0, 1, 2]
    assert delays == [0, 0, 2, 1, 4, 1, 3, 1, 0, 2, 5]
    assert clocks == [1.0, 2, 2, 3, 3, 4, 4, 5, 6, 6, 6]
    assert m.delay_bound(3) == 5 == state.delay_bound
    xs = [np.zeros(p.d)]
    for i, dk in zip(workers, delays, strict=True):
        k = len(xs) - 1
        xs.append(xs[k] - 0.4 * p.worker_grads(xs[k - dk], np.array([i]))[0])
    np.testing.assert_allclose(state.x, xs[-1], rtol=1e-13, atol=1e-15)
    # the same schedule from an explicit list, and a bound that the simulation attains
    listed = AsyncSGD(name="a", estimator=FULL, times="heterogeneous", durations=[1.0, 2.0, 3.0])
    assert events(listed, p, 11, gamma=0.4)[:3] == (workers, delays, clocks)
    fast = AsyncSGD(name="a", estimator=FULL, times="heterogeneous", durations=[1.0, 0.5, 0.25])
    assert fast.delay_bound(3) == 6 == max(events(fast, p, 200)[1])


def test_async_random_times_are_exponential_and_seeded():
    p = small_problem(n=3, m=20, d=5, l2=0.05, seed=6)
    m = AsyncSGD(name="a", estimator=SGD, times="random")
    a, b = events(m, p, 3000, seed=4), events(m, p, 3000, seed=4)
    assert a[:3] == b[:3]
    # 3 workers with Exp(1) jobs: about 3 arrivals per time unit, each worker a third
    assert a[2][-1] == pytest.approx(1000, rel=0.1)
    assert np.bincount(a[0]).tolist() == pytest.approx([1000] * 3, rel=0.1)


def test_async_converges_on_a_small_problem(setup):
    p, fs, c = setup
    f0 = p.loss(np.zeros(p.d)) - fs
    m = AsyncSGD(name="a", estimator=FULL)
    gamma = m.theory(c, (1.0 / c["L"], "1/L"))[0]
    traj, _, _ = trajectory(m, p, gamma, 1500)
    assert p.loss(traj[-1]) - fs < 1e-3 * f0
    ec = AsyncECSGD(name="a", estimator=SGD, compressor=TopK(k=2), times="random")
    traj, _, _ = trajectory(ec, p, lambda k: gamma / (1 + k / 200), 6000)
    assert p.loss(traj[-1]) - fs < 1e-2 * f0


def test_async_heterogeneous_times_weight_the_fast_workers():
    """Worker 0 twice as fast as worker 1 applies twice as many gradients: the iterates settle
    near argmin (2 f_0 + f_1)/3 (the problem with worker 0 twice), not near x*."""
    p = small_problem(n=2, m=25, d=6, l2=0.05, seed=3)
    xs = solve(p)
    xw = solve(LogisticProblem(p.A[[0, 0, 1]], p.y[[0, 0, 1]], p.l2))
    m = AsyncSGD(name="a", estimator=FULL, times="heterogeneous", spread=1.0)
    traj, _, _ = trajectory(m, p, 0.05 / p.constants()["L"], 6000)
    gap = np.linalg.norm(xw - xs)
    assert np.linalg.norm(traj[-1] - xw) < 0.1 * gap < 0.2 * np.linalg.norm(traj[-1] - xs)


@pytest.mark.parametrize("times", ["fixed", "heterogeneous", "random"])
def test_async_compressed_variants_with_identity_equal_the_uncompressed(setup, times):
    p, fs, c = setup
    ref = trajectory(AsyncSGD(name="a", estimator=SGD, times=times), p, 0.2, 300, seed=7)[0]
    for m in (
        AsyncECSGD(name="a", estimator=SGD, times=times, compressor=Identity()),
        AsyncECSGD(name="a", estimator=SGD, times=times, compressor=Identity(), ec_form="plain"),
        AsyncQSGD(name="a", estimator=SGD, times=times, compressor=Identity()),
    ):
        np.testing.assert_array_equal(trajectory(m, p, 0.2, 300, seed=7)[0], ref)


def test_async_round_is_one_arriving_message(setup):
    p, fs, c = setup
    _, rounds, state = trajectory(AsyncECSGD(name="a", estimator=SGD, compressor=TopK(k=2)), p, 0.2, 12)
    for k, r in enumerate(rounds):
        i = k % p.n
        assert r.bits_up.tolist() == [2 * (32 + 3) if j == i else 0 for j in range(p.n)]
        assert r.nnz.tolist() == [2 if j == i else 0 for j in range(p.n)]
        assert r.calls.tolist() == [1.0 if j == i else 0.0 for j in range(p.n)]
        assert r.bits_down == 32 * p.d and r.skipped == p.n - 1
    assert np.all(np.count_nonzero(state.e, axis=1) > 0)  # each worker kept its remainder
    full = trajectory(AsyncSGD(name="a", estimator=FULL), p, 0.2, 1)[1][0]
    assert full.bits_up.tolist() == [32 * p.d, 0, 0, 0] and full.calls.tolist() == [p.m, 0, 0, 0]


def test_async_theory_stepsize_on_hand_computed_constants():
    """min(gamma_1, 1/(4 L sqrt(tau_C tau_max))), gamma_1 the one-worker estimator rule."""
    c = {"L": 2.0, "n": 3, "d": 4, "L_US": 5.0, "L_IS": 4.0}
    base = (0.5, "1/L")
    got = AsyncSGD(name="a", estimator=FULL).theory(c, base)
    assert got[0] == pytest.approx(1 / (4 * 2 * np.sqrt(3 * 2)))  # fixed: tau_max = 2
    assert "tau_C=n=3" in got[1] and "tau_max=2" in got[1]
    het = AsyncSGD(name="a", estimator=FULL, times="heterogeneous", spread=1.0).theory(c, base)[0]
    assert het == pytest.approx(1 / (8 * np.sqrt(15)))  # tau = 1, 2, 3: tau_max = 3 + 2 = 5
    one = AsyncSGD(name="a", estimator=SGD).theory({**c, "n": 1}, base)[0]
    assert one == pytest.approx(1 / (2 + 5))  # one worker, no delays: 1/(L + L_US/tau)
    slow = {**c, "L_US": 100.0}
    assert AsyncSGD(name="a", estimator=SGD).theory(slow, base)[0] == pytest.approx(1 / 102)
    q = AsyncQSGD(name="a", estimator=FULL, compressor=Natural()).theory(c, base)[0]
    assert q == pytest.approx(1 / (8 * np.sqrt(6)) / (1 + 1 / 8))
    with pytest.raises(ConfigError, match=r"stepsize\.rule: .*method\.times=random"):
        AsyncSGD(name="a", times="random").theory(c, base)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"times": "sometimes"}, r"method\.times"),
        ({"spread": -1.0}, r"method\.spread"),
        ({"durations": [1.0, 2.0, 3.0]}, r"method\.durations: is read only"),
        ({"times": "heterogeneous", "durations": [1.0, 0.0]}, r"method\.durations"),
        ({"estimator": {"kind": "lsvrg"}}, r"method\.estimator\.kind"),
    ],
)
def test_async_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        AsyncSGD(name="a", **kwargs)


def test_async_refusals_at_build_and_init(setup):
    p, fs, c = setup
    m = AsyncSGD(name="a", times="heterogeneous", durations=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"method\.durations: needs one compute time per worker"):
        m.init(p, np.zeros(p.d), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="compressor: method 'a' does not take a contractive"):
        AsyncQSGD(name="a", compressor=TopK(k=1))


# ---- from the config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, columns",
    [
        (["method=choco_sgd", "compressor=topk", "topology=ring"], ["consensus", "err2"]),
        (["method=choco_sgd", "compressor=natural", "topology=torus"], ["consensus", "err2"]),
        (["method=async_sgd"], ["delay_mean", "delay_max", "clock"]),
        (["method=async_ec_sgd", "compressor=topk", "method.times=heterogeneous"], ["err2", "delay_max"]),
        (
            [
                "method=async_qsgd",
                "compressor=natural",
                "method.times=random",
                "stepsize=constant",
                "stepsize.gamma=0.5",
            ],
            ["delay_mean"],
        ),
    ],
)
def test_new_methods_run_from_the_config(overrides, columns, tmp_path):
    s = run(cfg_of(*overrides, "budget.iters=200", "log_every=50"), tmp_path)
    assert s["status"] == "completed", s
    tr = pd.read_parquet(tmp_path / "trace.parquet")
    assert set(columns) <= set(tr.columns)
    assert tr["gap"].iloc[-1] < tr["gap"].iloc[0]
    if "method=choco_sgd" in overrides:
        assert s["constants"]["consensus_step"] > 0 and "spectral_gap" in s["constants"]
    else:
        assert s["constants"]["tau_C"] == s["n_workers"]
        # one gradient per server update: an epoch is n m updates
        assert tr["epochs"].iloc[-1] == pytest.approx(200 / (s["n_workers"] * s["constants"]["m"]))
    if overrides == ["method=async_sgd"]:
        assert "1/(4 L sqrt(tau_C tau_max))" in s["stepsize_formula"]
        assert tr["delay_max"].iloc[-1] == s["n_workers"] - 1


def test_installed_efbench_refuses_a_bad_consensus_step(tmp_path):
    r = efbench("method=choco_sgd", "compressor=topk", "method.consensus_step=-1", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "efbench: error: method.consensus_step: got -1" in r.stderr + r.stdout
