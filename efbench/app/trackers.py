"""Hydra callbacks that log each run a job finishes to MLflow or Weights & Biases.

``efbench ... hydra/callbacks=mlflow`` (or ``wandb``, or ``[mlflow,wandb]``) adds one
tracker run per efbench run: the run's config flattened to dotted keys (plus the group
choices), its final metrics (``final_*``), problem constants (``const_*``) and the other
numbers of its summary, tags (status, config hash, run directory, engine, ...) and its trace,
as metrics by step and/or ``trace.parquet`` as an artifact (``trace: metrics | artifact |
both | none``).

The callbacks run in the job's own process (``on_job_end``), so they follow the runs
wherever a launcher puts them (joblib, SLURM, Ray) and log a batched group's runs one by
one. A job logs the runs whose ``summary.json`` it wrote: a run a resumed sweep skips is not
logged twice, and a launch that fails leaves nothing to log. An MLflow store that cannot be
reached when the launch starts stops it (one line, exit code 2); a run that cannot be logged
later costs a warning, not the results, which are on disk already.
"""

from __future__ import annotations

import abc
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from efbench.analysis.collect import flatten
from efbench.errors import ConfigError, EfbenchError
from efbench.run.results import FINISHED, SUMMARY, TRACE, identity

log = logging.getLogger("efbench")
TRACE_MODES = ("metrics", "artifact", "both", "none")


@dataclass
class RunRecord:
    """What a tracker logs for one run directory."""

    run_dir: Path
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    trace: pd.DataFrame | None
    files: list[Path] = field(default_factory=list)


def _param(value: Any) -> str:
    """A config leaf as a tracker parameter: what a YAML/override would spell."""
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_record(run_dir: Path) -> RunRecord:
    """The parameters, metrics, tags, trace and files of the result in ``run_dir``."""
    summary = json.loads((run_dir / SUMMARY).read_text())
    params = {k: _param(v) for k, v in flatten(summary.get("config", {})).items()}
    params.update({f"choices.{k}": str(v) for k, v in (summary.get("choices") or {}).items()})
    metrics = {k: float(v) for k, v in summary.items() if _number(v)}
    metrics.update({f"final_{k}": float(v) for k, v in (summary.get("final") or {}).items() if _number(v)})
    metrics.update(
        {f"const_{k}": float(v) for k, v in (summary.get("constants") or {}).items() if _number(v)}
    )
    provenance = summary.get("provenance") or {}
    tags = {
        "efbench.status": summary.get("status"),
        "efbench.config_hash": summary.get("config_hash"),
        "efbench.run_dir": str(run_dir.resolve()),
        "efbench.engine.loop": summary.get("engine"),
        "efbench.stepsize_formula": summary.get("stepsize_formula"),
        "efbench.version": provenance.get("efbench"),
        "efbench.git_commit": provenance.get("git_commit"),
    }
    trace_path = run_dir / TRACE
    trace = pd.read_parquet(trace_path) if trace_path.is_file() else None
    return RunRecord(
        run_dir=run_dir,
        name=run_dir.name,
        status=str(summary.get("status")),
        params=params,
        metrics=metrics,
        tags={k: str(v) for k, v in tags.items() if v is not None},
        trace=trace,
        files=[p for p in (trace_path, run_dir / SUMMARY) if p.is_file()],
    )


def trace_rows(trace: pd.DataFrame) -> list[tuple[int, dict[str, float]]]:
    """The trace as (step, {metric: value}) pairs, one per logged step."""
    columns = [c for c in trace.columns if c != "step" and pd.api.types.is_numeric_dtype(trace[c])]
    return [
        (int(row["step"]), {c: float(row[c]) for c in columns})
        for row in trace[["step", *columns]].to_dict("records")
    ]


