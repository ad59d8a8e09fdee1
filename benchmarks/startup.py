"""What a short command costs before it computes anything (issue 23, start-up).

    EFBENCH_DATA_MIRROR=../shared/data python benchmarks/startup.py [--repeats 7]

Each case is a fresh process, timed from launch to exit; the cases are interleaved, so load
on the machine falls on all of them alike, and the medians are compared as ratios:

- ``efbench --help``;
- ``trivial run``: ``efbench budget.iters=10`` on the default data, its caches warm (the
  data, x*, numba's compiled kernels), as a user's second run;
- ``bare Hydra app``: a ``@hydra.main`` function that does nothing;
- ``Hydra app + imports``: the same importing numpy, scipy (sparse, linalg, special),
  pandas and numba, the libraries a run needs.

Writes ``benchmarks/startup.csv`` and the table between the ``startup`` markers of the
README.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- startup: written by benchmarks/startup.py -->", "<!-- /startup -->"
BARE = "import hydra\n{imports}\n@hydra.main(version_base=None)\ndef main(cfg):\n    pass\nmain()\n"
IMPORTS = "import numpy, scipy.sparse, scipy.linalg, scipy.special, pandas, numba"


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def cases(root: Path) -> dict[str, list[str]]:
    exe = str(Path(sys.executable).with_name("efbench"))
    for name, imports in (("bare.py", ""), ("imports.py", IMPORTS)):
        (root / name).write_text(BARE.format(imports=imports))
    run = [exe, "budget.iters=10", "progress=false", f"data.dir={root / 'data'}"]
    return {
        "efbench --help": [exe, "--help"],
        "trivial run": [*run, f"hydra.run.dir={root / 'run'}"],
        "bare Hydra app": [sys.executable, str(root / "bare.py"), f"hydra.run.dir={root / 'bare'}"],
        "Hydra app + imports": [sys.executable, str(root / "imports.py"), f"hydra.run.dir={root / 'imp'}"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    n = ap.parse_args().repeats
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        commands = cases(root)
        for cmd in commands.values():  # warm: caches written, kernels compiled, files read once
            timed(cmd, root)
        for i in range(n):
            for name, cmd in commands.items():
                if name == "trivial run":  # a fresh folder: a finished run would be skipped
                    cmd = [*cmd[:-1], f"hydra.run.dir={root / f'run{i}'}"]
                times.setdefault(name, []).append(timed(cmd, root))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        {
            "case": k,
            "median s": med[k],
            "min s": min(v),
            "x bare Hydra app": med[k] / med["bare Hydra app"],
            "x Hydra app + imports": med[k] / med["Hydra app + imports"],
            "repeats": n,
        }
        for k, v in times.items()
    ]
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "startup.csv", index=False)
    text = table.drop(columns="repeats").to_markdown(index=False, floatfmt=".2f")
    print(text)
    readme = README.read_text()
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        block = (
            f"{BEGIN}\nMedians of {n} interleaved launches each (`python benchmarks/startup.py`):\n\n{text}\n"
        )
        README.write_text(head + block + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
