"""Verified caches (efbench.cache): the parsed dataset, the spectra (L, L_i) and x* (l2 > 0 and
l2 = 0). Every way a cache file can be wrong (empty, truncated, random bytes, damaged content,
right shape and wrong values, another problem's file, written by an older efbench, a folder
in its place) gives the fresh result, one warning naming the file and what was wrong, and a
verified file in its place; an unwritable cache location gives the fresh result and one
warning, never a traceback."""

from __future__ import annotations

import bz2
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from efbench import cache
from efbench.problems.datasets import LIBSVM_FILES, load_libsvm, make_synthetic, on_disk, parse_key, partition
from efbench.problems.logistic import (
    LogisticProblem,
    load_spectra,
    optimum,
    relative_gradient,
    spectra_check,
    top_eigenpair,
)
from efbench.problems.nonconvex import optimum_without_mu

L2 = 1e-3
N_WORKERS, M = 3, 500


def _problem(X, y, seed: int = 0, l2: float = L2) -> LogisticProblem:
    A, Y = partition(X, y, N_WORKERS, M, "shuffle", seed)
    return LogisticProblem(A, Y, l2)


@pytest.fixture(scope="module")
def a1a(mirror, tmp_path_factory):
    return load_libsvm("a1a", tmp_path_factory.mktemp("a1a"), str(mirror))


@dataclass
class Kind:
    """One kind of cache: ``run(folder)`` computes through a cache in ``folder`` (None: no
    cache) and returns what a caller gets; ``path(folder)`` is its file; ``other(folder)``
    writes there the cache of another problem (or dataset), ``wrong(arrays)`` gives arrays of
    the right shape and wrong values."""

    name: str
    kind: str
    run: object
    path: object
    other: object
    wrong: object


def _kinds(a1a, mirror) -> dict[str, Kind]:
    X, y = a1a

    def dataset(folder):
        Xc, yc = load_libsvm("a1a", folder, str(mirror))
        return Xc.toarray(), yc

    def dataset_other(folder):
        load_libsvm("mushrooms", folder / "m", str(mirror))
        shutil.copy(folder / "m" / "mushrooms.npz", folder / "a1a.npz")

    def labels_flipped(z):
        return {**z, "y": -z["y"]}

    def spectra(folder, seed=0):
        p = _problem(X, y, seed)
        load_spectra(p, folder)
        return p.data_smoothness, p.worker_smoothness

    def spectra_path(folder):
        return folder / f"spectra-{_problem(X, y).data_fingerprint}.npz"

    def spectra_other(folder):
        spectra(folder / "o", seed=1)
        (found,) = (folder / "o").glob("spectra-*.npz")
        shutil.copy(found, spectra_path(folder))

    def scaled(z):
        return {**z, "L": z["L"] * 2, "L_i": z["L_i"] * 2}

    def xstar(folder, l2=L2):
        return optimum(_problem(X, y, l2=l2), folder)

    def xstar_path(folder):
        p = _problem(X, y)
        return folder / f"xstar-{p.data_fingerprint}-{p.l2!r}.npz"

    def xstar_other(folder):
        xstar(folder / "o", l2=2 * L2)
        (found,) = (folder / "o").glob("xstar-*.npz")
        shutil.copy(found, xstar_path(folder))

    def zeros(z):
        return {**z, "x": np.zeros_like(z["x"])}

    # l2 = 0 on noisy synthetic rows: not separable, and solved in a few Newton steps (a1a
    # takes 200 of them)
    Xs, ys = make_synthetic(N_WORKERS * M, 10, seed=3, noise=2.0)

    def l2zero(folder, seed=0):
        return optimum_without_mu(_problem(Xs, ys, seed, 0.0), folder)[:2]

    def l2zero_path(folder):
        return folder / f"xstar-l2zero-{_problem(Xs, ys, l2=0.0).data_fingerprint}.npz"

    def l2zero_other(folder):
        l2zero(folder / "o", seed=1)
        (found,) = (folder / "o").glob("xstar-l2zero-*.npz")
        shutil.copy(found, l2zero_path(folder))

    return {
        "dataset": Kind("dataset", "libsvm", dataset, lambda f: f / "a1a.npz", dataset_other, labels_flipped),
        "spectra": Kind("spectra", "spectra", spectra, spectra_path, spectra_other, scaled),
        "xstar": Kind("xstar", "xstar", xstar, xstar_path, xstar_other, zeros),
        "xstar_l2zero": Kind("xstar_l2zero", "xstar", l2zero, l2zero_path, l2zero_other, zeros),
    }


