"""Sweeps on cluster launchers (submitit: local and a stand-in SLURM; Ray), the MLflow and
W&B callbacks, and the Optuna sweeper on efbench's return value. Integrations that are not
installed skip; submitit is in the ``test`` extra."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_cli import efbench

from efbench.analysis.collect import collect

QUICK = ["budget.iters=30", "log_every=10", "progress=false"]


def summaries(root: Path) -> dict[str, dict]:
    """Each run directory's name under ``root`` -> its summary."""
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/summary.json")}


def trace(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "trace.parquet").drop(columns="time")


@pytest.fixture(scope="module")
def submitit_sweeps(tmp_path_factory):
    """seed=0..3 through submitit's local executor, as 4 jobs (batching off) and as the one
    batched group efbench's sweeper makes of them."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    base = tmp_path_factory.mktemp("submitit")
    out = {}
    for name, extra in (("jobs", ["hydra.sweeper.batch=false"]), ("group", [])):
        root = base / name
        r = efbench(
            "-m", "seed=0,1,2,3", *QUICK, "hydra/launcher=submitit_local", *extra, f"hydra.sweep.dir={root}",
            cwd=base,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        out[name] = (root, r.stdout + r.stderr)
    return out


def submitit_jobs(root: Path) -> list[Path]:
    """The submitit jobs that ran and returned (one folder with a result each)."""
    return sorted(p.parent for p in (root / ".submitit").glob("*/*_result.pkl"))


def test_submitit_local_runs_every_job_of_a_multirun(submitit_sweeps):
    root, out = submitit_sweeps["jobs"]
    assert len(submitit_jobs(root)) == 4
    runs = summaries(root)
    assert sorted(runs) == [f"budget.iters=30,log_every=10,seed={s}" for s in range(4)]
    assert {s["status"] for s in runs.values()} == {"completed"}
    assert {s["batch_size"] for s in runs.values()} == {1}
    assert {s["config"]["seed"] for s in runs.values()} == {0, 1, 2, 3}
    assert "sweep: 4 runs" in out and "completed 4" in out
    _, table = collect(root)
    assert len(table) == 4 and set(table.status) == {"completed"}


def test_a_batched_group_is_one_submitit_job_with_the_same_runs(submitit_sweeps):
    jobs_root, _ = submitit_sweeps["jobs"]
    root, out = submitit_sweeps["group"]
    assert len(submitit_jobs(root)) == 1 and "efbench_batch" in out
    runs = summaries(root)
    assert sorted(runs) == sorted(summaries(jobs_root))
    for name, s in runs.items():
        assert s["status"] == "completed" and s["batch_size"] == 4
        assert s["config_hash"] == summaries(jobs_root)[name]["config_hash"]
        pd.testing.assert_frame_equal(trace(root / name), trace(jobs_root / name), check_exact=True)


# A stand-in for SLURM's sbatch: every array task at once in the background, each with the
# SLURM_* variables a real task gets, once submitit has written the task's pickle.
FAKE_SBATCH = """#!{python}
import os, re, subprocess, sys, time
from pathlib import Path

