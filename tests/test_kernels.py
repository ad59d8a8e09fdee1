"""The compiled helpers of engine=numba against numpy on their own."""

import numpy as np
import pytest

from efbench.kernels import TOPK, _kth_largest_abs, ec_step


@pytest.mark.parametrize("d,k", [(1, 1), (7, 1), (7, 7), (300, 3), (5000, 50), (64, 63)])
def test_kth_largest_abs_matches_partition(d, k):
    rng = np.random.default_rng(d + k)
    heap = np.empty(k)
    for row in (rng.standard_normal(d), rng.integers(-3, 4, d).astype(float), np.zeros(d),
                np.sort(rng.standard_normal(d)), -np.sort(-np.abs(rng.standard_normal(d)))):
        expected = np.partition(np.abs(row), d - k)[d - k]
        assert _kth_largest_abs(row, k, heap) == expected


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_fused_topk_sends_k_largest_with_ties_in_index_order(k):
    """gamma = 0 leaves u = e, so the step only compresses: exactly k coordinates leave each
    worker's memory, none smaller in |u| than one that stays, ties taken lowest index first."""
    rng = np.random.default_rng(k)
    n, m, d = 6, 4, 10
    e = rng.integers(-3, 4, (1, n, d)).astype(float)  # many ties
    before = e.copy()
    x = np.zeros((1, d))
    bits, nnz = ec_step(rng.random((n * m, d)), np.ones(n * m), rng.random((1, n)), m, np.zeros(0),
                        np.zeros(0), x, e, 0.0, 0.0, TOPK, 0.0, k, 32, 4, True, e, e, False)
    assert nnz.tolist() == [[k] * n] and bits.tolist() == [[k * 32 + min(k * 4, d)] * n]
    want = np.zeros((n, d), bool)  # a stable sort by decreasing |u| takes ties in index order
    for i, row in enumerate(np.abs(before[0])):
        want[i, np.argsort(-row, kind="stable")[:k]] = True
    np.testing.assert_array_equal(e[0][want], 0.0)
    np.testing.assert_array_equal(e[0][~want], before[0][~want])
    np.testing.assert_allclose(x[0], -np.where(want, before[0], 0.0).mean(axis=0), rtol=1e-15)
