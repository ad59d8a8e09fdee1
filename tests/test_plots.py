"""Figures and the frames behind them: resampling, median and band, labels, fonts, the CSV
written beside each figure, categorical identifiers."""

import json
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from test_cli import cfg_of, efbench

from efbench.analysis import plots
from efbench.analysis.collect import collect, resample
from efbench.errors import ConfigError
from efbench.run.runner import run


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _trace(runs: dict[str, tuple[list[float], list[float]]], **ids) -> pd.DataFrame:
    """A hand-made trace: one run per entry (x values, y values), identifiers as given."""
    rows = [
        {"run": run, **{k: v[run] if isinstance(v, dict) else v for k, v in ids.items()}, "x": x, "y": y}
        for run, (xs, ys) in runs.items()
        for x, y in zip(xs, ys, strict=True)
    ]
    return pd.DataFrame(rows)


def _fake_run(folder, config, choices=None, trace=None):
    """A run directory as efbench writes it (summary.json and trace.parquet), by hand."""
    folder.mkdir(parents=True)
    base = {
        "dataset": {"name": "a9a"},
        "method": {"name": "ef21", "_target_": "efbench.methods.threepc.EF21"},
        "compressor": {"_target_": "efbench.core.compressors.TopK", "k": 3},
        "stepsize": {"rule": "theory", "multiplier": 1.0},
        "participation": {"kind": "full"},
        "seed": 0,
    }
    for key, value in config.items():  # dotted keys into the nested config
        *path, leaf = key.split(".")
        node = base
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value
    trace = trace if trace is not None else pd.DataFrame({"step": [0, 1, 2], "rel_gap": [1.0, 0.5, 0.25]})
    trace.to_parquet(folder / "trace.parquet")
    summ = {"status": "completed", "config": base, "choices": choices or {}, "engine": "numpy"}
    (folder / "summary.json").write_text(json.dumps({**summ, "config_hash": f"h{abs(hash(folder)) % 10**6}"}))


# ---- resample ---------------------------------------------------------------------------


def test_resample_is_exact_where_the_drawn_line_is_straight():
    """Linear interpolation in log y on a linear grid; in log x and log y on a log grid:
    on y = 10^(-x/10), and on y = x^-2 (straight in log-log), every grid value is exact."""
    x = [0.0, 10.0, 30.0]
    t = _trace({"a": (x, [10 ** (-v / 10) for v in x])})
    r = resample(t, "x", "y", n=7, log=False)
    assert r["x"].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    np.testing.assert_allclose(r["y"], 10 ** (-r["x"] / 10), rtol=1e-12)
    x = [0.0, 1.0, 10.0, 1000.0]  # x = 0 has no place on a log grid
    t = _trace({"a": (x, [1.0, 1.0, 1e-2, 1e-6])})
    r = resample(t, "x", "y", n=4, log=True)
    np.testing.assert_allclose(r["x"], [1.0, 10.0, 100.0, 1000.0])
    np.testing.assert_allclose(r["y"], r["x"] ** -2.0, rtol=1e-12)
    at = resample(_trace({"a": ([0, 10], [1.0, 0.08])}), "x", "y", grid=np.array([10.0]), log=False)
    assert at["y"].iloc[0] == 0.08  # a logged point exactly, not 10 ** log10(0.08)
    lin = resample(t, "x", "y", grid=np.array([500.0]), log=False, logy=False)
    assert lin["y"].iloc[0] == pytest.approx(1e-2 + (1e-6 - 1e-2) * (490 / 990))


def test_resample_spans_the_union_of_the_runs_ranges():
    """Seeds with different x ranges share one grid spanning all of them; a run has no
    value outside its own range (no extrapolation); one row per run and grid point."""
    t = _trace(
        {"long": ([0, 100], [1.0, 1e-4]), "short": ([20, 50], [1e-1, 1e-2])},
        label="EF21, Top-3",
        seed={"long": 0, "short": 1},
    )
    t.attrs["ids"] = ["run", "label", "seed"]
    r = resample(t, "x", "y", by=["label"], n=11, log=False)
    assert len(r) == 2 * 11 and list(r.columns) == ["label", "run", "seed", "x", "y"]
    long, short = r[r.run == "long"], r[r.run == "short"]
    assert long["x"].tolist() == short["x"].tolist() == [float(v) for v in range(0, 101, 10)]
    assert long["y"].notna().all() and (long.seed == 0).all()
    assert short["y"].notna().tolist() == [False, False, True, True, True, True] + [False] * 5
    assert short["y"].iloc[2] == pytest.approx(1e-1) and short["y"].iloc[5] == pytest.approx(1e-2)
    # each group of `by` its own grid; a given grid is used as it is
    t2 = pd.concat([t, _trace({"other": ([0, 10], [1.0, 0.5])}, label="SGD", seed=0)])
    r2 = resample(t2, "x", "y", by=["label"], n=3, log=False)
    assert r2[r2.label == "SGD"]["x"].tolist() == [0.0, 5.0, 10.0]
    r3 = resample(t2, "x", "y", grid=np.array([5.0, 60.0]), log=False)
    assert r3["x"].tolist() == [5.0, 60.0] * 3 and r3["y"].isna().tolist() == [0, 0, 1, 1, 0, 1]


