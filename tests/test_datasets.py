"""Data: mirror loading and verification, corrupt/missing files, caching, partitions."""

import bz2
import shutil

import numpy as np
import pytest

from efbench import datasets
from efbench.datasets import (
    LIBSVM_FILES,
    load_breast_cancer_scaled,
    load_libsvm,
    make_synthetic,
    partition,
)
from efbench.errors import ConfigError, DataError
from efbench.problems import LogisticProblem


@pytest.mark.parametrize("name", ["a9a", "w8a", "mushrooms", "phishing", "a1a"])
def test_mirror_files_load_and_verify(name, mirror, data_cache):
    X, y = load_libsvm(name, data_cache, str(mirror))
    spec = LIBSVM_FILES[name]
    assert X.shape == (spec.rows, spec.features)
    assert int((y > 0).sum()) == spec.positives and set(np.unique(y)) == {-1.0, 1.0}
    # the shared data README: +1 is the larger of the labels the file ships
    positives = {"a9a": 7841, "w8a": 1479, "mushrooms": 4208, "phishing": 6157, "a1a": 395}
    assert spec.positives == positives[name]
    if name != "phishing":
        assert set(np.unique(X)) == {0.0, 1.0}  # binary-valued
    assert (data_cache / f"{name}.npz").is_file()
    X2, y2 = load_libsvm(name, data_cache, None)  # cache hit: no mirror, no network needed
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


def test_w8a_constants_match_the_paper(mirror, data_cache):
    """SPEC.md: shuffled w8a gives L_US = 28.5 and L_IS about 3.0-3.05; file order 3.79."""
    X, y = load_libsvm("w8a", data_cache, str(mirror))
    for split, lo, hi in (("shuffle", 2.95, 3.06), ("file", 3.78, 3.80)):
        A, Y = partition(X, y, 20, 2485, split, seed=0)
        p = LogisticProblem(A, Y, 0.0)
        L_ij = p.row_norm2 / 4
        assert L_ij.max() == pytest.approx(28.5)
        assert lo <= L_ij.mean(axis=1).max() <= hi


def _mirror_with(tmp_path, name, payload: bytes):
    d = tmp_path / "mirror"
    d.mkdir()
    (d / f"{name}.bz2").write_bytes(payload)
    return d


