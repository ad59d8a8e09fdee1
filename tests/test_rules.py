"""Rules live with the fields they constrain (issue 22, point 2): each method's and
compressor's field declares its own rule (:func:`efbench.core.rules.ruled`), read by the
schema's one walker over the fields of the class a ``_target_`` names. A field is never
given another class's rule by sharing its name (a new compressor's ``p`` took MARINA's sync
probability rule, so ``compressor.p=null`` reached the class as a TypeError), and a numeric
field without a rule is named by the registry walk below before any run meets it."""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import math
import pkgutil
import types
import typing
from dataclasses import dataclass

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict

import efbench
from efbench.config import schema
from efbench.config.legacy import current
from efbench.core.compressors import Compressor, HardThreshold
from efbench.core.rules import PROB, Choice, Num, Rule, rule_of, ruled
from efbench.errors import ConfigError
from efbench.methods.base import ErrorCompensated, Method

GROUPS = ("method", "compressor")
D = 30  # breast_cancer's features, the default dataset
# the paper options' K and threshold, which the paper experiments define
PAPER = ("+paper.breast_cancer.topk_k=2", "+paper.breast_cancer.ht_lam=0.01")

# Every declared rule, where it is declared, as it reads (with its bound by d): the ranges
# that efbench.config.schema.FIELD_RANGES and DIMENSION_BOUNDS held by field name before
# they moved onto the fields (and NaturalDithering.norm's, which its annotation gave), and the
# choices that were checked inside their classes before (issue 22).
DECLARED = {
    "Method.ec_form": "scaled, plain",
    "DIANA.alpha": "a number > 0 and <= 1 or null",
    "MemSGD.a": "a number > 0",
    "MemSGD.b": "a number > 0 or null",
    "Decentralized.topology": "ring, complete, torus",
    "DeepSqueeze.eta": "a number > 0",  # its own check refused 0 beside a >= 0 rule (issue 22)
    "ChocoSGD.consensus_step": "a number > 0 or null",
    "AsyncSGD.times": "fixed, random, heterogeneous",
    "AsyncSGD.spread": "a number >= 0",
    "AsyncSGD.durations": "a list of compute times > 0, one per worker, or null",
    "FedNL.hessian_compressor": "identity, topk, rankr",
    "FedNL.hessian_k": "an integer >= 1 or null; K <= d(d+1)/2",
    "FedNL.rank": "an integer >= 1; R <= d",
    "FedNL.option": "1, 2",
    "FedNL.alpha": "a number > 0 and <= 1 or null",
    "LocalSGD.local_steps": "an integer >= 1",
    "LocalSGD.server_stepsize": "a number > 0",
    "Scaffnew.p": "a number > 0 and <= 1 or null",
    "GradSkip.q": "a number > 0 and <= 1 or null",
    "MARINA.p": "a number > 0 and <= 1 or null",
    "ThreePC.zeta": "a number >= 0 or null",  # null: a mechanism that takes none (was refused)
    "ThreePC.mechanism": "ef21, clag, lag, 3pcv1, 3pcv2, 3pcv3, 3pcv4, 3pcv5",
    "ThreePC.inner": "ef21, clag, lag, 3pcv1, 3pcv2, 3pcv4, 3pcv5 or null",
    "TopK.ties": "index, keep",
    "Compose.outer": "topk, randk",
    "Compose.inner": "natural, qsgd, natural_dithering",
    "ThreePC.k2": "an integer >= 1 or null; K <= d",
    "ThreePC.p": "a number > 0 and <= 1 or null",
    "CLAG.zeta": "a number >= 0",
    "EF21BC.down_k": "an integer >= 1 or null; K <= d",
    "EF21HB.eta": "a number >= 0",
    "TopK.k": "an integer >= 1",
    "RandK.k": "an integer >= 1",
    "HardThreshold.lam": "a number >= 0",
    "QSGD.s": "an integer >= 1",
    "Rounding.delta": "a number > 0",
    "NaturalDithering.s": "an integer >= 1",
    "NaturalDithering.norm": "a number >= 1 or inf",  # p = inf was refused from the command line
    "LowRank.rank": "an integer >= 1",
    "Compose.k": "an integer >= 1",
    "Compose.s": "an integer >= 1",
}
# a value at and one past each bound by d, on an option that reads the field, checked
# against breast_cancer's d = 30
BY_D = {
    "method.k2": ("method=3pcv2", "compressor=topk"),
    "method.down_k": ("method=ef21_bc", "compressor=topk"),
    "method.rank": ("method=fednl",),
    "method.hessian_k": ("method=fednl", "method.hessian_compressor=topk"),
}


