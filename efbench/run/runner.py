"""Runs from configs: build the problem once, the runs of a batch, execute, write results.

Results in the run directory, each written atomically (temporary file + rename):
``trace.parquet`` (SPEC.md section 5 metrics at step 0, every ``log_every`` steps or at
log-spaced steps, and the last step) and ``summary.json`` (status, final metrics, constants, stepsize, timing,
resolved config and its hash). A run whose summary says completed or diverged for the
same config hash is skipped when launched again, which makes sweeps resumable.
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from efbench.config import schema
from efbench.config.build import build_method
from efbench.config.identity import BATCHABLE, config_hash, group_key
from efbench.core.estimation import EstimatorSpec
from efbench.core.network import Profile, measured_c_grad, simulated_time
from efbench.core.stepsize import make_schedule
from efbench.engine import fused, signals
from efbench.engine.loop import Limits, Outcome, RunSpec, divergence, execute
from efbench.errors import ConfigError, EfbenchError, check_choice, check_positive
from efbench.methods.samplers import BUILTIN as BUILTIN_SAMPLINGS
from efbench.methods.samplers import sampling_of
from efbench.problems.datasets import data_dir, load_dataset, partition
from efbench.problems.logistic import LogisticProblem, QuadraticProblem, load_spectra, optimum
from efbench.problems.nonconvex import NonconvexLogisticProblem, optimum_without_mu
from efbench.problems.sources import SOURCES
from efbench.run import results
from efbench.run.provenance import provenance

log = logging.getLogger("efbench")

_NAMED_CACHES: set[str] = set()  # the data caches this process has named in its log
_SAID: set[str] = set()  # what this process has said once
X0_CHOICES = ("zero", "shift")
L2_MODES = ("relative", "absolute")
REGULARIZERS = ("l2", "nonconvex")


@dataclass
class Setup:
    problem: LogisticProblem
    constants: dict[str, float]
    xstar: np.ndarray
    fstar: float


@functools.cache
def keep_large_allocations_on_heap() -> bool:
    """Raise glibc's mmap threshold so the (n, d) temporaries of each step reuse heap memory.

    By default glibc serves blocks over ~128 KiB to a few MiB with fresh mmap pages and
    unmaps them on free, so every step of a gisette-sized run pays page faults for each
    temporary: this alone halves the iteration rate there. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 64 << 20))


# the problems this process has built, by the config that defines them (a sweep's jobs in
# one process, e.g. a joblib worker, share them); the newest few are kept
_SETUPS: dict[str, Setup] = {}
SETUPS_KEPT = 2


def build_setup(cfg: DictConfig) -> Setup:
    """Load and split the data, fix l2, compute the constants and (cached) x*, f*; once per
    process for the same data and problem settings. Logs each one-off cost as it is paid."""
    key = json.dumps(
        OmegaConf.to_container(
            OmegaConf.create({"dataset": cfg.dataset, "data": cfg.data, "problem": cfg.problem}), resolve=True
        ),
        sort_keys=True,
        default=str,
    )
    if key in _SETUPS:
        log.info("problem: the one built earlier in this process")
        return _SETUPS[key]
    setup = _build_setup(cfg)
    while len(_SETUPS) >= SETUPS_KEPT:
        _SETUPS.pop(next(iter(_SETUPS)))
    _SETUPS[key] = setup
    return setup


