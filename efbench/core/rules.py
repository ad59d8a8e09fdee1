"""What a config key takes: a :class:`Rule` (a kind, bounds, null, and at most a bound by the
data's dimension d), and :func:`ruled`, which declares a method's or compressor's field with
its rule, so the rule lives on the field it constrains and a new class brings its own.

Pure descriptions: the config is read (and these rules applied to it) in
:mod:`efbench.config.schema`, which walks every field of the class a ``_target_`` names.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from efbench.errors import ConfigError

# The smallest normal float: a positive number below it (a subnormal) has a reciprocal that
# overflows and products that vanish, so 1e-320 would reach a run as infinity or zero.
TINY = sys.float_info.min


@dataclass(frozen=True)
class Bound:
    """At most ``most(d)`` for data of dimension d (K <= d for a Top-K of d entries):
    ``letter`` names the value and ``text`` reads the bound ("d", "d(d+1)/2")."""

    letter: str
    most: Callable[[int], int]
    text: str


@dataclass(frozen=True)
class Rule:
    """What one key takes: a kind (int, num, bool, str, choice, any), bounds, null, and a
    bound by the dimension d checked once d is known (:meth:`check_dimension`)."""

    kind: str
    lo: float = -math.inf
    lo_open: bool = False
    hi: float = math.inf
    choices: tuple = ()
    null: bool = False
    text: str = ""
    by_d: Bound | None = None
    infinite: bool = False  # a number rule that takes inf too (the p of ||x||_p)
    doc: str = ""  # what the key means, for efbench --help

    def described(self, doc: str) -> Rule:
        """This rule with the key's meaning ``doc``, shown by ``efbench --help``."""
        return dataclasses.replace(self, doc=doc)

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
            out = noun + (" " + " and ".join(parts) if parts else "") + (" or inf" if self.infinite else "")
        else:
            out = "a non-empty string" if self.kind == "str" else "anything"
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
            ok = isinstance(v, str) and v != ""
        elif self.kind == "choice":
            # true == 1 to Python: a bool only where a bool is a choice (not FedNL's option 1)
            ok = v in self.choices and (
                not isinstance(v, bool) or any(isinstance(c, bool) for c in self.choices)
            )
        elif self.kind in ("int", "num"):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            finite = math.isfinite(v) or (self.infinite and v == math.inf) if number else False
            ok = number and (self.kind == "num" or isinstance(v, int)) and finite
            ok = ok and (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi
            if ok and 0 < abs(v) < TINY:
                raise ConfigError(
                    key,
                    f"got {v!r}: a subnormal float, below {TINY:.3g} (its reciprocal overflows)",
                    self.allowed(),
                )
        if not ok:
            raise ConfigError(key, f"got {v!r}", self.allowed())

    def check_dimension(self, key: str, v: Any, d: int) -> None:
        """Refuse ``v`` (already :meth:`check`-ed) above its bound by the dimension d."""
        if self.by_d is not None and v is not None and v > self.by_d.most(d):
            letter, most = self.by_d.letter, self.by_d.most(d)
            raise ConfigError(
                key,
                f"{letter}={v} is out of range for d={d}",
                f"{self.lo:g} <= {letter} <= {self.by_d.text} = {most}",
            )


def Int(lo: float = -math.inf, null: bool = False, by_d: Bound | None = None) -> Rule:
    return Rule("int", lo=lo, null=null, by_d=by_d)


def Num(lo: float = -math.inf, lo_open: bool = False, hi: float = math.inf, null: bool = False) -> Rule:
    return Rule("num", lo=lo, lo_open=lo_open, hi=hi, null=null)


def Choice(*choices: Any) -> Rule:
    return Rule("choice", choices=choices)


BOOL, STR, ANY = Rule("bool"), Rule("str"), Rule("any")
POSITIVE = Num(0, lo_open=True)
PROB = Num(0, lo_open=True, hi=1)
PROB_OR_NULL = Num(0, lo_open=True, hi=1, null=True)  # null: the method's own choice


def ruled(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and the rule its config key follows
    (``k: int = ruled(1, Int(1))``), read back by :func:`rule_of`."""
    return dataclasses.field(default=default, metadata={"rule": rule})


def rule_of(f: dataclasses.Field) -> Rule | None:
    """The rule declared on a dataclass field with :func:`ruled`, or None."""
    return f.metadata.get("rule")


def check_fields(obj: Any, group: str) -> None:
    """Apply the rule declared on each field of the dataclass ``obj`` to its value, naming the
    key ``group.field``: the checks the config walker makes, for an object built in Python."""
    for f in dataclasses.fields(obj):
        rule = rule_of(f)
        if rule is not None and f.init:
            rule.check(f"{group}.{f.name}", getattr(obj, f.name))
