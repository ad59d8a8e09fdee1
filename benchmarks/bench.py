"""efbench speed benchmark (not part of the test suite).

    python benchmarks/bench.py [--out benchmarks/results.csv] [--repeats 5] [--datasets a9a ...]

For a9a, w8a and gisette at the paper's n = 20 and m (gisette-shaped synthetic data when
gisette cannot be loaded offline) it measures iterations per second of ec_sgd_us+ht,
ec_sgd_is+topk, ec_lsvrg+ht and ef21+topk with efbench's default ``engine=auto`` (the
fused numba step where it applies; the ``engine`` column says which ran) and with
``engine=numpy`` (median of --repeats timings, metrics off the clock); the cost of one full
metric evaluation; the same methods written as a per-worker Python loop
(benchmarks/baseline.py) and the ratios; the speed-up per seed of 4 seeds batched in one
engine call over separate runs, on either engine; and floors for one step: bytes a step must
touch / measured memory bandwidth, and, for the numpy engine, numpy calls per step x the
cost of one numpy call, or, for the compiled step, its per-run cost inside a batch of 64
(the Python around each kernel call shared 64 ways). It ends with the peak RSS of a
gisette-sized run in a subprocess. Rates are steps / stepping time of efbench.engine.loop.execute
with one log point at the end (metrics off the clock).
Set EFBENCH_DATA_MIRROR for offline use.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_module

sys.path.insert(0, str(Path(__file__).parent))
from baseline import LoopEC  # noqa: E402

from efbench.config.build import build_method  # noqa: E402
from efbench.core.stepsize import Schedule  # noqa: E402
from efbench.engine.loop import Limits, RunSpec, execute  # noqa: E402
from efbench.errors import DataError  # noqa: E402
from efbench.problems.datasets import load_dataset  # noqa: E402
from efbench.run.runner import build_setup, keep_large_allocations_on_heap  # noqa: E402

CASES = [
    ("ec_sgd_us", "ht", "ec_sgd_us"),
    ("ec_sgd_is", "topk", "ec_sgd_is"),
    ("ec_lsvrg", "ht", "ec_lsvrg"),
    ("ef21", "topk", "ef21"),
]
# the paper experiments' K and HT lambda (efbench/conf/experiment/paper_reference.yaml)
PARAMS = {"a9a": {"k": 1, "lam": 0.8}, "w8a": {"k": 3, "lam": 1.3}, "gisette": {"k": 50, "lam": 0.005}}
GISETTE_SYNTH = [
    "dataset=synthetic",
    "dataset.name=gisette-synthetic",
    "dataset.synthetic.rows=6000",
    "dataset.synthetic.features=5000",
    "dataset.n_workers=20",
    "dataset.m=300",
]


def compose_cfg(overrides):
    with initialize_config_module("efbench.conf", version_base="1.3"):
        return compose("config", overrides=["progress=false", *overrides])


def dataset_overrides(name: str) -> list[str]:
    if name != "gisette":
        return [f"dataset={name}"]
    try:
        load_dataset(compose_cfg(["dataset=gisette"]))
        return ["dataset=gisette"]
    except DataError:
        return GISETTE_SYNTH


def rate(step, seconds: float, repeats: int) -> tuple[float, int]:
    """Median steps per second over ``repeats`` timings of about ``seconds`` each."""
    for _ in range(3):
        step()
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 5:
        step()
        k += 1
    per = max(1, int(k * 5))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per):
            step()
        rates.append(per / (time.perf_counter() - t0))
    return statistics.median(rates), per


def numpy_calls_per_step(step) -> int:
    """C-level calls (numpy, scipy ufuncs, builtins) in one step, counted with sys.setprofile."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event == "c_call":
            count += 1

    sys.setprofile(prof)
    step()
    sys.setprofile(None)
    return count


def call_overhead() -> float:
    a, b, c = np.ones(8), np.ones(8), np.empty(8)
    t0 = time.perf_counter()
    for _ in range(200000):
        np.add(a, b, out=c)
    return (time.perf_counter() - t0) / 200000


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def memory_bandwidth() -> float:
    """Bytes per second of a large copy (read + write) out of cache."""
    src = np.ones(32 * 1024 * 1024)  # 256 MiB
    dst = np.empty_like(src)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = max(best, 2 * src.nbytes / (time.perf_counter() - t0))
    return best


def bytes_per_step(method: str, p) -> int:
    """Bytes a step must touch at least: the sampled rows, the error memory read and written,
    and for L-SVRG each worker's reference point and its gradient; EF21 reads all the data
    (as CSR where it is sparse: a value and an index per nonzero)."""
    f, n, d = 8, p.n, p.d
    if method == "ef21":
        data = 16 * p.csr.nnz if p.csr is not None else f * n * p.m * d
        return data + f * 3 * n * d
    return f * (5 if method == "ec_lsvrg" else 3) * n * d


def engine_rate(
    setup, method, gamma: float, engine: str, seconds: float, repeats: int, runs: int = 1
) -> tuple[float, str]:
    """Median run-steps per second (steps x runs / stepping time) of ``runs`` runs advanced
    together by the engine: it/s for one run; divided by it, the gain of batching."""
    p = setup.problem

    def go(steps: int):
        specs = [RunSpec(method, Schedule(gamma, "c"), np.zeros(p.d), s) for s in range(runs)]
        outs = execute(
            p, setup.fstar, setup.xstar, specs, Limits(steps, math.inf, math.inf, steps, 1e30), engine
        )
        return steps * runs / sum(o.step_time for o in outs), outs[0].engine

    r, used = go(50)
    steps = max(50, int(r / runs * seconds))
    return statistics.median(go(steps)[0] for _ in range(repeats)), used


