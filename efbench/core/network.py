"""Simulated wall-clock time of a run under a network profile (SPEC.md section 8).

The alpha-beta model: a message of b bits over one link costs ``alpha + b / beta`` seconds
(alpha the latency, beta the bandwidth in bit/s). A round costs its compute plus its
communication, by the collective the method uses:

* compute: ``c_grad x`` the slowest worker's gradient-oracle calls this round (a sample
  gradient is one call, a full local gradient m); ``c_grad=measured`` takes the run's own
  stepping seconds per oracle call on this machine (the steps' wall time over the n workers'
  calls, so it includes compression and bookkeeping), then the column depends on the
  machine and is not reproducible bit for bit;
* ``ps`` (parameter server: centralized compressed methods): the workers' messages
  b_i reach the server, ``alpha + max_i b_i / beta_up`` when it receives on separate links
  in parallel (``server=parallel``), ``alpha + sum_i b_i / beta_server`` when they share
  its link (``server=shared``); the broadcast back costs ``alpha + b_down / beta_down``
  (parallel) or ``alpha + n b_down / beta_server`` (shared). A direction with no bits in a
  round (every worker lazy, no broadcast) costs nothing, latency included;
* ``allreduce`` (dense, uncompressed methods, as practice sums them in transit): a ring
  all-reduce of D = max_i b_i bits among n workers, ``2 (n - 1) alpha + 2 (n - 1) / n x D
  / beta_up``; no broadcast;
* ``allgather`` (messages that cannot be summed in transit: sparse or quantized, without
  a server): a ring all-gather, n - 1 hops each passing on one worker's message, charged
  as the bound ``(n - 1) alpha + (sum_j b_j - min_j b_j) / beta_up`` (every worker
  receives every message but its own, the smallest one at best, over its one link);
* ``gossip`` (decentralized methods): each worker sends its message to each neighbour,
  ``alpha + max_i l_i / beta_up`` with l_i the message on one link (``links=parallel``,
  a link per neighbour) or ``alpha + max_i deg_i l_i / beta_up`` (``links=shared``: the
  bits the method counts for node i).

Every term is linear in alpha, 1/beta and c_grad given the per-round maxima and minima,
so a run keeps their cumulative sums (:data:`COUNTS`, trace columns) and its time under any
other profile is recomputed from the trace alone (:func:`simulated_time`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from numba import njit

from efbench.errors import ConfigError

COLLECTIVES = ("auto", "ps", "allreduce", "allgather")
CENTRAL_LINKS = ("parallel", "shared")
# cumulative per-round quantities kept in the trace (one row of Counters.rounds)
COUNTS = ("rounds_up", "bits_up_round_max", "bits_up_round_min", "bits_link_round_max", "calls_round_max")


@njit(cache=True)
def add_round(row, up_max, up_min, link_max, sent, slowest) -> None:  # pragma: no cover - compiled
    """Add one round to a run's :data:`COUNTS` row: whether any worker sent, the largest
    and smallest uplink message, the largest message on one link, the slowest worker's
    oracle calls. Both engines call this."""
    row[0] += 1.0 if sent else 0.0
    row[1] += up_max
    row[2] += up_min
    row[3] += link_max
    row[4] += slowest


@dataclass(frozen=True)
class Profile:
    """A network: latency ``alpha`` (s), bandwidths in bit/s, the server's and the gossip
    links' sharing, compute seconds per gradient-oracle call, and the collective."""

    name: str = "custom"
    alpha: float = 0.0
    beta_up: float = math.inf
    beta_down: float = math.inf
    beta_server: float = math.inf
    server: str = "parallel"
    links: str = "parallel"
    c_grad: float | str = 0.0  # seconds per oracle call, or "measured"
    collective: str = "auto"

    @classmethod
    def from_config(cls, cfg) -> Profile:
        """From the ``network`` config group (a mapping); nulls mean infinite bandwidth."""
        values = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        for key in ("beta_up", "beta_down", "beta_server"):
            if values.get(key) is None:
                values[key] = math.inf
        values.setdefault("beta_server", values.get("beta_up", math.inf))
        prof = cls(**values)
        if prof.server not in CENTRAL_LINKS:
            raise ConfigError("network.server", f"unknown value {prof.server!r}", CENTRAL_LINKS)
        if prof.links not in CENTRAL_LINKS:
            raise ConfigError("network.links", f"unknown value {prof.links!r}", CENTRAL_LINKS)
        if isinstance(prof.c_grad, str) and prof.c_grad != "measured":
            raise ConfigError("network.c_grad", f"got {prof.c_grad!r}", ("a number >= 0", "measured"))
        if prof.collective not in COLLECTIVES:
            raise ConfigError("network.collective", f"unknown value {prof.collective!r}", COLLECTIVES)
        return prof

    def collective_of(self, method_collective: str) -> str:
        """The collective a run uses: the method's own unless ``collective`` overrides it for
        a centralized method (decentralized methods always gossip)."""
        if self.collective == "auto" or method_collective == "gossip":
            return method_collective
        return self.collective


def measured_c_grad(step_seconds: float, calls_per_worker: float, n: int) -> float:
    """Seconds per gradient-oracle call of a run on this machine: its stepping time over the
    calls of its n workers (0 before any call)."""
    return step_seconds / (calls_per_worker * n) if calls_per_worker > 0 else 0.0


def simulated_time(prof: Profile, collective: str, n: int, counts: Mapping[str, Any]) -> Any:
    """Cumulative simulated seconds from cumulative counts: ``counts`` maps each name of
    :data:`COUNTS` plus ``bits_up_mean`` (mean cumulative uplink bits per worker),
    ``bits_down`` (cumulative broadcast bits) and ``rounds_down`` (rounds with a
    broadcast) to arrays of equal shape."""
    c = counts  # floats (one row, in the engine) or arrays (a trace, re-timed): the same arithmetic
    a = prof.alpha
    if isinstance(prof.c_grad, str):
        raise ValueError("c_grad=measured: pass the run's measured seconds per call (Profile.c_grad)")
    compute = prof.c_grad * c["calls_round_max"]
    total_up = n * c["bits_up_mean"]
    if collective == "ps":
        up = a * c["rounds_up"] + (
            c["bits_up_round_max"] / prof.beta_up
            if prof.server == "parallel"
            else total_up / prof.beta_server
        )
        down = a * c["rounds_down"] + (
            c["bits_down"] / prof.beta_down
            if prof.server == "parallel"
            else n * c["bits_down"] / prof.beta_server
        )
        return compute + up + down
    if collective == "allreduce":
        return compute + 2 * (n - 1) * (a * c["rounds_up"] + c["bits_up_round_max"] / (n * prof.beta_up))
    if collective == "allgather":
        return compute + (n - 1) * a * c["rounds_up"] + (total_up - c["bits_up_round_min"]) / prof.beta_up
    if collective == "gossip":
        per_link = c["bits_link_round_max"] if prof.links == "parallel" else c["bits_up_round_max"]
        return compute + a * c["rounds_up"] + per_link / prof.beta_up
    raise ConfigError("network.collective", f"unknown value {collective!r}", (*COLLECTIVES[1:], "gossip"))
