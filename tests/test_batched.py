"""Batched seeds: one process, a leading seed axis, traces identical to separate runs."""

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import cfg_of, efbench

from efbench.batched import SeedGenerators, run_batched
from efbench.errors import ConfigError
from efbench.runner import run
from efbench.sweep import collect


@pytest.mark.parametrize("overrides", [
    ["method=ec_sgd_is", "compressor=ht"],
    ["method=ec_sgd_us", "compressor=topk", "compressor.k=3", "method.ec_form=plain"],
    ["method=ec_lsvrg", "compressor=ht", "method.estimator.p=0.05", "method.estimator.coin=per_worker"],
    ["method=ec_lsvrg", "compressor=topk", "method.estimator.p=0.05"],
    ["method=sgd", "sampling=importance", "sampling.batch=4"],
    ["method=cgd", "compressor=sign"],
    ["method=ec_gd", "compressor=rounding", "budget.iters=null", "budget.bits=30000"],
])
def test_batched_seeds_reproduce_separate_runs_exactly(overrides, tmp_path):
    has_budget = any("budget" in o for o in overrides)
    common = [*overrides, "log_every=50"] + ([] if has_budget else ["budget.iters=600"])
    run_batched(cfg_of(*common), [0, 3, 7], tmp_path / "batch")
    for s in (0, 3, 7):
        sep = run(cfg_of(*common, f"seed={s}"), tmp_path / f"sep{s}")
        a = pd.read_parquet(tmp_path / "batch" / f"seed={s}" / "trace.parquet").drop(columns="time")
        b = pd.read_parquet(tmp_path / f"sep{s}" / "trace.parquet").drop(columns="time")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        batched = json.loads((tmp_path / "batch" / f"seed={s}" / "summary.json").read_text())
        assert batched["config_hash"] == sep["config_hash"] and batched["steps"] == sep["steps"]
        assert batched["engine"] == sep["engine"]
        assert batched["config"]["seed"] == s


def test_seed_generators_draw_what_each_seed_would():
    g = SeedGenerators([1, 2])
    a, b = np.random.default_rng(1), np.random.default_rng(2)
    np.testing.assert_array_equal(g.random((3, 2)), np.stack([a.random((3, 2)), b.random((3, 2))]))
    np.testing.assert_array_equal(g.random(), [a.random(), b.random()])


def test_batched_and_separate_runs_resume_each_other(tmp_path):
    cfg = cfg_of("budget.iters=100")
    run(cfg_of("budget.iters=100", "seed=1"), tmp_path / "seed=1")
    out = run_batched(cfg, [0, 1], tmp_path)
    assert out[1].get("skipped") and not out[0].get("skipped")
    again = run_batched(cfg, [0, 1], tmp_path)
    assert all(s.get("skipped") for s in again)


def test_one_diverging_seed_does_not_stop_the_others(tmp_path):
    # cgd + identity with a huge stepsize diverges for every seed; with EC-SGD + HT none does
    out = run_batched(cfg_of("method=cgd", "compressor=identity", "stepsize=constant",
                             "stepsize.gamma=1e9", "budget.iters=50", "log_every=1"), [0, 1], tmp_path / "d")
    assert [s["status"] for s in out] == ["diverged", "diverged"]
    out = run_batched(cfg_of("budget.iters=50"), [0, 1], tmp_path / "c")
    assert [s["status"] for s in out] == ["completed", "completed"]


def test_unsupported_batches_are_refused():
    for overrides in (["method=ef21", "compressor=topk"], ["method=ec_sgd", "compressor=natural"]):
        with pytest.raises(ConfigError, match="seeds: batched seeds support"):
            run_batched(cfg_of(*overrides), [0, 1], "/tmp/efbench-unused")
    with pytest.raises(ConfigError, match="seeds"):
        run_batched(cfg_of(), [1, 1], "/tmp/efbench-unused")


def test_cli_seeds_list_writes_one_dir_per_seed(tmp_path):
    out = tmp_path / "run"
    r = efbench("seeds=[0,1,2]", "budget.iters=100", "log_every=50", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, runs = collect(out)
    assert sorted(runs.seed) == [0, 1, 2] and set(runs.status) == {"completed"}


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_batched_seeds_on_either_engine(engine, tmp_path):
    """Batched seeds run on the engine a separate run would use, with the same traces."""
    common = ["method=ec_lsvrg", "compressor=topk", "method.estimator.p=0.05", "budget.iters=300",
              "log_every=50", f"engine={engine}"]
    out = run_batched(cfg_of(*common), [2, 5], tmp_path / "batch")
    for s, summary in zip((2, 5), out, strict=True):
        sep = run(cfg_of(*common, f"seed={s}"), tmp_path / f"sep{s}")
        assert summary["engine"] == sep["engine"] == engine
        a = pd.read_parquet(tmp_path / "batch" / f"seed={s}" / "trace.parquet").drop(columns="time")
        b = pd.read_parquet(tmp_path / f"sep{s}" / "trace.parquet").drop(columns="time")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
