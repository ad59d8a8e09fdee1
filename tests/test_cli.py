"""End to end through Hydra: compose API, the installed ``efbench`` in a subprocess, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from efbench import files
from efbench.config.identity import config_hash
from efbench.errors import ConfigError, DataError
from efbench.run.runner import run

METRICS = [
    "step",
    "epochs",
    "f",
    "gap",
    "rel_gap",
    "grad_norm2",
    "dist2",
    "bits_up_mean",
    "bits_up_max",
    "bits_down",
    "nnz_mean",
    "err2",
    "rounds_up",
    "bits_up_round_max",
    "bits_up_round_min",
    "bits_link_round_max",
    "calls_round_max",
    "rounds_down",
    "time_sim",
    "gamma",
    "time",
]


def cfg_of(*overrides):
    with initialize_config_module("efbench.conf", version_base="1.3"):
        return compose("config", overrides=["progress=false", *overrides])


def efbench(*args, cwd, env=None, timeout=300):
    exe = Path(sys.executable).with_name("efbench")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "efbench"]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def test_default_run_through_compose(tmp_path):
    cfg = cfg_of("budget.iters=300", "log_every=50")
    s = run(cfg, tmp_path)
    assert s["status"] == "completed" and s["steps"] == 300
    tr = pd.read_parquet(tmp_path / "trace.parquet")
    assert list(tr.columns) == METRICS
    assert tr["step"].tolist() == [0, 50, 100, 150, 200, 250, 300]
    assert tr["rel_gap"].iloc[0] == pytest.approx(1.0)
    assert tr["gap"].iloc[-1] < 0.2 * tr["gap"].iloc[0]
    assert np.all(np.diff(tr["bits_up_mean"]) > 0) and np.all(tr["err2"].iloc[1:] > 0)
    summ = json.loads((tmp_path / "summary.json").read_text())
    for key in ("L", "mu", "L_US", "L_IS", "L_i_max", "f_star", "l2"):
        assert key in summ["constants"]
    assert summ["stepsize_formula"].startswith("1/(L + L_IS")
    assert summ["config"]["method"]["name"] == "ec_sgd_is"


@pytest.mark.parametrize(
    "method", ["gd", "sgd", "cgd", "ec_gd", "ec_sgd", "ec_sgd_us", "ec_sgd_is", "ec_lsvrg"]
)
@pytest.mark.parametrize(
    "compressor", ["identity", "topk", "randk", "ht", "sign", "natural", "qsgd", "ternary", "rounding"]
)
def test_every_method_and_compressor_runs(method, compressor, tmp_path):
    cfg = cfg_of(
        f"method={method}",
        f"compressor={compressor}",
        "budget.iters=40",
        "log_every=20",
        "stepsize.multiplier=0.5",
    )
    s = run(cfg, tmp_path)
    assert s["status"] == "completed", s
    assert s["final"]["gap"] < s["constants"]["f_star"] + 1  # finite, not absurd


@pytest.mark.parametrize("method", ["ec_sgd_us", "ec_sgd_is", "ec_lsvrg"])
def test_numba_engine_from_the_config(method, tmp_path):
    a = run(cfg_of(f"method={method}", "budget.iters=300"), tmp_path / "numpy")
    b = run(cfg_of(f"method={method}", "budget.iters=300", "engine=numba"), tmp_path / "numba")
    assert b["status"] == "completed" and b["engine"] == "numba" and a["engine"] == "numba"
    assert b["final"]["gap"] == pytest.approx(a["final"]["gap"], rel=1e-8)
    assert b["final"]["bits_up_mean"] == a["final"]["bits_up_mean"]


def test_budgets_in_bits_and_epochs(tmp_path):
    s = run(cfg_of("budget.iters=null", "budget.bits=20000", "compressor=topk"), tmp_path / "a")
    # top-1 on d = 30: 1 * (32 + 5) = 37 bits a round
    assert s["steps"] == int(np.ceil(20000 / 37)) and s["final"]["bits_up_mean"] >= 20000
    s = run(
        cfg_of("budget.iters=null", "budget.epochs=2", "method=ec_lsvrg", "method.estimator.p=0.5"),
        tmp_path / "b",
    )
    assert 2 <= s["final"]["epochs"] < 2 + 60 / 56


def test_diverged_run_is_recorded_not_a_crash(tmp_path):
    cfg = cfg_of(
        "method=cgd",
        "compressor=identity",
        "stepsize=constant",
        "stepsize.gamma=1e9",
        "budget.iters=100",
        "log_every=1",
    )
    s = run(cfg, tmp_path)
    assert s["status"] == "diverged" and s["steps"] < 100
    tr = pd.read_parquet(tmp_path / "trace.parquet")
    assert len(tr) >= 2 and tr["step"].iloc[-1] == s["steps"]


def test_finished_run_is_skipped_and_changed_config_reruns(tmp_path):
    cfg = cfg_of("budget.iters=100")
    first = run(cfg, tmp_path)
    mtime = (tmp_path / "trace.parquet").stat().st_mtime_ns
    again = run(cfg, tmp_path)
    assert again.get("skipped") and (tmp_path / "trace.parquet").stat().st_mtime_ns == mtime
    assert config_hash(cfg) == first["config_hash"]
    assert config_hash(cfg_of("budget.iters=100", "progress=true")) == first["config_hash"]
    changed = run(cfg_of("budget.iters=101"), tmp_path)
    assert not changed.get("skipped") and changed["steps"] == 101


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["compressor=topk", "compressor.k=31"], r"compressor\.k"),
        (["compressor=topk", "compressor.k=0"], r"compressor\.k"),
        (["compressor=ht", "compressor.lam=-0.1"], r"compressor\.lam"),
        (["stepsize=constant", "stepsize.gamma=-1"], r"stepsize\.gamma"),
        (["stepsize=constant", "stepsize.gamma=nan"], r"stepsize\.gamma"),
        (["stepsize.multiplier=0"], r"stepsize\.multiplier"),
        (["problem.l2=-1e-4"], r"problem\.l2"),
        (["dataset.m=100"], r"dataset\.m"),
        (["data.split=random"], r"data\.split"),
        (["budget.iters=-5"], r"budget\.iters"),
        (["x0=ones"], r"x0"),
    ],
)
def test_bad_values_name_their_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        run(cfg_of(*overrides), tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "error"


def test_missing_data_offline(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not in the mirror"):
        run(
            cfg_of("dataset=w8a", f"data.mirror={tmp_path / 'empty'}", f"data.dir={tmp_path / 'd'}"),
            tmp_path / "out",
        )


def test_atomic_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"
    files.atomic_write_bytes(target, b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError):
        files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.npz"]


# ---- the installed command -------------------------------------------------------------


def test_installed_efbench_on_real_w8a(tmp_path, mirror):
    out = tmp_path / "run"
    r = efbench(
        "dataset=w8a",
        "method=ec_lsvrg",
        "compressor=ht",
        "compressor.lam=0.05",
        "budget.iters=200",
        "log_every=50",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        env={"EFBENCH_DATA_MIRROR": str(mirror), "EFBENCH_DATA_DIR": str(tmp_path / "data")},
    )
    assert r.returncode == 0, r.stderr
    tr = pd.read_parquet(out / "trace.parquet")
    assert tr["step"].tolist() == [0, 50, 100, 150, 200]
    assert tr["gap"].iloc[-1] < tr["gap"].iloc[0]
    s = json.loads((out / "summary.json").read_text())
    assert s["constants"]["L_US"] == pytest.approx(28.5, rel=1e-3)
    assert s["constants"]["d"] == 300 and s["choices"]["method"] == "ec_lsvrg"
    assert (out / ".hydra" / "config.yaml").is_file()
    assert "L_US=28.5" in r.stderr + r.stdout  # constants printed at start


def test_installed_efbench_help_and_cfg(tmp_path):
    r = efbench("--help", cwd=tmp_path)
    assert r.returncode == 0
    for group in ("dataset", "method", "compressor", "sampling", "stepsize"):
        assert f"{group}:" in r.stdout
    assert "ec_lsvrg" in r.stdout and "gisette" in r.stdout
    r = efbench(
        "method=ec_lsvrg", "compressor=ht", "compressor.lam=0.05", "dataset=a9a", "--cfg", "job", cwd=tmp_path
    )
    assert r.returncode == 0 and "lam: 0.05" in r.stdout and "libsvm_name: a9a" in r.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["compressor=topk", "compressor.k=1000"], "compressor.k: K=1000 is out of range for d=30"),
        (["stepsize=constant", "stepsize.gamma=-0.1"], "stepsize.gamma: got -0.1 (allowed: a number > 0)"),
        (["dataset=w8a", "data.mirror=/nonexistent/dir"], "data.mirror='/nonexistent/dir'"),
    ],
)
def test_installed_efbench_bad_input_is_one_clear_line(args, needle, tmp_path):
    r = efbench(*args, f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert r.returncode == 2
    assert needle in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout


def test_installed_efbench_unknown_group_option(tmp_path):
    r = efbench("compressor=zip", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    want = "efbench: error: compressor: unknown value 'zip' (allowed: compose, ht, ht_paper"
    assert r.stderr.startswith(want)


def test_summary_records_the_sampling_a_method_uses():
    from efbench.run.runner import new_summary

    for method, want in (("ec_sgd_is", "importance"), ("ec_sgd_us", "uniform"), ("gd", "none")):
        s = new_summary(cfg_of(f"method={method}", "sampling=uniform"), "h", {"sampling": "uniform"})
        assert s["choices"]["sampling"] == want, method
    s = new_summary(cfg_of("method=ec_sgd", "sampling=importance"), "h", {"sampling": "importance"})
    assert s["choices"]["sampling"] == "importance"


def test_cli_seeds_list_writes_one_dir_per_seed(tmp_path):
    from efbench.analysis.collect import collect

    out = tmp_path / "run"
    r = efbench("seeds=[0,1,2]", "budget.iters=100", "log_every=50", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, runs = collect(out)
    assert sorted(runs.seed) == [0, 1, 2] and set(runs.status) == {"completed"}
    assert (r.stdout + r.stderr).count("engine: numba, 3 run(s)") == 1
