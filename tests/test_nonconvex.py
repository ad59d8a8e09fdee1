"""Problems without mu: the nonconvex regularizer of the EF21 / 3PC experiments and l2 = 0."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem
from test_cli import cfg_of, efbench

from efbench.analysis import collect as sweep
from efbench.analysis import plots
from efbench.config import schema
from efbench.core.compressors import Identity, TopK
from efbench.core.stepsize import Schedule
from efbench.engine.loop import RunSpec, choose_engine
from efbench.errors import ConfigError
from efbench.methods.base import ErrorCompensated
from efbench.methods.samplers import Importance
from efbench.methods.threepc import EF21
from efbench.problems.datasets import make_synthetic, partition
from efbench.problems.logistic import LogisticProblem
from efbench.problems.nonconvex import NonconvexLogisticProblem, optimum_without_mu
from efbench.run.runner import Setup, build_setup, initial_point, run

LAM = 0.3


def nonconvex(l2: float = 0.02, density: float = 1.0, lam: float = LAM, **kw) -> NonconvexLogisticProblem:
    p = small_problem(n=3, m=20, d=7, l2=l2, seed=4, density=density, **kw)
    return NonconvexLogisticProblem(p.A, p.y, l2, lam=lam)


def fd_grad(f, x, h=1e-6):
    E = np.eye(x.size)
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in E])


def f_ij(p, i, j, x):
    """One sample's f_ij(x) = log(1 + exp(-y <a, x>)) + l2/2 ||x||^2 + lam sum_j x_j^2/(1 + x_j^2)."""
    a, yy = p.A[i, j], p.y[i, j]
    return np.logaddexp(0, -yy * a @ x) + 0.5 * p.l2 * x @ x + p.lam * np.sum(x * x / (1 + x * x))


def hessian(p, x):
    return np.array([p.hess_vec(x, e) for e in np.eye(p.d)])


