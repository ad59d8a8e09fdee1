"""EF21, LAG, CLAG, DIANA, Mem-SGD, EF-signSGD, DoubleSqueeze and decentralized methods."""

import numpy as np
import pytest
from conftest import small_problem, trajectory
from test_cli import cfg_of

from efbench.core.compressors import Identity, Natural, RandK, TopK
from efbench.core.stepsize import Schedule
from efbench.core.topology import adjacency, mixing_matrix, spectral_gap
from efbench.errors import ConfigError
from efbench.methods.base import (
    DCDPSGD,
    DIANA,
    DPSGD,
    DeepSqueeze,
    DoubleSqueeze,
    EFSignSGD,
    MemSGD,
    Uncompressed,
)
from efbench.methods.threepc import CLAG, EF21, LAG
from efbench.problems.logistic import solve
from efbench.run.runner import run

FULL = {"kind": "full"}
SGD = {"kind": "sgd", "sampling": "uniform", "batch": 1}


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=4, m=25, d=6, l2=0.05, seed=2)
    xs = solve(p)
    return p, p.loss(xs), p.constants()


@pytest.mark.parametrize("name", ["ring", "torus", "complete"])
@pytest.mark.parametrize("n", [2, 3, 7, 12, 20])
def test_mixing_matrices_are_symmetric_doubly_stochastic(name, n):
    W = mixing_matrix(name, n)
    np.testing.assert_allclose(W, W.T)
    np.testing.assert_allclose(W.sum(axis=0), 1.0)
    np.testing.assert_allclose(W.sum(axis=1), 1.0)
    assert np.all(W >= 0)
    assert 0 < spectral_gap(W) <= 1 + 1e-12
    adj = adjacency(name, n)
    assert np.array_equal(adj, adj.T) and not adj.diagonal().any()


def test_topology_shapes_and_gaps():
    assert adjacency("ring", 20).sum(axis=1).tolist() == [2] * 20
    assert adjacency("torus", 20).sum(axis=1).tolist() == [4] * 20  # 4 x 5 grid
    np.testing.assert_allclose(mixing_matrix("complete", 5), np.full((5, 5), 0.2))
    assert spectral_gap(mixing_matrix("complete", 5)) == pytest.approx(1.0)
    gaps = [spectral_gap(mixing_matrix(t, 20)) for t in ("ring", "torus", "complete")]
    assert gaps[0] < gaps[1] < gaps[2]
    # ring with weights 1/3: eigenvalues (1 + 2 cos(2 pi k / n)) / 3
    assert spectral_gap(mixing_matrix("ring", 20)) == pytest.approx(1 - (1 + 2 * np.cos(2 * np.pi / 20)) / 3)


def test_identity_compressor_reproduces_gd(setup):
    p, fs, c = setup
    gamma = 0.7 / c["L"]
    gd = trajectory(Uncompressed(name="gd", estimator=FULL), p, gamma, 40)[0]
    for m in (
        EF21(name="ef21", compressor=Identity()),
        CLAG(name="clag", zeta=0.0, compressor=Identity()),
        LAG(name="lag", zeta=0.0),
        DIANA(name="diana", estimator=FULL, alpha=1.0, compressor=Identity()),
    ):
        np.testing.assert_allclose(trajectory(m, p, gamma, 40)[0], gd, rtol=1e-11, atol=1e-13, err_msg=m.name)


def test_identity_compressor_reproduces_sgd(setup):
    p, fs, c = setup
    sgd = trajectory(Uncompressed(name="sgd", estimator=SGD), p, 0.2, 60, seed=5)[0]
    for m in (
        DoubleSqueeze(name="ds", estimator=SGD, compressor=Identity()),
        DIANA(name="diana", estimator=SGD, alpha=1.0, compressor=Identity()),
    ):
        np.testing.assert_allclose(trajectory(m, p, 0.2, 60, seed=5)[0], sgd, rtol=1e-11, atol=1e-13)
    sched = Schedule(0.5, "", "inv", 10.0)
    mem = MemSGD(name="mem", estimator=SGD, compressor=Identity(), a=1.0, b=10.0)
    mem.schedule(sched, c)
    np.testing.assert_allclose(
        trajectory(mem, p, sched, 60, seed=5)[0],
        trajectory(Uncompressed(name="sgd", estimator=SGD), p, sched, 60, seed=5)[0],
        rtol=1e-11,
        atol=1e-13,
    )


