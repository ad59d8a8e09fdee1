"""The paper experiments as the authors ran them (TopK keeping ties, their row selection and
sampling, presets paper_authors_exp1..3) and the report's reading of the curves (targets,
early and late leaders, crossings, confounds, noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from scipy.special import expit
from test_cli import cfg_of, efbench
from test_engine import ESTIMATORS, _trace, tied_problem

from efbench.core import blocks
from efbench.core.compressors import TopK
from efbench.core.stepsize import Schedule
from efbench.engine.loop import Limits, RunSpec, execute
from efbench.errors import ConfigError
from efbench.methods.base import ErrorCompensated
from efbench.problems.datasets import load_dataset, partition
from efbench.reports import paper
from efbench.run.runner import build_setup, run

# ---- TopK keeping ties -------------------------------------------------------------------

X = np.array(
    [
        [3.0, -1.0, 3.0, 0.5, -3.0, 0.0],  # three tied at the 2nd largest |x|
        [0.0, 0.0, 2.0, 0.0, 0.0, 0.0],  # fewer nonzeros than K
        [1.0, -1.0, 1.0, -1.0, 1.0, -1.0],  # all tied
        [0.1, 4.0, -0.2, 3.0, 0.3, -0.4],  # no ties
    ]
)


@pytest.mark.parametrize("index_bits", [False, True])
def test_topk_keep_sends_every_value_tied_with_the_kth_and_charges_it(index_bits):
    """K = 2, d = 6, F = 32, I = ceil(log2 6) = 3; sparse bits k F (+ min(k I, d))."""
    keep = TopK(k=2, ties="keep", index_bits=index_bits)(X.copy(), None)
    np.testing.assert_array_equal(
        keep.values,
        [
            [3.0, 0.0, 3.0, 0.0, -3.0, 0.0],
            [0.0, 0.0, 2.0, 0.0, 0.0, 0.0],
            [1.0, -1.0, 1.0, -1.0, 1.0, -1.0],
            [0.0, 4.0, 0.0, 3.0, 0.0, 0.0],
        ],
    )
    assert keep.nnz.tolist() == [3, 1, 6, 2]
    idx = [0 + 6, 0 + 3, 0 + 6, 0 + 6] if index_bits else [0, 0, 0, 0]  # min(k I, d)
    assert keep.bits.tolist() == [32 * 3 + idx[0], 32 * 1 + idx[1], 32 * 6 + idx[2], 32 * 2 + idx[3]]
    index = TopK(k=2, index_bits=index_bits)(X.copy(), None)  # default: exactly K, lowest index
    np.testing.assert_array_equal(index.values[0], [3.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(index.values[2], [1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    assert index.nnz.tolist() == [2, 2, 2, 2]
    np.testing.assert_array_equal(index.values[3], keep.values[3])  # no ties: the same message


def test_topk_keep_in_the_error_feedback_pass():
    """The compiled step's form (out += C(row), row -= C(row)) keeps the same values."""
    for r in X:
        row, out = r.copy(), np.full(6, 10.0)
        count = blocks.compress_row(row, blocks.TOPK_KEEP, 0.0, 2, np.empty(2), out, True)
        sent = np.where((np.abs(r) >= np.sort(np.abs(r))[-2]) & (r != 0), r, 0.0)
        assert count == np.count_nonzero(sent)
        np.testing.assert_array_equal(out, 10.0 + sent)
        np.testing.assert_array_equal(row, r - sent)


def test_ties_keep_is_the_same_on_both_engines_and_charged():
    """Binary features: ties with the K-th are frequent, so more than K values go out; the
    numpy engine and the compiled step send the same messages, bit for bit, and charge F
    bits per value sent (values-only accounting)."""
    p = tied_problem()
    outs = []
    for engine in ("numpy", "numba"):
        comp = TopK(k=1, ties="keep", index_bits=False)
        method = ErrorCompensated(name="e", estimator=ESTIMATORS["lsvrg_worker"], compressor=comp)
        spec = RunSpec(method, Schedule(0.5, "c"), np.zeros(p.d), 3)
        outs.append(
            _trace(execute(p, 0.0, np.zeros(p.d), [spec], Limits(60, np.inf, np.inf, 1, 1e6), engine)[0])
        )
    pd.testing.assert_frame_equal(outs[0], outs[1], check_exact=True)
    t = outs[0]
    assert t.nnz_mean.iloc[-1] > 1  # ties sent (exactly 1 with ties=index)
    np.testing.assert_allclose(t.bits_up_mean, 32 * t.nnz_mean * t.step, rtol=1e-14)