def _build_setup(cfg: DictConfig) -> Setup:
    if fused.COMPILING and not _SAID:  # once, by this process's first setup
        _SAID.add("compiling")
        log.info(
            "first run since efbench was installed or changed: numba compiles its kernels as they "
            "are first used (up to half a minute, once; later runs load them from its cache)"
        )
    check_choice("dataset.source", cfg.dataset.source, SOURCES)
    if SOURCES[cfg.dataset.source].problem == "quadratic":  # the counterexample's, fixed
        problem = QuadraticProblem.counterexample()
        constants = problem.constants()
        constants["f_star"] = 0.0
        return Setup(problem, constants, np.zeros(problem.d), 0.0)
    cache_dir = data_dir(cfg)
    # constants and x* are kept by the data's fingerprint, whatever the source: a rerun, a
    # sweep's next job or another seed's process reads them instead of solving again
    if str(cache_dir.absolute()) not in _NAMED_CACHES:
        _NAMED_CACHES.add(str(cache_dir.absolute()))
        log.info("data cache: %s", cache_dir.absolute())
    t0 = time.perf_counter()
    X, y = load_dataset(cfg)
    n, m = int(cfg.dataset.n_workers), int(cfg.dataset.m)
    A, Y = partition(X, y, n, m, cfg.data.split, int(cfg.data.seed), float(cfg.data.alpha))
    schema.check_loaded(cfg, A)  # degenerate data (L = 0), and a file's d against the keys bounded by it
    regularizer = cfg.problem.regularizer
    check_choice("problem.regularizer", regularizer, REGULARIZERS)
    if regularizer == "nonconvex":
        lam = check_positive("problem.lam_nc", cfg.problem.lam_nc)
        problem = NonconvexLogisticProblem(A, Y, 0.0, lam=lam)
    else:
        problem = LogisticProblem(A, Y, 0.0)
    t1 = time.perf_counter()
    log.info(
        "data: %s, %d workers x %d rows x %d features, %s, in %.2f s",
        cfg.dataset.name,
        n,
        m,
        problem.d,
        "sparse" if problem.csr is not None else "dense",
        t1 - t0,
    )
    cache = cache_dir / "cache"
    load_spectra(problem, cache)
    if regularizer == "nonconvex":  # no x*, no f*: gap, rel_gap and dist2 are NaN, grad_norm2 is the metric
        constants = {**problem.constants(), "f_star": math.nan}
        log.info(
            "problem: logistic loss + lam_nc sum_j x_j^2/(1 + x_j^2), lam_nc=%g (problem.l2 unused): "
            "nonconvex, no mu, x* and f* unknown (gap, rel_gap, dist2 are NaN; see grad_norm2)",
            problem.lam,
        )
        return Setup(problem, constants, np.full(problem.d, math.nan), math.nan)
    mode = cfg.problem.l2_mode
    check_choice("problem.l2_mode", mode, L2_MODES)
    l2 = check_positive("problem.l2", cfg.problem.l2, allow_zero=True)
    problem.l2 = l2 * problem.data_smoothness if mode == "relative" else l2
    # l2 = 0: convex, mu = 0 (kappa = inf), and x* may not exist (efbench.problems.nonconvex)
    constants = problem.constants()
    t2 = time.perf_counter()
    if problem.l2 > 0:
        xstar, fstar = optimum(problem, cache)
    else:
        xstar, fstar, what = optimum_without_mu(problem, cache)
        log.info("x*: %s", what)
    constants["f_star"] = fstar
    log.info(
        "constants in %.2f s, x* in %.2f s%s",
        t2 - t1,
        time.perf_counter() - t2,
        " (cached on disk)",
    )
    return Setup(problem, constants, xstar, fstar)


def initial_point(cfg: DictConfig, setup: Setup) -> np.ndarray:
    check_choice("x0", cfg.x0, X0_CHOICES)
    if cfg.x0 == "zero":
        return np.zeros(setup.problem.d)
    if not np.all(np.isfinite(setup.xstar)):
        raise ConfigError("x0", "shift starts from x* + x0_shift, and this problem has no x*", ("zero",))
    return setup.xstar + float(cfg.dataset.x0_shift)


def prepare_run(cfg: DictConfig, setup: Setup) -> RunSpec:
    """Build one run's method, schedule and start (its settings are validated: schema)."""
    p = setup.problem
    method = build_method(cfg, p.d, p.n)
    constants = setup.constants
    est = method.estimator_spec
    if est.stochastic and est.sampling not in BUILTIN_SAMPLINGS:
        constants = {**constants, "L_S": sampling_of(est.sampling).smoothness(p)}
    schedule = method.schedule(
        make_schedule(
            OmegaConf.to_container(cfg.stepsize, resolve=True),
            constants,
            method.estimator,
            lambda base: method.theory(constants, base),
        ),
        constants,
    )
    net = Profile.from_config(cfg.network) if "network" in cfg else Profile()
    return RunSpec(method, schedule, initial_point(cfg, setup), int(cfg.seed), net)