def test_resample_floors_exact_zeros_skips_nan_and_keeps_the_last_of_equal_x():
    t = _trace({"a": ([0, 10, 10, 20, 30], [1.0, 0.5, 0.1, np.nan, 0.0])})
    r = resample(t, "x", "y", grid=np.array([10.0, 30.0]), log=False)
    assert r["y"].tolist() == [0.1, plots.FLOOR]  # 0.1: after the steps that sent nothing


# ---- lines: median, band -------------------------------------------------------------------


def _three_seeds():
    """Three seeds at constant 1e-1, 1e-2, 1e-3 on x in [0, 100]; the third stops at 40."""
    return _trace(
        {
            "s0": ([0, 100], [1e-1, 1e-1]),
            "s1": ([0, 100], [1e-2, 1e-2]),
            "s2": ([0, 40], [1e-3, 1e-3]),
        },
        label="EF21, Top-3",
        dataset="a9a",
        seed={"s0": 0, "s1": 1, "s2": 2},
    )


def test_median_and_band_over_seeds_on_known_values():
    t = _three_seeds()
    r = resample(t, "x", "y", by=["label"], n=11, log=False)
    med = plots.summarize(r, "x", "y", ["label"])
    assert med["runs"].tolist() == [3] * 5 + [2] * 6  # the third seed ends at 40, the line goes on
    np.testing.assert_allclose(med["y_median"], [1e-2] * 5 + [(1e-1 + 1e-2) / 2] * 6)
    np.testing.assert_allclose(med["y_min"], [1e-3] * 5 + [1e-2] * 6)
    np.testing.assert_allclose(med["y_max"], [1e-1] * 11)
    g = plots.summarize(r, "x", "y", ["label"], center="gmean", band="iqr")
    np.testing.assert_allclose(g["y_gmean"], [1e-2] * 5 + [10**-1.5] * 6)
    np.testing.assert_allclose(g["y_q25"][:5], 1e-3 + 0.5 * (1e-2 - 1e-3))
    np.testing.assert_allclose(g["y_q75"][:5], 1e-2 + 0.5 * (1e-1 - 1e-2))
    # drawn where at least half of the line's runs are: not one seed's last stretch alone
    t = _trace({"s0": ([0, 100], [1e-1, 1e-1]), "s1": ([0, 60], [1e-2, 1e-2]), "s2": ([0, 40], [1e-3, 1e-3])})
    tail = plots.summarize(resample(t, "x", "y", n=11, log=False), "x", "y", [])
    assert tail["runs"].tolist() == [3] * 5 + [2] * 2 + [1] * 4
    np.testing.assert_allclose(tail["y_median"], [1e-2] * 5 + [0.055] * 2 + [np.nan] * 4)
    assert tail["y_max"].isna().tolist() == [False] * 7 + [True] * 4
    with pytest.raises(ConfigError, match="band: unknown value 'sd'"):
        plots.summarize(r, "x", "y", ["label"], band="sd")


def test_the_figure_draws_the_median_to_the_end_of_the_longest_seed():
    fig = plots.plot_curves(_three_seeds(), x="x", y="y", points=11)
    (ax,) = fig.axes
    (line,) = ax.lines
    assert line.get_xdata()[-1] == 100.0  # not cut where the third seed ended
    np.testing.assert_allclose(line.get_ydata(), [1e-2] * 5 + [0.055] * 6)
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(1e-3) and ys.max() == pytest.approx(1e-1)
    (legend,) = fig.legends  # one legend for the figure, none in a panel
    assert ax.get_legend() is None
    assert legend.get_title().get_text() == "median of 3 seeds, shaded: min–max"
    assert [t.get_text() for t in legend.get_texts()] == ["EF21, Top-3"]
    one = _trace({"a": ([0, 100], [1.0, 1e-4])}, label="EF21, Top-3")
    (line,) = plots.plot_curves(one, x="x", y="y", points=3).axes[0].lines
    np.testing.assert_allclose(line.get_ydata(), [1.0, 1e-2, 1e-4])  # straight on the log axis
    fig = plots.plot_curves(_three_seeds(), x="x", y="y", center="gmean", band="iqr")
    assert fig.legends[0].get_title().get_text() == "geometric mean of 3 seeds, shaded: interquartile range"


