"""Datasets: LIBSVM download/mirror/verify/cache, embedded data, and the split into workers.

LIBSVM binary-classification files are fetched from the LIBSVM site (with pooch, which
verifies the sha256 and shows a progress bar) or read from a local mirror directory
(``data.mirror`` or the ``EFBENCH_DATA_MIRROR`` environment variable) holding
``<name>.bz2`` or ``<name>``. Every file is checked against its published row count,
feature count and label counts; the parsed matrix is cached as ``data/<name>.npz``,
written atomically so an interrupted run never leaves a half-written cache.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from efbench.errors import ConfigError, DataError, check_choice
from efbench.results import atomic_write_bytes

LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
MIRROR_ENV = "EFBENCH_DATA_MIRROR"
DATA_DIR_ENV = "EFBENCH_DATA_DIR"
SPLITS = ("shuffle", "file", "label_sorted", "dirichlet")


@dataclass(frozen=True)
class LibsvmFile:
    """What a genuine LIBSVM file must contain (published counts, sha256 of the text)."""

    name: str
    remote: str
    rows: int
    features: int
    positives: int
    sha256: str | None


LIBSVM_FILES = {
    "a9a": LibsvmFile(
        "a9a",
        "a9a",
        32561,
        123,
        7841,
        "48aa8c139df1b594f4ffdb492fd0f5de81a9fc3201a89c672a6144ab5f55f52e",
    ),
    "w8a": LibsvmFile(
        "w8a",
        "w8a",
        49749,
        300,
        1479,
        "b464b4f6ce6a5d9e181ffc793e19a04751036273722312398ef7673705014902",
    ),
    # labels as LIBSVM ships them: {1, 2}, {0, 1}; the smaller becomes -1 (parse_libsvm)
    "mushrooms": LibsvmFile(
        "mushrooms",
        "mushrooms",
        8124,
        112,
        4208,
        "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538",
    ),
    "phishing": LibsvmFile(
        "phishing",
        "phishing",
        11055,
        68,
        6157,
        "0cf66ef36604c393da9359b2e5d894a2df8aee31fd184633cefa138add2ef08a",
    ),
    "a1a": LibsvmFile(  # the largest index in the file is 119; 123 is the published width
        "a1a",
        "a1a",
        1605,
        123,
        395,
        "eb54c45f1bdb51286f803dd092eb8202b44637a858fc6c4e533a2d64a0d94b4e",
    ),
    # The LIBSVM site ships gisette only compressed; its text hash is not published,
    # so rows, features and the balanced labels are what is verified.
    "gisette_scale": LibsvmFile("gisette_scale", "gisette_scale.bz2", 6000, 5000, 3000, None),
}


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Save arrays as .npz atomically (never a half-written file)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _decompress(raw: bytes, origin: str) -> bytes:
    if raw[:3] != b"BZh":
        return raw
    try:
        return bz2.decompress(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"{origin} is corrupt or truncated (bzip2: {exc}); delete it and fetch it again"
        ) from None


def _mirror_sums(mirror: Path) -> dict[str, str]:
    sums = mirror / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0]
    return out


def _fetch_text(spec: LibsvmFile, data_dir: Path, mirror: str | None) -> tuple[bytes, str]:
    """Return the decompressed LIBSVM text and a description of where it came from."""
    if mirror:
        mdir = Path(mirror).expanduser()
        if not mdir.is_dir():
            raise DataError(
                f"data.mirror={mirror!r} is not a directory "
                f"(set data.mirror or ${MIRROR_ENV} to a folder holding {spec.name}.bz2)"
            )
        for cand in (mdir / f"{spec.name}.bz2", mdir / spec.name, mdir / spec.remote):
            if cand.is_file():
                text = _decompress(cand.read_bytes(), str(cand))
                expected = spec.sha256 or _mirror_sums(mdir).get(spec.name)
                return _check_sha(text, expected, str(cand)), str(cand)
        raise DataError(
            f"dataset {spec.name!r} is not in the mirror {mdir} "
            f"(looked for {spec.name}.bz2 and {spec.name}); "
            f"unset data.mirror/${MIRROR_ENV} to download it"
        )
    import pooch  # deferred: only real downloads need it

    url = LIBSVM_URL + spec.remote
    known = f"sha256:{spec.sha256}" if spec.sha256 and spec.remote == spec.name else None
    try:
        path = pooch.retrieve(
            url, known_hash=known, fname=spec.remote, path=data_dir / "raw", progressbar=True
        )
    except ValueError as exc:  # pooch's hash mismatch
        raise DataError(f"download of {url} is corrupt: {exc}") from None
    except Exception as exc:  # network errors come in many types (requests, urllib, OSError)
        raise DataError(
            f"cannot download {spec.name} from {url} ({type(exc).__name__}: {exc}). "
            f"Offline? Point data.mirror (or ${MIRROR_ENV}) at a folder holding {spec.name}.bz2"
        ) from None
    text = _decompress(Path(path).read_bytes(), path)
    return _check_sha(text, spec.sha256, path), path


def _check_sha(text: bytes, expected: str | None, origin: str) -> bytes:
    if expected is not None:
        got = hashlib.sha256(text).hexdigest()
        if got != expected:
            raise DataError(
                f"{origin} is corrupt or truncated: sha256 {got[:12]}... != expected {expected[:12]}..."
            )
    return text


def parse_libsvm(text: bytes, spec: LibsvmFile, origin: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """Parse LIBSVM text and verify rows, features and labels against ``spec``."""
    from sklearn.datasets import load_svmlight_file

    try:
        X, y = load_svmlight_file(io.BytesIO(text), n_features=spec.features)
    except ValueError as exc:
        raise DataError(f"{origin} is not a valid LIBSVM file ({exc})") from None
    labels = np.unique(y)
    if len(labels) != 2:
        raise DataError(f"{origin}: a binary dataset has two labels, found {labels.tolist()}")
    y = np.where(y == labels[1], 1.0, -1.0)  # {-1, +1}, {0, 1}, {1, 2}: the larger is +1
    n_pos = int((y > 0).sum())
    if X.shape != (spec.rows, spec.features) or n_pos != spec.positives:
        raise DataError(
            f"{origin} is corrupt or truncated: got {X.shape[0]} rows x {X.shape[1]} features "
            f"with {n_pos} positive labels, expected {spec.rows} x {spec.features} "
            f"with {spec.positives}"
        )
    return X.tocsr(), y.astype(np.float64)


def load_libsvm(name: str, data_dir: str | Path, mirror: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a LIBSVM dataset as a dense (rows, features) matrix and labels in {-1, +1}.

    Order of look-up: the parsed cache ``<data_dir>/<name>.npz``; else the mirror when
    given; else a download into ``<data_dir>/raw``.
    """
    check_choice("dataset.name", name, LIBSVM_FILES)
    spec = LIBSVM_FILES[name]
    data_dir = Path(data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(
            "data.dir", f"{data_dir} is not a directory", "a folder for downloads and the cache"
        )
    cache = data_dir / f"{name}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(spec.rows, spec.features))
                y = z["y"]
            if y.shape == (spec.rows,) and int((y > 0).sum()) == spec.positives:
                return X.toarray(), y
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache is rebuilt from the source below
    text, origin = _fetch_text(spec, data_dir, mirror)
    X, y = parse_libsvm(text, spec, origin)
    save_npz(cache, data=X.data, indices=X.indices, indptr=X.indptr, y=y)
    return X.toarray(), y


BREAST_CANCER_ROWS, BREAST_CANCER_FEATURES = 569, 30  # scikit-learn's Wisconsin breast cancer data


def load_breast_cancer_scaled() -> tuple[np.ndarray, np.ndarray]:
    """Wisconsin breast cancer data shipped with scikit-learn, scaled to [-1, 1] per feature
    (as LIBSVM's ``breast-cancer_scale``); malignant = -1, benign = +1. No network needed."""
    from sklearn.datasets import load_breast_cancer

    X, t = load_breast_cancer(return_X_y=True)
    lo, hi = X.min(axis=0), X.max(axis=0)
    X = 2.0 * (X - lo) / np.where(hi > lo, hi - lo, 1.0) - 1.0
    return X, np.where(t == 1, 1.0, -1.0)


def make_synthetic(
    rows: int, features: int, seed: int, density: float = 1.0, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded synthetic logistic data: a ~ N(0, I/d) (optionally sparse), y = sign(<a, w> + noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features)) / np.sqrt(features * density)
    if density < 1.0:
        X *= rng.random((rows, features)) < density
    w = rng.standard_normal(features)
    margin = X @ w + noise * rng.standard_normal(rows)
    return X, np.where(margin >= 0, 1.0, -1.0)


def load_dataset(cfg) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels of the configured ``dataset`` (libsvm, sklearn or synthetic source)."""
    source = cfg.dataset.source
    check_choice("dataset.source", source, ("libsvm", "sklearn", "synthetic"))
    if source == "libsvm":
        data_dir = cfg.data.dir or os.environ.get(DATA_DIR_ENV) or "data"
        mirror = cfg.data.mirror or os.environ.get(MIRROR_ENV) or None
        return load_libsvm(cfg.dataset.libsvm_name, data_dir, mirror)
    if source == "sklearn":
        return load_breast_cancer_scaled()
    s = cfg.dataset.synthetic
    return make_synthetic(int(s.rows), int(s.features), int(s.seed), float(s.density))


def partition(
    X: np.ndarray, y: np.ndarray, n: int, m: int, split: str = "shuffle", seed: int = 0, alpha: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into n workers of m rows each: arrays A (n, m, d) and labels (n, m).

    ``shuffle``: a seeded permutation, first n*m rows, worker i gets block i (SPEC.md 1).
    ``file``: file order (LIBSVM files are not randomly ordered, so workers differ).
    ``label_sorted``: the shuffled rows sorted by label before splitting (heterogeneous).
    ``dirichlet``: worker i's share of positive labels ~ Dirichlet(alpha) (small alpha:
    strong label skew), rows drawn without replacement.
    """
    check_choice("data.split", split, SPLITS)
    N, d = X.shape
    if n < 1 or m < 1:
        raise ConfigError("dataset.n_workers" if n < 1 else "dataset.m", "must be >= 1")
    if n * m > N:
        raise ConfigError(
            "dataset.n_workers" if n > N else "dataset.m",
            f"n_workers x m = {n} x {m} = {n * m} rows, but the dataset has {N}",
            f"dataset.n_workers * dataset.m <= {N}",
        )
    rng = np.random.default_rng(seed)
    if split == "file":
        rows = np.arange(n * m)
    elif split in ("shuffle", "label_sorted"):
        rows = rng.permutation(N)[: n * m]
        if split == "label_sorted":
            rows = rows[np.argsort(y[rows], kind="stable")]
    else:
        if alpha <= 0:
            raise ConfigError("data.alpha", f"must be > 0, got {alpha}")
        pools = [list(rng.permutation(np.flatnonzero(y > 0))), list(rng.permutation(np.flatnonzero(y <= 0)))]
        chosen = []
        for _ in range(n):
            want_pos = int(round(rng.dirichlet([alpha, alpha])[0] * m))
            want_pos = min(want_pos, len(pools[0]), m)
            want_pos = max(want_pos, m - len(pools[1]))
            chosen += [pools[0].pop() for _ in range(want_pos)]
            chosen += [pools[1].pop() for _ in range(m - want_pos)]
        rows = np.asarray(chosen)
    return X[rows].reshape(n, m, d), y[rows].reshape(n, m)
