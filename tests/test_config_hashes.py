"""A finished run resumes only while its config hash is the same: the hash of every group
option (each method, compressor, dataset, sampling, stepsize, network, topology,
participation and experiment, the rest at their defaults) is pinned in
``tests/data/config_hashes.json``, written by the code before the package was split into
layers (issue 22). Moving a class (its ``_target_``) or a key must not change one.

Regenerate only for a deliberate change of what a run computes:
``python tests/test_config_hashes.py --write``.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path

from test_cli import cfg_of

from efbench.config.identity import config_hash

PINNED = Path(__file__).with_name("data") / "config_hashes.json"
GROUPS = ("method", "compressor", "dataset", "sampling", "stepsize", "network", "topology", "participation")
PREFIX = {"experiment": "+experiment", "tune": "+tune"}


def lines() -> list[str]:
    out = []
    for group in (*GROUPS, *PREFIX):
        names = (
            p.name[:-5] for p in files("efbench.conf").joinpath(group).iterdir() if p.name.endswith(".yaml")
        )
        out += [f"{PREFIX.get(group, group)}={name}" for name in sorted(names)]
    return out


def test_every_group_options_config_hash_is_as_pinned():
    pinned = json.loads(PINNED.read_text())
    assert {line: config_hash(cfg_of(line)) for line in pinned} == pinned


def test_every_option_is_pinned():
    assert set(lines()) <= set(json.loads(PINNED.read_text()))


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    found = {line: config_hash(cfg_of(line)) for line in lines()}
    PINNED.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")


def test_a_config_saved_with_the_old_class_paths_loads_and_keeps_its_hash():
    from omegaconf import OmegaConf

    from efbench.config.build import build_method
    from efbench.config.schema import validate
    from efbench.methods.threepc import EF21

    cfg = cfg_of("method=ef21", "compressor=topk")
    old = OmegaConf.to_container(cfg)
    old["method"]["_target_"], old["compressor"]["_target_"] = (
        "efbench.methods.EF21",
        "efbench.compressors.TopK",
    )
    old = OmegaConf.create(old)
    assert config_hash(old) == config_hash(cfg)
    validate(old)
    assert type(build_method(old, d=10)) is EF21
