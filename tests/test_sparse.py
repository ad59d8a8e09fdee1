"""Sparse data kept sparse end to end: a problem holding its rows in CSR only (rcv1,
real-sim) computes what the dense problem on the same rows computes, never builds the dense
(n, m, d) array, and runs from the command line on both engines."""

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_cli import cfg_of

from efbench.core.stepsize import Schedule
from efbench.engine.loop import Limits, RunSpec, execute
from efbench.errors import ConfigError
from efbench.methods.base import ErrorCompensated
from efbench.methods.fednl import FedNL, worker_hessians
from efbench.problems import logistic as problems
from efbench.problems.datasets import MAX_DENSE_ENV, load_libsvm, partition
from efbench.problems.logistic import LogisticProblem, solve
from efbench.problems.nonconvex import NonconvexLogisticProblem, optimum_without_mu
from efbench.run.runner import run

RCV1_FEATURES = 47236


def write_rcv1_shaped(path: Path, rows: int, seed: int = 0) -> Path:
    """A binary LIBSVM file shaped like rcv1: 47236 features, 40-110 nonzeros a row (rcv1
    has 74 on average), unit-norm rows of positive values, labels from a random linear rule."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(RCV1_FEATURES)
    lines = []
    for r in range(rows):
        idx = np.sort(rng.choice(RCV1_FEATURES, int(rng.integers(40, 110)), replace=False))
        if r == 0:
            idx[-1] = RCV1_FEATURES - 1  # the file's width is its largest index
        v = rng.random(idx.size)
        v /= np.linalg.norm(v)
        label = 1 if v @ w[idx] > 0 else -1
        lines.append(" ".join([str(label), *(f"{j + 1}:{x:.6g}" for j, x in zip(idx, v, strict=True))]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def pair(monkeypatch, n=4, m=25, d=300, density=0.03, l2=1e-3, seed=2, cls=LogisticProblem, **kw):
    """The same rows as a dense problem and as a problem kept in CSR only, given in CSR with
    stored zeros and unsorted indices (as a LIBSVM file's "j:0" entries and order may give)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n * m, d, density=density, random_state=seed, format="csr")
    X.data = rng.standard_normal(X.nnz)
    X.data[::7] = 0.0
    for r in range(n * m):
        q = slice(X.indptr[r], X.indptr[r + 1])
        X.indices[q], X.data[q] = X.indices[q][::-1].copy(), X.data[q][::-1].copy()
    X.has_sorted_indices = False
    y = np.where(rng.random((n, m)) < 0.5, -1.0, 1.0)
    dense = cls(X.toarray().reshape(n, m, d), y, l2, **kw)
    with monkeypatch.context() as mp:
        mp.setattr(problems, "DENSE_COPY_BYTES", 0)
        only = cls(X, y, l2, **kw)
    return dense, only


def test_sparse_only_problem_computes_what_the_dense_one_does(monkeypatch):
    """Loss, gradients (full, per worker, per sample, at one point or one per worker), rows,
    constants, Hessian products and x*: equal to rounding; sampled gradients bit for bit."""
    dense, p = pair(monkeypatch)
    assert dense.has_dense and p.csr is not None and not p.has_dense
    assert p.flat.shape == (0, p.d) and not hasattr(p, "A")
    with pytest.raises(AttributeError, match=r"LogisticProblem\.A: the rows are kept in CSR only"):
        p.A  # noqa: B018
    rng = np.random.default_rng(0)
    x, X, S = rng.standard_normal(p.d), rng.standard_normal((p.n, p.d)), rng.standard_normal((3, p.d))
    close = {"rtol": 1e-12, "atol": 1e-15}
    assert p.loss(x) == pytest.approx(dense.loss(x), rel=1e-13)
    for a, b in zip(p.loss_grad_many(S), dense.loss_grad_many(S), strict=True):
        np.testing.assert_allclose(a, b, **close)
    for point in (x, X):
        np.testing.assert_allclose(p.worker_grads(point), dense.worker_grads(point), **close)
    some = np.array([3, 1])
    np.testing.assert_allclose(p.worker_grads(X[some], some), dense.worker_grads(X[some], some), **close)
    rows1, rows3 = p.rows(rng.integers(0, p.m, (p.n, 1))), p.rows(rng.integers(0, p.m, (p.n, 3)))
    w1, w3 = rng.random((p.n, 1)) + 0.5, rng.random((p.n, 3)) + 0.5
    np.testing.assert_array_equal(p.gather(rows3), dense.gather(rows3))
    for point in (x, X):
        for w in (None, w1):
            np.testing.assert_array_equal(
                p.sample_grads(point, rows1, w), dense.sample_grads(point, rows1, w)
            )
        np.testing.assert_allclose(
            p.sample_grads(point, rows3, w3), dense.sample_grads(point, rows3, w3), **close
        )
    np.testing.assert_allclose(p.row_norm2, dense.row_norm2, **close)
    cp, cd = p.constants(), dense.constants()
    assert cp.keys() == cd.keys()
    for key in cp:
        assert cp[key] == pytest.approx(cd[key], rel=1e-10), key
    np.testing.assert_allclose(p.hess_vec(x, X[0]), dense.hess_vec(x, X[0]), **close)
    np.testing.assert_allclose(p.data_hessian(x), dense.data_hessian(x), **close)
    np.testing.assert_allclose(p.margins(x), dense.margins(x), **close)
    assert p.data_fingerprint == dense.data_fingerprint  # one cache entry whatever is kept
    np.testing.assert_allclose(solve(p), solve(dense), rtol=1e-9, atol=1e-12)


def test_nonconvex_l2_zero_and_fednl_on_sparse_only(monkeypatch):
    """The problems built on the logistic one read CSR too: the nonconvex regularizer's
    values and gradients, the l2 = 0 optimum, FedNL's per-worker Hessians."""
    dense, p = pair(monkeypatch, cls=NonconvexLogisticProblem, lam=0.1)
    x = np.random.default_rng(1).standard_normal(p.d)
    assert not p.has_dense and p.loss(x) == pytest.approx(dense.loss(x), rel=1e-13)
    np.testing.assert_allclose(p.grad(x), dense.grad(x), rtol=1e-12, atol=1e-15)
    dense, p = pair(monkeypatch, n=3, m=30, d=6, density=0.4, l2=0.0)
    xs, fs, _ = optimum_without_mu(p, None)
    xd, fd, _ = optimum_without_mu(dense, None)
    assert fs == pytest.approx(fd, rel=1e-10)
    np.testing.assert_allclose(xs, xd, rtol=1e-6, atol=1e-9)
    p.l2 = dense.l2 = 0.05
    np.testing.assert_allclose(
        worker_hessians(p, x[:6]), worker_hessians(dense, x[:6]), rtol=1e-12, atol=1e-15
    )


def test_fednl_refuses_hessians_beyond_the_memory_limit(monkeypatch):
    """rcv1's d: four (n, d, d) arrays are terabytes; refused naming method before any is built."""
    X = sp.csr_matrix(([1.0, 1.0], ([0, 1], [0, RCV1_FEATURES - 1])), shape=(2, RCV1_FEATURES))
    p = LogisticProblem(X, np.array([[1.0], [-1.0]]), 0.1)
    with pytest.raises(
        ConfigError, match=r"^method: fednl keeps 4 dense d x d matrices .*d = 47236\): 143 GB"
    ):
        FedNL(name="fednl").init(p, np.zeros(p.d), np.random.default_rng(0))


ESTIMATORS = (
    ({"kind": "sgd", "sampling": "uniform", "batch": 1}, "HardThreshold", {"lam": 0.02}),
    ({"kind": "sgd", "sampling": "importance", "batch": 1}, "TopK", {"k": 3}),
    ({"kind": "lsvrg", "sampling": "uniform", "batch": 1, "p": 0.2, "coin": "per_worker"}, "TopK", {"k": 3}),
)


@pytest.mark.parametrize(("est", "comp", "params"), ESTIMATORS)
def test_engines_agree_bit_for_bit_on_sparse_only(monkeypatch, est, comp, params):
    """The compiled step reads the CSR arrays (its dense rows an empty placeholder) and the
    numpy engine adds c a_r on a row's nonzeros: the two engines agree bit for bit, and with
    the dense problem's trace, bit for bit under uniform sampling (importance sampling's
    probabilities come from row norms summed over the nonzeros: to rounding)."""
    from hydra.utils import instantiate

    dense, p = pair(monkeypatch, n=5, m=20, d=200, l2=1e-3)
    traces = []
    for problem in (dense, p):
        for engine in ("numpy", "numba"):
            compressor = instantiate({"_target_": f"efbench.core.compressors.{comp}", **params})
            method = ErrorCompensated(name="e", estimator=est, compressor=compressor)
            spec = RunSpec(method, Schedule(0.5, "c"), np.zeros(problem.d), 3)
            out = execute(
                problem, 0.0, np.zeros(problem.d), [spec], Limits(80, np.inf, np.inf, 1, 1e6), engine
            )[0]
            assert out.engine == engine
            traces.append(pd.DataFrame(out.rows).drop(columns="time"))
    pd.testing.assert_frame_equal(traces[1], traces[0], check_exact=True)
    pd.testing.assert_frame_equal(traces[3], traces[2], check_exact=True)
    exact = est["sampling"] == "uniform"
    pd.testing.assert_frame_equal(traces[2], traces[0], check_exact=exact, rtol=1e-10, atol=0.0)


def test_dense_rows_are_kept_only_where_they_fit(monkeypatch):
    """A small sparse split keeps a dense copy (plain gathers, the exact dense solvers), unless
    that copy is over the memory limit ($EFBENCH_MAX_DENSE_GB)."""
    X = sp.random(40, 50, density=0.1, random_state=0, format="csr")
    y = np.where(np.arange(40) % 2, 1.0, -1.0).reshape(4, 10)
    assert LogisticProblem(X, y, 0.1).has_dense
    monkeypatch.setenv(MAX_DENSE_ENV, "1e-6")  # 1 kB: the 16 kB dense rows are over it
    assert not LogisticProblem(X, y, 0.1).has_dense
    monkeypatch.delenv(MAX_DENSE_ENV)


def test_rcv1_shaped_split_never_builds_dense_rows(tmp_path):
    """800 rows x 47236 features, 302 MB as dense rows: the split is CSR, and the problem,
    its constants, x*'s Newton-CG solve, full passes and sampled gradients together
    allocate less than a tenth of that (traced: 13 MB measured)."""
    write_rcv1_shaped(tmp_path / "mirror" / "rcv1like", 800)
    X, y = load_libsvm("rcv1like", tmp_path / "c", str(tmp_path / "mirror"))
    A, Y = partition(X, y, 4, 200)
    assert sp.issparse(A) and A.shape == (800, RCV1_FEATURES)
    tracemalloc.start()
    try:
        p = LogisticProblem(A, Y, 1e-4)
        p.constants()
        x = solve(p, tol=1e-6)
        p.loss_grad_many(np.stack([x, 2 * x]))
        p.worker_grads(x)
        rows = p.rows(np.zeros((p.n, 2), dtype=int))
        p.sample_grads(x, rows[:, :1])
        p.sample_grads(x, rows, np.ones((p.n, 2)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not p.has_dense and not hasattr(p, "A")
    assert np.linalg.norm(p.grad(x)) <= 1e-6 * np.linalg.norm(p.grad(np.zeros(p.d)))
    assert peak < 800 * RCV1_FEATURES * 8 / 10, peak


def test_cli_on_an_rcv1_shaped_file(tmp_path):
    """The command line on 1600 rcv1-shaped rows (605 MB as dense rows): EC-SGD on the
    compiled step in a process whose peak RSS stays below that size (330 MB measured, as
    much as a run on the embedded default data); EF21 + TopK and DIANA + scaled RandK on the numpy engine,
    allocating less than an eighth of it (traced: 44 MB measured, setup included)."""
    write_rcv1_shaped(tmp_path / "mirror" / "rcv1like", 1600)
    dense_bytes = 1600 * RCV1_FEATURES * 8
    common = [
        "dataset=a9a",
        "dataset.name=rcv1like",
        "dataset.libsvm_name=rcv1like",
        "dataset.n_workers=20",
        "dataset.m=80",
        f"data.mirror={tmp_path / 'mirror'}",
        f"data.dir={tmp_path / 'data'}",
        "progress=false",
    ]
    exe = Path(sys.executable).with_name("efbench")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "efbench"]
    peak_rss = (
        "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    args = [*common, "method=ec_sgd_us", "budget.iters=2000", f"hydra.run.dir={tmp_path / 'sgd'}"]
    proc = subprocess.run(
        [sys.executable, "-c", peak_rss, *cmd, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss = 1024 * int(proc.stdout.split()[-1])  # kilobytes on Linux
    summary = json.loads((tmp_path / "sgd" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["engine"] == "numba" and summary["steps"] == 2000
    assert summary["constants"]["d"] == RCV1_FEATURES
    assert rss < dense_bytes, rss
    for method in (
        ["method=ef21", "compressor=topk"],
        ["method=diana", "compressor=randk", "compressor.scaled=true"],
    ):
        cfg = cfg_of(*common, *method, "budget.iters=100")
        tracemalloc.start()
        try:
            s = run(cfg, tmp_path / method[0])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert s["status"] == "completed" and s["engine"] == "numpy" and s["steps"] == 100
        assert peak < dense_bytes / 8, (method, peak)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_wide_metrics_do_not_depend_on_the_batch(monkeypatch, engine):
    """grad_norm2 and dist2 of a run are the same bits alone and in a batch of three, also
    for d > 8192, where numpy's batched reductions sum in another order."""
    from efbench.core.compressors import TopK

    _, p = pair(monkeypatch, n=3, m=20, d=9000, density=0.002, l2=1e-3)
    xstar = np.full(p.d, 0.01)

    def spec(seed):
        method = ErrorCompensated(
            name="e", estimator={"kind": "sgd", "sampling": "uniform"}, compressor=TopK(k=5)
        )
        return RunSpec(method, Schedule(0.5, "c"), np.zeros(p.d), seed)

    lim = Limits(30, np.inf, np.inf, 3, 1e6)
    alone = execute(p, 0.0, xstar, [spec(1)], lim, engine)[0]
    batch = execute(p, 0.0, xstar, [spec(0), spec(1), spec(2)], lim, engine)[1]
    for col in ("grad_norm2", "dist2", "f"):
        np.testing.assert_array_equal(alone.columns[col], batch.columns[col])