def test_a_bad_tie_rule_is_one_line_and_exit_2(tmp_path):
    with pytest.raises(ConfigError, match=r"compressor\.ties: got 'first'.*index, keep"):
        TopK(k=1, ties="first").validate(10)
    r = efbench(
        "progress=false",
        "compressor=topk",
        "compressor.ties=first",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1
    assert lines[0].endswith("efbench: error: compressor.ties: got 'first' (allowed: index, keep)")


# ---- the authors' row selection and presets ----------------------------------------------


def test_head_shuffle_deals_the_first_rows_of_the_file_in_a_seeded_order():
    X_, y = np.arange(50.0)[:, None] * np.ones((1, 2)), np.where(np.arange(50) % 3, 1.0, -1.0)
    A, Y = partition(X_, y, 4, 10, "head_shuffle", seed=7)
    rows = A[:, :, 0].ravel().astype(int)
    assert sorted(rows) == list(range(40))  # the first n m rows of the file, each once
    assert not np.array_equal(rows, np.arange(40))  # not in file order
    np.testing.assert_array_equal(Y.ravel(), y[rows])
    again = partition(X_, y, 4, 10, "head_shuffle", seed=7)[0]
    np.testing.assert_array_equal(again, A)
    assert not np.array_equal(partition(X_, y, 4, 10, "head_shuffle", seed=8)[0], A)


def _sweep(exp: str) -> dict[str, list[str]]:
    """The values the experiment sweeps, by key."""
    with initialize_config_module("efbench.conf", version_base="1.3"):
        c = compose("config", overrides=[f"+experiment={exp}"], return_hydra_config=True)
    return {k: str(v).split(",") for k, v in c.hydra.sweeper.params.items()}


AUTHORS = {
    "paper_authors_exp1": ("method", ["ec_sgd_us", "ec_sgd_is"]),
    "paper_authors_exp2": ("method", ["ec_sgd_us", "ec_lsvrg"]),
    "paper_authors_exp3": ("compressor", ["ht_paper", "topk_keep_paper"]),
}


@pytest.mark.parametrize("exp", list(AUTHORS))
def test_authors_presets_compose_the_authors_settings(exp):
    key, arms = AUTHORS[exp]
    params = _sweep(exp)
    assert params[key] == arms and params["dataset"] == ["a9a", "w8a", "gisette"]
    gammas = set()
    for arm in arms:
        c = cfg_of(f"+experiment={exp}", "dataset=w8a", f"{key}={arm}")
        assert c.data.split == "head_shuffle"  # the first n m rows, shuffled
        assert c.stepsize.rule == "reference" and c.x0 == "shift" and c.method.ec_form == "plain"
        assert c.bits.index_bits is False and c.problem.l2 == 1e-4
        est = c.method.estimator
        expected = "importance" if c.method.name == "ec_sgd_is" else "uniform"
        assert est.sampling == expected
        if c.method.name == "ec_lsvrg":
            assert est.coin == "per_worker"
        if c.compressor._target_.endswith("TopK"):
            assert c.compressor.ties == "keep" and c.compressor.k == 3  # w8a's K
        gammas.add(c.stepsize.rule)
    assert gammas == {"reference"}  # one stepsize rule, 1/L, for both arms


def test_efbench_presets_keep_their_choices():
    """paper_exp1..3 are unchanged: efbench's split, importance sampling, ties by index."""
    c = cfg_of("+experiment=paper_exp3", "dataset=w8a", "compressor=topk_paper")
    assert c.data.split == "shuffle" and c.method.estimator.sampling == "importance"
    assert c.compressor.ties == "index"
    assert cfg_of("compressor=topk").compressor.ties == "index"


def test_calibration_aims_at_topk_density_over_the_same_runs(monkeypatch):
    """With ties kept, TopK sends more than K: the threshold is calibrated to what TopK sends
    over the same runs (length and seeds), not to K; bisection on log lambda to within 5 %."""
    pilots = []

    def fake_pilot(dataset, experiment, overrides, seeds):
        pilots.append((overrides, seeds))
        if "compressor=topk_keep_paper" in overrides:
            return 1.5  # K = 1 plus the ties
        lam = float(next(o for o in overrides if o.startswith("paper.a9a.ht_lam="))[17:])
        return 0.9 / lam  # HT sends fewer coordinates as lambda grows

    monkeypatch.setattr(paper, "_pilot_nnz", fake_pilot)
    lam, nnz, target = paper.calibrate_threshold(
        "a9a", [], iters=777, experiment="paper_authors_exp3", topk="topk_keep_paper", seeds=(0, 1)
    )
    assert target == 1.5 and abs(nnz - 1.5) <= 0.05 * 1.5 and lam == pytest.approx(0.6, rel=0.06)
    assert all(seeds == (0, 1) and "budget.iters=777" in o for o, seeds in pilots)


def test_calibration_pilots_are_the_seeds_the_experiment_runs():
    assert paper.sweep_seeds(["budget.iters=5", "seed=0,1"], "paper_exp3") == (0, 1)
    assert paper.sweep_seeds([], "paper_authors_exp3") == (0, 1, 2)  # the preset's sweep
    assert paper.sweep_seeds(["seed=range(0,3)"], "paper_exp3") == (0,)


# ---- so aligned, efbench's trajectory is the authors' algorithm ---------------------------


def _authors_run(cfg, setup, steps, log_every):
    """The authors' EC-SGD / EC-LSVRG loop written out (their distrib_algs: worker by worker,
    v_i = C(e_i + gamma g_i), TopK by ``|u| >= the K-th largest |u|``, HT by ``|u| >= lam``,
    each worker refreshing w_i = x with its own coin, x -= mean v_i) on their row selection
    (rows 0..n m - 1 of the file, dealt in the order of a permutation), drawing its
    uniforms from the run's generator in efbench's order. Returns f, bits per worker and
    the largest message at the log steps."""
    n, m = int(cfg.dataset.n_workers), int(cfg.dataset.m)
    Xf, yf = load_dataset(cfg)
    perm = np.random.default_rng(int(cfg.data.seed)).permutation(n * m)
    A = Xf[: n * m].toarray()[perm].reshape(n, m, -1)
    Y = yf[: n * m][perm].reshape(n, m)
    l2, gamma = setup.problem.l2, 1.0 / setup.constants["L"]
    lsvrg = cfg.method.estimator.kind == "lsvrg"
    topk = cfg.compressor._target_.endswith("TopK")
    k, lam = (int(cfg.compressor.k), 0.0) if topk else (0, float(cfg.compressor.lam))

    def grad(Ai, yi, x):  # mean logistic gradient over the rows of Ai, plus l2 x
        return -(Ai.T @ (yi * expit(-yi * (Ai @ x)))) / len(yi) + l2 * x

    def f(x):
        z = A.reshape(n * m, -1) @ x
        return np.mean(np.logaddexp(0.0, -Y.ravel() * z)) + l2 / 2 * x @ x

    rng = np.random.default_rng(int(cfg.seed))
    x = setup.xstar + float(cfg.dataset.x0_shift)
    e = np.zeros((n, x.size))
    w = np.tile(x, (n, 1))
    gw = np.array([grad(A[i], Y[i], x) for i in range(n)])
    bits, widest, out = 0.0, 0, [(f(x), 0.0)]
    for step in range(1, steps + 1):
        u = rng.random(n)
        coins = rng.random(n) < 1.0 / m if lsvrg else np.zeros(n, bool)
        v = np.zeros(x.size)
        for i in range(n):
            j = int(u[i] * m)
            g = grad(A[i, j : j + 1], Y[i, j : j + 1], x)
            if lsvrg:
                g = g - grad(A[i, j : j + 1], Y[i, j : j + 1], w[i]) + gw[i]
            s = e[i] + gamma * g
            thr = np.sort(np.abs(s))[-k] if topk else lam
            vi = np.where(np.abs(s) >= thr, s, 0.0)
            e[i] = s - vi
            v += vi
            bits += 32 * np.count_nonzero(vi) / n
            widest = max(widest, np.count_nonzero(vi))
            if coins[i]:
                w[i], gw[i] = x, grad(A[i], Y[i], x)
        x = x - v / n
        if step % log_every == 0:
            out.append((f(x), bits))
    return np.array(out), widest


@pytest.mark.parametrize(
    "exp,arm",
    [("paper_authors_exp3", "compressor=topk_keep_paper"), ("paper_authors_exp2", "method=ec_sgd_us")],
)
def test_authors_presets_reproduce_the_authors_algorithm(exp, arm, mirror, data_cache, monkeypatch, tmp_path):
    """a9a, 200 rounds: f and the bits at every log point equal those of the authors' loop
    run on the same draws (EC-LSVRG + TopK with ties sent, which happen on a9a's binary
    features; EC-SGD + HT)."""
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(data_cache))
    cfg = cfg_of(f"+experiment={exp}", "dataset=a9a", arm, "seed=4", "budget.iters=200", "log_every=20")
    run(cfg, tmp_path)
    trace = pd.read_parquet(tmp_path / "trace.parquet")
    ref, widest = _authors_run(cfg, build_setup(cfg), 200, 20)
    np.testing.assert_allclose(trace.f, ref[:, 0], rtol=1e-11)
    np.testing.assert_allclose(trace.bits_up_mean, ref[:, 1], rtol=1e-12)
    if "topk" in arm:
        assert widest > cfg.compressor.k  # ties were sent, so the tie rule was tested


