"""The compiled building blocks against the plain reference, on rows full of ties."""

import numpy as np
import pytest
from reference import hard_threshold, message_bits, topk

from efbench.core import blocks
from efbench.core.compressors import HardThreshold, TopK


def rows(d: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal(d),
        rng.integers(-3, 4, d).astype(float),
        np.zeros(d),
        np.sort(rng.standard_normal(d)),
        -np.sort(-np.abs(rng.standard_normal(d))),
        np.ones(d),
    ]


@pytest.mark.parametrize("d,k", [(1, 1), (7, 1), (7, 7), (300, 3), (5000, 50), (64, 63)])
def test_kth_largest_abs_matches_partition(d, k):
    heap = np.empty(k)
    for row in rows(d, d + k):
        assert blocks.kth_largest_abs(row, k, heap) == np.partition(np.abs(row), d - k)[d - k]


@pytest.mark.parametrize("d,k", [(1, 1), (10, 1), (10, 3), (10, 10), (300, 7), (64, 63)])
def test_topk_keeps_lowest_index_among_ties(d, k):
    """Rows of integers and constants are all ties: the reference's stable rule decides."""
    for row in rows(d, k):
        msg = TopK(k=k).compress(row[None].copy(), None)
        np.testing.assert_array_equal(msg.values[0], topk(row, k))
        assert msg.nnz[0] == k and msg.bits[0] == message_bits(k, d, 32, True)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 2.5])
def test_hard_threshold_matches_reference(lam):
    for row in rows(50, 1):
        msg = HardThreshold(lam=lam, index_bits=False, float_bits=16).compress(row[None].copy(), None)
        np.testing.assert_array_equal(msg.values[0], hard_threshold(row, lam))
        count = int(np.count_nonzero(np.abs(row) >= lam))
        assert msg.nnz[0] == count and msg.bits[0] == 16 * count


@pytest.mark.parametrize("d", [1, 2, 3, 30, 300, 5000])
def test_bit_rule_matches_reference(d):
    for count in {0, 1, d // 3, d}:
        for fb in (16, 32, 64):
            for ib in (True, False):
                assert blocks.message_bits(count, d, fb, (d - 1).bit_length(), ib) == message_bits(
                    count, d, fb, ib
                )


def test_margin_derivative_against_finite_differences():
    for y in (-1.0, 1.0):
        for z in (-40.0, -3.0, 0.0, 0.7, 40.0):
            h = 1e-6
            fd = (blocks.loss_and_dloss(y * (z + h))[0] - blocks.loss_and_dloss(y * (z - h))[0]) / (2 * h)
            assert blocks.margin_coef(y, z) == pytest.approx(fd, rel=1e-6, abs=1e-12)
    assert blocks.loss_and_dloss(-800.0)[0] == pytest.approx(800.0)  # no overflow


def test_cached_kernels_are_dropped_when_a_building_block_changes(tmp_path):
    """numba keys a cached kernel on its own file: the compiled step's cache files go when
    the hash of the sources it is built from (fused, blocks, network) is not the stamp's."""
    from efbench.engine import fused

    kernel, other = tmp_path / "fused.ec_advance-1.py311.nbi", tmp_path / "blocks.compress_row-1.nbi"
    for f in (kernel, other):
        f.write_text("old")
    (tmp_path / "fused.sources").write_text("a hash of older sources")
    assert fused.drop_stale_kernels(tmp_path)  # they compile anew: the runner says so
    assert not kernel.exists() and other.exists()  # blocks' own cache follows blocks.py itself
    kernel.write_text("new")
    assert not fused.drop_stale_kernels(tmp_path)  # the stamp is now the sources': nothing to drop
    assert kernel.exists()


def test_the_first_run_after_an_install_says_it_compiles(monkeypatch, caplog):
    """When the kernels' sources are new to their cache (an install, an upgrade), the first
    setup of a process says that numba compiles, once; otherwise nothing is said."""
    import logging

    from test_cli import cfg_of

    from efbench.engine import fused
    from efbench.run import runner

    cfg = cfg_of("dataset=counterexample", "method=cgd", "compressor=topk")
    for compiling, said in ((False, 0), (True, 1)):
        monkeypatch.setattr(fused, "COMPILING", compiling)
        monkeypatch.setattr(runner, "_SAID", set())
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="efbench"):
            runner._build_setup(cfg)
            runner._build_setup(cfg)
        assert sum("numba compiles its kernels" in r.getMessage() for r in caplog.records) == said
