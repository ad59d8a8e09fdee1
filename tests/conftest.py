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