def limits_of(cfg: DictConfig) -> Limits:
    iters, bits, epochs = (math.inf if v is None else v for v in (cfg.budget.get(k) for k in schema.BUDGETS))
    return Limits(
        iters,
        bits,
        epochs,
        cfg.log_every,
        float(cfg.diverge_factor),
        float(cfg.log_per_decade),
        float(cfg.diverge_level),
    )


def result_bytes(lim: Limits) -> int:
    """More disk than a run's result takes (summary, and a trace of 64 float columns at every
    log point; parquet compresses), reserved before it computes (:func:`results.reserve`)."""
    steps = lim.iters if math.isfinite(lim.iters) else 1e8  # a bits or epochs budget: unknown
    rows = steps / lim.log_every if lim.log_every else lim.log_per_decade * math.log10(steps + 1) + 10
    return (64 << 10) + int(min(rows + 2, 1e6)) * 64 * 8


def diverged_by_now(out_dir: Path, cfg: DictConfig) -> bool:
    """Whether the divergence rule of this version (:func:`efbench.engine.loop.divergence`) finds
    the completed run in ``out_dir`` diverged: results written before its sustained test
    existed keep their config hash (NEUTRAL) and are judged again, from their trace."""
    try:
        trace = pd.read_parquet(out_dir / results.TRACE, columns=["step", "f"])
    except Exception:  # unreadable: verified() has said so already
        return False
    step, f = trace["step"].to_numpy(), trace["f"].to_numpy(float)
    return len(f) > 0 and divergence(step, f, float(f[0]), limits_of(cfg), final=True)[0] is not None


def finished_before(out_dir: Path, chash: str, cfg: DictConfig) -> dict[str, Any] | None:
    """The summary of a finished run of the same config in ``out_dir``, if any (a completed
    one that the current divergence rule finds diverged is run again)."""
    prev = results.read_summary(out_dir)
    if prev and prev.get("status") in results.FINISHED and prev.get("config_hash") == chash:
        if prev["status"] == "completed" and diverged_by_now(out_dir, cfg):
            log.info("rerunning %s: completed, but diverged by the current rule (diverge_level)", out_dir)
            return None
        if results.verified(out_dir, prev):
            log.info("skipping %s: already %s (config %s)", out_dir, prev["status"], chash)
            # this launch found the result whole: an earlier launch's failure or stopped attempt
            # (of another config, never resumed from) is no longer what the folder last saw
            for name in (results.ERROR, results.ATTEMPT, results.ATTEMPT_TRACE):
                (out_dir / name).unlink(missing_ok=True)
            prev["skipped"] = True
            return prev
        log.info("rerunning %s: its trace is missing, unreadable or not the summary's", out_dir)
    return None


