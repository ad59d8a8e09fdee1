"""Local-step methods: Local-SGD / FedAvg, Scaffnew (ProxSkip) and GradSkip (efbench.methods.local)."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem, trajectory
from test_cli import cfg_of

from efbench.config import schema
from efbench.errors import ConfigError
from efbench.methods.base import Uncompressed
from efbench.methods.local import GradSkip, LocalSGD, Scaffnew
from efbench.problems.logistic import LogisticProblem, solve
from efbench.run.runner import run

FULL = {"kind": "full"}
SGD = {"kind": "sgd", "sampling": "uniform", "batch": 1}
TIGHT = {"rtol": 1e-11, "atol": 1e-13}


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    return p, solve(p), p.constants()


@pytest.fixture(scope="module")
def hetero():
    """Workers whose data are scaled by 1/4, 1/2, 1, 2: L_i spread over a factor 23, kappa_max
    about 33, and grad f_i(x*) well away from 0."""
    base = small_problem(n=4, m=25, d=6, l2=0.01, seed=2)
    p = LogisticProblem(base.A * np.array([0.25, 0.5, 1.0, 2.0])[:, None, None], base.y, 0.01)
    return p, solve(p), p.constants()


def counts(rounds, key):
    return np.array([getattr(r, key) for r in rounds])


# ---- Local-SGD -----------------------------------------------------------------------


def test_local_sgd_with_one_full_step_is_gd(setup):
    p, _, c = setup
    gamma = 0.9 / c["L"]
    gd = trajectory(Uncompressed(name="gd", estimator=FULL), p, gamma, 40)[0]
    local = trajectory(LocalSGD(name="l", estimator=FULL, local_steps=1), p, gamma, 40)[0]
    np.testing.assert_allclose(local, gd, **TIGHT)


def test_local_sgd_on_identical_data_is_tau_gd_steps_per_round(setup):
    """Every worker holds worker 0's data: all run the same GD, so a round is tau steps of GD
    on f_0; the server stepsize scales the round's update."""
    p, _, c = setup
    one = LogisticProblem(p.A[:1], p.y[:1], p.l2)
    same = LogisticProblem(np.repeat(p.A[:1], 4, axis=0), np.repeat(p.y[:1], 4, axis=0), p.l2)
    gamma, tau = 1.0 / c["L_i_max"], 5
    gd = trajectory(Uncompressed(name="gd", estimator=FULL), one, gamma, 6 * tau)[0]
    local = trajectory(LocalSGD(name="l", estimator=FULL, local_steps=tau), same, gamma, 6)[0]
    np.testing.assert_allclose(local, gd[::tau], **TIGHT)
    half = trajectory(
        LocalSGD(name="l", estimator=FULL, local_steps=tau, server_stepsize=0.5), same, gamma, 1
    )
    np.testing.assert_allclose(half[0][1], 0.5 * gd[tau], **TIGHT)  # x0 = 0: x1 = 0.5 (GD^tau(0) - 0)


def test_local_gd_stops_in_a_neighbourhood_of_x_star_scaffnew_and_gradskip_reach_it(hetero):
    """Heterogeneous data: Local-GD converges (to machine precision) to a fixed point away from
    x*, at a distance proportional to gamma (halving gamma halves it); Scaffnew and GradSkip
    converge to x* itself, their control variates to grad f_i(x*)."""
    p, xs, c = hetero
    dist = []
    for gamma in (1.0 / (4 * c["L_i_max"]), 1.0 / (8 * c["L_i_max"])):
        xk = trajectory(LocalSGD(name="l", estimator=FULL, local_steps=5), p, gamma, 1500)[0]
        assert np.linalg.norm(xk[-1] - xk[-2]) <= 1e-14  # a fixed point
        dist.append(np.linalg.norm(xk[-1] - xs))
    assert dist[0] > 1e-3 * np.linalg.norm(xs)  # far beyond rounding: a bias, not noise
    assert dist[0] / dist[1] == pytest.approx(2.0, rel=0.1)
    for method in (Scaffnew(name="s", estimator=FULL), GradSkip(name="g", estimator=FULL)):
        xk, rounds, state = trajectory(method, p, method.theory(c, None)[0], 1000)
        assert np.linalg.norm(p.grad(xk[-1])) <= 1e-12
        np.testing.assert_allclose(state.X, np.tile(xk[-1], (4, 1)), atol=1e-10)
        np.testing.assert_allclose(state.h, p.worker_grads(xk[-1]), atol=1e-11)
        assert np.abs(p.worker_grads(xs)).max() > 1e-2  # the shifts are far from 0


