"""One run: build the problem from a config, iterate a method, log metrics, write results.

Results in the run directory, each written atomically (temporary file + rename):
``trace.parquet`` (SPEC.md section 5 metrics every ``log_every`` steps, step 0 and the
last step) and ``summary.json`` (status, final metrics, constants, stepsize, timing,
resolved config and its hash). A run whose summary says completed or diverged for the
same config hash is skipped when launched again, which makes sweeps resumable.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from efbench.compressors import Compressor
from efbench.datasets import atomic_write_bytes, load_dataset, partition
from efbench.errors import ConfigError, check_choice, check_positive
from efbench.methods import Method, State
from efbench.problems import LogisticProblem, QuadraticProblem, load_spectra, optimum
from efbench.stepsize import Schedule, make_schedule

log = logging.getLogger("efbench")

FINISHED = ("completed", "diverged")
# Keys that do not change a run's result: excluded from the config hash used to resume.
VOLATILE_KEYS = ("progress", "data.dir", "data.mirror", "seeds")
X0_CHOICES = ("zero", "shift")
SOURCES = ("libsvm", "sklearn", "synthetic", "counterexample")
L2_MODES = ("relative", "absolute")


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


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config (without Hydra's own node and volatile keys)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c.pop("hydra", None)
    for key in VOLATILE_KEYS:
        head, _, tail = key.partition(".")
        node = c.get(head) if tail else c
        if isinstance(node, dict):
            node.pop(tail or head, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_setup(cfg: DictConfig) -> Setup:
    """Load and split the data, fix l2, compute the constants and (cached) x*, f*."""
    check_choice("dataset.source", cfg.dataset.source, SOURCES)
    if cfg.dataset.source == "counterexample":
        problem = QuadraticProblem.counterexample()
        constants = problem.constants()
        constants["f_star"] = 0.0
        return Setup(problem, constants, np.zeros(problem.d), 0.0)
    X, y = load_dataset(cfg)
    n, m = int(cfg.dataset.n_workers), int(cfg.dataset.m)
    A, Y = partition(X, y, n, m, cfg.data.split, int(cfg.data.seed), float(cfg.data.alpha))
    problem = LogisticProblem(A, Y, 0.0)
    cache = Path(cfg.data.dir or "data") / "cache" if cfg.dataset.source == "libsvm" else None
    load_spectra(problem, cache)
    mode = cfg.problem.l2_mode
    check_choice("problem.l2_mode", mode, L2_MODES)
    l2 = check_positive("problem.l2", cfg.problem.l2, allow_zero=False)
    problem.l2 = l2 * problem.data_smoothness if mode == "relative" else l2
    constants = problem.constants()
    xstar, fstar = optimum(problem, cache)
    constants["f_star"] = fstar
    return Setup(problem, constants, xstar, fstar)


def initial_point(cfg: DictConfig, setup: Setup) -> np.ndarray:
    check_choice("x0", cfg.x0, X0_CHOICES)
    if cfg.x0 == "zero":
        return np.zeros(setup.problem.d)
    return setup.xstar + float(cfg.dataset.x0_shift)


def build_method(cfg: DictConfig, d: int) -> Method:
    comp: Compressor = instantiate(cfg.compressor, float_bits=cfg.bits.float_bits,
                                   index_bits=cfg.bits.index_bits)
    comp.validate(d)
    # partial, then call: a dataclass passed through instantiate would become a DictConfig
    return instantiate(cfg.method, _convert_="all", _partial_=True)(compressor=comp)


class Tracer:
    """Accumulates per-round counters and evaluates the metrics at log points."""

    def __init__(self, setup: Setup, x0: np.ndarray):
        self.s = setup
        self.n = setup.problem.n
        self.f0 = setup.problem.loss(x0)
        self.bits = np.zeros(self.n, dtype=np.int64)
        self.bits_down = 0
        self.nnz = np.zeros(self.n, dtype=np.int64)
        self.calls = 0.0
        self.skipped = 0
        self.rounds = 0
        self.rows: list[dict[str, float]] = []

    def add(self, rnd) -> None:
        self.skipped += rnd.skipped
        self.rounds += 1
        self.bits += rnd.bits_up
        self.bits_down += rnd.bits_down
        self.nnz += rnd.nnz
        self.calls += rnd.calls if np.isscalar(rnd.calls) else float(rnd.calls.mean())

    @property
    def epochs(self) -> float:
        return self.calls / self.s.problem.m

    def record(self, k: int, state: State, gamma: float, elapsed: float) -> dict[str, float]:
        p, x = self.s.problem, state.x
        f, g = p.loss_grad(x) if np.all(np.isfinite(x)) else (math.inf, np.full(p.d, np.inf))
        gap = f - self.s.fstar
        row = {
            "step": k,
            "epochs": self.epochs,
            "f": f,
            "gap": gap,
            "rel_gap": gap / (self.f0 - self.s.fstar),
            "grad_norm2": float(g @ g),
            "dist2": float(np.sum((x - self.s.xstar) ** 2)),
            "bits_up_mean": float(self.bits.mean()),
            "bits_up_max": float(self.bits.max()),
            "bits_down": float(self.bits_down),
            "nnz_mean": float(self.nnz.mean() / k) if k else 0.0,
            "err2": float(np.mean(np.sum(state.e**2, axis=1))) if state.e is not None else math.nan,
            "skipped_frac": self.skipped / (self.rounds * self.n) if self.rounds else 0.0,
            "consensus": math.nan,
            "gap_avg": math.nan,
            "gamma": gamma,
            "time": elapsed,
        }
        X = state.extra.get("X")
        if X is not None:  # decentralized: (1/n) sum_i ||x_i - xbar||^2
            row["consensus"] = float(np.mean(np.sum((X - x) ** 2, axis=1)))
        x_avg = state.extra.get("x_avg")
        if x_avg is not None:  # Mem-SGD's weighted average of the iterates
            row["gap_avg"] = p.loss(x_avg) - self.s.fstar
        self.rows.append(row)
        return row

    def diverged(self, row: dict[str, float], factor: float) -> bool:
        f = row["f"]
        return not math.isfinite(f) or f > factor * self.f0


def check_budget(cfg: DictConfig) -> tuple[float, float, float]:
    b = cfg.budget
    lims = []
    for key in ("iters", "bits", "epochs"):
        v = b.get(key)
        lims.append(math.inf if v is None else check_positive(f"budget.{key}", v))
    if all(math.isinf(v) for v in lims):
        raise ConfigError("budget", "set at least one of budget.iters, budget.bits, budget.epochs")
    return lims[0], lims[1], lims[2]


def write_results(out_dir: Path, trace: pd.DataFrame | None, summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if trace is not None:
        buf = io.BytesIO()
        trace.to_parquet(buf, index=False)
        atomic_write_bytes(out_dir / "trace.parquet", buf.getvalue())
    payload = json.dumps(summary, indent=2, default=_json_default, allow_nan=True)
    atomic_write_bytes(out_dir / "summary.json", payload.encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Prepared:
    setup: Setup
    method: Method
    schedule: Schedule
    x0: np.ndarray
    limits: tuple[float, float, float]  # iterations, bits per worker, epochs
    log_every: int


def prepare(cfg: DictConfig) -> Prepared:
    """Validate the run settings and build everything a run needs; print the constants."""
    limits = check_budget(cfg)
    log_every = int(cfg.log_every)
    if log_every < 1:
        raise ConfigError("log_every", f"must be an integer >= 1, got {cfg.log_every}")
    check_positive("seed", cfg.seed, allow_zero=True)
    setup = build_setup(cfg)
    p = setup.problem
    method = build_method(cfg, p.d)
    schedule = method.schedule(
        make_schedule(OmegaConf.to_container(cfg.stepsize, resolve=True), setup.constants,
                      method.estimator, method.theory_factor(p.n, p.d)),
        setup.constants)
    x0 = initial_point(cfg, setup)
    c = setup.constants
    log.info("problem: n=%d m=%d d=%d  l2=%.3e  L=%.6g  mu=%.3e  L_US=%.6g  L_IS=%.6g  "
             "max L_i=%.6g  f*=%.12g", c["n"], c["m"], c["d"], c["l2"], c["L"], c["mu"],
             c["L_US"], c["L_IS"], c["L_i_max"], c["f_star"])
    log.info("method=%s compressor=%s stepsize gamma0=%.6g (%s)", method.name,
             type(method.compressor).__name__, schedule.gamma0, schedule.formula)
    return Prepared(setup, method, schedule, x0, limits, log_every)


def finished_before(out_dir: Path, chash: str) -> dict[str, Any] | None:
    """The summary of a completed or diverged run of the same config in ``out_dir``, if any."""
    prev = read_summary(out_dir)
    if prev and prev.get("status") in FINISHED and prev.get("config_hash") == chash:
        if (out_dir / "trace.parquet").is_file():
            log.info("skipping %s: already %s (config %s)", out_dir, prev["status"], chash)
            prev["skipped"] = True
            return prev
    return None


def new_summary(cfg: DictConfig, chash: str, choices: dict[str, str] | None) -> dict[str, Any]:
    """The summary of a run that has not finished yet: its resolved config and hash."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return {"status": "running", "config_hash": chash, "choices": choices or {}, "config": config}


