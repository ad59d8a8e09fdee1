"""The ``tune`` block (``+tune=stepsize``): which batchable key is tuned over which grid, and
by what criterion the best value is picked (:mod:`efbench.analysis.tuning` picks it)."""

from __future__ import annotations

from dataclasses import dataclass

from efbench.config.identity import BATCHABLE
from efbench.errors import ConfigError

CRITERIA = {
    "bits": "bits_up_mean",
    "iterations": "step",
    "epochs": "epochs",
    "time": "time_sim",
    "final": None,
}
METRICS = ("rel_gap", "gap", "grad_norm2", "dist2")


@dataclass(frozen=True)
class TuneSpec:
    """The ``tune`` block of a run's config."""

    key: str = "stepsize.multiplier"
    grid: tuple[float, ...] = tuple(2.0**k for k in range(-4, 5))
    criterion: str = "bits"
    target: float = 1e-3
    metric: str = "rel_gap"
    select_seeds: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, block: dict) -> TuneSpec:
        """The spec of a ``tune`` config block, checked (ConfigError naming the key)."""
        known = {"key", "grid", "criterion", "target", "metric", "select_seeds"}
        for k in block:
            if k not in known:
                raise ConfigError(f"tune.{k}", "unknown key", ", ".join(sorted(known)))
        spec = cls(
            key=str(block.get("key", cls.key)),
            grid=tuple(block.get("grid") or cls.grid),
            criterion=str(block.get("criterion", cls.criterion)),
            target=block.get("target", cls.target),
            metric=str(block.get("metric", cls.metric)),
            select_seeds=tuple(block.get("select_seeds") or ()),
        )
        spec.check()
        return spec

    def check(self) -> None:
        if not any(self.key == b or self.key.startswith(b + ".") for b in BATCHABLE) or "." not in self.key:
            raise ConfigError(
                "tune.key", f"got {self.key!r}", "a batchable dotted key: " + ", ".join(BATCHABLE)
            )
        if self.key.split(".")[0] == "seed":
            raise ConfigError("tune.key", "the seed is not a hyperparameter")
        if len(self.grid) < 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.grid
        ):
            raise ConfigError("tune.grid", f"got {list(self.grid)!r}", "a list of at least two numbers")
        if self.criterion not in CRITERIA:
            raise ConfigError("tune.criterion", f"got {self.criterion!r}", ", ".join(CRITERIA))
        if not isinstance(self.target, (int, float)) or isinstance(self.target, bool) or not self.target > 0:
            raise ConfigError("tune.target", f"got {self.target!r}", "a number > 0")
        if self.metric not in METRICS:
            raise ConfigError("tune.metric", f"got {self.metric!r}", ", ".join(METRICS))
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.select_seeds):
            raise ConfigError(
                "tune.select_seeds", f"got {list(self.select_seeds)!r}", "null or a list of integers >= 0"
            )

    def describe(self) -> str:
        """How the pick is made, for a report: 'median over seeds of bits to rel_gap 0.001'."""
        what = (
            f"the final {self.metric}"
            if self.criterion == "final"
            else f"{self.criterion} to {self.metric} {self.target:g} (interpolated)"
        )
        seeds = (
            f"selection seeds {', '.join(map(str, self.select_seeds))}" if self.select_seeds else "every seed"
        )
        return f"the median over {seeds} of {what}"

    def sweep_value(self) -> str:
        """The grid as a Hydra sweep (``0.0625,0.125,...``)."""
        return ",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in self.grid)
