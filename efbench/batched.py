"""Several seeds of one configuration in one process, with a leading seed axis.

The model becomes x (S, 1, d) and every per-worker array (S, n, d), so one numpy call
advances all S runs. Each seed keeps its own ``numpy.random.Generator`` and draws exactly
what a separate run with that seed would draw, in the same order (:class:`SeedGenerators`),
so every seed's trace is identical to the separate run's, and it is written the same way:
``<out_dir>/seed=<s>/`` with the config hash of the separate run (``seed=s``), which makes
separate and batched runs resume each other. A seed that diverges stops being recorded;
the others go on. Supported: gd, sgd, cgd and the error-compensated family (ec_gd, ec_sgd*,
ec_lsvrg) with deterministic compressors, on the engine a separate run would use (the fused
numba step loops over the seed axis inside its kernel).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from efbench.errors import ConfigError
from efbench.methods import CompressedGD, ErrorCompensated, MemSGD, Round, State, Uncompressed
from efbench.runner import (
    Tracer,
    config_hash,
    final_summary,
    finished_before,
    keep_large_allocations_on_heap,
    new_summary,
    prepare,
    write_results,
)

BATCHABLE = (Uncompressed, CompressedGD, ErrorCompensated)


class SeedGenerators:
    """One Generator per seed behind the Generator calls the methods make: ``random(size)``
    returns shape (S, *size), row s drawn from seed s's generator."""

    def __init__(self, seeds: list[int]):
        self.gens = [np.random.default_rng(s) for s in seeds]

    def random(self, size: Any = None) -> np.ndarray:
        return np.stack([g.random(size) for g in self.gens])


def _seed_view(state: State, s: int) -> State:
    return State(x=state.x[s, 0], e=None if state.e is None else state.e[s])


def _seed_round(rnd: Round, s: int) -> Round:
    calls = rnd.calls[s] if np.ndim(rnd.calls) == 2 else rnd.calls
    return Round(rnd.bits_up[s], rnd.bits_down, rnd.nnz[s], calls)


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The separate run's config for one seed of a batch."""
    c = cfg.copy()
    with_flag = OmegaConf.is_struct(c)
    OmegaConf.set_struct(c, False)
    c.seed = seed
    c.seeds = None
    OmegaConf.set_struct(c, with_flag)
    return c


def run_batched(cfg: DictConfig, seeds: list[int], out_dir: str | Path,
                choices: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run ``cfg`` for every seed in ``seeds`` at once; results in ``out_dir/seed=<s>``."""
    out_dir = Path(out_dir)
    keep_large_allocations_on_heap()
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"must be a list of distinct seeds, got {seeds}")
    cfgs = {s: seed_config(cfg, s) for s in seeds}
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for s in seeds:
        prev = finished_before(out_dir / f"seed={s}", config_hash(cfgs[s]))
        if prev:
            results[s] = prev
        else:
            todo.append(s)
    if not todo:
        return [results[s] for s in seeds]
    prep = prepare(cfgs[todo[0]])
    method, setup, schedule = prep.method, prep.setup, prep.schedule
    if type(method) not in BATCHABLE or isinstance(method, MemSGD) or method.compressor.randomized:
        raise ConfigError("seeds", f"batched seeds support gd, sgd, cgd and the ec_* methods with a "
                          f"deterministic compressor, not {method.name} + {type(method.compressor).__name__}",
                          "run the seeds separately (seed=0,1,2 in a multirun)")
    p = setup.problem
    S = len(todo)
    rng = SeedGenerators(todo)
    state = method.init(p, np.broadcast_to(prep.x0, (S, 1, p.d)).copy(), rng)
    tracers = [Tracer(setup, prep.x0) for _ in todo]
    max_it, max_bits, max_ep = prep.limits
    factor = float(cfg.diverge_factor)
    status = ["completed"] * S
    active = list(range(S))
    steps = [0] * S
    t_start = time.perf_counter()
    step_time = 0.0
    for s in active:
        tracers[s].record(0, _seed_view(state, s), schedule(0), 0.0)
    k = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while active and k < max_it:
            # a seed stops where its separate run would: before a step, once over budget
            active = [s for s in active if tracers[s].bits.mean() < max_bits and tracers[s].epochs < max_ep]
            if not active:
                break
            t0 = time.perf_counter()
            gamma = schedule(k)
            state, rnd = method.step(p, state, gamma, rng)
            k += 1
            step_time += time.perf_counter() - t0
            for s in active:
                tracers[s].add(_seed_round(rnd, s))
                steps[s] = k
            if k % prep.log_every == 0:
                for s in list(active):
                    row = tracers[s].record(k, _seed_view(state, s), gamma, time.perf_counter() - t_start)
                    if tracers[s].diverged(row, factor):
                        status[s] = "diverged"
                        active.remove(s)
    wall = time.perf_counter() - t_start
    for i, s in enumerate(todo):
        tr = tracers[i]
        if tr.rows[-1]["step"] != steps[i]:
            row = tr.record(steps[i], _seed_view(state, i), schedule(max(steps[i] - 1, 0)), wall)
            if status[i] == "completed" and tr.diverged(row, factor):
                status[i] = "diverged"
        summary = new_summary(cfgs[s], config_hash(cfgs[s]), choices)
        summary.update(batched_seeds=todo, engine=method.engine_used, constants=setup.constants,
                       gamma0=schedule.gamma0, stepsize_formula=schedule.formula)
        # the batch's step time is shared: per seed, the run costs step_time / S
        final_summary(summary, status[i], steps[i], wall, step_time / S if step_time else math.nan,
                      tr.rows[-1])
        write_results(out_dir / f"seed={s}", pd.DataFrame(tr.rows), summary)
        results[s] = summary
    return [results[s] for s in seeds]
