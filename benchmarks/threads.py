"""Threads when jobs run at once (issue 23): a joblib sweep of 2 jobs at a time on this
machine, each process's BLAS pools capped to its share of the cores with passive OpenMP
waits (efbench.engine.threads, the default), numba's pool capped too
($EFBENCH_THREADS=numba), and every process using all the cores with spinning waits
($EFBENCH_THREADS=all, as before), interleaved.

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/threads.py [--repeats 3] [--paper]

``sweep``: 4 groups (ec_sgd_us and ec_lsvrg, ht and topk) of 4 seeds each on w8a, 20 000
steps, compiled engine, ``hydra/launcher=joblib hydra.launcher.n_jobs=2``. ``--paper`` adds
``efbench-paper --quick --jobs 2`` (minutes each). Writes ``benchmarks/threads.csv``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
MODES = {  # $EFBENCH_THREADS: what it caps
    "": "BLAS capped (default)",
    "numba": "BLAS and numba capped",
    "all": "all threads",
}
SWEEP = [
    "-m",
    "dataset=w8a",
    "method=ec_sgd_us,ec_lsvrg",
    "compressor=ht,topk",
    "seed=0,1,2,3",
    "budget.iters=20000",
    "log_every=2000",
    "progress=false",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
]


def timed(cmd: list[str], cwd: Path, mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "EFBENCH_THREADS"}
    if mode:
        env["EFBENCH_THREADS"] = mode
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paper", action="store_true")
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = f"data.dir={root / 'data'}"
        commands = {"sweep": lambda out: [str(bindir / "efbench"), *SWEEP, data, f"hydra.sweep.dir={out}"]}
        if args.paper:
            commands["efbench-paper --quick --jobs 2"] = lambda out: [
                str(bindir / "efbench-paper"), "--quick", "--jobs", "2", "--out", str(out),
            ]  # fmt: skip
        timed(commands["sweep"](root / "warm"), root, "")  # data parsed, kernels compiled
        times: dict[tuple[str, str], list[float]] = {}
        for i in range(args.repeats):
            for name, make in commands.items():
                for mode in MODES:
                    out = root / f"{name.split()[0]}-{mode}-{i}"
                    times.setdefault((name, mode), []).append(timed(make(out), root, mode))
        for name in commands:
            med = {mode: statistics.median(times[(name, mode)]) for mode in MODES}
            rows.append(
                {
                    "case": name,
                    **{f"{MODES[m]} s": med[m] for m in MODES},
                    **{f"{MODES[m]} / all threads": med[m] / med["all"] for m in MODES if m != "all"},
                    "repeats": args.repeats,
                    "cores": os.cpu_count(),
                }
            )
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "threads.csv", index=False)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