def new_summary(cfg: DictConfig, chash: str, choices: dict[str, str] | None) -> dict[str, Any]:
    """The summary of a run that has not finished yet: its resolved config and hash. The
    ``sampling`` choice is the sampling the method uses (ec_sgd_us / ec_sgd_is fix their
    own; full-gradient methods sample nothing), not the group's unused default."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an invalid config (schema.validate says why): as written
        config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra", None)
    choices = dict(choices or {})
    if "sampling" in choices:
        block = config.get("method", {}).get("estimator", {})
        try:
            est = EstimatorSpec.of(block)
        except (AttributeError, TypeError):  # an invalid block (schema.validate says why)
            est = EstimatorSpec()
        choices["sampling"] = est.sampling if est.stochastic else "none"
    return {
        "status": "running",
        "config_hash": chash,
        "choices": choices,
        "config": config,
        "provenance": provenance(),
    }


def final_summary(summary: dict[str, Any], out: Outcome) -> dict[str, Any]:
    row = out.last()
    summary.update(
        trace_rows=len(out),
        status=out.status,
        steps=out.steps,
        engine=out.engine,
        wall_time=out.wall,
        step_time=out.step_time,
        log_time=out.log_time,
        iters_per_sec=out.steps / out.step_time if out.step_time > 0 else math.nan,
        wall_iters_per_sec=out.steps / out.wall if out.wall > 0 else math.nan,
        final={
            key: row[key]
            for key in (
                "f",
                "gap",
                "rel_gap",
                "grad_norm2",
                "dist2",
                "bits_up_mean",
                "bits_down",
                "nnz_mean",
                "epochs",
            )
        },
    )
    return summary


def run_batch(
    cfgs: list[DictConfig],
    out_dirs: list[str | Path],
    choices: list[dict[str, str] | None] | None = None,
    progress_label: str = "",
) -> list[dict[str, Any]]:
    """Execute the runs ``cfgs`` (equal but for BATCHABLE keys) in one batch, each writing its
    results into its own directory; skip those already finished with the same config.

    A run whose own settings are invalid is recorded with ``status=error`` and the others
    go on; the first such error is raised once the batch is written. ``progress_label``
    starts the progress bar's label (a sweep's ``[job N]``)."""
    keep_large_allocations_on_heap()
    dirs = [Path(d) for d in out_dirs]
    choices = choices or [None] * len(cfgs)
    summaries: list[dict[str, Any] | None] = [None] * len(cfgs)
    todo, locks = [], []
    invalid: dict[int, ConfigError] = {}
    unwritable: list[results.WriteError] = []
    try:
        for i, cfg in enumerate(cfgs):
            chash = config_hash(cfg)
            try:
                fd = results.lock(dirs[i])
            except results.WriteError as exc:  # this run's folder alone: the others go on
                log.error("run %s: %s", dirs[i], exc)
                summaries[i] = {"status": "error", "config_hash": chash, "error": str(exc)}
                unwritable.append(exc)
                continue
            if fd is None:
                log.warning("skipping %s: another launch is computing it", dirs[i])
                summaries[i] = {"status": "running", "config_hash": chash, "skipped": True}
                continue
            locks.append(fd)
            try:  # every key's type and range first, before anything is built or printed
                schema.validate(cfg, choices[i])
            except ConfigError as exc:
                invalid[i] = exc
            summaries[i] = None if i in invalid else finished_before(dirs[i], chash, cfg)
            if summaries[i] is None:
                summaries[i] = new_summary(cfg, chash, choices[i])
                todo.append(i)
        if todo:
            _run_claimed(cfgs, dirs, summaries, todo, invalid, progress_label)
    finally:
        for fd in locks:
            os.close(fd)
    if unwritable:
        raise unwritable[0]
    return summaries


@dataclass
class _Claimed:
    """The runs of a batch whose directories this process holds, and what has failed."""

    cfgs: list[DictConfig]
    dirs: list[Path]
    summaries: list[dict[str, Any]]
    todo: list[int]
    errors: list[Exception] = field(default_factory=list)

    def fail(self, i: int, exc: Exception, say: bool = False) -> None:
        """Run ``i`` failed with ``exc``: recorded in its summary and its folder's error.json
        (``say``: logged too, where the batch has other runs; a single run's error is
        reported once, by the caller)."""
        if say and len(self.todo) > 1:
            log.error("run %s: %s", self.dirs[i], exc)
        self.summaries[i].update(status="error", error=str(exc))
        self.errors.append(exc)
        if isinstance(exc, results.WriteError):
            return
        try:
            results.record_error(self.dirs[i], self.summaries[i])
        except results.WriteError as write_exc:
            log.error("run %s: %s", self.dirs[i], write_exc)

    def keep_unfailed(self) -> None:
        """Drop the failed runs from ``todo``; none left: raise the first error."""
        self.todo = [i for i in self.todo if self.summaries[i]["status"] != "error"]
        if not self.todo:
            raise self.errors[0]


def _run_claimed(
    cfgs: list[DictConfig],
    dirs: list[Path],
    summaries: list[dict[str, Any]],
    todo: list[int],
    invalid: dict[int, ConfigError],
    progress_label: str = "",
) -> None:
    """The body of :func:`run_batch` for the runs ``todo``, whose directories it holds:
    validated, reserved, built, executed, committed."""
    batch = _Claimed(cfgs, dirs, summaries, todo)
    for i, exc in invalid.items():
        batch.fail(i, exc, say=True)
    batch.keep_unfailed()
    try:
        base, lim = cfgs[batch.todo[0]], limits_of(cfgs[batch.todo[0]])
        if len({group_key(cfgs[i]) for i in batch.todo}) > 1:
            raise ConfigError("batch", "the runs of a batch may differ only in " + ", ".join(BATCHABLE))
        for i in batch.todo:  # a folder that cannot hold its result fails only its own run, now
            try:
                results.reserve(dirs[i], result_bytes(lim))
            except results.WriteError as exc:
                batch.fail(i, exc, say=True)
        batch.keep_unfailed()
        setup = build_setup(base)
    except Exception as exc:
        for i in batch.todo:
            batch.fail(i, exc)
        raise
    _log_problem(setup.constants)
    specs, ready = [], []
    for i in batch.todo:
        try:
            specs.append(prepare_run(cfgs[i], setup))
            ready.append(i)
        except EfbenchError as exc:
            batch.fail(i, exc, say=True)
            continue
        spec = specs[-1]
        log.info(
            "run %s: method=%s compressor=%s seed=%d gamma0=%.6g (%s)",
            dirs[i],
            spec.method.name,
            type(spec.method.compressor).__name__,
            spec.seed,
            spec.schedule.gamma0,
            spec.schedule.formula,
        )
    if ready:
        _execute_and_commit(batch, setup, specs, ready, lim, base, progress_label)
    if batch.errors:
        raise batch.errors[0]


def _log_problem(c: dict[str, float]) -> None:
    log.info(
        "problem: n=%d m=%d d=%d  l2=%.3e  L=%.6g  mu=%.3e  L_US=%.6g  L_IS=%.6g  max L_i=%.6g  f*=%.12g",
        c["n"],
        c["m"],
        c["d"],
        c["l2"],
        c["L"],
        c["mu"],
        c["L_US"],
        c["L_IS"],
        c["L_i_max"],
        c["f_star"],
    )


def _execute_and_commit(
    batch: _Claimed,
    setup: Setup,
    specs: list[RunSpec],
    ready: list[int],
    lim: Limits,
    base: DictConfig,
    progress_label: str,
) -> None:
    """Step the prepared runs together, then write each one's result; a signal received
    meanwhile waits until every result is written, then stops the process."""
    try:
        outs = execute(
            setup.problem,
            setup.fstar,
            setup.xstar,
            specs,
            lim,
            str(base.engine),
            bool(base.progress) and sys.stderr.isatty(),  # a bar is noise in a log file or pipe
            f"{progress_label} {specs[0].method.name}".strip(),
        )
    except EfbenchError as exc:
        for i in ready:
            batch.fail(i, exc)
        raise
    log.info("engine: %s, %d run(s)", outs[0].engine, len(outs))
    with signals.deferred() as pending:  # a signal now waits until every result is written
        for i, spec, out in zip(ready, specs, outs, strict=True):
            summ = batch.summaries[i]
            _describe(summ, spec, out, setup, len(outs))
            final_summary(summ, out)
            _log_outcome(summ, out)
            buf = io.BytesIO()
            pd.DataFrame(out.columns).to_parquet(buf, index=False)
            try:
                path = results.commit(batch.dirs[i], buf.getvalue(), summ)
                if path.name == results.ATTEMPT:
                    log.warning(
                        "run %s: the finished result there is kept; this %s run's steps are in %s",
                        batch.dirs[i],
                        summ["status"],
                        path.name,
                    )
            except results.WriteError as exc:  # this run's folder alone: the others are still written
                log.error("run %s: %s", batch.dirs[i], exc)
                batch.fail(i, exc)
    stop = outs[0].stopped_by or pending()
    if stop is not None:
        stopped = [d for d, o in zip(ready, outs, strict=True) if o.status == "interrupted"]
        where = batch.dirs[stopped[0]] if len(stopped) == 1 else f"{len(stopped)} run directories"
        raise signals.Interrupted(stop, f"the steps taken so far are written as interrupted in {where}")


def _describe(summ: dict[str, Any], spec: RunSpec, out: Outcome, setup: Setup, batch_size: int) -> None:
    """What a run's summary says beyond its trace: constants, stepsize, the compressor's
    constant, and simulated time re-timed by the run's own measured gradient cost."""
    summ.update(
        constants={**setup.constants, **out.info},
        gamma0=spec.schedule.gamma0,
        stepsize_formula=spec.schedule.formula,
        batch_size=batch_size,
        n_workers=setup.problem.n,
        collective=spec.network.collective_of(spec.method.collective),
    )
    comp, d = spec.method.compressor, setup.problem.d
    if not spec.method.compressed:  # also a run through the Python API, for its label
        summ["choices"]["compressor"] = "dense"  # the group's setting was not used
    if comp.kind in ("unbiased", "identity"):  # E||C(x) - x||^2 <= omega ||x||^2
        summ["compressor_omega"] = float(comp.omega(d))
    if comp.kind in ("contractive", "identity"):  # E||C(x) - x||^2 <= (1 - delta) ||x||^2
        summ["compressor_delta"] = float(comp.contraction(d))
    if comp.kind == "absolute":  # ||C(x) - x||^2 <= Delta^2
        summ["compressor_Delta"] = float(comp.Delta(d))
    if spec.network.c_grad == "measured":  # the run's own seconds per call, every round
        n = setup.problem.n
        measured = measured_c_grad(out.step_time, out.last()["epochs"] * setup.problem.m, n)
        summ["c_grad_measured"] = measured
        prof = replace(spec.network, c_grad=measured)
        out.columns["time_sim"] = simulated_time(prof, summ["collective"], n, out.columns)


