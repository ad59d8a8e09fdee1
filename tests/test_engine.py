"""The one engine: the compiled step and the numpy path against the plain reference
(tests/reference.py) and against each other, for every fusable compressor x estimator x
EC form x bit setting (generated from the registry); batches against runs alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem
from hydra.utils import instantiate
from omegaconf import OmegaConf
from reference import ECReference
from test_cli import cfg_of

from efbench.core.network import COUNTS
from efbench.core.stepsize import Schedule
from efbench.engine.loop import Limits, RunSpec, choose_engine, execute
from efbench.errors import ConfigError
from efbench.methods.base import ErrorCompensated, FusedSpec
from efbench.problems.datasets import partition
from efbench.problems.logistic import LogisticProblem, QuadraticProblem
from efbench.run.runner import run, run_batch, run_seeds

CONF = Path(__file__).resolve().parents[1] / "efbench" / "conf"
ESTIMATORS = {
    "us": {"kind": "sgd", "sampling": "uniform", "batch": 1},
    "is": {"kind": "sgd", "sampling": "importance", "batch": 1},
    "lsvrg_shared": {"kind": "lsvrg", "sampling": "uniform", "batch": 1, "p": 0.2, "coin": "shared"},
    "lsvrg_worker": {"kind": "lsvrg", "sampling": "importance", "batch": 1, "p": 0.2, "coin": "per_worker"},
}
PARAMS = {"ht": {"lam": 0.02}, "topk": {"k": 3}}


def tied_problem(n=4, m=12, d=10, seed=0, density=0.5) -> LogisticProblem:
    """Binary features: sample gradients have many equal magnitudes (TopK ties); below 25 %
    nonzeros the problem keeps its rows sparse (CSR sampling and passes)."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n * m, d)) < density).astype(float)
    y = np.where(rng.random(n * m) < 0.5, -1.0, 1.0)
    A, Y = partition(X, y, n, m, "file", 0)
    return LogisticProblem(A, Y, 1e-3)


def registry_compressors(problem) -> dict[str, dict]:
    """Every compiled compressor (class and rule, such as TopK's ``ties``) whose EC-SGD the
    compiled step runs, from its first config (presets such as ht_paper only set other
    parameters of the same class and rule)."""
    out, seen = {}, set()
    for path in sorted((CONF / "compressor").glob("*.yaml")):
        composed = cfg_of("+experiment=paper_reference", f"compressor={path.stem}").compressor
        spec = {**OmegaConf.to_container(composed, resolve=True), **PARAMS.get(path.stem, {})}
        method = ErrorCompensated(name="e", estimator=ESTIMATORS["us"], compressor=instantiate(spec))
        fused = method.fuse(problem)
        if isinstance(fused, FusedSpec) and fused.comp not in seen:
            seen.add(fused.comp)
            out[path.stem] = spec
    return out


PROBLEM = tied_problem()
PROBLEMS = {"dense": PROBLEM, "sparse": tied_problem(m=30, d=40, density=0.1)}
FUSABLE = registry_compressors(PROBLEM)


def test_registry_has_the_fusable_compressors():
    assert {"identity", "ht", "topk", "topk_keep_paper"} <= set(FUSABLE)
    assert FUSABLE["topk_keep_paper"]["ties"] == "keep"


def _runs(comp_spec, est, form, float_bits, index_bits, gamma=0.5, seeds=(3,), problem=PROBLEM):
    runs = []
    for seed in seeds:
        comp = instantiate({**comp_spec, "float_bits": float_bits, "index_bits": index_bits})
        method = ErrorCompensated(name="e", estimator=est, compressor=comp, ec_form=form)
        runs.append(RunSpec(method, Schedule(gamma, "c"), np.zeros(problem.d), seed))
    return runs


def _trace(outcome) -> pd.DataFrame:
    return pd.DataFrame(outcome.rows).drop(columns="time")


