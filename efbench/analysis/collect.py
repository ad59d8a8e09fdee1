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
import functools
import importlib
import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from efbench.analysis.tuning import describe, mark, picks
from efbench.config.legacy import current
from efbench.config.schema import options
from efbench.config.tune import TuneSpec
from efbench.core.compressors import Compressor
from efbench.core.estimation import EstimatorSpec
from efbench.core.network import COUNTS, Profile, simulated_time
from efbench.errors import ConfigError
from efbench.run.results import ERROR, UNREADABLE, verified

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
IGNORED_PREFIXES = ("data.dir", "data.mirror", "progress", "tune.")  # tune: the ``tune`` column
# identifying columns held as pandas categoricals (with the swept text values)
CATEGORICAL = (*(c for c in STANDARD if c != "seed"), "engine", "collective")
FLOOR = 1e-16  # f - f* at or below rounding is drawn at this floor, not dropped
NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)")
# config leaves a standard column already holds (the ``_target_`` classes follow from the
# method and compressor): kept once, under the standard name
DUPLICATES = ("dataset.name", "method.name", "stepsize.rule", "method.estimator.sampling", "seed")

SAMPLING_NAMES = {"importance": "IS", "uniform": "US"}
GREEK = {"lam": "λ", "zeta": "ζ", "alpha": "α", "eta": "η", "delta": "δ", "gamma": "γ", "tau": "τ"}
# config leaves the label shows through its method, sampling and stepsize parts, or that a
# line spans (its seeds)
LABELLED = (
    "seed",
    "seeds",
    "method.name",
    "method.estimator.sampling",
    "sampling.name",
    "stepsize.rule",
    "stepsize.multiplier",
    "stepsize.gamma",
)


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """A nested dict as ``{"a.b.c": leaf}``, lists as their JSON text."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _num(v: object) -> str:
    """A config value as a label shows it: numbers in their shortest form (0.05, 1e-05)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v).lower() if isinstance(v, bool) else str(v)
    return f"{v:g}"


def method_label(name: object) -> str:
    """The display name of a method (``ec_sgd`` -> ``EC-SGD``, ``ef21`` -> ``EF21``; where its
    class says otherwise, :attr:`efbench.methods.base.Method.labels`, ``3pcv1`` -> ``3PCv1``)."""
    name = str(name)
    return _method_labels().get(name, name.upper().replace("_", "-"))


@functools.cache
def _method_labels() -> dict[str, str]:
    """The display names the method options' classes give (the registry: efbench/conf/method)."""
    out = {}
    for node in options("method").values():
        name, cls = node.get("name"), _class_of(node.get("_target_"))
        if cls is not None and name in getattr(cls, "labels", {}):
            out[name] = cls.labels[name]
    return out


def _class_of(target: object) -> type | None:
    """The class a ``_target_`` names (an old path too), or None."""
    module, _, name = current(str(target)).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def compressor_label(comp: dict) -> str:
    """The label of the compressor config ``comp`` with the parameters that define it
    (``Top-3``, ``HT λ=0.05``, ``Rand-10``: :attr:`efbench.core.compressors.Compressor.label`);
    other parameters appear only when they differ between runs (:func:`collect`)."""
    cls = _class_of(comp.get("_target_", ""))
    if cls is None or not issubclass(cls, Compressor):
        return str(comp.get("_target_", "")).rsplit(".", 1)[-1]
    return cls.display({k: _num(v) for k, v in comp.items()})


def _label_parts(summ: dict, cfg: dict[str, object]) -> tuple[str, str, str]:
    """(method, compressor, participation) parts of a run's label."""
    config = summ.get("config", {})
    method = method_label(cfg.get("method.name") or (summ.get("choices") or {}).get("method"))
    comp = (
        ""
        if (summ.get("choices") or {}).get("compressor") == "dense"
        else compressor_label(config.get("compressor", {}))
    )
    part = config.get("participation", {})
    kind = part.get("kind", "full")
    if kind == "nice":  # e.g. EF21-PP beside EF21 with the same compressor
        pp = f"nice τ={_num(part.get('size'))}"
    elif kind != "full":
        pp = f"{kind} p={_num(part.get('p'))}"
    else:
        pp = ""
    return method, comp, pp


