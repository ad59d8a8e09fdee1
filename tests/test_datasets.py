"""Data: mirror loading and verification, corrupt/missing files, caching, partitions."""

import bz2
import hashlib
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from efbench.errors import ConfigError, DataError
from efbench.problems import datasets
from efbench.problems.datasets import (
    LIBSVM_FILES,
    MAX_DENSE_ENV,
    check_memory,
    load_breast_cancer_scaled,
    load_dataset,
    load_libsvm,
    make_synthetic,
    partition,
)
from efbench.problems.logistic import LogisticProblem


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
        assert set(np.unique(X.toarray())) == {0.0, 1.0}  # binary-valued
    assert (data_cache / f"{name}.npz").is_file()
    X2, y2 = load_libsvm(name, data_cache, None)  # cache hit: no mirror, no network needed
    np.testing.assert_array_equal(X.toarray(), X2.toarray())
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


def test_unknown_libsvm_name(tmp_path):
    """A name outside the table is read from a mirror only: without one, or not in it, the
    error names dataset.libsvm_name and the table."""
    allowed = r"allowed: a9a, w8a, mushrooms, phishing, a1a, gisette_scale, madelon, ijcnn1"
    with pytest.raises(ConfigError, match=rf"^dataset\.libsvm_name: 'mnist' .*no mirror is set.*{allowed}"):
        load_libsvm("mnist", tmp_path / "c", None)
    with pytest.raises(ConfigError, match=r"^dataset\.libsvm_name: 'mnist' .*nor in the mirror .*mnist\.bz2"):
        load_libsvm("mnist", tmp_path / "c", str(tmp_path))


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

    from efbench.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a" / "summary.json", b"{}")
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "summary.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640


# ---- the table of LIBSVM files, its presets, files not in it, the memory limit ----------

CONF = Path(__file__).resolve().parents[1] / "efbench" / "conf" / "dataset"
ALL_ROWS = {"madelon", "ijcnn1", "rcv1", "real-sim", "epsilon"}  # presets splitting every row
TOO_LARGE = {"rcv1", "real-sim", "epsilon"}  # over the memory limit as dense arrays


