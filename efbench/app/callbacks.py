"""Hydra callbacks of the ``efbench`` command.

:class:`SweepConfigCheck` (always on, ``efbench/conf/config.yaml``) refuses a sweep's config
launched without ``-m``; :class:`Figures` (opt-in: ``hydra/callbacks=figures``) draws a
finished multirun's figures into ``<sweep dir>/figures``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from efbench.errors import ConfigError, EfbenchError

# not the "efbench" logger: in the sweeping process it may still carry the last job's [job N]
log = logging.getLogger(__name__)


def sweep_error(config: DictConfig) -> ConfigError | None:
    """Why ``config`` cannot run as a single run, or None: it sets ``hydra.sweeper.params``
    (an experiment such as paper_exp1 declares its sweep there), which only ``-m`` expands;
    run alone, it would silently run the group's defaults instead of the sweep."""
    params = config.hydra.sweeper.get("params") or {}
    if not params:
        return None
    swept = ", ".join(str(k) for k in params)
    experiment = config.hydra.runtime.choices.get("experiment")
    if experiment:
        return ConfigError(
            "experiment",
            f"{experiment} is a sweep (over {swept}): add -m to run it (efbench -m +experiment={experiment})",
        )
    return ConfigError("hydra.sweeper.params", f"a sweep (over {swept}): add -m to run it")


OUTPUT: list[str] = []  # the folder this launch writes into, for an error that cannot name its file


def _note_output(config: DictConfig, key: str) -> None:
    try:
        OUTPUT[:] = [str(OmegaConf.select(config, key))]
    except Exception:  # ${now:...} before Hydra resolves it: the folder stays unnamed
        OUTPUT.clear()


class SweepConfigCheck(Callback):
    """Refuses, before the run folder is made, a config that declares a sweep but was
    launched as a single run (no ``-m``): one line, exit code 2. Notes the launch's folder
    (:data:`OUTPUT`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _note_output(config, "hydra.sweep.dir")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _note_output(config, "hydra.run.dir")
        error = sweep_error(config)
        if error is not None:
            # Hydra turns a callback's exception into a warning: exiting is the way to stop
            sys.stderr.write(f"efbench: error: {error}\n")
            sys.exit(2)


class Figures(Callback):
    """When a multirun ends, collects its runs (:func:`efbench.analysis.collect.collect`) and draws
    ``y`` against each axis of ``x`` (:func:`efbench.analysis.plots.plot_curves`), one panel per value
    of ``panel`` and one line per value of ``hue``, as PNG and PDF into
    ``<sweep dir>/figures`` -- what ``efbench-figures <sweep dir>`` draws.

    A sweep that ends with a failed run exits before this callback (exit code 1); draw its
    figures with ``efbench-figures``."""

    def __init__(
        self,
        x: Sequence[str] = ("iterations", "epochs", "bits"),
        y: str = "rel_gap",
        panel: str = "dataset",
        hue: str = "label",
        logx: bool = False,
    ) -> None:
        from efbench.analysis.plots import X_AXES

        unknown = [a for a in x if a not in X_AXES]
        if unknown:
            raise ConfigError("hydra.callbacks.figures.x", f"unknown axis {unknown[0]!r}", X_AXES)
        self.x, self.y, self.panel, self.hue, self.logx = list(x), y, panel, hue, bool(logx)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir).absolute()
        logging.getLogger("fontTools").setLevel(logging.WARNING)  # the PDF's font subsetting chatter
        try:
            written = self.draw(root)
        except EfbenchError as exc:
            log.error("figures: %s", exc)
            return
        stems = dict.fromkeys(p.stem for p in written)  # each figure is written in several formats
        log.info("figures in %s: %s", root / "figures", ", ".join(stems))

    def draw(self, root: Path) -> list[Path]:
        """Draw the figures of the runs under ``root``; return the files written."""
        from efbench.analysis.collect import collect
        from efbench.analysis.plots import X_AXES, plot_curves, save

        trace, _ = collect(root)
        if trace.empty:
            raise EfbenchError(f"no runs with a trace under {root}")
        for key, col in (("y", self.y), ("panel", self.panel), ("hue", self.hue)):
            if col not in trace.columns:
                raise ConfigError(f"hydra.callbacks.figures.{key}", f"no column {col!r}", trace.columns)
        written = []
        for axis in self.x:
            if X_AXES[axis] not in trace.columns:
                log.warning("figures: no %s column in the traces: no figure against %s", X_AXES[axis], axis)
                continue
            fig = plot_curves(trace, x=X_AXES[axis], y=self.y, panel=self.panel, hue=self.hue, logx=self.logx)
            written += save(fig, root / "figures" / f"{self.y}_vs_{axis}")
        return written
