"""Tuning benchmark (not part of the test suite): what ``+tune=stepsize`` costs beside one run.

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/tuning_cost.py [--repeats 3]

For each case, interleaved ``--repeats`` times: one untuned CLI run (one arm, one seed), then
the tuned multirun of three arms x 3 seeds x the 9-point grid 2^-4..2^4 (81 runs, batched per
arm by the efbench sweeper), each into a fresh folder. Prints the wall times (medians) and
their ratio, beside 81, the ratio if every run cost what the single run costs; writes
``benchmarks/tuning_cost.csv``. Wall time is what a user waits for: interpreter start-up,
data loading and compiling included.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

CASES = {  # name: (arms, the rest of the command line)
    "3pc, phishing, 1000 iterations (numpy engine)": (
        "method=ef21,lag,clag",
        ["compressor=topk", "compressor.k=3", "dataset=phishing", "budget.iters=1000"],
    ),
    "EC-SGD IS / US / EC-LSVRG, w8a, HT, 20000 iterations (compiled)": (
        "method=ec_sgd_is,ec_sgd_us,ec_lsvrg",
        ["compressor=ht", "compressor.lam=1.3", "dataset=w8a", "budget.iters=20000"],
    ),
}


def wall(args: list[str], cwd: Path) -> float:
    exe = Path(sys.executable).with_name("efbench")
    t0 = time.perf_counter()
    done = subprocess.run([str(exe), *args, "progress=false"], cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for case, (arms, rest) in CASES.items():
            one_arm = arms.split("=")[0] + "=" + arms.split("=")[1].split(",")[0]
            wall([one_arm, *rest, "hydra.run.dir=warm"], cwd)  # data parsed and cached, kernels compiled
            for r in range(args.repeats):
                for kind in ("single", "tuned"):
                    out = cwd / f"{kind}{r}"
                    if kind == "single":
                        took = wall([one_arm, *rest, f"hydra.run.dir={out}"], cwd)
                    else:
                        cmd = ["-m", arms, *rest, "seed=0,1,2", "+tune=stepsize", f"hydra.sweep.dir={out}"]
                        took = wall(cmd, cwd)
                    shutil.rmtree(out, ignore_errors=True)
                    rows.append({"case": case, "kind": kind, "repeat": r, "seconds": took})
                    print(f"{case}: {kind} {took:.1f} s", flush=True)
    frame = pd.DataFrame(rows)
    med = frame.groupby(["case", "kind"])["seconds"].median().unstack()
    med["tuned / single"] = med["tuned"] / med["single"]
    med["runs"] = 81
    print(med.to_string(float_format=lambda v: f"{v:.3g}"))
    med.to_csv(Path(__file__).with_name("tuning_cost.csv"))


if __name__ == "__main__":
    main()