# ---- the report's reading of the curves ---------------------------------------------------


def _arm(name, rates, floors, gamma=0.1, nnz=3.0, seeds=(0, 1), x="step", diverge_at=None):
    """Hand-made runs: rel_gap = max(exp(-rate x), floor) for each seed's (rate, floor)."""
    steps = np.arange(0, 1001, 10.0)
    rows, runs = [], []
    for s, rate, floor in zip(seeds, rates, floors, strict=True):
        run_id = f"{name}/seed={s}"
        y = np.maximum(np.exp(-rate * steps), floor)
        status = "completed"
        if diverge_at is not None:
            keep = steps <= diverge_at
            steps_s, y, status = steps[keep], y[keep], "diverged"
        else:
            steps_s = steps
        rows.append(pd.DataFrame({"run": run_id, "seed": s, x: steps_s, "rel_gap": y}))
        runs.append({"run": run_id, "seed": s, "status": status, "gamma0": gamma, "stepsize_formula": "c"})
        runs[-1]["final_nnz_mean"] = nnz
    return paper.Arm(name, pd.DataFrame(runs), pd.concat(rows, ignore_index=True))


def test_clear_lead_needs_separation_beyond_the_seed_spread():
    assert paper.clear_lead(np.array([10.0, 12.0]), np.array([30.0, 33.0])) == "a"
    assert paper.clear_lead(np.array([30.0, 33.0]), np.array([10.0, 12.0])) == "b"
    assert paper.clear_lead(np.array([10.0, 40.0]), np.array([30.0, 33.0])) == ""  # ranges overlap
    assert paper.clear_lead(np.array([10.0, 10.5]), np.array([10.8, 11.0])) == ""  # < 1.1x
    # separated, but the mean difference is within one side's spread: noise
    assert paper.clear_lead(np.array([1.0, 20.0]), np.array([25.0, 26.0])) == ""
    assert paper.clear_lead(np.array([100.0, 120.0]), np.array([np.inf, np.inf])) == "a"  # only a reaches


