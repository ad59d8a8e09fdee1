"""Property-based (hypothesis): every compressor of the registry (efbench/conf/compressor), on
zeros, +-inf, nan, huge and tiny magnitudes, d = 1 and all-tied rows: no crash, messages of
the right shape with the exact bits of the README's rules, finite wherever the input is."""

import math
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "efbench" / "conf" / "compressor"
# the registry: every option of the compressor group but the paper presets (they take the
# paper experiments' per-dataset values), with variants of their parameters
REGISTRY = [
    (path.stem, OmegaConf.load(path))
    for path in sorted(CONF.glob("*.yaml"))
    if not path.stem.endswith("_paper")
]
VARIANTS = {
    "topk": [{"k": 1}, {"k": 3}],
    "randk": [{"k": 2}, {"k": 2, "scaled": True}],
    "qsgd": [{"s": 1}, {"s": 7}],
    "natural_dithering": [{"s": 1, "norm": 1.0}, {"s": 5, "norm": 3.0}],
    "compose": [
        {"outer": "topk", "k": 3, "inner": "natural"},
        {"outer": "topk", "k": 2, "inner": "qsgd", "s": 3},
        {"outer": "randk", "k": 2, "inner": "natural_dithering", "s": 2},
    ],
}
CASES = [
    (name, {**dict(cfg), **v, "float_bits": fb, "index_bits": ib})
    for name, cfg in REGISTRY
    for v in VARIANTS.get(name, [{}])
    for fb in (16, 32, 64)
    for ib in (True, False)
]
SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, -1e308, 1e154, 5e-324, -1e-300, 1.0, -1.0]
values = st.one_of(
    st.sampled_from(SPECIAL), st.floats(-1e6, 1e6), st.floats(allow_nan=False, allow_infinity=False)
)


@st.composite
def rows(draw):
    n, d = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    if draw(st.booleans()):  # every value tied
        return np.full((n, d), draw(values))
    return draw(hnp.arrays(np.float64, (n, d), elements=values))


def expected_bits(name, comp, X, msg):
    """The README's bit rules, written out here independently of the package."""
    n, d = X.shape
    F, index = comp.float_bits, math.ceil(math.log2(d)) if d > 1 else 0

    def sparse(k, value_bits):
        if not comp.index_bits:
            return k * value_bits
        return min(k * (value_bits + index), d + k * value_bits)

    exp_bits = {16: 5, 32: 8, 64: 11}[F]
    out = []
    for i in range(n):
        k = int(msg.nnz[i])
        if name == "identity":
            out.append(F * d)
        elif name in ("topk", "randk", "ht"):
            out.append(sparse(k, F))
        elif name in ("sign", "stochastic_sign"):
            out.append(F + d)
        elif name == "natural":
            out.append((1 + exp_bits) * d)
        elif name in ("qsgd", "natural_dithering"):
            out.append(F + d * (1 + math.ceil(math.log2(comp.s + 1))))
        elif name == "lowrank":
            a = math.ceil(math.sqrt(d))
            out.append(F * (a + math.ceil(d / a)) * comp.rank)
        elif name == "compose":  # positions of the K kept, then the inner's message of K values
            k, levels = comp.k, 1 + math.ceil(math.log2(comp.s + 1))
            inner = (1 + exp_bits) * k if comp.inner == "natural" else F + k * levels
            out.append((min(k * index, d) if comp.index_bits else 0) + inner)
        elif name == "ternary":
            out.append(F + 2 * d)
        elif name == "rounding":
            q = np.abs(np.round(X[i] / comp.delta))
            q = q[np.isfinite(q)]
            width = (2 * int(q.max() if q.size else 0)).bit_length()  # ceil(log2(2 max|q| + 1))
            out.append(sparse(k, width))
        else:
            pytest.fail(f"no bit rule written for the registry's {name}")
    return out


def test_registry_is_covered():
    assert {name for name, _ in REGISTRY} >= {"identity", "topk", "randk", "ht", "sign", "qsgd"}


@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(X=rows(), seed=st.integers(0, 2**32 - 1))
def test_every_compressor_survives_extreme_values(name, params, X, seed):
    comp = instantiate(params)
    n, d = X.shape
    if getattr(comp, "k", 0) > d:
        return  # refused by validate (tested in test_compressors)
    comp.validate(d)
    with np.errstate(all="ignore"):
        msg = comp(X, np.random.default_rng(seed))
        assert msg.values.shape == X.shape and msg.bits.shape == (n,) and msg.nnz.shape == (n,)
        assert np.all((msg.nnz >= 0) & (msg.nnz <= d))
        assert msg.bits.tolist() == expected_bits(name, comp, X, msg)
        assert np.all(np.isfinite(msg.values[finite_rows(name, comp, X)])), (X, msg.values)


def finite_rows(name, comp, X):
    """Rows whose exact message is finite: every value finite and the message representable."""
    d = X.shape[1]
    ok = np.all(np.isfinite(X), axis=1)
    # where the exact message is beyond the largest float, overflow is the right answer:
    if name == "natural":  # rounding up to a power of two past 2^1023
        ok &= np.all(np.abs(X) <= 2.0**1023, axis=1)
    if name == "randk" and comp.scaled:  # d/K x_j
        ok &= np.all(np.abs(X) * (d / comp.k) <= np.finfo(float).max, axis=1)
    if name == "rounding":  # x / delta
        ok &= np.all(np.abs(X) / comp.delta <= np.finfo(float).max, axis=1)
    if name in ("qsgd", "stochastic_sign", "lowrank"):  # C(x)_j = +-||x|| (qsgd: when |x_j|
        # is near ||x||); lowrank: |C(x)_j| <= ||x||_2
        ok &= np.isfinite(np.sqrt(np.sum((X / 2.0**512) ** 2, axis=1)) * 2.0**512)
    if name in ("natural_dithering", "compose"):  # C(x)_j = +-||x||_p <= sqrt(d) ||x||_2;
        # compose: of the kept values, times d/K (randk), natural: up to twice the value
        scale = d / comp.k if name == "compose" else 1.0
        ok &= np.isfinite(np.sqrt(d * np.sum((X / 2.0**512) ** 2, axis=1)) * 2.0**512 * scale)
        if name == "compose":
            ok &= np.all(2 * np.abs(X) * scale <= np.finfo(float).max, axis=1)
    return ok
