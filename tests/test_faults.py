"""Results survive faults: failed relaunches, mispaired files, unwritable folders, signals."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_cli import cfg_of, efbench

from efbench.analysis.collect import collect
from efbench.engine import signals
from efbench.errors import ConfigError
from efbench.run import results
from efbench.run.results import ERROR, SUMMARY, TRACE, status_of
from efbench.run.runner import run

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
    from efbench.run import runner

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

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(results.os, "posix_fallocate", refuse)  # the space claimed before the compute
    from efbench.run import runner

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
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


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


def launch(tmp_path, *args, runs=1, budget="budget.iters=1000000000"):
    """An efbench process stepping a run that would take hours, once ``runs`` runs have
    begun stepping."""
    log = tmp_path / "log.txt"
    exe = Path(sys.executable).with_name("efbench")
    fh = log.open("w")
    proc = subprocess.Popen(
        [str(exe), *args, budget, "log_every=100000", "progress=false"],
        cwd=tmp_path,
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while log.read_text().count("gamma0=") < runs and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    return proc, log


@pytest.mark.parametrize(
    "engine, sig, seeds",
    [
        ("numba", signal.SIGINT, None),
        ("numba", signal.SIGTERM, None),
        ("numpy", signal.SIGINT, None),
        ("numpy", signal.SIGTERM, None),
        ("numba", signal.SIGTERM, "[0,1,2]"),
        ("numpy", signal.SIGINT, "[0,1]"),
    ],
)
def test_a_signal_stops_the_run_and_keeps_its_steps(tmp_path, engine, sig, seeds):
    out = tmp_path / "run"
    extra = [f"seeds={seeds}"] if seeds else []
    proc, log = launch(tmp_path, f"engine={engine}", f"hydra.run.dir={out}", *extra)
    proc.send_signal(sig)  # how soon it ends: benchmarks/latency.py
    code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 128 + sig and "Traceback" not in text
    assert text.count(f"efbench: interrupted by {signal.Signals(sig).name}") == 1
    dirs = [out / f"seed={s}" for s in json.loads(seeds)] if seeds else [out]
    for d in dirs:
        summ = json.loads((d / SUMMARY).read_text())
        trace = pd.read_parquet(d / TRACE)
        assert summ["status"] == "interrupted" and status_of(d) == "interrupted"
        assert summ["steps"] > 0 and trace.step.iloc[-1] == summ["steps"] and len(trace) == summ["trace_rows"]


@pytest.mark.parametrize("args", [["engine=numba"], ["engine=numpy"], ["seeds=[0,1]"]])
def test_sigkill_leaves_nothing_that_looks_complete_and_a_relaunch_reruns(tmp_path, args):
    out = tmp_path / "run"
    proc, _ = launch(tmp_path, f"hydra.run.dir={out}", *args)
    proc.kill()
    proc.wait(timeout=30)
    assert not list(out.rglob(SUMMARY)) and not list(out.rglob("*.parquet"))
    r = efbench(
        *args, "budget.iters=50", "log_every=25", "progress=false", f"hydra.run.dir={out}", cwd=tmp_path
    )
    dirs = [out / "seed=0", out / "seed=1"] if "seeds=[0,1]" in args else [out]
    assert r.returncode == 0 and {status_of(d) for d in dirs} == {"completed"}


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_stepping_in_short_calls_changes_nothing(engine, tmp_path, monkeypatch):
    cfg = cfg_of("budget.iters=300", f"engine={engine}")  # log-spaced points stay where they were
    run(cfg, tmp_path / "a")
    monkeypatch.setattr(signals, "CHUNK_SECONDS", 0.0)  # every call one step
    run(cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / TRACE).drop(columns="time"),
        pd.read_parquet(tmp_path / "b" / TRACE).drop(columns="time"),
    )


def test_a_stop_swallowed_by_a_c_callback_stops_the_next_run_at_its_first_step(tmp_path, capsys):
    """Ctrl-C while numba compiles lands in llvmlite's ctypes hooks, where Python prints
    "Exception ignored" and goes on: the stop must still end the run, quietly."""
    import ctypes

    signals.terminate_like_interrupt()
    old = signal.getsignal(signal.SIGTERM)
    try:

        @ctypes.CFUNCTYPE(None)
        def hook():
            os.kill(os.getpid(), signal.SIGTERM)  # raises Interrupted inside the callback
            time.sleep(0.1)

        hook()  # a C caller: the exception goes to sys.unraisablehook
        with pytest.raises(signals.Interrupted, match="SIGTERM"):
            run(cfg_of("budget.iters=100000", "engine=numpy"), tmp_path / "run")
    finally:
        signal.signal(signal.SIGTERM, old)
    summ = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert summ["status"] == "interrupted" and summ["steps"] < 100000
    assert "Exception ignored" not in capsys.readouterr().err
    assert signals._swallowed == []  # taken by the run it stopped


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def workers_of(pid):
    return [
        int(p)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for p in (task / "children").read_text().split()
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_joblib_workers_write_interrupted_runs_and_end_when_the_sweep_is_stopped(tmp_path, sig):
    root = tmp_path / "sweep"
    proc, log = launch(
        tmp_path, "-m", "hydra/launcher=joblib", "compressor=ht,topk", f"hydra.sweep.dir={root}", runs=2
    )
    time.sleep(1.0)  # both workers past their setup (a signal there leaves no steps to keep)
    workers = workers_of(proc.pid)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    deadline = time.time() + 10
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)
    runs = [p.parent for p in root.rglob("summary.json")]
    assert len(runs) == 2 and {status_of(d) for d in runs} == {"interrupted"}, log.read_text()
    if sig == signal.SIGTERM:
        text = log.read_text()
        assert code == 143 and "Traceback" not in text
        assert "sweep: 2 runs in" in text and "interrupted 2" in text


def test_a_relaunched_sweep_skips_finished_runs_and_reruns_interrupted_ones(tmp_path):
    root = tmp_path / "sweep"
    args = ("-m", f"hydra.sweep.dir={root}")
    budget = "budget.iters=50,1000000000"
    proc, log = launch(tmp_path, *args, runs=2, budget=budget)  # the first done, the second stepping
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    short, long = root / "budget.iters=50,log_every=100000", root / "budget.iters=1000000000,log_every=100000"
    assert status_of(short) == "completed" and status_of(long) == "interrupted"
    first = (short / SUMMARY).read_bytes(), (long / SUMMARY).read_bytes()
    proc, log = launch(tmp_path, *args, runs=1, budget=budget)
    assert f"skipping {short}: already completed" in log.read_text()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130 and "sweep: 2 runs in" in log.read_text()
    assert (short / SUMMARY).read_bytes() == first[0]
    assert f"run {long}: method=" in log.read_text() and (long / SUMMARY).read_bytes() != first[1]


def test_a_run_directory_being_computed_is_skipped_by_a_second_launch(tmp_path):
    out = tmp_path / "run"
    first, log = launch(tmp_path, f"hydra.run.dir={out}")
    assert status_of(out) == "running"
    r = efbench("budget.iters=50", "progress=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0 and f"skipping {out}: another launch is computing it" in r.stdout + r.stderr
    assert not (out / SUMMARY).exists() and first.poll() is None  # the second wrote nothing
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 143 and status_of(out) == "interrupted"


def test_the_lock_is_released_when_the_holder_ends(tmp_path):
    fd = results.lock(tmp_path)
    assert fd is not None and results.lock(tmp_path) is None and results.locked(tmp_path)
    os.close(fd)
    assert not results.locked(tmp_path)
    run(cfg_of(*BASE), tmp_path)
    assert status_of(tmp_path) == "completed" and not results.locked(tmp_path)


LONG_SWEEP = (
    "budget.iters=20 log_every=10 dataset.x0_shift=1.23456789 stepsize.multiplier=0.987654321 "
    "problem.l2=0.000123456789 data.seed=12345 data.alpha=0.56789 diverge_factor=123456.789 "
    "log_per_decade=9.87654321 compressor.lam=0.0123456789 bits.float_bits=64 "
    "bits.index_bits=false engine=numpy x0=zero"
).split()


@pytest.mark.parametrize("batch", [True, False])
def test_sweep_subdirs_stay_within_name_limits_and_jobs_tag_their_logs(tmp_path, batch):
    from efbench.config.identity import NAME_BYTES

    root = tmp_path / "sweep"
    r = efbench(
        "-m",
        "seed=0,1",
        *LONG_SWEEP,
        f"hydra.sweeper.batch={str(batch).lower()}",
        f"hydra.sweep.dir={root}",
        "progress=false",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert len(",".join(LONG_SWEEP).encode()) > 255  # one name per job would be too long
    names = [p.parent.name for p in root.rglob("summary.json")]
    assert len(set(names)) == 2 and all(len(n.encode()) <= NAME_BYTES for n in names)
    assert all(n.startswith("bits.float_bits=64,bits.index_bits=False,budget.iters=20") for n in names)
    _, runs = collect(root)
    assert sorted(runs.seed) == [0, 1] and set(runs.status) == {"completed"}
    text = r.stdout + r.stderr
    tags = {"[job 0]"} if batch else {"[job 0]", "[job 1]"}
    assert {t for t in ("[job 0]", "[job 1]") if f"{t} run {root}" in text} == tags


def test_one_unwritable_run_folder_fails_only_its_own_run(tmp_path):
    """A batch of three seeds where seed 1's summary.json is a directory: seeds 0 and 2 are
    written (they were computed and thrown away before), seed 1's error names its folder,
    and seed 1's earlier trace is not replaced (no half-written pair)."""
    from efbench.run.runner import run_seeds

    cfg = cfg_of("budget.iters=30", "log_every=10")
    blocked = tmp_path / "seed=1"
    (blocked / SUMMARY).mkdir(parents=True)
    (blocked / TRACE).write_bytes(b"an earlier trace")
    with pytest.raises(results.WriteError, match=r"seed=1.*directory"):
        run_seeds(cfg, [0, 1, 2], tmp_path)
    for s in (0, 2):
        assert status_of(tmp_path / f"seed={s}") == "completed"
    assert (blocked / TRACE).read_bytes() == b"an earlier trace" and (blocked / SUMMARY).is_dir()
    with pytest.warns(UserWarning, match=r"seed=1: unreadable summary.json"):
        _, runs = collect(tmp_path)
    assert sorted(runs.loc[runs.status == "completed", "seed"]) == [0, 2]