def _compressor_name(summ: dict, cfg: dict[str, object]) -> str:
    """The compressor's config group: the launch's choice, else (a run made through the
    Python API, without Hydra's choices) the first option naming its ``_target_`` class."""
    chosen = (summ.get("choices") or {}).get("compressor")
    if chosen:
        return chosen
    target = current(str(cfg.get("compressor._target_", "")))
    return _compressor_options().get(target, target.rsplit(".", 1)[-1])


@functools.cache
def _compressor_options() -> dict[str, str]:
    """Each compressor class's first option (by name) in the registry (efbench/conf/compressor)."""
    out: dict[str, str] = {}
    for option, node in sorted(options("compressor").items()):
        out.setdefault(current(node["_target_"]), option)
    return out


def _run_row(path: Path, root: Path, summ: dict) -> dict[str, object]:
    cfg = flatten(summ.get("config", {}))
    choices = summ.get("choices") or {}
    est = EstimatorSpec.of(summ.get("config", {}).get("method", {}).get("estimator", {}))
    row: dict[str, object] = {
        "run": str(path.parent.relative_to(root)) if path.parent != root else ".",
        "dataset": cfg.get("dataset.name"),
        "method": cfg.get("method.name"),
        "compressor": _compressor_name(summ, cfg),
        "sampling": est.sampling if est.stochastic else "full",
        "stepsize": cfg.get("stepsize.rule"),
        "seed": cfg.get("seed"),
        "status": summ.get("status"),
        "config_hash": summ.get("config_hash"),
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
    tune = summ.get("config", {}).get("tune")
    # without its grid: a run shared by sweeps over other grids (resumed, its config hash is the
    # same) is one arm's run whatever grid launched it; the picks read the values present
    tune = {k: v for k, v in tune.items() if k != "grid"} if isinstance(tune, dict) else None
    row["tune"] = json.dumps(tune, sort_keys=True) if tune is not None else None
    method, comp, pp = _label_parts(summ, cfg)
    row["label"] = ", ".join(p for p in (method, comp, pp) if p)  # completed by _finish_labels
    for k, v in (summ.get("final") or {}).items():
        row[f"final_{k}"] = v
    for k, v in (summ.get("constants") or {}).items():
        row[f"const_{k}"] = v
    for k, v in cfg.items():
        if not k.startswith(IGNORED_PREFIXES):
            row[f"cfg.{k}"] = v
    return row


def _stepsize_label(row: pd.Series) -> str:
    """``γ=0.1`` for a constant stepsize, else the rule and its multiplier (``γ=theory×2``)."""
    rule, mult = row.get("cfg.stepsize.rule"), row.get("cfg.stepsize.multiplier", 1.0)
    mult = 1.0 if mult is None or pd.isna(mult) else float(mult)
    if rule == "constant":
        return f"γ={_num(float(row.get('cfg.stepsize.gamma')) * mult)}"
    return f"γ={rule}" + (f"×{_num(mult)}" if mult != 1 else "")


def _finish_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's label: its method, compressor and participation parts (``_run_row``), then
    whatever else tells apart the runs with those parts on one dataset: the sampling
    (``EC-SGD (IS)``), the stepsize (``γ=theory×2``) and any other config value (``ζ=4``).
    Runs that differ in anything but the seed (and the dataset, a figure's panels) never
    share a label, and runs of one config share one however they were launched."""
    cfg_cols = [c for c in runs.columns if c.startswith("cfg.")]
    short = [c.rsplit(".", 1)[-1] for c in cfg_cols]
    labels = runs["label"].astype(object).copy()
    for _, group in runs.groupby("label", sort=False, dropna=False):
        varying: set[str] = set()
        for _, same in group.groupby(group["dataset"].astype(str), sort=False):
            varying |= {c for c in ["sampling", *cfg_cols] if same[c].astype(str).nunique(dropna=False) > 1}
        stepsize = any(c[4:] in LABELLED and c.startswith("cfg.stepsize.") for c in varying)
        extra = sorted(
            c
            for c in varying
            if c.startswith("cfg.") and c[4:] not in LABELLED and not c.endswith("._target_")
        )
        for i, row in group.iterrows():
            method, sep, rest = str(row["label"]).partition(", ")
            if "sampling" in varying and row["sampling"] in SAMPLING_NAMES:
                method += f" ({SAMPLING_NAMES[row['sampling']]})"
            parts = [method + sep + rest]
            if stepsize:
                parts.append(_stepsize_label(row))
            for c in extra:
                key = c.rsplit(".", 1)[-1]
                key = GREEK.get(key, key) if short.count(key) == 1 else c[4:]
                parts.append(f"{key}={_num(row[c])}")
            labels.loc[i] = ", ".join(parts)
    return labels


def collect(
    root: str | Path, statuses: tuple[str, ...] | None = None, network: str | Profile | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load every run (``summary.json`` + ``trace.parquet``) below ``root``.

    ``statuses`` keeps only runs with these statuses (None: all). ``network`` (a profile
    name of the ``network`` config group, or a :class:`efbench.core.network.Profile`) recomputes
    ``time_sim`` of every trace row under that profile (:func:`retime`). Runs launched with
    ``+tune=...`` carry their ``tune`` block (JSON) and a ``tuned`` column in both frames:
    whether the run is its arm's picked value on a reported seed (:func:`efbench.analysis.tuning.picks`).
    Returns (trace, runs).
    """
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("summary.json")):
        try:
            summ = json.loads(path.read_text())
            if not isinstance(summ, dict):  # e.g. null or [] written by hand: not a summary
                raise ValueError(path)
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
    runs["label"] = _finish_labels(runs)
    if runs["tune"].isna().all():
        runs = runs.drop(columns="tune")
    cfg_cols = [c for c in runs.columns if c.startswith("cfg.")]
    tuned = runs["tune"].dropna().unique() if "tune" in runs.columns else []
    tuned_keys = {f"cfg.{TuneSpec.from_config(json.loads(t)).key}" for t in tuned}
    # swept values = config leaves that differ between runs (and the tuned keys), less those
    # a standard column holds
    varying = [
        c
        for c in cfg_cols
        if (runs[c].astype(str).nunique(dropna=False) > 1 or c in tuned_keys)
        and c[4:] not in runs.columns
        and c[4:] not in DUPLICATES
        and not c.endswith("._target_")
    ]
    runs = runs.drop(columns=[c for c in cfg_cols if c not in varying])
    runs = runs.rename(columns={c: c[4:] for c in varying})
    keys = [c for c in STANDARD if c in runs.columns] + [c[4:] for c in varying]
    _categorize(runs, [*CATEGORICAL, *(c[4:] for c in varying)])
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
    trace.attrs["ids"] = keys  # the identifying columns, for efbench.analysis.collect.resample
    if network is not None:
        trace["time_sim"] = retime(trace, runs.iloc[owner].reset_index(drop=True), network)
    if "tune" in runs.columns:
        runs["tuned"] = mark(runs, picks(trace, runs))
        trace["tuned"] = runs["tuned"].to_numpy()[owner]
    return trace, runs


def natural_key(value: object) -> tuple:
    """Sort key putting numbers in numeric order: ``Top-3`` before ``Top-10``, ``λ=0.05``
    before ``λ=0.1``."""
    parts = NUMBER.split(str(value))
    return tuple(float(p) if i % 2 else p for i, p in enumerate(parts))


def _categorize(frame: pd.DataFrame, columns: list[str]) -> None:
    """Make the text columns among ``columns`` categorical (categories in natural order)."""
    for c in dict.fromkeys(columns):
        if c not in frame:
            continue
        values = frame[c].dropna()
        if all(isinstance(v, str) for v in values):  # also a column of None only
            frame[c] = pd.Categorical(frame[c], categories=sorted(values.unique(), key=natural_key))


def resample(
    trace: pd.DataFrame,
    x: str = "bits_up_mean",
    y: str = "rel_gap",
    by: list[str] | None = None,
    grid: np.ndarray | None = None,
    n: int = 200,
    log: bool = True,
    logy: bool = True,
) -> pd.DataFrame:
    """Every run's ``y`` on a common x grid: one row per run and grid point, with the run's
    identifying columns (``by``, ``run`` and those :func:`collect` put in front), then ``x``
    and ``y``; tidy, for seaborn or a groupby over the runs of one line.

    The runs of each group of ``by`` (all runs when None) share one grid: ``grid`` when
    given, else ``n`` points spanning the union of the group's x ranges, log-spaced from
    the smallest positive x when ``log``, else evenly. A run is interpolated linearly in
    the coordinates a figure draws it in (log x when ``log``, log y when ``logy``, values
    at or below :data:`FLOOR` drawn at the floor), so the resampled line is the one drawn
    through its logged points, and at a logged x the logged value itself. Outside its own
    x range a run's ``y`` is NaN: a run that stopped early does not end the others. Rows
    with a non-finite value are ignored; where several rows share an x (steps that sent
    nothing) the last one counts."""
    by = list(by or [])
    ids = [c for c in dict.fromkeys([*by, "run", *trace.attrs.get("ids", [])]) if c in trace.columns]
    frames = []
    groups = trace.groupby(by, sort=False, observed=True, dropna=False) if by else [((), trace)]
    for _, group in groups:
        curves = []
        for _, r in group.groupby("run", sort=False, observed=True):
            xs, ys = _curve(r, x, y, log, logy)
            if len(xs):
                curves.append((r.iloc[0][ids], xs, ys))
        if not curves:
            continue
        g = np.asarray(grid, dtype=float) if grid is not None else _grid(curves, n, log)
        for ident, xs, ys in curves:
            frame = pd.DataFrame({c: [ident[c]] * len(g) for c in ids})
            frame[x] = g
            frame[y] = _interp(g, xs, ys, log, logy)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*ids, x, y])
    out = pd.concat(frames, ignore_index=True)
    for c in ids:  # concat of single-value frames loses the categories: restore them
        if isinstance(trace[c].dtype, pd.CategoricalDtype):
            out[c] = pd.Categorical(out[c], dtype=trace[c].dtype)
    return out