@dataclass(kw_only=True)
class ThresholdP(HardThreshold):
    """A new compressor with a field ``p`` and no rule: MARINA's must not apply to it."""

    p: float | None = None


@dataclass(kw_only=True)
class ThresholdRuledP(HardThreshold):
    """The same compressor with its rule: a probability, never null."""

    p: float = ruled(0.5, PROB)


@dataclass(kw_only=True)
class ECBeta(ErrorCompensated):
    """A new method with a float field ``beta`` and no rule."""

    beta: float = 0.5


@dataclass(kw_only=True)
class ECRuledBeta(ErrorCompensated):
    """The same method with its rule: a number >= 0."""

    beta: float = ruled(0.5, Num(0))


def _descendants(cls: type) -> set[type]:
    out = {cls}
    for sub in cls.__subclasses__():
        out |= _descendants(sub)
    return out


def _class(target: str) -> type:
    module, _, name = current(target).rpartition(".")
    return getattr(importlib.import_module(module), name)


@functools.cache
def _base(*overrides: str) -> DictConfig:
    with initialize_config_module("efbench.conf", version_base="1.3"):
        return compose("config", overrides=["progress=false", *PAPER, *overrides])


@functools.cache
def option_targets() -> dict[str, dict[str, str]]:
    """The ``_target_`` of every option of the method and compressor groups (as Hydra
    composes it: some take it from their defaults list), by group."""
    return {g: {name: _base(f"{g}={name}")[g]._target_ for name in schema.options(g)} for g in GROUPS}


@functools.cache
def registry() -> dict[str, tuple[type, ...]]:
    """Every class a run can name, by group: those the options' ``_target_`` name and every
    subclass of Method / Compressor defined in the package (every module imported)."""
    for m in pkgutil.walk_packages(efbench.__path__, "efbench."):
        if m.name != "efbench.__main__":  # it runs the command
            importlib.import_module(m.name)
    out = {}
    for group, base in zip(GROUPS, (Method, Compressor), strict=True):
        named = {_class(t) for t in option_targets()[group].values()}
        package = {c for c in _descendants(base) if c.__module__.startswith("efbench.")}
        out[group] = tuple(sorted(named | package, key=lambda c: (c.__module__, c.__qualname__)))
    return out


