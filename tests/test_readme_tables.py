"""The README's tables of options are checked against the registries they describe: every
option file of a config group is named in its row of the "group | options" table, and every
method is in exactly one row of "Methods and the compressors they take", whose "takes"
column is what its class accepts (``Method.accepts``, ``Method.compressed``). A new option
or a changed rule fails here until the README says it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from efbench.app.cli import _target
from efbench.config.schema import _class, options

README = Path(__file__).resolve().parents[1] / "README.md"
EXACT = ("method", "compressor", "participation", "sampling", "stepsize", "topology")


def names(cell: str) -> set[str]:
    """The backticked names of a table cell, ``a1``..``a5`` and ``a1..3`` ranges expanded,
    and ``ec_sgd*`` kept as the prefix it is."""
    out: set[str] = set()
    for m in re.finditer(r"`([\w*-]+?)(\d+)`\.\.`([\w-]+?)(\d+)`", cell):
        out |= {f"{m[1]}{i}" for i in range(int(m[2]), int(m[4]) + 1)}
    for m in re.finditer(r"`([\w-]+?)(\d+)\.\.(\d+)`", cell):
        out |= {f"{m[1]}{i}" for i in range(int(m[2]), int(m[3]) + 1)}
    return out | set(re.findall(r"`([\w*-]+)`", cell))


def rows(header: str) -> dict[str, list[str]]:
    """The rows of the README table whose header line starts with ``header``: first cell ->
    the other cells."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def test_names_reads_ranges_and_prefixes():
    assert names("`3pcv1`..`3pcv5`, `ef21`") == {"3pcv1", "3pcv2", "3pcv3", "3pcv4", "3pcv5", "ef21"}
    assert {"paper_exp1", "paper_exp3"} <= names("`paper_exp1..3` (and `paper_reference`)")


@pytest.mark.parametrize("group", (*EXACT, "dataset"))
def test_each_groups_row_names_every_option(group):
    listed = names(rows("| group | options |")[f"`{group}`"][0])
    assert set(options(group)) - listed == set(), f"README's {group} row lacks these options"


TAKES = {  # the README's "takes" column -> (compressed, accepts)
    "none": (False, None),
    "any": (True, {"identity", "contractive", "unbiased", "absolute"}),
    "identity, contractive": (True, {"identity", "contractive"}),
    "identity, unbiased": (True, {"identity", "unbiased"}),
    "identity, contractive, unbiased": (True, {"identity", "contractive", "unbiased"}),
    "always the scaled sign": (True, None),
}


def test_the_methods_table_is_what_each_class_accepts():
    table = rows("| method | takes | why |")
    methods = options("method")
    seen: dict[str, str] = {}
    for first, (takes, _why) in table.items():
        kind = next(k for k in sorted(TAKES, key=len, reverse=True) if takes.startswith(k))
        compressed, accepts = TAKES[kind]
        for name in names(first):
            matched = [m for m in methods if m == name or (name.endswith("*") and m.startswith(name[:-1]))]
            assert matched, f"README's methods table names {name}, no method option"
            for m in matched:
                assert m not in seen, f"{m} in two rows"
                seen[m] = kind
                cls = _class(_target(methods, m), "method._target_")
                if accepts is not None:
                    assert set(cls.accepts) == accepts and cls.compressed, (m, kind, cls.accepts)
                elif not compressed:
                    assert not cls.compressed, (m, "the README says it takes no compressor")
    assert set(methods) - set(seen) == set(), "methods missing from the README's methods table"