FAST_HIGH = ([0.02, 0.021], [5e-4, 5.5e-4])  # fast to a high floor (a large stepsize)
SLOW_LOW = ([0.012, 0.0125], [1e-7, 1.1e-7])  # slower, to a low floor; below 5.5e-4 from x ~ 625


def test_a_crossing_is_found_and_named():
    """A converges faster to a higher floor than B: A reaches the targets above its floor
    first and leads early, B alone gets below it and ends lower; the report names the
    crossing."""
    lines, c = paper.compare(_arm("A", *FAST_HIGH), _arm("B", *SLOW_LOW), "step", "iterations")
    assert c.targets == {0.1: "a", 0.01: "a", 0.001: "a", 1e-4: "b", 1e-5: ""}  # A stalls at 5e-4
    assert c.early == "a" and c.end == "b"
    assert len(c.crossings) == 1
    lead, until, nxt, start = c.crossings[0]
    assert (lead, nxt) == ("A", "B") and 450 < until <= start < 800
    assert paper.verdict("faster", c, "A", "B") == (
        "mixed (each side first at some target); but B ends lower; the lead changes "
        f"(A until {until:.3g}, then B)"
    )
    text = "\n".join(lines)
    assert f"**Crossing**: A clearly ahead until iterations {until:.3g}, B clearly ahead from" in text
    assert (
        "rel. gap 0.01: iterations to reach it per seed: A 230, 219; B 384, 368: A first (1.7x fewer)"
        in text  # ln(100)/rate, interpolated
    )


