"""Tests generated from the registries (issue 22, point 4): the option files of
``efbench/conf/<group>/*.yaml`` and the classes their ``_target_`` names, never a list of
options written here, so a new method, compressor, dataset or estimator is covered as soon
as its option file (or its entry in efbench's own table) exists; what is accepted is what
efbench's own validation accepts.

1. every method x compressor option x engine: refused by :func:`efbench.config.schema.validate`
   naming what was varied, or three steps on tiny data, finite iterates, ``completed``;
   a method no compressor is accepted with on default settings fails;
2. the exact bits of one hand-checkable message of every compressor option, at every
   ``bits.float_bits`` and ``bits.index_bits``, against the rule stated here for its class;
3. resume: every method launched again into its folder reuses the summary, computing nothing;
4. a negative number and a string for every numeric key of every method and compressor
   class: refused naming that key, or the run completes;
5. every dataset option builds its problem (shrunk through its keys) with finite constants,
   or is reported unavailable offline;
6. every estimator kind, with every sampling option, of an EC method: the mean of its
   gradients at a point is the full local gradient, within a tolerance from their variance.

Configs are composed by Hydra once per method; a compressor option is put in the place of
the composed one as Hydra would (its file's keys: compressor options have no defaults
list, :func:`test_a_compressor_put_in_place_is_the_composed_one` checks it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import find_mirror
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from efbench.config import schema
from efbench.config.build import build_method
from efbench.config.legacy import current
from efbench.core.compressors import Compressor
from efbench.errors import ConfigError
from efbench.methods.estimators import ESTIMATORS
from efbench.problems.datasets import on_disk
from efbench.run import runner

CONF = files("efbench.conf")
# tiny synthetic data: 4 workers x 10 rows x d = 8 features, three steps logged at each
TINY = (
    "dataset=synthetic",
    "dataset.n_workers=4",
    "dataset.m=10",
    "dataset.synthetic.rows=40",
    "dataset.synthetic.features=8",
    "budget.iters=3",
    "log_every=1",
)
STEPS = 3
# the experiments' table that the *_paper compressor options read (paper.<dataset>.<key>)
PAPER_EXPERIMENT = ("experiment", "paper_reference")
# engine=auto is one of the others, chosen per run (efbench.engine.loop.choose_engine)
ENGINES = tuple(e for e in schema.TOP["engine"].choices if e != "auto")
# the trace columns a finite three-step run has finite at every log point
FINITE = ("f", "gap", "grad_norm2", "dist2", "bits_up_mean", "bits_up_max", "bits_down", "epochs")


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """BLAS on one thread, as the file is meant to run (one core): on a busy machine a second
    BLAS thread spin-waits, and the 300 x 300 Newton solves of w8a's x* take 10 times longer."""
    with threadpool_limits(1):
        yield


def options(group: str) -> list[str]:
    """The options of a config group: its YAML files."""
    return sorted(p.name[: -len(".yaml")] for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml"))


@functools.cache
def _option_file(group: str, option: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF.joinpath(group, f"{option}.yaml")))


def option_file(group: str, option: str) -> dict:
    """An option file's own keys (unresolved), a copy of its own."""
    return copy.deepcopy(_option_file(group, option))


def composed(*overrides: str) -> tuple[dict, dict[str, str]]:
    """The config as efbench's command composes it (as ``test_cli.cfg_of``, with Hydra's group
    choices, which the command hands to :func:`runner.run`), unresolved, without Hydra's node."""
    with initialize_config_module("efbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["progress=false", *overrides], return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    c = OmegaConf.to_container(cfg)
    del c["hydra"]
    return c, choices


@functools.cache
def paper_table() -> dict:
    return option_file(*PAPER_EXPERIMENT)["paper"]


@functools.cache
def method_base(method: str) -> tuple[DictConfig, dict[str, str]]:
    """The tiny config of a method, composed once (the paper table row of its data beside it)
    and resolved: its values are those a run reads, and each case's config resolves only the
    interpolations of the compressor option put in it (the rest is most of a run's time)."""
    c, choices = composed(*TINY, f"method={method}")
    name = c["dataset"]["name"]
    c["paper"] = {name: paper_table()[name]}
    return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(c), resolve=True)), choices