def test_one_legend_styles_apart_in_grayscale_and_journal_sizes():
    """Two panels (datasets), five lines: one legend below them, each line its own
    (dash, marker) pair, a line keeps its style in every panel; full width 6.9 in."""
    labels = [f"line {i}" for i in range(5)]
    t = pd.concat(
        _trace({f"{ds}{i}": ([0, 1e6], [1.0, 10.0 ** -(i + 1)])}, label=lab, dataset=ds)
        for ds in ("a9a", "w8a")
        for i, lab in enumerate(labels)
    )
    fig = plots.plot_curves(t, x="x", y="y")
    assert fig.get_size_inches()[0] == pytest.approx(6.9) and len(fig.legends) == 1
    a, b = fig.axes
    styles = [(ln.get_linestyle(), ln.get_marker()) for ln in a.lines]
    assert len({d for d, _ in styles}) == 4 and len({m for _, m in styles}) == 5  # dashes, markers
    assert styles == [(ln.get_linestyle(), ln.get_marker()) for ln in b.lines]
    assert {t.get_fontsize() for t in fig.legends[0].get_texts()} == {8.0}
    one = plots.plot_curves(t[t.dataset == "a9a"], x="x", y="y")
    assert one.get_size_inches()[0] == pytest.approx(3.3)
    assert plots.plot_curves(t, x="x", y="y", width="column").get_size_inches()[0] == pytest.approx(3.3)


def test_bits_axis_in_si_units():
    t = _trace({"a": ([0, 2e5, 4e5], [1.0, 0.1, 0.01])}, dataset="a9a", label="EF21, Top-3")
    t = t.rename(columns={"x": "bits_up_mean", "y": "rel_gap"})
    fig = plots.plot_curves(t, x="bits_up_mean")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "uplink bits per worker (kbit)"
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "200" in ticks and "400" in ticks
    fig = plots.plot_curves(t.assign(bits_up_mean=t.bits_up_mean * 10), x="bits_up_mean", logx=True)
    assert fig.axes[0].get_xlabel() == "uplink bits per worker (Mbit)"


def test_a_line_pooling_different_configs_is_warned_about():
    t = _trace(
        {"a": ([0, 1], [1.0, 0.1]), "b": ([0, 1], [1.0, 0.2])},
        method="ef21",
        compressor={"a": "topk", "b": "ht"},
    )
    t.attrs["ids"] = ["run", "method", "compressor"]
    with pytest.warns(UserWarning, match="pools runs that differ in compressor"):
        plots.plot_curves(t, x="x", y="y", hue="method")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_curves(t, x="x", y="y", hue="compressor")
    fig = plots.plot_curves(t.assign(experiment=None, compressor="topk"), x="x", y="y", hue="experiment")
    assert [h.get_text() for h in fig.legends[0].get_texts()] == ["(none)"]  # runs without a value


# ---- styles, markers, clipping, names ------------------------------------------------------


def _style(line) -> tuple:
    return (line.get_color(), line.get_linestyle(), line.get_marker())


def _arms(names: dict[str, str], datasets=("a9a",), **ids) -> pd.DataFrame:
    """One run per arm and dataset, labelled as given (``{lam}``: the dataset's HT λ),
    converging at a rate of its own."""
    lam = {"a9a": 0.05, "w8a": 0.01}
    return pd.concat(
        _trace(
            {f"{ds}/{exp}": ([0, 100], [1.0, 10.0 ** -(1 + i)])},
            experiment=exp,
            label=lab.format(lam=lam[ds]),
            dataset=ds,
            **ids,
        )
        for ds in datasets
        for i, (exp, lab) in enumerate(names.items())
    )


def test_twenty_labels_get_twenty_styles_told_apart_in_grayscale():
    """Each of the first 28 styles differs from every other in colour and dash, colour and
    marker, dash and marker (so in grayscale too); all 56 are distinct; a label's style
    follows from the set of labels, not from the order they come in."""
    assert len({tuple(s.values()) for s in plots.STYLES}) == len(plots.STYLES) == 56
    for a, b in (("color", "linestyle"), ("color", "marker"), ("linestyle", "marker")):
        assert len({(s[a], s[b]) for s in plots.STYLES[:28]}) == 28, (a, b)
    assert "#F0E442" not in {s["color"] for s in plots.STYLES}  # Okabe-Ito's yellow: too faint
    labels = [f"EF21, Top-{k}" for k in range(1, 21)]
    styles = plots.style_map(labels)
    assert len({tuple(s.values()) for s in styles.values()}) == 20
    assert len({(s["linestyle"], s["marker"]) for s in styles.values()}) == 20
    assert plots.style_map(labels[::-1]) == styles == plots.style_map(labels + labels[:3])
    assert styles["EF21, Top-1"] == plots.STYLES[0] and styles["EF21, Top-10"] == plots.STYLES[9]
    t = pd.concat(_trace({lab: ([0, 10], [1.0, 0.1])}, label=lab) for lab in labels)
    fig = plots.plot_curves(t, x="x", y="y", width="full")
    drawn = {
        lab: _style(ln) for ln, lab in zip(fig.axes[0].lines, plots.drawn(fig).label.unique(), strict=True)
    }
    assert len(set(drawn.values())) == 20
    assert drawn == {lab: tuple(s.values()) for lab, s in styles.items()}