def test_truncated_bz2_is_a_clear_error(tmp_path, mirror):
    raw = (mirror / "a9a.bz2").read_bytes()
    m = _mirror_with(tmp_path, "a9a", raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_libsvm("a9a", tmp_path / "cache", str(m))
    assert not (tmp_path / "cache" / "a9a.npz").exists()


def test_truncated_text_fails_sha_and_row_checks(tmp_path, mirror):
    text = bz2.decompress((mirror / "a9a.bz2").read_bytes())
    cut = text[: text.rfind(b"\n", 0, len(text) // 2) + 1]
    m = _mirror_with(tmp_path, "a9a", bz2.compress(cut))
    with pytest.raises(DataError, match="sha256"):
        load_libsvm("a9a", tmp_path / "cache", str(m))
    spec = LIBSVM_FILES["a9a"]
    with pytest.raises(DataError, match=r"truncated: got \d+ rows"):
        datasets.parse_libsvm(cut, spec, "a9a")
    with pytest.raises(DataError, match="not a valid LIBSVM file"):
        datasets.parse_libsvm(b"+1 1:1\nthis is not libsvm\n", spec, "x")


def test_missing_from_mirror_and_offline(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"not in the mirror.*EFBENCH_DATA_MIRROR"):
        load_libsvm("w8a", tmp_path / "c", str(empty))
    with pytest.raises(DataError, match="not a directory"):
        load_libsvm("w8a", tmp_path / "c", str(tmp_path / "nope"))

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    import pooch

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DataError, match=r"cannot download w8a.*Offline\? Point data\.mirror"):
        load_libsvm("w8a", tmp_path / "c", None)


def test_damaged_cache_is_rebuilt(tmp_path, mirror):
    (tmp_path / "a9a.npz").write_bytes(b"garbage")
    X, y = load_libsvm("a9a", tmp_path, str(mirror))
    assert X.shape == (32561, 123)
    X2, _ = load_libsvm("a9a", tmp_path, None)
    assert X2.shape == X.shape


def test_download_path_uses_pooch_with_the_known_hash(tmp_path, mirror, monkeypatch):
    """Without a mirror the loader asks pooch for the LIBSVM URL with the sha256 pinned."""
    calls = {}

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.update(url=url, known_hash=known_hash, progressbar=progressbar)
        path.mkdir(parents=True, exist_ok=True)
        out = path / fname
        out.write_bytes(bz2.decompress((mirror / "a9a.bz2").read_bytes()))
        return str(out)

    import pooch

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    X, _ = load_libsvm("a9a", tmp_path, None)
    assert calls["url"].endswith("/binary/a9a") and calls["progressbar"]
    assert calls["known_hash"] == "sha256:" + LIBSVM_FILES["a9a"].sha256
    assert X.shape == (32561, 123)


def test_unknown_libsvm_name():
    with pytest.raises(
        ConfigError, match=r"dataset\.name.*a9a, w8a, mushrooms, phishing, a1a, gisette_scale"
    ):
        load_libsvm("mnist", "data", None)


def test_partitions():
    X, y = make_synthetic(400, 5, seed=1)
    A, Y = partition(X, y, 4, 90, "shuffle", seed=3)
    assert A.shape == (4, 90, 5) and Y.shape == (4, 90)
    A2, _ = partition(X, y, 4, 90, "shuffle", seed=3)
    np.testing.assert_array_equal(A, A2)
    A3, _ = partition(X, y, 4, 90, "shuffle", seed=4)
    assert not np.array_equal(A, A3)
    Af, Yf = partition(X, y, 4, 90, "file")
    np.testing.assert_array_equal(Af.reshape(-1, 5), X[:360])
    _, Ys = partition(X, y, 4, 90, "label_sorted", seed=3)
    pos = (Ys > 0).mean(axis=1)
    assert np.all(np.diff(pos) >= 0) and pos[0] < 0.2 and pos[-1] > 0.8
    Ad, Yd = partition(X, y, 4, 90, "dirichlet", seed=3, alpha=0.1)
    rows = {tuple(r) for r in Ad.reshape(-1, 5)}
    assert len(rows) == 360  # drawn without replacement
    assert np.ptp((Yd > 0).mean(axis=1)) > 0.5  # strongly skewed label mixes
    with pytest.raises(
        ConfigError, match=r"dataset\.m: n_workers x m = 4 x 101 = 404 rows, but the dataset has 400"
    ):
        partition(X, y, 4, 101, "shuffle")
    with pytest.raises(ConfigError, match=r"data\.split.*shuffle, file, label_sorted, dirichlet"):
        partition(X, y, 4, 10, "random")


def test_embedded_default_needs_no_network():
    X, y = load_breast_cancer_scaled()
    assert X.shape == (569, 30) and X.min() == -1 and X.max() == 1
    assert int((y > 0).sum()) == 357


def test_mirror_folder_layout_plain_text(tmp_path, mirror):
    d = tmp_path / "m"
    d.mkdir()
    (d / "a9a").write_bytes(bz2.decompress((mirror / "a9a.bz2").read_bytes()))
    shutil.copy(mirror / "SHA256SUMS", d / "SHA256SUMS")
    X, _ = load_libsvm("a9a", tmp_path / "c", str(d))
    assert X.shape == (32561, 123)


def test_results_are_written_with_the_umask_mode(tmp_path):
    """Atomic writes give what a plain open would (0644 under umask 022), not mkstemp's 0600."""
    import os

    from efbench.datasets import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a" / "summary.json", b"{}")
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "summary.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
