"""The ``estimator`` block of a method's config, typed, with its defaults in one place:
which gradient estimator a method's workers use (the full local gradient, minibatch SGD, or
L-SVRG), how rows are sampled and how many per step, and L-SVRG's refresh probability and
coin. :func:`efbench.methods.estimators.make_estimator` builds the estimator from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

KINDS = ("full", "sgd", "lsvrg")
# the smoothness constant of each built-in sampling (a user's sampling: L_S, its own)
SMOOTHNESS = {"uniform": "L_US", "importance": "L_IS"}


@dataclass(frozen=True)
class EstimatorSpec:
    """kind: full | sgd | lsvrg; sampling: a sampling's name (or a class path); batch: rows
    drawn per step (tau); p: L-SVRG's refresh probability (None: 1/m); coin: shared |
    per_worker (one L-SVRG coin for all workers, or one each)."""

    kind: str = "full"
    sampling: str = "uniform"
    batch: int = 1
    p: float | None = None
    coin: str = "shared"

    @classmethod
    def of(cls, block: Mapping[str, Any] | EstimatorSpec) -> EstimatorSpec:
        """The spec of an ``estimator`` config block (keys it does not set: the defaults)."""
        if isinstance(block, EstimatorSpec):
            return block
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in block.items() if k in names})

    @property
    def stochastic(self) -> bool:
        """Whether the workers sample rows (any kind but ``full``)."""
        return self.kind != "full"

    @property
    def smoothness(self) -> str:
        """The name of the sampling's smoothness constant: L_US, L_IS or L_S."""
        return SMOOTHNESS.get(self.sampling, "L_S")