def test_a_line_keeps_its_style_in_every_figure_of_a_report():
    """One style map for a report: a line has the same colour, dash and marker in a figure
    of all arms and in one of a few (whatever the others and their order), in each panel,
    and by its name or its arm's; without the map a figure styles its own lines."""
    names = {f"arm{i}": f"Method {i}" for i in range(9)}
    full = _arms(names, datasets=("a9a", "w8a"))
    styles = plots.report_styles(full, hue="experiment")
    every = plots.plot_curves(full, x="x", y="y", hue="experiment", styles=styles)
    few = full[full.experiment.isin(["arm7", "arm2"])].iloc[::-1]
    some = plots.plot_curves(few, x="x", y="y", hue="experiment", styles=styles)
    by_name = {
        t.get_text(): _style(h)
        for t, h in zip(every.legends[0].get_texts(), every.legends[0].legend_handles, strict=True)
    }
    for fig in (every, some):
        for ax in fig.axes:
            names_drawn = [t.get_text() for t in fig.legends[0].get_texts()]
            assert [_style(ln) for ln in ax.lines] == [by_name[n] for n in names_drawn]
    assert [t.get_text() for t in some.legends[0].get_texts()] == ["Method 2", "Method 7"]
    alone = plots.plot_curves(few, x="x", y="y", hue="experiment")  # its own two lines
    assert [_style(ln) for ln in alone.axes[0].lines] == [tuple(s.values()) for s in plots.STYLES[:2]]
    # a map giving two lines one style, and none to a third: three styles all the same
    clash = {"Method 2": plots.STYLES[0], "Method 7": plots.STYLES[0], "Method 8": plots.STYLES[1]}
    three = full[full.experiment.isin(["arm2", "arm7", "arm5"])]
    fig = plots.plot_curves(three, x="x", y="y", hue="experiment", styles=clash)
    got = [_style(ln) for ln in fig.axes[0].lines]  # Method 2, 5, 7
    assert got[0] == tuple(plots.STYLES[0].values()) and got[1:] == [
        tuple(s.values()) for s in plots.STYLES[2:4]
    ]
    keyed_by_arm = plots.plot_curves(few, x="x", y="y", hue="experiment", styles=plots.style_map(names))
    assert _style(keyed_by_arm.axes[0].lines[1]) == tuple(plots.style_map(names)["arm7"].values())


def test_markers_sit_at_evenly_spaced_x_staggered_between_lines():
    """MARKS markers per line at evenly spaced x (in log x on a log axis), not at the logged
    points; the j-th of n lines shifted by (j + 1/2)/n of a spacing."""
    logged = [1.0, 2.0, 1e6]  # the points a run logged: bunched at the start
    t = pd.concat(
        _trace({lab: (logged, [1.0, 0.5, 1e-6 * (i + 1)])}, label=lab) for i, lab in enumerate(("A", "B"))
    )
    fig = plots.plot_curves(t, x="x", y="y", logx=True, points=601)
    step = 6 / plots.MARKS  # decades between markers
    for j, line in enumerate(fig.axes[0].lines):
        xs = line.get_xdata()[line.get_markevery()]
        assert len(xs) == plots.MARKS
        np.testing.assert_allclose(np.log10(xs), (np.arange(plots.MARKS) + (j + 0.5) / 2) * step, atol=0.006)
    t = _trace({"a": ([0.0, 1.0, 50.0], [1.0, 0.5, 1e-3])}, label="A")
    (line,) = plots.plot_curves(t, x="x", y="y", points=101).axes[0].lines
    np.testing.assert_allclose(line.get_xdata()[line.get_markevery()], [5.0, 15.0, 25.0, 35.0, 45.0])