def _log_outcome(summ: dict[str, Any], out: Outcome) -> None:
    row = out.last()
    log.info(
        "%s after %d steps: f-f*=%.3e  rel=%.3e  ||grad||^2=%.3e  bits/worker=%.4g  "
        "(%.0f it/s stepping, %.0f it/s wall)",
        out.status,
        out.steps,
        row["gap"],
        row["rel_gap"],
        row["grad_norm2"],
        row["bits_up_mean"],
        summ["iters_per_sec"],
        summ["wall_iters_per_sec"],
    )


def run(cfg: DictConfig, out_dir: str | Path, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Execute the run described by ``cfg`` (a batch of one) and write its results into ``out_dir``."""
    return run_batch([cfg], [out_dir], [choices])[0]


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of one seed of ``seeds=[...]``: ``seed=<s>``, no ``seeds``."""
    c = cfg.copy()
    with_flag = OmegaConf.is_struct(c)
    OmegaConf.set_struct(c, False)
    c.seed = seed
    c.seeds = None
    OmegaConf.set_struct(c, with_flag)
    return c


def run_seeds(
    cfg: DictConfig,
    seeds: object,
    out_dir: str | Path,
    choices: dict[str, str] | None = None,
    progress_label: str = "",
) -> list[dict[str, Any]]:
    """``seeds=[...]``: those seeds in one batch, results in ``out_dir/seed=<s>``."""
    schema.check_seeds(seeds)
    out = Path(out_dir)
    return run_batch(
        [seed_config(cfg, s) for s in seeds],
        [out / f"seed={s}" for s in seeds],
        [choices] * len(seeds),
        progress_label,
    )
