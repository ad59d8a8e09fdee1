"""Divergence for every loss (efbench.engine.loop.divergence) and bits-only budgets that stop
when the messages stop (efbench.engine.counts.Counters.stalled), on both engines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem
from test_cli import cfg_of

from efbench.core.compressors import HardThreshold
from efbench.core.stepsize import Schedule
from efbench.engine import loop as engine
from efbench.engine.loop import DIVERGE_FROM, Limits, RunSpec, divergence, execute
from efbench.methods.base import ErrorCompensated
from efbench.run.runner import run

LIM = Limits(math.inf, math.inf, math.inf, None, 1e6)  # level 10, judged from step 1000


def _first(steps, ratios, **kw):
    """The step divergence() flags on a trace of f / f(x0) = ``ratios`` (f(x0) = 0.5)."""
    step = np.asarray(steps, dtype=np.int64)
    at, _ = divergence(step, 0.5 * np.asarray(ratios, dtype=float), 0.5, LIM, **kw)
    return None if at is None else int(step[at])


def test_a_blow_up_is_found_at_once_and_a_long_stay_above_the_level_after_half_the_run():
    assert _first([1, 2, 3], [2.0, np.inf, 1.0]) == 2
    assert _first([1, 2, 3], [2.0, np.nan, 1.0]) == 2
    assert _first([1, 2], [2.0, 2e6]) == 2
    steps = np.arange(100, 3001, 100)
    # above the level from step 700 on: the last point at or below it is 600, so the window
    # [k/2, k] holds only points above it from k = 1300 on
    ratios = np.where(steps >= 700, 50.0, 0.5)
    assert _first(steps, ratios) == 1300
    # one point back at the level (not above it) restarts the count: from 1000, till 2100
    assert _first(steps, np.where(steps == 1000, 10.0, ratios)) == 2100
    assert _first(steps, np.where(steps == 1000, 10.0001, ratios)) == 1300


def test_an_early_overshoot_is_a_transient_until_diverge_from():
    """Above the level from step 1 to just before DIVERGE_FROM, then back: not diverged;
    still above at DIVERGE_FROM: diverged there."""
    steps = np.array([1, 2, 5, 10, 100, 500, DIVERGE_FROM - 1, DIVERGE_FROM, 2 * DIVERGE_FROM])
    back = np.where(steps < DIVERGE_FROM, 60.0, 0.2)
    assert _first(steps, back) is None
    assert _first(steps, np.where(steps <= DIVERGE_FROM, 60.0, 0.2)) == DIVERGE_FROM


def test_at_the_end_the_last_half_decides_and_the_state_carries_over_calls():
    assert _first([10, 20, 40], [0.5, 20.0, 20.0]) is None
    assert _first([10, 20, 40], [0.5, 20.0, 20.0], final=True) == 40  # 20 > 40/2: last half above
    assert _first([10, 20, 40], [20.0, 0.5, 20.0], final=True) is None  # 20 is in [40/2, 40]
    # points in two calls: the step of the last low point is passed on
    at, below = divergence(np.array([10, 600]), np.array([0.1, 30.0]), 1.0, LIM)
    assert at is None and below == 10
    at, _ = divergence(np.array([1100]), np.array([30.0]), 1.0, LIM, below)
    assert at == 0
    at, _ = divergence(np.array([1100]), np.array([30.0]), 1.0, LIM, 600)
    assert at is None


def test_a_start_at_zero_loss_has_no_level_but_still_a_blow_up():
    at, _ = divergence(np.array([2000]), np.array([5.0]), 0.0, LIM, final=True)
    assert at is None
    at, _ = divergence(np.array([2000]), np.array([np.inf]), 0.0, LIM)
    assert at == 0


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=ec_sgd_is", "engine=numba"],
        ["method=ec_sgd_is", "engine=numpy"],
        ["method=gd"],
        ["method=ef21", "compressor=topk"],
        ["method=scaffnew"],
        ["method=ec_sgd_is", "problem.regularizer=nonconvex"],
    ],
)
def test_a_stepsize_far_above_two_over_l_diverges(tmp_path, overrides):
    """gamma = 1000 (about 2500/L on breast_cancer): f oscillates at tens to thousands of
    times f(x0) without overflowing. A 500-step run is judged at its end; a longer one stops
    at the first log point from DIVERGE_FROM on whose last half is above 10 f(x0) (a dip
    below it restarts the count). The nonconvex loss has no f*: the same test."""
    common = [*overrides, "stepsize=constant", "stepsize.gamma=1000", "log_every=50"]
    s = run(cfg_of(*common, "budget.iters=500"), tmp_path / "short")
    assert s["status"] == "diverged" and s["steps"] == 500
    s = run(cfg_of(*common, "budget.iters=3000"), tmp_path / "long")
    k = s["steps"]
    assert s["status"] == "diverged" and DIVERGE_FROM <= k < 3000
    tr = pd.read_parquet(tmp_path / "long" / "trace.parquet")
    assert tr["step"].iloc[-1] == k and (tr.loc[tr["step"] >= k / 2, "f"] > 10 * tr["f"].iloc[0]).all()
    if "problem.regularizer=nonconvex" in overrides:
        assert tr["gap"].isna().all()


def test_both_engines_stop_a_diverged_run_at_the_same_point(tmp_path):
    traces = []
    for engine_ in ("numpy", "numba"):
        cfg = cfg_of("stepsize=constant", "stepsize.gamma=1000", "budget.iters=3000", f"engine={engine_}")
        s = run(cfg, tmp_path / engine_)
        assert (s["status"], s["engine"]) == ("diverged", engine_)
        traces.append(pd.read_parquet(tmp_path / engine_ / "trace.parquet").drop(columns="time"))
    # log-spaced: the first point from step 1000 on is 1235, whose window starts at 620
    assert traces[0]["step"].iloc[-1] == 1235
    pd.testing.assert_frame_equal(traces[0], traces[1], check_exact=True)


def test_a_converging_run_with_a_long_early_overshoot_completes(tmp_path):
    """EF21 + Top-1 at gamma = 30 (76/L): f climbs to about 60 f(x0), stays above 10 f(x0)
    for some hundred steps, then comes back and converges."""
    ef21 = ["method=ef21", "compressor=topk", "stepsize=constant", "stepsize.gamma=30"]
    s = run(cfg_of(*ef21, "budget.iters=1500"), tmp_path)
    tr = pd.read_parquet(tmp_path / "trace.parquet")
    f0 = tr["f"].iloc[0]
    above = tr.loc[tr["f"] > 10 * f0, "step"]
    assert s["status"] == "completed" and s["steps"] == 1500
    assert tr["f"].max() > 50 * f0 and above.max() >= 100  # the overshoot was there, and long
    assert s["final"]["rel_gap"] < 1e-6


def test_the_level_is_a_setting(tmp_path):
    common = ["stepsize=constant", "stepsize.gamma=1000", "budget.iters=500"]
    assert run(cfg_of(*common, "diverge_level=1e9"), tmp_path / "a")["status"] == "completed"
    assert run(cfg_of(*common, "diverge_level=1.5"), tmp_path / "b")["status"] == "diverged"


@pytest.mark.parametrize("engine_", ["numpy", "numba"])
def test_a_silent_compressor_on_a_bits_only_budget_ends_stalled(tmp_path, engine_):
    """lam = 1e300: nothing is ever sent; the budget.bits run ends after STALL_STEPS steps."""
    cfg = cfg_of("compressor.lam=1e300", "budget.iters=null", "budget.bits=1000", f"engine={engine_}")
    s = run(cfg, tmp_path)
    assert (s["status"], s["engine"], s["steps"]) == ("stalled", engine_, engine.STALL_STEPS)
    assert s["final"]["bits_up_mean"] == 0
    tr = pd.read_parquet(tmp_path / "trace.parquet")
    assert tr["step"].iloc[-1] == engine.STALL_STEPS


@dataclass(frozen=True)
class Until(Schedule):
    """gamma0 up to step ``last`` (excluded), then 0: EC with the plain hard threshold sends
    while it steps, then never again (its memory holds only entries below lambda)."""

    last: int = 0

    def __call__(self, k: int) -> float:
        return self.gamma0 if k < self.last else 0.0

    def at(self, ks: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(ks) < self.last, self.gamma0, 0.0)


@pytest.mark.parametrize("engine_", ["numpy", "numba"])
def test_a_run_silent_for_as_long_as_it_ran_before_stalls(monkeypatch, engine_):
    """Messages until step 300, then none: with a floor of 50 silent steps the run stops
    after 300 more (as many as before the silence), not after 50; an iteration budget
    is never cut short. Both engines count the silence across their calls."""
    monkeypatch.setattr(engine, "STALL_STEPS", 50)
    p = small_problem(n=4, m=12, d=10, l2=1e-3)

    def spec():
        method = ErrorCompensated(
            name="ec",
            estimator={"kind": "sgd", "sampling": "uniform", "batch": 1},
            compressor=HardThreshold(lam=1e-6),
            ec_form="plain",
        )
        return RunSpec(method, Until(0.5, "until", last=300), np.zeros(p.d), 0)

    out = execute(p, 0.0, np.zeros(p.d), [spec()], Limits(math.inf, 1e12, math.inf, 25, 1e6), engine_)[0]
    assert (out.status, out.engine, out.steps) == ("stalled", engine_, 600)
    bits = out.columns["bits_up_mean"]
    assert bits[out.columns["step"] == 300] == bits[-1] > 0
    out = execute(p, 0.0, np.zeros(p.d), [spec()], Limits(900, 1e12, math.inf, 25, 1e6), engine_)[0]
    assert (out.status, out.steps) == ("completed", 900)


def test_a_completed_result_the_current_rule_finds_diverged_is_run_again(tmp_path):
    import io

    from efbench.run import results
    from efbench.run.runner import run

    cfg = cfg_of("budget.iters=2000", "log_every=100")
    first = run(cfg, tmp_path)
    assert first["status"] == "completed" and run(cfg, tmp_path).get("skipped")
    trace = pd.read_parquet(tmp_path / results.TRACE)
    trace.loc[trace.step >= 900, "f"] = 50 * trace.f.iloc[0]  # what an older rule called completed
    buf = io.BytesIO()
    trace.to_parquet(buf, index=False)
    results.commit(tmp_path, buf.getvalue(), results.read_summary(tmp_path))
    again = run(cfg, tmp_path)
    assert not again.get("skipped") and again["status"] == "completed"
