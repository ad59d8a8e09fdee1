"""Every config key's type and range, and the rules between keys, checked in one place
before a run builds anything (:func:`validate`). A key not described here is refused, and
so is a key the run needs that is missing, a group of keys replaced by a value, and a
key the chosen data or method would not use.

The keys of the ``method`` and ``compressor`` groups are the fields of the class their
``_target_`` names (a dataclass), each with the rule declared on it
(:func:`efbench.core.rules.ruled`; a bool or str field may go by its annotation), so a new
method or compressor brings its keys and their rules with it. Ranges that depend on the
data's shape (K <= d, ...) are checked against the shape the config and the LIBSVM table
give before any data are read; a LIBSVM file not in the table has them checked once it is
read, and the data themselves are checked before anything is computed from them
(:func:`check_loaded`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any

import numpy as np
import scipy.sparse as sp
from omegaconf import DictConfig, OmegaConf

from efbench.config.identity import BATCH_KEY
from efbench.config.legacy import current
from efbench.core.estimation import KINDS as ESTIMATOR_KINDS
from efbench.core.estimation import EstimatorSpec
from efbench.core.rules import BOOL, POSITIVE, PROB, STR, TINY, Choice, Int, Num, Rule, rule_of
from efbench.errors import ConfigError
from efbench.problems.sources import SOURCE_KEYS, SOURCES

EPS = sys.float_info.epsilon
# log-spaced logging multiplies the step by 10^(1/log_per_decade), which must be a float
LOG_PER_DECADE_MIN = 1.0 / math.log10(sys.float_info.max)

# Every key outside the method and compressor groups, with its rule and its meaning (the
# settings part of efbench --help is generated from this table, efbench.app.cli.help_text)
TOP: dict[str, Rule] = {
    "seed": Int(0).described("the run's randomness (sampling, random compressors, coins)"),
    "seeds": Rule("any", null=True, text="a list of distinct integers >= 0 or null").described(
        "a list, e.g. [0,1,2]: those seeds batched in one process (seed=<s>/ subdirs)"
    ),
    "budget.iters": Int(1, null=True).described(
        "the method's steps (local_sgd: rounds; asynchronous methods: server updates)"
    ),
    "budget.bits": Num(0, lo_open=True, null=True).described(
        "mean cumulative uplink bits per worker (alone: a run silent for max(10000, its steps "
        "before) steps ends stalled)"
    ),
    "budget.epochs": Num(0, lo_open=True, null=True).described("gradient-oracle calls / (n m)"),
    "log_every": Int(1, null=True).described("log metrics every this many steps; null: at log-spaced steps"),
    "log_per_decade": Rule(
        "num",
        lo=LOG_PER_DECADE_MIN,
        lo_open=True,
        text=f"a number > {LOG_PER_DECADE_MIN:.4g}, so that 10^(1/log_per_decade), the growth of "
        "the logged steps, is a finite float",
    ).described("log-spaced: steps 1..10, then about 10^(1/10) = 1.26 times the last"),
    "x0": Choice("zero", "shift").described(
        "the start: zero, or shift (x* + dataset.x0_shift * ones, the authors' choice)"
    ),
    "diverge_factor": Num(1, lo_open=True).described(
        "diverged at once when f(x) > factor * f(x0), or nan/inf"
    ),
    "diverge_level": Num(1, lo_open=True).described(
        "diverged when f(x) > level * f(x0) at every log point of the run's last half (from step "
        "1000 on, and at its end)"
    ),
    "progress": BOOL.described("a progress bar while a run steps (on a terminal only)"),
    "engine": Choice("auto", "numpy", "numba").described(
        "numba = a compiled fused step for ec_sgd*/ec_lsvrg (batch 1; identity, ht, topk); auto "
        "uses it where it applies"
    ),
    "problem.l2": Num(0).described(
        "relative: l2 * L_data (SPEC.md default); absolute: the number itself; 0: convex, mu = 0"
    ),
    "problem.l2_mode": Choice("relative", "absolute").described("how problem.l2 is read"),
    "problem.regularizer": Choice("l2", "nonconvex").described(
        "nonconvex: lam_nc sum_j x_j^2/(1 + x_j^2) instead (EF21, 3PC; l2 unused, no x*, f*)"
    ),
    "problem.lam_nc": POSITIVE.described("the nonconvex regularizer's weight (regularizer=nonconvex)"),
    "bits.float_bits": Choice(16, 32, 64).described(
        "the bits a float costs in the counts only; values are computed and sent in float64, never rounded"
    ),
    "bits.index_bits": BOOL.described("false: charge values only (the authors' reference code)"),
    "data.dir": STR.described("download + parsed-array cache; relative: to where efbench is launched"),
    "data.mirror": Rule("str", null=True).described("local folder with <name>.bz2: no network"),
    "data.split": Choice(
        "shuffle", "file", "label_sorted", "dirichlet", "head_shuffle", "norm_sorted"
    ).described("how rows go to workers: head_shuffle is the authors'; norm_sorted spreads L_i"),
    "data.seed": Int(0).described("permutation of the rows, independent of the run's seed"),
    "data.alpha": POSITIVE.described("Dirichlet concentration for split=dirichlet"),
    "dataset.name": STR,
    "dataset.source": Choice(*SOURCES),
    "dataset.libsvm_name": STR,
    "dataset.n_workers": Int(1),
    "dataset.m": Int(1),
    "dataset.x0": Choice("zero", "shift"),
    "dataset.x0_shift": Num(),
    "dataset.synthetic_of": Rule("choice", choices=("epsilon", "rcv1"), null=True),
    "dataset.synthetic.rows": Int(1, null=True),
    "dataset.synthetic.features": Int(1),
    "dataset.synthetic.density": PROB,
    "dataset.synthetic.seed": Int(0),
    "dataset.synthetic.label_noise": Num(0, hi=0.5),
    "sampling.name": STR,
    "sampling.batch": Int(1),
    "topology.name": Choice("ring", "complete", "torus"),
    "network.name": STR,
    "network.alpha": Num(0),
    "network.beta_up": Num(0, lo_open=True, null=True),
    "network.beta_down": Num(0, lo_open=True, null=True),
    "network.beta_server": Num(0, lo_open=True, null=True),
    "network.server": Choice("parallel", "shared"),
    "network.links": Choice("parallel", "shared"),
    "network.c_grad": Rule("any", text="a number >= 0 or measured"),
    "network.collective": Choice("auto", "ps", "allreduce", "allgather"),
    "participation.kind": Choice("full", "nice", "independent"),
    "participation.size": Int(1, null=True),
    "participation.p": Rule("num", lo=0, lo_open=True, hi=1, null=True),
}
# dataset keys a source that does not read them takes as null (the others must be deleted)
NULL_WHEN_UNREAD = ("synthetic_of",)
# keys a run does without: a default in the code, or needed only by some data (the
# dataset rules below) or some settings (participation.size/p: by kind)
OPTIONAL = (
    "seeds",
    "budget.iters",
    "budget.bits",
    "budget.epochs",
    "problem.lam_nc",
    "data.mirror",
    "dataset.libsvm_name",
    "dataset.x0_shift",
    "dataset.synthetic_of",
    "dataset.synthetic",
    "topology",
    "network",
    "participation",
)
# the groups of keys a config is made of: each a mapping, never a value
GROUPS = ("budget", "problem", "bits", "data", "dataset", "sampling", "stepsize", "method", "compressor")
# what each config group chooses (efbench --help)
GROUP_DOCS = {
    "dataset": "the data, split over dataset.n_workers workers of dataset.m rows",
    "method": "the distributed method",
    "compressor": "what a worker's message goes through (methods that compress)",
    "sampling": "a stochastic gradient's rows (methods that sample)",
    "stepsize": "gamma: theory (the method's paper), reference (1/L), constant, decreasing",
    "topology": "graph of the decentralized methods",
    "network": "simulated time (time_sim)",
    "participation": "which workers take part in a round (methods that allow it)",
    "budget": "stop at whichever comes first; null = no limit",
}
OPTIONAL_GROUPS = ("topology", "network", "participation", "tune")
STEPSIZE: dict[str, dict[str, Rule]] = {  # by stepsize.rule
    "theory": {"multiplier": POSITIVE},
    "reference": {"multiplier": POSITIVE},
    "constant": {"gamma": POSITIVE, "multiplier": POSITIVE},
    "decreasing": {
        "base": Rule("any", text="theory, reference or a number > 0"),
        "decay": Choice("inv", "inv_sqrt"),
        "k0": POSITIVE,
        "multiplier": POSITIVE,
    },
}
ESTIMATOR = {
    "kind": Choice(*ESTIMATOR_KINDS),
    "sampling": STR,
    "batch": Int(1),
    "p": Rule("num", lo=0, lo_open=True, hi=1, null=True),
    "coin": Choice("shared", "per_worker"),
}
# the types of the tune block's keys (efbench.config.tune.TuneSpec checks what they mean together)
TUNE = {
    "key": STR,
    "grid": Rule("any", text="a list of at least two finite numbers"),
    "criterion": STR,
    "target": POSITIVE,
    "metric": STR,
    "select_seeds": Rule("any", null=True, text="a list of distinct integers >= 0 or null"),
}
# the fields of a group's class the run sets itself, not keys of the group: the compressor's
# from bits.*, the method's compressor and participation from their groups
SET_BY_RUN = {"compressor": ("float_bits", "index_bits"), "method": ("compressor", "participation")}
# the keys of dataset.synthetic each synthetic generator reads, by dataset.synthetic_of
# (efbench.problems.datasets.load_dataset): any other would be ignored
SYNTHETIC_KEYS = {
    None: ("rows", "features", "density", "seed"),
    "epsilon": ("rows", "features", "seed", "label_noise"),
    "rcv1": ("rows", "features", "density", "seed", "label_noise"),
}
BUDGETS = ("iters", "bits", "epochs")  # budget.<key>: a run stops at the first it reaches
# Hydra's own, the sweeper's, experiments' tables
NOT_KEYS = ("hydra", BATCH_KEY, "paper")


def _rule_of(key: str, f: dataclasses.Field, hint: Any) -> Rule:
    """The rule declared on the field (:func:`efbench.core.rules.ruled`); a bool or str field
    without one follows its annotation. Any other field must declare its rule: a number's
    range is the class's own (a rule taken by the field's name would be another class's)."""
    rule = rule_of(f)
    if rule is not None:
        return rule
    null = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        null, hint = len(args) < len(typing.get_args(hint)), args[0]
    if hint not in (bool, str):
        raise ConfigError(
            key, "its class declares no rule for it", "a rule on the field: efbench.core.rules.ruled"
        )
    return Rule("bool" if hint is bool else "str", null=null)