@contextlib.contextmanager
def config_of(
    method: str, compressor: str, engine: str = "numpy", sets: dict | None = None
) -> Iterator[tuple[DictConfig, dict[str, str]]]:
    """(cfg, choices) of a method with a compressor option and an engine, and ``sets`` (dotted
    keys of the method or compressor): the method's config changed in place, and restored
    after (a copy per case would cost more than validating it)."""
    cfg, choices = method_base(method)
    touched = {"compressor", "engine", *(key.split(".")[0] for key in sets or {})}
    kept = {g: OmegaConf.to_container(cfg[g]) if g != "engine" else cfg[g] for g in touched}
    try:
        cfg.compressor = option_file("compressor", compressor)
        cfg.engine = engine
        for key, value in (sets or {}).items():
            OmegaConf.update(cfg, key, value, merge=False)
        yield cfg, {**choices, "compressor": compressor}
    finally:
        for key, value in kept.items():
            cfg[key] = value


@functools.cache
def refusal(method: str, compressor: str, engine: str = "numpy") -> ConfigError | None:
    """efbench's verdict on the combination: None (accepted) or its ConfigError."""
    with config_of(method, compressor, engine) as (cfg, choices):
        try:
            schema.validate(cfg, choices)
        except ConfigError as exc:
            return exc
    return None


def accepted(method: str) -> list[str]:
    return [c for c in options("compressor") if refusal(method, c) is None]


def first_accepted(method: str) -> str:
    comps = accepted(method)
    if not comps:
        pytest.fail(f"method {method} is refused with every compressor option on default settings")
    return comps[0]


def target_class(node: dict) -> type:
    return get_class(current(node["_target_"]))


def check_finished(summary: dict, out: Path, engine: str) -> None:
    """Completed, all its steps on ``engine``, every log point finite (f, and ||x - x*||^2:
    finite iterates)."""
    assert summary["status"] == "completed", summary.get("error", summary["status"])
    assert summary["steps"] == STEPS and summary["engine"] == engine
    trace = pd.read_parquet(out / "trace.parquet")
    assert trace["step"].tolist() == list(range(STEPS + 1))
    values = trace[list(FINITE)].to_numpy(float)
    assert np.all(np.isfinite(values)), trace[list(FINITE)]


# ---------------------------------------------------------------- 1. methods x compressors x engines


def test_a_compressor_put_in_place_is_the_composed_one():
    """The harness's shortcut: a compressor option has no defaults list, so what Hydra
    composes for ``compressor=<option>`` is its file's keys (checked against Hydra on one)."""
    assert not any("defaults" in option_file("compressor", c) for c in options("compressor"))
    method, comp = options("method")[0], options("compressor")[-1]
    c, choices = composed(*TINY, f"method={method}", f"compressor={comp}")
    with config_of(method, comp) as (cfg, mine):
        assert OmegaConf.to_container(cfg)["compressor"] == c["compressor"] and mine == choices


@pytest.mark.parametrize("method", options("method"))
def test_every_method_takes_some_compressor(method):
    """A method that every compressor option is refused with, on default settings, is a
    method no one can run: it fails here, with every refusal."""
    if not accepted(method):
        said = "\n".join(f"  {c}: {refusal(method, c)}" for c in options("compressor"))
        pytest.fail(f"method {method} is refused with every compressor option:\n{said}")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("compressor", options("compressor"))
@pytest.mark.parametrize("method", options("method"))
def test_method_compressor_engine(method, compressor, engine, tmp_path):
    """Refused naming the compressor or the engine (the keys varied here; a refusal naming
    anything else is the method refused on default settings), or three steps completed with
    finite iterates on that engine."""
    exc = refusal(method, compressor, engine)
    if exc is not None:
        assert exc.key.split(".")[0] in ("compressor", "engine"), str(exc)
        assert len(str(exc).splitlines()) == 1
        return
    with config_of(method, compressor, engine) as (cfg, choices):
        summary = runner.run(cfg, tmp_path, choices)
    check_finished(summary, tmp_path, engine)


