"""efbench-headlines: the comparisons read off curves, and the command end to end."""

import math

import numpy as np
import pandas as pd

from efbench import headlines


def _trace(arms: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    rows = []
    for arm, (bits, gap) in arms.items():
        for seed in (0, 1):
            run = f"+experiment=hl_x_{arm},seed={seed}"
            for b, g in zip(bits, gap, strict=True):
                rows.append(dict(run=run, arm=arm, bits_up_mean=b, step=b, rel_gap=g, status="completed"))
    return pd.DataFrame(rows)


def test_passage_tables_and_targets_are_read_off_the_curves():
    bits = np.array([0.0, 100, 200, 400, 800])
    trace = _trace(
        {"a": (bits, np.array([1, 0.3, 0.1, 0.05, 0.02])), "b": (bits, np.array([1, 0.5, 0.3, 0.1, 0.08]))}
    )
    table = headlines.passage_table(trace, "bits_up_mean")
    assert table.loc["a", 0.1] == 200 and table.loc["b", 0.1] == 400
    assert table.loc["a", 0.03] == 800 and math.isinf(table.loc["b", 0.03])
    assert headlines.tightest(table, ("a", "b")) == 0.1  # the smallest target both reach
    assert headlines.target_of(trace, "step") == 2 * 0.08  # twice the worst final value
    assert headlines.ratio(800, 200) == "4x" and headlines.fmt(math.inf) == "never"
    assert headlines.arms(trace).tolist()[0] == "a"


def test_headlines_command_writes_a_report_from_the_runs(tmp_path, mirror, data_cache, monkeypatch):
    monkeypatch.setenv("EFBENCH_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(data_cache))
    out = tmp_path / "hl"
    headlines.main(
        ["--out", str(out), "--only", "squeeze", "sign", "--quick", "--seeds", "1", "budget.iters=120"]
    )
    report = (out / "report.md").read_text()
    for needle in (
        "## DoubleSqueeze, DCD-PSGD and DeepSqueeze",
        "seconds on lan_high_latency",
        "- wan_slow: fastest centralized",
        "| dcd_psgd_2bit",
        "## Sign-based methods",
        "| stochastic_sign",
        "counterexample, cgd + Top1: diverged",
        "counterexample, ec_gd + Top1: completed",
        "`squeeze_vs_time.png`",
    ):
        assert needle in report, needle
    assert (out / "sign_vs_bits.pdf").stat().st_size > 5000
