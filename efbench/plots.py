"""Figures for a paper: a metric (f(x) - f*, by default) against iterations, epochs, bits or
time, log-scale y, one panel per value of a column and one line per value of another.

A line is the median (or geometric mean) over its runs (seeds), each first resampled on
one grid spanning all of them (:func:`efbench.sweep.resample`, so a run that stopped early
does not cut the others), with a shaded min-max or interquartile band named in the
legend. One legend for the whole figure; line styles and markers that keep the lines apart
in grayscale; sizes for a two-column paper (3.3 in per column, 6.9 in full width, 8-9 pt
text); TrueType (Type 42) fonts in the PDF. :func:`save` writes PNG, PDF and the CSV of
exactly what the figure draws. No LaTeX needed."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import warnings
import weakref
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator  # noqa: E402

from efbench.errors import ConfigError, check_choice  # noqa: E402
from efbench.sweep import FLOOR, collect, natural_key, resample  # noqa: E402, F401 (FLOOR: paper.py)

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
# Okabe-Ito colours (tell apart with colour blindness), with line styles and markers
# that tell the lines apart in grayscale
COLORS = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
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
    """One row per line (group of ``by``) and grid point of a :func:`efbench.sweep.resample`
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


def band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 300) -> tuple[np.ndarray, ...]:
    """Median, min and max of several (x, y) curves on one x grid: their shared x values,
    else ``points`` values spanning the union of their ranges (:func:`resample`: in log y,
    each curve NaN outside its own range, the statistics over the curves there)."""
    xs = [np.asarray(c[0], dtype=float) for c in curves]
    shared = all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs)
    trace = pd.concat(
        [pd.DataFrame({"run": i, "x": c[0], "y": c[1]}) for i, c in enumerate(curves)], ignore_index=True
    )
    frame = resample(trace, "x", "y", grid=xs[0] if shared else None, n=points, log=False)
    line = summarize(frame, "x", "y", [])
    return tuple(line[c].to_numpy() for c in ("x", "y_median", "y_min", "y_max"))