def test_a_diverged_line_leaves_the_plot_at_its_top_with_a_mark():
    """The y axis ends YMARGIN above the highest start and the highest value of the lines
    that did not diverge, not at 1e8; a diverged line (a run's status, or a line ending at
    its highest value far above its start) is marked with an x where it crosses the top."""

    def runs(peak: float, status: bool) -> pd.DataFrame:
        t = pd.concat(
            [
                _trace({"ok": ([0, 100], [2.0, 1e-4])}, label="EF21", status="completed"),
                _trace({"ok2": ([0, 100], [1.0, 1e-6])}, label="DIANA", status="completed"),
                _trace({"bad": ([0, 80], [1.0, peak])}, label="EF", status="diverged"),
            ]
        )
        return t if status else t.drop(columns="status")

    # the status alone (a rise to 100 is no runaway), the runaway alone (no status)
    for peak, status in ((100.0, True), (1e8, False)):
        fig = plots.plot_curves(runs(peak, status), x="x", y="y", points=81)
        (ax,) = fig.axes
        assert ax.get_ylim()[1] == pytest.approx(plots.YMARGIN * 2.0)
        lines, (mark,) = ax.lines[:3], ax.lines[3:]
        assert all(ln.get_marker() != "x" for ln in lines) and mark.get_marker() == "x"
        assert mark.get_ydata()[0] == pytest.approx(6.0)
        # y = peak^(x/80) on the diverged line: it crosses 6 at x = 80 log(6) / log(peak)
        assert mark.get_xdata()[0] == pytest.approx(80 * np.log(6.0) / np.log(peak), rel=1e-9)
        assert mark.get_color() == lines[1].get_color()  # the line "EF", second in the legend
        texts = [x.get_text() for x in fig.legends[0].get_texts()]
        assert texts == ["DIANA", "EF", "EF21", "diverged: leaves the plot"]
    t = runs(1e8, True)
    fig = plots.plot_curves(t, x="x", y="y", ytop=1e-3)
    assert fig.axes[0].get_ylim()[1] == 1e-3 and len(fig.axes[0].lines) == 6  # every line marked
    assert fig.legends[0].get_texts()[-1].get_text() == "leaves the plot"
    calm = plots.plot_curves(t[t.label != "EF"], x="x", y="y")
    assert len(calm.axes[0].lines) == 2 and len(calm.legends[0].get_texts()) == 2
    assert calm.axes[0].get_ylim()[1] == pytest.approx(plots.YMARGIN * 2.0)
    alone = plots.plot_curves(t[t.label == "EF"], x="x", y="y")  # its start: still in view
    assert alone.axes[0].get_ylim()[1] == pytest.approx(plots.YMARGIN * 1.0) and len(alone.axes[0].lines) == 2
    # on a log x axis the line is straight in log x: y = x^2 crosses 3 at x = sqrt(3)
    log = plots.plot_curves(_trace({"a": ([1, 1e4], [1.0, 1e8])}, label="EF"), x="x", y="y", logx=True)
    assert log.axes[0].lines[1].get_xdata()[0] == pytest.approx(np.sqrt(plots.YMARGIN), rel=1e-9)
    seeds = plots.plot_curves(_three_seeds(), x="x", y="y")  # the band counts: a seed at 0.1
    assert seeds.axes[0].get_ylim()[1] == pytest.approx(plots.YMARGIN * 0.1)


def test_the_legend_names_lines_by_their_runs_labels_not_config_names():
    """Lines of experiment configs or arms (``fam_3pc_3pcv1``) are named by their runs'
    label; a line by its config's name where its runs differ in label or another line of
    its panel has that label; methods by their display names."""
    arms = {"fam_3pc_3pcv1": "3PCv1, Top-3", "hl_3pc_lag": "LAG, ζ=4", "fam_sgd": "SGD"}
    t = _arms(arms, datasets=("a9a", "w8a"))
    for hue in ("experiment", "arm"):
        fig = plots.plot_curves(t.assign(arm=t.experiment), x="x", y="y", hue=hue)
        assert [x.get_text() for x in fig.legends[0].get_texts()] == ["3PCv1, Top-3", "LAG, ζ=4", "SGD"]
        csv = plots.drawn(fig)
        assert csv[hue].unique().tolist() == ["fam_3pc_3pcv1", "hl_3pc_lag", "fam_sgd"]  # legend order
    same = t.assign(label=t.label.replace({"SGD": "LAG, ζ=4"}))  # two lines, one label
    fig = plots.plot_curves(same, x="x", y="y", hue="experiment")
    assert [x.get_text() for x in fig.legends[0].get_texts()] == ["3PCv1, Top-3", "fam_sgd", "hl_3pc_lag"]
    other = _arms({"fam_sgd": "SGD, γ=theory×5000"}, datasets=("a9a", "w8a")).assign(
        run=lambda d: d.run + "b"
    )
    fig = plots.plot_curves(pd.concat([t, other]), x="x", y="y", hue="experiment")  # a line of two labels
    assert [x.get_text() for x in fig.legends[0].get_texts()] == ["3PCv1, Top-3", "LAG, ζ=4", "fam_sgd"]
    t = _trace({"a": ([0, 1], [1.0, 0.1]), "b": ([0, 1], [1.0, 0.2])}, method={"a": "ec_sgd", "b": "ef21"})
    fig = plots.plot_curves(t, x="x", y="y", hue="method")
    assert [x.get_text() for x in fig.legends[0].get_texts()] == ["EC-SGD", "EF21"]


