"""Where and with what a run was computed: recorded in every summary.json.

efbench's version and, when it runs from a git checkout, the commit (with ``-dirty`` when
the work tree has changes); Python's and the numerical packages' versions; the CPU model,
core count, host and platform; the command line. Gathered once per process (a sweep's runs
share it); a value that cannot be found is None, never an error.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "scipy", "numba", "pandas", "pyarrow", "scikit-learn", "hydra-core", "omegaconf")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the checkout efbench is imported from (None outside a git work tree)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=5)
        head = run(["git", "rev-parse", "HEAD"])
        if head.returncode != 0:
            return None
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.cache
def provenance() -> dict[str, Any]:
    """The process's provenance (see the module docstring)."""
    return {
        "efbench": _version("efbench"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "host": platform.node(),
        "platform": platform.platform(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