@pytest.mark.parametrize("density", [1.0, 0.2])  # dense rows and the CSR passes
def test_loss_and_gradients_match_finite_differences(density):
    p = nonconvex(density=density)
    assert (p.csr is not None) == (density < 1)
    rng = np.random.default_rng(0)
    X = 1.5 * rng.standard_normal((p.n, p.d))  # |x_j| around 1: where r'' < 0
    x = X[0]
    # f is the mean of the f_ij
    assert p.loss(x) == pytest.approx(np.mean([f_ij(p, i, j, x) for i in range(p.n) for j in range(p.m)]))
    np.testing.assert_allclose(p.grad(x), fd_grad(p.loss, x), rtol=1e-6, atol=1e-8)
    F, G = p.loss_grad_many(X)
    for s in range(p.n):
        assert F[s] == pytest.approx(p.loss(X[s]), rel=1e-12)
        np.testing.assert_allclose(G[s], fd_grad(p.loss, X[s]), rtol=1e-6, atol=1e-8)
    # worker gradients, at one point and at one point per worker, and for some workers only
    W = p.worker_grads(X)
    for i in range(p.n):
        fi = lambda z, i=i: np.mean([f_ij(p, i, j, z) for j in range(p.m)])  # noqa: E731
        np.testing.assert_allclose(W[i], fd_grad(fi, X[i]), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(p.worker_grads(x)[i], fd_grad(fi, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(p.worker_grads(X[[2, 0]], np.array([2, 0])), W[[2, 0]], rtol=1e-12)
    # sampled gradients: tau = 1 and 3, with and without importance weights
    for tau in (1, 3):
        idx = rng.integers(0, p.m, size=(p.n, tau))
        w = rng.uniform(0.5, 2.0, size=(p.n, tau))
        for weights in (None, w):
            g = p.sample_grads(X, p.rows(idx), weights)
            for i in range(p.n):
                want = np.zeros(p.d)
                for t in range(tau):
                    wt = 1.0 if weights is None else weights[i, t]
                    want += wt * fd_grad(lambda z, i=i, j=idx[i, t]: f_ij(p, i, j, z), X[i]) / tau
                np.testing.assert_allclose(g[i], want, rtol=1e-6, atol=1e-8)
    # Hessian-vector products against differences of gradients
    v = rng.standard_normal(p.d)
    h = 1e-5
    np.testing.assert_allclose(
        p.hess_vec(x, v), (p.grad(x + h * v) - p.grad(x - h * v)) / (2 * h), rtol=1e-6, atol=1e-8
    )


def test_constants_bound_the_hessian_and_are_tight_at_zero():
    """L = L_data + l2 + 2 lam bounds |eigenvalues| of the Hessian everywhere and is its
    largest eigenvalue at x = 0; L_i and L_ij (L_US) likewise per worker and per sample;
    the Hessian has negative eigenvalues (near |x_j| = 1), so mu is NaN."""
    p = nonconvex()
    c = p.constants()
    assert math.isnan(c["mu"]) and math.isnan(c["kappa"]) and c["lam_nc"] == LAM
    zero = np.zeros(p.d)
    assert np.linalg.eigvalsh(hessian(p, zero)).max() == pytest.approx(c["L"], rel=1e-9)
    workers = [NonconvexLogisticProblem(p.A[i : i + 1], p.y[i : i + 1], p.l2, lam=LAM) for i in range(p.n)]
    L_i = [np.linalg.eigvalsh(hessian(w, zero)).max() for w in workers]
    assert max(L_i) == pytest.approx(c["L_i_max"], rel=1e-9)
    assert np.sqrt(np.mean(np.square(L_i))) == pytest.approx(c["L_tilde"], rel=1e-9)
    a = p.A.reshape(-1, p.d)
    assert max(r @ r / 4 for r in a) + p.l2 + 2 * LAM == pytest.approx(c["L_US"], rel=1e-12)
    # importance sampling draws p_ij proportional to these L_ij: its constant is max_i Lbar_i
    L_ij = p.row_norm2 / 4 + p.l2 + 2 * LAM
    share = L_ij / L_ij.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(Importance().probabilities(p), share, rtol=1e-12)
    assert c["L_IS"] == pytest.approx((L_ij / (p.m * share)).max(), rel=1e-12)
    assert c["L_IS"] == pytest.approx(L_ij.mean(axis=1).max(), rel=1e-12)
    rng = np.random.default_rng(1)
    lowest = np.inf
    for _ in range(30):
        x = rng.standard_normal(p.d) * rng.choice([0.3, 1.0, 3.0])
        ev = np.linalg.eigvalsh(hessian(p, x))
        assert np.abs(ev).max() <= c["L"] * (1 + 1e-12)
        for w, L in zip(workers, L_i, strict=True):
            assert np.abs(np.linalg.eigvalsh(hessian(w, x))).max() <= L * (1 + 1e-12)
        lowest = min(lowest, ev.min())
    assert np.linalg.eigvalsh(hessian(p, np.ones(p.d))).min() < 0 and lowest < 0  # not convex


def test_ef21_with_the_identity_is_gd_on_the_nonconvex_f_and_its_gradient_vanishes():
    """EF21 with the identity compressor is GD on f step by step, each worker's gradient
    carrying the regularizer; with Top-2 at its theory stepsize ||grad f||^2 goes to 0."""
    p = nonconvex()
    gamma = 1.0 / p.constants()["L"]
    rng = np.random.default_rng(0)
    method = EF21(name="ef21", compressor=Identity())
    state = method.init(p, np.full(p.d, 2.0), rng)
    x = np.full(p.d, 2.0)
    for _ in range(20):
        state, _ = method.step(p, state, gamma, rng)
        x = x - gamma * p.grad(x)
        np.testing.assert_allclose(state.x, x, rtol=1e-12, atol=1e-14)
    method = EF21(name="ef21", compressor=TopK(k=2))
    c = p.constants()
    gamma, _ = method.theory(c, (1 / c["L"], "1/L"))
    state = method.init(p, np.full(p.d, 2.0), rng)
    gn = [p.grad(state.x) @ p.grad(state.x)]
    for _ in range(3000):
        state, _ = method.step(p, state, gamma, rng)
        gn.append(p.grad(state.x) @ p.grad(state.x))
    assert gn[-1] < 1e-8 * gn[0]
    assert min(gn[:100]) > gn[-1]


def test_the_compiled_step_refuses_it():
    """Method.fuse runs the plain LogisticProblem only: engine=auto falls back to numpy,
    engine=numba refuses, naming engine."""
    p = nonconvex()
    method = ErrorCompensated(name="ec_sgd", estimator={"kind": "sgd", "batch": 1}, compressor=TopK(k=2))
    plain = LogisticProblem(p.A, p.y, p.l2)
    assert not isinstance(method.fuse(plain), str)
    assert "NonconvexLogisticProblem has no compiled step" in method.fuse(p)
    spec = RunSpec(method, Schedule(0.1, "constant"), np.zeros(p.d), 0)
    assert choose_engine("auto", [spec], p) is None
    with pytest.raises(ConfigError, match=r"^engine: numba cannot run this"):
        choose_engine("numba", [spec], p)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["engine=numba"], "engine"),
        (["x0=shift"], "x0"),
        (["dataset=counterexample"], "problem.regularizer"),
        (["method=mem_sgd", "compressor=topk"], "problem.regularizer"),
        (["problem.lam_nc=0"], "problem.lam_nc"),
    ],
)
def test_settings_it_cannot_take_name_their_key(overrides, key):
    cfg = cfg_of("problem.regularizer=nonconvex", "method=ec_sgd", "compressor=topk", *overrides)
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        schema.validate(cfg, {})
    schema.validate(cfg_of("problem.regularizer=nonconvex", "method=ec_sgd", "compressor=topk"), {})


