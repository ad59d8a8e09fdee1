"""Figures: f(x) - f* (or any metric) against iterations, epochs, bits or simulated time
(``time_sim``, optionally under another network profile), log-scale y,
one panel per value of a column, one line per value of another, mean over seeds with a
shaded min-max band. Saved as PNG and PDF, no LaTeX needed."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from efbench.errors import ConfigError  # noqa: E402
from efbench.sweep import collect  # noqa: E402

X_AXES = {"iterations": "step", "epochs": "epochs", "bits": "bits_up_mean", "time_sim": "time_sim"}
X_LABELS = {
    "step": "iterations",
    "epochs": "epochs (data passes)",
    "bits_up_mean": "bits communicated per worker",
    "time_sim": "simulated time (s)",
}
Y_LABELS = {
    "rel_gap": r"$(f(x^k)-f^*)/(f(x^0)-f^*)$",
    "gap": r"$f(x^k)-f^*$",
    "grad_norm2": r"$\|\nabla f(x^k)\|^2$",
    "dist2": r"$\|x^k-x^*\|^2$",
}
FLOOR = 1e-16  # f - f* at or below rounding is drawn at this floor, not dropped


def band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 300) -> tuple[np.ndarray, ...]:
    """Mean, min and max of several (x, y) curves on a common x grid (their common range).

    Curves sharing one x grid are combined as they are; otherwise each is interpolated
    (in log y) onto ``points`` values spanning the range all of them cover.
    """
    xs = [c[0] for c in curves]
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        grid = xs[0]
        Y = np.array([c[1] for c in curves])
    else:
        lo, hi = max(x.min() for x in xs), min(x.max() for x in xs)
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
        Y = np.array([10 ** np.interp(grid, x, np.log10(y)) for x, y in curves])
    return grid, Y.mean(axis=0), Y.min(axis=0), Y.max(axis=0)


def plot_curves(
    trace: pd.DataFrame,
    x: str = "step",
    y: str = "rel_gap",
    panel: str = "dataset",
    hue: str = "label",
    title: str | None = None,
    logx: bool = False,
    ytop: float | None = None,
) -> plt.Figure:
    """One panel per value of ``panel``, one line per value of ``hue``; mean and band over
    the runs (seeds) that share them. ``ytop`` caps the y axis (a diverging curve then
    leaves the frame instead of squeezing the others)."""
    panels = sorted(trace[panel].dropna().unique(), key=str) if panel in trace else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    hues = sorted(trace[hue].dropna().unique(), key=str)
    colors = {h: plt.cm.tab10(i % 10) for i, h in enumerate(hues)}
    for ax, pv in zip(axes[0], panels, strict=True):
        sub = trace if pv is None else trace[trace[panel] == pv]
        for h in hues:
            runs = sub[sub[hue] == h]
            if runs.empty:
                continue
            curves = []
            for _, r in runs.groupby("run", sort=False):
                r = r.sort_values(x)
                vals = np.maximum(r[y].to_numpy(dtype=float), FLOOR)
                ok = np.isfinite(vals)
                if ok.sum() >= 1:
                    curves.append((r[x].to_numpy(dtype=float)[ok], vals[ok]))
            if not curves:
                continue
            grid, mean, lo, hi = band(curves)
            n = len(curves)
            ax.plot(grid, mean, color=colors[h], lw=1.8, label=f"{h}" + (f" ({n} seeds)" if n > 1 else ""))
            if n > 1:
                ax.fill_between(grid, lo, hi, color=colors[h], alpha=0.2, lw=0)
        ax.set_yscale("log")
        if ytop is not None:
            ax.set_ylim(top=ytop)
        if logx:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_title(str(pv) if pv is not None else (title or ""))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(Y_LABELS.get(y, y))
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Save as ``<stem>.png`` and ``<stem>.pdf``; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    """``efbench-figures DIR``: draw the runs under DIR against iterations, epochs and bits."""
    ap = argparse.ArgumentParser(prog="efbench-figures", description=main.__doc__)
    ap.add_argument("root", help="a run or multirun directory")
    ap.add_argument("--x", nargs="+", default=["iterations", "epochs", "bits"], choices=list(X_AXES))
    ap.add_argument("--network", help="time_sim under this network profile (efbench-collect --network)")
    ap.add_argument("--y", default="rel_gap", help="trace column (rel_gap, gap, grad_norm2, dist2, ...)")
    ap.add_argument("--panel", default="dataset", help="one panel per value of this column")
    ap.add_argument("--hue", default="label", help="one line per value of this column")
    ap.add_argument("--out", help="output folder (default: <root>/figures)")
    ap.add_argument("--logx", action="store_true", help="log-scale x axis (bits spanning decades)")
    args = ap.parse_args(argv)
    try:
        trace, runs = collect(args.root, network=args.network)
    except ConfigError as exc:
        raise SystemExit(f"efbench-figures: error: {exc}") from None
    if trace.empty:
        raise SystemExit(f"efbench-figures: no runs with a trace under {args.root}")
    for col in (args.y, args.panel, args.hue):
        if col not in trace.columns:
            raise SystemExit(f"efbench-figures: no column {col!r}; available: {', '.join(trace.columns)}")
    out = Path(args.out) if args.out else Path(args.root) / "figures"
    for name in args.x:
        if X_AXES[name] not in trace.columns:
            raise SystemExit(
                f"efbench-figures: no column {X_AXES[name]!r} (runs made before it was recorded)"
            )
        fig = plot_curves(trace, X_AXES[name], args.y, args.panel, args.hue, logx=args.logx)
        for p in save(fig, out / f"{args.y}_vs_{name}"):
            print(p)
