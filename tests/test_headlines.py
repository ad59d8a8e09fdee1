"""efbench-headlines: claims read off the runs per seed, tuned arms, time split into its terms,
incomplete parts refused, and the command end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from efbench.analysis.collect import profile
from efbench.core.network import simulated_time
from efbench.reports import headlines


def _trace(arms: dict[str, tuple[np.ndarray, list[np.ndarray]]]) -> pd.DataFrame:
    """One run per seed and arm: (steps, [rel_gap of each seed])."""
    rows = []
    for arm, (steps, gaps) in arms.items():
        for seed, gap in enumerate(gaps):
            run = f"+experiment=hl_x_{arm},seed={seed}"
            for s, g in zip(steps, gap, strict=True):
                rows.append(
                    dict(run=run, arm=arm, step=s, bits_up_mean=10 * s, rel_gap=g, status="completed")
                )
    return pd.DataFrame(rows)


STEPS = np.arange(0, 101, 10.0)


def test_targets_are_read_per_seed_and_interpolated():
    trace = _trace(
        {
            "fast": (STEPS, [0.8**STEPS, 0.78**STEPS, 0.82**STEPS]),
            "slow": (STEPS, [0.95**STEPS, 0.94**STEPS, 0.96**STEPS]),
        }
    )
    spreads = headlines.per_seed(trace, "step", 1e-2)
    # median seed 0.8: 0.8^k = 1e-2 at k = ln(1e-2)/ln(0.8), between the log points 20 and 30
    assert spreads["fast"].median == pytest.approx(math.log(1e-2) / math.log(0.8))
    assert spreads["fast"].lo == pytest.approx(math.log(1e-2) / math.log(0.78))
    assert spreads["slow"].median == pytest.approx(math.log(1e-2) / math.log(0.95))
    assert math.isinf(spreads["slow"].hi)  # 0.96^100 = 0.017: one seed never gets there
    a = headlines.per_seed_values(trace, "step", 1e-1, "fast")
    b = headlines.per_seed_values(trace, "step", 1e-1, "slow")
    assert headlines.verdict(a, b, "fast", "slow") == "holds"
    assert headlines.verdict(b, a, "slow", "fast").startswith("does not hold (fast ahead)")
    # the tightest target every seed of both reaches after its first logged step
    # (0.96^100 = 0.017: one slow seed never reaches 0.01)
    assert headlines.common_target(trace, ["fast", "slow"], "step", (0.05, 0.02, 0.01), "rel_gap") == 0.02
    # 0.1 is crossed before the first logged step by a fast seed (0.78^10 = 0.083): no ratio there
    assert math.isnan(headlines.common_target(trace, ["fast", "slow"], "step", (0.1,), "rel_gap"))


def test_a_claim_within_the_seed_spread_is_no_clear_difference():
    trace = _trace({"a": (STEPS, [0.8**STEPS, 0.9**STEPS]), "b": (STEPS, [0.85**STEPS, 0.88**STEPS])})
    a = headlines.per_seed_values(trace, "step", 1e-1, "a")
    b = headlines.per_seed_values(trace, "step", 1e-1, "b")
    assert headlines.verdict(a, b, "a", "b").startswith("no clear difference")
    never = np.array([math.inf, math.inf])
    assert headlines.verdict(never, never, "a", "b").startswith("not testable")


def test_arms_parts_and_expected_runs():
    assert headlines.arm_of(pd.Series(["hl_sign_sgd", "hl_counterexample", "hl_grid_clag"])).tolist() == [
        "sgd",
        "counterexample",
        "clag",
    ]
    part = {p.name: p for p in headlines.PARTS["3pc"]}
    assert part["arms"].arms() == ["hl_3pc_clag", "hl_3pc_ef21", "hl_3pc_lag"]
    # 3 seeds x 9 multipliers per arm; the CLAG grid: 5 K x 5 zeta x its 3 multipliers, one seed
    assert part["arms"].expected(3, quick=False) == dict.fromkeys(part["arms"].arms(), 27)
    assert part["grid"].expected(3, quick=False) == {"hl_grid_clag": 75}
    assert part["grid"].expected(3, quick=True) == {"hl_grid_clag": 50}  # its quick grid [1, 16]
    for parts in headlines.PARTS.values():  # every part's overrides are key=value lines
        for p in parts:
            for lines in (p.overrides, p.tune, p.quick):
                assert isinstance(lines, tuple) and all("=" in line for line in lines), (p.name, lines)
            assert p.arms(), p.experiment
    cmd = part["arms"].command(2, quick=True, extra=["budget.iters=5"])
    assert (
        "+tune=stepsize" in cmd
        and "tune.grid=[0.25,1,4]" in cmd
        and cmd[-2:] == ["seed=0,1", "budget.iters=5"]
    )


def test_time_shares_split_the_simulated_time_into_its_terms():
    """The alpha-beta model is linear in alpha, 1/beta and c_grad: the three shares add up to
    one and each equals its own term computed by hand."""
    counts = dict(
        rounds_up=np.array([0.0, 10]),
        bits_up_round_max=np.array([0.0, 1e6]),
        bits_up_round_min=np.array([0.0, 1e6]),
        bits_link_round_max=np.array([0.0, 1e6]),
        calls_round_max=np.array([0.0, 100]),
        bits_up_mean=np.array([0.0, 1e6]),
        bits_down=np.array([0.0, 5e5]),
        rounds_down=np.array([0.0, 10]),
        step=np.array([0, 10]),
    )
    trace = pd.DataFrame({**counts, "run": "r", "arm": "sgd_ps"})
    runs = pd.DataFrame({"run": ["r"], "n_workers": [20], "collective": ["ps"]})
    shares = headlines.time_shares(trace, runs, "wan_slow").loc["sgd_ps"]
    prof = profile("wan_slow")
    total = simulated_time(prof, "ps", 20, {k: v[-1:] for k, v in counts.items()})[0]
    latency = prof.alpha * (10 + 10)
    compute = prof.c_grad * 100
    assert shares.sum() == pytest.approx(1.0)
    assert shares["latency"] == pytest.approx(latency / total)
    assert shares["compute"] == pytest.approx(compute / total)
    assert shares["bandwidth"] == pytest.approx((1e6 / prof.beta_up + 5e5 / prof.beta_down) / total)


def test_report_only_over_an_interrupted_run_draws_no_verdict(tmp_path, mirror, data_cache, monkeypatch):
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(data_cache))
    out = tmp_path / "hl"
    args = [
        "--out",
        str(out),
        "--only",
        "sign",
        "--quick",
        "--seeds",
        "1",
        "budget.iters=120",
        "log_every=10",
    ]
    headlines.main(args)
    report = (out / "report.md").read_text()
    for needle in (
        "## Sign-based methods",
        "| seed claim",
        "Error feedback fixes signSGD",
        "cgd + Top-1: diverged",
        "ec_gd + Top-1: completed",
        "Each arm at its best stepsize.multiplier of 0.25, 1, 4, chosen by the median over every seed",
        "efbench commit ",
        "`sign_vs_bits.png`",
    ):
        assert needle in report, needle
    assert "incomplete" not in report
    assert (out / "sign_vs_bits.pdf").stat().st_size > 5000
    # one run of the tuned grid interrupted: the part is incomplete, its claims are not read
    summary = next((out / "sign" / "arms").glob("*ef_signsgd*/summary.json"))
    summ = json.loads(summary.read_text())
    summary.write_text(json.dumps({**summ, "status": "interrupted"}))
    headlines.main([*args[:7], "--report-only"])
    report = (out / "report.md").read_text()
    assert "**arms: incomplete**: 1 runs interrupted (ef_signsgd)" in report
    assert "arm ef_signsgd: 2 of 3 runs finished" in report
    assert "not read (incomplete runs)" in report and "| holds" not in report
    # a part never run says so
    headlines.main(["--out", str(tmp_path / "empty"), "--only", "3pc", "--report-only"])
    assert "**arms: incomplete**: 3pc/arms: not run" in (tmp_path / "empty" / "report.md").read_text()


def test_the_command_fails_closed(tmp_path, mirror, data_cache, monkeypatch):
    """Bad --seeds / --jobs are refused in one line; a headline whose runs fail still writes its
    report (saying what is missing) and exits non-zero naming the parts."""
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(data_cache))
    for bad in (["--seeds", "0"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as stop:
            headlines.main(["--out", str(tmp_path / "x"), "--only", "sign", *bad])
        assert stop.value.code == 2
    out = tmp_path / "hl"
    with pytest.raises(SystemExit) as stop:  # every run refused: budget.iters must be >= 1
        headlines.main(["--out", str(out), "--only", "sign", "--quick", "--seeds", "1", "budget.iters=0"])
    assert "runs failed or were interrupted in sign/arms, sign/counterexample" in str(stop.value.code)
    assert "**arms: incomplete**" in (out / "report.md").read_text()