def job_run_dirs(config: DictConfig) -> list[Path]:
    """The run directories a Hydra job writes: its output directory, its ``seed=<s>/``
    subdirectories (``seeds=[...]``), or the directories of a batched group's runs."""
    from efbench.config.identity import BATCH_KEY, batch_configs

    hc = config.hydra
    if config.get(BATCH_KEY):
        return [Path(d) for d in batch_configs(config, hc)[1]]
    out = Path(hc.runtime.output_dir)
    if config.get("seeds"):
        return [out / f"seed={s}" for s in config.seeds]
    return [out]


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Environment variables set for the duration of the block, then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _require(module: str, extra: str, key: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EfbenchError(f"{key}: {module} is not installed (pip install 'efbench[{extra}]')") from None


def _check_trace(key: str, trace: str) -> str:
    if trace not in TRACE_MODES:
        raise ConfigError(f"{key}.trace", f"unknown value {trace!r}", TRACE_MODES)
    return trace


class RunTracker(Callback, abc.ABC):
    """Logs every run whose summary the job wrote, through :meth:`log_run`."""

    key = "hydra.callbacks"

    def __init__(self, trace: str = "both") -> None:
        self.trace = _check_trace(self.key, trace)
        self._before: dict[Path, tuple[int, int, int] | None] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._before = {d: identity(d) for d in job_run_dirs(config)}

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        for run_dir in job_run_dirs(config):
            now = identity(run_dir)
            if now is None or now == self._before.get(run_dir):
                continue
            try:
                self.log_run(run_record(run_dir))
            except Exception as exc:  # the results are on disk: a tracker's failure must not lose a sweep
                log.warning("%s: run %s not logged: %s", self.key, run_dir, _first_line(exc))

    @abc.abstractmethod
    def log_run(self, record: RunRecord) -> None:
        """Send ``record`` to the tracker."""


class MLflowCallback(RunTracker):
    """One MLflow run per efbench run, in ``experiment`` at ``tracking_uri`` (None: MLflow's
    own default, ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``). The MLflow run ends
    FINISHED for completed and diverged runs (the tag ``efbench.status`` tells which), else
    FAILED."""

    key = "hydra.callbacks.mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "efbench",
        trace: str = "both",
        tags: dict[str, str] | None = None,
    ) -> None:
        super().__init__(trace)
        _require("mlflow", "mlflow", self.key)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare()

    def _prepare(self) -> None:
        """In the launching process, before any job: reach the store and create the
        experiment, so that parallel jobs do not race to create a fresh sqlite store (its
        schema migrations), and a store that cannot be reached stops the launch at once
        (one line, exit code 2) instead of failing run after run."""
        import mlflow

        uri = self.tracking_uri or mlflow.get_tracking_uri()
        try:
            with _environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="20"):
                self._experiment_id(mlflow.MlflowClient(self.tracking_uri))
        except Exception as exc:
            reason = _first_line(exc)
            sys.stderr.write(f"efbench: error: {self.key}: cannot reach the store {uri}: {reason}\n")
            sys.exit(2)

    def _experiment_id(self, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(self.experiment)
        except MlflowException:  # a parallel job created it first
            return client.get_experiment_by_name(self.experiment).experiment_id

    def log_run(self, record: RunRecord) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        client = MlflowClient(self.tracking_uri)
        run = client.create_run(
            self._experiment_id(client), run_name=record.name, tags={**record.tags, **self.tags}
        )
        run_id = run.info.run_id
        stamp = run.info.start_time
        metrics = [Metric(k, v, stamp, 0) for k, v in record.metrics.items()]
        if record.trace is not None and self.trace in ("metrics", "both"):
            metrics += [
                Metric(k, v, stamp, step) for step, row in trace_rows(record.trace) for k, v in row.items()
            ]
        params = [Param(k, v) for k, v in record.params.items()]
        client.log_batch(run_id, metrics=metrics, params=params)
        if self.trace in ("artifact", "both"):
            for path in record.files:
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, status="FINISHED" if record.status in FINISHED else "FAILED")


class WandbCallback(RunTracker):
    """One Weights & Biases run per efbench run, in ``project`` (``entity``; ``group``,
    e.g. a sweep's name). ``mode``: None (wandb's own: ``WANDB_MODE``, else online),
    ``online``, ``offline`` (``wandb sync`` later) or ``disabled``. The final metrics and
    constants go to the run's summary, the trace to its history by step."""

    key = "hydra.callbacks.wandb"

    def __init__(
        self,
        project: str = "efbench",
        entity: str | None = None,
        group: str | None = None,
        mode: str | None = None,
        trace: str = "both",
        tags: list[str] | None = None,
    ) -> None:
        super().__init__(trace)
        _require("wandb", "wandb", self.key)
        self.project, self.entity, self.group, self.mode = project, entity, group, mode
        self.tags = [str(t) for t in tags or []]

    def log_run(self, record: RunRecord) -> None:
        import wandb

        choices = [record.params.get(f"choices.{g}") for g in ("method", "compressor", "dataset")]
        run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group,
            mode=self.mode,
            name=record.name,
            config=record.params,
            tags=[record.status, *filter(None, choices), *self.tags],
            notes=record.tags.get("efbench.run_dir"),
            settings=wandb.Settings(console="off", silent=True),
        )
        try:
            if record.trace is not None and self.trace in ("metrics", "both"):
                for step, row in trace_rows(record.trace):
                    run.log(row, step=step)
            run.summary.update(record.metrics)
            run.summary.update(record.tags)
            if self.trace in ("artifact", "both"):
                art = wandb.Artifact(
                    f"run-{record.tags.get('efbench.config_hash', record.name)}", type="efbench-run"
                )
                for path in record.files:
                    art.add_file(str(path))
                run.log_artifact(art)
        finally:
            run.finish(exit_code=0 if record.status in FINISHED else 1)