def test_local_sgd_counts_a_round(setup):
    p = setup[0]
    for est, calls in ((FULL, 4 * 25), ({**SGD, "batch": 3}, 4 * 3)):
        _, rounds, _ = trajectory(LocalSGD(name="l", estimator=est, local_steps=4), p, 0.5, 3)
        for r in rounds:
            assert r.bits_up.tolist() == [32 * 6] * 4 and r.bits_down == 32 * 6
            assert r.nnz.tolist() == [6] * 4 and r.calls == calls and r.skipped == 0


# ---- Scaffnew ------------------------------------------------------------------------


def test_scaffnew_with_p_one_is_gd(setup):
    """p = 1: x^{t+1} = mean_j (x - gamma (g_j - h_j) - gamma h_j) = x - gamma grad f(x), and
    h_i^{t+1} = h_i + (1/gamma)(x^{t+1} - xhat_i) = grad f_i(x^t) - grad f(x^t)."""
    p, _, c = setup
    gamma = 0.9 / c["L"]
    gd = trajectory(Uncompressed(name="gd", estimator=FULL), p, gamma, 30)[0]
    xk, rounds, state = trajectory(Scaffnew(name="s", estimator=FULL, p=1.0), p, gamma, 30)
    np.testing.assert_allclose(xk, gd, **TIGHT)
    G = p.worker_grads(xk[-2])
    np.testing.assert_allclose(state.h, G - G.mean(axis=0), rtol=1e-9, atol=1e-12)
    assert all(r.skipped == 0 for r in rounds)


def test_scaffnew_control_variates_keep_summing_to_zero(setup):
    """sum_i h_i = 0 is invariant: a communication adds (p/gamma)(xbar - xhat_i), which sums to
    0 over i, since xbar is the mean of xhat_i - (gamma/p) h_i and sum_i h_i = 0 before."""
    p, _, c = setup
    m = Scaffnew(name="s", estimator=SGD, p=0.3)
    rng = np.random.default_rng(3)
    state = m.init(p, np.zeros(p.d), rng)
    worst = 0.0
    for _ in range(300):
        state, _ = m.step(p, state, 0.5 / c["L_US"], rng)
        h = state.h
        worst = max(worst, np.abs(h.sum(axis=0)).max() / max(np.abs(h).max(), 1e-300))
    assert np.abs(state.h).max() > 1e-3 and worst <= 1e-13


def test_scaffnew_counts_communication_rounds_only(setup):
    """One step is one iteration; the coin (the only draw with full gradients) decides."""
    p = setup[0]
    _, rounds, _ = trajectory(Scaffnew(name="s", estimator=FULL, p=0.4), p, 1.0, 60, seed=7)
    coins = np.random.default_rng(7).random(60) < 0.4
    assert 10 < coins.sum() < 50
    dense = 32 * 6
    np.testing.assert_array_equal(counts(rounds, "skipped"), np.where(coins, 0, 4))
    np.testing.assert_array_equal(counts(rounds, "bits_down"), np.where(coins, dense, 0))
    per_worker = coins[:, None].repeat(4, axis=1)
    np.testing.assert_array_equal(np.stack(counts(rounds, "bits_up")), np.where(per_worker, dense, 0))
    np.testing.assert_array_equal(np.stack(counts(rounds, "nnz")), np.where(per_worker, 6, 0))
    assert (counts(rounds, "calls") == 25).all()
    _, rounds, _ = trajectory(Scaffnew(name="s", estimator={**SGD, "batch": 3}, p=0.4), p, 0.2, 5)
    assert (counts(rounds, "calls") == 3).all()


