"""The ``efbench`` command: a Hydra application around :func:`efbench.runner.run`."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from efbench.errors import EfbenchError
from efbench.runner import run, run_seeds

log = logging.getLogger("efbench")


@hydra.main(config_path="pkg://efbench.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration; in a multirun a failing job is recorded and the sweep goes on."""
    hc = HydraConfig.get()
    try:
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        if cfg.get("seeds"):
            summaries = run_seeds(cfg, list(cfg.seeds), hc.runtime.output_dir, choices)
            return float(sum(s["final"]["gap"] for s in summaries) / len(summaries))
        summary = run(cfg, hc.runtime.output_dir, choices)
    except EfbenchError as exc:
        log.error("efbench: error: %s", exc)
        if hc.mode == RunMode.MULTIRUN:
            return None
        sys.exit(2)
    return summary["final"]["gap"]
