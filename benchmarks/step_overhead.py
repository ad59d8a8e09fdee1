"""Stepping rate of the compiled step (not part of the test suite), for a before/after
comparison of a change to it, run in two checkouts alternately:

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/step_overhead.py [--repeats 5]

For each case, the median over --repeats of steps per second of stepping
(``efbench.engine.loop.execute`` with one log point at the end, so metrics are off the clock),
for one run and for a batch of 16 seeds. Uses only the engine's public entry points, so
it runs unchanged on older commits.
"""

from __future__ import annotations

import argparse
import statistics

from hydra import compose, initialize_config_module

from efbench.engine.loop import execute
from efbench.run.runner import build_setup, limits_of, prepare_run

CASES_ALL = [
    ("w8a ec_sgd_us+ht", ["dataset=w8a", "method=ec_sgd_us", "compressor=ht", "compressor.lam=1.3"]),
    ("w8a ec_sgd_is+topk", ["dataset=w8a", "method=ec_sgd_is", "compressor=topk", "compressor.k=3"]),
    ("a9a ec_lsvrg+ht", ["dataset=a9a", "method=ec_lsvrg", "compressor=ht", "compressor.lam=0.8"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--case", nargs="+", help="substrings of the case labels to run (default: all)")
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 16], help="batch sizes")
    args = ap.parse_args()
    cases = [c for c in CASES_ALL if not args.case or any(k in c[0] for k in args.case)]
    for label, overrides in cases:
        with initialize_config_module("efbench.conf", version_base="1.3"):
            cfg = compose("config", overrides=["progress=false", f"budget.iters={args.iters}", *overrides])
        setup = build_setup(cfg)
        lim = limits_of(cfg)
        lim.log_every = 10**12
        for R in args.runs:
            rates = []
            for _ in range(args.repeats):
                runs = []
                for seed in range(R):
                    cfg.seed = seed
                    runs.append(prepare_run(cfg, setup))
                outs = execute(setup.problem, setup.fstar, setup.xstar, runs, lim, engine="numba")
                rates.append(sum(o.steps for o in outs) / sum(o.step_time for o in outs))
            print(f"{label} | runs {R} | {statistics.median(rates):.0f} steps/s", flush=True)


if __name__ == "__main__":
    main()
