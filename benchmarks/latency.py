"""Latencies a user feels (not part of the test suite, which asserts results, not times).

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/latency.py [--repeats 5]

- ``stop``: seconds from SIGINT / SIGTERM to the exit of an ``efbench`` run that is stepping
  (numba and numpy engines, one run and a batch of three seeds); the run writes its steps
  as ``interrupted`` in that time. The engine looks at the flag every
  ``efbench.engine.signals.CHUNK_SECONDS`` of stepping.
- ``help``: seconds for ``efbench.app.cli.help_text()`` in this process (``efbench --help``
  without interpreter start-up).
- ``collect``: seconds for ``efbench.analysis.collect.collect`` over 300 one-row-group runs.

Medians of ``--repeats``; writes ``benchmarks/latency.csv``.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
STOPS = [
    ("numba", signal.SIGINT, None),
    ("numpy", signal.SIGTERM, None),
    ("numba", signal.SIGTERM, "[0,1,2]"),
    ("numpy", signal.SIGINT, "[0,1]"),
]


def stop_latency(engine: str, sig: int, seeds: str | None, root: Path) -> float:
    exe = Path(sys.executable).with_name("efbench")
    log = root / "log.txt"
    args = [f"engine={engine}", f"hydra.run.dir={root / 'run'}", "budget.iters=1000000000"]
    args += [f"seeds={seeds}"] if seeds else []
    runs = len(json.loads(seeds)) if seeds else 1
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(exe), *args, "log_every=100000", "progress=false"], cwd=root, stdout=fh, stderr=fh
        )
        while log.read_text().count("gamma0=") < runs and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # stepping
        t0 = time.perf_counter()
        proc.send_signal(sig)
        proc.wait()
        return time.perf_counter() - t0


def help_latency() -> float:
    from efbench.app import cli

    t0 = time.perf_counter()
    cli.help_text()
    return time.perf_counter() - t0


def collect_latency(root: Path) -> float:
    from efbench.analysis.collect import collect

    src = pd.DataFrame({"step": np.arange(50), "f": np.linspace(1, 0, 50)})
    for i in range(300):
        d = root / f"seed={i}"
        d.mkdir(parents=True)
        src.to_parquet(d / "trace.parquet")
        config = {"seed": i, "dataset": {"name": "x"}, "method": {"name": "m"}}
        (d / "summary.json").write_text(json.dumps({"status": "completed", "config": config}))
    t0 = time.perf_counter()
    collect(root)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    n = ap.parse_args().repeats
    times: dict[str, list[float]] = {}
    help_latency()  # the config files read once, as a process that shows help has
    for _ in range(n):  # interleaved
        for engine, sig, seeds in STOPS:
            with tempfile.TemporaryDirectory() as tmp:
                name = f"stop {signal.Signals(sig).name} {engine}" + (f" seeds={seeds}" if seeds else "")
                times.setdefault(name, []).append(stop_latency(engine, sig, seeds, Path(tmp)))
        times.setdefault("help_text()", []).append(help_latency())
        with tempfile.TemporaryDirectory() as tmp:
            times.setdefault("collect 300 runs", []).append(collect_latency(Path(tmp)))
    rows = [
        {"case": k, "median s": statistics.median(v), "max s": max(v), "repeats": n} for k, v in times.items()
    ]
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "latency.csv", index=False)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
