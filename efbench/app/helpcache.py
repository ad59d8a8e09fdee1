"""``efbench --help`` without starting Hydra or importing the methods: the text
:func:`efbench.app.cli.help_text` generates is kept in the user's cache, keyed by the
package's sources (every ``.py`` and ``.yaml`` under ``efbench/``) and the line width, so
it is generated once per install and change. Standard library and efbench.files only: a cached help costs
the interpreter's start-up and a hash of the sources."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from efbench.files import atomic_write_bytes

PACKAGE = Path(__file__).resolve().parents[1]
HELP_WIDTH = (80, 120)  # the help's line width: the terminal's, within these bounds


def width() -> int:
    return min(max(shutil.get_terminal_size((100, 24)).columns, HELP_WIDTH[0]), HELP_WIDTH[1])


def sources_key() -> str:
    """A hash of the package's code and config files (paths and contents)."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".yaml")):
        h.update(str(path.relative_to(PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "efbench"


def cached_help(cols: int | None = None) -> str:
    """The help text at ``cols`` columns (the terminal's by default): read from the cache,
    or generated and stored there (a cache that cannot be written is skipped)."""
    cols = cols or width()
    path = cache_dir() / f"help-{sources_key()}-{cols}.txt"
    try:
        return path.read_text()
    except OSError:
        pass
    from efbench.app.cli import help_text

    text = help_text(cols).replace("$$", "$")  # Hydra's template escape, undone as Hydra does
    try:
        atomic_write_bytes(path, text.encode())
    except OSError:
        pass
    return text


def print_help() -> None:
    sys.stdout.write(cached_help() + "\n")