# ---------------------------------------------------------------- 2. exact bits


def ceil_log2(v: int) -> int:
    return math.ceil(math.log2(v)) if v > 1 else 0


def sparse(kept: int, d: int, value_bits: int, F: int, index_bits: bool) -> int:
    """A sparse message of ``kept`` values: the cheaper of an index list kept (V + I) and a
    bitmap plus values d + kept V (V the value width), values only without index bits."""
    if not index_bits:
        return kept * value_bits
    return min(kept * (value_bits + ceil_log2(d)), d + kept * value_bits)


def topk_kept(comp, x: list[float]) -> int:
    mags = sorted((abs(v) for v in x), reverse=True)
    if comp.ties == "index":
        return comp.k
    return sum(1 for v in x if v != 0 and abs(v) >= mags[comp.k - 1])


def rounding_bits(comp, x, F, ib) -> int:
    q = [round(v / comp.delta) for v in x]
    top = max(abs(v) for v in q)
    return sparse(sum(v != 0 for v in q), len(x), ceil_log2(2 * top + 1), F, ib)


def lowrank_bits(comp, x, F, ib) -> int:
    a = math.ceil(math.sqrt(len(x)))
    return F * (a + math.ceil(len(x) / a)) * comp.rank


def compose_bits(comp, x, F, ib) -> int:
    inner = comp.quantizer()
    positions = min(comp.k * ceil_log2(len(x)), len(x)) if ib else 0
    return positions + bit_rule(inner)(inner, [0.0] * comp.k, F, ib)


EXPONENT = {16: 5, 32: 8, 64: 11}  # IEEE 754 exponent widths: natural sends a sign and an exponent
# The README's rule (section Bits) for each compressor class: bits of C(x), x of length d,
# float width F, index bits on or off.
RULES = {
    "Identity": lambda c, x, F, ib: F * len(x),
    "TopK": lambda c, x, F, ib: sparse(topk_kept(c, x), len(x), F, F, ib),
    "RandK": lambda c, x, F, ib: sparse(c.k, len(x), F, F, ib),
    "HardThreshold": lambda c, x, F, ib: sparse(sum(abs(v) >= c.lam for v in x), len(x), F, F, ib),
    "Sign": lambda c, x, F, ib: F + len(x),
    "StochasticSign": lambda c, x, F, ib: F + len(x),
    "Natural": lambda c, x, F, ib: (1 + EXPONENT[F]) * len(x),
    "QSGD": lambda c, x, F, ib: F + len(x) * (1 + ceil_log2(c.s + 1)),
    "NaturalDithering": lambda c, x, F, ib: F + len(x) * (1 + ceil_log2(c.s + 1)),
    "Ternary": lambda c, x, F, ib: F + 2 * len(x),
    "Rounding": rounding_bits,
    "LowRank": lowrank_bits,
    "Compose": compose_bits,
}
# d = 8 (I = 3), two magnitudes tied at the top (TopK's tie rules differ), two zeros
X = [0.5, -3.0, 0.0, 1.25, -0.03, 3.0, 0.0, 0.75]


def bit_rule(comp: Compressor):
    name = type(comp).__name__
    if name not in RULES:
        pytest.fail(f"no bit rule for compressor class {name}: state its rule in RULES (README, Bits)")
    return RULES[name]


def compressor_of(option: str, F: int, index_bits: bool) -> Compressor:
    """The compressor option's class with its file's keys (the paper options read the paper
    table for the tiny data), as :func:`efbench.config.build.build_method` builds it."""
    c = OmegaConf.to_container(
        OmegaConf.create(
            {"dataset": {"name": "synthetic"}, "paper": paper_table(), "c": option_file("compressor", option)}
        ),
        resolve=True,
    )["c"]
    cls = target_class(c)
    del c["_target_"]
    return cls(**c, float_bits=F, index_bits=index_bits)


