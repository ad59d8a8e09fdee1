"""The ``efbench`` command: a Hydra application around :func:`efbench.runner.run_batch`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from efbench.errors import EfbenchError
from efbench.signals import SWEEP_PID

log = logging.getLogger("efbench")
BATCH_KEY = "efbench_batch"  # set by the efbench sweeper (hydra_plugins/efbench_sweeper)


def one_line(exc: Exception) -> str:
    """A config error from Hydra or OmegaConf (composing the command line) as one line that
    names the key or group and, where Hydra knows them, what it allows."""
    if isinstance(exc, OverrideParseException):
        key = exc.override.partition("=")[0].lstrip("+~")
        return f"{key}: cannot parse the override {exc.override!r} (key=value, +key=value, ~key)"
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{group or 'config'}: unknown value {name!r} (allowed: {', '.join(exc.options)})"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    key = getattr(cause, "full_key", None)
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if key and "not in struct" in str(cause):
        return f"{key}: unknown key (efbench's keys: efbench --cfg job)"
    return f"{key}: {text}" if key else text


_hydra_report = hydra_utils.run_and_report


def _report_config_errors(func):
    """Hydra's run_and_report, with the errors of composing a config (unknown group option,
    unknown key, unparsable override, ...) given as one line with exit code 2."""

    def composed():
        try:
            return func()
        except (HydraException, OmegaConfBaseException) as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.stderr.write(f"efbench: error: {one_line(exc)}\n")
            sys.exit(2)

    return _hydra_report(composed)


hydra_utils.run_and_report = _report_config_errors


NAME_BYTES = 200  # file systems allow 255 bytes per path component


def dirname_within_limits(name: str) -> str:
    """A sweep subdirectory name: ``name`` (the job's overrides, readable) while it fits in
    NAME_BYTES, else its first part and a hash of the whole, so that however many keys are
    swept the name is legal, readable and still one per job."""
    if len(name.encode()) <= NAME_BYTES:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    head = name.encode()[: NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}~{digest}"


OmegaConf.register_new_resolver("efbench_dirname", dirname_within_limits, replace=True)


def override_dirname(lines: list[str], hc: DictConfig) -> str:
    """The sweep subdirectory a job with these overrides would get alone."""
    spec = hc.job.config.override_dirname
    parser = OverridesParser.create()
    keep = sorted(
        o.input_line for o in parser.parse_overrides(lines) if o.key_or_group not in spec.exclude_keys
    )
    return dirname_within_limits(spec.item_sep.join(keep).replace("=", spec.kv_sep))


class JobTag(logging.Filter):
    """Prefixes a sweep job's log lines with its number, so interleaved jobs stay apart."""

    def __init__(self, tag: str):
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self.tag} {record.msg}"
        return True


def tag_job_logs(hc: DictConfig) -> None:
    for f in [f for f in log.filters if isinstance(f, JobTag)]:  # a worker runs many jobs
        log.removeFilter(f)
    if hc.mode == RunMode.MULTIRUN:
        log.addFilter(JobTag(f"[job {hc.job.num}]"))


def batch_configs(cfg: DictConfig, hc: DictConfig) -> tuple[list[DictConfig], list[Path]]:
    """The runs of a grouped job: this job's config with each run's own overrides applied,
    each in the directory it would have had as a job of its own."""
    runs = json.loads(cfg[BATCH_KEY])
    common = [line for line in hc.overrides.task if not line.lstrip("+").startswith(BATCH_KEY + "=")]
    base = cfg.copy()
    with open_dict(base):
        del base[BATCH_KEY]
    parser = OverridesParser.create()
    cfgs, dirs = [], []
    for lines in runs:
        c = base.copy()
        for o in parser.parse_overrides(lines):
            OmegaConf.update(c, o.key_or_group, o.value(), merge=False)
        cfgs.append(c)
        dirs.append(Path(hc.sweep.dir) / override_dirname([*common, *lines], hc))
    return cfgs, dirs


@hydra.main(config_path="pkg://efbench.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration (or a sweep's group of runs); in a multirun a failing job is
    recorded and the sweep goes on."""
    from efbench.runner import run_batch, run_seeds
    from efbench.signals import interrupted_by, stop_when_parent_dies, terminate_like_interrupt, worker_done

    terminate_like_interrupt()
    tag_job_logs(HydraConfig.get())
    worker = os.environ.get(SWEEP_PID) == str(os.getppid())  # a launcher's worker process
    if worker:
        stop_when_parent_dies()
    hc = HydraConfig.get()
    try:
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        if cfg.get(BATCH_KEY):
            cfgs, dirs = batch_configs(cfg, hc)
            summaries = run_batch(cfgs, dirs, [choices] * len(cfgs))
        elif cfg.get("seeds"):
            summaries = run_seeds(cfg, list(cfg.seeds), hc.runtime.output_dir, choices)
        else:
            summaries = run_batch([cfg], [hc.runtime.output_dir], [choices])
    except EfbenchError as exc:
        log.error("efbench: error: %s", exc)
        if hc.mode == RunMode.MULTIRUN:
            return None
        sys.exit(2)
    except (KeyboardInterrupt, SystemError) as exc:  # numba wraps a signal's exception in SystemError
        stop = interrupted_by(exc)
        if stop is None:
            raise
        if worker:  # its runs are written: tell the sweeping process, which ends the sweep
            logging.shutdown()
            worker_done(stop.exit_code)
        if hc.mode == RunMode.MULTIRUN:
            raise stop from None  # the sweeper stops the sweep and reports
        log.error("efbench: %s", stop)
        sys.exit(stop.exit_code)
    gaps = [s["final"]["gap"] for s in summaries if "final" in s]
    return float(sum(gaps) / len(gaps)) if gaps else None
