"""A run's config built into the objects the domain takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from efbench.config.legacy import current
from efbench.core.compressors import Compressor
from efbench.core.participation import Participation
from efbench.methods.base import Method


def build_method(cfg: DictConfig | Mapping[str, Any], d: int | None, n: int | None = None) -> Method:
    """The method of a run's config (or of its resolved container, as
    :func:`efbench.config.schema.validate` holds it), with its compressor checked against the
    dimension d and its participation against the n workers (each when known). The
    ``_target_`` classes are called with the groups' keys (none of them nests a ``_target_``)."""
    groups = ("compressor", "method", "bits", "participation")
    c = (
        cfg
        if not isinstance(cfg, DictConfig)
        else {g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups if g in cfg}
    )
    comp_keys = dict(c["compressor"])
    comp: Compressor = get_class(current(comp_keys.pop("_target_")))(
        **comp_keys, float_bits=c["bits"]["float_bits"], index_bits=c["bits"]["index_bits"]
    )
    if d is not None:
        comp.validate(d)
    part = Participation(**c["participation"]) if "participation" in c else Participation()
    if n is not None:
        part.check(n)
    method_keys = dict(c["method"])
    return get_class(current(method_keys.pop("_target_")))(**method_keys, compressor=comp, participation=part)
