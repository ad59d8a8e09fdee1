"""Sweeps through Hydra, resuming, collection into pandas, figures and the paper report."""

import json

import pandas as pd
import pytest
from test_cli import cfg_of, efbench

from efbench.analysis import plots
from efbench.analysis.collect import collect
from efbench.analysis.collect import main as collect_main
from efbench.engine.threads import cores
from efbench.reports import paper
from efbench.run.runner import run

SWEEP = ["-m", "seed=0,1", "compressor=topk,ht", "budget.iters=60", "log_every=20", "progress=false"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "multi"
    r = efbench(*SWEEP, f"hydra.sweep.dir={root}", cwd=root.parent)
    assert r.returncode == 0, r.stderr
    return root


def test_multirun_runs_every_combination_in_readable_dirs(sweep_dir):
    dirs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".batches")
    assert dirs == [
        f"budget.iters=60,compressor={c},log_every=20,seed={s}" for c in ("ht", "topk") for s in (0, 1)
    ]
    for d in dirs:
        assert json.loads((sweep_dir / d / "summary.json").read_text())["status"] == "completed"


def test_collect_gives_tidy_frames(sweep_dir):
    trace, runs = collect(sweep_dir)
    assert len(runs) == 4 and set(runs.status) == {"completed"}
    assert set(runs.compressor) == {"topk", "ht"} and set(runs.seed) == {0, 1}
    for col in (
        "dataset",
        "method",
        "compressor",
        "sampling",
        "stepsize",
        "seed",
        "label",
        "compressor.k",
        "compressor.lam",
        "step",
        "rel_gap",
        "bits_up_mean",
        "epochs",
    ):
        assert col in trace.columns, col
    assert len(trace) == 4 * 4  # steps 0, 20, 40, 60 of each run
    topk = trace[trace.compressor == "topk"]
    assert set(topk["compressor.k"]) == {1} and topk["compressor.lam"].isna().all()
    assert set(trace.sampling) == {"importance"} and set(trace.method) == {"ec_sgd_is"}
    assert list(runs.label.cat.categories) == ["EC-SGD-IS, HT λ=0.01", "EC-SGD-IS, Top-1"]
    assert {"config_hash", "engine"} <= set(runs.columns) and "method.name" not in trace
    # trace values are the runs' own
    name = "budget.iters=60,compressor=ht,log_every=20,seed=1"
    one = pd.read_parquet(sweep_dir / name / "trace.parquet")
    got = trace[trace.run == name].reset_index(drop=True)
    pd.testing.assert_series_equal(got["gap"], one["gap"], check_names=False)
    assert {"final_rel_gap", "const_L", "gamma0", "iters_per_sec"} <= set(runs.columns)


def test_resume_skips_finished_and_reruns_broken(sweep_dir):
    stamp = {p: (p / "trace.parquet").stat().st_mtime_ns for p in sweep_dir.glob("budget*")}
    broken = sweep_dir / "budget.iters=60,compressor=ht,log_every=20,seed=0"
    s = json.loads((broken / "summary.json").read_text())
    s["status"] = "running"  # as if the sweep had been killed during this run
    (broken / "summary.json").write_text(json.dumps(s))
    r = efbench(*SWEEP, f"hydra.sweep.dir={sweep_dir}", cwd=sweep_dir.parent)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("skipping") + r.stdout.count("skipping") == 3
    for p, t in stamp.items():
        changed = (p / "trace.parquet").stat().st_mtime_ns != t
        assert changed == (p == broken), p
    assert json.loads((broken / "summary.json").read_text())["status"] == "completed"


