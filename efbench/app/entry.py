"""The console scripts. Each imports its command only when called, inside a guard: Ctrl-C
while Python loads Hydra, numpy and pandas (the first second or two) or while a command
works, where the command does not handle it itself, ends with one line and exit code 130
instead of a traceback (a run handles Ctrl-C itself: efbench.engine.signals); a file or folder the
command cannot write or read is one line naming it, with exit code 2."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable


def _run(command: str, target: str, explain: Callable[[Exception], str | None] | None = None) -> object:
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)()
    except KeyboardInterrupt:
        sys.stderr.write(f"{command}: interrupted\n")
        sys.exit(130)
    except Exception as exc:
        from efbench.engine.signals import interrupted_by  # stdlib only: cheap here

        if interrupted_by(exc):  # Ctrl-C inside a library's cleanup, re-raised as its own error
            sys.stderr.write(f"{command}: interrupted\n")
            sys.exit(130)
        text = explain(exc) if explain else None
        # an output folder it cannot make or write (read-only, full), a file it cannot read
        if text is None and isinstance(exc, OSError):
            text = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        if text is None:
            raise
        sys.stderr.write(f"{command}: error: {text}\n")
        sys.exit(2)


def _config_error(exc: Exception) -> str | None:
    from efbench.app.cli import config_error_line

    return config_error_line(exc)


def efbench() -> object:
    """``efbench``: Hydra is asked (by its documented ``HYDRA_FULL_ERROR``) to raise the
    errors of composing and launching a config rather than print them, and each is reported
    here as one line naming the key, with exit code 2
    (:func:`efbench.app.cli.config_error_line`); a user who set HYDRA_FULL_ERROR=1 gets
    Hydra's full traceback."""
    if sys.argv[1:] in (["--help"], ["-h"]):  # the help alone: from its cache, without Hydra
        return _run("efbench", "efbench.app.helpcache:print_help")
    wanted = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return _run("efbench", "efbench.app.cli:main", None if wanted == "1" else _config_error)
    finally:
        if wanted is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = wanted


def collect() -> object:
    return _run("efbench-collect", "efbench.analysis.collect:main")


def figures() -> object:
    return _run("efbench-figures", "efbench.analysis.plots:main")


def paper() -> object:
    return _run("efbench-paper", "efbench.reports.paper:main")


def headlines() -> object:
    return _run("efbench-headlines", "efbench.reports.headlines:main")
