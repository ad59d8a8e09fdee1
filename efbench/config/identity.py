"""What makes two runs the same run, and which runs can share a batch.

A run's config hash (:func:`config_hash`) names its result: a finished run whose hash
matches is not run again. Runs that differ only in :data:`BATCHABLE` keys share the problem,
array shapes and code path (:func:`group_key`), so the efbench sweeper groups them into one
job (:data:`BATCH_KEY`) and the engine advances them together.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from efbench.config import legacy

# Keys that do not change a run's result: excluded from the config hash used to resume.
# (tune: how a sweep picks among runs, not what a run computes)
VOLATILE_KEYS = ("progress", "data.dir", "data.mirror", "seeds", "tune")
# Keys a run of a batch may set for itself: they change neither the problem, nor array
# shapes, nor the code path (efbench.engine.loop runs such runs together).
BATCHABLE = (
    "seed",
    "stepsize",
    "compressor.lam",
    "compressor.k",
    "compressor.s",
    "compressor.delta",
    "method.estimator.p",
    "method.zeta",
    "method.alpha",
    "method.eta",
    "method.a",
    "method.b",
    "x0",
    "dataset.x0_shift",
    "network",  # simulated time only: any network.<key>
)
BATCH_KEY = "efbench_batch"  # a grouped job's runs, as each run's own overrides (JSON)
# the batchable keys that are leaves of the config's top level, not config groups (the
# others are dotted; a bare group name such as ``stepsize=constant`` changes the defaults
# list: not batchable)
TOP_LEVEL = tuple(b for b in BATCHABLE if "." not in b and not files("efbench.conf").joinpath(b).is_dir())


# keys added after results existed, hashed only when set to something else than the value
# that reproduces the earlier behaviour, so finished runs keep their hash and resume
NEUTRAL = {
    "participation": {"kind": "full"},
    "problem.regularizer": "l2",
    "problem.lam_nc": 0.1,
    "diverge_level": 10,  # finished_before judges an earlier result by this rule again
}


def _hash_without(cfg: DictConfig, keys: tuple[str, ...]) -> str:
    """Hash of the resolved config without Hydra's own node, the dotted ``keys`` and the
    NEUTRAL keys at their neutral value."""
    try:
        c = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an invalid config (schema.validate says why): hashed as written
        c = OmegaConf.to_container(cfg, resolve=False)
    c.pop("hydra", None)

    def at(key: str) -> Any:  # the value at a dotted key (None where a group is not one)
        node = c
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    for node in c.values():  # a class is hashed by its name before the layered package
        if isinstance(node, dict) and isinstance(node.get("_target_"), str):
            node["_target_"] = legacy.as_before(node["_target_"])
    neutral = [k for k, v in NEUTRAL.items() if at(k) == v]
    if at("problem.regularizer") in ("l2", None):  # lam_nc is unused then
        neutral.append("problem.lam_nc")
    for key in (*keys, *neutral):
        *head, last = key.split(".")
        node = c
        for h in head:
            node = node.get(h) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config (without Hydra's own node and volatile keys)."""
    return _hash_without(cfg, VOLATILE_KEYS)


def group_key(cfg: DictConfig) -> str:
    """Hash of the config without the keys a run of a batch may set for itself (BATCHABLE):
    runs with equal keys share a problem, shapes and code path, so they can run together."""
    return _hash_without(cfg, (*VOLATILE_KEYS, *BATCHABLE))


def batchable(line: str) -> bool:
    """Whether the override ``key=value`` sets a batchable key (never an added, deleted or
    group override)."""
    key, sep, _ = line.partition("=")
    if not sep or key.startswith(("+", "~")) or key.endswith("@"):
        return False
    if "." not in key and key not in TOP_LEVEL:
        return False
    return any(key == b or key.startswith(b + ".") for b in BATCHABLE)


def batch_configs(cfg: DictConfig, hc: DictConfig) -> tuple[list[DictConfig], list[Path]]:
    """The runs of a grouped job: this job's config with each run's own overrides applied,
    each in the directory it would have had as a job of its own."""
    runs = json.loads(cfg[BATCH_KEY])
    common = [line for line in hc.overrides.task if not line.lstrip("+").startswith(BATCH_KEY + "=")]
    base = cfg.copy()
    with open_dict(base):
        del base[BATCH_KEY]
    parser = OverridesParser.create()
    cfgs, dirs = [], []
    for lines in runs:
        c = base.copy()
        for o in parser.parse_overrides(lines):
            OmegaConf.update(c, o.key_or_group, o.value(), merge=False)
        cfgs.append(c)
        # from the launch directory: with hydra.job.chdir=true this job runs in .batches/<n>
        dirs.append(Path(hc.runtime.cwd) / hc.sweep.dir / override_dirname([*common, *lines], hc))
    return cfgs, dirs


NAME_BYTES = 200  # file systems allow 255 bytes per path component
# tune.<key>=<value> items of an override dirname (a list value may hold commas): how a sweep
# picks among its runs, not what a run computes, so not part of a run's folder
TUNE_ITEM = re.compile(r"(?:^|,)tune\.[A-Za-z_]+=(?:\[[^\]]*\]|[^,]*)")


def dirname_within_limits(name: str) -> str:
    """A sweep subdirectory name: ``name`` (the job's overrides, readable, without the
    ``tune.*`` settings) while it fits in NAME_BYTES, else its first part and a hash of the
    whole, so that however many keys are swept the name is legal, readable and still one per
    job."""
    name = TUNE_ITEM.sub("", name).lstrip(",")
    if len(name.encode()) <= NAME_BYTES:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    head = name.encode()[: NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}~{digest}"


def override_dirname(lines: list[str], hc: DictConfig) -> str:
    """The sweep subdirectory a job with these overrides would get alone."""
    spec = hc.job.config.override_dirname
    parser = OverridesParser.create()
    keep = sorted(
        o.input_line for o in parser.parse_overrides(lines) if o.key_or_group not in spec.exclude_keys
    )
    return dirname_within_limits(spec.item_sep.join(keep).replace("=", spec.kv_sep))