def test_sweep_groups_batchable_jobs_and_matches_batching_off(tmp_path):
    """The two seeds of each compressor run as one batched job; every run's directory,
    config hash and trace are those of the same sweep with batching off."""
    on, off = tmp_path / "on", tmp_path / "off"
    sweep = [*SWEEP, "stepsize.multiplier=0.5,1"]
    r = efbench(*sweep, f"hydra.sweep.dir={on}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).count("Launching 2 jobs locally") == 1  # 8 runs in 2 groups
    r = efbench(*sweep, "hydra.sweeper.batch=false", f"hydra.sweep.dir={off}", cwd=tmp_path)
    assert r.returncode == 0 and (r.stdout + r.stderr).count("Launching 8 jobs locally") == 1, r.stderr
    runs = sorted(p.name for p in off.glob("budget*"))
    assert len(runs) == 8 and runs == sorted(p.name for p in on.glob("budget*"))
    for name in runs:
        a, b = (json.loads((root / name / "summary.json").read_text()) for root in (on, off))
        assert a["config_hash"] == b["config_hash"] and a["config"] == b["config"]
        assert (a["batch_size"], b["batch_size"]) == (4, 1)
        ta, tb = (pd.read_parquet(root / name / "trace.parquet").drop(columns="time") for root in (on, off))
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    r = efbench(*sweep, f"hydra.sweep.dir={on}", cwd=tmp_path)  # resumes run by run
    assert (r.stdout + r.stderr).count("skipping") == 8, r.stderr


def test_sweep_grouping_rule():
    from hydra_plugins.efbench_sweeper.efbench_sweeper import batchable, group_jobs

    assert all(
        map(
            batchable,
            [
                "seed=3",
                "stepsize.multiplier=2",
                "compressor.lam=0.1",
                "method.estimator.p=0.1",
                "x0=shift",
                "method.zeta=4",
            ],
        )
    )
    assert not any(
        map(
            batchable,
            [
                "stepsize=constant",
                "method=ef21",
                "+seed=1",
                "compressor.scaled=true",
                "dataset.m=10",
                "budget.iters=5",
                "engine=numpy",
            ],
        )
    )
    jobs = [["method=a", "seed=0"], ["method=a", "seed=1"], ["method=b", "seed=0"]]
    grouped = group_jobs(jobs, max_runs=256)
    assert grouped[1] == ["method=b", "seed=0"] and grouped[0][0] == "method=a"
    assert grouped[0][1] == """+efbench_batch='[["seed=0"], ["seed=1"]]'"""
    assert len(group_jobs([["seed=0"], ["seed=1"], ["seed=2"]], max_runs=2)) == 2


def test_joblib_launcher_runs_batched_groups_in_parallel_processes(tmp_path):
    """Two groups (one per compressor) of two seeds each, one joblib process per group."""
    root = tmp_path / "jl"
    r = efbench(
        "-m",
        "seed=0,1",
        "compressor=topk,ht",
        "budget.iters=30",
        "log_every=10",
        "progress=false",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={root}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = r.stderr + r.stdout
    assert "Joblib" in out and "launching 2 jobs" in out
    # each job process computes with its share of the cores (efbench.engine.threads)
    share = max(1, cores() // 2)
    logs = [p.read_text() for p in (root / ".batches").rglob("efbench.log")]
    assert logs and all(
        f"threads: BLAS {share} per process (2 jobs at once on {cores()} cores)" in t for t in logs
    )
    _, runs = collect(root)
    assert sorted(runs.seed) == [0, 0, 1, 1] and set(runs.status) == {"completed"}
    assert (
        sorted(json.loads((root / d / "summary.json").read_text())["batch_size"] for d in runs.run) == [2] * 4
    )


def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    root = tmp_path / "bad"
    r = efbench(
        "-m",
        "compressor=topk",
        "compressor.k=1,99",
        "budget.iters=20",
        "progress=false",
        f"hydra.sweep.dir={root}",
        cwd=tmp_path,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out  # the sweep went on, then reports the failure
    assert out.count(f"sweep: 2 runs in {root}: completed 1, error 1") == 1
    _, runs = collect(root)
    assert sorted(runs.status) == ["completed", "error"]
    assert "compressor.k" in runs.loc[runs.status == "error", "error"].iloc[0]


def test_plots_and_cli(sweep_dir, tmp_path, capsys):
    trace, _ = collect(sweep_dir)
    for x in ("step", "epochs", "bits_up_mean"):
        paths = plots.save(plots.plot_curves(trace, x=x), tmp_path / f"fig_{x}")
        for p in paths:
            assert p.stat().st_size > 5000
    plots.main([str(sweep_dir), "--out", str(tmp_path / "cli"), "--x", "bits", "iterations"])
    assert {p.name for p in (tmp_path / "cli").iterdir()} == {
        f"rel_gap_vs_{x}.{ext}" for x in ("bits", "iterations") for ext in ("png", "pdf", "csv")
    }
    collect_main([str(sweep_dir), "-o", str(tmp_path / "all")])
    assert "4 runs (completed 4), 16 trace rows" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "all_trace.parquet")) == 16


def test_collect_many_runs_quickly(tmp_path):
    """Collection reads JSON and parquet only: 300 runs well within seconds."""
    src = pd.DataFrame({"step": range(50), "rel_gap": [0.5**k for k in range(50)]})
    for i in range(300):
        d = tmp_path / f"seed={i}"
        d.mkdir()
        src.to_parquet(d / "trace.parquet")
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "config": {"seed": i, "dataset": {"name": "x"}, "method": {"name": "m"}},
                }
            )
        )
    trace, runs = collect(tmp_path)  # how long it takes: benchmarks/latency.py
    assert len(runs) == 300 and len(trace) == 300 * 50 and trace.seed.nunique() == 300


