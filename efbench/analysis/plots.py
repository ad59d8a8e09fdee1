"""Figures for a paper: a metric (f(x) - f*, by default) against iterations, epochs, bits or
time, log-scale y, one panel per value of a column and one line per value of another.

A line is the median (or geometric mean) over its runs (seeds), each first resampled on
one grid spanning all of them (:func:`efbench.analysis.collect.resample`, so a run that stopped early
does not cut the others), with a shaded min-max or interquartile band named in the
legend. One legend for the whole figure, naming each line by its runs' label (method
display names, never config names); a parameter that differs only between panels (HT λ
per dataset) is said once in the panel's title. Each label keeps one colour, dash and
marker in every panel and, through one :func:`report_styles` (or :func:`style_map`) map,
in every figure of a report; the styles tell up to 28 lines apart in grayscale and 56 in
colour, with markers at evenly spaced x. A diverged line leaves the plot at its top edge,
marked there, instead of stretching the y axis. Sizes for a two-column paper (3.3 in per column, 6.9 in full
width, 8-9 pt text); TrueType (Type 42) fonts in the PDF. :func:`save` writes PNG, PDF
and the CSV of exactly what the figure draws; :func:`heatmap` draws a table of values
(bits to a target over two swept parameters) in the same style. No LaTeX needed."""

from __future__ import annotations

import argparse
import math
import re
import sys
import textwrap
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize, to_rgb  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator  # noqa: E402

from efbench.analysis.collect import FLOOR, collect, method_label, natural_key, resample  # noqa: E402, F401 (FLOOR: paper.py)
from efbench.errors import ConfigError, check_choice  # noqa: E402