def tree(path):
    """Every file below ``path`` (the Hydra record too) and its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_stopped_or_failed_relaunch_leaves_the_result_and_its_hydra_record(tmp_path):
    out = tmp_path / "run"
    assert efbench(*BASE, "progress=false", f"hydra.run.dir={out}", cwd=tmp_path).returncode == 0
    before = tree(out)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "efbench.log", SUMMARY, TRACE} <= set(before)
    proc, _ = launch(tmp_path, f"hydra.run.dir={out}")  # more iterations: the usual relaunch
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    after = tree(out)
    assert {k: after.get(k) for k in before} == before
    attempt = json.loads((out / results.ATTEMPT).read_text())
    assert attempt["status"] == "interrupted" and attempt["steps"] > 0 and status_of(out) == "interrupted"
    assert "interrupted" in (out / "attempt.log").read_text()
    r = efbench(*BASE, "seed=-3", f"hydra.run.dir={out}", cwd=tmp_path)  # refused: only error.json
    assert r.returncode == 2 and status_of(out) == "error"
    after = tree(out)
    assert {k: after.get(k) for k in before} == before and not list(out.glob(".hydra/attempt-*"))
    assert "seed: got -3" in (out / "attempt.log").read_text()
    r = efbench("budget.iters=40", "log_every=20", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0 and status_of(out) == "completed"  # a finished run replaces it all
    assert not {results.ATTEMPT, results.ATTEMPT_TRACE, ERROR, "attempt.log"} & {
        p.name for p in out.iterdir()
    }
    assert "budget.iters=40" in (out / ".hydra" / "overrides.yaml").read_text()


def test_a_stopped_batch_of_a_changed_config_keeps_every_finished_result(tmp_path):
    import threading

    dirs = [tmp_path / "s0", tmp_path / "s1"]
    batch = [cfg_of(*BASE, f"seed={s}") for s in (0, 1)]
    from efbench.run.runner import run_batch

    run_batch(batch, dirs)
    before = [snapshot(d) for d in dirs]
    longer = [cfg_of("budget.iters=1000000000", "log_every=100000", f"seed={s}") for s in (0, 1)]
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(signals.Interrupted):
        run_batch(longer, dirs)
    for d, b in zip(dirs, before, strict=True):
        assert {k: v for k, v in snapshot(d).items() if k in b} == b
        assert json.loads((d / results.ATTEMPT).read_text())["status"] == "interrupted"
        _, runs = collect(d)
        assert runs.status.tolist() == ["completed"]  # the result, never the attempt


def small_disk():
    """A child process that cannot write files over 40 kB (EFBIG, as a full disk gives ENOSPC):
    Hydra's record and the log fit, a run's result does not."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def test_a_disk_too_full_for_the_result_is_found_before_the_compute_and_the_sweep_fails(tmp_path):
    exe = Path(sys.executable).with_name("efbench")
    root = tmp_path / "sweep"
    r = subprocess.run(
        [str(exe), "-m", "seed=0,1", "method=ec_sgd,ec_lsvrg", *BASE, f"hydra.sweep.dir={root}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
    )
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text and "Logging error" not in text
    assert "sweep: 4 runs in" in text and "not written 4" in text, text
    assert "File too large" in text and "gamma0=" not in text  # refused before anything was built
    assert not list(root.rglob(SUMMARY)) and not list(root.rglob(results.RESERVE))


@pytest.mark.parametrize("moment", ["workers starting", "first job importing"])
def test_workers_of_a_killed_sweep_end_within_seconds_at_any_moment(tmp_path, moment):
    exe = Path(sys.executable).with_name("efbench")
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.batch=false",
        "seed=0,1,2",
    ]
    proc = subprocess.Popen(
        [str(exe), *args, "budget.iters=100000000", "progress=false", f"hydra.sweep.dir={tmp_path / 's'}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not signals.started_by(proc.pid) and time.time() < deadline:
        time.sleep(0.01)
    if moment == "first job importing":
        time.sleep(0.5)
    assert signals.started_by(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while signals.started_by(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not signals.started_by(proc.pid)


def test_ctrl_c_at_any_moment_of_a_run_is_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("efbench")
    for wait in (0.3, 1.0, 2.0):  # importing Hydra, numpy and pandas; composing; building or stepping
        args = [
            f"hydra.run.dir={tmp_path / str(wait)}",
            "budget.iters=100000000",
            "progress=false",
            "engine=numpy",
        ]
        proc = subprocess.Popen(
            [str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        time.sleep(wait)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 130 and "Traceback" not in out, out
        assert [line for line in out.splitlines() if not line.startswith("[")] in (
            [],
            ["efbench: interrupted"],
        )


@pytest.mark.parametrize("command", ["efbench-figures", "efbench-collect"])
def test_an_output_a_tool_cannot_write_is_one_line(finished, tmp_path, command):
    out, _ = finished
    (tmp_path / "a_file").write_text("")
    target = tmp_path / "a_file" / ("figs" if command == "efbench-figures" else "t.csv")
    exe = Path(sys.executable).with_name(command)
    r = subprocess.run([str(exe), str(out), "--out", str(target)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        line for line in r.stderr.splitlines() if line.startswith(f"{command}: error:")
    ]
    assert len(r.stderr.splitlines()) == 1


def test_a_ctrl_c_that_surfaces_as_another_error_is_still_an_interrupt(monkeypatch, capsys):
    """Ctrl-C while Hydra imports can land in OmegaConf's cleanup, which raises its own error
    while handling it (and leaves the import half done): still 'interrupted', exit 130."""
    from types import SimpleNamespace

    from efbench.app import entry

    def command():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None

    monkeypatch.setattr(entry.importlib, "import_module", lambda name: SimpleNamespace(main=command))
    with pytest.raises(SystemExit) as exit_:
        entry._run("efbench", "efbench.app.cli:main", lambda exc: None)
    assert exit_.value.code == 130 and capsys.readouterr().err == "efbench: interrupted\n"
