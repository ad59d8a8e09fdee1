"""Iterations per second of every method on one dataset (not part of the test suite).

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/methods.py [--dataset w8a] [--iters 2000]

Each case is a list of command-line overrides; the problem is built once and every case
runs through ``efbench.engine.loop.execute`` with one log point at the end (metrics off the
clock), interleaved over --repeats rounds, so the rates of one table are measured side by
side. A step is one iteration of the method (a communication round for most; one local
step for Scaffnew / GradSkip; one server update for asynchronous SGD). Reported: the
median stepping rate, the engine that ran, and the ratio to EC-SGD (the first case, on the
compiled step) and to EC-SGD on the numpy engine (the second).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from hydra import compose, initialize_config_module

from efbench.engine.loop import execute
from efbench.run.runner import build_setup, limits_of, prepare_run

RAND3 = ["compressor=randk", "compressor.k=3", "compressor.scaled=true"]
CASES: list[tuple[str, list[str]]] = [
    ("ec_sgd_us + ht (compiled)", ["method=ec_sgd_us", "compressor=ht"]),
    ("ec_sgd_us + ht (numpy)", ["method=ec_sgd_us", "compressor=ht", "engine=numpy"]),
    ("ef21 + top3", ["method=ef21", "compressor=topk", "compressor.k=3"]),
    ("ef21 sgd + top3", ["method=ef21", "compressor=topk", "compressor.k=3", "method.estimator.kind=sgd"]),
    ("ef21 pp (nice 5) + top3", ["method=ef21", "compressor=topk", "compressor.k=3", "participation=nice"]),
    ("ef21_bc + top3", ["method=ef21_bc", "compressor=topk", "compressor.k=3"]),
    ("ef21_hb + top3", ["method=ef21_hb", "compressor=topk", "compressor.k=3"]),
    ("clag + top3", ["method=clag", "compressor=topk", "compressor.k=3"]),
    ("lag", ["method=lag"]),
    ("3pcv2 + top3", ["method=3pcv2", "compressor=topk", "compressor.k=3"]),
    ("marina + rand3", ["method=marina", *RAND3]),
    ("vr_marina + rand3", ["method=vr_marina", *RAND3]),
    ("pp-marina (nice 5) + rand3", ["method=marina", *RAND3, "participation=nice"]),
    ("diana + rand3", ["method=diana", *RAND3]),
    ("choco_sgd + top3, ring", ["method=choco_sgd", "compressor=topk", "compressor.k=3"]),
    ("local_sgd", ["method=local_sgd"]),
    ("scaffnew", ["method=scaffnew"]),
    ("gradskip", ["method=gradskip"]),
    ("fednl rank-1 (30 rounds)", ["method=fednl", "budget.iters=30"]),
    ("async_sgd", ["method=async_sgd"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="w8a")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="labels (substrings) of the cases to run")
    args = ap.parse_args()
    base = [f"dataset={args.dataset}", f"budget.iters={args.iters}", f"log_every={10**9}", "progress=false"]
    cases = [c for c in CASES if not args.only or any(s in c[0] for s in args.only)]
    with initialize_config_module("efbench.conf", version_base="1.3"):
        cfgs = {label: compose("config", overrides=[*base, *ov]) for label, ov in cases}
    setup = build_setup(next(iter(cfgs.values())))
    rates: dict[str, list[float]] = {label: [] for label, _ in cases}
    engines: dict[str, str] = {}
    for _ in range(args.repeats):
        for label, _ov in cases:
            cfg = cfgs[label]
            try:
                spec = prepare_run(cfg, setup)
                out = execute(setup.problem, setup.fstar, setup.xstar, [spec], limits_of(cfg), cfg.engine)[0]
            except Exception as exc:  # a case this checkout does not have (or that fails)
                engines[label] = f"failed: {str(exc).splitlines()[0][:60]}"
                continue
            rates[label].append(out.steps / out.step_time)
            engines[label] = out.engine
    ref = [statistics.median(rates[c[0]]) if rates[c[0]] else float("nan") for c in cases[:2]]
    print(f"{args.dataset}, {args.iters} steps, median of {args.repeats}, interleaved")
    print("method | engine | it/s | / ec_sgd compiled | / ec_sgd numpy")
    print("---|---|---:|---:|---:")
    for label, _ in cases:
        r = statistics.median(rates[label]) if rates[label] else float("nan")
        print(f"{label} | {engines.get(label, '-')} | {r:,.0f} | {r / ref[0]:.3f} | {r / ref[1]:.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
