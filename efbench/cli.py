"""The ``efbench`` command: a Hydra application around :func:`efbench.runner.run_batch`."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from efbench.errors import EfbenchError

log = logging.getLogger("efbench")
BATCH_KEY = "efbench_batch"  # set by the efbench sweeper (hydra_plugins/efbench_sweeper)
SWEEP_PID = "EFBENCH_SWEEP_PID"  # the sweeping process, set by the efbench sweeper


def override_dirname(lines: list[str], hc: DictConfig) -> str:
    """The ``hydra.job.override_dirname`` a job with these overrides would get alone."""
    spec = hc.job.config.override_dirname
    parser = OverridesParser.create()
    keep = sorted(
        o.input_line for o in parser.parse_overrides(lines) if o.key_or_group not in spec.exclude_keys
    )
    return spec.item_sep.join(keep).replace("=", spec.kv_sep)


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
        dirs.append(Path(hc.sweep.dir) / override_dirname([*common, *lines], hc))
    return cfgs, dirs


@hydra.main(config_path="pkg://efbench.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration (or a sweep's group of runs); in a multirun a failing job is
    recorded and the sweep goes on."""
    from efbench.runner import run_batch, run_seeds
    from efbench.signals import interrupted_by, stop_when_parent_dies, terminate_like_interrupt

    terminate_like_interrupt()
    worker = os.environ.get(SWEEP_PID) == str(os.getppid())  # a launcher's worker process
    if worker:
        stop_when_parent_dies()
    hc = HydraConfig.get()
    try:
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        if cfg.get(BATCH_KEY):
            cfgs, dirs = batch_configs(cfg, hc)
            summaries = run_batch(cfgs, dirs, [choices] * len(cfgs))
        elif cfg.get("seeds"):
            summaries = run_seeds(cfg, list(cfg.seeds), hc.runtime.output_dir, choices)
        else:
            summaries = run_batch([cfg], [hc.runtime.output_dir], [choices])
    except EfbenchError as exc:
        log.error("efbench: error: %s", exc)
        if hc.mode == RunMode.MULTIRUN:
            return None
        sys.exit(2)
    except (KeyboardInterrupt, SystemError) as exc:  # numba wraps a signal's exception in SystemError
        stop = interrupted_by(exc)
        if stop is None:
            raise
        if worker:  # its runs are written: end, so the sweeping process sees it done
            logging.shutdown()
            os._exit(stop.exit_code)
        if hc.mode == RunMode.MULTIRUN:
            raise stop from None  # the sweeper stops the sweep and reports
        log.error("efbench: %s", stop)
        sys.exit(stop.exit_code)
    gaps = [s["final"]["gap"] for s in summaries if "final" in s]
    return float(sum(gaps) / len(gaps)) if gaps else None