def peak_rss_gisette(extra: list[str]) -> float:
    """Peak RSS (MiB) of a 200-step ec_lsvrg + topk run on gisette-sized data, in a subprocess."""
    code = (
        "import resource, sys; from efbench.app.cli import main; sys.argv=['efbench']+sys.argv[1:];\n"
        "try:\n  main()\nfinally:\n"
        "  print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    with tempfile.TemporaryDirectory() as out:  # a fresh run directory: never a skipped run
        args = [
            sys.executable,
            "-c",
            code,
            *extra,
            "method=ec_lsvrg",
            "compressor=topk",
            "compressor.k=50",
            "budget.iters=200",
            "log_every=50",
            "progress=false",
            f"hydra.run.dir={out}",
        ]
        r = subprocess.run(args, capture_output=True, text=True)
    for line in r.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(r.stderr[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results.csv"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one timing")
    ap.add_argument("--datasets", nargs="+", default=["a9a", "w8a", "gisette"])
    args = ap.parse_args()
    # first, while this process is small: Linux carries a parent's peak RSS into the children
    # it starts (the peak survives exec), which would inflate the measurement later on
    synth = dataset_overrides("gisette")
    rss = peak_rss_gisette(synth)
    keep_large_allocations_on_heap()
    bw, overhead = memory_bandwidth(), call_overhead()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"numpy {np.__version__}; memory bandwidth {bw / 1e9:.1f} GB/s; "
        f"one numpy call {overhead * 1e6:.2f} us"
    )
    rows = []
    for ds in args.datasets:
        ov = dataset_overrides(ds)
        for method, comp, loop_name in CASES:
            value = PARAMS[ds]["k" if comp == "topk" else "lam"]
            key = "compressor.k" if comp == "topk" else "compressor.lam"
            cfg = compose_cfg([*ov, f"method={method}", f"compressor={comp}", f"{key}={value}"])
            setup = build_setup(cfg)
            p = setup.problem
            gamma = 1.0 / setup.constants["L"]
            its = {}
            m = build_method(cfg, p.d)
            its["auto"], used = engine_rate(setup, m, gamma, "auto", args.seconds, args.repeats)
            its["numpy"] = its["auto"]
            if used != "numpy":
                its["numpy"], _ = engine_rate(setup, m, gamma, "numpy", args.seconds, args.repeats)
            rng = np.random.default_rng(0)
            state = m.init(p, np.zeros(p.d), rng)
            calls = numpy_calls_per_step(lambda m=m, p=p, s=state, g=gamma, r=rng: m.step(p, s, g, r))
            x = state.x[None]
            metric = statistics.median(timed(p.loss_grad_many, x) for _ in range(10))
            param = int(cfg.compressor.k) if "k" in cfg.compressor else float(cfg.compressor.lam)
            loop = LoopEC(p.A, p.y, p.l2, loop_name, "topk" if "topk" in comp else "ht", param, gamma)
            loop_its, _ = rate(loop.step, args.seconds, max(3, args.repeats // 2))
            floor_bw = bytes_per_step(method, p) / bw
            if used == "numba":
                floor_code = 1.0 / engine_rate(setup, m, gamma, "auto", args.seconds, 3, runs=64)[0]
            else:
                floor_code = calls * overhead
            floor = max(floor_bw, floor_code)
            batched = {"auto": math.nan, "numpy": math.nan}
            for engine in batched if method != "ef21" else ():
                if engine == "numpy" and used == "numpy":
                    batched["numpy"] = batched["auto"]
                    continue
                b_its, _ = engine_rate(setup, m, gamma, engine, args.seconds, args.repeats, runs=4)
                batched[engine] = b_its / its[engine]  # per-run steps per second, batched vs alone
            rows.append(
                {
                    "dataset": cfg.dataset.name,
                    "n": p.n,
                    "m": p.m,
                    "d": p.d,
                    "method": method,
                    "compressor": comp,
                    "param": param,
                    "engine": used,
                    "efbench_it_s": round(its["auto"], 1),
                    "numpy_it_s": round(its["numpy"], 1),
                    "loop_it_s": round(loop_its, 1),
                    "speedup_vs_loop": round(its["auto"] / loop_its, 2),
                    "numpy_speedup_vs_loop": round(its["numpy"] / loop_its, 2),
                    "batched4_speedup_per_seed": round(batched["auto"], 2),
                    "numpy_batched4_speedup_per_seed": round(batched["numpy"], 2),
                    "metric_eval_ms": round(metric * 1e3, 3),
                    "numpy_calls_per_step": calls,
                    "floor_bandwidth_us": round(floor_bw * 1e6, 2),
                    "floor_code_us": round(floor_code * 1e6, 2),
                    "step_us": round(1e6 / its["auto"], 2),
                    "x_above_floor": round(1 / its["auto"] / floor, 2),
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    table["gisette_peak_rss_mib"] = round(rss, 1)
    print()
    print(table.to_string(index=False))
    print(f"\npeak RSS of a gisette-sized run ({synth[0]}): {rss:.0f} MiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
