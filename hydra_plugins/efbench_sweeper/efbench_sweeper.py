"""The ``efbench`` sweeper (efbench's default): Hydra's basic sweeper, whose jobs are first
grouped so that the jobs of a sweep that differ only in batchable keys (seed, stepsize,
compressor parameters, ... : :data:`efbench.config.identity.BATCHABLE`) become one job running them
as one batch (:func:`efbench.run.runner.run_batch`).

The grouped job carries its runs' own overrides in ``efbench_batch`` (a JSON list); it runs
each in ``<sweep dir>/<that run's override_dirname>``, the directory the run would have had
alone, so resume and collection see no difference; the group's own Hydra folder (its log
and ``.hydra``) is ``<sweep dir>/.batches/<n>``. Any launcher runs the grouped jobs (basic;
joblib: groups spread over processes; cluster launchers: a group per cluster job).
``hydra.sweeper.batch=false`` launches every job on its own; ``hydra.sweeper.max_runs``
caps the runs of one group. A ``tune`` block (``+tune=stepsize``, :mod:`efbench.analysis.tuning`) adds
the sweep ``<tune.key>=<tune.grid>`` (a sweep of that key given in the config or on the
command line wins) and runs every job also on ``tune.select_seeds``. A sweep ends with a
one-line tally of its runs by status (``not written``: a run that left no file, as on a full
disk) and the folder that holds them, and exits non-zero when any run ended in error, was
interrupted or was not written.
"""

import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

from efbench.config.identity import BATCH_KEY, batchable

log = logging.getLogger(__name__)


@dataclass
class EfbenchSweeperConf:
    _target_: str = "hydra_plugins.efbench_sweeper.efbench_sweeper.EfbenchSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    batch: bool = True
    max_runs: int = 256


ConfigStore.instance().store(
    group="hydra/sweeper", name="efbench", node=EfbenchSweeperConf, provider="efbench"
)


def quoted(text: str) -> str:
    """``text`` as a single-quoted Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def group_jobs(jobs: List[List[str]], max_runs: int) -> List[List[str]]:
    """Jobs with equal non-batchable overrides become one job with ``+efbench_batch``."""
    groups: Dict[tuple, List[List[str]]] = {}
    for job in jobs:
        fixed = tuple(line for line in job if not batchable(line))
        groups.setdefault(fixed, []).append([line for line in job if batchable(line)])
    out = []
    for fixed, runs in groups.items():
        for lo in range(0, len(runs), max_runs):
            chunk = runs[lo : lo + max_runs]
            if len(chunk) == 1:
                out.append([*fixed, *chunk[0]])
            else:
                batch = f"+{BATCH_KEY}={quoted(json.dumps(chunk))}"
                out.append([*fixed, batch, f"hydra.sweep.subdir=.batches/{len(out)}"])
    return out


def with_seeds(jobs: List[List[str]], seeds: tuple, default: int) -> List[List[str]]:
    """The jobs, also on each of ``seeds`` they do not already run (a job without a ``seed=``
    override runs ``default``)."""
    have = {line[5:] for job in jobs for line in job if line.startswith("seed=")}
    if not have:
        jobs = [[*job, f"seed={default}"] for job in jobs]
        have = {str(default)}
    first = sorted(have)[0]
    extra = [str(s) for s in seeds if str(s) not in have]
    out = list(jobs)
    for job in jobs:
        if f"seed={first}" in job:
            out += [[f"seed={s}" if line == f"seed={first}" else line for line in job] for s in extra]
    return out


NOT_WRITTEN = "not written"  # a run the sweep launched that left no file (a full disk, ...)


def planned_runs(jobs: List[List[str]], config: Any) -> List[Path]:
    """The run folders of the sweep's ``jobs`` (lists of overrides, as split_arguments gives
    them): a grouped job's runs, a ``seeds=[...]`` job's ``seed=<s>`` folders."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from efbench.config.identity import override_dirname

    hc, parser = config.hydra, OverridesParser.create()
    root = Path(hc.sweep.dir).absolute()
    out = []
    for job in jobs:
        lines = [line for line in job if not line.startswith("hydra.")]  # not in a folder's name
        batch = [line for line in lines if line.lstrip("+").startswith(BATCH_KEY + "=")]
        common = [line for line in lines if line not in batch]
        runs = json.loads(parser.parse_override(batch[0]).value()) if batch else [[]]
        seeds = config.get("seeds")
        for line in common:
            if line.startswith("seeds="):
                seeds = parser.parse_override(line).value()
        for own in runs:
            d = root / override_dirname([*common, *own], hc)
            out += (
                [d / f"seed={s}" for s in seeds]
                if isinstance(seeds, (list, tuple)) or OmegaConf.is_list(seeds)
                else [d]
            )
    return out


