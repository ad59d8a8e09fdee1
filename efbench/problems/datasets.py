"""Datasets: LIBSVM download/mirror/verify/cache, embedded data, and the split into workers.

LIBSVM binary-classification files are fetched from the LIBSVM site (with pooch, which
verifies the sha256 and shows a progress bar) or read from a local mirror directory
(``data.mirror`` or the ``EFBENCH_DATA_MIRROR`` environment variable) holding
``<name>.bz2`` or ``<name>``. Every file of the table :data:`LIBSVM_FILES` is checked
against its published row and feature counts, and its label counts and sha256 where they
are known; any other binary LIBSVM file in the mirror loads too, its shape read from the
file itself (logged as unverified). The parsed sparse matrix is cached as
``data/<name>.npz``, a verified cache file (:mod:`efbench.cache`: the fingerprint of the
table's entry, a checksum, the CSR structure and labels checked on load; a damaged one is
parsed again with a warning). A sparse file (fewer than :data:`SPARSE_DENSITY` of its
entries nonzero: a9a, w8a, rcv1, real-sim) is split into CSR rows and the workers' data
stay sparse; a dense one is split into a dense array (n, m, d) (:func:`partition`,
:class:`efbench.problems.logistic.LogisticProblem`).
What a split would take beyond ``EFBENCH_MAX_DENSE_GB`` (default 4) is refused naming
``dataset`` (:func:`check_memory`): before any file is read where the table says the file
is dense, else as soon as the file is parsed.

Where epsilon or rcv1 cannot be fetched, presets named as synthetic (``epsilon_synth``,
``rcv1_synth``: ``dataset.synthetic_of``) draw seeded rows of the same shape
(:func:`make_epsilon_like`, :func:`make_rcv1_like`); :func:`on_disk` tells a caller which
one it can run offline (:func:`real_or_synthetic`); ``dataset=epsilon`` never falls back.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import io
import logging
import math
import os
from dataclasses import astuple, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml

from efbench import cache
from efbench.errors import ConfigError, DataError, check_choice

LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
MIRROR_ENV = "EFBENCH_DATA_MIRROR"
DATA_DIR_ENV = "EFBENCH_DATA_DIR"
MAX_DENSE_ENV = "EFBENCH_MAX_DENSE_GB"
MAX_DENSE_GB = 4.0  # the data a run may build, unless $EFBENCH_MAX_DENSE_GB says otherwise
SPARSE_DENSITY = 0.25  # data with fewer nonzeros than this share are kept (also) in CSR
# A problem kept in CSR holds per nonzero its value and index (12 bytes), the same as
# unsigned 64-bit indices for the compiled passes (8 more) and the transpose (12 more).
SPARSE_BYTES_PER_NONZERO = 32
SPLITS = ("shuffle", "file", "label_sorted", "dirichlet", "head_shuffle", "norm_sorted")

log = logging.getLogger("efbench")


@dataclass(frozen=True)
class LibsvmFile:
    """What a genuine LIBSVM file must contain: the published rows and features, the number
    of +1 labels after mapping (None: not published, so not checked) and the sha256 of the
    text (None: not published). ``remote`` is its file name on the LIBSVM site. ``dense``:
    nearly every entry is nonzero, so parsing the whole file takes rows x features x 8
    bytes or more. A file not in the table has rows and features None: read from it."""

    name: str
    remote: str
    rows: int | None
    features: int | None
    positives: int | None
    sha256: str | None
    dense: bool = False


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
    # The LIBSVM site ships gisette only compressed; its text hash is not published, so
    # rows, features and the balanced labels of the NIPS 2003 feature selection challenge
    # (Guyon et al. 2004: gisette and madelon have as many +1 as -1 training labels) are
    # what is verified.
    "gisette_scale": LibsvmFile("gisette_scale", "gisette_scale.bz2", 6000, 5000, 3000, None, dense=True),
    "madelon": LibsvmFile("madelon", "madelon", 2000, 500, 1000, None, dense=True),
    # Rows and features as the LIBSVM page publishes them; their label counts and text
    # hashes are not published, so only the shape is verified.
    "ijcnn1": LibsvmFile("ijcnn1", "ijcnn1.bz2", 49990, 22, None, None),
    "real-sim": LibsvmFile("real-sim", "real-sim.bz2", 72309, 20958, None, None),
    "rcv1": LibsvmFile("rcv1", "rcv1_train.binary.bz2", 20242, 47236, None, None),  # rcv1.binary
    "epsilon": LibsvmFile("epsilon", "epsilon_normalized.bz2", 400000, 2000, None, None, dense=True),
}


def libsvm_spec(name: str) -> LibsvmFile:
    """The table's entry for ``name``, or an unverified one whose shape the file gives."""
    return LIBSVM_FILES.get(name) or LibsvmFile(name, name, None, None, None, None)


