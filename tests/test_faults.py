"""Results survive faults: failed relaunches, mispaired files, unwritable folders, signals."""

import os
import shutil

import pandas as pd
import pytest
from test_cli import cfg_of, efbench

from efbench import results
from efbench.errors import ConfigError
from efbench.results import ERROR, SUMMARY, TRACE, status_of
from efbench.runner import run
from efbench.sweep import collect

BASE = ("budget.iters=60", "log_every=20")


def snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture
def finished(tmp_path):
    """A directory holding a completed run, and its files' bytes."""
    out = tmp_path / "run"
    assert run(cfg_of(*BASE), out)["status"] == "completed"
    return out, snapshot(out)


def test_a_failed_relaunch_leaves_the_result_and_records_its_error_beside_it(finished):
    out, before = finished
    with pytest.raises(ConfigError, match="compressor.k"):
        run(cfg_of(*BASE, "compressor=topk", "compressor.k=0"), out)
    after = snapshot(out)
    assert {k: after[k] for k in before} == before and set(after) == {*before, ERROR}
    assert status_of(out) == "error"
    _, runs = collect(out)
    assert runs.status.tolist() == ["completed"] and "compressor.k" in runs.error.iloc[0]
    assert run(cfg_of(*BASE), out).get("skipped")  # the same config again: whole, error cleared
    assert snapshot(out) == before and status_of(out) == "completed"


def test_a_completed_rerun_replaces_the_result_and_clears_the_error(finished):
    out, _ = finished
    with pytest.raises(ConfigError):
        run(cfg_of(*BASE, "budget.iters=0"), out)
    assert run(cfg_of("budget.iters=40", "log_every=20"), out)["steps"] == 40
    assert not (out / ERROR).exists() and status_of(out) == "completed"


def test_a_trace_not_the_summarys_is_never_read_as_its_result(finished, tmp_path):
    out, _ = finished
    other = tmp_path / "other"
    run(cfg_of(*BASE, "seed=1"), other)  # same rows, other values
    assert pd.read_parquet(other / TRACE).shape == pd.read_parquet(out / TRACE).shape
    shutil.copy(other / TRACE, out / TRACE)  # what a kill between the two renames could leave
    assert status_of(out) == "unreadable"
    with pytest.warns(UserWarning, match="not the one its summary"):
        _, runs = collect(out)
    assert runs.status.tolist() == ["unreadable"]
    again = run(cfg_of(*BASE), out)
    assert not again.get("skipped") and status_of(out) == "completed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_dir_is_refused_before_any_step(finished, monkeypatch):
    out, before = finished
    from efbench import runner

    def no_setup(*a):
        raise AssertionError("the problem was built for a run that cannot be written")

    monkeypatch.setattr(runner, "build_setup", no_setup)
    out.chmod(0o555)
    try:
        with pytest.raises(results.WriteError, match="cannot write"):
            run(cfg_of(*BASE, "seed=3"), out)
    finally:
        out.chmod(0o755)
    assert snapshot(out) == before


def test_a_read_only_run_dir_is_refused_before_any_step_even_as_root(finished, monkeypatch):
    out, before = finished

    def refuse(path, payload):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(results, "_write_temp", refuse)
    from efbench import runner

    monkeypatch.setattr(runner, "build_setup", lambda *a: pytest.fail("built a problem"))
    with pytest.raises(results.WriteError, match="cannot write .*Permission denied"):
        run(cfg_of(*BASE, "seed=3"), out)
    assert snapshot(out) == before


def test_a_write_failing_midway_keeps_the_previous_result(finished):
    out, before = finished
    (out / TRACE).unlink()
    (out / TRACE).mkdir()  # a directory where the trace must go: the rename fails
    before = {k: v for k, v in before.items() if k != TRACE}
    with pytest.raises(results.WriteError, match="cannot write"):
        run(cfg_of(*BASE, "seed=2"), out)
    assert snapshot(out) == before  # the old summary, no temporary files left
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.is_file()) == []


def test_cli_write_failure_is_one_line_exit_2(finished):
    out, before = finished
    (out / TRACE).unlink()
    (out / TRACE).mkdir()
    r = efbench(*BASE, "seed=2", "progress=false", f"hydra.run.dir={out}", cwd=out.parent)
    err = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        line for line in err.splitlines() if f"cannot write {out}" in line
    ]
    assert (out / SUMMARY).read_bytes() == before[SUMMARY]