def test_mem_sgd_schedule_is_scaled_by_the_stepsize_multiplier(setup):
    """eta_t = mult * a/(mu (b + t)): the multiplier a tuning sweep sets scales Mem-SGD's own
    schedule as it scales every other method's stepsize, and 1 leaves the paper's."""
    _, _, c = setup
    mem = MemSGD(name="mem", estimator=SGD, compressor=Identity(), a=2.0, b=10.0)
    plain = mem.schedule(Schedule(0.5, ""), c)
    assert plain(0) == 2.0 / (c["mu"] * 10.0) and plain(30) == pytest.approx(2.0 / (c["mu"] * 40.0))
    half = mem.schedule(Schedule(0.25, "", multiplier=0.5), c)
    assert half.at(np.arange(50)) == pytest.approx(0.5 * plain.at(np.arange(50)), rel=1e-15)
    assert half.formula.startswith("0.5 * a/(mu (b + k))")


def test_dcd_psgd_identity_equals_d_psgd(setup):
    p, fs, c = setup
    for topo in ("ring", "complete"):
        a = trajectory(DPSGD(name="d", estimator=SGD, topology=topo), p, 0.3, 50, seed=1)
        b = trajectory(
            DCDPSGD(name="dcd", estimator=SGD, topology=topo, compressor=Identity()), p, 0.3, 50, seed=1
        )
        np.testing.assert_allclose(a[0], b[0], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(a[2].X, b[2].X, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    "method",
    [
        EF21(name="ef21", compressor=TopK(k=1)),
        CLAG(name="clag", zeta=2.0, compressor=TopK(k=2)),
        LAG(name="lag", zeta=2.0),
        DIANA(name="diana", estimator=FULL, compressor=RandK(k=2, scaled=True)),
        DIANA(name="diana_nat", estimator=FULL, compressor=Natural()),
    ],
    ids=lambda m: m.name,
)
def test_converges_to_optimum_with_compression_on_heterogeneous_workers(setup, method):
    p, fs, c = setup
    gamma = 0.5 * method.theory(c, (1.0 / c["L"], "1/L"))[0]
    traj, rounds, _ = trajectory(method, p, gamma, 8000)
    assert p.loss(traj[-1]) - fs < 1e-10


def test_lazy_aggregation_skips_rounds_at_zero_bits(setup):
    p, fs, c = setup
    _, rounds, _ = trajectory(LAG(name="lag", zeta=4.0), p, 0.5 / c["L"], 300)
    dense = 32 * p.d
    assert rounds[0].bits_up.tolist() == [dense] * p.n  # g_i^0 = grad f_i(x^0), sent in full
    skipped = sum(r.skipped for r in rounds[1:])
    assert skipped > 0
    for r in rounds[1:]:
        assert set(r.bits_up.tolist()) <= {0, dense}
        assert r.skipped == int(np.sum(r.bits_up == 0))
    _, rounds, _ = trajectory(CLAG(name="clag", zeta=4.0, compressor=TopK(k=1)), p, 0.5 / c["L"], 300)
    for r in rounds[1:]:
        assert set(r.bits_up.tolist()) <= {0, 1 * (32 + 3)}  # top-1 of d = 6: 32 + ceil(log2 6)


def test_double_squeeze_counts_downlink(setup):
    p, fs, c = setup
    m = DoubleSqueeze(name="ds", estimator=SGD, compressor=TopK(k=2))
    traj, rounds, state = trajectory(m, p, 0.1, 2000)
    assert all(r.bits_down == 2 * (32 + 3) and r.bits_up.tolist() == [70] * p.n for r in rounds)
    assert p.loss(traj[-1]) - fs < 0.05 * (p.loss(traj[0]) - fs)


def test_ef_signsgd_uses_scaled_sign(setup):
    p, fs, c = setup
    m = EFSignSGD(name="efs", estimator=SGD, compressor=TopK(k=1))
    traj, rounds, _ = trajectory(m, p, 0.1, 2000)
    assert all(r.bits_up.tolist() == [32 + p.d] * p.n for r in rounds)
    assert p.loss(traj[-1]) - fs < 0.05 * (p.loss(traj[0]) - fs)


@pytest.mark.parametrize("topo", ["ring", "torus", "complete"])
def test_decentralized_methods_converge_and_count_edge_bits(setup, topo):
    p, fs, c = setup
    f0 = p.loss(np.zeros(p.d)) - fs
    for m in (
        DPSGD(name="d", estimator=FULL, topology=topo),
        # DCD-PSGD needs a low-variance compressor (omega small against the spectral gap)
        DCDPSGD(name="dcd", estimator=FULL, topology=topo, compressor=Natural()),
        DeepSqueeze(name="deep", estimator=FULL, topology=topo, compressor=TopK(k=3), eta=0.3),
    ):
        traj, rounds, state = trajectory(m, p, 0.3 / c["L"], 3000)
        assert p.loss(traj[-1]) - fs < 1e-2 * f0, (m.name, topo)
        deg = adjacency(topo, p.n).sum(axis=1)
        per_msg = {"d": 32 * p.d, "dcd": 9 * p.d, "deep": min(3 * (32 + 3), 6 + 3 * 32)}[m.name]
        assert rounds[-1].bits_up.tolist() == (deg * per_msg).tolist()
        X = state.X
        np.testing.assert_allclose(state.x, X.mean(axis=0))


def test_incompatible_pairs_are_refused_before_the_run(tmp_path):
    for overrides, kind in (
        (["method=diana", "compressor=topk"], "contractive"),
        (["method=ef21", "compressor=natural"], "unbiased"),
        (["method=clag", "compressor=ht"], "absolute"),
        (["method=dcd_psgd", "compressor=sign"], "contractive"),
    ):
        with pytest.raises(ConfigError, match=rf"compressor: method .* does not take a {kind}"):
            run(cfg_of(*overrides), tmp_path)
    with pytest.raises(ConfigError, match=r"method\.alpha"):
        run(cfg_of("method=diana", "compressor=natural", "method.alpha=0.99"), tmp_path)


def test_counterexample_cgd_topk_diverges_while_ec_and_ef21_converge(tmp_path):
    common = ["dataset=counterexample", "compressor=topk", "stepsize=constant", "log_every=10"]
    for gamma in (0.001, 0.01, 0.1):
        s = run(
            cfg_of(*common, "method=cgd", f"stepsize.gamma={gamma}", "budget.iters=20000"),
            tmp_path / f"cgd{gamma}",
        )
        assert s["status"] == "diverged"
    for method in ("ec_gd", "ef21"):
        s = run(
            cfg_of(*common, f"method={method}", "stepsize.gamma=0.01", "budget.iters=3000"), tmp_path / method
        )
        assert s["status"] == "completed" and s["final"]["gap"] < 1e-12, method
    s = run(cfg_of(*common, "method=gd", "stepsize.gamma=0.01", "budget.iters=3000"), tmp_path / "gd")
    assert s["final"]["gap"] < 1e-12


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=ef21", "compressor=topk"],
        ["method=ef21", "compressor=topk", "method.estimator.kind=sgd"],
        ["method=lag"],
        ["method=clag", "compressor=topk"],
        ["method=diana", "compressor=randk", "compressor.scaled=true"],
        ["method=diana", "compressor=qsgd", "method.estimator.kind=full"],
        ["method=mem_sgd", "compressor=topk"],
        ["method=ef_signsgd"],
        ["method=double_squeeze", "compressor=topk"],
        ["method=d_psgd", "topology=torus"],
        ["method=dcd_psgd", "compressor=natural", "topology=complete"],
        ["method=deep_squeeze", "compressor=topk", "topology=ring"],
    ],
)
def test_every_new_method_runs_from_the_config(overrides, tmp_path):
    s = run(cfg_of(*overrides, "budget.iters=200", "log_every=50"), tmp_path)
    assert s["status"] == "completed", s
    import pandas as pd

    tr = pd.read_parquet(tmp_path / "trace.parquet")
    assert tr["gap"].iloc[-1] < tr["gap"].iloc[0]
    if "topology" in " ".join(overrides):
        assert tr["consensus"].iloc[-1] > 0 and "spectral_gap" in s["constants"]
    if "method=mem_sgd" in overrides:
        assert np.isfinite(tr["gap_avg"].iloc[-1]) and "a/(mu (b + k))" in s["stepsize_formula"]
    if "method=lag" in overrides:
        assert tr["skipped_frac"].iloc[-1] > 0
    if "method=diana" in overrides:
        assert "omega" in s["stepsize_formula"] and "alpha" in s["constants"]