def test_scaffnew_trace_counts_through_the_engine(tmp_path):
    """Through the runner: skipped_frac is the fraction of local-only iterations, bits and
    broadcasts come only from communication rounds, every iteration costs m calls."""
    steps = 400
    s = run(
        cfg_of("method=scaffnew", "method.p=0.25", f"budget.iters={steps}", f"log_every={steps}"), tmp_path
    )
    assert s["status"] == "completed" and s["constants"]["p"] == 0.25
    last = pd.read_parquet(tmp_path / "trace.parquet").iloc[-1]
    comm = last["rounds_up"]
    assert 60 < comm < 140 and last["rounds_down"] == comm
    assert last["skipped_frac"] == pytest.approx(1 - comm / steps)
    d, m = s["constants"]["d"], s["constants"]["m"]
    assert last["bits_up_mean"] == comm * 32 * d and last["bits_down"] == comm * 32 * d
    assert last["epochs"] == steps and last["calls_round_max"] == steps * m


# ---- GradSkip ------------------------------------------------------------------------


def test_gradskip_with_q_one_is_scaffnew_step_by_step(hetero):
    p, _, c = hetero
    for seed in (0, 1):
        a = trajectory(Scaffnew(name="s", estimator=FULL, p=0.3), p, 2.0, 200, seed=seed)
        b = trajectory(GradSkip(name="g", estimator=FULL, p=0.3, q=1.0), p, 2.0, 200, seed=seed)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[2].h, b[2].h)
        assert counts(a[1], "skipped").tolist() == counts(b[1], "skipped").tolist()


def gradskip_reference(p, q, prob, gamma, steps, seed):
    """Algorithm 1 of Maranjyan et al. as written: every gradient evaluated, every iteration."""
    rng = np.random.default_rng(seed)
    X, h = np.zeros((p.n, p.d)), np.zeros((p.n, p.d))
    for _ in range(steps):
        G = p.worker_grads(X)
        theta = rng.random() < prob
        eta = rng.random(p.n) < q
        hhat = np.where(eta[:, None], h, G)
        xhat = X - gamma * (G - hhat)
        if theta:
            xbar = p.worker_mean(xhat - (gamma / prob) * hhat)
            X, h = np.tile(xbar, (p.n, 1)), hhat + (prob / gamma) * (xbar - xhat)
        else:
            X, h = xhat, hhat
    return X, h


