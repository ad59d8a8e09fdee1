"""FedNL (Safaryan, Islamov, Qian & Richtarik, ICML 2022): the local Hessians, the Newton
identity, local convergence, Hessian learning, the matrix compressors' delta, exact bits,
the prescribed unit step and bad settings."""

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem
from test_cli import cfg_of, efbench

from efbench.config import schema
from efbench.core.compressors import sparse_bits
from efbench.errors import ConfigError
from efbench.methods.fednl import FedNL, worker_hessians
from efbench.problems.logistic import QuadraticProblem, solve
from efbench.run.runner import run


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=4, m=30, d=8, l2=0.05, seed=0)
    return p, solve(p, tol=1e-14)


def trajectory(method, p, steps, x0=None):
    """x^0..x^steps, the rounds and hess_err after each round (unit steps, as prescribed)."""
    rng = np.random.default_rng(0)
    state = method.init(p, np.zeros(p.d) if x0 is None else x0, rng)
    xs, rounds, errs = [state.x.copy()], [], []
    for _ in range(steps):
        state, rnd = method.step(p, state, 1.0, rng)
        xs.append(state.x.copy())
        rounds.append(rnd)
        errs.append(method.measure(p, state, 0.0)["hess_err"])
    return np.array(xs), rounds, np.array(errs), state


def full_hessian(p, x):
    """grad^2 f(x) from the problem's own Hessian-vector products, column by column."""
    return np.column_stack([p.hess_vec(x, e) for e in np.eye(p.d)])