@pytest.mark.parametrize("index_bits", [True, False])
@pytest.mark.parametrize("F", schema.TOP["bits.float_bits"].choices)
@pytest.mark.parametrize("option", options("compressor"))
def test_bits_of_one_message(option, F, index_bits):
    """E.g. TopK, K = 1, F = 32: one value and its index, 32 + 3 = 35 bits (a bitmap would
    cost 8 + 32); hard threshold keeping 6 of 8: bitmap and values, 8 + 6 F."""
    comp = compressor_of(option, F, index_bits)
    comp.validate(len(X))
    msg = comp(np.array([X]), np.random.default_rng(0))
    assert msg.bits.tolist() == [bit_rule(comp)(comp, X, F, index_bits)]


# ---------------------------------------------------------------- 3. resume


@pytest.mark.parametrize("method", options("method"))
def test_a_finished_run_launched_again_is_not_computed_again(method, tmp_path, monkeypatch):
    """The second launch finds the summary of the same config: it reads it back and leaves
    the folder as it was, without building the problem or stepping."""
    comp = first_accepted(method)
    with config_of(method, comp) as (cfg, choices):
        first = runner.run(cfg, tmp_path, choices)
    check_finished(first, tmp_path, "numpy")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def computed(*args, **kwargs):
        raise AssertionError("a finished run was computed again")

    monkeypatch.setattr(runner, "execute", computed)
    monkeypatch.setattr(runner, "build_setup", computed)
    with config_of(method, comp) as (cfg, choices):
        again = runner.run(cfg, tmp_path, choices)
    assert again.get("skipped") and again["config_hash"] == first["config_hash"]
    assert again["final"] == first["final"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------- 4. bad values


def numeric_fields(cls: type, skip: tuple[str, ...]) -> list[str]:
    """The class's dataclass fields annotated int or float (or either or None)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next((a for a in typing.get_args(hint) if a is not type(None)), None)
        if f.name not in skip and hint in (int, float):
            out.append(f.name)
    return out


BAD = (-1, "abc")  # a negative number, a string


def option_file_resolved(group: str, option: str) -> dict:
    """An option's keys with those of the options its defaults list names (a method preset)."""
    own = option_file(group, option)
    node: dict = {}
    for entry in own.pop("defaults", []):
        if entry != "_self_":
            node.update(option_file_resolved(group, entry))
    return {**node, **own}


def bad_cases() -> list:
    """(method, compressor, key, value): each method with the first compressor it takes, each
    compressor option with the first method that compresses and takes it."""
    out = []
    for m in options("method"):
        cls = target_class(option_file_resolved("method", m))
        for key in numeric_fields(cls, ("compressor", "participation")):
            out += [pytest.param(m, None, f"method.{key}", v, id=f"{m}-method.{key}={v}") for v in BAD]
    for c in options("compressor"):
        cls = target_class(option_file("compressor", c))
        for key in numeric_fields(cls, ("float_bits", "index_bits")):
            out += [
                pytest.param(None, c, f"compressor.{key}", v, id=f"{c}-compressor.{key}={v}") for v in BAD
            ]
    return out


def base_of(method: str | None, compressor: str | None) -> tuple[str, str]:
    if compressor is None:
        return method, first_accepted(method)
    for m in options("method"):
        if target_class(option_file_resolved("method", m)).compressed and refusal(m, compressor) is None:
            return m, compressor
    pytest.fail(f"compressor {compressor} is taken by no method that compresses")


@pytest.mark.parametrize(("method", "compressor", "key", "value"), bad_cases())
def test_a_bad_number_is_refused_naming_its_key_or_runs(method, compressor, key, value, tmp_path):
    """Refused by the schema naming the key, or (a key that takes it) the run completes:
    never a refusal naming another key, one that comes only once the run has started, or a
    traceback."""
    method, compressor = base_of(method, compressor)
    with config_of(method, compressor, sets={key: value}) as (cfg, choices):
        try:
            schema.validate(cfg, choices)
        except ConfigError as exc:
            assert exc.key == key, str(exc)
            return
        summary = runner.run(cfg, tmp_path, choices)
    check_finished(summary, tmp_path, "numpy")


# ---------------------------------------------------------------- 5. datasets

# a preset shrunk through its keys, where it is larger: n_workers x m rows (a preset of fewer
# rows, as the counterexample's 3 x 1, is left whole), the rows and features it generates
# and, for a sparse generator, enough nonzeros a row for the features kept
TINY_SPLIT = {"n_workers": 2, "m": 10}
TINY_SYNTHETIC = {"rows": 20, "features": 20}
TINY_DENSITY = 0.2


def shrunk(option: str) -> list[str]:
    node = option_file("dataset", option)
    out = []
    if node["n_workers"] * node["m"] > math.prod(TINY_SPLIT.values()):
        out += [f"dataset.{k}={v}" for k, v in TINY_SPLIT.items()]
    syn = node.get("synthetic") or {}  # rows null: n_workers x m, shrunk above
    out += [f"dataset.synthetic.{k}={v}" for k, v in TINY_SYNTHETIC.items() if (syn.get(k) or 0) > v]
    if "density" in syn:
        out.append(f"dataset.synthetic.density={max(syn['density'], TINY_DENSITY)}")
    return out


@pytest.mark.parametrize("option", options("dataset"))
def test_every_dataset_builds_its_problem(option, data_cache):
    """Its problem and constants (x*, f* included) finite; a LIBSVM file not in the mirror
    (${EFBENCH_DATA_MIRROR}) is reported unavailable: these machines have no network."""
    mirror = find_mirror()
    where = [f"data.mirror={mirror}"] if mirror else []
    c, choices = composed(f"dataset={option}", *shrunk(option), f"data.dir={data_cache}", *where)
    cfg = OmegaConf.create(c)
    if not on_disk(cfg):
        pytest.skip(f"{option}: the LIBSVM file {cfg.dataset.libsvm_name} is not in the mirror ({mirror})")
    schema.validate(cfg, choices)
    setup = runner.build_setup(cfg)
    p = setup.problem
    assert (p.n, p.m) == (cfg.dataset.n_workers, cfg.dataset.m)
    constants = {k: v for k, v in setup.constants.items() if isinstance(v, (int, float))}
    assert all(math.isfinite(v) for v in constants.values()), constants
    assert constants["L"] > 0 and constants["mu"] > 0
    assert math.isfinite(setup.fstar) and np.all(np.isfinite(setup.xstar))


# ---------------------------------------------------------------- 6. estimators

EC_METHOD = "ec_sgd"  # the EC method whose estimator block is varied
DRAWS = 4000


@pytest.mark.parametrize("sampling", options("sampling"))
@pytest.mark.parametrize("kind", ESTIMATORS)
def test_an_estimator_is_unbiased(kind, sampling):
    """The mean of DRAWS gradients at a point x (away from the L-SVRG reference point) is
    grad f_i(x) for every worker i: each coordinate within 5 standard errors (from the
    draws' variance; a deterministic estimator, zero variance: to rounding)."""
    overrides = (f"method.estimator.kind={kind}", f"sampling={sampling}")
    c, _ = composed(*TINY, f"method={EC_METHOD}", f"compressor={first_accepted(EC_METHOD)}", *overrides)
    cfg = OmegaConf.create(c)
    setup = runner.build_setup(cfg)
    p = setup.problem
    method = build_method(cfg, p.d, p.n)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(p.d)
    state = method.init(p, x0, rng)
    x = x0 + rng.standard_normal(p.d)
    want = p.worker_grads(x)
    # each draw from the state at init (L-SVRG's reference point x0 kept, not refreshed)
    draws = np.array([state.estimator(p, copy.deepcopy(state.est), x, rng)[0] for _ in range(DRAWS)])
    mean = draws.mean(axis=0)
    se = draws.std(axis=0) / math.sqrt(DRAWS)
    err = np.abs(mean - want)
    assert np.all(err <= 5 * se + 1e-12 * np.abs(want).max()), np.max(err / np.maximum(se, 1e-300))
