"""Provenance in summary.json: versions, commit, machine and the command line."""

import json
import platform
import subprocess
from importlib import metadata

import numpy as np
from conftest import REPO
from test_cli import efbench


def test_a_cli_run_records_where_and_with_what_it_ran(tmp_path):
    out = tmp_path / "run"
    r = efbench("budget.iters=5", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    assert prov["efbench"] == metadata.version("efbench")
    assert prov["packages"]["numpy"] == np.__version__
    assert prov["python"] == platform.python_version()
    assert prov["command"] == f"efbench budget.iters=5 hydra.run.dir={out}"
    assert prov["cores"] >= 1 and prov["host"] == platform.node()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit, marked dirty when tracked files changed
        assert prov["git_commit"].removesuffix("-dirty") == head.stdout.strip()
