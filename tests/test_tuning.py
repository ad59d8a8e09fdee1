"""Targets read exactly (efbench.analysis.targets) and tuning as one batched sweep
(efbench.analysis.tuning)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_cli import efbench

from efbench.analysis import targets
from efbench.analysis.collect import collect
from efbench.analysis.tuning import mark, picks
from efbench.config.tune import TuneSpec
from efbench.errors import ConfigError

# ---- targets ---------------------------------------------------------------------------------


def test_reach_interpolates_log_linearly_between_log_points():
    steps = np.array([0.0, 10, 20, 30])
    y = 0.5**steps  # linear convergence: log y is linear in the step
    r = targets.reach(steps, y, 0.5**15, steps)
    assert r.how == targets.REACHED and r.x == pytest.approx(15.0)  # not 20, the first point past it
    # bits growing linearly in the steps between two log points: the same fraction of the way
    r = targets.reach(100 * steps, y, 0.5**27.5, steps)
    assert r.x == pytest.approx(2750.0)
    # a target met exactly at a log point is read there
    assert targets.reach(steps, y, 0.5**20, steps).x == pytest.approx(20.0)


def test_reach_before_the_first_logged_step_start_never_and_diverged():
    steps = np.array([0.0, 200, 400])
    r = targets.reach(steps, np.array([1.0, 1e-3, 1e-4]), 0.1, steps)
    assert r.how == targets.EARLY and not r.exact  # the trace holds nothing between 0 and 200
    assert targets.reach(steps, np.array([0.05, 0.01, 1e-3]), 0.1, steps).how == targets.START
    never = targets.reach(steps, np.array([1.0, 0.5, 0.4]), 0.1, steps)
    assert never.how == targets.NEVER and math.isinf(never.x)
    gone = targets.reach(steps, np.array([1.0, 1e3, np.inf]), 0.1, steps, diverged=True)
    assert gone.how == targets.DIVERGED and math.isinf(gone.x)
    # a lazy method's bits do not change between two log points: the crossing is at that x
    flat = targets.reach(np.array([0.0, 50, 50]), np.array([1.0, 0.5, 0.05]), 0.1, np.array([0, 1, 2]))
    assert flat.x == 50 and flat.exact


def test_spread_and_ratio_refuse_early_reads():
    steps = np.array([0.0, 10, 20])
    exact = [targets.reach(steps, np.array([1, 0.1, 0.01]), t, steps) for t in (0.05, 0.02)]
    s = targets.Spread.of(exact)
    assert s.seeds == 2 and s.lo < s.median < s.hi and s.exact
    early = targets.Spread.of([targets.reach(steps, np.array([1, 0.01, 1e-3]), 0.1, steps)])
    assert early.early == 1 and "*" in early.text()
    assert math.isnan(targets.ratio(s, early)) and targets.ratio(s, s) == pytest.approx(1.0)
    assert targets.Spread.of([math.inf, math.inf]).text() == "never"


# ---- the pick ----------------------------------------------------------------------------------


def _frames(curves: dict, spec: dict, select=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and traces of hand-made curves: {(method, multiplier, seed): (steps, y, status)}."""
    tune = json.dumps({**spec, "select_seeds": list(select)}, sort_keys=True)
    runs, rows = [], []
    for (method, mult, seed), (steps, y, status) in curves.items():
        run = f"method={method},seed={seed},stepsize.multiplier={mult}"
        runs.append(
            dict(
                run=run, dataset="d", method=method, seed=seed, status=status, label=method.upper(), tune=tune
            )
        )
        runs[-1]["stepsize.multiplier"] = mult
        for s, v in zip(steps, y, strict=True):
            rows.append(
                dict(run=run, dataset="d", method=method, seed=seed, step=s, bits_up_mean=10 * s, rel_gap=v)
            )
    trace = pd.DataFrame(rows)
    trace.attrs["ids"] = ["run", "dataset", "method", "seed", "label", "status", "stepsize.multiplier"]
    return trace, pd.DataFrame(runs)


STEPS = np.arange(0, 101, 10.0)


def _geometric(rate: float):
    return STEPS, rate**STEPS, "completed"


SPEC = {
    "key": "stepsize.multiplier",
    "grid": [0.5, 1, 2, 4],
    "criterion": "bits",
    "target": 1e-3,
    "metric": "rel_gap",
}