@pytest.mark.parametrize("float_bits", [16, 32, 64])
@pytest.mark.parametrize("index_bits", [True, False])
@pytest.mark.parametrize("form", ["scaled", "plain"])
@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize("comp", list(FUSABLE))
@pytest.mark.parametrize("data", list(PROBLEMS))
def test_engines_agree(data, comp, est, form, index_bits, float_bits):
    """Same draws, same messages: bits, coordinates and oracle calls equal at every step;
    since both engines call the same compiled blocks in the same order, f is equal too."""
    p = PROBLEMS[data]
    assert (p.csr is not None) == (data == "sparse")
    lim = Limits(60, np.inf, np.inf, 1, 1e6)
    xstar = np.zeros(p.d)
    args = (FUSABLE[comp], ESTIMATORS[est], form, float_bits, index_bits)
    a = execute(p, 0.0, xstar, _runs(*args, problem=p), lim, "numpy")[0]
    b = execute(p, 0.0, xstar, _runs(*args, problem=p), lim, "numba")[0]
    assert (a.engine, b.engine) == ("numpy", "numba")
    ta, tb = _trace(a), _trace(b)
    for col in ("bits_up_mean", "bits_up_max", "bits_down", "nnz_mean", "epochs", "step"):
        np.testing.assert_array_equal(ta[col], tb[col], err_msg=col)
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)  # and bit for bit, in fact


@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize("comp", list(FUSABLE))
def test_numpy_engine_matches_plain_reference_step_by_step(comp, est):
    """On data without ties: an independent implementation rounds differently, which on
    tied data may swap equal coordinates (the tie rule itself: tests/test_blocks.py)."""
    p = small_problem(n=4, m=12, d=10, l2=1e-3)
    spec, e_cfg = FUSABLE[comp], ESTIMATORS[est]
    gamma = 0.5
    method = ErrorCompensated(name="e", estimator=e_cfg, compressor=instantiate(spec))
    probs = None
    if e_cfg["sampling"] == "importance":
        L = p.row_norm2 / 4 + p.l2
        probs = L / L.sum(axis=1, keepdims=True)
    kind = {"Identity": "identity", "HardThreshold": "ht", "TopK": "topk"}[spec["_target_"].split(".")[-1]]
    ref = ECReference(
        p.A,
        p.y,
        p.l2,
        kind,
        lam=spec.get("lam", 0.0),
        k=spec.get("k", 1),
        probs=probs,
        lsvrg=e_cfg["kind"] == "lsvrg",
        p=e_cfg.get("p", 0.0),
        coin=e_cfg.get("coin", "shared"),
        index_bits=spec.get("index_bits", True),
        float_bits=spec.get("float_bits", 32),
    )
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    state = method.init(p, np.zeros(p.d), rng_a)
    x, e, w, gw = ref.init(np.zeros(p.d))
    for _ in range(40):
        state, rnd = method.step(p, state, gamma, rng_a)
        x, e, w, gw, bits, nnz, calls = ref.step(x, e, w, gw, gamma, rng_b)
        assert rnd.bits_up.tolist() == bits.tolist() and rnd.nnz.tolist() == nnz.tolist()
        assert float(np.mean(rnd.calls)) == pytest.approx(calls)
        np.testing.assert_allclose(state.x, x, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state.e, e, rtol=1e-12, atol=1e-15)


def test_compiled_step_matches_plain_reference():
    """The fused kernel, through the engine, against the reference's f at every step."""
    p = small_problem(n=4, m=12, d=10, l2=1e-3)
    spec = FUSABLE["topk"]
    run_ = _runs(spec, ESTIMATORS["lsvrg_shared"], "plain", 32, True)
    out = execute(p, 0.0, np.zeros(p.d), run_, Limits(50, np.inf, np.inf, 1, 1e6), "numba")[0]
    ref = ECReference(p.A, p.y, p.l2, "topk", k=spec["k"], scaled=False, lsvrg=True, p=0.2)
    rng = np.random.default_rng(3)
    x, e, w, gw = ref.init(np.zeros(p.d))
    for row in out.rows[1:]:
        x, e, w, gw, *_ = ref.step(x, e, w, gw, 0.5, rng)
        assert row["f"] == pytest.approx(p.loss(x), rel=1e-11)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_budgets_checked_inside_the_compiled_step(engine):
    """A bit budget reached mid-way between log points stops the run at the same step on
    either engine: before the first step at which the mean bits reach the budget."""
    runs = _runs(FUSABLE["topk"], ESTIMATORS["us"], "scaled", 32, True, seeds=(1, 2))
    per_round = 3 * 32 + min(3 * 4, 10)
    out = execute(
        PROBLEM, 0.0, np.zeros(PROBLEM.d), runs, Limits(1000, 50 * per_round + 1, np.inf, 40, 1e6), engine
    )
    assert [o.steps for o in out] == [51, 51]
    assert [o.rows[-1]["step"] for o in out] == [51, 51] and out[0].rows[-2]["step"] == 40


