"""The compiled helpers of engine=numba against numpy on their own."""

import numpy as np
import pytest

from efbench.kernels import _kth_largest_abs


@pytest.mark.parametrize("d,k", [(1, 1), (7, 1), (7, 7), (300, 3), (5000, 50), (64, 63)])
def test_kth_largest_abs_matches_partition(d, k):
    rng = np.random.default_rng(d + k)
    heap = np.empty(k)
    for row in (rng.standard_normal(d), rng.integers(-3, 4, d).astype(float), np.zeros(d),
                np.sort(rng.standard_normal(d)), -np.sort(-np.abs(rng.standard_normal(d)))):
        expected = np.partition(np.abs(row), d - k)[d - k]
        assert _kth_largest_abs(row, k, heap) == expected