def _contents(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as z:
        arrays = {name: z[name] for name in z.files if name != cache.META}
        return arrays, json.loads(z[cache.META].tobytes().decode())


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _damage(how: str, k: Kind, path: Path, folder: Path) -> None:
    """Damage the good cache file ``path`` as ``how`` says."""
    good = path.read_bytes()
    arrays, meta = _contents(path)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(good)))
    elif how == "tampered":  # one value changed, the record kept: the checksum no longer matches
        name = max(arrays, key=lambda a: arrays[a].size)
        changed = arrays[name].copy()
        changed.flat[0] += 1
        record = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path.write_bytes(_npz({**arrays, name: changed, cache.META: record}))
    elif how == "wrong_values":  # as a buggy writer would leave it: a valid checksum
        path.write_bytes(cache.encode(meta["kind"], meta["fingerprint"], k.wrong(arrays)))
    elif how == "other_problem":
        k.other(folder)
    elif how == "old_format":  # what efbench wrote before its caches were verified
        path.write_bytes(_npz(arrays))
    elif how == "folder":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(how)


WHAT = {
    "empty": "unreadable",
    "truncated": "unreadable",
    "random": "unreadable",
    "tampered": "does not match its checksum",
    "wrong_values": "holds wrong values",
    "other_problem": "computed from other data or settings",
    "old_format": "written before efbench verified its caches",
    "folder": "is not a regular file",
}


def _same(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "efbench"]


_FRESH: dict[str, object] = {}  # each kind's result computed without a cache, once


@pytest.mark.parametrize("how", list(WHAT))
@pytest.mark.parametrize("name", ["dataset", "spectra", "xstar", "xstar_l2zero"])
def test_a_bad_cache_is_rebuilt_with_one_warning(name, how, a1a, mirror, tmp_path, caplog):
    k = _kinds(a1a, mirror)[name]
    if name not in _FRESH:
        _FRESH[name] = k.run(None) if name != "dataset" else k.run(tmp_path / "fresh")
    fresh = _FRESH[name]
    folder = tmp_path / "c"
    _same(k.run(folder), fresh)
    path = k.path(folder)
    _, meta = _contents(path)
    assert cache.read(path, k.kind, meta["fingerprint"])[0] is not None
    _damage(how, k, path, folder)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="efbench"):
        _same(k.run(folder), fresh)
    (warning,) = _warnings(caplog)
    assert str(path) in warning and WHAT[how] in warning, warning
    if how == "folder":  # nothing can replace a folder: computed, not rewritten, said once
        assert "not rewritten" in warning and path.is_dir()
        return
    assert "recomputed and rewritten" in warning
    assert cache.read(path, k.kind, meta["fingerprint"])[0] is not None  # a verified file again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="efbench"):
        _same(k.run(folder), fresh)
    assert _warnings(caplog) == []


def test_cache_a_plain_file_computes_without_caching_and_warns_once(a1a, tmp_path, caplog):
    """``<data dir>/cache`` a plain file: the spectra and x* are computed, one line says so."""
    X, y = a1a
    want = _problem(X, y)
    L, fstar = want.data_smoothness, optimum(want, None)[1]
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    for _ in range(2):
        p = _problem(X, y)
        with caplog.at_level(logging.WARNING, logger="efbench"):
            load_spectra(p, blocked)
            _, f = optimum(p, blocked)
        assert p.data_smoothness == L and f == fstar
    (warning,) = _warnings(caplog)
    assert "cannot write the cache" in warning and str(blocked) in warning
    assert f"{blocked} is a file, not a folder" in warning
    assert "computed without caching" in warning and blocked.read_text() == "not a folder"