def test_engine_choice_is_honest():
    spec = FUSABLE["topk"]
    fused = _runs(spec, ESTIMATORS["us"], "scaled", 32, True)
    assert choose_engine("auto", fused, PROBLEM) is not None
    assert choose_engine("numpy", fused, PROBLEM) is None
    batch = ErrorCompensated(
        name="e", estimator={**ESTIMATORS["us"], "batch": 4}, compressor=instantiate(spec)
    )
    other = [RunSpec(batch, Schedule(0.1, "c"), np.zeros(PROBLEM.d), 0)]
    assert choose_engine("auto", other, PROBLEM) is None
    with pytest.raises(ConfigError, match=r"engine: numba cannot run this: sampling.batch=4"):
        choose_engine("numba", other, PROBLEM)
    quad = QuadraticProblem.counterexample()
    with pytest.raises(ConfigError, match="QuadraticProblem has no compiled step"):
        choose_engine("numba", fused, quad)
    with pytest.raises(ConfigError, match="engine: unknown value 'jax'"):
        choose_engine("jax", fused, PROBLEM)


@pytest.mark.parametrize("method", ["ef21", "cgd", "mem_sgd", "diana", "ef_signsgd"])
def test_numba_engine_refuses_unfusable_methods_from_the_cli(method, tmp_path):
    with pytest.raises(ConfigError, match="engine: numba cannot run this"):
        run(
            cfg_of(
                f"method={method}",
                "compressor=topk" if method != "diana" else "compressor=qsgd",
                "engine=numba",
                "budget.iters=5",
            ),
            tmp_path,
        )
    assert (tmp_path / "summary.json").is_file()


# every batchable key, with the method and engine it applies to
BATCH_CASES = [
    (["method=ec_sgd_is", "compressor=ht"], "seed", [0, 3, 7]),
    (["method=ec_sgd_us", "compressor=ht"], "stepsize.multiplier", [0.25, 0.5, 2.0]),
    (["method=ec_sgd_us", "compressor=topk", "stepsize=constant"], "stepsize.gamma", [0.01, 0.1]),
    (["method=ec_sgd_us", "compressor=ht", "stepsize=decreasing"], "stepsize.k0", [10, 100]),
    (["method=ec_sgd_us", "compressor=ht"], "compressor.lam", [0.0, 0.01, 0.1]),
    (["method=ec_lsvrg", "compressor=topk"], "compressor.k", [1, 3, 30]),
    (
        ["method=ec_lsvrg", "compressor=ht", "method.estimator.coin=per_worker"],
        "method.estimator.p",
        [0.01, 0.2],
    ),
    (["method=ec_sgd_us", "compressor=ht", "x0=shift"], "dataset.x0_shift", [0.5, 1.5]),
    (["method=ec_sgd", "compressor=qsgd"], "compressor.s", [1, 4]),
    (["method=ec_gd", "compressor=rounding"], "compressor.delta", [0.01, 0.1]),
    (["method=clag", "compressor=topk"], "method.zeta", [0.0, 1.0, 8.0]),
    (["method=diana", "compressor=qsgd", "compressor.s=4"], "method.alpha", [0.05, 0.1]),
    (["method=deep_squeeze", "compressor=topk"], "method.eta", [0.05, 0.2]),
    (["method=mem_sgd", "compressor=topk"], "method.a", [1.0, 2.0]),
]