def _line_style(i: int, n: int) -> dict[str, object]:
    """Colour, dash and marker of the i-th of n lines; markers staggered along the lines."""
    return dict(
        color=COLORS[i % len(COLORS)],
        linestyle=LINESTYLES[i % len(LINESTYLES)],
        marker=MARKERS[(i + i // len(MARKERS)) % len(MARKERS)],
        markevery=(0.1 * i / max(n, 1), 0.1),
    )


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
) -> plt.Figure:
    """One panel per value of ``panel`` (none when the trace has no such column), one line
    per value of ``hue``: the ``center`` (``median`` or ``gmean``) of the line's runs,
    each resampled on ``points`` values spanning all of them (log-spaced with ``logx``),
    and a ``band`` (``minmax``, ``iqr`` or ``none``) named in the figure's one legend.

    ``width``: ``column`` (3.3 in), ``full`` (6.9 in) or inches; by default a column for
    one panel, else full width, panels three a row. ``ytop`` caps the y axis (a diverging
    curve then leaves the frame instead of squeezing the others). :func:`drawn` gives the
    lines drawn, :func:`save` writes them beside the figure."""
    names = stats_names(y, center, band)
    panel_col = panel if panel in trace.columns else None
    by = [panel_col, hue] if panel_col else [hue]
    missing = {c: trace[c].astype(object).fillna("(none)") for c in by if trace[c].isna().any()}
    trace = trace.assign(**missing) if missing else trace  # runs without a value: a line of their own
    frame = resample(trace, x, y, by=by, n=points, log=logx)
    frame.attrs["ids"] = trace.attrs.get("ids", [])
    _warn_mixed(frame, by)
    lines = summarize(frame, x, y, by, center, band)
    runs_per_line = frame.groupby(by, observed=True, dropna=False)["run"].nunique()
    panels = sorted(lines[panel_col].unique(), key=natural_key) if panel_col and len(lines) else [None]
    hues = sorted(lines[hue].unique(), key=natural_key)
    if len(lines):  # panels, then lines, in the order drawn (the CSV's order too)
        rank = {panel_col: {p: i for i, p in enumerate(panels)}, hue: {h: i for i, h in enumerate(hues)}}
        lines = lines.sort_values(
            by, key=lambda col: col.map(rank[col.name]), kind="stable", ignore_index=True
        )

    if width is None:
        width = WIDTHS["column"] if len(panels) == 1 else WIDTHS["full"]
    width = WIDTHS[width] if isinstance(width, str) and width in WIDTHS else float(width)
    ncols = min(len(panels), max(1, int(width // 2.2)))
    nrows = math.ceil(len(panels) / ncols)
    panel_h = min(max(width / ncols * 0.72, 1.7), 2.5)
    entry_w = 0.6 + 0.065 * max((len(str(h)) for h in hues), default=1)  # handle + text at 8 pt
    leg_cols = max(1, min(len(hues), int(width // entry_w)))
    legend_h = 0.2 + 0.17 * math.ceil(len(hues) / leg_cols) + 0.17
    title = textwrap.fill(title, int(width / 0.075)) if title else None  # 9 pt: about 0.075 in a character
    with plt.rc_context(STYLE):
        fig = plt.figure(
            figsize=(width, nrows * panel_h + legend_h + (0.2 * (title.count("\n") + 1) if title else 0)),
            layout="constrained",
        )
        axes = fig.subplots(nrows, ncols, squeeze=False)
        handles: dict[object, object] = {}
        for i, (ax, pv) in enumerate(zip(axes.flat, panels, strict=False)):
            sub = lines if pv is None else lines[lines[panel_col] == pv]
            for j, h in enumerate(hues):
                line = sub[sub[hue] == h]
                if line.empty:
                    continue
                xs = line[x].to_numpy(dtype=float)
                (handles[h],) = ax.plot(xs, line[names[0]].to_numpy(dtype=float), **_line_style(j, len(hues)))
                if band != "none" and (line["runs"] > 1).any():
                    lo, hi = (line[c].to_numpy(dtype=float) for c in names[1:])
                    ax.fill_between(
                        xs,
                        lo,
                        hi,
                        where=np.isfinite(lo) & np.isfinite(hi),
                        color=COLORS[j % len(COLORS)],
                        alpha=0.18,
                        lw=0,
                    )
            ax.set_yscale("log")
            if ytop is not None:
                ax.set_ylim(top=ytop)
            if logx:
                ax.set_xscale("log")
            _x_axis(ax, x, float(sub[x].max()) if len(sub) else math.nan, logx)
            if pv is not None:
                ax.set_title(str(pv))
            ax.grid(True, which="major", alpha=0.3)
            if i % ncols == 0:
                ax.set_ylabel(Y_LABELS.get(y, y))
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        if handles:
            fig.legend(
                [handles[h] for h in hues if h in handles],
                [str(h) for h in hues if h in handles],
                loc="outside lower center",
                ncols=leg_cols,
                frameon=False,
                title=_legend_title(runs_per_line, center, band),
            )
        if title:
            fig.suptitle(title)
    _DRAWN[fig] = lines
    return fig


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
    args = ap.parse_args(argv)
    if args.points < 2:
        _fail(f"--points: at least 2, got {args.points}")
    try:
        trace, _ = collect(args.root, network=args.network)
    except ConfigError as exc:
        _fail(str(exc))
    if trace.empty:
        _fail(f"root: no runs with a trace under {args.root}")
    for opt, col in (("--y", args.y), ("--panel", args.panel), ("--hue", args.hue)):
        if col not in trace.columns:
            _fail(f"{opt}: no column {col!r} (available: {', '.join(trace.columns)})")
    out = Path(args.out) if args.out else Path(args.root) / "figures"
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
        )
        if drawn(fig).empty:
            plt.close(fig)
            _fail(f"--y: no finite values of {args.y!r} against {x!r} to draw")
        for p in save(fig, out / f"{args.y}_vs_{name}"):
            print(p)