def test_an_unwritable_data_dir_warns_once(a1a, mirror, tmp_path, caplog, monkeypatch):
    """A read-only data dir (every write refused, as for root no chmod can): the dataset, its
    spectra and x* are computed, with one warning for the folder."""

    def refuse(path, payload):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache, "atomic_write_bytes", refuse)
    X, y = a1a
    with caplog.at_level(logging.WARNING, logger="efbench"):
        Xc, yc = load_libsvm("a1a", tmp_path, str(mirror))
        p = _problem(Xc, yc)
        load_spectra(p, tmp_path / "cache")
        _, f = optimum(p, tmp_path / "cache")
    np.testing.assert_array_equal(Xc.toarray(), X.toarray())
    assert p.data_smoothness == _problem(X, y).data_smoothness and f == optimum(_problem(X, y), None)[1]
    (warning,) = _warnings(caplog)
    assert "PermissionError" in warning and "computed without caching" in warning
    assert list(tmp_path.iterdir()) == []


def test_the_runner_with_cache_a_plain_file(mirror, tmp_path, caplog):
    """End to end: build_setup on a1a with ``<data.dir>/cache`` a plain file gives the f* of a
    working cache, with one warning."""
    from hydra import compose, initialize_config_module

    from efbench.run.runner import build_setup

    def setup(folder):
        over = [
            "dataset=a1a",
            "dataset.n_workers=4",
            "dataset.m=200",
            f"data.dir={folder}",
            f"data.mirror={mirror}",
        ]
        with initialize_config_module("efbench.conf", version_base="1.3"):
            return build_setup(compose("config", overrides=["progress=false", *over]))

    good = setup(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cache").write_text("")
    with caplog.at_level(logging.WARNING, logger="efbench"):
        bad = setup(tmp_path / "bad")
    assert bad.fstar == good.fstar and bad.constants["L"] == good.constants["L"]
    (warning,) = _warnings(caplog)
    assert "cannot write the cache" in warning and str(tmp_path / "bad" / "cache") in warning


def test_xstar_check_is_the_gradient_at_x(a1a, tmp_path, caplog):
    """A cached x* is used while ||grad f(x*)|| is within XSTAR_SLACK of what it was solved to:
    the solver's own x* passes, one moved by 1e-6 does not and is solved again."""
    p = _problem(*a1a)
    x, fstar = optimum(p, tmp_path)
    assert relative_gradient(p, x) <= 1e-10
    (path,) = tmp_path.glob("xstar-*.npz")
    arrays, meta = _contents(path)
    path.write_bytes(cache.encode("xstar", meta["fingerprint"], {**arrays, "x": x + 1e-6}))
    with caplog.at_level(logging.WARNING, logger="efbench"):
        x2, f2 = optimum(p, tmp_path)
    np.testing.assert_array_equal(x2, x)
    assert f2 == fstar
    (warning,) = _warnings(caplog)
    assert "||grad f(x*)|| = " in warning and "above the 1.0e-09 it was solved to" in warning


@pytest.mark.parametrize("shape", [(80, 30), (30, 80)])
@pytest.mark.parametrize("sparse", [False, True])
def test_top_eigenpair_gives_lambda_max_and_its_eigenvector(shape, sparse):
    """Tall rows (the Gram matrix A^T A) and wide ones (A A^T, the vector mapped back by
    A^T): lambda_max = sigma_max(A)^2 and a unit v with A^T A v = lambda v."""
    import scipy.sparse as sp

    A = np.random.default_rng(1).standard_normal(shape) * (np.random.default_rng(2).random(shape) < 0.3)
    lam, v = top_eigenpair(sp.csr_matrix(A) if sparse else A)
    assert lam == pytest.approx(np.linalg.svd(A, compute_uv=False)[0] ** 2, rel=1e-12)
    assert np.linalg.norm(v) == pytest.approx(1.0) and v.shape == (shape[1],)
    assert np.linalg.norm(A.T @ (A @ v) - lam * v) <= 1e-12 * lam


@pytest.mark.parametrize("csr_only", [False, True])
def test_spectra_check_knows_lambda_max_from_its_eigenvector(a1a, csr_only, monkeypatch):
    """The fresh spectra pass; L or one L_i off by 1e-4, or the eigenvector of another worker,
    do not (dense rows, and CSR only as rcv1 is kept)."""
    from efbench.problems import logistic as problems

    if csr_only:
        monkeypatch.setattr(problems, "DENSE_COPY_BYTES", 0)
    X, y = a1a
    A, Y = partition(X, y, N_WORKERS, M, "shuffle", 0)
    p = LogisticProblem(A if csr_only else A.toarray().reshape(N_WORKERS, M, -1), Y, L2)
    assert p.has_dense != csr_only
    (L, v), (L_i, V_i) = p.data_top_pair, p.worker_top_pairs
    good = {"L": np.float64(L), "v": v, "L_i": L_i, "V_i": V_i}
    assert spectra_check(p, good) is None
    assert "L is not lambda_max" in spectra_check(p, {**good, "L": good["L"] * (1 + 1e-4)})
    off = L_i.copy()
    off[2] *= 1 - 1e-4
    assert "L_i[2]" in spectra_check(p, {**good, "L_i": off})
    assert "L_i[0]" in spectra_check(p, {**good, "V_i": V_i[::-1].copy()})
    assert "of shape" in spectra_check(p, {**good, "L_i": L_i[:-1]})


def test_a_file_not_in_the_table_is_parsed_again_when_its_copy_changes(tmp_path, caplog):
    """The cache of a file the table does not know keeps the size and time of the copy it was
    parsed from; a new copy in the mirror is parsed again, with one warning."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "mydata").write_bytes(b"1 1:1\n0 2:1\n")
    X, _ = load_libsvm("mydata", tmp_path / "c", str(mirror))
    assert X.shape == (2, 2)
    (mirror / "mydata").write_bytes(b"1 1:1\n0 2:1\n1 3:2\n")
    with caplog.at_level(logging.WARNING, logger="efbench"):
        X, _ = load_libsvm("mydata", tmp_path / "c", str(mirror))
    assert X.shape == (3, 3)
    (warning,) = [w for w in _warnings(caplog) if "cache" in w]
    assert "parsed from another copy" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="efbench"):
        assert load_libsvm("mydata", tmp_path / "c", None)[0].shape == (3, 3)  # offline: the cache
    assert not [w for w in _warnings(caplog) if "cache" in w]


def test_on_disk_only_for_a_verified_parse_cache(a1a, mirror, tmp_path):
    """Offline, a1a is on disk when its parse cache is one of this efbench (an older file
    would have to be parsed again, from a mirror or download it does not have)."""
    load_libsvm("a1a", tmp_path, str(mirror))
    assert on_disk("a1a", tmp_path, tmp_path / "no-mirror")
    arrays, meta = _contents(tmp_path / "a1a.npz")
    assert meta["fingerprint"] == parse_key(LIBSVM_FILES["a1a"])
    (tmp_path / "a1a.npz").write_bytes(_npz(arrays))
    assert not on_disk("a1a", tmp_path, tmp_path / "no-mirror")


def test_a_damaged_download_is_fetched_again(a1a, mirror, tmp_path, caplog, monkeypatch):
    """A download kept in <data dir>/raw that no longer decompresses or verifies is deleted
    and downloaded again, with one warning (pooch would hand it back as it is)."""
    import pooch

    text = bz2.decompress((mirror / "a1a.bz2").read_bytes())
    fetched = []

    def retrieve(url, known_hash, fname, path, progressbar):
        out = Path(path) / fname
        if not out.is_file():
            fetched.append(url)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(text)
        return str(out)

    monkeypatch.setattr(pooch, "retrieve", retrieve)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a1a").write_bytes(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING, logger="efbench"):
        X, _ = load_libsvm("a1a", tmp_path, None)
    np.testing.assert_array_equal(X.toarray(), a1a[0].toarray())
    assert len(fetched) == 1
    (warning,) = _warnings(caplog)
    assert "is damaged" in warning and "sha256" in warning and "downloading it again" in warning


def test_a_bad_cache_that_cannot_be_rebuilt_is_one_warning_and_one_error(
    a1a, mirror, tmp_path, caplog, monkeypatch
):
    """Offline, with no mirror, a damaged a1a cache cannot be parsed again: the warning names
    the file, the error (one line, no traceback) says what is missing."""
    import pooch

    from efbench.errors import DataError

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(pooch, "retrieve", offline)
    load_libsvm("a1a", tmp_path, str(mirror))
    (tmp_path / "a1a.npz").write_bytes(b"")
    with (
        caplog.at_level(logging.WARNING, logger="efbench"),
        pytest.raises(DataError, match="cannot download a1a"),
    ):
        load_libsvm("a1a", tmp_path, None)
    (warning,) = _warnings(caplog)
    assert str(tmp_path / "a1a.npz") in warning and "could not be rebuilt" in warning