@pytest.mark.parametrize("engine", ["numpy", "auto"])
@pytest.mark.parametrize("overrides,key,values", BATCH_CASES, ids=[c[1] for c in BATCH_CASES])
def test_batch_reproduces_runs_alone_bit_for_bit(overrides, key, values, engine, tmp_path):
    common = [*overrides, f"engine={engine}", "budget.iters=240", "log_every=40"]
    cfgs = [cfg_of(*common, f"{key}={v}", "seed=1" if key != "seed" else f"seed={v}") for v in values]
    batch = run_batch(cfgs, [tmp_path / f"b{i}" for i in range(len(cfgs))])
    assert {s["batch_size"] for s in batch} == {len(values)}
    for i, cfg in enumerate(cfgs):
        alone = run(cfg, tmp_path / f"a{i}")
        a = pd.read_parquet(tmp_path / f"b{i}" / "trace.parquet").drop(columns="time")
        b = pd.read_parquet(tmp_path / f"a{i}" / "trace.parquet").drop(columns="time")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert batch[i]["config_hash"] == alone["config_hash"] and batch[i]["engine"] == alone["engine"]
    traces = [pd.read_parquet(tmp_path / f"b{i}" / "trace.parquet") for i in range(len(cfgs))]
    assert not all(t["f"].equals(traces[0]["f"]) for t in traces[1:])  # the key did change the runs


def test_batch_refuses_runs_that_differ_in_other_keys(tmp_path):
    with pytest.raises(ConfigError, match="batch: the runs of a batch may differ only in"):
        run_batch([cfg_of("compressor=ht"), cfg_of("compressor=topk")], [tmp_path / "a", tmp_path / "b"])