def _numeric(hint: object) -> bool:
    """int or float (or a list of them), alone or or-null."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_numeric(a) for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) in (list, tuple):
        return any(_numeric(a) for a in typing.get_args(hint))
    return hint in (int, float)


def unruled(group: str, classes: tuple[type, ...]) -> list[str]:
    """``Class.field`` for each numeric config field (one the run does not set itself) that
    declares no rule."""
    out = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in schema.SET_BY_RUN[group] and _numeric(hints[f.name]) and rule_of(f) is None:
                out.append(f"{cls.__qualname__}.{f.name}")
    return out


@pytest.mark.parametrize("group", ["method", "compressor"])
def test_every_numeric_field_of_every_class_declares_its_rule(group):
    classes = registry()[group]
    assert len(classes) > 10 and all(c.__module__.startswith("efbench.") for c in classes)
    assert unruled(group, classes) == []


def test_the_registry_walk_names_a_new_field_without_a_rule():
    assert unruled("compressor", (ThresholdP, ThresholdRuledP)) == ["ThresholdP.p"]
    assert unruled("method", (ECBeta, ECRuledBeta)) == ["ECBeta.beta"]


def test_each_rule_is_declared_on_its_class_as_it_was():
    declared = {}
    for classes in registry().values():
        for cls in classes:
            own = cls.__dict__.get("__annotations__", {})
            for f in dataclasses.fields(cls):
                rule = rule_of(f)
                if rule is not None and f.name in own:
                    by_d = f"; {rule.by_d.letter} <= {rule.by_d.text}" if rule.by_d else ""
                    declared[f"{cls.__qualname__}.{f.name}"] = rule.allowed() + by_d
    assert declared == DECLARED


def refusal(value: object, key: str, *overrides: str) -> ConfigError | None:
    """What :func:`efbench.config.schema.validate` says of the config of ``overrides`` with
    ``key`` set to ``value`` (None: nothing)."""
    cfg = copy.deepcopy(_base(*overrides))
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False)
    try:
        schema.validate(cfg, {})
    except ConfigError as err:
        return err
    return None


def _refused(value: object, key: str, *overrides: str) -> None:
    err = refusal(value, key, *overrides)
    assert err is not None, f"{key}={value!r} was taken"
    assert err.key == key and "\n" not in str(err), str(err)


@pytest.mark.parametrize(
    "target, key", [(ThresholdRuledP, "compressor.p"), (ECRuledBeta, "method.beta")], ids=["p", "beta"]
)
@pytest.mark.parametrize("value", [None, -3, "abc", True, math.inf])
def test_a_new_field_follows_its_own_rule(target, key, value):
    group = key.split(".")[0]
    chosen = f"{group}._target_={__name__}.{target.__qualname__}"
    _refused(value, key, chosen)
    if group == "compressor":
        _refused(2.0, key, chosen)  # a probability's
    assert refusal(0.25, key, chosen) is None


@pytest.mark.parametrize(
    "target, key", [(ThresholdP, "compressor.p"), (ECBeta, "method.beta")], ids=["p", "beta"]
)
def test_a_new_numeric_field_without_a_rule_is_refused_not_given_another_classs(target, key):
    """Not MARINA's probability for ``p`` (null and 0.5 would pass it) nor any number for
    ``beta``: the class is refused, naming the field, whatever its value."""
    chosen = f"{key.split('.')[0]}._target_={__name__}.{target.__qualname__}"
    for value in (None, 0.5, -3):
        err = refusal(value, key, chosen)
        assert err is not None and err.key == key and "declares no rule" in str(err), err


def _bad_values(rule: Rule) -> list[object]:
    """Values ``rule`` refuses: past each bound, of a wrong type, null when it takes none."""
    bad: list[object] = [] if rule.null else [None]
    if rule.kind in ("int", "num"):
        bad += ["abc", True, math.nan, -math.inf, *([] if rule.infinite else [math.inf])]
        if rule.lo > -math.inf:
            below = rule.lo if rule.lo_open else rule.lo - 1
            bad.append(int(below) if rule.kind == "int" else below)
        if rule.hi < math.inf:
            bad.append(rule.hi + 1)
        if rule.kind == "int":
            bad.append(1.5)
    elif rule.kind == "choice":
        # true is 1 to Python, but not an option among 1 and 2
        bad += ["abc", 3.5] + ([] if any(isinstance(c, bool) for c in rule.choices) else [True])
    return bad


def _cases() -> list[tuple[str, str, str]]:
    """(group, option, field) of every ruled config field of every option's class."""
    out = []
    for group, targets in option_targets().items():
        for option, target in sorted(targets.items()):
            for f in dataclasses.fields(_class(target)):
                if rule_of(f) is not None and f.name not in schema.SET_BY_RUN[group]:
                    out.append((group, option, f.name))
    return out


@pytest.mark.parametrize("group, option, field", _cases())
def test_every_declared_rule_refuses_through_the_schema(group, option, field):
    rule = rule_of({f.name: f for f in dataclasses.fields(_class(option_targets()[group][option]))}[field])
    values = _bad_values(rule)
    assert values or rule.kind == "any"
    for value in values:
        _refused(value, f"{group}.{field}", f"{group}={option}")


@pytest.mark.parametrize("key", sorted(BY_D))
def test_a_bound_by_the_dimension_refuses_one_past_it(key):
    group, field = key.split(".")
    rule = rule_of({f.name: f for f in dataclasses.fields(_class(_base(*BY_D[key])[group]._target_))}[field])
    most = rule.by_d.most(D)
    assert refusal(most, key, *BY_D[key]) is None
    err = refusal(most + 1, key, *BY_D[key])
    letter = rule.by_d.letter
    assert str(err) == (
        f"{key}: {letter}={most + 1} is out of range for d={D} "
        f"(allowed: 1 <= {letter} <= {rule.by_d.text} = {most})"
    )


def test_every_bound_by_the_dimension_is_checked_above():
    bounded = {
        f"{group}.{f.name}"
        for group, classes in registry().items()
        for cls in classes
        for f in dataclasses.fields(cls)
        if rule_of(f) is not None and rule_of(f).by_d is not None
    }
    assert bounded == set(BY_D)


def test_true_is_not_an_option_among_numbers():
    """Python has True == 1: FedNL's option (1 or 2) set to true is refused, not run as 1."""
    with pytest.raises(ConfigError, match=r"method\.option: got True \(allowed: 1, 2\)"):
        Choice(1, 2).check("method.option", True)
    Choice(True, False, "auto").check("x", True)  # where a bool is a choice, it is taken
    Choice(1, 2).check("method.option", 1)
