"""Reading a target off a run's trace exactly: the x (iterations, bits, simulated time, ...)
at which a metric first reaches a target, interpolated between the log points around the
crossing, never read off the first log point past it.

Between two log points a linearly converging method's ``log y`` is close to linear in the
step (and in bits and time, which grow linearly in the steps between two log points), so the
crossing is interpolated log-linearly: with the last point above the target ``(x0, y0)`` and
the first at or below it ``(x1, y1)``,

    x* = x0 + (x1 - x0) * (log y0 - log t) / (log y0 - log y1).

A crossing between the start (step 0) and the first logged step is *early*: the trace holds
nothing between the two, so the interpolated value is a guess that only the log schedule
decides; comparisons draw no ratio from it (:func:`Reach.exact`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

FLOOR = 1e-16  # values at or below rounding are read at this floor (as figures draw them)
REACHED, EARLY, START, NEVER, DIVERGED = "reached", "early", "start", "never", "diverged"


@dataclass(frozen=True)
class Reach:
    """Where one run first reaches a target: ``x`` (inf when never) and how it was read:
    ``reached`` (interpolated between two log points), ``early`` (between the start and
    the first logged step), ``start`` (already at the start), ``never`` or ``diverged``."""

    x: float
    how: str

    @property
    def exact(self) -> bool:
        """Whether ``x`` is a measurement a ratio may be drawn from."""
        return self.how == REACHED


def reach(
    x: np.ndarray, y: np.ndarray, target: float, step: np.ndarray | None = None, diverged: bool = False
) -> Reach:
    """The first x at which ``y`` reaches ``target`` (:class:`Reach`), the points in step
    order; ``step`` (the points' steps) tells the start (step 0) from the first logged step.
    Non-finite ``y`` (a diverged run's last points) never reach the target."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & ~np.isnan(y)
    x, y = x[ok], np.maximum(y[ok], FLOOR)
    steps = np.asarray(step, dtype=float)[ok] if step is not None else np.arange(len(x), dtype=float)
    hit = np.nonzero(np.isfinite(y) & (y <= target))[0]
    if not len(hit):
        return Reach(math.inf, DIVERGED if diverged else NEVER)
    i = int(hit[0])
    if i == 0:
        return Reach(float(x[0]), START)
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    at = (
        x1
        if x1 == x0 or not math.isfinite(y0)
        else x0 + (x1 - x0) * math.log(y0 / target) / math.log(y0 / y1)
    )
    return Reach(float(at), EARLY if steps[i - 1] == 0 else REACHED)


def run_reach(
    run: pd.DataFrame, x: str, target: float, y: str = "rel_gap", diverged: bool | None = None
) -> Reach:
    """:func:`reach` on one run's trace rows (any order: sorted by step here)."""
    r = run.sort_values("step", kind="stable")
    if diverged is None:
        diverged = "status" in r and (r["status"].astype(str) == "diverged").any()
    return reach(
        r[x].to_numpy(float), r[y].to_numpy(float), target, r["step"].to_numpy(float), bool(diverged)
    )


@dataclass(frozen=True)
class Spread:
    """A quantity over seeds: their median, min and max, how many seeds, and whether every
    seed's value is exact (:attr:`Reach.exact`)."""

    median: float
    lo: float
    hi: float
    seeds: int
    exact: bool
    early: int = 0  # seeds that crossed before their first logged step

    @classmethod
    def of(cls, values: list[Reach] | list[float]) -> Spread:
        xs = np.array([v.x if isinstance(v, Reach) else float(v) for v in values], dtype=float)
        if not len(xs):
            return cls(math.nan, math.nan, math.nan, 0, False)
        exact = all(v.how in (REACHED, NEVER, DIVERGED) if isinstance(v, Reach) else True for v in values)
        early = sum(isinstance(v, Reach) and v.how in (EARLY, START) for v in values)
        return cls(float(np.median(xs)), float(xs.min()), float(xs.max()), len(xs), exact, early)

    def text(self, unit: str = "") -> str:
        """``1.2e+05 (1.1e+05-1.3e+05)``: median and range over seeds; 'never' when the
        median is infinite; marked '*' when a seed's value is not exact."""
        if not math.isfinite(self.median):
            return "never" if self.seeds else "n/a"
        mark = "*" if self.early else ""
        if self.seeds < 2 or self.lo == self.hi:
            return f"{self.median:.3g}{unit}{mark}"
        hi = "never" if math.isinf(self.hi) else f"{self.hi:.3g}"
        return f"{self.median:.3g}{unit}{mark} ({self.lo:.3g}-{hi})"


def ratio(a: Spread, b: Spread) -> float:
    """a / b of the medians; nan where either is not exact, not finite, or b is 0."""
    if not (a.exact and b.exact):  # exact: no seed crossed early or at the start
        return math.nan
    if not (math.isfinite(a.median) and math.isfinite(b.median)) or b.median == 0:
        return math.nan
    return a.median / b.median