def max_dense_bytes() -> float:
    """The limit on the data a run builds: $EFBENCH_MAX_DENSE_GB gigabytes (default MAX_DENSE_GB)."""
    raw = os.environ.get(MAX_DENSE_ENV)
    try:
        gb = MAX_DENSE_GB if raw is None else float(raw)
    except ValueError:
        gb = math.nan
    if not gb > 0:
        raise ConfigError("dataset", f"${MAX_DENSE_ENV}={raw!r} is not a number of gigabytes > 0")
    return gb * 1e9


def check_memory(
    name: str, n: int, m: int, d: int, whole_rows: int | None = None, row_nnz: float | None = None
) -> None:
    """Refuse, naming ``dataset``, data that would not fit under :func:`max_dense_bytes`.

    Dense worker data are one float64 array (n, m, d): n m d 8 bytes. Sparse worker data
    (``row_nnz``: the mean nonzeros of a row) are CSR only: SPARSE_BYTES_PER_NONZERO bytes a
    nonzero and 8 a row (:class:`efbench.problems.logistic.LogisticProblem`). A dense file or
    synthetic matrix is built whole first (``whole_rows`` x d x 8 bytes or more)."""
    limit = max_dense_bytes()
    if row_nnz is None:
        kind, per_row, shape = "dense", 8.0 * d, f"(n, m, d) = ({n}, {m}, {d})"
        why = f"; data with at least {SPARSE_DENSITY:g} of their entries nonzero are kept dense"
    else:
        kind, per_row, shape = "sparse", SPARSE_BYTES_PER_NONZERO * row_nnz + 8.0, f"(n, m) = ({n}, {m})"
        why = f", {row_nnz:.1f} nonzeros a row in CSR"
    need = n * m * per_row
    if need > limit:
        fit = int(limit // (n * per_row))
        raise ConfigError(
            "dataset",
            f"{name} as {kind} worker data {shape} needs {need / 1e9:.3g} GB, over the "
            f"{limit / 1e9:g} GB limit (${MAX_DENSE_ENV}){why}",
            f"dataset.m <= {fit} with n_workers={n}" if fit else f"at most {limit / 1e9:g} GB",
        )
    whole = 8.0 * (whole_rows or 0) * d
    if whole > limit:
        raise ConfigError(
            "dataset",
            f"{name} is built whole before it is split, {whole_rows} x {d} dense values: "
            f"{whole / 1e9:.1f} GB or more, over the {limit / 1e9:g} GB limit (${MAX_DENSE_ENV})",
        )


def is_sparse(X: np.ndarray | sp.spmatrix) -> bool:
    """Whether rows X are split into CSR rows (:func:`partition`): a scipy sparse matrix with
    fewer than SPARSE_DENSITY of its entries nonzero. Decided on the whole file, so that the
    memory check before the split and the split agree."""
    return sp.issparse(X) and X.count_nonzero() < SPARSE_DENSITY * X.shape[0] * X.shape[1]


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


def _mirror_names(spec: LibsvmFile) -> list[str]:
    """The names a mirror may hold the file under: ours (.bz2 or plain), the site's (both)."""
    return list(dict.fromkeys((f"{spec.name}.bz2", spec.name, spec.remote, spec.remote.removesuffix(".bz2"))))


def _mirror_copy(spec: LibsvmFile, mirror: str | Path | None) -> Path | None:
    """The file the mirror holds ``spec`` as (the first of :func:`_mirror_names`), or None."""
    if not mirror:
        return None
    mdir = Path(mirror).expanduser()
    return next((mdir / name for name in _mirror_names(spec) if (mdir / name).is_file()), None)


def _fetch_text(spec: LibsvmFile, data_dir: Path, mirror: str | None) -> tuple[bytes, str]:
    """Return the decompressed LIBSVM text and a description of where it came from."""
    if mirror:
        mdir = Path(mirror).expanduser()
        if not mdir.is_dir():
            raise DataError(
                f"data.mirror={mirror!r} is not a directory "
                f"(set data.mirror or ${MIRROR_ENV} to a folder holding {spec.name}.bz2)"
            )
        names = _mirror_names(spec)
        cand = _mirror_copy(spec, mdir)
        if cand is not None:
            text = _decompress(cand.read_bytes(), str(cand))
            expected = spec.sha256 or _mirror_sums(mdir).get(spec.name)
            return _check_sha(text, expected, str(cand)), str(cand)
        if spec.rows is None:
            raise _unlisted(spec.name, f"nor in the mirror {mdir} (looked for {', '.join(names)})")
        raise DataError(
            f"dataset {spec.name!r} is not in the mirror {mdir} "
            f"(looked for {', '.join(names)}); "
            f"unset data.mirror/${MIRROR_ENV} to download it"
        )
    if spec.rows is None:
        raise _unlisted(spec.name, f"and no mirror is set (data.mirror or ${MIRROR_ENV})")
    url = LIBSVM_URL + spec.remote
    known = f"sha256:{spec.sha256}" if spec.sha256 and spec.remote == spec.name else None
    kept = data_dir / "raw" / spec.remote
    had = kept.is_file()  # an earlier download, used as it is where no hash pins it
    path = _download(url, known, spec, data_dir)
    try:
        return _check_sha(_decompress(Path(path).read_bytes(), path), spec.sha256, path), path
    except DataError as exc:
        if not had:
            raise
        log.warning("downloaded %s is damaged (%s); downloading it again", path, exc)
        Path(path).unlink(missing_ok=True)
    path = _download(url, known, spec, data_dir)
    return _check_sha(_decompress(Path(path).read_bytes(), path), spec.sha256, path), path


def _download(url: str, known: str | None, spec: LibsvmFile, data_dir: Path) -> str:
    """``url`` downloaded by pooch into ``<data_dir>/raw`` (kept there: pooch fetches it again
    only when ``known``, its sha256, does not match); the path of the file."""
    import pooch  # deferred: only real downloads need it

    try:
        return pooch.retrieve(
            url, known_hash=known, fname=spec.remote, path=data_dir / "raw", progressbar=True
        )
    except ValueError as exc:  # pooch's hash mismatch
        raise DataError(f"download of {url} is corrupt: {exc}") from None
    except Exception as exc:  # network errors come in many types (requests, urllib, OSError)
        raise DataError(
            f"cannot download {spec.name} from {url} ({type(exc).__name__}: {exc}). "
            f"Offline? Point data.mirror (or ${MIRROR_ENV}) at a folder holding {spec.name}.bz2"
        ) from None


def _unlisted(name: str, where: str) -> ConfigError:
    return ConfigError(
        "dataset.libsvm_name",
        f"{name!r} is not in efbench's table of LIBSVM files, {where}",
        f"{', '.join(LIBSVM_FILES)}, or any binary LIBSVM file <name>[.bz2] in the mirror",
    )


def _check_sha(text: bytes, expected: str | None, origin: str) -> bytes:
    if expected is not None:
        got = hashlib.sha256(text).hexdigest()
        if got != expected:
            raise DataError(
                f"{origin} is corrupt or truncated: sha256 {got[:12]}... != expected {expected[:12]}..."
            )
    return text


def parse_libsvm(text: bytes, spec: LibsvmFile, origin: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """Parse LIBSVM text, labels mapped to {-1, +1} (the larger of the two is +1), and verify
    rows, features and labels against ``spec`` where it knows them. A file not in the table
    (rows None) has as many features as its largest index."""
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
    if spec.rows is not None and (
        X.shape != (spec.rows, spec.features) or spec.positives not in (None, n_pos)
    ):
        expected = f"{spec.rows} x {spec.features}"
        if spec.positives is not None:
            expected += f" with {spec.positives}"
        raise DataError(
            f"{origin} is corrupt or truncated: got {X.shape[0]} rows x {X.shape[1]} features "
            f"with {n_pos} positive labels, expected {expected}"
        )
    return X.tocsr(), y.astype(np.float64)


# What parse_libsvm makes of a file; a parse cache of another version is parsed again.
PARSE_VERSION = 1


def parse_key(spec: LibsvmFile) -> str:
    """The fingerprint of a parse cache: what the arrays are computed from, the table's entry
    (name, site file, published shape, labels and text sha256) and PARSE_VERSION. A file
    not in the table is known by its name only: its cache also keeps the size and mtime of
    the copy it was parsed from (:func:`_parse_wrong`)."""
    return cache.fingerprint("libsvm", PARSE_VERSION, *astuple(spec))


def _cache_head(z: dict[str, np.ndarray], spec: LibsvmFile) -> tuple[tuple[int, int], np.ndarray] | None:
    """The shape and labels of a parse cache, None when they are not what ``spec`` says (a
    cache of a file not in the table holds its own shape)."""
    shape = tuple(int(v) for v in z["shape"])
    y = z["y"]
    known = spec.rows is None or shape == (spec.rows, spec.features)
    if len(shape) == 2 and known and y.shape == (shape[0],) and spec.positives in (None, int((y > 0).sum())):
        return shape, y
    return None


def _source_stat(path: Path) -> np.ndarray:
    """(size, mtime in ns) of the copy a file not in the table is parsed from."""
    st = path.stat()
    return np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)


def _parse_wrong(spec: LibsvmFile, source: Path | None, z: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the verified parse cache ``z`` of ``spec`` (None: nothing): the
    table's shape and labels, a valid CSR matrix of finite values, labels in {-1, +1}, and,
    for a file not in the table, the mirror copy ``source`` unchanged since it was parsed.
    One pass over the nonzeros, against the parse it saves."""
    try:
        head = _cache_head(z, spec)
        if head is None:
            return f"not the shape and labels of {spec.name}"
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=head[0])
        X.check_format(full_check=True)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        return f"not a sparse matrix and its labels ({exc})"
    if not (np.isfinite(X.data).all() and np.isin(head[1], (-1.0, 1.0)).all()):
        return "values not finite or labels not in {-1, +1}"
    if (
        spec.rows is None
        and source is not None
        and not np.array_equal(_source_stat(source), z.get("source_stat"))
    ):
        return f"parsed from another copy of {source} (its size or time differs)"
    return None


def load_libsvm(
    name: str, data_dir: str | Path, mirror: str | None = None
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Load a binary LIBSVM dataset: a sparse (rows, features) matrix and labels in {-1, +1}.

    Order of look-up: the parsed cache ``<data_dir>/<name>.npz`` (a verified cache file:
    :mod:`efbench.cache`, :func:`parse_key`, :func:`_parse_wrong`); else the mirror when
    given; else a download into ``<data_dir>/raw`` (names in :data:`LIBSVM_FILES` only).
    A name not in the table loads from the mirror, its shape and labels read from the
    file and logged as unverified.
    """
    spec = libsvm_spec(name)
    data_dir = Path(data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(
            "data.dir", f"{data_dir} is not a directory", "a folder for downloads and the cache"
        )
    path = data_dir / f"{name}.npz"
    origin = str(path)

    def parse() -> dict[str, np.ndarray]:
        nonlocal origin
        text, origin = _fetch_text(spec, data_dir, mirror)
        X, y = parse_libsvm(text, spec, origin)
        arrays = {
            "data": X.data,
            "indices": X.indices,
            "indptr": X.indptr,
            "y": y,
            "shape": np.array(X.shape),
        }
        return {**arrays, "source_stat": _source_stat(Path(origin))}

    source = _mirror_copy(spec, mirror) if spec.rows is None else None
    z = cache.load_or_compute(
        path, "libsvm", parse_key(spec), parse, functools.partial(_parse_wrong, spec, source)
    )
    X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(v) for v in z["shape"]))
    y = z["y"]
    if spec.rows is None:
        log.warning(
            "dataset %s is not in efbench's table of LIBSVM files: %d rows x %d features (its largest "
            "index) and %d +1 labels, as read from %s, not verified against published counts",
            name,
            *X.shape,
            int((y > 0).sum()),
            origin,
        )
    return X, y


BREAST_CANCER_ROWS, BREAST_CANCER_FEATURES = 569, 30  # scikit-learn's Wisconsin breast cancer data


def load_breast_cancer_scaled(cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Wisconsin breast cancer data shipped with scikit-learn, scaled to [-1, 1] per feature
    (as LIBSVM's ``breast-cancer_scale``); malignant = -1, benign = +1. No network needed.
    Kept in ``<cache_dir>/breast_cancer.npz`` where given: a run then does not import
    scikit-learn (half a second)."""

    def scaled() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_breast_cancer

        X, t = load_breast_cancer(return_X_y=True)
        lo, hi = X.min(axis=0), X.max(axis=0)
        return {"X": 2.0 * (X - lo) / np.where(hi > lo, hi - lo, 1.0) - 1.0, "y": np.where(t == 1, 1.0, -1.0)}

    def wrong(z: dict[str, np.ndarray]) -> str | None:
        shape = (BREAST_CANCER_ROWS, BREAST_CANCER_FEATURES)
        if z["X"].shape != shape or z["y"].shape != shape[:1] or not np.isin(z["y"], (-1.0, 1.0)).all():
            return f"not {shape[0]} x {shape[1]} rows with labels -1, +1"
        if not (np.abs(z["X"]) <= 1.0).all():
            return "features outside [-1, 1]"
        return None

    path = None if cache_dir is None else Path(cache_dir) / "breast_cancer.npz"
    z = cache.load_or_compute(path, "sklearn", cache.fingerprint("breast_cancer", 1), scaled, wrong)
    return z["X"], z["y"]


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


# sparse synthetic data whose dense build would take more than this are built as CSR
# (make_synthetic_csr): a fixed size, so the storage of a config is the same on every machine
CSR_BUILD_BYTES = 256e6


def make_synthetic_csr(
    rows: int, features: int, seed: int, density: float, noise: float = 0.1, block: int = 256
) -> tuple[sp.csr_matrix, np.ndarray]:
    """:func:`make_synthetic`'s rows, the same values from the same draws, built as CSR a
    block of rows at a time: memory grows with the nonzeros, not with rows x features. The
    normals come first in its stream, so a second generator is moved past them (drawn and
    dropped a block at a time) to draw the mask's uniforms, then w and the noise, while the
    first draws the normals again. The labels use a sparse product (the dense one's sums in
    another order: a label can differ only for a margin within rounding of 0)."""
    scale = np.sqrt(features * density)
    values, late = np.random.default_rng(seed), np.random.default_rng(seed)
    for lo in range(0, rows, block):
        late.standard_normal((min(block, rows - lo), features))
    parts = []
    for lo in range(0, rows, block):
        shape = (min(block, rows - lo), features)
        A = values.standard_normal(shape) / scale
        A *= late.random(shape) < density
        parts.append(sp.csr_matrix(A))
    X = sp.vstack(parts, format="csr")
    w = late.standard_normal(features)
    margin = X @ w + noise * late.standard_normal(rows)
    return X, np.where(margin >= 0, 1.0, -1.0)


# Synthetic stand-ins for LIBSVM files too large to fetch or hold here (see SYNTHETIC_OF).
EPSILON_LABEL_NOISE = 0.1  # the best linear classifiers err on about 10 % of epsilon's rows
RCV1_LABEL_NOISE = 0.03  # and on about 3-4 % of rcv1.binary's
ZIPF_EXPONENT = 1.0  # term ranks' probabilities (r + ZIPF_OFFSET)^-ZIPF_EXPONENT: Zipf's law
ZIPF_OFFSET = 10.0  # Mandelbrot's offset: the commonest term in about half of the rows, not all
ROW_NNZ_SIGMA = 0.6  # log-normal spread of the terms a row holds (sd about 0.66 x the mean)
PLANTED_SUPPORT = 0.1  # share of the features the planted sparse model weighs


def _planted_labels(margin: np.ndarray, label_noise: float, rng: np.random.Generator) -> np.ndarray:
    """y = sign(margin) (a fair coin where margin = 0), each label then flipped with
    probability ``label_noise``: a planted linear model that no hyperplane fits exactly once
    the rows outnumber the features enough (Cover 1965: up to d rows in general position are
    separable whatever their labels, and at 2 d rows half of all labelings still are)."""
    y = np.where(margin > 0, 1.0, -1.0)
    tie = margin == 0
    y[tie] = np.where(rng.random(int(tie.sum())) < 0.5, 1.0, -1.0)
    flip = rng.random(margin.shape[0]) < label_noise
    y[flip] = -y[flip]
    return y


def make_epsilon_like(
    rows: int, features: int = 2000, seed: int = 0, label_noise: float = EPSILON_LABEL_NOISE
) -> tuple[np.ndarray, np.ndarray]:
    """Dense rows shaped like LIBSVM's ``epsilon_normalized`` (PASCAL Large Scale Learning
    Challenge 2008), whose features were standardized (mean 0, variance 1) and whose rows
    were then scaled to unit l2 norm: here the features are drawn standardized, i.i.d.
    N(0, 1) (standardizing them again would move them by O(rows^-1/2) only), and every row
    is scaled to unit l2 norm, so a_r is uniform on the unit sphere of R^d. Labels
    y = sign(<a_r, w>), w ~ N(0, I_d), each flipped with probability ``label_noise``
    (:func:`_planted_labels`).

    Matches epsilon: d = 2000, dense, ||a_r|| = 1, features of mean 0 and variance 1 before
    the row scaling, labels about half +1, a linear model's error rate about
    ``label_noise``. Does not: the features are uncorrelated (epsilon's are not), so the
    spectrum of A^T A / rows is the Marchenko-Pastur bulk around 1/d, not epsilon's; rows
    are drawn, not 400000. Not separable at the preset's rows = 10 d: the logistic loss
    keeps about 0.37 at its minimum (tests/test_synthetic_shapes.py)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    X /= np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]  # not np.linalg.norm: no rows x d temporary
    w = rng.standard_normal(features)
    return X, _planted_labels(X @ w, label_noise, rng)


def make_rcv1_like(
    rows: int = 20242,
    features: int = 47236,
    seed: int = 0,
    density: float = 74 / 47236,
    label_noise: float = RCV1_LABEL_NOISE,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse CSR rows shaped like LIBSVM's ``rcv1_train.binary`` (RCV1-v2, Lewis et al.
    2004, JMLR 5): bags of words weighted "ltc" as RCV1-v2 is, (1 + ln tf) ln(rows / df)
    cosine-normalized, in a vectorized draw.

    Term of rank r (a seeded permutation of the feature indices) has probability p_r
    proportional to (r + ZIPF_OFFSET)^-ZIPF_EXPONENT (Zipf's law, Mandelbrot's offset).
    Row i draws L_i terms i.i.d. from p; tf is a term's count in the row, df the rows
    holding it. The distinct terms of L draws number g(L) = sum_r 1 - (1 - p_r)^L on
    average, so L_i = g^-1(k_i) with k_i log-normal (spread ROW_NNZ_SIGMA) of mean
    density x features: rows hold density x features nonzeros on average (rcv1: 74 of
    47236, 0.16 %). Labels: y = sign(<a_r, w>) with w_j ~ N(0, 1) on a random
    PLANTED_SUPPORT of the features and 0 elsewhere, flipped with probability
    ``label_noise`` (:func:`_planted_labels`).

    Matches rcv1.binary: rows, d, density, nonnegative values, ||a_r|| = 1, heavy-tailed
    feature frequencies (a few features in many rows, most in few), labels about half +1.
    Does not: no topics, so no correlations between terms beyond their frequencies; term
    counts are mostly 1 (short bags over a large vocabulary); the spread of the row
    lengths and the Zipf parameters are plausible, not fitted to the file; the spectrum
    is not rcv1's; the labels hang on many rare terms, so a linear model fitted to part of
    the rows predicts the rest far worse than on rcv1 (which training-loss curves do not
    see). As the real file (rows < d), the rows are linearly separable."""
    rng = np.random.default_rng(seed)
    p = (np.arange(1, features + 1) + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    p /= p.sum()
    mean_k = density * features
    k = rng.lognormal(np.log(mean_k) - ROW_NNZ_SIGMA**2 / 2, ROW_NNZ_SIGMA, rows)
    k = np.clip(k, 1.0, features)
    grid = np.unique(np.geomspace(1, 4 * k.max() + 1, 256).round())
    log_miss = np.log1p(-p)
    g = np.array([-np.expm1(draws * log_miss).sum() for draws in grid])  # a few hundred d-vectors
    draws = np.maximum(1, np.interp(k, g, grid).round()).astype(np.int64)
    rank = np.searchsorted(np.cumsum(p), rng.random(int(draws.sum())), side="right")
    cols = rng.permutation(features)[np.minimum(rank, features - 1)]
    X = sp.csr_matrix((np.ones(cols.size), (np.repeat(np.arange(rows), draws), cols)), shape=(rows, features))
    X.sum_duplicates()  # counts of the same term in a row add up to its tf
    df = np.bincount(X.indices, minlength=features)
    X.data = (1.0 + np.log(X.data)) * np.log(rows / df[X.indices])
    # a term in every row weighs ln 1 = 0, as in ltc: a row of only such terms (a handful of
    # rows, not the defaults) is left empty
    X.eliminate_zeros()
    row_of = np.repeat(np.arange(rows), np.diff(X.indptr))
    X.data /= np.sqrt(np.bincount(row_of, X.data**2, rows))[row_of]
    w = rng.standard_normal(features) * (rng.random(features) < PLANTED_SUPPORT)
    return X, _planted_labels(X @ w, label_noise, rng)


# dataset.synthetic_of: the LIBSVM presets a synthetic dataset can be shaped like
SYNTHETIC_OF = ("epsilon", "rcv1")


def data_dir(cfg: Any) -> Path:
    """The download and parse cache: ``data.dir``, else $EFBENCH_DATA_DIR, else ``data``."""
    return Path(cfg.data.dir or os.environ.get(DATA_DIR_ENV) or "data").expanduser()


def _preset(name: str) -> dict[str, Any] | None:
    """The dataset preset ``efbench/conf/dataset/<name>.yaml`` as written (not composed), or None."""
    path = files("efbench.conf") / "dataset" / f"{name}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def on_disk(
    dataset: str | Any, cache_dir: str | Path | None = None, mirror: str | Path | None = None
) -> bool:
    """Whether ``dataset`` loads without the network: true for the embedded and synthetic
    sources; for a LIBSVM file, whether its parse cache ``<data dir>/<file>.npz`` (with the
    shape and labels the table says) or a copy in the mirror (the names
    :func:`load_libsvm` looks for) is there. Presence only: a mirror copy is verified
    (sha256, shape, labels) when it is loaded; nothing but the cache's labels is read.

    ``dataset``: a composed config (its ``data.dir`` and ``data.mirror``, as
    :func:`load_dataset`), or a preset name (``epsilon``, ``gisette``) or LIBSVM file name
    (``gisette_scale``), looked for in ``cache_dir`` and ``mirror`` (default: the
    environment, $EFBENCH_DATA_DIR or ``data``, and $EFBENCH_DATA_MIRROR)."""
    if isinstance(dataset, str):
        preset = _preset(dataset) or {"source": "libsvm", "libsvm_name": dataset}
        cache_dir = Path(cache_dir or os.environ.get(DATA_DIR_ENV) or "data").expanduser()
        mirror = mirror or os.environ.get(MIRROR_ENV)
    else:
        preset = dataset.dataset
        cache_dir, mirror = data_dir(dataset), dataset.data.mirror or os.environ.get(MIRROR_ENV)
    if preset["source"] != "libsvm":
        return True
    spec = libsvm_spec(preset["libsvm_name"])
    head = cache.peek(cache_dir / f"{spec.name}.npz", "libsvm", parse_key(spec), ("y", "shape"))
    if head is not None and _cache_head(head, spec) is not None:
        return True
    mdir = Path(mirror).expanduser() if mirror else None
    return mdir is not None and any((mdir / name).is_file() for name in _mirror_names(spec))


def real_or_synthetic(
    name: str, cache_dir: str | Path | None = None, mirror: str | Path | None = None
) -> str:
    """The preset to run for LIBSVM preset ``name`` offline: ``name`` itself when its file is
    on disk (:func:`on_disk`), else the synthetic preset shaped like it (the one whose
    ``synthetic_of`` is ``name``: epsilon -> epsilon_synth, rcv1 -> rcv1_synth). ``name``
    when it has no such stand-in (loading it then says what is missing). The choice is the
    caller's to report: ``dataset=epsilon`` itself never falls back."""
    if on_disk(name, cache_dir, mirror):
        return name
    for path in sorted(files("efbench.conf").joinpath("dataset").iterdir()):
        if path.name.endswith(".yaml") and yaml.safe_load(path.read_text()).get("synthetic_of") == name:
            return path.name.removesuffix(".yaml")
    return name


def load_dataset(cfg) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """Rows and labels of the configured ``dataset`` (libsvm, sklearn or synthetic source;
    synthetic rows are shaped like a LIBSVM file where ``dataset.synthetic_of`` names it,
    and number ``dataset.synthetic.rows``, or n_workers x m where that is null), refused
    (:func:`check_memory`) when its worker data would not fit: a file the table says is
    dense and a synthetic matrix before anything is read or built, any other file as soon
    as it is parsed (kept sparse or made dense as :func:`partition` will split it)."""
    source = cfg.dataset.source
    check_choice("dataset.source", source, ("libsvm", "sklearn", "synthetic"))
    n, m = int(cfg.dataset.n_workers), int(cfg.dataset.m)
    if source == "libsvm":
        name = cfg.dataset.libsvm_name
        spec = libsvm_spec(name)
        if spec.dense:
            check_memory(name, n, m, spec.features, spec.rows)
        mirror = cfg.data.mirror or os.environ.get(MIRROR_ENV) or None
        X, y = load_libsvm(name, data_dir(cfg), mirror)
        row_nnz = X.count_nonzero() / X.shape[0] if is_sparse(X) else None
        check_memory(name, n, m, X.shape[1], row_nnz=row_nnz)
        return X, y
    if source == "sklearn":
        return load_breast_cancer_scaled(data_dir(cfg))
    s = cfg.dataset.synthetic
    rows, d = int(s.rows or n * m), int(s.features)
    like = cfg.dataset.get("synthetic_of")
    if like is None:
        density = float(s.density)
        if density < SPARSE_DENSITY and 8.0 * rows * d > CSR_BUILD_BYTES:
            # the same values, built as CSR: memory with the nonzeros, not with rows x d
            check_memory(cfg.dataset.name, n, m, d, row_nnz=density * d)
            return make_synthetic_csr(rows, d, int(s.seed), density)
        check_memory(cfg.dataset.name, n, m, d, rows)
        return make_synthetic(rows, d, int(s.seed), density)
    check_choice("dataset.synthetic_of", like, SYNTHETIC_OF)
    if like == "rcv1":
        check_memory(cfg.dataset.name, n, m, d, row_nnz=float(s.density) * d)
        return make_rcv1_like(rows, d, int(s.seed), float(s.density), float(s.label_noise))
    check_memory(cfg.dataset.name, n, m, d, rows)
    return make_epsilon_like(rows, d, int(s.seed), float(s.label_noise))


def partition(
    X: np.ndarray, y: np.ndarray, n: int, m: int, split: str = "shuffle", seed: int = 0, alpha: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into n workers of m rows each: the rows A and labels (n, m). A is the CSR
    matrix (n m, d) of the rows taken, worker by worker, when X is sparse (:func:`is_sparse`:
    no dense copy is made), else a dense array (n, m, d) (X's rows densified when X is a
    sparse matrix with many nonzeros).

    ``shuffle``: a seeded permutation, first n*m rows, worker i gets block i (SPEC.md 1).
    ``file``: file order (LIBSVM files are not randomly ordered, so workers differ).
    ``head_shuffle``: the first n*m rows of the file, in a seeded random order (the authors'
    reference code: ``A[0 : n m]``, then worker i gets block i of a random permutation).
    ``label_sorted``: the shuffled rows sorted by label before splitting (heterogeneous).
    ``norm_sorted``: the shuffled rows sorted by their l2 norm before splitting: worker i's
    smoothness L_i grows with i (the spread of L_i that GradSkip exploits).
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
    elif split == "head_shuffle":
        rows = rng.permutation(n * m)
    elif split in ("shuffle", "label_sorted", "norm_sorted"):
        rows = rng.permutation(N)[: n * m]
        if split == "label_sorted":
            rows = rows[np.argsort(y[rows], kind="stable")]
        elif split == "norm_sorted":
            taken = X[rows]
            sq = taken.multiply(taken).sum(axis=1) if sp.issparse(X) else np.einsum("ij,ij->i", taken, taken)
            rows = rows[np.argsort(np.asarray(sq).ravel(), kind="stable")]
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
    Y = y[rows].reshape(n, m)
    if is_sparse(X):
        return sp.csr_matrix(X[rows]), Y
    A = X[rows]
    A = A.toarray() if sp.issparse(A) else A
    return A.reshape(n, m, d), Y
