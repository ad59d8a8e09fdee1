"""The ``efbench`` command: a Hydra application around :func:`efbench.run.runner.run_batch`,
with its ``--help`` generated from the config files (:func:`help_text`)."""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
import shutil
import signal
import sys
import textwrap
from collections import Counter
from contextlib import suppress
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from efbench.app.helpcache import width as help_width
from efbench.config.identity import BATCH_KEY, batch_configs, dirname_within_limits
from efbench.engine.signals import stop_when_parent_dies, sweep_worker
from efbench.errors import EfbenchError

log = logging.getLogger("efbench")
# a joblib worker ends with its sweep, from its first job's import of this module on
_ROLE = sweep_worker()
if _ROLE == "orphan":
    os._exit(128 + signal.SIGTERM)
if _ROLE == "alive":
    stop_when_parent_dies()
# a log file on a full disk: its lines still reach the console, and the run's own one-line
# error says the disk is full, without a logging traceback for every line after it
logging.raiseExceptions = False


# Hydra's words for a sweep override (key=a,b, key=range(...)) on a command line without -m
SWEEP_WITHOUT_M = re.compile(r"(?:Ambiguous value for argument|Sweep parameters) '([^']*)'")


def one_line(exc: Exception) -> str:
    """A config error from Hydra or OmegaConf (composing the command line) as one line that
    names the key or group and, where Hydra knows them, what it allows."""
    if isinstance(exc, OverrideParseException):
        key = exc.override.partition("=")[0].lstrip("+~")
        return f"{key}: cannot parse the override {exc.override!r} (key=value, +key=value, ~key)"
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{group or 'config'}: unknown value {name!r} (allowed: {', '.join(exc.options)})"
    if isinstance(exc.__cause__, EfbenchError):  # raised while instantiating a callback
        return str(exc.__cause__)
    sweep = SWEEP_WITHOUT_M.search(str(exc))
    if sweep:
        key, _, value = sweep.group(1).partition("=")
        key = key.lstrip("+~")
        return (
            f"{key}: {value!r} is a sweep: add -m to run one job per value "
            f"(a list: {key}=[...]; a string with commas: quote it)"
        )
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    key = getattr(cause, "full_key", None)
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if key and "not in struct" in str(cause):
        return f"{key}: unknown key (efbench's keys: efbench --cfg job)"
    return f"{key}: {text}" if key else text


def _output_dir() -> str:
    """The folder this launch writes into (the sweep's, in a multirun), as far as it is known."""
    from efbench.app.callbacks import OUTPUT

    return OUTPUT[0] if OUTPUT else "the output folder"


def _group_set_to_non_string(arg: str, groups: set[str]) -> bool:
    """Whether the command-line item ``arg`` sets one of the config ``groups`` to a number or null."""
    key, sep, value = arg.partition("=")
    key = key.lstrip("+~")
    if not sep or key not in groups:
        return False
    try:
        float(value)
        return True
    except ValueError:
        return value in ("null", "")


def config_error_line(exc: BaseException) -> str | None:
    """The one line naming the key for an error of composing or launching a config (unknown
    group option, unknown key, unparsable override, a group set to a number, Hydra's record
    or log written into a full or read-only folder); None for any other error."""
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        return one_line(exc)
    if isinstance(exc, ValueError) and "Config group override" in str(exc):  # compressor=5
        groups = {d.name for d in importlib.resources.files("efbench.conf").iterdir() if d.is_dir()}
        group = next(
            (a.split("=")[0].lstrip("+~") for a in sys.argv[1:] if _group_set_to_non_string(a, groups)),
            "",
        )
        return (
            f"{group or 'a config group'}: an option name, not a number or null "
            "(efbench --help lists each group's options)"
        )
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot write {exc.filename or _output_dir()}: {exc.strerror}"
    return None


YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _first_sentence(text: str) -> str:
    """The leading comment of an option file (its ``# @package`` line aside), up to the end
    of its first sentence: the option's description."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    words = " ".join(lines)
    # a full stop, not the one of "et al.", "e.g.", "i.e.", "w.p." or "..."
    end = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)(?<!w\.p)(?<!\.)\.(\s|$)", words)
    return words[: end.start() + 1] if end else words


def _bases(option: dict) -> list[str]:
    """The options of the same group an option's defaults list names."""
    return [b for b in option.get("defaults", []) if isinstance(b, str) and b != "_self_"]


def _is_sweep(group: dict[str, dict], name: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether the experiment ``name`` sets hydra.sweeper.params, itself or through the
    experiments its defaults list names."""
    option = group.get(name) or {}
    if (option.get("hydra") or {}).get("sweeper", {}).get("params"):
        return True
    seen = seen | {name}
    return any(_is_sweep(group, b, seen) for b in _bases(option) if b not in seen)


def _target(group: dict[str, dict], name: str) -> str | None:
    """The ``_target_`` of an option, its own or the one it inherits from its defaults list."""
    option = group.get(name) or {}
    if "_target_" in option:
        return option["_target_"]
    return next((t for t in map(lambda b: _target(group, b), _bases(option)) if t), None)


def _option_keys(group: str, options: dict[str, dict], name: str) -> str:
    """The keys that set an option apart (those at most half the group's options set): for a
    method or a compressor with the rule its class declares on the field (a long list of
    choices aside)."""
    from efbench.config import schema

    counts = Counter(k for o in options.values() for k in o)
    own = [k for k in options[name] if k not in ("_target_", "name", "defaults", "hydra")]
    own = [k for k in own if counts[k] <= len(options) / 2]
    target = _target(options, name)
    if group in schema.SET_BY_RUN and target:
        rules, _ = schema._fields(target, group)
        rules = {k: r for k, r in rules.items() if isinstance(r, schema.Rule) and len(r.choices) <= 4}
        return f"[{'; '.join(f'{k}: {rules[k].allowed()}' if k in rules else k for k in own)}]" if own else ""
    return f"[keys: {', '.join(own)}]" if own else ""


def _columns(rows: list[tuple[str, str]], width: int, indent: int = 2, limit: int = 30) -> list[str]:
    """Two columns: a name and its text, wrapped under the text's column."""
    col = indent + min(limit, max((len(a) for a, _ in rows), default=0)) + 2
    out = []
    for left, text in rows:
        head = " " * indent + left
        head = head.ljust(col) if len(head) < col - 1 else head + "  "
        wrapped = textwrap.wrap(text, max(20, width - len(head))) or [""]
        out.append((head + wrapped[0]).rstrip())
        rest = textwrap.wrap(" ".join(wrapped[1:]), max(20, width - col))
        out += [" " * col + w for w in rest]
    return out


def _settings(config: dict, groups: set[str]) -> list[tuple[str, str]]:
    """(key=default, meaning and allowed values) of every setting outside the config groups,
    from the rules that check them (:data:`efbench.config.schema.TOP`) and the defaults of
    ``config.yaml``."""
    from efbench.config import schema

    rows, seen = [], set()
    for key, rule in schema.TOP.items():
        head, *rest = key.split(".")
        if head in groups:
            continue
        if rest and head not in seen and head in schema.GROUP_DOCS:
            rows.append((f"{head}.*", schema.GROUP_DOCS[head]))
        seen.add(head)
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown = OmegaConf.to_yaml({"v": value}).strip()[3:] if value is not None else "null"
        rows.append((f"{key}={shown}", f"{rule.doc} [{rule.allowed()}]" if rule.doc else rule.allowed()))
    return rows


def help_text(width: int | None = None) -> str:
    """``efbench --help``: every config group with each option's description (its file's
    first comment sentence) and the keys that set it apart, a method's and a compressor's
    with the rules their classes declare; the experiments (the sweeps marked); efbench's
    Hydra launchers; and every setting with its default, meaning and allowed values, from
    the rules that check it (:data:`efbench.config.schema.TOP`). A new option, field or
    setting shows up by itself."""
    from efbench.config import schema

    width = width or help_width()
    conf = importlib.resources.files("efbench.conf")
    config = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml"))
    groups: dict[str, tuple[dict[str, str], dict[str, dict]]] = {}  # name: (texts, loaded)
    dirs = [(f"hydra/{d.name}", d) for d in (conf / "hydra").iterdir()] if (conf / "hydra").is_dir() else []
    dirs += [(d.name, d) for d in conf.iterdir() if d.name != "hydra"]  # efbench's Hydra options, above
    for name, sub in dirs:
        if sub.is_dir():
            found = sorted((f for f in sub.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
            if found:
                texts = {f.name[: -len(".yaml")]: f.read_text() for f in found}
                # libyaml where there is one: OmegaConf would take most of the help's time
                loaded = {o: yaml.load(t, Loader=YAML_LOADER) or {} for o, t in texts.items()}
                groups[name] = (texts, loaded)
    defaults = {
        group: option
        for entry in config.get("defaults", [])
        if isinstance(entry, dict)
        for group, option in entry.items()
        if not group.startswith(("hydra/", "override hydra/"))
    }
    lines = [
        "efbench: simulated distributed optimization with compressed and error-feedback methods",
        "(a Hydra app). Each run writes trace.parquet and summary.json into its folder.",
        "",
        "== Usage ==",
        *_columns(
            [
                ("efbench [group=option] [key=value] ...", "one run, into outputs/<date>/<time>_<choices>"),
                ("efbench -m key=a,b [key=c,d] ...", "a sweep: a run per combination, into multirun/..."),
                ("efbench -m +experiment=NAME", "an experiment config (those marked (sweep) need -m)"),
                ("efbench [overrides] --cfg job", "the composed config, without running"),
                ("efbench --hydra-help", "Hydra's flags (--cfg, --info, shell completion, ...)"),
                ("efbench-collect DIR; efbench-figures DIR", "the table and figures of the runs under DIR"),
                ("efbench -m ... hydra/callbacks=figures", "... and the sweep's figures drawn when it ends"),
            ],
            width,
            limit=44,
        ),
        "",
        "== Config groups: group=option (* the default), then group.key=value ==",
    ]
    for group, (texts, loaded) in sorted(groups.items(), key=lambda g: (g[0].startswith("hydra/"), g[0])):
        if group not in defaults and not group.startswith("hydra/"):  # presets: +group=option
            lines += ["", f"+{group}=NAME:"]
            if len(texts) <= 5:  # a few presets (tune): each with its description
                lines += _columns([(o, _first_sentence(t)) for o, t in texts.items()], width)
                continue
            names = [f"{o}\xa0(sweep)" if _is_sweep(loaded, o) else o for o in texts]  # kept whole
            wrapped = textwrap.wrap(", ".join(names), width, initial_indent="  ", subsequent_indent="  ")
            lines += [line.replace("\xa0", " ") for line in wrapped]
            continue
        about = schema.GROUP_DOCS.get(group, "")
        lines += ["", f"{group}:" + (f" {about}" if about else "")]
        rows = []
        for option, text in texts.items():
            keys = "" if group.startswith("hydra/") else _option_keys(group, loaded, option)
            rows.append(
                (
                    option + ("*" if option == defaults.get(group) else ""),
                    f"{_first_sentence(text)} {keys}".strip(),
                )
            )
        lines += _columns(rows, width)
    rows = _settings(config, set(groups))
    lines += ["", "== Settings: key=default, what it sets [what it takes] ==", *_columns(rows, width)]
    return "\n".join(lines).replace("$", "$$")  # Hydra's template: $$ is a dollar sign


OmegaConf.register_new_resolver("efbench_help", help_text, replace=True)


OmegaConf.register_new_resolver("efbench_dirname", dirname_within_limits, replace=True)


class JobTag(logging.Filter):
    """Prefixes a sweep job's log lines with its number, so interleaved jobs stay apart."""

    def __init__(self, tag: str):
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self.tag} {record.msg}"
        return True


def tag_job_logs(hc: DictConfig) -> str:
    """Prefix this job's log lines with ``[job N]`` in a multirun; return that tag ("" alone)."""
    for f in [f for f in log.filters if isinstance(f, JobTag)]:  # a worker runs many jobs
        log.removeFilter(f)
    if hc.mode != RunMode.MULTIRUN:
        return ""
    tag = f"[job {hc.job.num}]"
    log.addFilter(JobTag(tag))
    return tag


def anchor_data_dir(cfg: DictConfig, launch_dir: str | Path) -> None:
    """Make ``data.dir`` absolute: a relative one (the default ``data``, a relative
    $EFBENCH_DATA_DIR or ``data.dir=...``) is taken from the directory efbench was launched
    from, not from the job's folder, so that runs with ``hydra.job.chdir=true`` share one
    cache instead of each parsing and solving its dataset again. (``data.dir`` is left out
    of the config hash, so resuming is unaffected.) A value that is not a string is left
    for the schema to refuse."""
    from efbench.problems.datasets import data_dir

    if cfg.data.dir is None or isinstance(cfg.data.dir, str):
        cfg.data.dir = str(Path(launch_dir) / data_dir(cfg))


OmegaConf.register_new_resolver("efbench_pid", lambda: str(os.getpid()), replace=True)
ATTEMPT_LOG = "attempt.log"  # the log of the latest launch that left a folder's result as it was


def settle_record(hc: DictConfig, run_dirs: list[Path], before: dict[Path, object], clean: bool) -> None:
    """Put this launch's Hydra record and log where they belong, once its runs are written.

    Hydra writes them before efbench runs (efbench/conf/config.yaml): the record into
    ``.hydra/attempt-<pid>/``, the log into ``.efbench-<pid>.log``. They become the folder's
    ``.hydra/`` and are added to ``efbench.log`` when this launch wrote a finished result, or
    when no finished result is there (a new folder, a failed first launch). A launch that
    failed or was stopped beside the finished result of an earlier launch leaves that
    result's record as it was: its own record is dropped (``error.json`` or ``attempt.json``
    holds its config) and its log is ``attempt.log``. A launch that found its runs finished
    (skipped) adds its log to ``efbench.log`` and keeps the record."""
    from efbench.run import results

    job_dir = Path(hc.runtime.output_dir)
    held = [d for d in run_dirs if results.holds_result(d)]
    new = any(results.identity(d) != before.get(d) for d in held)
    keep_record = not new and bool(held)
    subdir = hc.get("output_subdir")
    attempt = job_dir / subdir if subdir else None
    if new:  # the attempt it was the log of is gone with it (results.commit)
        (job_dir / ATTEMPT_LOG).unlink(missing_ok=True)
    if attempt is not None and attempt.name.startswith("attempt-") and attempt.is_dir():
        with suppress(OSError):
            if keep_record:
                shutil.rmtree(attempt)
            else:
                for f in attempt.iterdir():
                    os.replace(f, attempt.parent / f.name)
                attempt.rmdir()
    own_log = job_dir / f".{hc.job.name}-{os.getpid()}.log"
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == own_log.absolute()
    ]
    if not own_log.exists():
        return
    for h in handlers:
        h.close()  # reopened (appending) at the next line it writes, under the name below
    target = job_dir / (ATTEMPT_LOG if keep_record and not clean else f"{hc.job.name}.log")
    with suppress(OSError):
        if target.name == ATTEMPT_LOG or not target.exists():
            os.replace(own_log, target)
        else:
            with open(target, "ab") as out:
                out.write(own_log.read_bytes())
            own_log.unlink()
        for h in handlers:
            h.baseFilename = str(target.absolute())


def parallel_jobs(hc: DictConfig) -> int:
    """How many of a sweep's jobs run at once on this machine: the joblib launcher's n_jobs
    (joblib's negative counts: cores + 1 + n_jobs), else 1 (a job per process elsewhere, or
    one machine's share given by the cluster: SLURM's cpus_per_task, Ray's num_cpus)."""
    from efbench.engine.threads import cores

    launcher = hc.get("launcher") or {}
    if "JoblibLauncher" not in str(launcher.get("_target_", "")) or hc.mode != RunMode.MULTIRUN:
        return 1
    n = launcher.get("n_jobs") or 1
    return max(1, cores() + 1 + n if n < 0 else n)


@hydra.main(config_path="pkg://efbench.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration (or a sweep's group of runs); in a multirun a failing job is
    recorded and the sweep goes on."""
    # imported here: Hydra's launchers pickle this function by value (efbench.app.cli.main is its
    # decorated wrapper), and with it the globals it names; an Event does not pickle
    from efbench.engine.signals import busy, terminate_like_interrupt
    from efbench.engine.threads import share_cores

    terminate_like_interrupt()
    hc = HydraConfig.get()
    tag = tag_job_logs(hc)
    worker = sweep_worker()  # a launcher's worker process
    if worker == "orphan":  # its sweep was stopped before this job began: nobody to compute for
        os._exit(128 + signal.SIGTERM)
    share_cores(parallel_jobs(hc))
    try:
        busy.set()
        return _main(cfg, hc, tag, worker is not None)
    finally:
        busy.clear()


def _main(cfg: DictConfig, hc: DictConfig, tag: str, worker: bool) -> float | None:
    from efbench.config.schema import check_seeds
    from efbench.engine.signals import interrupted_by, worker_done
    from efbench.run import results
    from efbench.run.runner import run_batch, run_seeds

    job_dir = Path(hc.runtime.output_dir)
    dirs, before, clean = [job_dir], {}, False
    try:
        anchor_data_dir(cfg, hc.runtime.cwd)
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        if cfg.get(BATCH_KEY):
            cfgs, dirs = batch_configs(cfg, hc)
            before = {d: results.identity(d) for d in dirs}
            summaries = run_batch(cfgs, dirs, [choices] * len(cfgs), progress_label=tag)
        elif cfg.get("seeds"):
            seeds = OmegaConf.to_container(cfg.seeds) if OmegaConf.is_list(cfg.seeds) else cfg.seeds
            check_seeds(seeds)
            dirs = [job_dir / f"seed={s}" for s in seeds]
            before = {d: results.identity(d) for d in dirs}
            summaries = run_seeds(cfg, seeds, job_dir, choices, progress_label=tag)
        else:
            before = {job_dir: results.identity(job_dir)}
            summaries = run_batch([cfg], dirs, [choices], progress_label=tag)
        clean = all(s.get("skipped") or s.get("status") in results.FINISHED for s in summaries)
    except EfbenchError as exc:
        log.error("efbench: error: %s", exc)
        settle_record(hc, dirs, before, clean)
        if hc.mode == RunMode.MULTIRUN:
            return None
        sys.exit(2)
    except (KeyboardInterrupt, SystemError) as exc:  # numba wraps a signal's exception in SystemError
        stop = interrupted_by(exc)
        if stop is None:
            settle_record(hc, dirs, before, clean)
            raise
        if not worker and hc.mode != RunMode.MULTIRUN:
            log.error("efbench: %s", stop)
        settle_record(hc, dirs, before, clean)
        if worker:  # its runs are written: tell the sweeping process, which ends the sweep
            logging.shutdown()
            worker_done(stop.exit_code)
        if hc.mode == RunMode.MULTIRUN:
            raise stop from None  # the sweeper stops the sweep and reports
        sys.exit(stop.exit_code)
    except BaseException:
        settle_record(hc, dirs, before, clean)
        raise
    for d in dirs:
        log.info("results in %s", d)
    settle_record(hc, dirs, before, clean)
    gaps = [s["final"]["gap"] for s in summaries if "final" in s]
    return float(sum(gaps) / len(gaps)) if gaps else None