def test_calibrated_threshold_matches_topk_density():
    """Over the pilot's whole length, HT's mean coordinates per round within 10 % of TopK's
    (K = 1 exactly with ties by index)."""
    lam, nnz, target = paper.calibrate_threshold("breast_cancer", [], iters=300)
    assert target == 1 and abs(nnz - target) <= 0.05 * target
    lam2, nnz2, target2 = paper.calibrate_threshold(
        "breast_cancer", [], iters=300, experiment="paper_authors_exp3", topk="topk_keep_paper", seeds=(0, 1)
    )
    assert target2 >= 1 and abs(nnz2 - target2) <= 0.05 * target2 and lam2 != lam  # its own sampling


def test_paper_quick_pipeline_on_a9a(tmp_path, mirror, data_cache, monkeypatch):
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(data_cache))
    out = tmp_path / "paper"
    paper.main(
        [
            "--out",
            str(out),
            "--quick",
            "--datasets",
            "a9a",
            "--no-calibrate",
            "budget.iters=300",
            "log_every=50",
        ]
    )
    report = (out / "report.md").read_text()
    for needle in (
        "## Constants per dataset",
        "## Stepsizes",
        "## Final suboptimality",
        "### 1. Importance vs uniform",
        "### 2. EC-LSVRG vs EC-SGD",
        "### 3. HT vs TopK",
        "**a9a** (2 and 2 seeds), claim: ",
        "- stepsizes: IS ",
        "**Confound: unequal density** (HT/TopK = ",  # not calibrated
        "- rel. gap 0.1: iterations to reach it per seed: IS ",
        "- at 10% of the shared range (iterations ",
        "- at the last 10% of the shared range (iterations ",
        "- rel. gap 0.1: bits per worker to reach it per seed: HT ",
        "- mean coordinates per round and worker over the run: HT ",
        "exp3_ht_vs_topk_vs_bits.png",
        "3.50016",
    ):
        assert needle in report, needle
    assert "unequal stepsizes" not in report  # a9a: L_IS ~ L_US, theory stepsizes within 0.1 %
    _, runs = collect(out / "paper_exp3")
    assert len(runs) == 4 and set(runs.compressor) == {"ht_paper", "topk_paper"}
    assert (out / "exp1_is_vs_us_vs_iterations.pdf").stat().st_size > 5000
    assert (out / "exp3_ht_vs_topk_vs_time.png").is_file()  # against simulated time too