script = Path(sys.argv[-1])
text = script.read_text()
job = str(1000 + os.getpid())
last = int(re.search(r"#SBATCH --array=0-(\\d+)", text).group(1))
cpus = re.search(r"#SBATCH --cpus-per-task=(\\d+)", text).group(1)
folder = re.search(r"submitit\\.core\\._submit (\\S+)", text).group(1).strip("'")
for i in range(last + 1):
    if os.fork() == 0:
        os.setsid()
        log = os.open(script.with_suffix(f".{{i}}.log"), os.O_WRONLY | os.O_CREAT)
        os.dup2(log, 1), os.dup2(log, 2)
        while not (Path(folder.replace("%j", f"{{job}}_{{i}}")) / f"{{job}}_{{i}}_submitted.pkl").exists():
            time.sleep(0.05)
        env = dict(os.environ, SLURM_JOB_ID=job, SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(i),
                   SLURM_CPUS_PER_TASK=cpus, SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0")
        os._exit(subprocess.run(["bash", str(script)], env=env).returncode)
print(f"Submitted batch job {{job}}")
"""
# srun inside a task: the command, its output to the --output/--error files
FAKE_SRUN = """#!{python}
import os, sys

args = sys.argv[1:]
while args[0].startswith("--"):
    opt = args.pop(0)
    if opt in ("--output", "--error"):
        path = args.pop(0).replace("%A", os.environ["SLURM_ARRAY_JOB_ID"])
        path = path.replace("%a", os.environ["SLURM_ARRAY_TASK_ID"]).replace("%t", "0")
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), 1 if opt == "--output" else 2)
os.execvp(args[0], args)
"""


def test_slurm_launcher_config_submits_one_array_task_per_group(tmp_path):
    """hydra/launcher=slurm: one sbatch array, a task per batched group, with efbench's
    resources and thread settings, through a stand-in sbatch/srun that runs the tasks here."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "sacct": "#!/bin/sh\necho 'JobID|State'\n"}
    for name, text in fakes.items():
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    root = tmp_path / "sweep"
    r = efbench(
        "-m", "seed=0,1", "compressor=topk,ht", *QUICK, "hydra/launcher=slurm", f"hydra.sweep.dir={root}",
        cwd=tmp_path, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (script,) = (root / ".submitit").glob("*/*_submission.sh")
    text = script.read_text()
    for flag in ("--array=0-1%2", "--cpus-per-task=2", "--mem=8GB", "--time=240", "--job-name=efbench"):
        assert f"#SBATCH {flag}\n" in text
    runs = summaries(root)
    assert len(runs) == 4 and {(s["status"], s["batch_size"]) for s in runs.values()} == {("completed", 2)}
    setup = text.split("# setup\n")[1].split("\n\n")[0]
    for cpus, threads in (("3", "3"), ("", "1")):  # numba's pool: the task's cores, 1 if unknown
        probe = f"SLURM_CPUS_PER_TASK={cpus}\n{setup}\necho $NUMBA_NUM_THREADS $OMP_NUM_THREADS"
        assert subprocess.run(["bash", "-c", probe], capture_output=True, text=True).stdout.split() == [
            threads,
            threads,
        ]


def test_ray_launcher_runs_batched_groups(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    root = tmp_path / "sweep"
    r = efbench(
        "-m", "seed=0,1", "compressor=topk,ht", *QUICK, "hydra/launcher=ray_cluster",
        "hydra.launcher.ray.init.address=null", f"hydra.sweep.dir={root}", cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Ray Launcher is launching 2 jobs" in r.stdout + r.stderr
    runs = summaries(root)
    assert len(runs) == 4 and {(s["status"], s["batch_size"]) for s in runs.values()} == {("completed", 2)}


def test_mlflow_callback_logs_each_run_of_parallel_groups_once(tmp_path):
    """Two batched groups in two joblib processes on a fresh sqlite store: every run becomes
    an MLflow run with its config, final metrics, constants, trace by step and files;
    resuming the sweep logs nothing again."""
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = tmp_path / "sweep"
    sweep = ["-m", "seed=0,1", "compressor=topk,ht", *QUICK, f"hydra.sweep.dir={root}"]
    sweep += ["hydra/callbacks=mlflow", f"hydra.callbacks.mlflow.tracking_uri={uri}"]
    # then the same sweep again, in one process: it resumes, skipping every run
    for launcher in (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], []):
        r = efbench(*sweep, *launcher, cwd=tmp_path)
        assert r.returncode == 0 and "not logged" not in r.stdout + r.stderr, r.stderr
    client = mlflow.MlflowClient(uri)
    logged = client.search_runs([client.get_experiment_by_name("efbench").experiment_id])
    assert sorted(run.info.run_name for run in logged) == sorted(summaries(root))
    for run in logged:
        run_dir = root / run.info.run_name
        summary, tr = summaries(root)[run_dir.name], pd.read_parquet(run_dir / "trace.parquet")
        assert run.info.status == "FINISHED" and run.data.tags["efbench.status"] == "completed"
        assert run.data.tags["efbench.run_dir"] == str(run_dir.resolve())
        assert run.data.params["seed"] == str(summary["config"]["seed"])
        assert run.data.params["method.name"] == "ec_sgd_is"
        assert f"compressor={run.data.params['choices.compressor']}," in run.info.run_name
        assert run.data.metrics["final_rel_gap"] == summary["final"]["rel_gap"]
        assert run.data.metrics["const_L"] == summary["constants"]["L"]
        history = client.get_metric_history(run.info.run_id, "rel_gap")
        assert [(m.step, m.value) for m in history] == list(zip(tr["step"], tr["rel_gap"], strict=True))
        assert {f.path for f in client.list_artifacts(run.info.run_id)} == {"trace.parquet", "summary.json"}


def test_mlflow_store_out_of_reach_stops_the_launch(tmp_path):
    pytest.importorskip("mlflow")
    uri = "http://127.0.0.1:9"  # the discard port: refused at once
    run_dir = tmp_path / "run"
    r = efbench(
        "hydra/callbacks=mlflow", f"hydra.callbacks.mlflow.tracking_uri={uri}", *QUICK,
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and not run_dir.exists()
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("efbench: error:")]
    assert line.startswith(f"efbench: error: hydra.callbacks.mlflow: cannot reach the store {uri}: ")


def test_mlflow_callback_refuses_an_unknown_trace_mode(tmp_path):
    pytest.importorskip("mlflow")
    r = efbench("hydra/callbacks=mlflow", "hydra.callbacks.mlflow.trace=everything", *QUICK, cwd=tmp_path)
    assert r.returncode == 2
    assert "hydra.callbacks.mlflow.trace: unknown value 'everything'" in r.stderr
    assert not list(tmp_path.rglob("summary.json"))


def wandb_records(path: Path):
    """The records of an offline W&B run file: a 7-byte header, then LevelDB-log records
    (checksum, length, type; 32 KiB blocks) holding wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, part = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        part += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def wandb_run(path: Path) -> dict:
    """What an offline W&B run file holds: its name, config, history rows, summary,
    artifacts' files and exit code."""
    records = list(wandb_records(path))
    (run,) = [x.run for x in records if x.HasField("run")]
    (exit_record,) = [x.exit for x in records if x.HasField("exit")]
    summary = {}
    for x in records:
        summary.update({i.key: json.loads(i.value_json) for i in x.summary.update if i.key})
    return {
        "name": run.display_name,
        "config": {i.key: json.loads(i.value_json) for i in run.config.update},
        "history": [
            {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in x.history.item}
            for x in records
            if x.HasField("history")
        ],
        "summary": summary,
        "artifacts": [[f.path for f in x.artifact.manifest.contents] for x in records if x.artifact.name],
        "exit_code": exit_record.exit_code,
    }


def test_wandb_callback_logs_offline_runs(tmp_path):
    """seeds=[0,1] in one job: two offline W&B runs, each with its config, its trace as
    history by step, its final metrics in the summary and its files as an artifact."""
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    r = efbench(
        "seeds=[0,1]", *QUICK, "hydra/callbacks=wandb", f"hydra.run.dir={run_dir}", cwd=tmp_path,
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"},
    )  # fmt: skip
    assert r.returncode == 0 and "not logged" not in r.stdout + r.stderr, r.stderr
    logged = {w["name"]: w for w in map(wandb_run, (tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))}
    assert sorted(logged) == ["seed=0", "seed=1"]
    for name, w in logged.items():
        s, tr = summaries(run_dir)[name], pd.read_parquet(run_dir / name / "trace.parquet")
        assert w["config"]["seed"] == str(s["config"]["seed"])
        assert w["config"]["dataset.name"] == "breast_cancer"
        rows = [(h["_step"], h["rel_gap"]) for h in w["history"] if "rel_gap" in h]
        assert rows == list(zip(tr["step"], tr["rel_gap"], strict=True))
        assert w["summary"]["final_rel_gap"] == s["final"]["rel_gap"]
        assert w["summary"]["const_L"] == s["constants"]["L"]
        assert w["summary"]["efbench.status"] == "completed"
        assert w["artifacts"] == [["summary.json", "trace.parquet"]] and w["exit_code"] == 0


def test_optuna_sweeper_minimizes_the_final_gap(tmp_path):
    """efbench's return value (the mean final f - f* of a job's runs, here two seeds) is
    Optuna's objective: the best trial is the multiplier whose runs end lowest."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    root = tmp_path / "sweep"
    r = efbench(
        "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0", "stepsize.multiplier=tag(log, interval(0.1, 10))", "seeds=[0,1]",
        *QUICK, f"hydra.sweep.dir={root}", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    objective = {}
    for trial in root.glob("*multiplier=*"):
        runs = summaries(trial)
        (multiplier,) = {s["config"]["stepsize"]["multiplier"] for s in runs.values()}
        assert sorted(runs) == ["seed=0", "seed=1"]
        objective[multiplier] = sum(s["final"]["gap"] for s in runs.values()) / 2
    assert len(objective) == 4
    best = yaml.safe_load((root / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(objective.values()), rel=1e-12)
    assert objective[best["best_params"]["stepsize.multiplier"]] == pytest.approx(best["best_value"])


def test_a_tracker_that_is_not_installed_is_one_line(tmp_path):
    """hydra/callbacks=mlflow without mlflow: one line naming the extra, exit 2, no run."""
    code = "import sys; sys.modules['mlflow'] = None; from efbench.app.entry import efbench; efbench()"
    argv = ["hydra/callbacks=mlflow", *QUICK, f"hydra.run.dir={tmp_path / 'run'}"]
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and not (tmp_path / "run" / "summary.json").exists()
    assert r.stderr.strip() == (
        "efbench: error: hydra.callbacks.mlflow: mlflow is not installed (pip install 'efbench[mlflow]')"
    )
