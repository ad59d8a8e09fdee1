"""Shared fixtures: a small synthetic problem and the offline LIBSVM mirror."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from efbench.problems.datasets import MIRROR_ENV, make_synthetic, partition
from efbench.problems.logistic import LogisticProblem

REPO = Path(__file__).resolve().parents[1]


def find_mirror() -> Path | None:
    env = os.environ.get(MIRROR_ENV)
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "w8a.bz2").is_file():
            return cand.resolve()
    return None


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = find_mirror()
    if path is None:
        pytest.skip(f"no LIBSVM mirror: set {MIRROR_ENV} or place ../shared/data beside the repo")
    return path


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One parsed-array cache shared by the tests that read real LIBSVM files."""
    return tmp_path_factory.mktemp("efdata")


def small_problem(
    n: int = 4, m: int = 30, d: int = 8, l2: float = 0.05, seed: int = 0, density: float = 1.0
) -> LogisticProblem:
    X, y = make_synthetic(n * m, d, seed, density=density)
    A, Y = partition(X, y, n, m, "shuffle", seed)
    return LogisticProblem(A, Y, l2)


@pytest.fixture
def problem() -> LogisticProblem:
    return small_problem()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def trajectory(method, p, gamma, steps, seed=0, x0=None):
    """Run ``method`` alone from x0 (zero by default): x^k for k = 0..steps, the rounds and
    the final state; gamma may be a schedule (a function of k)."""
    rng = np.random.default_rng(seed)
    state = method.init(p, np.zeros(p.d) if x0 is None else x0, rng)
    xs, rounds = [state.x.copy()], []
    for k in range(steps):
        state, rnd = method.step(p, state, gamma(k) if callable(gamma) else gamma, rng)
        xs.append(state.x.copy())
        rounds.append(rnd)
    return np.array(xs), rounds, state


def pytest_configure(config):
    """Compile efbench's numba kernels once, in the controlling process, before the xdist
    workers and the tests' efbench subprocesses start: on a fresh clone (numba's cache empty)
    they would otherwise each compile the same kernels at the same time. A short run of each
    engine on dense and on CSR rows (the mirror's a1a) writes them to numba's cache."""
    workers = config.getoption("numprocesses", None)
    if hasattr(config, "workerinput") or not workers or os.environ.get("EFBENCH_NO_PREWARM"):
        return  # an xdist worker (the controller did it), or one process: it compiles as it goes
    import tempfile

    from hydra import compose, initialize_config_module

    from efbench.run.runner import run_batch

    lines = [["dataset=synthetic", "dataset.synthetic.rows=40", "dataset.n_workers=2", "dataset.m=20"]]
    mirror = find_mirror()
    if mirror is not None:
        lines.append(["dataset=a1a", f"data.mirror={mirror}", "dataset.n_workers=2", "dataset.m=50"])
    runs = (["method=ec_lsvrg", "engine=numba"], ["method=ef21", "compressor=topk"])
    config_module = initialize_config_module("efbench.conf", version_base="1.3")
    try:
        with tempfile.TemporaryDirectory() as tmp, config_module:
            for i, data in enumerate(lines):
                for j, run in enumerate(runs):
                    extra = ["budget.iters=3", "progress=false", f"data.dir={tmp}/data"]
                    cfg = compose("config", overrides=[*data, *run, *extra])
                    run_batch([cfg], [Path(tmp) / f"run{i}{j}"])
    except Exception as exc:  # only a head start: the tests compile what is missing themselves
        print(f"conftest: kernels not compiled ahead ({exc!r})")
