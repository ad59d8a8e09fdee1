"""The console scripts. Each imports its command only when called, inside a guard: Ctrl-C
while Python loads Hydra, numpy and pandas (the first second or two) or while a command
works, where the command does not handle it itself, ends with one line and exit code 130
instead of a traceback (a run handles Ctrl-C itself: efbench.engine.signals); a file or folder the
command cannot write or read is one line naming it, with exit code 2."""

from __future__ import annotations

import importlib
import sys


def _run(command: str, target: str) -> object:
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)()
    except KeyboardInterrupt:
        sys.stderr.write(f"{command}: interrupted\n")
        sys.exit(130)
    # an output folder it cannot make or write (read-only, full), a file it cannot read
    except OSError as exc:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        sys.stderr.write(f"{command}: error: {text}\n")
        sys.exit(2)


def efbench() -> object:
    return _run("efbench", "efbench.app.cli:main")


def collect() -> object:
    return _run("efbench-collect", "efbench.analysis.collect:main")


def figures() -> object:
    return _run("efbench-figures", "efbench.analysis.plots:main")


def paper() -> object:
    return _run("efbench-paper", "efbench.reports.paper:main")


def headlines() -> object:
    return _run("efbench-headlines", "efbench.reports.headlines:main")
