"""Verified cache files: what efbench keeps on disk to skip work done before (a parsed LIBSVM
file, the eigenvalue constants of a split, x*).

A cache file is an .npz holding its arrays and one more member, :data:`META`: a JSON record
``{"format", "kind", "fingerprint", "checksum"}``. ``fingerprint`` is a hash of everything
the arrays were computed from (:func:`fingerprint` of the data and the settings, given by
the caller), ``checksum`` the sha256 of the arrays themselves (:func:`checksum`: names,
dtypes, shapes and bytes). :func:`load_or_compute` uses a file only when it opens, holds the
format, kind and fingerprint asked for, its content matches its checksum, and the caller's
check of the values passes (x* has a small gradient, an eigenvalue goes with its
eigenvector: checks that cost a pass or two over the data, not what the cache saves).

Anything else but a missing file is rebuilt: recomputed and rewritten atomically
(:func:`efbench.files.atomic_write_bytes`), with one warning naming the file and what
was wrong with it; a file written before the caches were verified (no META) is one of
these. Where the cache cannot be written (a read-only folder, ``cache`` a plain file, a
full disk) the values are computed without it and one warning a folder says so. A cache
only saves time: reading or writing one never stops a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from efbench.files import atomic_write_bytes

FORMAT = 1  # the layout of META; a file of another format is rebuilt
META = "__meta__"

log = logging.getLogger("efbench")

Arrays = dict[str, np.ndarray]
_UNWRITABLE: set[Path] = set()  # folders this process has warned it cannot write a cache in


def fingerprint(*parts: object) -> str:
    """sha256 of ``parts`` in order: arrays by dtype, shape and bytes, floats exactly (by
    their hex form, so that l2 = 0.1 and 0.1 + 1e-17 differ), anything else by its repr."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"array {a.dtype.str} {a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        elif isinstance(part, float):
            h.update(f"float {part.hex()}".encode())
        else:
            h.update(f"{type(part).__name__} {part!r}".encode())
        h.update(b"\0")
    return h.hexdigest()


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of the arrays: each one's name, dtype, shape and bytes, in name order."""
    return fingerprint(*(part for name in sorted(arrays) for part in (name, np.asarray(arrays[name]))))


def read(path: Path, kind: str, key: str) -> tuple[Arrays | None, str | None]:
    """The arrays of the cache file ``path`` when it is a whole cache of ``kind`` computed from
    ``key`` (its fingerprint), else None and what is wrong with it (None: there is no file)."""
    try:
        if not path.exists():
            return None, None
        if not path.is_file():
            return None, "is not a regular file"
        obj = np.load(path, allow_pickle=False)
        if not isinstance(obj, np.lib.npyio.NpzFile):
            return None, "is not an .npz archive"
        with obj as z:
            if META not in z.files:
                return None, "was written before efbench verified its caches (no fingerprint, no checksum)"
            meta = json.loads(z[META].tobytes().decode())
            arrays = {name: z[name] for name in z.files if name != META}
    except Exception as exc:  # whatever a damaged file makes zipfile, numpy or json raise
        return None, f"is unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})"
    if not isinstance(meta, dict):
        return None, "has no valid record of what it holds"
    if meta.get("format") != FORMAT:
        return None, f"has cache format {meta.get('format')!r}, this efbench reads {FORMAT}"
    if meta.get("kind") != kind:
        return None, f"holds {meta.get('kind')!r}, not {kind!r}"
    if meta.get("fingerprint") != key:
        return None, "was computed from other data or settings (its fingerprint differs)"
    if meta.get("checksum") != checksum(arrays):
        return None, "does not match its checksum (damaged)"
    return arrays, None


def peek(path: Path, kind: str, key: str, names: tuple[str, ...]) -> Arrays | None:
    """The members ``names`` of cache file ``path`` if its record says it is a cache of
    ``kind`` computed from ``key``; None otherwise. Reads nothing else: the checksum is
    not verified (a presence test, e.g. :func:`efbench.problems.datasets.on_disk`)."""
    try:
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z[META].tobytes().decode())
            if (meta.get("format"), meta.get("kind"), meta.get("fingerprint")) != (FORMAT, kind, key):
                return None
            return {name: z[name] for name in names}
    except Exception:  # anything damaged is not a cache
        return None


def encode(kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of a cache file of ``arrays`` (:func:`read` reads them back)."""
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    meta = {"format": FORMAT, "kind": kind, "fingerprint": key, "checksum": checksum(arrays)}
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{META: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})
    return buf.getvalue()


def write(path: Path, kind: str, key: str, arrays: Mapping[str, np.ndarray]) -> OSError | None:
    """Write a cache file atomically; the error when it cannot be written, else None."""
    try:
        atomic_write_bytes(path, encode(kind, key, arrays))
    except OSError as exc:
        return exc
    return None


def load_or_compute(
    path: Path | None,
    kind: str,
    key: str,
    compute: Callable[[], Mapping[str, np.ndarray]],
    check: Callable[[Arrays], str | None] | None = None,
) -> Arrays:
    """The arrays cached in ``path`` (None: no cache) if :func:`read` and ``check`` (what is
    wrong with the values, or None) accept them; else ``compute()``, written to ``path``.
    One warning when a file was there and is rebuilt (naming it and what was wrong) or when
    it cannot be written (once a folder and process); a ``compute`` that raises is preceded
    by the warning about the file it was to replace."""
    if path is None:
        return dict(compute())
    arrays, wrong = read(path, kind, key)
    if arrays is not None:
        wrong = None if check is None else check(arrays)
        if wrong is None:
            return arrays
        wrong = f"holds wrong values: {wrong}"
    try:
        fresh = {name: np.asarray(a) for name, a in compute().items()}
    except Exception:
        if wrong is not None:
            log.warning("cache %s %s; it could not be rebuilt", path, wrong)
        raise
    err = write(path, kind, key, fresh)
    if wrong is not None and err is None:
        log.warning("cache %s %s; recomputed and rewritten", path, wrong)
    elif wrong is not None:
        log.warning("cache %s %s; recomputed, not rewritten (%s)", path, wrong, _reason(path, err))
    elif err is not None:
        where = _first_folder(path)
        report = log.debug if where in _UNWRITABLE else log.warning
        _UNWRITABLE.add(where)
        report("cannot write the cache %s (%s): computed without caching", path, _reason(path, err))
    return fresh


def _reason(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be written, in words: a folder on its way that is a file says
    so (mkdir's "File exists" does not)."""
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        return f"{blocked} is a file, not a folder"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _first_folder(path: Path) -> Path:
    """The nearest folder above ``path`` that exists: the one that cannot be written in
    (a read-only ``data`` stops both ``data/a9a.npz`` and ``data/cache/...``)."""
    folder = path.parent.absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder
