"""Every config key's type and range, and the rules between keys, checked in one place
before a run builds anything (:func:`validate`). A key not described here is refused.

The keys of the ``method`` and ``compressor`` groups are the fields of the class their
``_target_`` names (a dataclass), typed by its annotations, so a new method or
compressor brings its keys with it; ranges that depend on the data (K <= d, ...) stay
with the class (``Compressor.validate``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from efbench.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one key takes: a kind (int, num, bool, str, choice, any), bounds, null."""

    kind: str
    lo: float = -math.inf
    lo_open: bool = False
    hi: float = math.inf
    choices: tuple = ()
    null: bool = False
    text: str = ""

    def allowed(self) -> str:
        if self.text:
            return self.text
        if self.kind == "choice":
            out = ", ".join(str(c) for c in self.choices)
        elif self.kind == "bool":
            out = "true, false"
        elif self.kind in ("int", "num"):
            noun = "an integer" if self.kind == "int" else "a number"
            parts = []
            if self.lo > -math.inf:
                parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
            if self.hi < math.inf:
                parts.append(f"<= {self.hi:g}")
            out = noun + (" " + " and ".join(parts) if parts else "")
        else:
            out = "a string" if self.kind == "str" else "anything"
        return out + (" or null" if self.null else "")

    def check(self, key: str, v: Any) -> None:
        if v is None:
            if not self.null:
                raise ConfigError(key, "must be set, got null", self.allowed())
            return
        ok = True
        if self.kind == "bool":
            ok = isinstance(v, bool)
        elif self.kind == "str":
            ok = isinstance(v, str)
        elif self.kind == "choice":
            ok = v in self.choices and not (isinstance(v, bool) and True not in self.choices)
        elif self.kind in ("int", "num"):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            ok = number and (self.kind == "num" or isinstance(v, int)) and math.isfinite(v)
            ok = ok and (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi
        if not ok:
            raise ConfigError(key, f"got {v!r}", self.allowed())


def Int(lo: float = -math.inf, null: bool = False) -> Rule:
    return Rule("int", lo=lo, null=null)


def Num(lo: float = -math.inf, lo_open: bool = False, hi: float = math.inf, null: bool = False) -> Rule:
    return Rule("num", lo=lo, lo_open=lo_open, hi=hi, null=null)


def Choice(*choices: Any) -> Rule:
    return Rule("choice", choices=choices)


BOOL, STR, ANY = Rule("bool"), Rule("str"), Rule("any")
POSITIVE = Num(0, lo_open=True)
PROB = Num(0, lo_open=True, hi=1)

TOP: dict[str, Rule] = {
    "seed": Int(0),
    "seeds": Rule("any", null=True, text="a list of distinct integers >= 0 or null"),
    "budget.iters": Int(1, null=True),
    "budget.bits": Num(0, lo_open=True, null=True),
    "budget.epochs": Num(0, lo_open=True, null=True),
    "log_every": Int(1, null=True),
    "log_per_decade": POSITIVE,
    "x0": Choice("zero", "shift"),
    "diverge_factor": Num(1, lo_open=True),
    "diverge_level": Num(1, lo_open=True),
    "progress": BOOL,
    "engine": Choice("auto", "numpy", "numba"),
    "problem.l2": Num(0),
    "problem.l2_mode": Choice("relative", "absolute"),
    "problem.regularizer": Choice("l2", "nonconvex"),
    "problem.lam_nc": POSITIVE,
    "bits.float_bits": Choice(16, 32, 64),
    "bits.index_bits": BOOL,
    "data.dir": STR,
    "data.mirror": Rule("str", null=True),
    "data.split": Choice("shuffle", "file", "label_sorted", "dirichlet", "head_shuffle", "norm_sorted"),
    "data.seed": Int(0),
    "data.alpha": POSITIVE,
    "dataset.name": STR,
    "dataset.source": Choice("libsvm", "synthetic", "sklearn", "counterexample"),
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
    "kind": Choice("full", "sgd", "lsvrg"),
    "sampling": STR,
    "batch": Int(1),
    "p": Rule("num", lo=0, lo_open=True, hi=1, null=True),
    "coin": Choice("shared", "per_worker"),
}
# ranges of method and compressor fields beyond their annotated types, by field name
FIELD_RANGES = {
    "ec_form": Choice("scaled", "plain"),
    "topology": Choice("ring", "complete", "torus"),
    "zeta": Num(0),
    "alpha": Rule("num", lo=0, lo_open=True, hi=1, null=True),
    "eta": Num(0),  # DeepSqueeze needs > 0 (its own check), EF21-HB takes [0, 1)
    "a": POSITIVE,
    "b": Rule("num", lo=0, lo_open=True, null=True),
    "k": Int(1),
    "s": Int(1),
    "lam": Num(0),
    "delta": POSITIVE,
    "consensus_step": Rule("num", lo=0, lo_open=True, null=True),  # CHOCO-SGD's gossip step
    "times": Choice("fixed", "random", "heterogeneous"),  # asynchronous SGD's compute times
    "spread": Num(0),
    "durations": Rule("any", null=True, text="a list of compute times > 0, one per worker, or null"),
    "p": Rule("num", lo=0, lo_open=True, hi=1, null=True),  # MARINA's sync probability
    "hessian_compressor": Choice("identity", "topk", "rankr"),  # FedNL's matrix compressor
    "hessian_k": Int(1, null=True),
    "rank": Int(1),
    "option": Choice(1, 2),
    "local_steps": Int(1),  # Local-SGD's tau
    "server_stepsize": POSITIVE,
    "q": Rule("num", lo=0, lo_open=True, hi=1, null=True),  # GradSkip's gradient probability
    "k2": Int(1, null=True),  # 3PCv2 / 3PCv4: K of the second compressor
    "down_k": Int(1, null=True),  # EF21-BC: K of the server's Top-K
}
BUDGETS = ("iters", "bits", "epochs")  # budget.<key>: a run stops at the first it reaches
# Hydra's own, the sweeper's, experiments' tables, tuning (checked by efbench.tuning.TuneSpec)
NOT_KEYS = ("hydra", "efbench_batch", "paper", "tune")


def _rule_of(name: str, hint: Any) -> Rule:
    if name in FIELD_RANGES:
        return FIELD_RANGES[name]
    null = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        null, hint = len(args) < len(typing.get_args(hint)), args[0]
    kinds = {bool: "bool", int: "int", float: "num", str: "str"}
    return Rule(kinds.get(hint, "any"), null=null)


def _fields(target: str, key: str, skip: tuple[str, ...]) -> dict[str, Rule]:
    """The keys a ``_target_`` class takes: its dataclass fields, by their annotations."""
    try:
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"{key}._target_", f"no such class {target!r}") from None
    hints = typing.get_type_hints(cls)
    rules = {"_target_": STR}
    for f in dataclasses.fields(cls):
        if f.name not in skip:
            rules[f.name] = ESTIMATOR if f.name == "estimator" else _rule_of(f.name, hints.get(f.name))
    return rules


def _check_tree(prefix: str, node: Mapping, rules: Mapping[str, Any]) -> None:
    for name, v in node.items():
        key = f"{prefix}{name}"
        rule = rules.get(name)
        if rule is None:
            raise ConfigError(key, "unknown key", ", ".join(sorted(rules)) or "none")
        if isinstance(rule, Mapping):
            if not isinstance(v, Mapping):
                raise ConfigError(key, f"must be a group of keys, got {v!r}")
            _check_tree(key + ".", v, rule)
        elif rule.kind != "any" or v is None:
            rule.check(key, v)


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


def validate(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError, naming the key and what it allows, at the first key of ``cfg``
    that is unknown, of the wrong type or out of range, or that breaks a rule between keys.
    ``choices`` (Hydra's group choices) enables the rules about group choices."""
    c = _resolved(cfg)
    rules = _nest(TOP)
    rule = c.get("stepsize", {}).get("rule")
    Choice(*STEPSIZE).check("stepsize.rule", rule)
    rules["stepsize"] = {"rule": Choice(*STEPSIZE), **STEPSIZE[rule]}
    comp = c.get("compressor", {})
    method = c.get("method", {})
    for group in ("compressor", "method"):
        target = c.get(group, {}).get("_target_")
        if not isinstance(target, str):
            raise ConfigError(f"{group}._target_", "must name a class")
    rules["compressor"] = _fields(comp["_target_"], "compressor", ("float_bits", "index_bits"))
    rules["method"] = _fields(method["_target_"], "method", ("compressor", "participation"))
    # the sampling group before the method, whose estimator takes its values by interpolation
    order = sorted((k for k in c if k not in NOT_KEYS), key=lambda k: k != "sampling")
    _check_tree("", {k: c[k] for k in order}, rules)
    if "tune" in c:
        from efbench.tuning import TuneSpec

        if not isinstance(c["tune"], dict):
            raise ConfigError("tune", f"got {c['tune']!r}", "a tune config (+tune=stepsize)")
        TuneSpec.from_config(c["tune"])
    for check in CROSS:
        check(c, choices or {})
    _method_rules(cfg, c, choices or {})


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


def _some_budget(c: dict, choices: Mapping[str, str]) -> None:
    if all(c["budget"].get(k) is None for k in BUDGETS):
        raise ConfigError("budget", "set at least one of budget.iters, budget.bits, budget.epochs")


def _batch_within_m(c: dict, choices: Mapping[str, str]) -> None:
    batch, m = c["sampling"]["batch"], c["dataset"]["m"]
    est = c["method"].get("estimator", {})
    if est.get("kind", "full") != "full" and est.get("batch", batch) > m:
        raise ConfigError(
            "sampling.batch", f"{est.get('batch', batch)} draws from m = {m} rows per worker", f"1..{m}"
        )


def _shape(ds: dict) -> tuple[int | None, int | None]:
    """The dataset's rows and features as its config and the known files tell them."""
    from efbench.datasets import BREAST_CANCER_FEATURES, BREAST_CANCER_ROWS, LIBSVM_FILES

    if ds["source"] == "synthetic":
        syn = ds.get("synthetic", {})
        return syn.get("rows") or ds["n_workers"] * ds["m"], syn.get("features")
    if ds["source"] == "sklearn":
        return BREAST_CANCER_ROWS, BREAST_CANCER_FEATURES
    if ds["source"] == "counterexample":
        return 3, 3
    spec = LIBSVM_FILES.get(ds.get("libsvm_name"))
    return (spec.rows, spec.features) if spec else (None, None)


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


@functools.cache
def default_choice(group: str) -> str | None:
    """The option of ``group`` that efbench's config.yaml picks when the user picks none."""
    from importlib.resources import files

    for entry in OmegaConf.load(files("efbench.conf") / "config.yaml").defaults:
        if isinstance(entry, DictConfig) and group in entry:
            return entry[group]
    return None


def _chose(choices: Mapping[str, str], group: str) -> str | None:
    """The option of ``group`` picked other than by default (None: the default, or unknown)."""
    chosen = choices.get(group)
    return None if chosen == default_choice(group) else chosen


def _topology_only_decentralized(c: dict, choices: Mapping[str, str]) -> None:
    from efbench.methods import Decentralized

    chosen = _chose(choices, "topology")
    if chosen is not None and not issubclass(get_class(c["method"]["_target_"]), Decentralized):
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
        isinstance(base, (int, float)) and not isinstance(base, bool) and math.isfinite(base) and base > 0
    )
    if base not in ("theory", "reference") and not number:
        raise ConfigError("stepsize.base", f"got {base!r}", STEPSIZE["decreasing"]["base"].allowed())


def _collective_not_on_gossip(c: dict, choices: Mapping[str, str]) -> None:
    """A decentralized method gossips with its neighbours: a centralized collective set for it
    would be ignored, so it is refused."""
    from efbench.methods import Decentralized

    wanted = c.get("network", {}).get("collective", "auto")
    if wanted != "auto" and issubclass(get_class(c["method"]["_target_"]), Decentralized):
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
    if not (number and math.isfinite(v) and v >= 0):
        raise ConfigError("network.c_grad", f"got {v!r}", ("a number >= 0", "measured"))


def _method_rules(cfg: DictConfig, c: dict, choices: Mapping[str, str]) -> None:
    """The rules the method and compressor classes hold: the compressor's parameters against
    the dataset's dimension (K <= d, from the dataset's known shape), the compressor kinds
    the method accepts (both checked in building them), ef_signsgd's fixed sign and
    ``engine=numba`` only where the compiled step applies."""
    from efbench.methods import EFSignSGD, build_method

    _, d = _shape(c["dataset"])
    if d is None:  # a LIBSVM file not in the table: its shape is known once it is read
        return
    method = build_method(cfg, d, c["dataset"]["n_workers"])
    no_mu = c["problem"]["regularizer"] == "nonconvex" or c["problem"]["l2"] == 0
    if no_mu and c["dataset"]["source"] != "counterexample":  # the counterexample has its own l2
        _stepsize_without_mu(method, c, d)
    chosen = _chose(choices, "compressor")
    if isinstance(method, EFSignSGD) and chosen not in (None, "sign"):
        raise ConfigError(
            "compressor", f"method {method.name!r} always sends the scaled sign, got {chosen!r}", ("sign",)
        )
    if c["engine"] == "numba":
        why = method.unfused()
        if why is None and c["dataset"]["source"] == "counterexample":
            why = "the counterexample's quadratic problem has no compiled step"
        if why is not None:
            raise ConfigError("engine", f"numba cannot run this: {why}", ("auto", "numpy"))


class _WithoutMu(dict):
    """Stand-in constants of a problem without mu: mu and kappa NaN, the others 1."""

    def __missing__(self, key: str) -> float:
        return 1.0


_STAND_IN = ("L", "L_US", "L_IS", "L_S", "L_i_max", "L_i_mean", "L_tilde", "Lbar_i_min", "Lbar_i_mean")


def _stepsize_without_mu(method: Any, c: dict, d: int) -> None:
    """A method whose stepsize comes from mu (mem_sgd's a/(mu (b + k))) is refused on a
    problem without it (the nonconvex regularizer; l2 = 0, mu = 0): its schedule is built
    on stand-in constants with mu = NaN, and a NaN stepsize names the problem's key."""
    from efbench.stepsize import make_schedule

    ds = c["dataset"]
    probe = _WithoutMu(
        dict.fromkeys(_STAND_IN, 1.0), n=ds["n_workers"], m=ds["m"], d=d, mu=math.nan, kappa=math.nan
    )
    try:
        default = make_schedule(c["stepsize"], probe, method.estimator, lambda b: method.theory(probe, b))
        sched = method.schedule(default, probe)
    except (ArithmeticError, ValueError, KeyError):  # a rule the stand-ins cannot evaluate: the run's will
        return
    if math.isfinite(sched.gamma0):
        return
    if c["problem"]["regularizer"] == "nonconvex":
        key, why, allowed = "problem.regularizer", "the nonconvex problem has no mu", "l2"
    else:
        key, why, allowed = "problem.l2", "l2 = 0 makes mu = 0", "a number > 0"
    raise ConfigError(
        key, f"method {method.name!r} takes its stepsize from mu ({sched.formula}), and {why}", allowed
    )


def _regularizer(c: dict, choices: Mapping[str, str]) -> None:
    """``problem.regularizer=nonconvex`` (efbench.nonconvex): a logistic problem built from
    data, started at zero (it has no x*), on the numpy engine."""
    if c["problem"]["regularizer"] != "nonconvex":
        return
    if c["dataset"]["source"] == "counterexample":
        raise ConfigError("problem.regularizer", "the counterexample is a problem of its own", ("l2",))
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
    _seeds,
    _some_budget,
    _batch_within_m,
    _rows_enough,
    _topology_only_decentralized,
    _collective_not_on_gossip,
    _stepsize_base,
    _c_grad,
    _regularizer,
)
