"""What a batch counts: each run's cumulative uplink and downlink bits, coordinates, oracle
calls and rounds (:class:`Counters`), and its log points as columns (:class:`Points`), the
same for the numpy engine (:mod:`efbench.engine.loop`) and the compiled one
(:mod:`efbench.engine.fused`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from efbench.core import network
from efbench.methods.base import Round

if TYPE_CHECKING:
    from efbench.engine.loop import Limits


@dataclass
class Points:
    """Log points of the runs of a batch, as columns: each point's run, step, model and
    cumulative counts (one entry per point; ``net`` and ``X`` have a row per point)."""

    run: np.ndarray  # (S,) index of the point's run in the batch
    step: np.ndarray  # (S,) int64
    X: np.ndarray  # (S, d) the run's model there
    bits_sum: np.ndarray  # uplink bits summed over the workers
    bits_max: np.ndarray  # the largest worker's uplink bits
    nnz_sum: np.ndarray
    calls: np.ndarray  # oracle calls per worker
    net: np.ndarray  # (S, len(network.COUNTS))
    rounds: np.ndarray
    rounds_down: np.ndarray
    bits_down: np.ndarray
    skipped: np.ndarray
    measured: dict[str, np.ndarray]  # the method's measured metrics
    time: np.ndarray  # wall seconds since the batch started, when the run was there

    @staticmethod
    def concat(parts: list[Points]) -> Points:
        """The points of ``parts`` in order (they share their measured metrics' names)."""
        return Points(
            **{
                f.name: (
                    {k: np.concatenate([p.measured[k] for p in parts]) for k in parts[0].measured}
                    if f.name == "measured"
                    else np.concatenate([getattr(p, f.name) for p in parts])
                )
                for f in fields(Points)
            }
        )


class Counters:
    """Per-run cumulative counts of a batch: uplink bits and coordinates per worker (R, n),
    downlink bits, oracle calls per worker, skipped messages, rounds, rounds with a
    broadcast, the latest rounds in a row without uplink bits (R,), and the per-round network
    quantities (R, len(network.COUNTS))."""

    def __init__(self, R: int, n: int, m: int):
        self.m, self.n = m, n
        self.bits = np.zeros((R, n), dtype=np.int64)
        self.nnz = np.zeros((R, n), dtype=np.int64)
        self.bits_down = np.zeros(R, dtype=np.int64)
        self.calls = np.zeros(R)
        self.skipped = np.zeros(R, dtype=np.int64)
        self.rounds = np.zeros(R, dtype=np.int64)
        self.rounds_down = np.zeros(R, dtype=np.int64)
        self.silent = np.zeros(R, dtype=np.int64)
        self.net = np.zeros((R, len(network.COUNTS)))

    def add(self, r: int, rnd: Round) -> None:
        self.skipped[r] += rnd.skipped
        self.rounds[r] += 1
        self.rounds_down[r] += rnd.bits_down > 0
        self.silent[r] = 0 if rnd.bits_up.any() else self.silent[r] + 1
        link = rnd.bits_up if rnd.link_bits is None else rnd.link_bits
        network.add_round(
            self.net[r],
            float(rnd.bits_up.max()),
            float(rnd.bits_up.min()),
            float(np.max(link)),
            bool(rnd.bits_up.any()),
            float(np.max(rnd.calls)),
        )
        self.bits[r] += rnd.bits_up
        self.bits_down[r] += rnd.bits_down
        self.nnz[r] += rnd.nnz
        self.calls[r] += rnd.calls if np.isscalar(rnd.calls) else float(rnd.calls.mean())

    def point(self, r: int, step: int, x: np.ndarray, measured: dict[str, float], time: float) -> Points:
        """Run r's counts now, with its model x and its method's measured metrics."""
        one = _column_of_one
        return Points(
            np.array([r]),
            np.array([step], dtype=np.int64),
            x[None].copy(),
            one(self.bits[r].sum()),
            one(self.bits[r].max()),
            one(self.nnz[r].sum()),
            one(self.calls[r]),
            self.net[r][None].copy(),
            one(self.rounds[r]),
            one(self.rounds_down[r]),
            one(self.bits_down[r]),
            one(self.skipped[r]),
            {k: one(v) for k, v in measured.items()},
            one(time),
        )

    def over_budget(self, r: int, lim: Limits) -> bool:
        """Checked before each step, as the compiled step checks it (bits are integers, so the
        mean is exact in any summation order)."""
        return (
            self.bits[r].sum() / self.n >= lim.bits
            or self.calls[r] / self.m >= lim.epochs
            or self.stalled(r, lim)
        )

    def stalled(self, r: int, lim: Limits) -> bool:
        """Run r, on a bits-only budget, has sent no uplink bits in its last s rounds, s >=
        max(STALL_STEPS, the rounds before them): it stops, as the compiled step stops it.
        A silence that lasts as long as the whole run before it is not a lazy method's pause
        (LAG's skipped rounds, a hard threshold filling its error memory): the bits would reach
        the budget never, or only after as many steps again."""
        s = self.silent[r]
        return bool(s >= max(lim.stall_floor, self.rounds[r] - s))


def _column_of_one(v: float) -> np.ndarray:
    return np.array([v], dtype=np.float64)
