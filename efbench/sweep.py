"""Collect every run under a directory into tidy pandas frames.

``collect(root)`` returns ``(trace, runs)``: ``runs`` has one row per run (status, final
metrics, constants, stepsize, timing and its config), ``trace`` one row per logged step
of every run with the run's identifying columns joined in. Identifying columns are the
standard ones (dataset, method, compressor, sampling, stepsize, seed, label, run) plus
every config value that differs between the runs found (the swept ones), under their
dotted config names. Reading is per-file JSON and parquet: no YAML is parsed.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from efbench.errors import ConfigError
from efbench.network import COUNTS, Profile, simulated_time
from efbench.results import ERROR, UNREADABLE, verified

STANDARD = [
    "run",
    "dataset",
    "method",
    "compressor",
    "sampling",
    "stepsize",
    "seed",
    "label",
    "experiment",
    "status",
]
IGNORED_PREFIXES = ("data.dir", "data.mirror", "progress")


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _run_row(path: Path, root: Path, summ: dict) -> dict[str, object]:
    cfg = _flatten(summ.get("config", {}))
    choices = summ.get("choices") or {}
    est = summ.get("config", {}).get("method", {}).get("estimator", {})
    row: dict[str, object] = {
        "run": str(path.parent.relative_to(root)) if path.parent != root else ".",
        "dataset": cfg.get("dataset.name"),
        "method": cfg.get("method.name"),
        "compressor": choices.get("compressor") or str(cfg.get("compressor._target_", "")).split(".")[-1],
        "sampling": est.get("sampling") if est.get("kind", "full") != "full" else "full",
        "stepsize": cfg.get("stepsize.rule"),
        "seed": cfg.get("seed"),
        "status": summ.get("status"),
        "gamma0": summ.get("gamma0"),
        "stepsize_formula": summ.get("stepsize_formula"),
        "steps": summ.get("steps"),
        "wall_time": summ.get("wall_time"),
        "iters_per_sec": summ.get("iters_per_sec"),
        "log_time": summ.get("log_time"),
        "engine": summ.get("engine"),
        "n_workers": summ.get("n_workers"),
        "collective": summ.get("collective"),
        "c_grad_measured": summ.get("c_grad_measured"),
        "error": summ.get("error"),
    }
    row["experiment"] = choices.get("experiment")
    row["label"] = f"{row['method']} + {row['compressor']}"
    part = summ.get("config", {}).get("participation", {})
    if part.get("kind", "full") != "full":  # e.g. EF21-PP beside EF21 with the same compressor
        row["label"] += f" ({part['kind']} {part.get('size') if part['kind'] == 'nice' else part.get('p')})"
    for k, v in (summ.get("final") or {}).items():
        row[f"final_{k}"] = v
    for k, v in (summ.get("constants") or {}).items():
        row[f"const_{k}"] = v
    for k, v in cfg.items():
        if not k.startswith(IGNORED_PREFIXES):
            row[f"cfg.{k}"] = v
    return row


def collect(
    root: str | Path, statuses: tuple[str, ...] | None = None, network: str | Profile | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load every run (``summary.json`` + ``trace.parquet``) below ``root``.

    ``statuses`` keeps only runs with these statuses (None: all). ``network`` (a profile
    name of the ``network`` config group, or a :class:`efbench.network.Profile`) recomputes
    ``time_sim`` of every trace row under that profile (:func:`retime`). Returns (trace, runs).
    """
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("summary.json")):
        try:
            summ = json.loads(path.read_text())
        except (OSError, ValueError):
            summ = {"status": UNREADABLE}  # damaged (results are written atomically): never a result
            warnings.warn(f"efbench-collect: skipping {path.parent}: unreadable summary.json", stacklevel=2)
        if summ.get("status") not in ("error", UNREADABLE) and not verified(path.parent, summ):
            warnings.warn(
                f"efbench-collect: skipping {path.parent}: its trace.parquet is unreadable or not the "
                "one its summary was written with",
                stacklevel=2,
            )
            summ = {**summ, "status": UNREADABLE}
        try:  # a later launch that failed over this result: the result stands, the error is shown
            summ = {**summ, "error": json.loads((path.parent / ERROR).read_text()).get("error")}
        except (OSError, ValueError, AttributeError):
            pass
        if statuses is None or summ.get("status") in statuses:
            rows.append(_run_row(path, root, summ))
    runs = pd.DataFrame(rows)
    if runs.empty:
        return pd.DataFrame(), runs
    cfg_cols = [c for c in runs.columns if c.startswith("cfg.")]
    # swept values = config leaves that differ between runs (seed is a standard column)
    varying = [
        c for c in cfg_cols if runs[c].astype(str).nunique(dropna=False) > 1 and c[4:] not in runs.columns
    ]
    runs = runs.drop(columns=[c for c in cfg_cols if c not in varying])
    runs = runs.rename(columns={c: c[4:] for c in varying})
    keys = [c for c in STANDARD if c in runs.columns] + [c[4:] for c in varying]
    tables = []
    for i, (run, status) in enumerate(zip(runs["run"], runs["status"], strict=True)):
        f = root / run / "trace.parquet"
        if status != UNREADABLE and f.is_file():
            try:
                t = pq.read_table(f)
            except (OSError, ValueError, pa.ArrowException):
                warnings.warn(f"efbench-collect: skipping the trace of {run}: unreadable", stacklevel=2)
                continue
            tables.append(t.append_column("_i", pa.array([i] * t.num_rows, pa.int32())))
    if not tables:
        return pd.DataFrame(), runs
    trace = pa.concat_tables(tables, promote_options="default").to_pandas()
    ids = runs[keys].reset_index(drop=True)
    owner = trace.pop("_i").to_numpy()
    trace = ids.iloc[owner].reset_index(drop=True).join(trace)
    if network is not None:
        trace["time_sim"] = retime(trace, runs.iloc[owner].reset_index(drop=True), network)
    return trace, runs