def _presets() -> dict[str, dict]:
    out = {}
    for path in sorted(CONF.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if cfg["source"] == "libsvm":
            out[path.stem] = cfg
    return out


def test_table_entries_and_their_presets_agree():
    """Every table entry has a preset whose split fits its published rows; counts and hashes
    are plausible; the large presets would not fit as dense arrays (refused naming dataset),
    the others would; the sparse files fit in CSR (rcv1 has 74 nonzeros a row, real-sim 51)."""
    presets = _presets()
    assert {p["libsvm_name"] for p in presets.values()} == set(LIBSVM_FILES)
    for stem, p in presets.items():
        spec = LIBSVM_FILES[p["libsvm_name"]]
        assert spec.name == p["libsvm_name"] and p["name"] == stem
        assert p["n_workers"] * p["m"] <= spec.rows
        if stem in ALL_ROWS:
            assert spec.rows - p["n_workers"] * p["m"] < p["n_workers"]  # every row a worker can take
        assert spec.positives is None or 0 < spec.positives < spec.rows
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        args = (stem, p["n_workers"], p["m"], spec.features, spec.rows if spec.dense else None)
        if stem in TOO_LARGE:
            with pytest.raises(ConfigError, match=rf"^dataset: {stem} as dense .* GB, over the 4 GB limit"):
                check_memory(*args)
        else:
            check_memory(*args)
        if not spec.dense:
            check_memory(*args, row_nnz=100.0)
    # the published shapes of the files the surveyed papers use (LIBSVM binary page)
    shapes = {
        "gisette_scale": (6000, 5000),
        "madelon": (2000, 500),
        "ijcnn1": (49990, 22),
        "real-sim": (72309, 20958),
        "rcv1": (20242, 47236),
        "epsilon": (400000, 2000),
    }
    for name, shape in shapes.items():
        assert (LIBSVM_FILES[name].rows, LIBSVM_FILES[name].features) == shape


def test_mirror_files_match_the_table_and_the_mirror_sums(mirror):
    """The five mirror files: the sha256 of their text is the table's and SHA256SUMS's."""
    sums = dict(line.split()[::-1] for line in (mirror / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"a9a", "w8a", "mushrooms", "phishing", "a1a"}
    for name, digest in sums.items():
        text = bz2.decompress((mirror / f"{name}.bz2").read_bytes())
        assert hashlib.sha256(text).hexdigest() == digest == LIBSVM_FILES[name].sha256


def _libsvm_text(labels, rows: list[dict[int, float]]) -> bytes:
    lines = [
        " ".join([str(lab), *(f"{j}:{v:g}" for j, v in sorted(r.items()))])
        for lab, r in zip(labels, rows, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_a_file_not_in_the_table_loads_with_the_shape_it_has(tmp_path, caplog):
    """Its features are its largest index, its labels {0, 1} become {-1, +1}, a warning says
    it is unverified; the cache then serves it without the mirror."""
    rows = [{1: 0.5, 7: 1.0}, {2: -1.0}, {3: 2.0, 4: 1.0}, {}, {7: 3.0}]
    text = _libsvm_text([0, 1, 1, 0, 1], rows)
    m = _mirror_with(tmp_path, "mydata", bz2.compress(text))
    with caplog.at_level(logging.WARNING, logger="efbench"):
        X, y = load_libsvm("mydata", tmp_path / "c", str(m))
    assert X.shape == (5, 7) and X[0, 6] == 1.0 and X[4, 6] == 3.0 and X[3].nnz == 0
    np.testing.assert_array_equal(y, [-1, 1, 1, -1, 1])
    assert "mydata is not in efbench's table" in caplog.text and "not verified" in caplog.text
    assert "5 rows x 7 features" in caplog.text and "3 +1 labels" in caplog.text
    X2, y2 = load_libsvm("mydata", tmp_path / "c", None)  # the cache, with the shape it stored
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    np.testing.assert_array_equal(y2, y)
    (m / "mydata.bz2").write_bytes(bz2.compress(_libsvm_text([0, 1, 2], rows[:3])))
    with pytest.raises(DataError, match="two labels, found"):
        load_libsvm("mydata", tmp_path / "c2", str(m))


def test_a_gisette_shaped_file_is_verified_offline(tmp_path):
    """gisette_scale is download only: a file of its shape in a mirror (its remote name
    gisette_scale.bz2) passes the table's checks, one +1 label short does not."""
    rng = np.random.default_rng(0)
    labels = np.repeat([1, -1], 3000)
    rows = [{int(j): 0.5 for j in rng.choice(5000, 3, replace=False) + 1} for _ in range(6000)]
    rows[17][5000] = -1.0  # the last feature index is in the file
    d = tmp_path / "mirror"
    d.mkdir()
    (d / "gisette_scale.bz2").write_bytes(bz2.compress(_libsvm_text(labels, rows)))
    X, y = load_libsvm("gisette_scale", tmp_path / "c", str(d))
    assert X.shape == (6000, 5000) and int((y > 0).sum()) == 3000
    labels[0] = -1
    (d / "gisette_scale.bz2").write_bytes(bz2.compress(_libsvm_text(labels, rows)))
    with pytest.raises(DataError, match=r"truncated: got 6000 rows x 5000 features with 2999 positive"):
        load_libsvm("gisette_scale", tmp_path / "c2", str(d))


def test_an_entry_without_published_label_counts_checks_its_shape_only(tmp_path):
    """ijcnn1: rows and features are published, its label counts are not (None): any two
    labels pass, a missing row does not."""
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(49990) < 0.1, 1, -1)
    rows = [{int(j): 1.0} for j in rng.integers(1, 23, 49990)]
    rows[0][22] = 0.5
    d = tmp_path / "mirror"
    d.mkdir()
    (d / "ijcnn1.bz2").write_bytes(bz2.compress(_libsvm_text(labels, rows)))
    X, y = load_libsvm("ijcnn1", tmp_path / "c", str(d))
    assert X.shape == (49990, 22) and int((y > 0).sum()) == int((labels > 0).sum())
    (d / "ijcnn1.bz2").write_bytes(bz2.compress(_libsvm_text(labels[1:], rows[1:])))
    with pytest.raises(DataError, match=r"truncated: got 49989 rows x 22 features .* expected 49990 x 22$"):
        load_libsvm("ijcnn1", tmp_path / "c2", str(d))


def _cfg(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module("efbench.conf", version_base="1.3"):
        return compose("config", overrides=["progress=false", *overrides])


def test_dense_files_are_refused_for_memory_before_any_file_is_read(tmp_path, monkeypatch):
    """epsilon, dense (20 x 20000 x 2000 float64 = 6.4 GB): refused naming dataset, with the
    m that fits, before the mirror or the network is touched; a larger limit lets it through
    to them. rcv1 is sparse, kept in CSR: no dense limit, on to the mirror."""
    import pooch

    def no_download(*args, **kwargs):
        raise AssertionError("the memory check comes before any download")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = _cfg("dataset=epsilon", f"data.mirror={empty}", f"data.dir={tmp_path / 'c'}")
    with pytest.raises(
        ConfigError,
        match=r"^dataset: epsilon as dense .*\(20, 20000, 2000\) needs 6\.4 GB.*dataset\.m <= 12500",
    ):
        load_dataset(cfg)
    assert not (tmp_path / "c").exists()
    monkeypatch.setenv(MAX_DENSE_ENV, "8")
    with pytest.raises(DataError, match=r"'epsilon' is not in the mirror .*epsilon_normalized\.bz2"):
        load_dataset(cfg)
    monkeypatch.setenv(MAX_DENSE_ENV, "lots")
    with pytest.raises(ConfigError, match=r"^dataset: \$EFBENCH_MAX_DENSE_GB='lots'"):
        load_dataset(cfg)
    monkeypatch.delenv(MAX_DENSE_ENV)
    rcv1 = _cfg("dataset=rcv1", f"data.mirror={empty}", f"data.dir={tmp_path / 'c'}")
    with pytest.raises(DataError, match=r"'rcv1' is not in the mirror .*rcv1_train\.binary\.bz2"):
        load_dataset(rcv1)


def test_a_file_not_in_the_table_is_refused_for_memory_once_its_shape_is_known(tmp_path, monkeypatch):
    """Dense rows (half the entries nonzero) count n m d 8 bytes; sparse ones their CSR bytes:
    a 1000-wide file with one nonzero a row fits a limit its dense split (32 kB) is over."""
    dense = _libsvm_text([1, -1, 1, -1], [{j: 1.0 for j in range(1 + r % 2, 1001, 2)} for r in range(4)])
    sparse = _libsvm_text([1, -1, 1, -1], [{1000: 1.0}, {2: 1.0}, {3: 1.0}, {4: 1.0}])
    m = tmp_path / "mirror"
    m.mkdir()
    (m / "wide.bz2").write_bytes(bz2.compress(dense))
    (m / "thin.bz2").write_bytes(bz2.compress(sparse))
    cfg = _cfg("dataset=a9a", "dataset.libsvm_name=wide", "dataset.n_workers=2", "dataset.m=2")
    cfg.data.mirror, cfg.data.dir = str(m), str(tmp_path / "c")
    monkeypatch.setenv(MAX_DENSE_ENV, "1e-5")  # 10 kB: 2 x 2 x 1000 x 8 = 32 kB is over it
    with pytest.raises(
        ConfigError, match=r"^dataset: wide as dense worker data \(n, m, d\) = \(2, 2, 1000\)"
    ):
        load_dataset(cfg)
    cfg.dataset.libsvm_name = "thin"
    X, _ = load_dataset(cfg)  # 4 rows x 40 bytes
    assert sp.issparse(X) and X.shape == (4, 1000)
    monkeypatch.setenv(MAX_DENSE_ENV, "1e-7")  # 100 bytes
    with pytest.raises(
        ConfigError, match=r"^dataset: thin as sparse worker data \(n, m\) = \(2, 2\) needs 1\.6e-07 GB"
    ):
        load_dataset(cfg)


def test_sparse_rows_split_as_dense_ones():
    """A sparse matrix with many nonzeros (30 %) splits into the dense array its dense rows
    give; with few (10 %), into CSR rows (n m, d) holding the same rows and no dense copy."""
    for density, kept_sparse in ((0.3, False), (0.1, True)):
        X, y = make_synthetic(200, 6, seed=2, density=density)
        for split in ("shuffle", "file", "label_sorted", "dirichlet"):
            A, Y = partition(X, y, 4, 40, split, seed=1)
            As, Ys = partition(sp.csr_matrix(X), y, 4, 40, split, seed=1)
            assert sp.issparse(As) == kept_sparse
            np.testing.assert_array_equal(As.toarray().reshape(4, 40, 6) if kept_sparse else As, A)
            np.testing.assert_array_equal(Ys, Y)


def test_norm_sorted_split_spreads_the_workers_smoothness():
    """data.split=norm_sorted: the rows are sorted by norm before the split, so worker i's
    rows are no longer than worker i+1's and L_i = lambda_max(A_i^T A_i)/(4m) grows with i,
    for dense and CSR rows alike (the spread GradSkip exploits)."""
    from efbench.problems.datasets import partition

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)) * rng.uniform(0.1, 3.0, size=(400, 1))
    y = np.sign(rng.normal(size=400))
    A, _ = partition(X, y, 5, 60, "norm_sorted", 3)
    norms = np.linalg.norm(A, axis=2)
    assert (norms[:-1].max(axis=1) <= norms[1:].min(axis=1)).all()
    L = [np.linalg.eigvalsh(a.T @ a).max() / (4 * 60) for a in A]
    assert L == sorted(L) and L[-1] > 10 * L[0]
    sparse = X * (rng.uniform(size=X.shape) < 0.15)  # kept as CSR rows by the split
    S, _ = partition(sp.csr_matrix(sparse), y, 5, 60, "norm_sorted", 3)
    D, _ = partition(sparse, y, 5, 60, "norm_sorted", 3)
    assert sp.issparse(S) and (S.toarray().reshape(5, 60, 6) == D).all()
    shuffled, _ = partition(X, y, 5, 60, "shuffle", 3)  # the same rows, in the shuffled order
    assert sorted(np.linalg.norm(shuffled.reshape(300, 6), axis=1)) == pytest.approx(sorted(norms.ravel()))


def test_breast_cancer_is_kept_in_the_data_cache_and_read_without_scikit_learn(tmp_path):
    """The default dataset's scaled arrays are cached under data.dir: the next process reads
    them without importing scikit-learn (half a second of every default run), and gets the
    same arrays as scikit-learn's."""
    import subprocess
    import sys

    from efbench.problems.datasets import load_breast_cancer_scaled

    X, y = load_breast_cancer_scaled(tmp_path)
    assert (tmp_path / "breast_cancer.npz").is_file()
    probe = (
        "import sys, numpy as np; from efbench.problems.datasets import load_breast_cancer_scaled as f; "
        f"X, y = f({str(tmp_path)!r}); np.save(sys.argv[1], np.c_[X, y]); print('sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "xy.npy")], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    np.testing.assert_array_equal(np.load(tmp_path / "xy.npy"), np.c_[X, y])
    fresh_X, fresh_y = load_breast_cancer_scaled()  # no cache: from scikit-learn
    np.testing.assert_array_equal(X, fresh_X)
    np.testing.assert_array_equal(y, fresh_y)


@pytest.mark.parametrize("block", [1, 7, 256])
def test_sparse_synthetic_built_as_csr_has_the_dense_builds_values(block):
    """make_synthetic_csr draws what make_synthetic draws, a block of rows at a time, and
    keeps the same values as CSR (memory with the nonzeros, not rows x features)."""
    from efbench.problems.datasets import make_synthetic, make_synthetic_csr

    X, y = make_synthetic(50, 40, seed=3, density=0.05)
    S, ys = make_synthetic_csr(50, 40, seed=3, density=0.05, block=block)
    assert sp.issparse(S) and S.nnz == np.count_nonzero(X)
    np.testing.assert_array_equal(S.toarray(), X)
    np.testing.assert_array_equal(ys, y)


def test_synthetic_data_too_large_for_dense_runs_as_csr(monkeypatch):
    """A sparse synthetic dataset whose dense build is over CSR_BUILD_BYTES is built as CSR
    and split as CSR rows, and runs where its dense build is over the memory limit; a dense
    one over the limit is still refused."""
    from test_cli import cfg_of

    from efbench.errors import ConfigError
    from efbench.problems import datasets
    from efbench.problems.datasets import MAX_DENSE_ENV, load_dataset, partition

    monkeypatch.setenv(MAX_DENSE_ENV, "0.001")  # 1 MB: 2000 x 1000 dense floats are 16 MB
    monkeypatch.setattr(datasets, "CSR_BUILD_BYTES", 1e6)
    size = ["dataset=synthetic", "dataset.synthetic.rows=2000", "dataset.synthetic.features=1000"]
    cfg = cfg_of(*size, "dataset.synthetic.density=0.002", "dataset.n_workers=4", "dataset.m=500")
    X, y = load_dataset(cfg)
    assert sp.issparse(X) and X.shape == (2000, 1000) and set(np.unique(y)) <= {-1.0, 1.0}
    A, _ = partition(X, y, 4, 500)
    assert sp.issparse(A)
    with pytest.raises(ConfigError, match="dataset"):
        load_dataset(cfg_of(*size, "dataset.synthetic.density=0.5", "dataset.n_workers=4", "dataset.m=500"))
