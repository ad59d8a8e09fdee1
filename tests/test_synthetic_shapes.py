"""Synthetic stand-ins shaped like epsilon and rcv1.binary (offline), and the choice between
them and the real files (datasets.on_disk, datasets.real_or_synthetic)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from scipy.optimize import minimize

from efbench import cache
from efbench.config import schema
from efbench.errors import ConfigError
from efbench.problems.datasets import (
    LIBSVM_FILES,
    MIRROR_ENV,
    SYNTHETIC_OF,
    load_dataset,
    make_epsilon_like,
    make_rcv1_like,
    on_disk,
    parse_key,
    partition,
    real_or_synthetic,
)
from efbench.problems.logistic import LogisticProblem

CONF = Path(__file__).resolve().parents[1] / "efbench" / "conf" / "dataset"


def _cfg(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module("efbench.conf", version_base="1.3"):
        return compose("config", overrides=["progress=false", *overrides])


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """An epsilon parse cache holding these arrays (on_disk reads its labels and shape only)."""
    cache.write(path, "libsvm", parse_key(LIBSVM_FILES["epsilon"]), arrays)


def _row_norms(X) -> np.ndarray:
    if sp.issparse(X):
        return np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return np.linalg.norm(X, axis=1)


def _stand_ins() -> dict[str, dict]:
    return {
        p.stem: c
        for p in sorted(CONF.glob("*.yaml"))
        if (c := yaml.safe_load(p.read_text())).get("synthetic_of")
    }


def test_stand_in_presets_say_synthetic_and_match_their_files():
    """One preset a shape, named synthetic, with the real file's d (and rows where fixed), the
    real preset's workers; the schema allows exactly the shapes the loader builds."""
    stand_ins = _stand_ins()
    assert {c["synthetic_of"] for c in stand_ins.values()} == set(SYNTHETIC_OF) == {"epsilon", "rcv1"}
    assert set(schema.TOP["dataset.synthetic_of"].choices) == set(SYNTHETIC_OF)
    for stem, c in stand_ins.items():
        real = yaml.safe_load((CONF / f"{c['synthetic_of']}.yaml").read_text())
        spec = LIBSVM_FILES[real["libsvm_name"]]
        assert c["name"] == stem and "synth" in stem and c["source"] == "synthetic"
        assert c["synthetic"]["features"] == spec.features and c["n_workers"] == real["n_workers"]
        assert c["synthetic"]["rows"] in (None, spec.rows)
        assert c["synthetic"]["seed"] == "${data.seed}"
    assert stand_ins["rcv1_synth"]["m"] == 1012 and stand_ins["rcv1_synth"]["synthetic"]["rows"] == 20242
    assert stand_ins["rcv1_synth"]["synthetic"]["density"] * 47236 == pytest.approx(74, abs=0.01)


def test_epsilon_like_rows_are_unit_norm_standard_normal_and_follow_data_seed():
    """dataset=epsilon_synth with small n, m: n m dense rows of d = 2000, unit l2 norm, every
    feature of mean 0 and variance 1/d (standard normal, scaled by about 1/sqrt(d)), labels
    about half +1; the same data.seed gives the same data, another seed other data."""
    cfg = _cfg("dataset=epsilon_synth", "dataset.n_workers=4", "dataset.m=300")
    schema.validate(cfg)
    X, y = load_dataset(cfg)
    assert isinstance(X, np.ndarray) and X.shape == (1200, 2000) and y.shape == (1200,)
    np.testing.assert_allclose(_row_norms(X), 1.0, atol=1e-12)
    assert np.abs(X.mean(axis=0)).max() < 5 / np.sqrt(1200 * 2000)  # means: N(0, 1/(N d))
    assert X.var(axis=0).mean() == pytest.approx(1 / 2000, rel=0.02)
    assert 0.8 / 2000 < X.var(axis=0).min() and X.var(axis=0).max() < 1.2 / 2000
    assert set(np.unique(y)) == {-1.0, 1.0} and abs((y > 0).mean() - 0.5) < 0.06
    X2, y2 = load_dataset(cfg)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = load_dataset(_cfg("dataset=epsilon_synth", "dataset.n_workers=4", "dataset.m=300", "data.seed=1"))
    assert not np.allclose(X, X3)
    rows = _cfg("dataset=epsilon_synth", "dataset.n_workers=2", "dataset.m=10", "dataset.synthetic.rows=50")
    assert load_dataset(rows)[0].shape == (50, 2000)


def _min_logistic_loss(X, y) -> float:
    """inf_x (1/N) sum_r log(1 + exp(-y_r <a_r, x>)), no regularizer: 0 exactly when some
    hyperplane separates the labels (scaled up, it drives every term to 0)."""

    def f(x):
        z = -y * (X @ x)
        return np.logaddexp(0, z).mean(), X.T @ (-y / (1 + np.exp(-z))) / len(y)

    res = minimize(
        f, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 3000, "gtol": 1e-10}
    )
    return float(res.fun)