def test_a_parameter_that_differs_only_between_panels_is_said_once_in_the_titles():
    """HT λ calibrated per dataset: one legend entry ``EC-LSVRG, HT`` with one style, the
    λ of each panel in its title; a figure of one dataset keeps the λ in the legend and
    the same style. Nothing moves when one panel has two values of it."""
    arms = {"ht": "EC-LSVRG, HT λ={lam}", "top": "EC-LSVRG, Top-3", "ef": "EF21, Top-3, γ=theory×2"}
    t = _arms(arms, datasets=("a9a", "w8a"))
    styles = plots.report_styles(t)
    fig = plots.plot_curves(t, x="x", y="y", styles=styles)
    assert [x.get_text() for x in fig.legends[0].get_texts()] == [
        "EC-LSVRG, HT",
        "EC-LSVRG, Top-3",
        "EF21, Top-3, γ=theory×2",
    ]
    assert [ax.get_title() for ax in fig.axes] == ["a9a (HT λ=0.05)", "w8a (HT λ=0.01)"]
    a, b = fig.axes
    assert [_style(ln) for ln in a.lines] == [_style(ln) for ln in b.lines]
    a9a = t[t.dataset == "a9a"]
    one = plots.plot_curves(a9a, x="x", y="y", styles=styles)
    assert one.axes[0].get_title() == "a9a"
    assert one.legends[0].get_texts()[0].get_text() == "EC-LSVRG, HT λ=0.05"
    assert _style(one.axes[0].lines[0]) == _style(a.lines[0])
    by_arm = plots.report_styles(t, hue="experiment")  # the labels find their arms' styles
    assert (
        by_arm["EC-LSVRG, HT λ=0.05"]
        == by_arm["EC-LSVRG, HT λ=0.01"]
        == by_arm["ht"]
        == by_arm["EC-LSVRG, HT"]
    )
    one = plots.plot_curves(a9a, x="x", y="y", styles=by_arm)
    assert _style(one.axes[0].lines[0]) == tuple(by_arm["ht"].values())
    # the arm's label by experiment name, per panel, and its λ in the titles
    fig = plots.plot_curves(t, x="x", y="y", hue="experiment")
    assert fig.legends[0].get_texts()[0].get_text() == "EC-LSVRG, HT"
    assert fig.axes[1].get_title() == "w8a (HT λ=0.01)"
    # two values in one panel, or a line there that would then share a name: nothing moves
    for arm in ("EC-SGD, HT λ=0.2", "EC-LSVRG, HT"):
        fig = plots.plot_curves(pd.concat([t, _arms({"x": arm}, datasets=("a9a",))]), x="x", y="y")
        assert [ax.get_title() for ax in fig.axes] == ["a9a", "w8a"]
        assert "EC-LSVRG, HT λ=0.01" in [x.get_text() for x in fig.legends[0].get_texts()]


def test_heatmap_writes_each_value_in_the_ink_that_reads_on_its_cell(tmp_path):
    """Black or white by the WCAG contrast ratio against the cell's colour, whichever is
    higher; 'never' cells (inf) light gray, hatched, with dark text; a labelled colour bar;
    a column wide, 8 pt."""

    def lum(rgb):
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    for rgb in np.random.default_rng(0).random((500, 3)):
        L = lum(rgb)
        white, black = 1.05 / (L + 0.05), (L + 0.05) / 0.05
        assert plots._ink(tuple(rgb)) == ("white" if white > black else "black")
    M = np.array([[1e5, 3e5, np.inf], [1e6, 2.5e6, 1e7]])
    fig = plots.heatmap(
        M, [1, 3], [0, 1, 4], row_label="TopK K", col_label="ζ", cbar_label="bits", title="bits"
    )
    ax, bar = fig.axes
    assert fig.get_size_inches()[0] == pytest.approx(3.3) and bar.get_ylabel() == "bits"
    texts = {t.get_text(): t for t in ax.texts}
    assert list(texts) == ["100k", "300k", "never", "1M", "2.5M", "10M"]
    assert (
        texts["100k"].get_color() == "black" and texts["10M"].get_color() == "white"
    )  # viridis_r: light to dark
    assert texts["never"].get_color() == "0.15"
    (never,) = ax.patches
    assert never.get_hatch() and never.get_xy() == (1.5, -0.5)
    assert {t.get_fontsize() for t in ax.texts} == {7.0} and ax.xaxis.label.get_fontsize() == 8.0
    assert [p.suffix for p in plots.save(fig, tmp_path / "h")] == [".png", ".pdf"]


# ---- saved files -------------------------------------------------------------------------


def test_saved_csv_is_what_the_figure_draws_and_the_pdf_has_truetype_fonts(tmp_path):
    t = pd.concat([_three_seeds(), _three_seeds().assign(dataset="w8a", y=lambda d: d.y / 7)])
    t = pd.concat([t, t.assign(label="EF21, Top-1", y=lambda d: d.y * 3, run=lambda d: d.run + "b")])
    fig = plots.plot_curves(t, x="x", y="y", band="iqr", points=50)
    axes = {ax.get_title(): ax for ax in fig.axes}
    paths = plots.save(fig, tmp_path / "fig")
    assert [p.name for p in paths] == ["fig.png", "fig.pdf", "fig.csv"]
    csv = pd.read_csv(paths[2])
    assert list(csv.columns) == ["dataset", "label", "x", "y_median", "y_q25", "y_q75", "runs"]
    assert len(csv) == 4 * 50
    legend = [h.get_text() for h in fig.legends[0].get_texts()]
    assert legend == ["EF21, Top-1", "EF21, Top-3"]  # in natural order, as the CSV's lines
    assert csv[["dataset", "label"]].drop_duplicates().values.tolist() == [
        [ds, lab] for ds in ("a9a", "w8a") for lab in legend
    ]
    for (ds, label), line in csv.groupby(["dataset", "label"]):
        i = legend.index(label)  # every panel draws the lines in the legend's order
        drawn, shaded = axes[ds].lines[i], axes[ds].collections[i]
        np.testing.assert_array_equal(drawn.get_xdata(), line["x"])
        np.testing.assert_array_equal(drawn.get_ydata(), line["y_median"])
        verts = shaded.get_paths()[0].vertices
        assert np.isin(line["y_q25"], verts[:, 1]).all() and np.isin(line["y_q75"], verts[:, 1]).all()
    pdf = paths[1].read_bytes()
    assert b"/Type3" not in pdf and b"/CIDFontType2" in pdf  # TrueType (Type 42), as journals ask
    assert paths[0].stat().st_size > 20000


