"""Partial participation: which workers take part in a round.

``full``: every worker, every round (no draw). ``nice``: tau workers drawn uniformly
without replacement (tau-nice sampling), p_i = tau/n. ``independent``: each worker on its
own with probability p, p_i = p (a round may have no worker). The probabilities p_i are
what the methods' analyses use (EF21-PP: Fatkhullin et al. 2021; PP-MARINA: Gorbunov et
al. 2021). A method takes a ``participation`` other than ``full`` only where its paper
covers it (``Method.partial``); the schema refuses it elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from efbench.errors import ConfigError

KINDS = ("full", "nice", "independent")


@dataclass(frozen=True)
class Participation:
    kind: str = "full"
    size: int | None = None  # nice: workers per round
    p: float | None = None  # independent: each worker's probability

    def check(self, n: int) -> None:
        """Raise ConfigError naming the key unless the setting fits n workers."""
        if self.kind not in KINDS:
            raise ConfigError("participation.kind", f"unknown value {self.kind!r}", KINDS)
        if self.kind == "nice" and (not isinstance(self.size, int) or not 1 <= self.size <= n):
            raise ConfigError(
                "participation.size", f"must be an integer in 1..n_workers = {n}, got {self.size}"
            )
        if self.kind == "independent" and (self.p is None or not 0.0 < self.p <= 1.0):
            raise ConfigError("participation.p", f"must be in (0, 1], got {self.p}")

    @property
    def full(self) -> bool:
        return self.kind == "full"

    def probability(self, n: int) -> float:
        """p_i, the same for every worker: 1, tau/n or p."""
        return {"full": 1.0, "nice": (self.size or n) / n, "independent": self.p or 1.0}[self.kind]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The round's participants as a boolean mask (n,); ``full`` draws nothing."""
        if self.kind == "full":
            return np.ones(n, dtype=bool)
        if self.kind == "nice":
            mask = np.zeros(n, dtype=bool)
            mask[rng.choice(n, size=self.size, replace=False)] = True
            return mask
        return rng.random(n) < self.p
