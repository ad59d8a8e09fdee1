"""The logistic problem: gradients, stability, constants and x*, f* (SPEC.md section 1)."""

import numba
import numpy as np
import pytest
from conftest import small_problem
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from efbench.problems.logistic import LogisticProblem, optimum, solve, top_eigenpair


def fd_grad(f, x, h=1e-6):
    e = np.eye(x.size)
    return np.array([(f(x + h * e[k]) - f(x - h * e[k])) / (2 * h) for k in range(x.size)])


def test_full_gradient_matches_finite_differences(problem, rng):
    x = rng.standard_normal(problem.d)
    np.testing.assert_allclose(problem.grad(x), fd_grad(problem.loss, x), rtol=1e-6, atol=1e-8)


def test_worker_and_sample_gradients_match_finite_differences(problem, rng):
    x = rng.standard_normal(problem.d)
    G = problem.worker_grads(x)
    for i in range(problem.n):
        sub = LogisticProblem(problem.A[i : i + 1], problem.y[i : i + 1], problem.l2)
        np.testing.assert_allclose(G[i], fd_grad(sub.loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(G.mean(axis=0), problem.grad(x), rtol=1e-12, atol=1e-14)
    j = rng.integers(0, problem.m, size=(problem.n, 1))
    g = problem.sample_grads(x, problem.rows(j))
    for i in range(problem.n):
        a, yy = problem.A[i, j[i, 0]], problem.y[i, j[i, 0]]
        fij = lambda x, a=a, yy=yy: np.logaddexp(0, -yy * a @ x) + problem.l2 / 2 * x @ x  # noqa: E731
        np.testing.assert_allclose(g[i], fd_grad(fij, x), rtol=1e-6, atol=1e-8)


def test_minibatch_and_per_worker_points(problem, rng):
    X = rng.standard_normal((problem.n, problem.d))
    idx = rng.integers(0, problem.m, size=(problem.n, 3))
    w = rng.random((problem.n, 3)) + 0.5
    got = problem.sample_grads(X, problem.rows(idx), w)
    for i in range(problem.n):
        want = np.zeros(problem.d)
        for t in range(3):
            a, yy = problem.A[i, idx[i, t]], problem.y[i, idx[i, t]]
            want += w[i, t] * (-yy * expit(-yy * a @ X[i]) * a + problem.l2 * X[i]) / 3
        np.testing.assert_allclose(got[i], want, rtol=1e-12)
    G = problem.worker_grads(X)
    for i in range(problem.n):
        np.testing.assert_allclose(G[i], problem.worker_grads(X[i])[i], rtol=1e-12)


def test_numerically_stable_far_from_zero(problem):
    x = np.full(problem.d, 1e4)
    f, g = problem.loss(x), problem.grad(x)
    assert np.isfinite(f) and np.all(np.isfinite(g))
    assert np.all(np.isfinite(problem.worker_grads(-x)))
    idx = np.zeros((problem.n, 1), dtype=int)
    assert np.all(np.isfinite(problem.sample_grads(x, problem.rows(idx))))


def test_compiled_sparse_passes_stable_far_from_zero():
    p = small_problem(n=3, m=40, d=12, l2=0.01, seed=5, density=0.1)
    assert p.csr is not None
    for x in (np.full(p.d, 1e4), np.full(p.d, -1e4), np.zeros(p.d)):
        f, g = p.loss_grad(x)
        assert f == pytest.approx(p.loss(x), rel=1e-12)  # numpy's logaddexp on the same data
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(p.worker_grads(x)))


def test_sparse_and_dense_full_passes_agree(rng):
    dense = small_problem(n=3, m=40, d=12, l2=0.01, seed=5)
    sparse = small_problem(n=3, m=40, d=12, l2=0.01, seed=5, density=0.1)
    assert dense.csr is None and sparse.csr is not None
    for p in (dense, sparse):
        x, X = rng.standard_normal(p.d), rng.standard_normal((p.n, p.d))
        as_dense = LogisticProblem(p.A, p.y, p.l2)
        as_dense.csr = None  # the dense code path on the same data
        assert p.loss(x) == pytest.approx(as_dense.loss(x), rel=1e-13)
        np.testing.assert_allclose(p.grad(x), as_dense.grad(x), rtol=1e-12, atol=1e-15)
        for point in (x, X):
            np.testing.assert_allclose(
                p.worker_grads(point), as_dense.worker_grads(point), rtol=1e-12, atol=1e-15
            )
        np.testing.assert_allclose(p.hess_vec(x, X[0]), as_dense.hess_vec(x, X[0]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("density", [1.0, 0.1])
@pytest.mark.parametrize("rows", [5, 120])  # fewer rows than EVAL_CHUNKS, and more
def test_full_pass_of_many_points_is_each_point_alone_bit_for_bit(density, rows, rng):
    """A batch's metrics equal each run's alone, bit for bit, whatever the batch size and the
    cores (the row blocks are fixed); and they are f and grad f to rounding."""
    p = small_problem(n=1, m=rows, d=12, l2=0.01, seed=5, density=density)
    assert (p.csr is None) == (density == 1.0)
    X = rng.standard_normal((7, p.d))
    f, G = p.loss_grad_many(X)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        f1, G1 = p.loss_grad_many(X)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(f, f1)
    np.testing.assert_array_equal(G, G1)
    for s in range(X.shape[0]):
        fs, gs = p.loss_grad(X[s])
        assert fs == f[s]
        np.testing.assert_array_equal(gs, G[s])
        z = p.yflat * (p.flat @ X[s])
        assert fs == pytest.approx(np.mean(np.logaddexp(0, -z)) + p.l2 / 2 * X[s] @ X[s], rel=1e-13)
        want = p.flat.T @ (-p.yflat * expit(-z)) / p.yflat.size + p.l2 * X[s]
        np.testing.assert_allclose(gs, want, rtol=1e-12, atol=1e-15)


def test_constants_against_brute_force(problem):
    c = problem.constants()
    A = problem.A.reshape(-1, problem.d)
    L = np.linalg.eigvalsh(A.T @ A).max() / (4 * A.shape[0]) + problem.l2
    assert c["L"] == pytest.approx(L, rel=1e-10)
    L_ij = np.array([[a @ a / 4 + problem.l2 for a in Ai] for Ai in problem.A])
    assert c["L_US"] == pytest.approx(L_ij.max())
    assert c["L_IS"] == pytest.approx(L_ij.mean(axis=1).max())
    L_i = [np.linalg.eigvalsh(Ai.T @ Ai).max() / (4 * problem.m) + problem.l2 for Ai in problem.A]
    assert c["L_i_max"] == pytest.approx(max(L_i), rel=1e-10)
    assert c["mu"] == problem.l2
    # smoothness really bounds the Hessian: largest eigenvalue at x = 0 is L (s(1-s) = 1/4)
    H = np.column_stack([problem.hess_vec(np.zeros(problem.d), e) for e in np.eye(problem.d)])
    assert np.linalg.eigvalsh(H).max() == pytest.approx(L, rel=1e-10)


def test_lambda_max_lanczos_branch_agrees_with_dense(rng):
    A = rng.standard_normal((1600, 1700))
    want = np.linalg.svd(A, compute_uv=False)[0] ** 2
    assert top_eigenpair(A)[0] == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("l2", [1e-2, 1e-4])
def test_fstar_agrees_with_sklearn(l2):
    problem = small_problem(n=5, m=40, d=10, l2=l2, seed=3)
    x = solve(problem)
    assert np.linalg.norm(problem.grad(x)) <= 1e-10 * np.linalg.norm(problem.grad(np.zeros(10)))
    N = problem.n * problem.m
    clf = LogisticRegression(C=1.0 / (l2 * N), fit_intercept=False, tol=1e-14, max_iter=10000)
    clf.fit(problem.A.reshape(N, -1), problem.y.reshape(-1))
    f_sk = problem.loss(clf.coef_.ravel())
    assert problem.loss(x) == pytest.approx(f_sk, rel=1e-8)
    assert problem.loss(x) <= f_sk + 1e-15


def test_newton_cg_branch_for_large_d():
    problem = small_problem(n=3, m=400, d=2100, l2=1e-3, seed=1, density=0.01)
    x = solve(problem)
    g0 = np.linalg.norm(problem.grad(np.zeros(problem.d)))
    assert np.linalg.norm(problem.grad(x)) <= 1e-10 * g0


def test_optimum_is_cached(tmp_path, problem):
    x1, f1 = optimum(problem, tmp_path)
    files = list(tmp_path.glob("xstar-*.npz"))
    assert len(files) == 1
    x2, f2 = optimum(problem, tmp_path)
    np.testing.assert_array_equal(x1, x2)
    other = LogisticProblem(problem.A, problem.y, problem.l2 * 2)
    optimum(other, tmp_path)
    assert len(list(tmp_path.glob("xstar-*.npz"))) == 2


def test_worker_grads_of_some_workers(rng):
    """The gradients of a subset of workers (L-SVRG refreshes) are those rows of the full
    result, on the dense, sparse and quadratic problems, at one point or one per worker."""
    from efbench.problems.logistic import QuadraticProblem

    for p in (
        small_problem(n=5, m=30, d=12, l2=0.01, seed=5),
        small_problem(n=5, m=30, d=12, l2=0.01, seed=5, density=0.1),
        QuadraticProblem.counterexample(),
    ):
        x, X = rng.standard_normal(p.d), rng.standard_normal((p.n, p.d))
        idx = np.array([p.n - 1, 0])
        np.testing.assert_allclose(p.worker_grads(x, idx), p.worker_grads(x)[idx], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(
            p.worker_grads(X[idx], idx), p.worker_grads(X)[idx], rtol=1e-13, atol=1e-15
        )


def _every_problem() -> list:
    """The three problem classes, the logistic one dense, with CSR and in CSR only."""
    from efbench.problems import logistic
    from efbench.problems.logistic import QuadraticProblem
    from efbench.problems.nonconvex import NonconvexLogisticProblem

    p = small_problem(n=3, m=10, d=6, l2=0.01, seed=2)
    sparse = small_problem(n=3, m=10, d=6, l2=0.01, seed=2, density=0.2)
    keep = logistic.DENSE_COPY_BYTES
    logistic.DENSE_COPY_BYTES = 0
    try:
        csr_only = LogisticProblem(sparse.csr, sparse.y, 0.01)
    finally:
        logistic.DENSE_COPY_BYTES = keep
    assert not csr_only.has_dense
    return [
        p,
        sparse,
        csr_only,
        NonconvexLogisticProblem(p.A, p.y, 0.0, lam=0.1),
        NonconvexLogisticProblem(sparse.A, sparse.y, 0.01, lam=0.3),
        QuadraticProblem.counterexample(),
    ]


def test_every_problem_satisfies_the_protocol_as_a_sibling():
    """LogisticProblem, NonconvexLogisticProblem and QuadraticProblem each satisfy
    efbench.problems.base.Problem, none a subclass of another; the shared row storage alone
    does not."""
    from efbench.problems.base import Problem
    from efbench.problems.logistic import QuadraticProblem, RowProblem
    from efbench.problems.nonconvex import NonconvexLogisticProblem

    for p in _every_problem():
        assert isinstance(p, Problem), type(p).__name__
    assert not isinstance(RowProblem(np.ones((1, 1, 1)), np.ones((1, 1)), 1.0), Problem)
    classes = (LogisticProblem, NonconvexLogisticProblem, QuadraticProblem)
    for a in classes:
        for b in classes:
            assert a is b or not issubclass(a, b), (a.__name__, b.__name__)


def test_every_problem_smoothness_agrees_with_its_constants():
    """L_US = max_ij L_ij (sample_smoothness) and L_i_max = max_i (worker_smoothness + the
    regularizers' curvature): the quadratic's sample and worker smoothness are its own
    (2 ||a_i||^2 + l2), not the logistic loss's ||a_i||^2 / 4 + l2."""
    for p in _every_problem():
        c = p.constants()
        reg = c["l2"] + 2 * c.get("lam_nc", 0.0)
        assert c["L_US"] == pytest.approx(p.sample_smoothness().max(), rel=1e-12), type(p).__name__
        assert c["L_i_max"] == pytest.approx((p.worker_smoothness + reg).max(), rel=1e-12), type(p).__name__
        assert p.sample_smoothness().shape == (p.n, p.m)


def test_capabilities_decide_the_compiled_step_and_fednl():
    """The compiled EC step runs on the plain logistic problem only (others: '<class> has no
    compiled step'); FedNL refuses the quadratic naming dataset and the nonconvex problem
    naming problem.regularizer."""
    from efbench.core.compressors import TopK
    from efbench.errors import ConfigError
    from efbench.methods.base import ErrorCompensated, FusedSpec
    from efbench.methods.fednl import FedNL

    method = ErrorCompensated(name="e", estimator={"kind": "sgd", "batch": 1}, compressor=TopK(k=1))
    rng = np.random.default_rng(0)
    for p in _every_problem():
        name = type(p).__name__
        fused = method.fuse(p)
        if name == "LogisticProblem":
            assert isinstance(fused, FusedSpec)
            FedNL(name="f").init(p, np.zeros(p.d), rng)
            continue
        assert fused == f"the {name} has no compiled step"
        with pytest.raises(ConfigError) as err:
            FedNL(name="f").init(p, np.zeros(p.d), rng)
        assert err.value.key == {"QuadraticProblem": "dataset"}.get(name, "problem.regularizer")
        assert f"FedNL's Hessians are the logistic loss's, not a {name}'s" in str(err.value)