@functools.cache
def _fields(target: str, key: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The keys a ``_target_`` class takes (its dataclass fields, each with its rule) and
    those without a default (required)."""
    cls = _class(target, f"{key}._target_")
    hints = typing.get_type_hints(cls)
    rules: dict[str, Any] = {"_target_": STR}
    required = ["_target_"]
    for f in dataclasses.fields(cls):
        if f.name not in SET_BY_RUN[key]:
            rule = ESTIMATOR if f.name == "estimator" else _rule_of(f"{key}.{f.name}", f, hints.get(f.name))
            rules[f.name] = rule
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
    return rules, tuple(required)


def _class(target: str, key: str) -> type:
    """The class a ``_target_`` names (imported as Hydra would), or ConfigError naming ``key``."""
    module, _, name = current(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError, ValueError, TypeError):
        cls = None
    if not isinstance(cls, type):
        raise ConfigError(key, f"no such class {target!r}", "the dotted path of a class")
    return cls


def _check_tree(prefix: str, node: Mapping, rules: Mapping[str, Any]) -> None:
    for name, v in node.items():
        key = f"{prefix}{name}"
        rule = rules.get(name)
        if rule is None:
            raise ConfigError(key, "unknown key", ", ".join(sorted(rules)) or "none")
        if isinstance(rule, Mapping):
            if not isinstance(v, Mapping):
                raise ConfigError(key, f"must be a group of keys, got {v!r}", ", ".join(sorted(rule)))
            _check_tree(key + ".", v, rule)
        elif rule.kind != "any" or v is None:
            rule.check(key, v)


def _check_missing(c: dict, rules: Mapping[str, Any], required: list[str]) -> None:
    """Refuse the first of the ``required`` dotted keys that ``c`` lacks (deleted with
    ``~key``), naming what it takes."""
    for key in required:
        node: Any = c
        rule: Any = rules
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                allowed = "a group of keys" if isinstance(rule.get(part), Mapping) else rule[part].allowed()
                raise ConfigError(key, "missing: a run needs it", allowed)
            node, rule = node[part], rule[part]


def _nest(flat: Mapping[str, Rule]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rule in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = rule
    return out


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # an interpolation that cannot be resolved
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(str(key), str(exc).splitlines()[0]) from None


@functools.cache
def options(group: str) -> dict[str, dict]:
    """The options of a config group: each option file's own keys (unresolved)."""
    out = {}
    for path in files("efbench.conf").joinpath(group).iterdir():
        if path.name.endswith(".yaml"):
            out[path.name[: -len(".yaml")]] = OmegaConf.to_container(OmegaConf.load(path))
    return out


def _groups(c: dict) -> None:
    """Every group of keys a mapping, and present where a run needs it (``~group`` or
    ``++group=value`` would leave the run without its keys)."""
    for group in (*GROUPS, *OPTIONAL_GROUPS):
        if group not in c:
            if group in GROUPS:
                raise ConfigError(group, "missing: a run needs it", f"a {group} group of keys")
        elif not isinstance(c[group], Mapping):
            known = options(group) if files("efbench.conf").joinpath(group).is_dir() else {}
            allowed = (
                f"an option of the group: {group}=" + "|".join(sorted(known)) if known else "a group of keys"
            )
            raise ConfigError(group, f"must be a group of keys, got {c[group]!r}", allowed)


def validate(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError, naming the key and what it allows, at the first key of ``cfg``
    that is unknown, missing, of the wrong type or out of range, or that breaks a rule
    between keys. ``choices`` (Hydra's group choices) enables the rules about group choices."""
    c = _resolved(cfg)
    choices = choices or {}
    _groups(c)
    rules = _nest(TOP)
    rule = c["stepsize"].get("rule")
    Choice(*STEPSIZE).check("stepsize.rule", rule)
    rules["stepsize"] = {"rule": Choice(*STEPSIZE), **STEPSIZE[rule]}
    for group in ("compressor", "method"):
        target = c[group].get("_target_")
        if not isinstance(target, str):
            raise ConfigError(f"{group}._target_", "must name a class")
    rules["compressor"], comp_required = _fields(c["compressor"]["_target_"], "compressor")
    rules["method"], method_required = _fields(c["method"]["_target_"], "method")
    rules["tune"] = TUNE
    # the sampling group before the method, whose estimator takes its values by interpolation
    order = sorted((k for k in c if k not in NOT_KEYS), key=lambda k: k != "sampling")
    _check_tree("", {k: c[k] for k in order}, rules)
    required = [k for k in TOP if not any(k == o or k.startswith(o + ".") for o in OPTIONAL)]
    required += ["stepsize.rule", *(["stepsize.gamma"] if rule == "constant" else [])]
    required += [f"compressor.{f}" for f in comp_required] + [f"method.{f}" for f in method_required]
    _check_missing(c, rules, required)
    for check in CROSS:
        check(c, choices)
    # d: None for a LIBSVM file not in the table, whose shape is known once it is read
    _method_rules(c, choices, _shape(c["dataset"])[1])


def check_loaded(cfg: DictConfig, A: Any) -> None:
    """The rules that need the data themselves, once they are read and split (``A``: the
    workers' rows, (n, m, d) dense or (n m, d) sparse) and before anything is computed from
    them: :func:`check_data`, and the rules against the dimension d for data whose shape the
    config and the LIBSVM table do not tell (a LIBSVM file not in the table)."""
    check_data(cfg.dataset.name, A)
    c = _resolved(cfg)
    if _shape(c["dataset"])[1] is None:
        _method_rules(c, {}, A.shape[-1])


def check_data(name: str, A: Any) -> None:
    """Refuse data no run can use, naming ``dataset``: no rows, or no nonzero entry (every
    gradient of the loss is then constant, L = 0: no stepsize 1/L and no strongly convex
    structure beyond the regularizer). ``A``: the workers' rows, dense or sparse."""
    if math.prod(A.shape[:-1]) == 0:
        raise ConfigError("dataset", f"{name} has no rows", "a dataset with rows")
    if A.shape[-1] == 0 or not (A.count_nonzero() if sp.issparse(A) else np.any(A)):
        raise ConfigError(
            "dataset",
            f"every feature of {name} is zero (L = 0: no stepsize 1/L)",
            "data with a nonzero entry",
        )


def check_seeds(s: object) -> None:
    """``seeds``: null, or a list of distinct integers >= 0."""
    if s is not None and (
        not isinstance(s, (list, tuple))
        or not s
        or len(set(s)) != len(s)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in s)
    ):
        raise ConfigError("seeds", f"got {s!r}", TOP["seeds"].allowed())


def _seeds(c: dict, choices: Mapping[str, str]) -> None:
    check_seeds(c.get("seeds"))


def _tune(c: dict, choices: Mapping[str, str]) -> None:
    """The ``tune`` block: its grid a list of at least two finite numbers, its selection
    seeds null or distinct integers >= 0; then what its keys mean together (TuneSpec)."""
    if "tune" not in c:
        return
    from efbench.config.tune import TuneSpec

    tune = c["tune"]
    grid = tune.get("grid")
    if "grid" in tune and not (
        isinstance(grid, list)
        and len(grid) >= 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in grid)
    ):
        raise ConfigError("tune.grid", f"got {grid!r}", TUNE["grid"].allowed())
    seeds = tune.get("select_seeds")
    if seeds is not None:
        try:
            check_seeds(seeds)
        except ConfigError:
            raise ConfigError("tune.select_seeds", f"got {seeds!r}", TUNE["select_seeds"].allowed()) from None
    TuneSpec.from_config(tune)


def _some_budget(c: dict, choices: Mapping[str, str]) -> None:
    if all(c["budget"].get(k) is None for k in BUDGETS):
        raise ConfigError("budget", "set at least one of budget.iters, budget.bits, budget.epochs")


def _batch_within_m(c: dict, choices: Mapping[str, str]) -> None:
    batch, m = c["sampling"]["batch"], c["dataset"]["m"]
    est = EstimatorSpec.of({"batch": batch, **c["method"].get("estimator", {})})
    if est.stochastic and est.batch > m:
        raise ConfigError("sampling.batch", f"{est.batch} draws from m = {m} rows per worker", f"1..{m}")


def _shape(ds: dict) -> tuple[int | None, int | None]:
    """The dataset's rows and features as its config and the known files tell them."""
    return SOURCES[ds["source"]].shape(ds)


def _rows_enough(c: dict, choices: Mapping[str, str]) -> None:
    ds = c["dataset"]
    rows, _ = _shape(ds)
    need = ds["n_workers"] * ds["m"]
    if rows is not None and need > rows:
        raise ConfigError(
            "dataset.n_workers",
            f"n_workers x m = {ds['n_workers']} x {ds['m']} = {need} rows, but {ds['name']} has {rows}",
            f"dataset.n_workers * dataset.m <= {rows}",
        )


def _dataset_keys(c: dict, choices: Mapping[str, str]) -> None:
    """The keys the dataset's source reads, and only those
    (:data:`efbench.problems.sources.SOURCES`): ``libsvm_name`` for a LIBSVM file,
    ``synthetic`` (with what its generator reads) for synthetic data; and the workers a
    source is made of (the counterexample: 3 workers of one row each)."""
    ds = c["dataset"]
    source = ds["source"]
    if source == "libsvm" and "libsvm_name" not in ds:
        raise ConfigError(
            "dataset.libsvm_name", "missing: a LIBSVM dataset needs it", TOP["dataset.libsvm_name"].allowed()
        )
    for key in SOURCE_KEYS:
        if key not in SOURCES[source].reads and ds.get(key) is not None:
            allowed = "null" if key in NULL_WHEN_UNREAD else f"~dataset.{key}"
            raise ConfigError(f"dataset.{key}", f"is not read from {source} data", allowed)
    if source == "synthetic":
        keys = SYNTHETIC_KEYS[ds.get("synthetic_of")]
        syn = ds.get("synthetic", {})
        what = (
            f"synthetic data shaped like {ds['synthetic_of']}" if ds.get("synthetic_of") else "synthetic data"
        )
        for k in keys:
            if k not in syn:
                raise ConfigError(
                    f"dataset.synthetic.{k}",
                    f"missing: {what} need it",
                    TOP[f"dataset.synthetic.{k}"].allowed(),
                )
        for k in syn:
            if k not in keys:
                raise ConfigError(f"dataset.synthetic.{k}", f"is not read by {what}", ", ".join(keys))
    workers = SOURCES[source].workers
    if workers is not None:
        for key, want in zip(("n_workers", "m"), workers, strict=True):
            if ds[key] != want:
                raise ConfigError(
                    f"dataset.{key}",
                    f"{SOURCES[source].what(ds)} is {workers[0]} workers of {workers[1]} row(s) each, "
                    f"got {ds[key]}",
                    (want,),
                )


def _dataset_name(c: dict, choices: Mapping[str, str]) -> None:
    """``dataset.name`` labels the data in every summary, table and figure: the name of a
    dataset preset labels only that preset's data (its source, file or generator)."""
    ds = c["dataset"]
    preset = options("dataset").get(ds["name"])
    keys = ("source", "libsvm_name", "synthetic_of")
    if preset is not None and any(preset.get(k) != ds.get(k) for k in keys):
        what = SOURCES[ds["source"]].what(ds)
        raise ConfigError(
            "dataset.name",
            f"{ds['name']!r} is another dataset's name, and these data are {what}",
            "a name of your own for them, or that dataset: dataset=" + ds["name"],
        )


def _method_name(c: dict, choices: Mapping[str, str]) -> None:
    """``method.name`` labels the runs: the name of another method option would mislabel them."""
    name, chosen = c["method"].get("name"), choices.get("method")
    if chosen is not None and name != chosen and name in options("method"):
        raise ConfigError(
            "method.name",
            f"{name!r} is another method's name, and this is method {chosen!r}",
            f"a name of your own, or method={name}",
        )


def _samplings(c: dict, choices: Mapping[str, str]) -> None:
    """``sampling.name`` and the estimator's ``sampling``: a built-in sampling or a
    :class:`efbench.methods.samplers.Sampling` subclass that gives probabilities, whether or not
    the method samples (a preset that fixes its sampling reads neither)."""
    from efbench.methods.samplers import BUILTIN, Sampling, sampling_of

    allowed = f"{', '.join(BUILTIN)}, or the dotted path of an efbench.methods.samplers.Sampling subclass"
    named = {"sampling.name": c["sampling"]["name"]}
    if "sampling" in c["method"].get("estimator", {}):
        named["method.estimator.sampling"] = c["method"]["estimator"]["sampling"]
    for key, name in named.items():
        try:
            cls = type(sampling_of(name))
        except ConfigError:
            raise ConfigError(key, f"unknown sampling {name!r}", allowed) from None
        if cls.probabilities is Sampling.probabilities:
            raise ConfigError(key, f"{name!r} gives no probabilities (it is abstract)", allowed)


def _memory(c: dict, choices: Mapping[str, str]) -> None:
    """The data a run would build, refused when over the memory limit before it is built
    (:func:`efbench.problems.datasets.check_memory`, as :func:`efbench.problems.datasets.load_dataset` checks
    it): a dense LIBSVM file of the table, synthetic data, and the synthetic rows generated
    whole before the split."""
    from efbench.problems.datasets import (
        LIBSVM_FILES,
        SPARSE_BYTES_PER_NONZERO,
        check_memory,
        max_dense_bytes,
    )

    ds = c["dataset"]
    n, m = ds["n_workers"], ds["m"]
    if ds["source"] == "libsvm":
        spec = LIBSVM_FILES.get(ds["libsvm_name"])
        if spec is not None and spec.dense:
            check_memory(ds["libsvm_name"], n, m, spec.features, spec.rows)
    if ds["source"] != "synthetic":
        return
    syn = ds["synthetic"]
    rows, d = syn["rows"] or n * m, syn["features"]
    if ds.get("synthetic_of") != "rcv1":
        check_memory(ds["name"], n, m, d, rows)
        return
    nnz = syn["density"] * d
    check_memory(ds["name"], n, m, d, row_nnz=nnz)
    whole = rows * (SPARSE_BYTES_PER_NONZERO * nnz + 8.0)
    if whole > max_dense_bytes():
        raise ConfigError(
            "dataset.synthetic.rows",
            f"{ds['name']} generates its {rows} rows whole before the split: {whole / 1e9:.3g} GB, "
            f"over the {max_dense_bytes() / 1e9:g} GB limit",
            f"at most {int(max_dense_bytes() // (SPARSE_BYTES_PER_NONZERO * nnz + 8.0))} rows",
        )


def _x0_shift(c: dict, choices: Mapping[str, str]) -> None:
    """``x0=shift`` starts at x* + x0_shift (1, ..., 1): a shift below sqrt(eps) ~ 1.5e-8
    starts at x* to within rounding (f(x0) - f* of order x0_shift^2 < eps is lost in the
    rounding of f*), so the relative gap, over f(x0) - f*, is not defined."""
    if c["x0"] != "shift":
        return
    shift = c["dataset"].get("x0_shift")
    if shift is None:
        raise ConfigError("dataset.x0_shift", "missing: x0=shift needs it", "a number")
    if abs(shift) < math.sqrt(EPS):
        raise ConfigError(
            "dataset.x0_shift",
            f"got {shift!r}: x0 = x* + x0_shift starts at x* to within rounding",
            f"|x0_shift| >= {math.sqrt(EPS):.2g}, or x0=zero",
        )


def _l2_range(c: dict, choices: Mapping[str, str]) -> None:
    """A relative ``problem.l2`` (l2 L_data) above 1/eps leaves nothing to optimize: the loss
    is convex with f(0) = log 2 and ||grad f(0)||^2 <= 2 L log 2, so f(0) - f* <=
    ||grad f(0)||^2/(2 l2 L) <= log(2)/l2 < eps log 2, below the rounding of f(0)."""
    p = c["problem"]
    if p["regularizer"] == "l2" and p["l2_mode"] == "relative" and p["l2"] > 1.0 / EPS:
        raise ConfigError(
            "problem.l2",
            f"got {p['l2']!r}: f(0) - f* <= log(2)/l2 is below the rounding of f(0) (relative l2)",
            f"a number >= 0 and <= 1/eps = {1.0 / EPS:.3g}",
        )


@functools.cache
def default_choice(group: str) -> str | None:
    """The option of ``group`` that efbench's config.yaml picks when the user picks none."""
    for entry in OmegaConf.load(files("efbench.conf") / "config.yaml").defaults:
        if isinstance(entry, DictConfig) and group in entry:
            return entry[group]
    return None


def _chose(choices: Mapping[str, str], group: str) -> str | None:
    """The option of ``group`` picked other than by default (None: the default, or unknown)."""
    chosen = choices.get(group)
    return None if chosen == default_choice(group) else chosen


def _topology_only_decentralized(c: dict, choices: Mapping[str, str]) -> None:
    from efbench.methods.base import Decentralized

    chosen = _chose(choices, "topology")
    if chosen is not None and not issubclass(
        _class(c["method"]["_target_"], "method._target_"), Decentralized
    ):
        raise ConfigError(
            "topology",
            f"method {c['method'].get('name')!r} is not decentralized and uses no graph",
            "a topology only with the decentralized methods: d_psgd, dcd_psgd, deep_squeeze, choco_sgd",
        )


def _stepsize_base(c: dict, choices: Mapping[str, str]) -> None:
    """``stepsize.base`` of the decreasing rule: theory, reference or a number > 0 (a bool is
    not one: ``true`` would read as 1.0)."""
    base = c["stepsize"].get("base", "theory") if c["stepsize"].get("rule") == "decreasing" else "theory"
    number = (
        isinstance(base, (int, float)) and not isinstance(base, bool) and math.isfinite(base) and base >= TINY
    )
    if base not in ("theory", "reference") and not number:
        raise ConfigError("stepsize.base", f"got {base!r}", STEPSIZE["decreasing"]["base"].allowed())


def _collective_not_on_gossip(c: dict, choices: Mapping[str, str]) -> None:
    """A decentralized method gossips with its neighbours: a centralized collective set for it
    would be ignored, so it is refused."""
    from efbench.methods.base import Decentralized

    wanted = c.get("network", {}).get("collective", "auto")
    if wanted != "auto" and issubclass(_class(c["method"]["_target_"], "method._target_"), Decentralized):
        raise ConfigError(
            "network.collective",
            f"method {c['method'].get('name')!r} gossips on its topology; {wanted!r} would be ignored",
            ("auto",),
        )


def _c_grad(c: dict, choices: Mapping[str, str]) -> None:
    v = c.get("network", {}).get("c_grad", 0.0)
    if v == "measured":
        return
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if not (number and math.isfinite(v) and (v == 0 or v >= TINY)):
        raise ConfigError("network.c_grad", f"got {v!r}", ("a number >= 0", "measured"))


def _method_rules(c: dict, choices: Mapping[str, str], d: int | None) -> None:
    """The rules the method and compressor classes hold: the compressor kinds the method
    accepts (checked in building them), ef_signsgd's fixed sign, FedNL's problem, its
    stepsize rule on stand-in constants of the run's shape, ``engine=numba`` only where the
    compiled step applies; and, against the dataset's dimension d when it is known, the
    compressor's parameters (K <= d), the fields whose rule bounds them by d (the method's
    K-like fields: ``Rule.by_d``) and the method's own limits (``Method.check_shape``)."""
    from efbench.config.build import build_method
    from efbench.methods.base import EFSignSGD

    ds = c["dataset"]
    method = build_method(c, d, ds["n_workers"])
    if d is not None:
        for group in ("compressor", "method"):
            for name, rule in _fields(c[group]["_target_"], group)[0].items():
                if isinstance(rule, Rule):
                    rule.check_dimension(f"{group}.{name}", c[group].get(name), d)
        method.check_shape(d, ds["n_workers"])
    _fednl(method, c, d)
    if d is not None:  # else once the data are read (check_loaded)
        _stepsize_on_stand_ins(method, c, d)
    chosen = _chose(choices, "compressor")
    if isinstance(method, EFSignSGD) and chosen not in (None, "sign"):
        raise ConfigError(
            "compressor", f"method {method.name!r} always sends the scaled sign, got {chosen!r}", ("sign",)
        )
    if c["engine"] == "numba":
        why = method.unfused()
        source = SOURCES[ds["source"]]
        if why is None and not source.logistic:
            why = f"{source.what(ds)}'s {source.problem} problem has no compiled step"
        if why is not None:
            raise ConfigError("engine", f"numba cannot run this: {why}", ("auto", "numpy"))


def _fednl(method: Any, c: dict, d: int | None) -> None:
    """FedNL (:class:`efbench.methods.fednl.FedNL`) needs the logistic loss's Hessians, mu = l2 > 0
    and room for its dense d x d matrices per worker: refused before the data are read."""
    from efbench.methods.fednl import HESSIAN_COPIES, FedNL
    from efbench.problems.datasets import MAX_DENSE_ENV, max_dense_bytes

    if not isinstance(method, FedNL):
        return
    p, n = c["problem"], c["dataset"]["n_workers"]
    source = SOURCES[c["dataset"]["source"]]
    if not source.logistic:
        raise ConfigError(
            "dataset", f"FedNL's Hessians are the logistic loss's, not {source.what(c['dataset'])}'s"
        )
    if p["regularizer"] != "l2":
        raise ConfigError(
            "problem.regularizer", "FedNL's Hessians are the l2-regularized logistic loss's", ("l2",)
        )
    if not p["l2"] > 0:
        raise ConfigError("problem.l2", f"FedNL needs a strongly convex f, got l2 = {p['l2']}", "> 0")
    need, limit = HESSIAN_COPIES * 8.0 * n * (d or 0) ** 2, max_dense_bytes()
    if need > limit:
        raise ConfigError(
            "method",
            f"fednl keeps {HESSIAN_COPIES} dense d x d matrices per worker (n = {n}, d = {d}): "
            f"{need / 1e9:.3g} GB, over the {limit / 1e9:g} GB limit (${MAX_DENSE_ENV})",
        )


@functools.cache
def _constant_names() -> tuple[str, ...]:
    """The names of a logistic problem's constants (those of a one-entry problem)."""
    from efbench.problems.logistic import LogisticProblem

    return tuple(LogisticProblem(np.ones((1, 1, 1)), np.ones((1, 1)), 1.0).constants())


def _stepsize_on_stand_ins(method: Any, c: dict, d: int) -> None:
    """The method's stepsize rule evaluated on stand-in constants of the run's shape (n, m,
    d; every smoothness constant 1, mu and kappa 1, or NaN on a problem without mu): the
    refusals that come from the settings alone (a rule the method cannot take, a setting
    its theory needs) come now, not after the data. A method whose stepsize comes from mu
    (mem_sgd's a/(mu (b + k))) is refused on a problem without mu (the nonconvex
    regularizer; l2 = 0): its schedule on mu = NaN is NaN."""
    from efbench.core.stepsize import make_schedule

    ds = c["dataset"]
    no_mu = SOURCES[ds["source"]].logistic and (
        c["problem"]["regularizer"] == "nonconvex" or c["problem"]["l2"] == 0
    )
    mu = math.nan if no_mu else 1.0
    probe = {**dict.fromkeys(_constant_names(), 1.0), "n": ds["n_workers"], "m": ds["m"], "d": d}
    probe.update(mu=mu, kappa=mu, L_S=1.0)
    try:
        default = make_schedule(c["stepsize"], probe, method.estimator, lambda b: method.theory(probe, b))
        sched = method.schedule(default, probe)
    except (ArithmeticError, ValueError, KeyError):  # a rule the stand-ins cannot evaluate: the run's will
        return
    if math.isfinite(sched.gamma0) or not no_mu:
        return
    if c["problem"]["regularizer"] == "nonconvex":
        key, why, allowed = "problem.regularizer", "the nonconvex problem has no mu", "l2"
    else:
        key, why, allowed = "problem.l2", "l2 = 0 makes mu = 0", "a number > 0"
    raise ConfigError(
        key, f"method {method.name!r} takes its stepsize from mu ({sched.formula}), and {why}", allowed
    )


def _regularizer(c: dict, choices: Mapping[str, str]) -> None:
    """``problem.regularizer=nonconvex`` (efbench.problems.nonconvex): a logistic problem built from
    data, started at zero (it has no x*), on the numpy engine."""
    if c["problem"]["regularizer"] != "nonconvex":
        return
    source = SOURCES[c["dataset"]["source"]]
    if not source.logistic:
        raise ConfigError(
            "problem.regularizer", f"{source.what(c['dataset'])} is a problem of its own", ("l2",)
        )
    if c["x0"] == "shift":
        raise ConfigError(
            "x0", "shift starts from x* + x0_shift, and the nonconvex problem has no x*", ("zero",)
        )
    if c["engine"] == "numba":
        raise ConfigError(
            "engine",
            "numba cannot run this: the compiled step has the l2-regularized logistic gradients, "
            "not the nonconvex regularizer's",
            ("auto", "numpy"),
        )


def _libsvm_name(c: dict, choices: Mapping[str, str]) -> None:
    """``dataset.libsvm_name`` names a file of the mirror or the LIBSVM site, not a path: a
    path would read (and echo in errors) whatever file it points at."""
    name = c["dataset"].get("libsvm_name")
    if isinstance(name, str) and ("/" in name or "\\" in name or name.startswith(".") or not name):
        raise ConfigError(
            "dataset.libsvm_name", f"got {name!r}", "a LIBSVM file name such as a9a, not a path"
        )


CROSS: tuple[Callable[[dict, Mapping[str, str]], None], ...] = (
    _libsvm_name,
    _dataset_keys,
    _dataset_name,
    _method_name,
    _seeds,
    _tune,
    _some_budget,
    _batch_within_m,
    _rows_enough,
    _memory,
    _samplings,
    _topology_only_decentralized,
    _collective_not_on_gossip,
    _stepsize_base,
    _c_grad,
    _regularizer,
    _x0_shift,
    _l2_range,
)