def test_epsilon_like_labels_are_a_noisy_planted_linear_model():
    """At the preset's rows / d = 10: with 10 % flipped labels the logistic loss stays above
    0.25 at its minimum (not separable); without the flips the planted hyperplane separates
    them (loss -> 0). A linear model fitted on part of the rows predicts the others
    (a 10 % noise ceiling; random labels would give 50 %)."""
    from sklearn.linear_model import LogisticRegression

    X, y = make_epsilon_like(2000, 200, seed=0)
    assert _min_logistic_loss(X, y) > 0.25
    X0, y0 = make_epsilon_like(2000, 200, seed=0, label_noise=0.0)
    assert _min_logistic_loss(X0, y0) < 1e-3
    X, y = make_epsilon_like(3000, 200, seed=1)
    fit = LogisticRegression(C=100, max_iter=1000).fit(X[:2000], y[:2000])
    assert 0.7 < fit.score(X[2000:], y[2000:]) <= 0.95


@pytest.fixture(scope="module")
def rcv1_synth():
    """The full rcv1_synth preset (20242 x 47236), as the runner loads it."""
    return load_dataset(_cfg("dataset=rcv1_synth"))


def test_rcv1_like_has_rcv1s_shape_density_norms_and_balance(rcv1_synth):
    X, y = rcv1_synth
    assert sp.isspmatrix_csr(X) and X.shape == (20242, 47236) and y.shape == (20242,)
    nnz = np.diff(X.indptr)
    assert nnz.mean() == pytest.approx(74, rel=0.02) and nnz.min() >= 1
    assert X.nnz / (20242 * 47236) == pytest.approx(0.0016, rel=0.05)
    assert X.data.min() > 0
    np.testing.assert_allclose(_row_norms(X), 1.0, atol=1e-12)
    assert set(np.unique(y)) == {-1.0, 1.0} and abs((y > 0).mean() - 0.5) < 0.05


def test_rcv1_like_values_are_ltc_tf_idf_over_heavy_tailed_terms(rcv1_synth):
    """Each value is (1 + ln tf) ln(N / df) / (row norm) with tf a whole count >= 1: divided
    by ln(N / df) and by its row's smallest such ratio (a term seen once), exp(ratio - 1) is
    an integer, mostly 1. Term frequencies are Zipf-like: the top 1 % of the features hold
    over a quarter of the nonzeros and the median feature is in far fewer rows than the mean."""
    X, _ = rcv1_synth
    N, d = X.shape
    df = np.bincount(X.indices, minlength=d)
    ratio = X.data / np.log(N / df[X.indices])
    row_of = np.repeat(np.arange(N), np.diff(X.indptr))
    tf = np.exp(ratio / np.minimum.reduceat(ratio, X.indptr[:-1])[row_of] - 1)
    np.testing.assert_allclose(tf, tf.round(), atol=1e-9)
    assert (tf.round() == 1).mean() > 0.8 and (tf.round() > 1).any()
    ranked = np.sort(df)[::-1]
    assert ranked[: d // 100].sum() > 0.25 * X.nnz
    assert np.median(df) < df.mean() / 2 and ranked[0] > 0.2 * N


def test_rcv1_like_stays_csr_end_to_end(rcv1_synth):
    """The preset's split (20 x 1012 of 47236, 7.7 GB as dense rows) is CSR rows, and the
    problem keeps them in CSR only."""
    X, y = rcv1_synth
    A, Y = partition(X, y, 20, 1012, "shuffle", seed=0)
    assert sp.issparse(A) and A.shape == (20240, 47236) and Y.shape == (20, 1012)
    p = LogisticProblem(A, Y, 0.0)
    assert p.csr is not None and not p.has_dense and p.csr.nnz == A.nnz


def test_rcv1_like_labels_follow_a_planted_model_and_data_seed():
    """Smaller rows and vocabulary (same code): a linear model fitted on part of the rows
    predicts the others well above chance; the same seed gives the same matrix and labels,
    another seed others."""
    from sklearn.linear_model import LogisticRegression

    X, y = make_rcv1_like(6000, 3000, seed=1, density=0.02)
    fit = LogisticRegression(C=100, max_iter=1000).fit(X[:4000], y[:4000])
    assert fit.score(X[4000:], y[4000:]) > 0.65
    X2, y2 = make_rcv1_like(6000, 3000, seed=1, density=0.02)
    assert (X != X2).nnz == 0 and np.array_equal(y, y2)
    X3, _ = make_rcv1_like(6000, 3000, seed=2, density=0.02)
    assert (X != X3).nnz > 0
    small = _cfg("dataset=rcv1_synth", "dataset.n_workers=2", "dataset.m=100", "dataset.synthetic.rows=300")
    Xs, _ = load_dataset(small)
    assert sp.isspmatrix_csr(Xs) and Xs.shape == (300, 47236)
    again = _cfg("dataset=rcv1_synth", "dataset.n_workers=2", "dataset.m=100", "dataset.synthetic.rows=300")
    assert (load_dataset(again)[0] != Xs).nnz == 0
    other = _cfg(
        "dataset=rcv1_synth",
        "dataset.n_workers=2",
        "dataset.m=100",
        "dataset.synthetic.rows=300",
        "data.seed=4",
    )
    assert (load_dataset(other)[0] != Xs).nnz > 0


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["dataset=rcv1_synth", "dataset.synthetic.label_noise=0.7"], r"dataset\.synthetic\.label_noise"),
        (["dataset=rcv1_synth", "dataset.synthetic_of=mnist"], r"dataset\.synthetic_of"),
        (["dataset=rcv1_synth", "dataset.m=1013"], r"dataset\.n_workers: .* but rcv1_synth has 20242"),
        (["dataset=epsilon_synth", "dataset.synthetic.rows=0"], r"dataset\.synthetic\.rows"),
    ],
)
def test_bad_settings_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}"):
        schema.validate(_cfg(*overrides))


