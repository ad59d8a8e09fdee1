"""Where a run's data come from (``dataset.source``): one registry of the sources, each with
the dataset keys it reads, the shape it gives before anything is read, the problem it
builds and how it is named in messages. The config rules (:mod:`efbench.config.schema`) and
the runner (:mod:`efbench.run.runner`) dispatch on these records, not on source strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from efbench.problems.datasets import BREAST_CANCER_FEATURES, BREAST_CANCER_ROWS, LIBSVM_FILES

Shape = tuple[int | None, int | None]


@dataclass(frozen=True)
class Source:
    """One ``dataset.source``. ``reads``: the dataset keys beyond the common ones (name,
    n_workers, m, x0, x0_shift) that it reads, each refused elsewhere; ``problem``: the loss
    it builds (``logistic``: rows and labels, the regularizer of ``problem.*``; ``quadratic``:
    a problem of its own with fixed constants); ``workers``: the (n_workers, m) it is made
    of, or None for any; ``shape``: (rows, features) from the dataset keys, None where only
    the file tells; ``what``: the data in a message, from the dataset keys."""

    name: str
    reads: tuple[str, ...]
    problem: str
    shape: Callable[[Mapping[str, Any]], Shape]
    what: Callable[[Mapping[str, Any]], str]
    workers: tuple[int, int] | None = None

    @property
    def logistic(self) -> bool:
        return self.problem == "logistic"


def _libsvm_shape(ds: Mapping[str, Any]) -> Shape:
    spec = LIBSVM_FILES.get(ds.get("libsvm_name"))
    return (spec.rows, spec.features) if spec else (None, None)


def _synthetic_shape(ds: Mapping[str, Any]) -> Shape:
    syn = ds.get("synthetic") or {}
    return syn.get("rows") or ds["n_workers"] * ds["m"], syn.get("features")


def _synthetic_what(ds: Mapping[str, Any]) -> str:
    like = ds.get("synthetic_of")
    return "synthetic data" + (f" shaped like {like}" if like else "")


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "libsvm",
            reads=("libsvm_name",),
            problem="logistic",
            shape=_libsvm_shape,
            what=lambda ds: f"the LIBSVM file {ds.get('libsvm_name')!r}",
        ),
        Source(
            "synthetic",
            reads=("synthetic", "synthetic_of"),
            problem="logistic",
            shape=_synthetic_shape,
            what=_synthetic_what,
        ),
        Source(
            "sklearn",
            reads=(),
            problem="logistic",
            shape=lambda ds: (BREAST_CANCER_ROWS, BREAST_CANCER_FEATURES),
            what=lambda ds: "scikit-learn's breast cancer data",
        ),
        # Beznosikov et al. (2020)'s 3 quadratics (efbench.problems.logistic.QuadraticProblem)
        Source(
            "counterexample",
            reads=(),
            problem="quadratic",
            shape=lambda ds: (3, 3),
            what=lambda ds: "the counterexample",
            workers=(3, 1),
        ),
    )
}
# the dataset keys some source reads and the others refuse
SOURCE_KEYS = tuple(dict.fromkeys(k for s in SOURCES.values() for k in s.reads))