def test_a_nonconvex_run_records_grad_norm2_and_no_gap(tmp_path):
    """The runner: f* = NaN, so gap, rel_gap and dist2 are NaN; grad_norm2 falls; collect
    and the figures take --y grad_norm2."""
    cfg = cfg_of(
        "problem.regularizer=nonconvex", "method=ef21", "compressor=topk", "budget.iters=400", "log_every=50"
    )
    s = run(cfg, tmp_path / "run")
    tr = pd.read_parquet(tmp_path / "run" / "trace.parquet")
    assert s["status"] == "completed" and s["engine"] == "numpy"
    assert tr[["gap", "rel_gap", "dist2"]].isna().all().all() and math.isnan(s["constants"]["f_star"])
    g = tr["grad_norm2"].to_numpy()
    assert np.all(np.diff(g) < 0) and g[-1] < 0.05 * g[0]
    summ = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert math.isnan(summ["constants"]["mu"]) and summ["constants"]["lam_nc"] == 0.1
    trace, runs = sweep.collect(tmp_path)
    assert len(runs) == 1 and trace["grad_norm2"].notna().all()
    plots.main([str(tmp_path), "--y", "grad_norm2", "--x", "iterations", "--out", str(tmp_path / "fig")])
    assert (tmp_path / "fig" / "grad_norm2_vs_iterations.png").stat().st_size > 0


def test_the_cli_runs_ef21_on_it_and_refuses_numba(tmp_path):
    r = efbench(
        "method=ef21",
        "compressor=topk",
        "problem.regularizer=nonconvex",
        "budget.iters=300",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'a'}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    tr = pd.read_parquet(tmp_path / "a" / "trace.parquet")
    assert tr["grad_norm2"].iloc[-1] < 0.05 * tr["grad_norm2"].iloc[0] and tr["gap"].isna().all()
    r = efbench(
        "method=ec_sgd_is",
        "problem.regularizer=nonconvex",
        "engine=numba",
        f"hydra.run.dir={tmp_path / 'b'}",
        cwd=tmp_path,
    )
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert (
        r.returncode == 2 and len(lines) == 1 and "efbench: error: engine: numba cannot run this" in lines[0]
    )


# ---- l2 = 0 ---------------------------------------------------------------------------


def test_l2_zero_constants_and_an_optimum_to_the_tolerance():
    """Convex, not strongly: mu = 0, kappa = inf; the damped Newton point has a vanishing
    gradient even with a feature no row uses (a singular Hessian)."""
    X, y = make_synthetic(120, 6, seed=3, noise=2.0)  # noisy labels: not separable
    X[:, 4] = 0.0
    A, Y = partition(X, y, 4, 30, "shuffle", 0)
    p = LogisticProblem(A, Y, 0.0)
    c = p.constants()
    assert c["mu"] == 0 and c["kappa"] == math.inf
    assert c["L"] == pytest.approx(np.linalg.eigvalsh(hessian(p, np.zeros(p.d))).max(), rel=1e-9)
    x, f, what = optimum_without_mu(p, None)
    g = p.grad(x)
    assert np.linalg.norm(g) <= 1e-9 * np.linalg.norm(p.grad(np.zeros(p.d)))
    assert x[4] == 0.0 and f == p.loss(x) and "approximate" in what
    assert p.loss(x + 0.01 * np.random.default_rng(0).standard_normal(p.d)) > f


def test_l2_zero_on_separable_data_has_f_star_exactly_and_no_x_star(tmp_path):
    """Separable rows (and a zero row, whose loss is log 2 whatever x): inf f = log(2)/N,
    not attained: x* is NaN and x0=shift is refused, naming x0."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = np.sign(X @ np.array([1.0, -2.0, 0.5, 0.0, 1.0]))
    X[7] = 0.0
    p = LogisticProblem(X.reshape(4, 10, 5), y.reshape(4, 10), 0.0)
    x, f, what = optimum_without_mu(p, tmp_path)
    assert f == math.log(2) / 40 and np.isnan(x).all() and "separable" in what
    assert optimum_without_mu(p, tmp_path)[1] == f  # from the disk cache
    setup = Setup(p, p.constants(), x, f)
    with pytest.raises(ConfigError, match=r"^x0: shift starts from x\*"):
        initial_point(cfg_of("x0=shift"), setup)


def test_l2_zero_runs_and_mem_sgd_is_refused(tmp_path):
    cfg = cfg_of("problem.l2=0", "method=ec_sgd", "compressor=topk", "budget.iters=300")
    setup = build_setup(cfg)
    assert setup.problem.l2 == 0 and setup.constants["mu"] == 0 and setup.constants["kappa"] == math.inf
    s = run(cfg, tmp_path)
    assert s["status"] == "completed" and s["final"]["gap"] < 0.5 * (math.log(2) - setup.fstar)
    with pytest.raises(ConfigError, match=r"^problem\.l2: method 'mem_sgd' takes its stepsize from mu"):
        schema.validate(cfg_of("problem.l2=0", "method=mem_sgd", "compressor=topk"), {})
    schema.validate(cfg_of("problem.l2=0", "method=ef21", "compressor=topk"), {})