# ---- collect: frames and labels ----------------------------------------------------------


def test_frames_have_categorical_identifiers_and_no_duplicate_columns(tmp_path):
    for i, (method, k) in enumerate([("ef21", 3), ("ef21", 10), ("clag", 3)]):
        _fake_run(tmp_path / f"r{i}", {"method.name": method, "compressor.k": k, "dataset.name": f"d{i}"})
    trace, runs = collect(tmp_path)
    ids = ["run", "dataset", "method", "compressor", "sampling", "stepsize", "label", "experiment", "status"]
    for frame in (trace, runs):
        for c in ids:
            assert isinstance(frame[c].dtype, pd.CategoricalDtype), c
        assert not frame.columns.duplicated().any()
        # varying, but held by the standard columns dataset, method, stepsize, compressor
        assert not {"dataset.name", "method.name", "method._target_", "compressor._target_"} & set(frame)
    assert {"config_hash", "engine"} <= set(runs.columns) and runs.engine.tolist() == ["numpy"] * 3
    assert runs.config_hash.nunique() == 3 and runs["compressor.k"].tolist() == [3, 10, 3]
    assert list(runs.label.cat.categories) == ["CLAG, Top-3", "EF21, Top-3", "EF21, Top-10"]
    assert trace.attrs["ids"][:3] == ["run", "dataset", "method"]


def test_labels_show_what_tells_the_lines_apart(tmp_path):
    """Method and compressor with its parameter, then whatever else differs between runs
    of one dataset: sampling, stepsize, other swept values; never the seed or dataset."""
    specs = {
        "a": {},
        "b": {"stepsize.multiplier": 2.0},
        "c": {"method.name": "diana", "compressor": {"_target_": "efbench.core.compressors.RandK", "k": 10}},
        "d": {"seed": 1, "dataset.name": "w8a"},
        "e": {"method.name": "ec_sgd", "method.estimator": {"kind": "sgd", "sampling": "importance"}},
        "f": {"method.name": "ec_sgd", "method.estimator": {"kind": "sgd", "sampling": "uniform"}},
        "g": {"method.name": "clag", "method.zeta": 4.0, "data.seed": 1},
        "h": {"method.name": "clag", "method.zeta": 1.0, "data.seed": 0},
        "i": {"stepsize": {"rule": "constant", "gamma": 0.05, "multiplier": 1.0}},
        "j": {
            "method.name": "sgd",
            "compressor": {"_target_": "efbench.core.compressors.HardThreshold", "lam": 0.1},
        },
    }
    for name, cfg in specs.items():
        _fake_run(tmp_path / name, cfg, {"compressor": "dense"} if name == "j" else None)
    _, runs = collect(tmp_path)
    got = dict(zip(runs.run, runs.label, strict=True))
    assert got == {
        "a": "EF21, Top-3, γ=theory",
        "b": "EF21, Top-3, γ=theory×2",
        "c": "DIANA, Rand-10",
        "d": "EF21, Top-3, γ=theory",  # another seed and dataset: the same line, another panel
        "e": "EC-SGD (IS), Top-3",
        "f": "EC-SGD (US), Top-3",
        "g": "CLAG, Top-3, data.seed=1, ζ=4",  # `seed` alone would be ambiguous
        "h": "CLAG, Top-3, data.seed=0, ζ=1",
        "i": "EF21, Top-3, γ=0.05",
        "j": "SGD",  # dense messages: no compressor
    }
    assert runs.set_index("run").compressor["c"] == "randk"  # the group of its class (no choices)