def test_unequal_stepsize_and_density_are_flagged_as_confounds():
    a = _arm("IS", *FAST_HIGH, gamma=0.26, nnz=7.5)
    b = _arm("US", *SLOW_LOW, gamma=0.1, nnz=3.0)
    lines, c = paper.compare(a, b, "step", "iterations", bits_axis=True)
    text = "\n".join(lines)
    assert c.confounded
    assert "**Confound: unequal stepsizes** (IS/US = 2.6)" in text
    assert "**Confound: unequal density** (IS/US = 2.5 coordinates per round" in text
    assert "The side with the larger stepsize (IS) leads first and is overtaken" in text
    assert "stepsizes: IS 0.26 (c); US 0.1 (c)" in text
    assert paper.verdict("faster", c, "IS", "US").endswith("confounded (see above)")
    same = paper.compare(_arm("A", [0.02] * 2, [1e-3] * 2), _arm("B", [0.02] * 2, [1e-3] * 2), "step", "it")
    assert not same[1].confounded and "Confound" not in "\n".join(same[0])


def test_a_difference_within_the_seed_spread_is_no_clear_difference():
    """B's seeds straddle A's: a 2x difference of the means is not called a lead."""
    a = _arm("A", [0.01, 0.0105], [1e-9, 1e-9])
    b = _arm("B", [0.04, 0.006], [1e-9, 1e-9])
    lines, c = paper.compare(a, b, "step", "iterations")
    assert set(c.targets.values()) == {""} and c.early == "" and not c.crossings
    assert "no clear difference (within the seed spread or between two log points)" in "\n".join(lines)
    assert "faster" not in paper.verdict("faster", c, "A", "B")
    assert paper.verdict("similar", c, "A", "B") == "holds at every target and at the end"


def test_a_diverged_run_never_reaches_the_later_targets():
    a = _arm("A", [0.02, 0.02], [1e-9, 1e-9], diverge_at=200)
    b = _arm("B", [0.01, 0.011], [1e-9, 1e-9])
    lines, c = paper.compare(a, b, "step", "iterations")
    assert c.targets[0.1] == "a" and c.targets[1e-3] == "b"  # A got to 0.1 first, then stopped
    assert "- **Diverged**: A seed 0 at iterations 200, seed 1 at iterations 200" in "\n".join(lines)
    assert c.end == "b"


