"""Tuning as papers tune: each arm of a comparison at its best value of one batchable key
(by default the stepsize multiplier, on the grid 2^-4 .. 2^4 of the theory stepsize),
chosen by a stated criterion over seeds.

``+tune=stepsize`` adds a ``tune`` block to every run's config (``efbench/conf/tune/``) and the
efbench sweeper sweeps ``tune.key`` over ``tune.grid`` (batched: the key is batchable), also
over ``tune.select_seeds`` when given. :func:`picks` reads the runs: an *arm* is a set of
runs equal in every identifying column but the seed and the tuned key; for each value of
the key it takes the median over the selection seeds of

* ``bits`` / ``iterations`` / ``epochs`` / ``time``: the uplink bits per worker, steps,
  data passes or simulated seconds to reach ``tune.target`` of ``tune.metric``, interpolated
  between log points (:func:`efbench.analysis.targets.reach`); a diverged or unfinished run never
  reaches it (infinite);
* ``final``: the metric at the run's end (a diverged run: infinite),

and picks the smallest (ties: the value nearer 1, the untuned setting). Divergent grid
points lose; they are never errors. Where no value reaches the target, the arm is picked by
its final metric instead and the pick says so. A pick at the grid's edge is flagged:
the best value may lie beyond it. The runs of the picked value on the reported seeds (every
seed but the selection seeds, or every seed when there are none) are ``tuned``.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from efbench.analysis.targets import run_reach
from efbench.config.tune import CRITERIA, TuneSpec
from efbench.errors import ConfigError
from efbench.run.results import FINISHED

# identifying columns that never tell arms apart
NOT_ARM = ("run", "seed", "label", "status", "tuned")
EMPTY = pd.DataFrame()
PICK = (
    "arm",
    "key",
    "value",
    "score",
    "by",
    "edge",
    "tried",
    "scores",
    "spec",
    "tune",
)  # a pick's own columns


def spec_of(summary_config: dict) -> TuneSpec | None:
    block = summary_config.get("tune")
    return TuneSpec.from_config(block) if isinstance(block, dict) else None


def final(run: pd.DataFrame, metric: str, diverged: bool) -> float:
    """A run's last value of ``metric`` (inf for a diverged run or a non-finite value)."""
    vals = run.sort_values("step", kind="stable")[metric].to_numpy(float)
    vals = vals[~np.isnan(vals)]
    return math.inf if diverged or not len(vals) or not np.isfinite(vals[-1]) else float(vals[-1])


def score(run: pd.DataFrame, spec: TuneSpec, diverged: bool) -> float:
    """One run's criterion (smaller is better; inf: never reached or diverged)."""
    x = CRITERIA[spec.criterion]
    if x is None:
        return final(run, spec.metric, diverged)
    if x not in run.columns:
        raise ConfigError("tune.criterion", f"the traces have no {x} column")
    return run_reach(run, x, spec.target, spec.metric, diverged).x


def picks(trace: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per tuned arm: its identifying columns, ``value`` (the picked value of the
    key), ``score`` (its median criterion), ``by`` ('criterion', or 'final' where no value
    reached the target), ``edge`` (the pick is the smallest or largest value tried), the
    values tried, and the spec. Runs without a ``tune`` block are not tuned arms."""
    if runs.empty or "tune" not in runs.columns:
        return pd.DataFrame()
    rows = []
    tuned = runs[runs["tune"].notna()]
    ids = [c for c in trace.attrs.get("ids", []) if c in runs.columns]
    by_run = dict(tuple(trace.groupby("run", observed=True, sort=False))) if not trace.empty else {}
    for tune_json, group in tuned.groupby("tune", sort=False):
        spec = TuneSpec.from_config(json.loads(tune_json))
        key = spec.key
        values = group[key] if key in group.columns else pd.Series(np.nan, index=group.index)
        arm_cols = [c for c in ids if c not in (*NOT_ARM, key) and not c.startswith("tune.")]
        select = set(spec.select_seeds)
        for arm, members in (
            group.groupby(arm_cols, sort=False, observed=True, dropna=False) if arm_cols else [((), group)]
        ):
            arm = arm if isinstance(arm, tuple) else (arm,)
            pick_runs = members[members["seed"].isin(select)] if select else members
            if pick_runs.empty:
                continue
            per_value = {}
            for v, same in pick_runs.groupby(values.loc[pick_runs.index], sort=True, dropna=False):
                scores, finals = [], []
                for run_id, status in zip(same["run"], same["status"], strict=True):
                    rows_of = by_run.get(run_id, EMPTY)
                    diverged = str(status) == "diverged"
                    unfinished = str(status) not in FINISHED
                    if rows_of.empty or unfinished:
                        scores.append(math.inf)
                        finals.append(math.inf)
                        continue
                    scores.append(score(rows_of, spec, diverged))
                    finals.append(final(rows_of, spec.metric, diverged))
                per_value[float(v)] = (float(np.median(scores)), float(np.median(finals)))
            tried = sorted(per_value)
            reached = any(math.isfinite(s) for s, _ in per_value.values())
            which = 0 if reached else 1
            best = min(tried, key=lambda v: (per_value[v][which], abs(math.log(v)) if v > 0 else math.inf))
            rows.append(
                {
                    **dict(zip(arm_cols, arm, strict=True)),
                    "arm": arm_name(members),
                    "key": key,
                    "value": best,
                    "score": per_value[best][which],
                    "by": "criterion" if reached else "final",
                    "edge": len(tried) > 2 and best in (tried[0], tried[-1]),
                    "tried": tried,
                    "scores": [per_value[v][which] for v in tried],
                    "spec": spec,
                    "tune": tune_json,
                }
            )
    return pd.DataFrame(rows)


def arm_name(members: pd.DataFrame) -> str:
    """An arm's name: its runs' label without the stepsize part the tuning varies, and its
    dataset."""
    label = str(members["label"].iloc[0]) if "label" in members else ""
    label = re.sub(r", γ=[^,]*", "", label)
    return f"{label} on {members['dataset'].iloc[0]}" if "dataset" in members else label


def mark(runs: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """``tuned``: whether each run is its arm's picked value on a reported seed."""
    out = pd.Series(False, index=runs.index)
    for _, p in table.iterrows():
        spec: TuneSpec = p["spec"]
        m = runs["tune"] == p["tune"]
        for c, v in p.items():
            if c in runs.columns and c not in PICK:
                m &= (runs[c].astype(str) == str(v)) if not pd.isna(v) else runs[c].isna()
        if spec.key in runs.columns:
            m &= np.isclose(runs[spec.key].astype(float), p["value"])
        if spec.select_seeds:
            m &= ~runs["seed"].isin(spec.select_seeds)
        out |= m
    return out


def describe(table: pd.DataFrame) -> list[str]:
    """Lines saying how each arm was tuned, for reports and ``efbench-collect``."""
    if table.empty:
        return []
    spec: TuneSpec = table["spec"].iloc[0]
    grid = sorted({v for t in table["tried"] for v in t})
    lines = [
        f"Each arm at its best {spec.key} of {', '.join(f'{v:g}' for v in grid)}, "
        f"chosen by {spec.describe()}."
    ]
    for _, p in table.iterrows():
        arm = p["arm"]
        note = ""
        if p["by"] == "final":
            note = f"; no value reached {spec.metric} {spec.target:g}: picked by the final {spec.metric}"
        if p["edge"]:
            note += "; WARNING: at the grid's edge, the best value may lie beyond it"
        lines.append(f"- {arm}: {spec.key} = {p['value']:g} (score {p['score']:.3g}){note}")
    return lines
