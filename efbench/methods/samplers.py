"""Samplings p_ij of one row per worker (SPEC.md section 3): what the SGD and L-SVRG
estimators draw. A sampling gives its probabilities; both engines then draw from the
per-worker CDFs (:func:`efbench.core.blocks.sample_row`) and weight the sample by 1/(m p_ij),
so any sampling runs on the compiled step too.

``sampling.name`` is a built-in name (``uniform``, ``importance``) or the dotted path of a
:class:`Sampling` subclass in a module of your own (one class plus its YAML in a
``sampling`` config folder)."""

from __future__ import annotations

import importlib

import numpy as np

from efbench.errors import ConfigError
from efbench.problems.base import Problem


class Sampling:
    """p_ij > 0 with sum_j p_ij = 1 for each worker i."""

    name = ""

    def probabilities(self, problem: Problem) -> np.ndarray | None:
        """(n, m) probabilities, or None for uniform sampling (drawn without tables)."""
        raise NotImplementedError

    def smoothness(self, problem: Problem) -> float:
        """L_S = max_ij L_ij / (m p_ij), L_ij the smoothness of sample j of worker i
        (``problem.sample_smoothness``): the expected-smoothness constant of the SGD estimator
        with this sampling (Gower et al. 2019, single-element sampling), which the theory
        stepsize 1/(L + L_S/(n tau)) takes."""
        p = self.probabilities(problem)
        L_ij = problem.sample_smoothness()
        return float(L_ij.max() if p is None else (L_ij / (problem.m * p)).max())


class Uniform(Sampling):
    """p_ij = 1/m; L_S = max L_ij (L_US)."""

    name = "uniform"

    def probabilities(self, problem):
        return None


class Importance(Sampling):
    """p_ij = L_ij / (m Lbar_i) (Gower et al. 2019; Danilova & Gorbunov 2022); L_S = max_i
    Lbar_i (L_IS)."""

    name = "importance"

    def probabilities(self, problem):
        L_ij = problem.sample_smoothness()
        return L_ij / L_ij.sum(axis=1, keepdims=True)


BUILTIN = {cls.name: cls for cls in (Uniform, Importance)}


def sampling_of(name: str) -> Sampling:
    """The sampling named by ``sampling.name``: a built-in name or a dotted class path."""
    if name in BUILTIN:
        return BUILTIN[name]()
    module, _, attr = str(name).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Sampling)):
        raise ConfigError(
            "sampling.name",
            f"unknown sampling {name!r}",
            f"{', '.join(BUILTIN)}, or the dotted path of an efbench.methods.samplers.Sampling subclass",
        )
    return cls()