def test_gradskip_is_its_algorithm_with_every_gradient_recomputed(hetero):
    """The reused gradients are those at the very point: the method equals the algorithm that
    recomputes grad f_i(x_i) every iteration (a skipping worker, eta_i = 0, stays put)."""
    p = hetero[0]
    q = np.array([0.3, 0.6, 0.9, 0.95])
    method = GradSkip(name="g", estimator=FULL, p=0.2)
    rng = np.random.default_rng(4)
    state = method.init(p, np.zeros(p.d), rng)
    state.q = q
    for _ in range(150):
        state, _ = method.step(p, state, 2.0, rng)
    X, h = gradskip_reference(p, q, 0.2, 2.0, 150, seed=4)
    np.testing.assert_allclose(state.X, X, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(state.h, h, rtol=1e-10, atol=1e-13)


class Counting(LogisticProblem):
    """Counts the local gradients actually evaluated (worker by worker)."""

    def __post_init__(self):
        super().__post_init__()
        self.evaluated = 0

    def worker_grads(self, x, workers=None):
        self.evaluated += self.n if workers is None else len(workers)
        return super().worker_grads(x, workers)


def test_gradskip_computes_and_counts_only_the_gradients_it_needs(hetero):
    """Worker i computes grad f_i (m calls, counted and evaluated) in an iteration exactly
    when its x_i is not where its last gradient was taken: after a skip (eta_i = 0) with
    nobody communicating, x_i stays, and so it does in the iteration after if eta_i = 1
    (its step G_i - h_i is then zero)."""
    base, _, c = hetero
    p = Counting(base.A, base.y, base.l2)
    q = np.array([0.3, 0.6, 0.9, 1.0])
    method = GradSkip(name="g", estimator=FULL, p=0.2)
    rng = np.random.default_rng(5)
    state = method.init(p, np.zeros(p.d), rng)
    state.q = q
    rounds, expected, where = [], [], np.full((4, p.d), np.nan)  # where each g_i was taken
    for _ in range(300):
        moved = (state.X != where).any(axis=1)
        expected.append(np.where(moved, 25.0, 0.0))
        where[moved] = state.X[moved]
        state, rnd = method.step(p, state, 1.0, rng)
        rounds.append(rnd)
    calls = np.stack(counts(rounds, "calls"))
    np.testing.assert_array_equal(calls, np.array(expected))
    assert p.evaluated == calls.sum() / 25
    total = calls.sum(axis=0) / 25
    assert total[0] < 0.6 * total[3] and total[3] == 300  # q_i = 1: a gradient every iteration


def test_gradskip_reaches_x_star_with_fewer_gradients_than_scaffnew(hetero):
    p, xs, c = hetero
    a = trajectory(Scaffnew(name="s", estimator=FULL), p, Scaffnew(name="s").theory(c, None)[0], 800)
    m = GradSkip(name="g", estimator=FULL)
    b = trajectory(m, p, m.theory(c, None)[0], 800)
    for xk in (a[0], b[0]):
        assert np.linalg.norm(xk[-1] - xs) <= 1e-8
    q = b[2].q
    assert q[-1] == 1.0 and (np.diff(q) > 0).all()  # q_i grows with L_i: the worst worker never skips
    grads = np.stack(counts(b[1], "calls")).sum(axis=0) / p.m
    assert grads[-1] == 800 and grads[0] < 0.5 * 800  # Scaffnew: 800 for every worker
    assert (np.stack(counts(a[1], "calls")) == p.m).all()


# ---- theory stepsizes and settings ------------------------------------------------------

CONSTANTS = {"n": 4, "m": 25, "d": 6, "L": 5.0, "mu": 0.02, "L_i_max": 8.0, "L_US": 20.0, "L_IS": 12.0}


def test_theory_stepsizes_on_hand_computed_constants():
    c = CONSTANTS
    g, f = LocalSGD(name="l", estimator=FULL).theory(c, None)
    assert g == 1 / 32 and f.startswith("1/(4 L_max)")
    g, f = LocalSGD(name="l", estimator=SGD).theory(c, None)
    assert g == 1 / 80 and f.startswith("1/(4 L_US)")
    assert LocalSGD(name="l", estimator={**SGD, "sampling": "importance"}).theory(c, None)[0] == 1 / 48
    gamma, p, f = Scaffnew(name="s", estimator=FULL).rule(c)
    assert (gamma, p) == (1 / 8, pytest.approx(math.sqrt(0.02 / 8))) and "p = sqrt(gamma mu) = 0.05" in f
    gamma, p, f = Scaffnew(name="s", estimator=SGD).rule(c)
    assert (gamma, p) == (1 / 40, pytest.approx(math.sqrt(0.02 / 40))) and f.startswith("1/A, A = 2 L_US")
    assert Scaffnew(name="s", estimator=FULL, p=0.3).rule(c)[1] == 0.3
    gamma, p, _ = GradSkip(name="g").rule(c)
    assert gamma == pytest.approx(1 / 8) and p == pytest.approx(0.05)
    gamma, _, f = GradSkip(name="g", p=0.1, q=0.5).rule(c)
    assert gamma == pytest.approx(0.01 / (8 * (1 - 0.5 * 0.99))) and "q=0.5" in f
    assert GradSkip(name="g", p=0.1).rule(c)[0] == 1 / 8  # min(p^2/mu, 1/L_max) = min(0.5, 1/8)
    assert GradSkip(name="g", p=0.02).rule(c)[0] == pytest.approx(0.02)  # p^2/mu = 0.0004/0.02


@pytest.mark.parametrize("mu", [0.0, math.nan])
def test_scaffnew_default_p_needs_mu(mu):
    """p = sqrt(gamma mu) is 0 (l2 = 0) or NaN (nonconvex): refused, naming method.p; a set p runs."""
    c = {**CONSTANTS, "mu": mu}
    with pytest.raises(ConfigError) as exc:
        Scaffnew(name="s", estimator=FULL).rule(c)
    assert exc.value.key == "method.p"
    assert Scaffnew(name="s", estimator=FULL, p=0.2).rule(c)[1] == 0.2
    for kw, key in (({}, "method.p"), ({"p": 0.2}, "method.q")):  # GradSkip's defaults need mu too
        with pytest.raises(ConfigError) as exc:
            GradSkip(name="g", **kw).rule(c)
        assert exc.value.key == key
    assert GradSkip(name="g", p=0.2, q=0.5).rule(c)[1] == 0.2


def test_gradskip_default_q_is_the_papers_choice(hetero):
    p, _, c = hetero
    state = GradSkip(name="g", estimator=FULL).init(p, np.zeros(p.d), np.random.default_rng(0))
    L_i, mu, p2 = p.worker_smoothness + p.l2, c["mu"], c["mu"] / c["L_i_max"]
    np.testing.assert_allclose(state.q, (1 - mu / L_i) / (1 - p2), rtol=1e-12)
    assert state.p == pytest.approx(math.sqrt(p2))


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: LocalSGD(name="l", local_steps=0), "method.local_steps"),
        (lambda: LocalSGD(name="l", local_steps=2.5), "method.local_steps"),
        (lambda: LocalSGD(name="l", server_stepsize=0.0), "method.server_stepsize"),
        (lambda: LocalSGD(name="l", estimator={"kind": "lsvrg"}), "method.estimator.kind"),
        (lambda: Scaffnew(name="s", p=0.0), "method.p"),
        (lambda: Scaffnew(name="s", p=1.5), "method.p"),
        (lambda: GradSkip(name="g", q=0.0), "method.q"),
        (lambda: GradSkip(name="g", estimator=SGD), "method.estimator.kind"),
    ],
)
def test_bad_settings_name_their_key(make, key):
    with pytest.raises(ConfigError) as exc:
        make()
    assert exc.value.key == key


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["method=local_sgd", "method.local_steps=0"], "method.local_steps"),
        (["method=local_sgd", "method.server_stepsize=-1"], "method.server_stepsize"),
        (["method=scaffnew", "method.p=2"], "method.p"),
        (["method=gradskip", "method.q=0"], "method.q"),
        (["method=gradskip", "method.estimator.kind=sgd"], "method.estimator.kind"),
    ],
)
def test_bad_settings_from_the_config_name_their_key(overrides, key):
    with pytest.raises(ConfigError) as exc:
        schema.validate(cfg_of(*overrides))
    assert exc.value.key == key


# ---- a9a ---------------------------------------------------------------------------------


def test_runs_on_a9a(mirror, data_cache, tmp_path):
    """The three methods from their YAML on a9a, 5 workers x 400 rows (x* of the paper's split
    costs 20 s: the CLI runs on it are in the report)."""
    heads = {"local_sgd": "1/(4 L_US)", "scaffnew": "1/L_max", "gradskip": "min(p^2/mu, 1/L_max)"}
    data = (f"data.mirror={mirror}", f"data.dir={data_cache}", "dataset.n_workers=5", "dataset.m=400")
    for method, head in heads.items():
        cfg = cfg_of("dataset=a9a", *data, f"method={method}", "budget.iters=300", "log_every=100")
        s = run(cfg, tmp_path / method)
        assert s["status"] == "completed" and s["steps"] == 300
        tr = pd.read_parquet(tmp_path / method / "trace.parquet")
        assert tr["gap"].iloc[-1] < 0.5 * tr["gap"].iloc[0]
        assert s["final"]["bits_up_mean"] == tr["rounds_up"].iloc[-1] * 32 * 123 > 0
        assert s["stepsize_formula"].startswith(head)
