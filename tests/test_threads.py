"""A process's share of the cores when several jobs compute at once (efbench.engine.threads):
numba's pool, the BLAS pools and OpenMP's waiting, checked in fresh interpreters (the limits
are process-wide), and how many jobs a launch runs at once (efbench.app.cli.parallel_jobs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from efbench.app.cli import parallel_jobs
from efbench.engine.threads import cores

PROBE = """
import json, os, sys
import numba, numpy
from threadpoolctl import threadpool_info
from efbench.engine.threads import share_cores
share = share_cores(int(sys.argv[1]))
print(json.dumps({"share": share, "numba": numba.get_num_threads(),
                  "pools": [p["num_threads"] for p in threadpool_info()],
                  "wait": os.environ.get("OMP_WAIT_POLICY")}))
"""


def probe(jobs: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(jobs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("jobs", [2, 3, 64])
def test_jobs_at_once_each_compute_with_their_share(jobs):
    share = max(1, cores() // jobs)
    got = probe(jobs)
    assert got["share"] == got["numba"] == share
    assert got["pools"] and set(got["pools"]) == {share}  # numpy's BLAS
    assert got["wait"] == "PASSIVE"


def test_one_job_keeps_every_core():
    got = probe(1)
    assert got["share"] == cores() and got["wait"] is None


@pytest.mark.parametrize(
    "overrides, jobs",
    [
        ([], 1),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"], cores()),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"], max(1, cores() - 1)),
    ],
)
def test_parallel_jobs_reads_the_launcher(overrides, jobs):
    from hydra.types import RunMode

    with initialize_config_module("efbench.conf", version_base="1.3"):
        cfg = compose("config", overrides, return_hydra_config=True)
    hc = cfg.hydra
    hc.mode = RunMode.MULTIRUN
    assert parallel_jobs(hc) == jobs
    hc.mode = RunMode.RUN  # a single run computes alone whatever the launcher
    assert parallel_jobs(hc) == 1