def final_summary(summary: dict[str, Any], status: str, steps: int, wall: float, step_time: float,
                  row: dict[str, float]) -> dict[str, Any]:
    summary.update(
        status=status, steps=steps, wall_time=wall, step_time=step_time,
        iters_per_sec=steps / step_time if step_time > 0 else math.nan,
        final={key: row[key] for key in ("f", "gap", "rel_gap", "grad_norm2", "dist2",
                                         "bits_up_mean", "bits_down", "nnz_mean", "epochs")},
    )
    log.info("%s after %d steps: f-f*=%.3e  rel=%.3e  bits/worker=%.4g  (%.0f it/s)", status, steps,
             row["gap"], row["rel_gap"], row["bits_up_mean"], summary["iters_per_sec"])
    return summary


def run(cfg: DictConfig, out_dir: str | Path, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Execute the run described by ``cfg`` and write its results into ``out_dir``."""
    out_dir = Path(out_dir)
    keep_large_allocations_on_heap()
    chash = config_hash(cfg)
    prev = finished_before(out_dir, chash)
    if prev:
        return prev
    summary = new_summary(cfg, chash, choices)
    try:
        prep = prepare(cfg)
    except Exception as exc:
        summary.update(status="error", error=str(exc))
        write_results(out_dir, None, summary)
        raise
    setup, method, schedule, x0 = prep.setup, prep.method, prep.schedule, prep.x0
    p, c = setup.problem, setup.constants
    (max_it, max_bits, max_ep), log_every = prep.limits, prep.log_every
    summary.update(constants=c, gamma0=schedule.gamma0, stepsize_formula=schedule.formula)

    rng = np.random.default_rng(int(cfg.seed))
    state = method.init(p, x0, rng)
    summary["engine"] = method.engine_used
    log.info("engine: %s", method.engine_used)
    info = method.info()
    if info:
        log.info("method constants: %s", "  ".join(f"{k}={v:.6g}" for k, v in info.items()))
        c.update(info)
    tracer = Tracer(setup, x0)
    factor = float(cfg.diverge_factor)
    status = "completed"
    t_start = time.perf_counter()
    step_time = 0.0
    row = tracer.record(0, state, schedule(0), 0.0)
    k = 0
    bar = tqdm(total=None if math.isinf(max_it) else int(max_it), disable=not cfg.progress,
               mininterval=0.5, delay=1.0, desc=f"{method.name}", unit="it", leave=False)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            check_bits, check_epochs = math.isfinite(max_bits), math.isfinite(max_ep)
            while k < max_it:
                if (check_bits and tracer.bits.mean() >= max_bits) or (
                        check_epochs and tracer.epochs >= max_ep):
                    break
                t0 = time.perf_counter()
                gamma = schedule(k)
                state, rnd = method.step(p, state, gamma, rng)
                tracer.add(rnd)
                k += 1
                step_time += time.perf_counter() - t0
                if k % log_every == 0:
                    row = tracer.record(k, state, gamma, time.perf_counter() - t_start)
                    bar.update(log_every)
                    if tracer.diverged(row, factor):
                        status = "diverged"
                        break
            if tracer.rows[-1]["step"] != k:
                row = tracer.record(k, state, schedule(max(k - 1, 0)), time.perf_counter() - t_start)
                if status == "completed" and tracer.diverged(row, factor):
                    status = "diverged"
    except KeyboardInterrupt:
        status = "interrupted"
        row = tracer.record(k, state, schedule(max(k - 1, 0)), time.perf_counter() - t_start)
    finally:
        bar.close()
    final_summary(summary, status, k, time.perf_counter() - t_start, step_time, row)
    write_results(out_dir, pd.DataFrame(tracer.rows), summary)
    if status == "interrupted":
        raise KeyboardInterrupt
    return summary