X_AXES = {
    "iterations": "step",
    "epochs": "epochs",
    "bits": "bits_up_mean",
    "bits_down": "bits_down",
    "time": "time",
    "time_sim": "time_sim",
}
X_LABELS = {
    "step": "iterations",
    "epochs": "epochs (data passes)",
    "bits_up_mean": "uplink bits per worker",
    "bits_up_max": "uplink bits, busiest worker",
    "bits_down": "downlink bits per worker",
    "time": "wall-clock time (s)",
    "time_sim": "simulated time (s)",
}
Y_LABELS = {
    "rel_gap": r"$(f(x^k)-f^*)/(f(x^0)-f^*)$",
    "gap": r"$f(x^k)-f^*$",
    "grad_norm2": r"$\|\nabla f(x^k)\|^2$",
    "dist2": r"$\|x^k-x^*\|^2$",
}
BITS = ("bits_up_mean", "bits_up_max", "bits_down")
SI = ("", "k", "M", "G", "T")
CENTERS = {"median": "median", "gmean": "geometric mean"}
BANDS = {"minmax": "min–max", "iqr": "interquartile range", "none": ""}
WIDTHS = {"column": 3.3, "full": 6.9}  # inches: one column, full width of a two-column paper
# Okabe-Ito colours (tell apart with colour blindness) but their yellow, too faint for a
# thin line on white; line styles and markers tell the lines apart in grayscale
COLORS = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# The i = 7a + b-th line style: colour b, dash (b + a) mod 4, marker (b + 2a + a div 4) mod 8.
# Any two of the first 28 differ in colour and dash, in colour and marker, and in dash and
# marker (the dash steps by one, the marker by two per block a: the three pairings are
# injective), so they stay apart in grayscale; all 56 are distinct triples (a div 4).
STYLES = tuple(
    {"color": COLORS[b], "linestyle": LINESTYLES[(b + a) % 4], "marker": MARKERS[(b + 2 * a + a // 4) % 8]}
    for a in range(8)
    for b in range(len(COLORS))
)
MARKS = 5  # markers per line across a panel's x range
YMARGIN = 3.0  # automatic y top: this times the highest start or non-diverged value
RUNAWAY = 1e3  # a line ending at its highest value, this times its start, diverges
NEVER = "#d9d9d9"  # heatmap cells without a value ('never'): light gray, hatched
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 9,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "grid.linewidth": 0.4,
    "pdf.fonttype": 42,  # TrueType, as journals ask; matplotlib's default is Type 3
    "ps.fonttype": 42,
}
_DRAWN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # figure -> the lines it draws


def stats_names(y: str, center: str = "median", band: str = "minmax") -> tuple[str, ...]:
    """The columns :func:`summarize` gives a line: its center, then the band's low and high
    (``rel_gap_median``, ``rel_gap_min``, ``rel_gap_max``; ``rel_gap_q25`` / ``_q75``)."""
    check_choice("center", center, CENTERS)
    check_choice("band", band, BANDS)
    ends = {"minmax": ("min", "max"), "iqr": ("q25", "q75"), "none": ()}[band]
    return (f"{y}_{center}", *(f"{y}_{e}" for e in ends))


def summarize(
    frame: pd.DataFrame,
    x: str,
    y: str,
    by: list[str],
    center: str = "median",
    band: str = "minmax",
    min_frac: float = 0.5,
) -> pd.DataFrame:
    """One row per line (group of ``by``) and grid point of a :func:`efbench.analysis.collect.resample`
    frame: the center of the runs' values there (median, or geometric mean ``gmean``), the
    band (min and max, interquartile ``iqr``, or ``none``) and ``runs``, how many runs have a
    value there (fewer where a run stopped early). Center and band are NaN (not drawn)
    where fewer than ``min_frac`` of the line's runs have a value: a line goes on past a
    run that stopped early, but its last stretch is not one seed that happened to log a
    little further than the others."""
    names = stats_names(y, center, band)
    out = []
    groups = frame.groupby(by, sort=False, observed=True, dropna=False) if by else [((), frame)]
    for key, group in groups:
        wide = group.pivot(index=x, columns="run", values=y)
        Y = wide.to_numpy(dtype=float)
        with warnings.catch_warnings():  # grid points no run covers: NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            mid = np.nanmedian(Y, axis=1) if center == "median" else 10 ** np.nanmean(np.log10(Y), axis=1)
            if band == "minmax":
                ends = (np.nanmin(Y, axis=1), np.nanmax(Y, axis=1))
            elif band == "iqr":
                ends = tuple(np.nanpercentile(Y, [25, 75], axis=1))
            else:
                ends = ()
        count = np.isfinite(Y).sum(axis=1)
        few = count < min_frac * Y.shape[1]
        stats = [np.where(few, np.nan, v) for v in (mid, *ends)]
        line = pd.DataFrame(dict(zip(names, stats, strict=True)), index=wide.index).reset_index()
        line["runs"] = count
        for col, value in zip(by, key if isinstance(key, tuple) else (key,), strict=True):
            line.insert(by.index(col), col, value)
        out.append(line)
    if not out:
        return pd.DataFrame(columns=[*by, x, *names, "runs"])
    return pd.concat(out, ignore_index=True)


def style_map(labels: Iterable[object]) -> dict[str, dict[str, str]]:
    """Each label's line style (``color``, ``linestyle``, ``marker``): the labels in natural
    order (:func:`efbench.analysis.collect.natural_key`) take :data:`STYLES` in turn. It depends on the
    set of labels only, not on their order; built once from all the labels of a report and
    passed to every :func:`plot_curves` (``styles=``), a line keeps its style in every
    figure, whichever other lines a figure has. Distinct for up to 56 labels."""
    names = sorted({str(v) for v in labels}, key=natural_key)
    return {name: dict(STYLES[i % len(STYLES)]) for i, name in enumerate(names)}


def _resolve_styles(
    entries: list[str], hue_values: dict[str, list[str]], styles: dict[str, dict] | None
) -> dict[str, dict]:
    """The style of each legend entry: ``styles`` of the entry, else of the first (natural
    order) of the hue values it stands for (an arm's name, a label with its per-panel
    parameter); entries in neither, and any whose style another entry of the figure
    already has, take the first :data:`STYLES` the map does not use."""
    if styles is None:
        return style_map(entries)
    got: dict[str, dict] = {}
    for e in entries:
        for key in (e, *sorted(hue_values[e], key=natural_key)):
            if key in styles and styles[key] not in got.values():
                got[e] = dict(styles[key])
                break
    spare = [s for s in STYLES if s not in styles.values()] + [s for s in STYLES if s in styles.values()]
    for e in entries:
        if e not in got:
            got[e] = dict(next((s for s in spare if s not in got.values()), STYLES[0]))
    return got


def _marks(
    xs: np.ndarray, ys: np.ndarray, span: tuple[float, float], j: int, n: int, logx: bool
) -> list[int]:
    """Indices of the points of a line that get a marker: the grid points nearest to
    :data:`MARKS` positions evenly spaced over the panel's x ``span`` (in log x with
    ``logx``: evenly spaced as drawn), shifted by (j + 1/2)/n of a spacing for the j-th of n
    lines, so the markers of different lines do not sit on one another."""
    ok = np.flatnonzero(np.isfinite(ys) & np.isfinite(xs) & ((xs > 0) if logx else True))
    lo, hi = span
    if not ok.size or not hi > lo:
        return []
    u = np.log10(xs[ok]) if logx else xs[ok]
    targets = lo + (np.arange(MARKS) + (j + 0.5) / n) * (hi - lo) / MARKS
    targets = targets[(targets >= u[0]) & (targets <= u[-1])]
    return sorted({int(ok[np.abs(u - t).argmin()]) for t in targets})


def _exit_point(xs: np.ndarray, ys: np.ndarray, top: float, logx: bool) -> float | None:
    """The x at which a line first rises above ``top``, on the segment as drawn (straight in
    log y, and in log x with ``logx``); None if it stays below."""
    above = np.flatnonzero(np.isfinite(ys) & (ys > top))
    if not above.size:
        return None
    i = int(above[0])
    if i == 0 or not np.isfinite(ys[i - 1]):
        return float(xs[i])
    fx = np.log10 if logx else (lambda v: v)
    t = (math.log10(top) - math.log10(ys[i - 1])) / (math.log10(ys[i]) - math.log10(ys[i - 1]))
    u = fx(xs[i - 1]) + t * (fx(xs[i]) - fx(xs[i - 1]))
    return float(10**u if logx else u)


# a label part's parameter: ``λ=0.05`` in ``HT λ=0.05``, ``γ=theory×2``, ``data.seed=1``
PARAM = re.compile(r"\s*\S+=\S+")


def _template(part: str) -> str:
    """A label part with its parameters' values blanked: ``HT λ=0.05`` -> ``HT λ=·``."""
    return re.sub(r"=\S+", "=·", part)


def _per_panel(names: dict[tuple, str]) -> tuple[dict[tuple, str], dict[object, list[str]]]:
    """Legend names without the parameters that only tell panels apart, and each panel's
    parameters for its title. A label part with a parameter (``HT λ=0.05``) moves when, in
    every panel, all lines with a part of its kind (``HT λ=·``) share one value of it and
    the panels' values are not all equal (HT λ calibrated per dataset): the legend then
    says ``HT`` once, the titles ``a9a (HT λ=0.05)``, ``w8a (HT λ=0.01)``. Nothing moves if
    two lines of a panel would then share a name."""
    keys = sorted(names, key=lambda k: natural_key(names[k]))
    if len({p for p, _ in keys}) < 2:
        return names, {}
    parts = {k: names[k].split(", ") for k in keys}
    values: dict[str, dict[object, set[str]]] = {}
    twice: set[str] = set()  # kinds a label has two parts of: which one a title meant is unclear
    for (p, _), ps in parts.items():
        kinds = [_template(x) for x in ps]
        twice |= {t for t in kinds if kinds.count(t) > 1}
        for x, t in zip(ps, kinds, strict=True):
            if t != x:
                values.setdefault(t, {}).setdefault(p, set()).add(x)
    moved = {
        t
        for t, per in values.items()
        if t not in twice and all(len(v) == 1 for v in per.values()) and len(set().union(*per.values())) > 1
    }
    if not moved:
        return names, {}
    shown, titles = {}, {}
    for (p, h), ps in parts.items():
        kept = [x if _template(x) not in moved else PARAM.sub("", x).strip() for x in ps]
        shown[p, h] = ", ".join(x for x in kept if x)
        for x in ps:
            if _template(x) in moved and x not in titles.setdefault(p, []):
                titles[p].append(x)
    per_panel = [(p, name) for (p, _), name in shown.items()]
    if len(set(per_panel)) < len(per_panel):
        return names, {}
    return shown, titles


def _run_names(trace: pd.DataFrame, panel_col: str | None, hue: str) -> dict[tuple, str]:
    """Each line's name, keyed (panel value or None, hue value): its runs' ``label``
    (``EF21, Top-3, γ=theory×2``) when the hue is another column (an experiment config's
    or arm's name), the line's runs share one label and no other line of its panel has
    it; else its hue value (a method by its display name)."""
    by = [panel_col, hue] if panel_col else [hue]
    own: dict[tuple, str] = {}
    labels: dict[tuple, set[str]] = {}
    for key, runs in trace.groupby(by, sort=False, observed=True, dropna=False):
        k = tuple(key) if panel_col else (None, *key)
        own[k] = method_label(k[1]) if hue == "method" else str(k[1])
        if hue != "label" and "label" in runs.columns:
            labels[k] = set(runs["label"].dropna().astype(str))
    one = {k: next(iter(v)) for k, v in labels.items() if len(v) == 1}
    taken = pd.Series([(k[0], v) for k, v in one.items()], dtype=object).value_counts()
    names = {k: one[k] if k in one and taken[(k[0], one[k])] == 1 else own[k] for k in own}
    if len({(k[0], v) for k, v in names.items()}) < len(names):  # a label that is another's hue value
        return own
    return names


def _filled(trace: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Runs without a value of a ``by`` column: a line of their own, ``(none)``."""
    missing = {c: trace[c].astype(object).fillna("(none)") for c in by if trace[c].isna().any()}
    return trace.assign(**missing) if missing else trace


def report_styles(
    trace: pd.DataFrame, hue: str = "label", panel: str = "dataset"
) -> dict[str, dict[str, str]]:
    """One style per line of these runs, for every figure a report draws from them or from
    part of them (``plot_curves(..., styles=)``): :func:`style_map` of the legend names
    :func:`plot_curves` gives them, each style also under its line's hue value (an arm's
    or experiment's name) and its label with the per-panel parameter (``EC-LSVRG, HT
    λ=0.05``, which a figure of that dataset alone shows), so that such figures find it."""
    panel_col = panel if panel in trace.columns else None
    full = _run_names(_filled(trace, [panel_col, hue] if panel_col else [hue]), panel_col, hue)
    shown, _ = _per_panel(full)
    styles = style_map(shown.values())
    aliases: dict[str, set[str]] = {}
    for k, e in shown.items():
        for alias in (full[k], str(k[1])):
            aliases.setdefault(alias, set()).add(e)
    for alias, entries in aliases.items():
        if len(entries) == 1 and alias not in styles:  # a name for two lines names neither
            styles[alias] = styles[entries.pop()]
    return styles


def _diverged(trace: pd.DataFrame, panel_col: str | None, hue: str) -> set[tuple]:
    """Lines (panel value or None, hue value) with a run whose status is ``diverged``."""
    if "status" not in trace.columns:
        return set()
    by = [panel_col, hue] if panel_col else [hue]
    bad = trace.loc[trace["status"].astype(str) == "diverged", by].drop_duplicates()
    return {tuple(r) if panel_col else (None, *r) for r in bad.itertuples(index=False)}


class _ScaledLogFormatter(LogFormatter):
    """Log-axis tick labels divided by ``scale`` (bits in kbit, Mbit), on the ticks the
    default log formatter labels."""

    def __init__(self, scale: float, **kw):
        super().__init__(**kw)
        self.scale = scale

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x / self.scale:g}" if super().__call__(x, pos) else ""


def _x_axis(ax: plt.Axes, x: str, hi: float, logx: bool) -> None:
    label = X_LABELS.get(x, x)
    if x in BITS and np.isfinite(hi) and hi > 0:  # SI prefix by the largest value drawn
        k = int(min(max(math.floor(math.log10(hi) / 3), 0), len(SI) - 1))
        scale, label = 1000.0**k, f"{label} ({SI[k]}bit)"
        if logx:
            ax.xaxis.set_major_formatter(_ScaledLogFormatter(scale, labelOnlyBase=False))
            ax.xaxis.set_minor_formatter(_ScaledLogFormatter(scale, labelOnlyBase=False))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / scale:g}"))
    elif not logx:
        ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    ax.set_xlabel(label)


def _warn_mixed(frame: pd.DataFrame, by: list[str]) -> None:
    """Warn when one line pools runs that differ in more than their seed."""
    ids = [c for c in frame.columns if c in frame.attrs.get("ids", []) and c not in (*by, "run", "seed")]
    ids = [c for c in ids if c != "status"]
    if not ids or frame.empty:
        return
    per_run = frame.drop_duplicates("run")
    groups = per_run.groupby(by, sort=False, observed=True, dropna=False) if by else [((), per_run)]
    for key, runs in groups:
        mixed = [c for c in ids if runs[c].astype(str).nunique() > 1]
        if mixed:
            warnings.warn(
                f"efbench-figures: the line {key} pools runs that differ in {', '.join(mixed)} "
                "(choose a hue that tells them apart)",
                stacklevel=3,
            )


def plot_curves(
    trace: pd.DataFrame,
    x: str = "step",
    y: str = "rel_gap",
    panel: str = "dataset",
    hue: str = "label",
    title: str | None = None,
    logx: bool = False,
    ytop: float | None = None,
    center: str = "median",
    band: str = "minmax",
    width: str | float | None = None,
    points: int = 200,
    styles: dict[str, dict[str, str]] | None = None,
) -> plt.Figure:
    """One panel per value of ``panel`` (none when the trace has no such column), one line
    per value of ``hue``: the ``center`` (``median`` or ``gmean``) of the line's runs,
    each resampled on ``points`` values spanning all of them (log-spaced with ``logx``),
    and a ``band`` (``minmax``, ``iqr`` or ``none``) named in the figure's one legend.

    The legend names a line by its runs' label, also when ``hue`` is an experiment's or
    arm's name (:func:`_run_names`); a parameter that differs only between panels goes
    to the panel titles (:func:`_per_panel`). ``styles``: a line's colour, dash and
    marker by its legend name or hue value, :func:`report_styles` of a report's runs for
    the same style in all its figures (default: ``style_map`` of this figure's lines);
    markers at :data:`MARKS` evenly spaced x per line (:func:`_marks`).

    ``ytop`` caps the y axis; by default at :data:`YMARGIN` times the highest value of the
    lines that did not diverge (no run with status ``diverged``, not ending at their
    highest value above :data:`RUNAWAY` times their start) and of every line's start. A line
    above the cap leaves the plot with an x where it crosses the top edge.

    ``width``: ``column`` (3.3 in), ``full`` (6.9 in) or inches; by default a column for
    one panel, else full width, panels three a row. :func:`drawn` gives the lines drawn,
    :func:`save` writes them beside the figure."""
    cols = stats_names(y, center, band)
    panel_col = panel if panel in trace.columns else None
    by = [panel_col, hue] if panel_col else [hue]
    trace = _filled(trace, by)
    frame = resample(trace, x, y, by=by, n=points, log=logx)
    frame.attrs["ids"] = trace.attrs.get("ids", [])
    _warn_mixed(frame, by)
    lines = summarize(frame, x, y, by, center, band)
    runs_per_line = frame.groupby(by, observed=True, dropna=False)["run"].nunique()
    names, extras = _per_panel(_run_names(trace, panel_col, hue))
    diverged = _diverged(trace, panel_col, hue)
    lines, panels, entries, hue_values = _in_legend_order(lines, panel_col, hue, names)
    style = _resolve_styles(entries, hue_values, styles)
    # every panel's curves and y top before drawing: whether a line leaves the plot decides the legend's size
    drawings = _panel_curves(lines, panels, panel_col, by, x, cols, band, names, diverged, ytop)
    legend_title = _legend_title(runs_per_line, center, band)
    fig = _draw_figure(drawings, entries, style, extras, x, y, cols[0], logx, width, title, legend_title)
    _DRAWN[fig] = lines
    return fig


def _in_legend_order(
    lines: pd.DataFrame, panel_col: str | None, hue: str, names: dict[tuple, str]
) -> tuple[pd.DataFrame, list, list[str], dict[str, list[str]]]:
    """The lines sorted for drawing, the panels, the legend entries and the hue values each entry names."""
    keys = (
        list(zip(lines[panel_col], lines[hue], strict=True)) if panel_col else [(None, h) for h in lines[hue]]
    )
    shown = [names[k] for k in keys]
    panels = sorted(lines[panel_col].unique(), key=natural_key) if panel_col and len(lines) else [None]
    entries = sorted(set(shown), key=natural_key)
    rank_p, rank_e = {p: i for i, p in enumerate(panels)}, {e: i for i, e in enumerate(entries)}
    order = sorted(  # panels, then lines in the legend's order (the CSV's order too); stable: x in order
        range(len(lines)),
        key=lambda r: (rank_p.get(keys[r][0], 0), rank_e[shown[r]], natural_key(keys[r][1])),
    )
    lines = lines.iloc[order].reset_index(drop=True)
    hue_values: dict[str, list[str]] = {}
    for k, e in dict.fromkeys(zip(keys, shown, strict=True)):
        hue_values.setdefault(e, []).append(str(k[1]))
    return lines, panels, entries, hue_values


def _panel_curves(
    lines: pd.DataFrame,
    panels: list,
    panel_col: str | None,
    by: list[str],
    x: str,
    cols: tuple[str, ...],
    band: str,
    names: dict[tuple, str],
    diverged: set[tuple],
    ytop: float | None,
) -> list[tuple]:
    """Per panel: its value, lines, curves (entry, x, center, band low, high, shaded, diverged) and y top."""
    drawings = []
    for pv in panels:
        sub = lines if pv is None else lines[lines[panel_col] == pv]
        curves = []
        for gkey, line in sub.groupby(by, sort=False, observed=True, dropna=False):
            k = tuple(gkey) if panel_col else (None, *gkey)
            ys = line[cols[0]].to_numpy(dtype=float)
            lo, hi = (line[c].to_numpy(dtype=float) for c in cols[1:]) if band != "none" else (ys, ys)
            shade = band != "none" and bool((line["runs"] > 1).any())
            gone = k in diverged or _runs_away(ys)
            curves.append((names[k], line[x].to_numpy(dtype=float), ys, lo, hi, shade, gone))
        top = ytop if ytop is not None else _auto_top(curves)
        drawings.append((pv, sub, curves, top))
    return drawings


def _grid_shape(n: int, width: str | float | None) -> tuple[float, int, int, float]:
    """The figure's width in inches, and the columns, rows and height of a grid of ``n`` panels."""
    if width is None:
        width = WIDTHS["column"] if n == 1 else WIDTHS["full"]
    width = WIDTHS[width] if isinstance(width, str) and width in WIDTHS else float(width)
    ncols = min(n, max(1, int(width // 2.2)))
    nrows = math.ceil(n / ncols)
    panel_h = min(max(width / ncols * 0.72, 1.7), 2.5)
    return width, ncols, nrows, panel_h


def _legend_shape(legend: list[str], width: float) -> tuple[int, float]:
    """The columns and height in inches of a legend of these entries across ``width`` inches."""
    entry_w = 0.6 + 0.065 * max((len(e) for e in legend), default=1)  # handle + text at 8 pt
    leg_cols = max(1, min(len(legend), int(width // entry_w)))
    legend_h = 0.2 + 0.17 * math.ceil(len(legend) / leg_cols) + 0.17
    return leg_cols, legend_h


def _draw_figure(
    drawings: list[tuple],
    entries: list[str],
    style: dict[str, dict],
    extras: dict[object, list[str]],
    x: str,
    y: str,
    center_col: str,
    logx: bool,
    width: str | float | None,
    title: str | None,
    legend_title: str | None,
) -> plt.Figure:
    """The figure of the panels' curves (:func:`_panel_curves`), sized for a paper, with one legend."""
    exits = [
        c[6]
        for _, _, curves, top in drawings
        for c in curves
        if _exit_point(c[1], c[2], top, logx) is not None
    ]
    width, ncols, nrows, panel_h = _grid_shape(len(drawings), width)
    legend = entries + (["diverged: leaves the plot" if all(exits) else "leaves the plot"] if exits else [])
    leg_cols, legend_h = _legend_shape(legend, width)
    title = textwrap.fill(title, int(width / 0.075)) if title else None  # 9 pt: about 0.075 in a character
    with plt.rc_context(STYLE):
        fig = plt.figure(
            figsize=(width, nrows * panel_h + legend_h + (0.2 * (title.count("\n") + 1) if title else 0)),
            layout="constrained",
        )
        axes = fig.subplots(nrows, ncols, squeeze=False)
        handles: dict[str, object] = {}
        for i, (ax, (pv, sub, curves, top)) in enumerate(zip(axes.flat, drawings, strict=False)):
            handles.update(_draw_panel(ax, sub, curves, top, x, center_col, logx, entries, style))
            if pv is not None:
                ax.set_title(str(pv) + (f" ({', '.join(extras[pv])})" if extras.get(pv) else ""))
            ax.grid(True, which="major", alpha=0.3)
            if i % ncols == 0:
                ax.set_ylabel(Y_LABELS.get(y, y))
        for ax in axes.flat[len(drawings) :]:
            ax.set_visible(False)
        if entries:
            marks = [handles[e] for e in entries]
            if exits:
                marks.append(Line2D([], [], ls="none", marker="x", ms=6, mew=1.4, color="0.25"))
            fig.legend(
                marks, legend, loc="outside lower center", ncols=leg_cols, frameon=False, title=legend_title
            )
        if title:
            fig.suptitle(title)
    return fig


def _draw_panel(
    ax: plt.Axes,
    sub: pd.DataFrame,
    curves: list[tuple],
    top: float,
    x: str,
    center_col: str,
    logx: bool,
    entries: list[str],
    style: dict[str, dict],
) -> dict[str, object]:
    """Draws a panel's lines, bands and exit marks and scales its axes; returns each line's legend handle."""
    finite_x = sub.loc[sub[center_col].notna(), x].to_numpy(dtype=float)
    finite_x = np.log10(finite_x[finite_x > 0]) if logx else finite_x
    span = (float(finite_x.min()), float(finite_x.max())) if finite_x.size else (math.nan, math.nan)
    handles: dict[str, object] = {}
    for e, xs, ys, lo, hi, shade, _ in curves:
        j = entries.index(e)
        (handles[e],) = ax.plot(xs, ys, **style[e], markevery=_marks(xs, ys, span, j, len(entries), logx))
        if shade:
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(xs, lo, hi, where=ok, color=style[e]["color"], alpha=0.18, lw=0)
    for e, xs, ys, *_ in curves:  # after the lines: ax.lines[:n] are the lines
        at = _exit_point(xs, ys, top, logx)
        if at is not None:
            ax.plot([at], [top], ls="none", marker="x", ms=6, mew=1.4, color=style[e]["color"], clip_on=False)
    ax.set_yscale("log")
    if math.isfinite(top):
        ax.set_ylim(top=top)
    if logx:
        ax.set_xscale("log")
    _x_axis(ax, x, float(sub[x].max()) if len(sub) else math.nan, logx)
    return handles


def _runs_away(ys: np.ndarray) -> bool:
    """A line that ends at its highest value, above :data:`RUNAWAY` times its start: one
    diverging without a run's status saying so (the budget ended first, a hand-made trace).
    Not a median that rises a little where a low seed stopped."""
    ys = ys[np.isfinite(ys)]
    return bool(ys.size > 1 and ys[-1] >= ys.max() and ys[-1] > RUNAWAY * ys[0])


def _auto_top(curves: list[tuple]) -> float:
    """:data:`YMARGIN` times the highest start of the lines and value (band included) of
    those that did not diverge (inf: nothing to draw)."""
    tops = []
    for _, _, ys, _, hi, shade, gone in curves:
        ok = np.isfinite(ys)
        if ok.any():
            tops.append(ys[ok][0])
            if not gone:
                tops.append(np.nanmax(np.where(ok, np.fmax(ys, hi if shade else ys), np.nan)))
    return YMARGIN * max(tops) if tops else math.inf


def _legend_title(runs_per_line: pd.Series, center: str, band: str) -> str | None:
    """What a line and its band are: ``median of 3 seeds, shaded: min–max``."""
    if runs_per_line.empty or runs_per_line.max() <= 1:
        return None
    lo, hi = int(runs_per_line.min()), int(runs_per_line.max())
    seeds = f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds"
    shade = f", shaded: {BANDS[band]}" if band != "none" else ""
    return f"{CENTERS[center]} of {seeds}{shade}"


def drawn(fig: plt.Figure) -> pd.DataFrame | None:
    """The lines :func:`plot_curves` drew in ``fig``: panel and hue values, x, the center and
    band columns (:func:`summarize`) and ``runs``; None for another figure."""
    return _DRAWN.get(fig)


def save(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Save as ``<stem>.png`` (300 dpi) and ``<stem>.pdf`` (TrueType fonts), and, for a
    figure of :func:`plot_curves`, ``<stem>.csv``: what it draws. Return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    with plt.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):  # read when saving
        fig.savefig(paths[0], dpi=300)
        fig.savefig(paths[1])
    lines = drawn(fig)
    if lines is not None:
        paths.append(stem.with_suffix(".csv"))
        lines.to_csv(paths[2], index=False)
    plt.close(fig)
    return paths


def _compact(v: float) -> str:
    """A heatmap cell: three significant digits with an SI prefix (``2.5M``, ``380k``,
    ``0.012``); ``never`` for inf (a target not reached), ``n/a`` for NaN."""
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else "never"
    k = int(min(max(math.floor(math.log10(abs(v)) / 3), 0), len(SI) - 1)) if v else 0
    return f"{v / 1000.0**k:.3g}{SI[k]}"


def _ink(rgb: tuple[float, float, float]) -> str:
    """Black or white text, whichever contrasts more with a cell of colour ``rgb``: white
    where the relative luminance L = 0.2126 R + 0.7152 G + 0.0722 B (linearized sRGB) is
    below 0.179, where the two WCAG 2 contrast ratios (L + 0.05) / 0.05 and 1.05 / (L + 0.05)
    are equal."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "white" if lum < 0.179 else "black"


def heatmap(
    M: np.ndarray,
    rows: list,
    cols: list,
    *,
    row_label: str,
    col_label: str,
    cbar_label: str,
    title: str | None = None,
    fmt: Callable[[float], str] = _compact,
    log: bool = True,
    cmap: str = "viridis_r",
) -> plt.Figure:
    """A table of values ``M[i, j]`` (row ``rows[i]``, column ``cols[j]``: the bits a method
    needs to a target over two of its parameters) as coloured cells with their values
    written in (``fmt``), in the style of :func:`plot_curves`: 8 pt text, a column wide
    (3.3 in; full width, 6.9 in, when the cells need it), a colour bar labelled
    ``cbar_label``, log colours over the finite values with ``log`` (when all are
    positive). Text is black or white by the cell's luminance (:func:`_ink`); cells
    without a value (inf: never reached) are light gray, hatched, with dark text.
    :func:`save` writes it."""
    M = np.asarray(M, dtype=float)
    texts = [[fmt(v) for v in row] for row in M]
    finite = M[np.isfinite(M)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 1.0)
    log = log and lo > 0
    if hi <= lo:  # one value: a range around it, so it gets the scale's middle colour
        lo, hi = (lo / 2, hi * 2) if log else (lo - 1, hi + 1)
    norm = LogNorm(lo, hi) if log else Normalize(lo, hi)
    colours = plt.get_cmap(cmap).with_extremes(bad=NEVER)
    chars = max((len(t) for row in texts for t in row), default=1)
    cell_w = max(0.3, 0.053 * chars + 0.06)  # 7 pt characters: about 0.053 in each
    # row labels and ticks, and the colour bar with its label: about 1.3 in beside the cells
    width = WIDTHS["column"] if 1.3 + cell_w * len(cols) <= WIDTHS["column"] else WIDTHS["full"]
    cell_h = min(max(0.6 * (width - 1.3) / len(cols), 0.25), 0.4)
    title = textwrap.fill(title, int(width / 0.075)) if title else None
    height = 0.9 + cell_h * len(rows) + (0.2 * (title.count("\n") + 1) if title else 0)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
        im = ax.imshow(np.ma.masked_invalid(M), cmap=colours, norm=norm, aspect="auto")
        for i, j in zip(*np.nonzero(~np.isfinite(M)), strict=True):
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=NEVER, edgecolor="0.6", hatch="////", lw=0)
            )
        for (i, j), v in np.ndenumerate(M):
            if math.isfinite(v):
                ax.text(
                    j,
                    i,
                    texts[i][j],
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=_ink(to_rgb(colours(norm(v)))),
                )
            else:  # on a patch of plain gray over the hatching
                box = {"facecolor": NEVER, "edgecolor": "none", "pad": 1.0}
                ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7, color="0.15", bbox=box)
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xticks(np.arange(len(cols) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)  # cells apart
        ax.tick_params(which="minor", length=0)
        ax.tick_params(which="major", length=0)
        ax.spines[:].set_visible(False)
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        if title:
            ax.set_title(title)
        bar = fig.colorbar(im, ax=ax, label=cbar_label, fraction=0.08, pad=0.03)
        bar.outline.set_linewidth(0.6)
    return fig


def _width(text: str) -> str | float:
    if text in WIDTHS:
        return text
    try:
        inches = float(text)
    except ValueError:
        inches = math.nan
    if not inches > 0 or not math.isfinite(inches):
        raise argparse.ArgumentTypeError(f"column, full or a width in inches, got {text!r}")
    return inches


def _fail(message: str) -> None:
    print(f"efbench-figures: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """``efbench-figures DIR``: draw the runs under DIR against iterations, epochs and bits
    (PNG, PDF and the CSV of the lines drawn, per x axis)."""
    ap = argparse.ArgumentParser(prog="efbench-figures", description=main.__doc__)
    ap.add_argument("root", help="a run or multirun directory")
    ap.add_argument("--x", nargs="+", default=["iterations", "epochs", "bits"], choices=list(X_AXES))
    ap.add_argument("--network", help="time_sim under this network profile (efbench-collect --network)")
    ap.add_argument("--y", default="rel_gap", help="trace column (rel_gap, gap, grad_norm2, dist2, ...)")
    ap.add_argument("--panel", default="dataset", help="one panel per value of this column")
    ap.add_argument("--hue", default="label", help="one line per value of this column")
    ap.add_argument("--out", help="output folder (default: <root>/figures)")
    ap.add_argument("--logx", action="store_true", help="log-scale x axis (bits spanning decades)")
    ap.add_argument("--center", default="median", choices=list(CENTERS), help="the line over seeds")
    ap.add_argument("--band", default="minmax", choices=list(BANDS), help="the shaded band over seeds")
    ap.add_argument(
        "--width", type=_width, help="column (3.3 in), full (6.9 in) or inches (default: by panels)"
    )
    ap.add_argument("--points", type=int, default=200, help="grid points per line")
    ap.add_argument(
        "--tuned", action="store_true", help="only each arm's tuned runs (a sweep made with +tune=...)"
    )
    args = ap.parse_args(argv)
    if args.points < 2:
        _fail(f"--points: at least 2, got {args.points}")
    try:
        trace, _ = collect(args.root, network=args.network)
    except ConfigError as exc:
        _fail(str(exc))
    if trace.empty:
        _fail(f"root: no runs with a trace under {args.root}")
    if args.tuned:
        if "tuned" not in trace.columns:
            _fail(f"--tuned: the runs under {args.root} were not tuned (sweep them with +tune=stepsize)")
        trace = trace[trace["tuned"]]
    for opt, col in (("--y", args.y), ("--panel", args.panel), ("--hue", args.hue)):
        if col not in trace.columns:
            _fail(f"{opt}: no column {col!r} (available: {', '.join(trace.columns)})")
    out = Path(args.out) if args.out else Path(args.root) / "figures"
    styles = report_styles(trace, args.hue, args.panel)  # one line, one style, in every figure
    for name in args.x:
        x = X_AXES[name]
        if x not in trace.columns:
            _fail(f"--x: no column {x!r} (runs made before it was recorded)")
        fig = plot_curves(
            trace,
            x,
            args.y,
            args.panel,
            args.hue,
            logx=args.logx,
            center=args.center,
            band=args.band,
            width=args.width,
            points=args.points,
            styles=styles,
        )
        if drawn(fig).empty:
            plt.close(fig)
            _fail(f"--y: no finite values of {args.y!r} against {x!r} to draw")
        for p in save(fig, out / f"{args.y}_vs_{name}"):
            print(p)