def test_pick_is_the_fastest_value_divergence_loses_and_the_edge_is_flagged():
    curves = {}
    for seed in (0, 1):
        curves[("a", 0.5, seed)] = _geometric(0.95)
        curves[("a", 1, seed)] = _geometric(0.9)
        curves[("a", 2, seed)] = _geometric(0.8)  # fastest
        curves[("a", 4, seed)] = (np.array([0.0, 10, 20]), np.array([1.0, 1e3, np.inf]), "diverged")
        curves[("b", 0.5, seed)] = _geometric(0.99)
        curves[("b", 1, seed)] = _geometric(0.97)
        curves[("b", 2, seed)] = _geometric(0.95)
        curves[("b", 4, seed)] = _geometric(0.9)  # fastest, the largest value tried
    trace, runs = _frames(curves, SPEC)
    table = picks(trace, runs).set_index("method")
    assert table.loc["a", "value"] == 2 and not table.loc["a", "edge"]
    # bits to 1e-3 on 0.8^k: k = ln(1e-3)/ln(0.8), 10 bits a step, interpolated exactly
    assert table.loc["a", "score"] == pytest.approx(10 * math.log(1e-3) / math.log(0.8))
    assert table.loc["b", "value"] == 4 and table.loc["b", "edge"] and table.loc["b", "by"] == "criterion"
    tuned = mark(runs, picks(trace, runs))
    assert set(runs.loc[tuned, "stepsize.multiplier"].astype(float)) == {2.0, 4.0}
    assert tuned.sum() == 4  # two arms x two seeds


def test_pick_falls_back_to_the_final_value_and_reads_only_selection_seeds():
    curves = {}
    for seed in (0, 1, 9):
        slow = 0.999 if seed != 9 else 0.99
        curves[("a", 1, seed)] = _geometric(0.995)  # never reaches 1e-3 in 100 steps
        curves[("a", 2, seed)] = _geometric(slow)  # better than 1 only on selection seed 9
    trace, runs = _frames(curves, SPEC, select=[9])
    table = picks(trace, runs)
    assert table["by"].iloc[0] == "final" and table["value"].iloc[0] == 2
    tuned = mark(runs, table)
    assert sorted(runs.loc[tuned, "seed"]) == [0, 1]  # the selection seed is not reported
    trace, runs = _frames(curves, SPEC)  # picked on every seed: 1 ends lower on seeds 0 and 1
    assert picks(trace, runs)["value"].iloc[0] == 1


def test_tune_spec_names_the_bad_key():
    for block, key in (
        ({"key": "dataset.m"}, "tune.key"),
        ({"criterion": "speed"}, "tune.criterion"),
        ({"target": -1}, "tune.target"),
        ({"grid": [1]}, "tune.grid"),
        ({"select_seeds": [-1]}, "tune.select_seeds"),
        ({"bogus": 1}, "tune.bogus"),
    ):
        with pytest.raises(ConfigError) as err:
            TuneSpec.from_config(block)
        assert str(err.value).startswith(key), err.value


# ---- end to end ---------------------------------------------------------------------------------


def test_tuning_is_one_batched_sweep_and_collect_marks_the_best(tmp_path, mirror, data_cache):
    env = {"EFBENCH_DATA_MIRROR": str(mirror), "EFBENCH_DATA_DIR": str(data_cache)}
    args = [
        "-m",
        "method=ef21",
        "compressor=topk",
        "dataset=phishing",
        "seed=0,1",
        "+tune=stepsize",
        "tune.grid=[0.5,2,8]",
        "tune.target=0.5",
        "stepsize=reference",
        "budget.iters=60",
        "log_every=5",
        "progress=false",
        "hydra.sweep.dir=sw",
    ]
    proc = efbench(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sw = tmp_path / "sw"
    assert len(list((sw / ".batches").iterdir())) == 1  # the six runs ran as one batch
    assert not any("tune" in p.name for p in sw.iterdir())  # run folders as without tuning
    trace, runs = collect(sw)
    assert len(runs) == 6 and runs["tuned"].sum() == 2
    # the pick is the value whose median bits to the target are smallest, read independently
    best = {}
    for mult, group in runs.groupby("stepsize.multiplier"):
        reached = [targets.run_reach(trace[trace.run == r], "bits_up_mean", 0.5).x for r in group.run]
        best[mult] = np.median(reached)
    assert all(np.isfinite(v) for v in best.values()) and len(set(best.values())) == 3
    chosen = set(runs.loc[runs.tuned, "stepsize.multiplier"])
    assert chosen == {min(best, key=best.get)}
    assert trace.loc[trace.tuned, "run"].nunique() == 2
    out = efbench(*args[:-1], "hydra.sweep.dir=sw", "tune.criterion=fast", cwd=tmp_path, env=env)
    assert out.returncode == 2 and "tune.criterion" in out.stderr and "Traceback" not in out.stderr
    # efbench-figures --tuned draws the picked runs only: one line, labelled with its multiplier
    from efbench.analysis import plots

    plots.main([str(sw), "--tuned", "--x", "bits", "--out", str(tmp_path / "fig")])
    drawn = pd.read_csv(tmp_path / "fig" / "rel_gap_vs_bits.csv")
    (label,) = drawn["label"].unique()
    assert label.endswith(f"γ=reference×{chosen.pop():g}")
