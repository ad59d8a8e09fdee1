"""What logging metrics costs beside stepping (not part of the test suite).

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/logging_cost.py [--repeats 5]

For each case, the same runs are timed twice through ``efbench.engine.loop.execute``,
interleaved: with the config's log schedule (the default: log-spaced steps, 10 a decade,
plus the last), and with one log point at the end only. Logging costs the difference of
the median wall times; stepping is the second. Also the cost of one full metric pass for
one point and per point in a batch of 16 (``LogisticProblem.loss_grad_many``).
Runs unchanged on older commits (it uses only execute's wall times), so a before/after
comparison is this script run in two checkouts, one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from hydra import compose, initialize_config_module

from efbench.engine.loop import execute
from efbench.run.runner import build_setup, limits_of, prepare_run

CASES = [  # label, overrides, runs in the batch
    ("defaults (breast_cancer, ec_sgd_is+ht, 2000 steps)", [], 1),
    ("a9a ec_sgd_is+ht 2000 steps", ["dataset=a9a"], 1),
    ("w8a ec_sgd_is+ht 2000 steps", ["dataset=w8a"], 1),
    ("w8a ec_sgd_us+ht 20000 steps", ["dataset=w8a", "method=ec_sgd_us", "budget.iters=20000"], 1),
    ("w8a ec_sgd_us+ht 20000 steps, 16 seeds", ["dataset=w8a", "method=ec_sgd_us", "budget.iters=20000"], 16),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="labels (substrings) of the cases to run")
    args = ap.parse_args()
    print("case | stepping ms | logging ms | logging / stepping | log points | pass ms: 1 point, each of 16")
    for label, overrides, R in CASES:
        if args.only and not any(s in label for s in args.only):
            continue
        with initialize_config_module("efbench.conf", version_base="1.3"):
            cfg = compose("config", overrides=["progress=false", *overrides])
        setup = build_setup(cfg)
        p = setup.problem
        lim = limits_of(cfg)
        end_only = limits_of(cfg)
        end_only.log_every = 10**12
        walls: dict[str, list[float]] = {"logged": [], "end": []}
        points = 0
        for _ in range(args.repeats):
            for key, limits in (("logged", lim), ("end", end_only)):
                batch = [prepare_run_seed(cfg, setup, s) for s in range(R)]
                outs = execute(p, setup.fstar, setup.xstar, batch, limits, engine=cfg.engine)
                walls[key].append(outs[0].wall)
                if key == "logged":
                    points = len(outs[0].rows)
        step = statistics.median(walls["end"])
        logging = statistics.median(walls["logged"]) - step
        X1 = np.asarray(setup.xstar)[None]
        X16 = np.repeat(X1, 16, axis=0) + 1e-3 * np.arange(16)[:, None]
        one, many = timed(p.loss_grad_many, X1), timed(p.loss_grad_many, X16) / 16
        print(
            f"{label} | {step * 1e3:.1f} | {logging * 1e3:.1f} | {logging / step:.2f} | {points} | "
            f"{one * 1e3:.3f} | {many * 1e3:.3f}"
        )
        sys.stdout.flush()


def prepare_run_seed(cfg, setup, seed: int):
    cfg.seed = seed
    return prepare_run(cfg, setup)


def timed(fn, X: np.ndarray, repeats: int = 20) -> float:
    fn(X)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