@pytest.mark.parametrize("density", [1.0, 0.2])  # dense rows and the CSR path
def test_hessians_are_finite_differences_of_worker_gradients(density):
    p = small_problem(n=3, m=20, d=6, l2=0.05, seed=4, density=density)
    assert (p.csr is None) == (density == 1.0)
    x = np.random.default_rng(1).normal(size=p.d)
    H, h = worker_hessians(p, x), 1e-6
    for j, e in enumerate(np.eye(p.d)):
        fd = (p.worker_grads(x + h * e) - p.worker_grads(x - h * e)) / (2 * h)
        np.testing.assert_allclose(H[:, :, j], fd, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(H, H.transpose(0, 2, 1))
    np.testing.assert_allclose(H.mean(axis=0), full_hessian(p, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alpha", [1.0, None])  # identity: delta = 1, so 1 - sqrt(1 - delta) = 1
def test_identity_compressor_is_newton_with_the_previous_rounds_hessian(setup, alpha):
    """Algorithm 1 steps with H^k, learned from grad^2 f_i(x^{k-1}): uncompressed, FedNL is
    x^{k+1} = x^k - grad^2 f(x^{k-1})^{-1} grad f(x^k), x^{-1} = x^0 (a Newton step first)."""
    p, _ = setup
    x0 = np.full(p.d, 0.3)
    xs = trajectory(FedNL(name="f", hessian_compressor="identity", alpha=alpha), p, 8, x0)[0]
    ref, prev = [x0], x0
    for _ in range(8):
        x = ref[-1]
        ref.append(x - np.linalg.solve(full_hessian(p, prev), p.grad(x)))
        prev = x
    np.testing.assert_allclose(xs, np.array(ref), rtol=1e-9, atol=1e-13)
    newton = x0 - np.linalg.solve(full_hessian(p, x0), p.grad(x0))
    np.testing.assert_allclose(xs[1], newton, rtol=1e-12)
    x1 = xs[1]  # the second step is not a plain Newton step: it uses grad^2 f(x^0)
    assert not np.allclose(xs[2], x1 - np.linalg.solve(full_hessian(p, x1), p.grad(x1)), rtol=1e-6)


def test_topk_converges_linearly_with_the_theory_alpha(setup):
    """Top-K (K = d of the d(d+1)/2 entries), alpha = 1 - sqrt(1 - K/d^2), Option 1 and 2:
    ||x^k - x*|| falls by a factor >= 5 a round to 1e-10 within 15 rounds (local linear rate,
    independent of the condition number: Theorem 3.6 of the paper)."""
    p, xs = setup
    for option in (1, 2):
        m = FedNL(name="f", hessian_compressor="topk", alpha=None, option=option)
        x, _, errs, state = trajectory(m, p, 30)
        assert state.alpha == pytest.approx(1 - np.sqrt(1 - 8 / 64))
        dist = np.linalg.norm(x - xs, axis=1)
        assert dist[15] < 1e-10, (option, dist)
        head = dist[: np.argmax(dist < 1e-12)]
        assert np.all(head[1:] < head[:-1] / 5), (option, head)
        assert np.all(np.diff(errs) < 0) and errs[-1] < errs[0] / 5  # H_i^k is being learned


def test_alpha_one_converges_superlinearly_and_learns_the_hessians(setup):
    """alpha = 1 (the paper's other choice for contractive compressors): the contraction factor
    ||x^{k+1} - x*|| / ||x^k - x*|| goes to 0 (superlinear: 5x below its round-1 value by
    rounds 5-6, where alpha = 1 - sqrt(1 - delta) keeps it near its round-1 value), 1e-12
    within 8 rounds, and hess_err = (1/n) sum_i ||H_i^k - grad^2 f_i(x^k)||_F^2 goes to 0."""
    p, xs = setup
    for kind in ("topk", "rankr"):
        x, _, errs, _ = trajectory(FedNL(name="f", hessian_compressor=kind, alpha=1.0), p, 20)
        dist = np.linalg.norm(x - xs, axis=1)
        assert dist[8] < 1e-12, (kind, dist)
        ratio = dist[1:8] / dist[:7]
        assert ratio[5:7].max() < ratio[1] / 5, (kind, ratio)
        assert errs[0] > 1e-6 and errs[-1] < 1e-25, (kind, errs)
        x = trajectory(FedNL(name="f", hessian_compressor=kind, alpha=None), p, 8)[0]
        linear = np.linalg.norm(x[1:] - xs, axis=1) / np.linalg.norm(x[:-1] - xs, axis=1)
        assert linear[5:7].min() > linear[1] / 2, (kind, linear)


def test_option_1_projects_and_option_2_shifts_the_learned_hessian(setup):
    """One server step by hand: Option 1 clips the eigenvalues of H^k at mu = l2; Option 2
    adds l^k = (1/n) sum_i ||H_i^k - grad^2 f_i(x^k)||_F to them."""
    p, _ = setup
    rng = np.random.default_rng(0)
    x0 = np.full(p.d, 0.1)
    Q = np.linalg.qr(rng.normal(size=(p.d, p.d)))[0]
    lam = np.linspace(-1.0, 2.0, p.d)  # some below mu = 0.05
    H = Q @ np.diag(lam) @ Q.T
    g = p.grad(x0)
    for option in (1, 2):
        m = FedNL(name="f", hessian_compressor="identity", option=option)
        state = m.init(p, x0, rng)  # H_i^0 = grad^2 f_i(x0)
        state.first = False
        state.H = H.copy()
        state.H_i += 0.01 * np.eye(p.d)  # so l_i = ||0.01 I||_F = 0.01 sqrt(d) for every i
        state, _ = m.step(p, state, 1.0, rng)
        eff = np.maximum(lam, p.l2) if option == 1 else lam + 0.01 * np.sqrt(p.d)
        np.testing.assert_allclose(state.x, x0 - Q @ ((Q.T @ g) / eff), rtol=1e-10)


def test_matrix_compressor_deltas():
    """||C(M) - M||_F^2 <= (1 - delta) ||M||_F^2 on symmetric M: Top-K over the upper triangle
    with delta = K/d^2 (attained; the vector constant 2K/(d(d+1)) is not a valid bound), Rank-R
    with delta = R/d (the best rank-R approximation)."""
    d, rng = 6, np.random.default_rng(3)
    for kind, param, delta in (("topk", 5, 5 / 36), ("rankr", 2, 2 / 6)):
        m = FedNL(name="f", hessian_compressor=kind, hessian_k=param, rank=param)
        assert m.matrix_delta(d) == pytest.approx(delta)
        M = rng.normal(size=(200, d, d))
        M = M + M.transpose(0, 2, 1)
        S = m.compress(M, rng)[0]
        np.testing.assert_array_equal(S, S.transpose(0, 2, 1))
        share = np.linalg.norm(S - M, axis=(1, 2)) ** 2 / np.linalg.norm(M, axis=(1, 2)) ** 2
        assert share.max() <= 1 - delta + 1e-12
    # Rank-R keeps the R eigenpairs of largest |lambda|
    lam = np.array([3.0, -5.0, 1.0, 0.5, -0.2, 4.0])
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    S = FedNL(name="f", hessian_compressor="rankr", rank=2).compress((Q * lam) @ Q.T[None], rng)[0][0]
    np.testing.assert_allclose(S, (Q[:, [1, 5]] * lam[[1, 5]]) @ Q[:, [1, 5]].T, atol=1e-12)
    # the tight case of Top-K: K diagonal entries kept, every other entry just as large
    K = 3
    M = np.ones((d, d)) - 1e-9 * (1 - np.eye(d))  # the diagonal wins the ties
    S = FedNL(name="f", hessian_compressor="topk", hessian_k=K).compress(M[None], rng)[0][0]
    np.testing.assert_array_equal(S, np.diag([1.0] * K + [0.0] * (d - K)))
    share = np.linalg.norm(S - M) ** 2 / np.linalg.norm(M) ** 2
    assert share == pytest.approx(1 - K / d**2, rel=1e-8)
    assert share > 1 - 2 * K / (d * (d + 1))


def test_exact_bits_of_hand_computed_rounds(setup):
    """d = 8, F = 32, N = d(d+1)/2 = 36 upper-triangle positions, index width ceil(log2 36) = 6.
    Round 0: gradient + dense upper triangle of H_i^0, 32 (8 + 36) = 1408. Then gradient 256 +
    Top-8: 8 x 32 + min(8 x 6, 36) = 292 (sparse_bits), + 32 for l_i under Option 2;
    Rank-1: 32 x (8 + 1) = 288; identity: 32 x 36 = 1152; values only (index_bits=false):
    8 x 32 = 256."""
    p, _ = setup
    assert int(sparse_bits(np.array([8]), 36, 32, True)[0]) == 292
    cases = [
        ({"hessian_compressor": "topk", "option": 1}, True, 256 + 292, 8 + 8),
        ({"hessian_compressor": "topk", "option": 2}, True, 256 + 292 + 32, 8 + 8 + 1),
        ({"hessian_compressor": "topk", "option": 1}, False, 256 + 256, 8 + 8),
        ({"hessian_compressor": "rankr", "rank": 1}, True, 256 + 288, 8 + 9),
        ({"hessian_compressor": "identity"}, True, 256 + 1152, 8 + 36),
    ]
    for kw, index_bits, per_round, floats in cases:
        m = FedNL(name="f", **kw)
        m.compressor.index_bits = index_bits
        _, rounds, _, _ = trajectory(m, p, 3)
        assert [r.bits_up.tolist() for r in rounds] == [[1408] * 4, [per_round] * 4, [per_round] * 4], kw
        assert rounds[1].nnz.tolist() == [floats] * 4 and rounds[0].nnz.tolist() == [8 + 36] * 4
        assert all(r.bits_down == 32 * 8 and r.calls == p.m for r in rounds)


def test_topk_message_is_the_k_largest_upper_triangle_entries(setup):
    """Round 1 by hand: S_i = the K largest |entries| of the upper triangle of
    D_i = grad^2 f_i(x^1) - H_i^1 (H_i^1 = grad^2 f_i(x^0)), mirrored; H_i^2 = H_i^1 + alpha S_i."""
    p, _ = setup
    m = FedNL(name="f", hessian_compressor="topk", hessian_k=5, alpha=0.5)
    rng = np.random.default_rng(0)
    state = m.init(p, np.zeros(p.d), rng)
    state, _ = m.step(p, state, 1.0, rng)
    H1 = state.H_i.copy()
    D = worker_hessians(p, state.x) - H1
    state, _ = m.step(p, state, 1.0, rng)
    iu = np.triu_indices(p.d)
    for i in range(p.n):
        v = D[i][iu]
        keep = np.argsort(-np.abs(v), kind="stable")[:5]
        S = np.zeros((p.d, p.d))
        S[iu[0][keep], iu[1][keep]] = v[keep]
        S[iu[1][keep], iu[0][keep]] = v[keep]
        np.testing.assert_array_equal(state.H_i[i], H1[i] + 0.5 * S)
    np.testing.assert_allclose(state.H, state.H_i.mean(axis=0), rtol=1e-13, atol=1e-16)


def test_run_prescribes_unit_newton_steps_and_writes_exact_bits(tmp_path):
    """Through the runner (breast_cancer, d = 30, N = 465, Rank-1, Option 1): gamma = 1
    ("Newton step (1)") whatever the stepsize group says, hess_err in the trace, the uplink
    bits 32 (30 + 465) + (k - 1) 32 (30 + 31) after k rounds, and a gap at rounding level."""
    cfg = cfg_of(
        "method=fednl", "budget.iters=45", "stepsize=constant", "stepsize.gamma=0.3", "compressor=topk"
    )
    s = run(cfg, tmp_path)
    assert s["status"] == "completed" and s["gamma0"] == 1.0 and s["stepsize_formula"] == "Newton step (1)"
    assert s["constants"]["alpha"] == 1.0 and s["constants"]["delta"] == pytest.approx(1 / 30)
    tr = pd.read_parquet(tmp_path / "trace.parquet")
    last = tr.iloc[-1]
    assert last["step"] == 45 and last["bits_up_mean"] == 32 * (30 + 465) + 44 * 32 * (30 + 31)
    assert last["bits_down"] == 45 * 32 * 30 and (tr["gamma"] == 1.0).all()
    assert last["rel_gap"] < 1e-12 and last["hess_err"] < 1e-6 * tr["hess_err"].iloc[1]


def test_bad_settings_name_their_key(setup):
    p, _ = setup
    for kw, key in (
        ({"hessian_compressor": "svd"}, "method.hessian_compressor"),
        ({"option": 3}, "method.option"),
        ({"option": True}, "method.option"),
        ({"hessian_k": 0}, "method.hessian_k"),
        ({"rank": 1.5}, "method.rank"),
        ({"alpha": 1.5}, "method.alpha"),
        ({"alpha": 0.0}, "method.alpha"),
        ({"alpha": "1"}, "method.alpha"),
    ):
        with pytest.raises(ConfigError) as err:
            FedNL(name="f", **kw)
        assert err.value.key == key, kw
    rng = np.random.default_rng(0)
    for kw, key in (
        ({"hessian_compressor": "topk", "hessian_k": 37}, "method.hessian_k"),  # N = 36
        ({"hessian_compressor": "rankr", "rank": 9}, "method.rank"),
    ):
        with pytest.raises(ConfigError) as err:
            FedNL(name="f", **kw).init(p, np.zeros(p.d), rng)
        assert err.value.key == key
    with pytest.raises(ConfigError) as err:
        FedNL(name="f").init(QuadraticProblem.counterexample(), np.zeros(3), rng)
    assert err.value.key == "dataset"
    with pytest.raises(ConfigError) as err:
        FedNL(name="f").init(small_problem(l2=0.0), np.zeros(8), rng)
    assert err.value.key == "problem.l2"
    for override, key in (
        ("method.option=3", "method.option"),
        ("method.hessian_compressor=qr", "method.hessian_compressor"),
    ):
        with pytest.raises(ConfigError) as err:
            schema.validate(cfg_of("method=fednl", override))
        assert err.value.key == key


def test_cli_bad_setting_is_one_line(tmp_path):
    r = efbench("method=fednl", "method.hessian_compressor=topk", "method.hessian_k=1000", cwd=tmp_path)
    text = r.stdout + r.stderr
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert r.returncode == 2 and "Traceback" not in text, text
    assert len(lines) == 1 and "efbench: error: method.hessian_k: K=1000" in lines[0], lines


@pytest.mark.parametrize("rank", [1, 3])
def test_lanczos_top_eigenpairs_are_the_full_decompositions(rank, monkeypatch):
    """For d >= LANCZOS_MIN_D the rank-R compressor's eigenpairs come from Lanczos; its
    rank-R matrices equal those of the full eigendecomposition to rounding, a zero difference
    gives zero, and a FedNL run on such data follows the same iterates."""
    from efbench.methods import fednl

    rng = np.random.default_rng(rank)
    n, d = 4, 80
    B = rng.standard_normal((n, d, 5))
    D = B @ B.transpose(0, 2, 1) - 3.0 * (B[:, :, :1] @ B[:, :, :1].transpose(0, 2, 1))  # mixed signs
    D[2] = 0.0

    def rank_r(lam, U):
        return np.matmul(U * lam[:, None, :], U.transpose(0, 2, 1))

    fast = rank_r(*fednl.top_eigenpairs(D, rank))
    monkeypatch.setattr(fednl, "LANCZOS_MIN_D", 10**9)
    full = rank_r(*fednl.top_eigenpairs(D, rank))
    scale = np.abs(D).max()
    np.testing.assert_allclose(fast, full, rtol=0, atol=1e-11 * scale)
    assert not fast[2].any()

    p = small_problem(n=3, m=120, d=70, l2=0.05, seed=5)
    method = FedNL(name="fednl", hessian_compressor="rankr", rank=1, alpha=1.0)
    slow_xs = trajectory(method, p, 6)[0]
    monkeypatch.setattr(fednl, "LANCZOS_MIN_D", 64)
    fast_xs = trajectory(FedNL(name="fednl", hessian_compressor="rankr", rank=1, alpha=1.0), p, 6)[0]
    np.testing.assert_allclose(fast_xs, slow_xs, rtol=0, atol=1e-10)