def test_api_and_command_line_runs_get_the_same_labels(tmp_path):
    args = ("method=ec_sgd_us", "compressor=ht", "compressor.lam=0.05", "budget.iters=20")
    r = efbench(*args, "progress=false", f"hydra.run.dir={tmp_path / 'cli'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run(cfg_of(*args), tmp_path / "api")  # no Hydra choices
    r = efbench(
        "method=sgd",
        "budget.iters=20",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'cli_sgd'}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    run(cfg_of("method=sgd", "budget.iters=20"), tmp_path / "api_sgd")
    _, runs = collect(tmp_path)
    got = runs.set_index("run")[["label", "compressor"]].astype(str)
    assert got.loc["cli"].tolist() == got.loc["api"].tolist() == ["EC-SGD-US, HT λ=0.05", "ht"]
    assert got.loc["cli_sgd"].tolist() == got.loc["api_sgd"].tolist() == ["SGD", "dense"]


# ---- the command ------------------------------------------------------------------------


def test_figures_command_options_and_bad_input(tmp_path, capsys):
    for seed in (0, 1):
        trace = pd.DataFrame(
            {
                "step": [0, 5, 10],
                "bits_up_mean": [0.0, 5e3, 1e4],
                "time": [0.0, 0.1, 0.3],
                "rel_gap": [1, 0.1, 0.01],
            }
        )
        _fake_run(
            tmp_path / f"s{seed}", {"seed": seed}, trace=trace.assign(rel_gap=trace.rel_gap * (1 + seed))
        )
    out = tmp_path / "fig"
    plots.main([str(tmp_path), "--x", "time", "bits", "--band", "iqr", "--width", "full", "--out", str(out)])
    assert (out / "rel_gap_vs_time.png").is_file()
    csv = pd.read_csv(out / "rel_gap_vs_bits.csv")
    assert list(csv.columns)[-3:] == ["rel_gap_q25", "rel_gap_q75", "runs"] and len(csv) == 200
    for argv, message in (
        (["--y", "nope"], "efbench-figures: error: --y: no column 'nope' (available: run, "),
        (["--x", "bits_down"], "efbench-figures: error: --x: no column 'bits_down'"),
        (["--points", "1"], "efbench-figures: error: --points: at least 2, got 1"),
        (["--width", "wide"], "argument --width: column, full or a width in inches, got 'wide'"),
    ):
        with pytest.raises(SystemExit) as exc:
            plots.main([str(tmp_path), *argv, "--out", str(out)])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_figures_command_names_experiments_by_their_labels(tmp_path, monkeypatch):
    """``--hue experiment``: the legend says the runs' labels, a line has one style in every
    figure."""
    trace = pd.DataFrame({"step": [0, 5, 10], "bits_up_mean": [0.0, 5e3, 1e4], "rel_gap": [1, 0.1, 0.01]})
    for exp, k in (("fam_ef21_top3", 3), ("fam_ef21_top10", 10)):
        _fake_run(tmp_path / exp, {"compressor.k": k}, {"experiment": exp}, trace=trace)
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, stem: figs.append(fig) or [])
    plots.main([str(tmp_path), "--hue", "experiment", "--x", "iterations", "bits"])
    for fig in figs:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["EF21, Top-3", "EF21, Top-10"]
    assert [_style(ln) for ln in figs[0].axes[0].lines] == [_style(ln) for ln in figs[1].axes[0].lines]


def test_figures_of_a_nonconvex_run_refuse_the_default_y_in_one_line(tmp_path, capsys):
    """A nonconvex run has no f*, so rel_gap is NaN at every point: efbench-figures names --y
    and exits 2 (an empty curve used to raise IndexError), and draws grad_norm2 when asked."""
    from test_cli import cfg_of

    from efbench.run.runner import run

    run(
        cfg_of("method=ef21", "compressor=topk", "problem.regularizer=nonconvex", "budget.iters=20"),
        tmp_path / "r",
    )
    with pytest.raises(SystemExit) as stop:
        plots.main([str(tmp_path / "r"), "--x", "iterations"])
    assert stop.value.code == 2
    assert "--y: no finite values of 'rel_gap'" in capsys.readouterr().err
    plots.main([str(tmp_path / "r"), "--x", "iterations", "--y", "grad_norm2"])
    assert (tmp_path / "r" / "figures" / "grad_norm2_vs_iterations.png").is_file()


def test_display_names_come_from_the_classes_of_every_registered_option():
    """Each compressor option is shown by its class's label filled from its own keys, and
    each method option by its class's name for it (or the upper-case rule)."""
    from efbench.analysis.collect import compressor_label, method_label
    from efbench.config.schema import options
    from efbench.core.compressors import TopK

    for name, node in options("compressor").items():
        if "${" in str(node):  # the *_paper options: their values come from the experiment
            continue
        label = compressor_label(node)
        assert label and "{" not in label and "." not in label.split()[0], (name, label)
    assert compressor_label({"_target_": "efbench.compressors.TopK", "k": 3}) == "Top-3"  # an old path
    assert compressor_label(
        {"_target_": "efbench.core.compressors.Compose", "outer": "topk", "k": 2, "inner": "qsgd", "s": 4}
    ) == ("Top-2 ∘ QSGD s=4")
    assert TopK.label == "Top-{k}"
    shown = {name: method_label(node["name"]) for name, node in options("method").items()}
    assert (
        shown["3pcv2"] == "3PCv2" and shown["choco_sgd"] == "CHOCO-SGD" and shown["ec_sgd_is"] == "EC-SGD-IS"
    )
    assert len(set(shown.values())) == len(shown)  # no two options share a name in a legend