def test_findings_read_each_experiment_and_dataset():
    """Each experiment's arms found by method or compressor, its claim judged: IS first to
    the upper targets but US first below IS's floor and lower at the end (experiment 1 on
    w8a), EC-SGD lower at the end (experiment 2), HT first per bit to 0.01 (experiment 3)."""
    parts = []
    for exp, col, arms in (
        ("paper_exp1", "method", ("ec_sgd_is", "ec_sgd_us")),
        ("paper_exp2", "method", ("ec_lsvrg", "ec_sgd_is")),
        ("paper_exp3", "compressor", ("ht_paper", "topk_paper")),
    ):
        x = "bits_up_mean" if exp == "paper_exp3" else "step"
        for value, shape in zip(arms, (FAST_HIGH, SLOW_LOW), strict=True):
            arm = _arm(f"{exp}/{value}", *shape, x=x)
            parts.append(
                (
                    arm.trace.assign(experiment=exp, dataset="w8a", **{col: value}),
                    arm.runs.assign(experiment=exp, dataset="w8a", **{col: value}),
                )
            )
    trace = pd.concat([p[0] for p in parts], ignore_index=True)
    runs = pd.concat([p[1] for p in parts], ignore_index=True)
    text = "\n".join(paper.findings(trace, runs, ("paper_exp1", "paper_exp2", "paper_exp3")))
    assert "**w8a** (2 and 2 seeds), claim: mixed (each side first at some target); but US ends lower" in text
    assert "claim: does not hold (EC-SGD ends lower)" in text
    assert "rel. gap 0.01: bits per worker to reach it per seed: HT 230, 219; TopK 384, 368: HT first" in text
    assert text.count("**Crossing**") == 3


def _multirun_in_process(exp, dataset, out, overrides, jobs):
    """``efbench -m +experiment=exp dataset=...`` without a new process: each arm and seed of
    the experiment's sweep composed and run in turn into the sweep's folder, with Hydra's
    choices (the CLI's multirun itself is tested in test_sweep.py)."""
    params = _sweep(exp)
    key = next(k for k in params if k not in ("dataset", "seed"))
    given = [o[5:].split(",") for o in overrides if o.startswith("seed=")]
    rest = [o for o in overrides if not o.startswith("seed=")]
    for value in params[key]:
        for seed in given[-1] if given else params["seed"]:
            args = [f"+experiment={exp}", f"dataset={dataset}", f"{key}={value}", f"seed={seed}", *rest]
            with initialize_config_module("efbench.conf", version_base="1.3"):
                c = compose("config", overrides=["progress=false", *args], return_hydra_config=True)
            choices = dict(c.hydra.runtime.choices)
            del c.hydra
            run(c, out / exp / dataset / f"{key}={value},seed={seed}", choices)
    return 0


def test_gisette_runs_whenever_it_loads(tmp_path, monkeypatch):
    """Offline gisette cannot be downloaded (and is skipped, named in the report); a file of
    its shape in the mirror makes every experiment run on it with its own K = 50, and the
    report read it (the threshold calibration is dataset-blind: tested on a9a in
    test_sweep.py)."""
    import bz2

    rng = np.random.default_rng(0)
    lines = []
    for i in range(6000):
        cols = np.sort(rng.choice(5000, 8, replace=False)) + 1
        cols[-1] = 5000 if i == 0 else cols[-1]  # the last feature index is in the file
        vals = rng.choice([-1.0, -0.5, 0.5, 1.0], 8)
        lines.append(
            " ".join([("1" if i % 2 else "-1"), *(f"{j}:{v:g}" for j, v in zip(cols, vals, strict=True))])
        )
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "gisette_scale.bz2").write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(paper, "run_experiment", _multirun_in_process)
    out = tmp_path / "paper"
    args = ["--out", str(out), "--datasets", "gisette", "--quick", "--no-calibrate", "budget.iters=60"]
    paper.main([*args, "log_every=20"])
    report = (out / "report.md").read_text()
    assert "skipped" not in report and "| gisette " in report
    assert report.count("**gisette** (2 and 2 seeds), claim: ") == 3
    _, runs = paper.collect(out / "paper_exp3")
    topk = runs[runs.compressor == "topk_paper"]
    assert len(runs) == 4 and set(topk["final_nnz_mean"]) == {50.0}  # gisette's K
    assert set(runs.steps) == {60}