def tally_runs(sweep_dir: Path, launched: Iterable[Path] = ()) -> Dict[str, int]:
    """Runs below ``sweep_dir``, and the runs ``launched``, by what their latest launch left
    (:func:`efbench.run.results.status_of`; NOT_WRITTEN for a launched run that left no file)."""
    from efbench.run.results import ATTEMPT, ERROR, SUMMARY, status_of

    dirs = {p.parent for name in (SUMMARY, ERROR, ATTEMPT) for p in sweep_dir.rglob(name)}
    written = [status_of(d) for d in dirs]
    missing = [NOT_WRITTEN for d in set(launched) if d not in dirs]
    return dict(Counter(written + missing))


class EfbenchSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: Optional[int],
        params: Optional[Dict[str, str]] = None,
        batch: bool = True,
        max_runs: int = 256,
    ) -> None:
        super().__init__(max_batch_size, params)
        self.batch = batch
        self.max_runs = max_runs

    def _refuse(self, key: str, message: str) -> None:
        """A bad sweeper or launcher setting: one line, exit 2, before any job is written."""
        print(f"efbench: error: {key}: {message}", file=sys.stderr)
        sys.exit(2)

    def sweep(self, arguments: List[str]) -> Any:
        from efbench.engine.signals import (
            SWEEP_PID,
            SWEEP_SID,
            interrupted_by,
            start_watchdog,
            stop_children_then_raise,
        )

        if self.max_runs < 1:
            self._refuse("hydra.sweeper.max_runs", f"at least 1, got {self.max_runs}")
        jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if jobs is not None and (not isinstance(jobs, int) or jobs == 0 or jobs < -1):
            self._refuse(
                "hydra.launcher.n_jobs", f"a number of processes >= 1 (or -1: all cores), got {jobs!r}"
            )
        if self.config.get("seeds") is not None and any(a.startswith("seed=") for a in arguments):
            self._refuse(
                "seeds", "a seed sweep beside seeds=[...] computes every seed twice: give one of them"
            )
        stop_children_then_raise()
        saved = {k: os.environ.get(k) for k in (SWEEP_PID, SWEEP_SID)}
        os.environ[SWEEP_PID] = str(os.getpid())  # workers started from here watch it
        os.environ[SWEEP_SID] = str(os.getsid(0))  # ... if they run in its session (not a cluster's)
        if "BasicLauncher" not in str(self.config.hydra.launcher.get("_target_")):  # jobs in processes
            start_watchdog()
        stop, unwritable = None, None
        try:
            returns = super().sweep(arguments)
        except OSError as exc:  # a job's Hydra record or log in a full or read-only folder
            if exc.errno is None:
                raise
            unwritable = exc
        except BaseException as exc:  # joblib may wrap the interrupt
            stop = interrupted_by(exc)
            if stop is None:
                raise
        finally:
            for k, v in saved.items():  # later processes of this one are no sweep's workers
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        root = Path(self.config.hydra.sweep.dir)
        try:
            launched = planned_runs([job for chunk in self.overrides for job in chunk], self.config)
        except Exception:  # a job list that cannot be read back: its runs are found on disk or not at all
            launched = []
        tally = tally_runs(root.absolute(), launched)
        text = ", ".join(f"{status} {n}" for status, n in sorted(tally.items()))
        failed = sum(tally.get(k, 0) for k in ("error", "interrupted", "unreadable", NOT_WRITTEN))
        (log.error if failed else log.info)(
            "sweep: %d runs in %s: %s", sum(tally.values()), self.config.hydra.sweep.dir, text or "none"
        )
        log.info("results in %s", root.absolute())
        if stop is not None:
            log.error("sweep: %s", stop)
            sys.exit(stop.exit_code)
        if unwritable is not None:
            where = unwritable.filename or self.config.hydra.sweep.dir
            log.error("sweep: stopped: cannot write %s: %s", where, unwritable.strerror)
            sys.exit(2)
        if failed:
            sys.exit(1)
        return returns

    def _tune(self) -> Any:
        from efbench.config.tune import TuneSpec
        from efbench.errors import ConfigError

        block = self.config.get("tune") if self.config is not None else None
        try:
            return TuneSpec.from_config(OmegaConf.to_container(block, resolve=True)) if block else None
        except ConfigError as exc:  # before any job: one line, nothing written
            print(f"efbench: error: {exc}", file=sys.stderr)
            sys.exit(2)

    def _parse_config(self) -> List[str]:
        params = super()._parse_config()
        spec = self._tune()
        # first: a sweep of the key in the config's params or on the command line comes later and wins
        return [f"{spec.key}={spec.sweep_value()}", *params] if spec else params

    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> Any:
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        if not jobs:  # e.g. a glob that matched nothing: no job, as the basic sweeper
            return [jobs]
        spec = self._tune()
        if spec is not None and spec.select_seeds:
            jobs = with_seeds(jobs, spec.select_seeds, int(self.config.seed))
        if self.batch:
            jobs = group_jobs(jobs, self.max_runs)
        return [list(c) for c in BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size)]
