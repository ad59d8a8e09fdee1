"""A process's share of the cores when several jobs compute at once (efbench.engine.threads):
numba's pool, the BLAS pools and OpenMP's waiting, checked in fresh interpreters (the limits
are process-wide), and how many jobs a launch runs at once (efbench.app.cli.parallel_jobs)."""

from __future__ import annotations

import functools
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
if len(sys.argv) > 2:
    os.environ["EFBENCH_THREADS"] = sys.argv[2]
share = share_cores(int(sys.argv[1]))
print(json.dumps({"share": share, "numba": numba.get_num_threads(),
                  "pools": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
                  "wait": os.environ.get("OMP_WAIT_POLICY")}))
"""


@functools.cache
def probe(jobs: int, *mode: str) -> dict:
    cmd = [sys.executable, "-c", PROBE, str(jobs), *mode]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


@pytest.mark.parametrize("jobs", [2, 3, 64])
def test_jobs_at_once_each_use_their_share_of_blas_and_wait_passively(jobs):
    share = max(1, cores() // jobs)
    got = probe(jobs)
    assert got["share"] == share and got["numba"] == probe(1)["numba"]  # numba's pool: every core
    assert got["pools"] and set(got["pools"]) == {share}  # numpy's BLAS
    assert got["wait"] == "PASSIVE"
    capped = probe(jobs, "numba")
    assert capped["numba"] == share and set(capped["pools"]) == {share}
    assert probe(jobs, "all") == probe(1)


def test_one_job_keeps_every_core():
    got = probe(1)
    assert got["share"] == cores() and got["wait"] is None and set(got["pools"]) == {cores()}


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
