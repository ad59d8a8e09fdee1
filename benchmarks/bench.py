"""efbench speed benchmark (not part of the test suite).

    python benchmarks/bench.py [--out benchmarks/results.csv] [--repeats 5] [--quick]

For a9a, w8a and gisette at the paper's n = 20 and m (gisette-shaped synthetic data when
gisette cannot be loaded offline) it measures iterations per second of ec_sgd_us+ht,
ec_sgd_is+topk, ec_lsvrg+ht and ef21+topk (median of --repeats timings, metrics off the
clock), the cost of one full metric evaluation, the same methods written as a per-worker
Python loop (benchmarks/baseline.py) and the ratio, the same with ``engine=numba`` (the
compiled fused step, for the EC-SGD family), the speed-up per seed of 4 seeds
batched in one process (efbench.batched) over separate runs, and two floors for one step:
bytes touched / measured memory bandwidth, and numpy calls per step x the measured cost
of one numpy call. It ends with the peak RSS of a gisette-sized run in a subprocess.
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

from efbench.batched import SeedGenerators  # noqa: E402
from efbench.datasets import load_dataset  # noqa: E402
from efbench.errors import DataError  # noqa: E402
from efbench.runner import Tracer, build_method, build_setup, keep_large_allocations_on_heap  # noqa: E402

CASES = [("ec_sgd_us", "ht_paper", "ec_sgd_us"), ("ec_sgd_is", "topk_paper", "ec_sgd_is"),
         ("ec_lsvrg", "ht_paper", "ec_lsvrg"), ("ef21", "topk_paper", "ef21")]
GISETTE_SYNTH = ["dataset=synthetic", "dataset.name=gisette-synthetic", "dataset.synthetic.rows=6000",
                 "dataset.synthetic.features=5000", "dataset.n_workers=20", "dataset.m=300",
                 "dataset.paper.topk_k=50", "dataset.paper.ht_lam=0.005"]


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


def bytes_per_step(method: str, n: int, m: int, d: int) -> int:
    """Bytes a step must touch at least: the rows it reads and the (n, d) arrays it reads and
    writes (gradient, error memory, compressed message, reduction)."""
    f = 8
    if method == "ef21":
        return f * (n * m * d + 6 * n * d)  # a full pass over the data per step
    passes = 14 if method == "ec_lsvrg" else 8  # two gathered gradients and the snapshot for L-SVRG
    return f * passes * n * d


def peak_rss_gisette(extra: list[str]) -> float:
    """Peak RSS (MiB) of a 200-step ec_lsvrg + topk run on gisette-sized data, in a subprocess."""
    code = ("import resource, sys; from efbench.cli import main; sys.argv=['efbench']+sys.argv[1:];\n"
            "try:\n  main()\nfinally:\n"
            "  print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    with tempfile.TemporaryDirectory() as out:  # a fresh run directory: never a skipped run
        args = [sys.executable, "-c", code, *extra, "method=ec_lsvrg", "compressor=topk_paper",
                "budget.iters=200", "log_every=50", "progress=false", f"hydra.run.dir={out}"]
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
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"numpy {np.__version__}; memory bandwidth {bw / 1e9:.1f} GB/s; "
          f"one numpy call {overhead * 1e6:.2f} us")
    rows = []
    for ds in args.datasets:
        ov = dataset_overrides(ds)
        for method, comp, loop_name in CASES:
            cfg = compose_cfg([*ov, f"method={method}", f"compressor={comp}"])
            setup = build_setup(cfg)
            p = setup.problem
            m = build_method(cfg, p.d)
            gamma = 1.0 / setup.constants["L"]
            rng = np.random.default_rng(0)
            state = m.init(p, np.zeros(p.d), rng)

            def step(m=m, p=p, state=state, gamma=gamma, rng=rng):
                m.step(p, state, gamma, rng)

            its, per = rate(step, args.seconds, args.repeats)
            calls = numpy_calls_per_step(step)
            tracer = Tracer(setup, state.x)
            metric = statistics.median(timed(tracer.record, 1, state, gamma, 0.0) for _ in range(10))
            param = int(cfg.compressor.k) if "k" in cfg.compressor else float(cfg.compressor.lam)
            loop = LoopEC(p.A, p.y, p.l2, loop_name, "topk" if "topk" in comp else "ht", param, gamma)
            loop_its, _ = rate(loop.step, args.seconds, max(3, args.repeats // 2))
            floor_bw = bytes_per_step(method, p.n, p.m, p.d) / bw
            floor_calls = calls * overhead
            floor = max(floor_bw, floor_calls)
            batched = numba_its = math.nan
            if method in ("ec_sgd_us", "ec_sgd_is", "ec_lsvrg"):
                fast = build_method(compose_cfg([*ov, f"method={method}", f"compressor={comp}",
                                                 "engine=numba"]), p.d)
                fstate = fast.init(p, np.zeros(p.d), np.random.default_rng(0))
                frng = np.random.default_rng(0)
                numba_its, _ = rate(lambda f=fast, p=p, s=fstate, g=gamma, r=frng: f.step(p, s, g, r),
                                    args.seconds, args.repeats)
                S = 4
                bstate = m.init(p, np.zeros((S, 1, p.d)), SeedGenerators(list(range(S))))
                brng = SeedGenerators(list(range(S)))
                b_its, _ = rate(lambda m=m, p=p, s=bstate, g=gamma, r=brng: m.step(p, s, g, r),
                                args.seconds, args.repeats)
                batched = S * b_its / its  # seed-steps per second, batched vs separate
            rows.append({
                "dataset": cfg.dataset.name, "n": p.n, "m": p.m, "d": p.d, "method": method,
                "compressor": comp.replace("_paper", ""), "param": param,
                "efbench_it_s": round(its, 1), "loop_it_s": round(loop_its, 1),
                "speedup_vs_loop": round(its / loop_its, 2),
                "numba_it_s": round(numba_its, 1),
                "numba_speedup_vs_loop": round(numba_its / loop_its, 2),
                "batched4_speedup_per_seed": round(batched, 2),
                "metric_eval_ms": round(metric * 1e3, 3),
                "numpy_calls_per_step": calls,
                "floor_bandwidth_us": round(floor_bw * 1e6, 2),
                "floor_dispatch_us": round(floor_calls * 1e6, 2),
                "step_us": round(1e6 / its, 2), "x_above_floor": round(1 / its / floor, 2),
            })
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