def retime(trace: pd.DataFrame, runs: pd.DataFrame, network: str | Profile) -> np.ndarray:
    """``time_sim`` of each trace row under another network profile, from the per-round
    counts the trace keeps (:data:`efbench.network.COUNTS`); ``runs`` holds each row's run
    (its ``n_workers`` and ``collective``). Nothing is re-run."""
    prof = network if isinstance(network, Profile) else profile(network)
    missing = [c for c in (*COUNTS, "rounds_down") if c not in trace.columns]
    if missing:
        raise ConfigError("network", f"these traces predate simulated time (no {', '.join(missing)})")
    out = np.empty(len(trace))
    for i, idx in trace.groupby(trace["run"].astype(str)).groups.items():
        run = runs.loc[idx[0]]
        prof_r = prof
        if prof.c_grad == "measured":
            measured = run.get("c_grad_measured")
            if measured is None or pd.isna(measured):
                raise ConfigError(
                    "network.c_grad", f"run {i} has no measured c_grad (run it with c_grad=measured)"
                )
            prof_r = replace(prof, c_grad=float(measured))
        rows = trace.loc[idx]
        counts = {c: rows[c].to_numpy() for c in (*COUNTS, "bits_up_mean", "bits_down", "rounds_down")}
        collective = prof_r.collective_of(str(run["collective"]))
        out[idx] = simulated_time(prof_r, collective, int(run["n_workers"]), counts)
    return out


def profile(name: str) -> Profile:
    """The profile ``name`` of the packaged ``network`` config group."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    group = files("efbench.conf") / "network"
    path = group / f"{name}.yaml"
    if not path.is_file():
        known = tuple(sorted(p.name[:-5] for p in group.iterdir() if p.name.endswith(".yaml")))
        raise ConfigError("network", f"no profile {name!r}", known)
    return Profile.from_config(OmegaConf.load(path))


def main(argv: list[str] | None = None) -> None:
    """``efbench-collect DIR``: print the per-run table; optionally save both frames."""
    ap = argparse.ArgumentParser(prog="efbench-collect", description=main.__doc__)
    ap.add_argument("root", help="a run or multirun directory")
    ap.add_argument("-o", "--out", help="write <out>_trace.parquet and <out>_runs.csv")
    ap.add_argument("--network", help="recompute time_sim under this network profile (e.g. wan_slow)")
    args = ap.parse_args(argv)
    try:
        trace, runs = collect(args.root, network=args.network)
    except ConfigError as exc:
        raise SystemExit(f"efbench-collect: error: {exc}") from None
    if runs.empty:
        raise SystemExit(f"efbench-collect: no runs (summary.json) under {args.root}")
    show = [
        c
        for c in ("run", "status", "steps", "final_rel_gap", "final_bits_up_mean", "iters_per_sec")
        if c in runs.columns
    ]
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(runs[show].to_string(index=False))
    counts = runs["status"].value_counts()
    tally = ", ".join(f"{status} {counts[status]}" for status in counts.index)
    print(f"{len(runs)} runs ({tally}), {len(trace)} trace rows")
    if args.out:
        trace.to_parquet(f"{args.out}_trace.parquet", index=False)
        runs.to_csv(f"{args.out}_runs.csv", index=False)