def _curve(run: pd.DataFrame, x: str, y: str, log: bool, logy: bool) -> tuple[np.ndarray, np.ndarray]:
    """One run's (x, y) points in x order, as they can be drawn."""
    xs, ys = run[x].to_numpy(dtype=float), run[y].to_numpy(dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if log else True)
    xs, ys = xs[ok], ys[ok]
    if logy:
        ys = np.maximum(ys, FLOOR)
    if not len(xs):
        return xs, ys
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    last = np.append(xs[1:] != xs[:-1], True)  # of equal x, the latest row
    return xs[last], ys[last]


def _grid(curves: list, n: int, log: bool) -> np.ndarray:
    lo, hi = min(c[1][0] for c in curves), max(c[1][-1] for c in curves)
    if hi <= lo:
        return np.array([lo])
    return np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)


def _interp(g: np.ndarray, xs: np.ndarray, ys: np.ndarray, log: bool, logy: bool) -> np.ndarray:
    fx = np.log10 if log else (lambda v: v)
    with np.errstate(divide="ignore", invalid="ignore"):  # grid points <= 0 on a log grid: NaN
        gx = fx(g)
    out = np.interp(gx, fx(xs), np.log10(ys) if logy else ys, left=np.nan, right=np.nan)
    out = 10**out if logy else out
    at = np.minimum(np.searchsorted(xs, g), len(xs) - 1)
    hit = xs[at] == g  # at a logged point its own value, not its round trip through log10
    out[hit] = ys[at[hit]]
    return out


def retime(trace: pd.DataFrame, runs: pd.DataFrame, network: str | Profile) -> np.ndarray:
    """``time_sim`` of each trace row under another network profile, from the per-round
    counts the trace keeps (:data:`efbench.core.network.COUNTS`); ``runs`` holds each row's run
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
    if "tune" in runs.columns:
        for line in describe(picks(trace, runs)):
            print(line)
    if args.out:
        trace.to_parquet(f"{args.out}_trace.parquet", index=False)
        runs.to_csv(f"{args.out}_runs.csv", index=False)
