"""Sweep benchmark (not part of the test suite): what a sweep costs beside one run.

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/sweeps.py [--part cli batch]

``cli``: for each case, one CLI run alone, then the same 16 seeds x 8 stepsize multipliers
(128 runs) as a multirun with the efbench sweeper's batching (the default) and with
``hydra.sweeper.batch=false``, interleaved, with total wall times; every run's trace must
be identical between the two. ``batch``: per-run cost of one step inside a batch of
R = 1, 8, 64, 256 runs on the compiled engine (stepping time / (R steps)), beside a lean
floor: the same EC-SGD + hard-threshold maths on CSR rows with pre-drawn samples, looped
inside numba with nothing else (no budgets, bits or per-run parameters).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

CASES = [  # dataset, method, compressor and its parameter, iterations, log interval
    ("w8a", "ec_sgd_us", ["compressor=ht", "compressor.lam=1.3"], 20000, 200),
    ("a9a", "ec_lsvrg", ["compressor=topk", "compressor.k=1"], 20000, 200),
    ("w8a", "ef21", ["compressor=topk", "compressor.k=3"], 500, 50),  # numpy: ~400 it/s
]
MULTIPLIERS = "0.25,0.35,0.5,0.7,1,1.4,2,2.8"


def efbench(args: list[str], cwd: Path) -> float:
    exe = Path(sys.executable).with_name("efbench")
    t0 = time.perf_counter()
    r = subprocess.run([str(exe), *args, "progress=false"], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return time.perf_counter() - t0


def cli_part(root: Path, methods: list[str]) -> list[dict]:
    rows = []
    for ds, method, comp, iters, every in CASES:
        if method not in methods:
            continue
        common = [f"dataset={ds}", f"method={method}", *comp, f"budget.iters={iters}", f"log_every={every}"]
        efbench([*common, f"hydra.run.dir={root / 'warm'}"], root)  # data cache, compiled step
        alone = efbench([*common, "seed=0", f"hydra.run.dir={root / 'alone'}"], root)
        sweep = ["-m", *common, "seed=range(16)", f"stepsize.multiplier={MULTIPLIERS}"]
        walls = {}
        for mode, extra in (("batched", []), ("off", ["hydra.sweeper.batch=false"])):
            walls[mode] = efbench([*sweep, *extra, f"hydra.sweep.dir={root / mode}"], root)
        dirs = [p for p in (root / "batched").iterdir() if p.is_dir() and not p.name.startswith(".")]
        same = all(
            pd.read_parquet(p / "trace.parquet")
            .drop(columns="time")
            .equals(pd.read_parquet(root / "off" / p.name / "trace.parquet").drop(columns="time"))
            for p in dirs
        )
        n_runs = len(dirs)
        row = {
            "dataset": ds,
            "method": method,
            "compressor": " ".join(comp),
            "iters": iters,
            "runs": n_runs,
            "one_run_s": round(alone, 2),
            "sweep_batched_s": round(walls["batched"], 1),
            "sweep_off_s": round(walls["off"], 1),
            "batched_over_one_run": round(walls["batched"] / alone, 1),
            "off_over_batched": round(walls["off"] / walls["batched"], 1),
            "traces_identical": same,
        }
        print(row, flush=True)
        rows.append(row)
        for mode in ("batched", "off", "alone", "warm"):
            shutil.rmtree(root / mode, ignore_errors=True)
    return rows


@njit(cache=True)
def lean_ec_sgd_ht(indptr, indices, data, y, m, l2, rows, X, E, gamma, lam):  # pragma: no cover
    """EC-SGD + HT on CSR rows, uniform samples ``rows`` (T, n) given: the floor's maths."""
    T, n = rows.shape
    d = X.shape[0]
    vsum = np.empty(d)
    for t in range(T):
        vsum[:] = 0.0
        for i in range(n):
            r = rows[t, i]
            z = 0.0
            for q in range(indptr[r], indptr[r + 1]):
                z += data[q] * X[indices[q]]
            c = -y[r] / (1.0 + math.exp(y[r] * z))
            e = E[i]
            for j in range(d):
                e[j] += gamma * l2 * X[j]
            for q in range(indptr[r], indptr[r + 1]):
                e[indices[q]] += gamma * c * data[q]
            for j in range(d):
                v = e[j]
                keep = abs(v) >= gamma * lam
                vsum[j] += v if keep else 0.0
                e[j] = 0.0 if keep else v
        for j in range(d):
            X[j] -= vsum[j] / n


def batch_part() -> list[dict]:
    from hydra import compose, initialize_config_module

    from efbench.config.build import build_method
    from efbench.core.stepsize import Schedule
    from efbench.engine.loop import Limits, RunSpec, execute
    from efbench.run.runner import build_setup

    with initialize_config_module("efbench.conf", version_base="1.3"):
        cfg = compose(
            "config", overrides=["dataset=w8a", "method=ec_sgd_us", "compressor=ht", "compressor.lam=1.3"]
        )
    setup = build_setup(cfg)
    p = setup.problem
    gamma = 1.0 / setup.constants["L"]
    method = build_method(cfg, p.d)
    steps = 4000
    rng = np.random.default_rng(0)
    rows = (rng.random((steps, p.n)) * p.m).astype(np.int64) + np.arange(p.n) * p.m
    ip, ix, dv = p.csr_arrays
    lean = []
    for _ in range(5):
        X, E = np.zeros(p.d), np.zeros((p.n, p.d))
        t0 = time.perf_counter()
        lean_ec_sgd_ht(ip, ix, dv, p.yflat, p.m, p.l2, rows, X, E, gamma, 1.3)
        lean.append((time.perf_counter() - t0) / steps)
    floor = float(np.median(lean[1:]))
    out = []
    for R in (1, 8, 64, 256):
        T = max(200, 40000 // R)
        costs = []
        for _ in range(3):
            runs = [
                RunSpec(method, Schedule(gamma * (1 + 0.01 * r), "c"), np.zeros(p.d), r) for r in range(R)
            ]
            outs = execute(p, setup.fstar, setup.xstar, runs, Limits(T, math.inf, math.inf, T, 1e30), "numba")
            costs.append(sum(o.step_time for o in outs) / (R * T))
        cost = float(np.median(costs))
        row = {
            "runs_in_batch": R,
            "step_us_per_run": round(cost * 1e6, 2),
            "lean_floor_us": round(floor * 1e6, 2),
            "over_floor": round(cost / floor, 2),
        }
        print(row, flush=True)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", default=["batch", "cli"], choices=["batch", "cli"])
    ap.add_argument("--methods", nargs="+", default=[c[1] for c in CASES], help="CLI cases to run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "sweeps.csv"))
    args = ap.parse_args()
    if "EFBENCH_DATA_MIRROR" not in os.environ:
        print("set EFBENCH_DATA_MIRROR (e.g. ../shared/data) when offline", file=sys.stderr)
    tables = []
    if "batch" in args.part:
        tables.append(pd.DataFrame(batch_part()).assign(part="batch"))
    if "cli" in args.part:
        with tempfile.TemporaryDirectory() as tmp:
            tables.append(pd.DataFrame(cli_part(Path(tmp), args.methods)).assign(part="cli"))
    table = pd.concat(tables, ignore_index=True)
    print(table.to_string(index=False))
    table.to_csv(args.out, index=False)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