def test_rows_follow_the_workers_and_the_memory_limit_holds():
    """epsilon_synth's rows are n_workers x m (any m is valid), and the real file's split,
    m = 20000 (6.4 GB dense), is refused naming dataset before anything is drawn."""
    schema.validate(_cfg("dataset=epsilon_synth", "dataset.m=5000"))
    with pytest.raises(ConfigError, match=r"^dataset: epsilon_synth as dense .*6\.4 GB.*dataset\.m <= 12500"):
        load_dataset(_cfg("dataset=epsilon_synth", "dataset.m=20000"))


def test_on_disk_finds_a_file_in_the_mirror_or_the_cache_without_network(tmp_path, monkeypatch):
    """epsilon is on disk when the mirror holds it under a name the loader reads, or the parse
    cache has its shape; a damaged or wrong-shaped cache is not. real_or_synthetic then picks
    epsilon, else the stand-in shaped like it; embedded and synthetic data are always there."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setenv("EFBENCH_DATA_DIR", str(tmp_path / "none"))
    cache, mirror = tmp_path / "cache", tmp_path / "mirror"
    cache.mkdir()
    mirror.mkdir()
    assert not on_disk("epsilon", cache, mirror) and not on_disk("epsilon")
    assert real_or_synthetic("epsilon", cache, mirror) == "epsilon_synth"
    assert real_or_synthetic("rcv1", cache, mirror) == "rcv1_synth"
    assert real_or_synthetic("a9a", cache, mirror) == "a9a"  # no stand-in: its load says what is missing
    assert on_disk("breast_cancer", cache, mirror) and on_disk("rcv1_synth", cache, mirror)
    (mirror / "epsilon_normalized.bz2").write_bytes(b"")  # the site's name; read and verified on load
    assert on_disk("epsilon", cache, mirror) and real_or_synthetic("epsilon", cache, mirror) == "epsilon"
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    assert on_disk("epsilon", cache)
    cfg = _cfg("dataset=epsilon", f"data.dir={cache}", f"data.mirror={tmp_path / 'empty'}")
    assert not on_disk(cfg)  # a config's own data.mirror and data.dir

    (cache / "epsilon.npz").write_bytes(b"damaged")
    assert not on_disk(cfg)
    y = np.ones(400000)
    save_npz(cache / "epsilon.npz", y=y[:10], shape=np.array([10, 2000]))
    assert not on_disk(cfg)
    save_npz(cache / "epsilon.npz", y=y, shape=np.array([400000, 2000]))
    assert on_disk(cfg) and on_disk("epsilon", cache, tmp_path / "empty")
    assert on_disk("gisette", cache, mirror) is False
    (mirror / "gisette_scale.bz2").write_bytes(b"")
    assert on_disk("gisette", cache, mirror)  # a preset name, its file gisette_scale


def test_stand_ins_cache_their_constants_and_optimum(tmp_path):
    """The runner caches L, L_i and x* of a stand-in under data.dir (content-keyed, as for the
    LIBSVM files), and of any other data too (issue 23: every source)."""
    from efbench.run.runner import build_setup

    small = ["dataset.n_workers=2", "dataset.m=40", "dataset.synthetic.features=50", f"data.dir={tmp_path}"]
    setup = build_setup(_cfg("dataset=epsilon_synth", *small))
    assert setup.constants["f_star"] > 0
    assert len(list((tmp_path / "cache").glob("xstar-*.npz"))) == 1
    assert len(list((tmp_path / "cache").glob("spectra-*.npz"))) == 1
    build_setup(_cfg("dataset=synthetic", f"data.dir={tmp_path / 'plain'}"))
    assert len(list((tmp_path / "plain" / "cache").glob("xstar-*.npz"))) == 1