def test_paper_authors_pipeline_calibrates_over_the_run(tmp_path, mirror, data_cache, monkeypatch):
    """--authors: the paper_authors_exp1..3 presets (their rows, uniform sampling, TopK
    keeping ties, one stepsize), the threshold calibrated against TopK's own density over
    pilots as long as the runs, and the density each run achieved in the report."""
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(data_cache))
    out = tmp_path / "authors"
    paper.main(
        ["--out", str(out), "--datasets", "a9a", "--authors", "--quick", "budget.iters=300", "log_every=50"]
    )
    report = (out / "report.md").read_text()
    for needle in (
        "Variant: quick, authors presets",
        " for topk_keep_paper (ratio ",
        "over 300 iterations, seeds 0, 1 (the runs of experiment 3",
        "- stepsizes: IS ",
        "over the run: HT ",
        "- densities matched over the run: HT/TopK = ",  # calibrated on those very runs
    ):
        assert needle in report, needle
    assert "Confound: unequal stepsizes" not in report  # one stepsize 1/L for IS and US
    _, runs = collect(out / "paper_authors_exp3")
    assert set(runs.compressor) == {"ht_paper", "topk_keep_paper"} and len(runs) == 4
    summary = json.loads(next((out / "paper_authors_exp3").rglob("summary.json")).read_text())
    assert summary["config"]["data"]["split"] == "head_shuffle"
    assert summary["config"]["method"]["estimator"]["sampling"] == "uniform"


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\0" * len(data))


@pytest.mark.parametrize("name", ["trace.parquet", "summary.json"])
@pytest.mark.parametrize("how", ["truncate", "zero"])
def test_resume_reruns_a_finished_run_whose_files_are_damaged(how, name, tmp_path):
    from test_cli import cfg_of

    from efbench.run.runner import run

    cfg = cfg_of("budget.iters=60", "log_every=20")
    first = run(cfg, tmp_path)
    assert first["trace_rows"] == 4
    assert run(cfg, tmp_path).get("skipped")
    _damage(tmp_path / name, how)
    again = run(cfg, tmp_path)
    assert not again.get("skipped") and again["status"] == "completed"
    assert len(pd.read_parquet(tmp_path / "trace.parquet")) == 4


def test_collect_skips_and_counts_unreadable_runs(tmp_path, capsys):
    from test_cli import cfg_of

    from efbench.run.runner import run

    for seed in range(3):
        run(cfg_of("budget.iters=40", "log_every=20", f"seed={seed}"), tmp_path / f"s{seed}")
    _damage(tmp_path / "s1" / "trace.parquet", "truncate")
    _damage(tmp_path / "s2" / "summary.json", "zero")
    with pytest.warns(UserWarning, match="skipping") as caught:
        trace, runs = collect(tmp_path)
    assert len(caught) == 2
    assert sorted(runs.status) == ["completed", "unreadable", "unreadable"]
    assert set(trace.run) == {"s0"} and len(trace) == 3
    with pytest.warns(UserWarning):
        collect_main([str(tmp_path)])
    assert "3 runs (unreadable 2, completed 1)" in capsys.readouterr().out
    for shape in ("null", "[]", '"completed"'):  # valid JSON, not a summary: skipped, no traceback
        (tmp_path / "s2" / "summary.json").write_text(shape)
        with pytest.warns(UserWarning) as caught:  # s1's damaged trace warns too
            _, runs = collect(tmp_path)
        assert any("s2: unreadable summary.json" in str(w.message) for w in caught)
        assert sorted(runs.status) == ["completed", "unreadable", "unreadable"]


def test_labels_name_what_ran(tmp_path):
    """A method that sends dense messages is labelled so (not with the unused compressor
    group), and partial participation is in the label (EF21-PP beside EF21)."""
    run(cfg_of("method=sgd", "budget.iters=5"), tmp_path / "a", {"compressor": "ht", "method": "sgd"})
    pp = ("method=ef21", "compressor=topk", "participation=nice", "participation.size=2", "budget.iters=5")
    run(cfg_of(*pp), tmp_path / "b", {"compressor": "topk", "method": "ef21"})
    _, runs = collect(tmp_path)
    assert sorted(runs.label) == ["EF21, Top-1, nice τ=2", "SGD"]
    assert sorted(runs.compressor) == ["dense", "topk"]