def test_comparison_experiments_compose():
    """Each method + compressor pairing of the w8a bits comparison is an experiment config."""
    with __import__("hydra").initialize_config_module("efbench.conf", version_base="1.3"):
        from hydra import compose

        for pair, meth, target in (
            ("ec_sgd_topk", "ec_sgd_is", "TopK"),
            ("ef21_topk", "ef21", "TopK"),
            ("clag_topk", "clag", "TopK"),
            ("diana_randk", "diana", "RandK"),
        ):
            cfg = compose("config", overrides=[f"+experiment=compare_w8a_{pair}"])
            assert cfg.method.name == meth and cfg.compressor._target_.endswith(target)
            assert cfg.dataset.name == "w8a" and cfg.compressor.k == 3 and cfg.budget.iters == 20000
        assert compose("config", overrides=["+experiment=compare_w8a_diana_randk"]).compressor.scaled
        assert (
            compose("config", overrides=["+experiment=compare_w8a_ef21_topk"]).method.estimator.kind == "sgd"
        )


def test_theory_stepsizes_of_the_3pc_rule():
    """EF21 (Theorem 1): 1/(L + L_tilde sqrt(beta/theta)); LAG: A = 1, B = zeta;
    CLAG: B = max(beta, zeta); DIANA: 1/((1 + 6 omega/n) L_max), whatever the estimator's
    rule (Rand-1 scaled of d = 4: omega = 3; n = 5, L_max = 2.5)."""
    c = {"L": 2.0, "L_tilde": 3.0, "d": 4, "n": 5, "L_i_max": 2.5}
    theta = 1 - np.sqrt(0.75)  # Top-1 of d = 4: alpha = 1/4
    beta = 0.75 / theta
    ef21 = EF21(name="ef21", compressor=TopK(k=1)).theory(c, (1.0, "1/L"))[0]
    assert ef21 == pytest.approx(1 / (2 + 3 * np.sqrt(beta / theta)), rel=1e-12)
    lag = LAG(name="lag", zeta=4.0).theory(c, (1.0, "1/L"))[0]
    assert lag == pytest.approx(1 / (2 + 3 * 2.0), rel=1e-12)
    clag_small = CLAG(name="clag", zeta=1.0, compressor=TopK(k=1)).theory(c, (1.0, ""))[0]
    clag_big = CLAG(name="clag", zeta=100.0, compressor=TopK(k=1)).theory(c, (1.0, ""))[0]
    assert clag_small == pytest.approx(ef21, rel=1e-12)  # zeta below beta: EF21's rule
    assert clag_big == pytest.approx(1 / (2 + 3 * np.sqrt(100 / theta)), rel=1e-12)
    diana = DIANA(name="diana", estimator=FULL, compressor=RandK(k=1, scaled=True))
    assert diana.theory(c, (0.5, "1/L"))[0] == pytest.approx(1 / ((1 + 6 * 3 / 5) * 2.5), rel=1e-15)