def test_a_bad_run_in_a_batch_is_recorded_and_the_others_go_on(tmp_path):
    cfgs = [cfg_of("compressor=topk", f"compressor.k={k}", "budget.iters=50") for k in (2, 1000)]
    with pytest.raises(ConfigError, match="compressor.k"):
        run_batch(cfgs, [tmp_path / "good", tmp_path / "bad"])
    assert pd.read_json(tmp_path / "bad" / "summary.json", typ="series")["status"] == "error"
    assert pd.read_json(tmp_path / "good" / "summary.json", typ="series")["status"] == "completed"


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_one_diverging_run_does_not_stop_the_others(engine, tmp_path):
    cfgs = [
        cfg_of(
            "method=ec_sgd_us",
            "compressor=identity",
            "stepsize=constant",
            f"stepsize.gamma={g}",
            "budget.iters=200",
            "log_every=10",
            f"engine={engine}",
        )
        for g in (1e9, 0.01)
    ]
    out = run_batch(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert [s["status"] for s in out] == ["diverged", "completed"] and out[1]["steps"] == 200


def test_divergence_inside_a_compiled_call_stops_at_the_same_log_point(tmp_path):
    """The compiled step runs past several log points in one call; a run found diverged at
    one of them ends there, with the trace the numpy engine (one call per log point) writes."""
    traces, summaries = [], []
    for engine in ("numpy", "numba"):
        cfg = cfg_of(
            "method=ec_sgd_us",
            "compressor=identity",
            "stepsize=constant",
            "stepsize.gamma=3",
            "budget.iters=400",
            "log_every=3",
            "diverge_factor=3",
            f"engine={engine}",
        )
        summaries.append(run(cfg, tmp_path / engine))
        traces.append(pd.read_parquet(tmp_path / engine / "trace.parquet").drop(columns="time"))
    assert [s["status"] for s in summaries] == ["diverged", "diverged"]
    # found at a log point inside the first compiled call (16 steps), which ran past it
    assert summaries[0]["steps"] == summaries[1]["steps"] == traces[1]["step"].iloc[-1] < 16
    assert summaries[1]["steps"] % 3 == 0
    pd.testing.assert_frame_equal(traces[0], traces[1], check_exact=True)


def test_seeds_list_and_separate_runs_resume_each_other(tmp_path):
    run(cfg_of("budget.iters=100", "seed=1"), tmp_path / "seed=1")
    out = run_seeds(cfg_of("budget.iters=100"), [0, 1], tmp_path)
    assert out[1].get("skipped") and not out[0].get("skipped")
    assert all(s.get("skipped") for s in run_seeds(cfg_of("budget.iters=100"), [0, 1], tmp_path))
    with pytest.raises(ConfigError, match="seeds"):
        run_seeds(cfg_of(), [1, 1], tmp_path)


def test_declared_metrics_are_the_trace_columns(tmp_path):
    for method, extra in (
        ("ec_sgd_is", ["err2"]),
        ("clag", ["skipped_frac"]),
        ("d_psgd", ["consensus"]),
        ("mem_sgd", ["err2", "gap_avg"]),
        ("gd", []),
    ):
        run(cfg_of(f"method={method}", "compressor=topk", "budget.iters=20"), tmp_path / method)
        cols = list(pd.read_parquet(tmp_path / method / "trace.parquet").columns)
        assert cols[11:] == [*extra, *COUNTS, "rounds_down", "time_sim", "gamma", "time"], method


def test_log_spaced_schedule_is_the_default(tmp_path):
    lim = Limits(2000, np.inf, np.inf, None, 1e6, 10)
    points, k = [], 0
    while k < 2000:
        k = lim.next_log(k)
        points.append(k)
    assert points[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12]
    ratios = np.array(points[10:]) / np.array(points[9:-1])
    assert np.all((ratios >= 1.2) & (ratios <= 10**0.1 + 1e-12))
    run(cfg_of("budget.iters=2000"), tmp_path)
    steps = pd.read_parquet(tmp_path / "trace.parquet")["step"].tolist()
    assert steps == [0, *[p for p in points if p < 2000], 2000]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0 < summary["log_time"] < summary["wall_time"]  # the metrics' share is reported
    assert Limits(100, np.inf, np.inf, 30, 1e6).next_log(30) == 60


def test_problem_is_built_once_per_process():
    from efbench.run.runner import build_setup

    a, b = build_setup(cfg_of("seed=1")), build_setup(cfg_of("seed=2", "stepsize.multiplier=3"))
    assert a is b
    assert build_setup(cfg_of("problem.l2=1e-3")) is not a


@pytest.mark.parametrize("decay", [None, "inv", "inv_sqrt"])
def test_schedule_blocks_equal_the_scalar_rule(decay):
    s = Schedule(0.37, "f", decay, 7.0)
    np.testing.assert_array_equal(s.values(13, 500), [s(k) for k in range(13, 513)])


def test_a_sampling_of_ones_own_runs_on_both_engines(tmp_path):
    """sampling.name=<dotted path>: drawn by the compiled step as by numpy, bit for bit, with
    the theory stepsize of its own smoothness constant."""
    common = [
        "method=ec_sgd",
        "sampling.name=reference.HalfImportance",
        "compressor=topk",
        "budget.iters=300",
    ]
    a = run(cfg_of(*common, "engine=numpy"), tmp_path / "a")
    b = run(cfg_of(*common, "engine=numba"), tmp_path / "b")
    assert (a["engine"], b["engine"]) == ("numpy", "numba")
    assert "L_S/(n*tau)" in a["stepsize_formula"] and "L_S=" in a["stepsize_formula"]
    ta, tb = (pd.read_parquet(tmp_path / d / "trace.parquet").drop(columns="time") for d in "ab")
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    assert ta["rel_gap"].iloc[-1] < 0.5


def test_runs_with_different_samplings_never_share_a_compiled_call():
    def spec(sampling):
        est = {**ESTIMATORS["is"], "sampling": sampling}
        method = ErrorCompensated(name="e", estimator=est, compressor=instantiate(FUSABLE["topk"]))
        return RunSpec(method, Schedule(0.1, "c"), np.zeros(PROBLEM.d), 0)

    mixed = [spec("importance"), spec("reference.HalfImportance")]
    assert choose_engine("auto", mixed, PROBLEM) is None
    with pytest.raises(ConfigError, match="differ in more than"):
        choose_engine("numba", mixed, PROBLEM)
    assert choose_engine("numba", [spec("importance"), spec("importance")], PROBLEM) is not None
