"""The ``_target_`` names that configs were written with before efbench's package was split
into layers (issue 22), old -> new.

A run's config hash is taken over the old names (:func:`as_before`), so a finished run keeps
its hash and resumes; a saved config that names an old path still loads (:func:`current`).
A class added since has no old name and is hashed as it is named.
"""

from __future__ import annotations

MOVED = {
    "efbench.asynchronous.AsyncECSGD": "efbench.methods.asynchronous.AsyncECSGD",
    "efbench.asynchronous.AsyncQSGD": "efbench.methods.asynchronous.AsyncQSGD",
    "efbench.asynchronous.AsyncSGD": "efbench.methods.asynchronous.AsyncSGD",
    "efbench.callbacks.Figures": "efbench.app.callbacks.Figures",
    "efbench.callbacks.SweepConfigCheck": "efbench.app.callbacks.SweepConfigCheck",
    "efbench.choco.ChocoSGD": "efbench.methods.choco.ChocoSGD",
    "efbench.compressors.Compose": "efbench.core.compressors.Compose",
    "efbench.compressors.HardThreshold": "efbench.core.compressors.HardThreshold",
    "efbench.compressors.Identity": "efbench.core.compressors.Identity",
    "efbench.compressors.LowRank": "efbench.core.compressors.LowRank",
    "efbench.compressors.Natural": "efbench.core.compressors.Natural",
    "efbench.compressors.NaturalDithering": "efbench.core.compressors.NaturalDithering",
    "efbench.compressors.QSGD": "efbench.core.compressors.QSGD",
    "efbench.compressors.RandK": "efbench.core.compressors.RandK",
    "efbench.compressors.Rounding": "efbench.core.compressors.Rounding",
    "efbench.compressors.Sign": "efbench.core.compressors.Sign",
    "efbench.compressors.StochasticSign": "efbench.core.compressors.StochasticSign",
    "efbench.compressors.Ternary": "efbench.core.compressors.Ternary",
    "efbench.compressors.TopK": "efbench.core.compressors.TopK",
    "efbench.fednl.FedNL": "efbench.methods.fednl.FedNL",
    "efbench.local.GradSkip": "efbench.methods.local.GradSkip",
    "efbench.local.LocalSGD": "efbench.methods.local.LocalSGD",
    "efbench.local.Scaffnew": "efbench.methods.local.Scaffnew",
    "efbench.marina.MARINA": "efbench.methods.marina.MARINA",
    "efbench.marina.VRMARINA": "efbench.methods.marina.VRMARINA",
    "efbench.methods.CLAG": "efbench.methods.threepc.CLAG",
    "efbench.methods.CompressedGD": "efbench.methods.base.CompressedGD",
    "efbench.methods.DCDPSGD": "efbench.methods.base.DCDPSGD",
    "efbench.methods.DIANA": "efbench.methods.base.DIANA",
    "efbench.methods.DPSGD": "efbench.methods.base.DPSGD",
    "efbench.methods.DeepSqueeze": "efbench.methods.base.DeepSqueeze",
    "efbench.methods.DoubleSqueeze": "efbench.methods.base.DoubleSqueeze",
    "efbench.methods.EF21": "efbench.methods.threepc.EF21",
    "efbench.methods.EFSignSGD": "efbench.methods.base.EFSignSGD",
    "efbench.methods.ErrorCompensated": "efbench.methods.base.ErrorCompensated",
    "efbench.methods.LAG": "efbench.methods.threepc.LAG",
    "efbench.methods.MemSGD": "efbench.methods.base.MemSGD",
    "efbench.methods.Uncompressed": "efbench.methods.base.Uncompressed",
    "efbench.threepc.EF21BC": "efbench.methods.threepc.EF21BC",
    "efbench.threepc.EF21HB": "efbench.methods.threepc.EF21HB",
    "efbench.threepc.ThreePC": "efbench.methods.threepc.ThreePC",
    "efbench.trackers.MLflowCallback": "efbench.app.trackers.MLflowCallback",
    "efbench.trackers.WandbCallback": "efbench.app.trackers.WandbCallback",
}
_BEFORE = {new: old for old, new in MOVED.items()}


def current(target: str) -> str:
    """The path ``target`` names now (an old path moved; any other as it is)."""
    return MOVED.get(target, target)


def as_before(target: str) -> str:
    """The path ``target`` had before the move (itself when it did not move)."""
    return _BEFORE.get(target, target)
