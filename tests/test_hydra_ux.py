"""The efbench command as a Hydra user expects it, run as the installed ``efbench`` from a
temporary folder: its help (generated from the config files), its log file's name, the
output folder it prints, one data cache shared by runs that change directory, progress
bars only on a terminal, a sweep's config refused without -m, and the figures callback."""

import fcntl
import importlib.resources
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from efbench.app import cli
from efbench.app.callbacks import sweep_error
from efbench.engine import loop as engine
from efbench.run.runner import run_batch

EXE = Path(sys.executable).with_name("efbench")
CONF = Path(str(importlib.resources.files("efbench.conf")))


def efbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command, without $EFBENCH_DATA_DIR (the default data.dir is tested)."""
    env = {k: v for k, v in os.environ.items() if k != "EFBENCH_DATA_DIR"}
    return subprocess.run([str(EXE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def cfg_of(*overrides: str):
    with initialize_config_module("efbench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def section(text: str, header: str) -> list[str]:
    """The option names listed under ``header`` (``method:`` ...) in the help."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    names = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if header.startswith("+"):  # a list of names
            names += [n.strip() for n in line.split(",") if n.strip()]
        elif line.startswith("  ") and not line.startswith("   "):
            names.append(line.split()[0].rstrip("*"))
    return names


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_help_names_efbench_and_lists_every_option_and_setting(tmp_path):
    r = efbench("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("efbench: ") and "powered by Hydra" not in r.stdout
    for group in ("method", "compressor"):
        registry = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert section(r.stdout, f"{group}:") == registry
    assert "  ec_sgd_is*" in r.stdout and "  ht*" in r.stdout  # the defaults, marked
    assert "paper_exp1 (sweep)" in r.stdout and "paper_reference (sweep)" not in r.stdout
    assert "figures" in section(r.stdout, "hydra/callbacks:")
    # every setting of config.yaml by its dotted key, with its default, meaning and rule
    config = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))
    del config["defaults"], config["hydra"]
    keys = list(leaves(config))
    assert {"seed", "budget.iters", "problem.l2_mode", "data.dir", "progress"} <= set(keys)
    for key in keys:
        assert f"  {key}=" in r.stdout, key
    from efbench.config.schema import TOP

    assert [k for k in keys if not TOP[k].doc] == []  # each declared with what it means
    joined = " ".join(r.stdout.split())  # wrapped to the terminal's width
    assert "seed=0 the run's randomness (sampling, random compressors, coins) [an integer >= 0]" in joined
    assert "a progress bar while a run steps (on a terminal only) [true, false]" in joined
    assert "ec_sgd*/ec_lsvrg (batch 1; identity, ht, topk); auto uses it where it applies [auto," in joined
    # a method's and a compressor's keys with the rules their classes declare
    assert "[zeta: a number >= 0]" in section_text(r.stdout, "method:")
    assert "[lam: a number >= 0]" in section_text(r.stdout, "compressor:")


def section_text(text: str, head: str) -> str:
    return " ".join(" ".join(text.split("\n" + head, 1)[1].split("\n\n", 1)[0].splitlines()).split())


def test_help_alone_is_hydras_help_from_a_cache_keyed_by_the_sources(tmp_path, monkeypatch):
    """``efbench --help`` alone prints, without starting Hydra, the text Hydra prints for
    ``efbench <override> --help``; it is generated once into the user's cache, and a change
    of any source or config file changes its key. An unwritable cache only costs time."""
    from efbench.app import helpcache

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "100"}

    def run(*args: str, **extra: str) -> str:
        r = subprocess.run(
            [str(EXE), *args], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    fast = run("--help")
    assert len(list((tmp_path / "cache" / "efbench").glob("help-*-100.txt"))) == 1
    assert run("--help") == fast == run("seed=0", "--help")  # cached; Hydra's own
    assert run("--help", XDG_CACHE_HOME="/proc/efbench-none") == fast
    copy = tmp_path / "pkg"
    shutil.copytree(helpcache.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(helpcache, "PACKAGE", copy)
    key = helpcache.sources_key()
    option = copy / "conf" / "method" / "ef21.yaml"
    option.write_text(option.read_text() + "# a comment\n")
    assert helpcache.sources_key() != key


def test_help_is_generated_from_the_option_files_and_the_declared_rules(tmp_path, monkeypatch):
    from efbench.config import schema
    from efbench.core.rules import Int

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "method" / "zz_new.yaml").write_text("# ZZ (Someone et al. 2030): a new method. More.\nrate: 1\n")
    (conf / "config.yaml").write_text((conf / "config.yaml").read_text() + "zz_steps: 3\n")
    monkeypatch.setattr(importlib.resources, "files", lambda package: conf)
    monkeypatch.setitem(schema.TOP, "zz_steps", Int(2).described("ZZ steps note"))
    generated = cli.help_text(width=100)
    assert "zz_new" in section(generated, "method:")
    assert "ZZ (Someone et al. 2030): a new method. [keys: rate]" in " ".join(generated.split())
    assert "zz_steps=3 ZZ steps note [an integer >= 2]" in " ".join(generated.split())


def test_run_logs_to_efbench_log_and_ends_with_its_folder(tmp_path):
    out = tmp_path / "run"
    r = efbench("budget.iters=30", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "efbench.log").is_file() and not (out / "cli.log").exists()
    assert "completed after 30 steps" in (out / "efbench.log").read_text()
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert lines[-1].endswith(f"results in {out}")
    final = next(ln for ln in lines if "completed after" in ln)
    assert "it/s stepping" in final and "it/s wall" in final
    assert "it/s]" not in r.stderr  # no progress bar into a pipe


def test_progress_bar_only_on_a_terminal_labelled_with_the_job(tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            bars.append(kwargs)

        def update(self, n):
            pass

        def close(self):
            pass

    class Terminal:
        def isatty(self):
            return True

        def write(self, text):
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr(engine, "tqdm", Bar)
    cfg = cfg_of("budget.iters=20", "progress=true")
    run_batch([cfg], [tmp_path / "piped"], progress_label="[job 3]")
    monkeypatch.setattr(sys, "stderr", Terminal())
    run_batch([cfg], [tmp_path / "tty"], progress_label="[job 3]")
    assert [b["disable"] for b in bars] == [True, False]
    assert bars[1]["desc"] == "[job 3] ec_sgd_is"


def test_progress_bar_on_a_terminal_as_a_user_sees_it(tmp_path):
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    args = ["-m", "budget.iters=50000", "engine=numpy", f"hydra.sweep.dir={tmp_path / 'm'}"]
    proc = subprocess.Popen([str(EXE), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=sub)
    os.close(sub)
    seen = b""
    while True:  # the stepping lasts over a second: the bar's delay
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                seen += os.read(main, 65536)
            except OSError:  # the command ended
                break
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.wait() == 0
    assert b"[job 0] ec_sgd_is:" in seen and b"it/s]" in seen


def test_runs_that_change_directory_share_one_data_cache(tmp_path, mirror):
    launch, own = tmp_path / "launch", tmp_path / "mirror"
    launch.mkdir()
    own.mkdir()
    shutil.copy(mirror / "a1a.bz2", own)
    common = ["dataset=a1a", "budget.iters=20", f"data.mirror={own}", "hydra.job.chdir=true"]
    first = efbench(*common, "hydra.run.dir=r1", cwd=launch)
    assert first.returncode == 0, first.stderr
    cache = launch / "data"
    assert f"data cache: {cache}" in first.stdout + first.stderr
    assert (cache / "a1a.npz").is_file() and not (launch / "r1" / "data").exists()
    (own / "a1a.bz2").unlink()  # from now on only the cache has a1a: nothing to parse again
    sweep = efbench("-m", *common, "seed=0,1", "hydra.sweep.dir=m", cwd=launch)  # one batched job
    text = sweep.stdout + sweep.stderr
    assert sweep.returncode == 0, text
    assert text.count(f"data cache: {cache}") == 1
    for seed in (0, 1):  # written where the sweep's runs belong, not below the job's own folder
        assert (launch / "m" / f"budget.iters=20,dataset=a1a,seed={seed}" / "summary.json").is_file()
    assert not list((launch / "m" / ".batches").rglob("summary.json"))
    # resuming: launched from elsewhere (another data.dir), the finished run is still skipped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = efbench(*common, f"hydra.run.dir={launch / 'r1'}", cwd=elsewhere)
    assert again.returncode == 0 and f"skipping {launch / 'r1'}" in again.stdout + again.stderr


def test_a_sweep_config_without_m_is_refused_in_one_line(tmp_path):
    r = efbench("+experiment=paper_exp1", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == "" and r.stderr.splitlines() == [
        "efbench: error: experiment: paper_exp1 is a sweep (over dataset, method, seed): add -m "
        "to run it (efbench -m +experiment=paper_exp1)"
    ]
    assert not (tmp_path / "outputs").exists()  # refused before a run folder is made
    r = efbench("seed=0,1", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("efbench: error: seed: '0,1' is a sweep: add -m")


def test_the_experiments_marked_as_sweeps_are_those_refused_alone():
    marked = {n for n in section(cli.help_text(width=10_000), "+experiment=NAME:") if n.endswith(" (sweep)")}
    marked = {n.removesuffix(" (sweep)") for n in marked}
    assert {"paper_exp1", "paper_exp2", "paper_exp3", "hl_grid_clag"} <= marked
    alone = ["paper_reference", "hl_3pc_ef21", "fam_base_3pc", "compare_w8a_ef21_topk"]
    with initialize_config_module("efbench.conf", version_base="1.3"):
        for name in [*marked, *alone]:
            cfg = compose("config", [f"+experiment={name}"], return_hydra_config=True)
            assert (sweep_error(cfg) is not None) == (name in marked), name


def test_an_experiment_that_inherits_a_sweep_is_marked_too(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    sweep = "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n"
    (conf / "experiment" / "zz_base.yaml").write_text(sweep)
    (conf / "experiment" / "zz_child.yaml").write_text("# @package _global_\ndefaults:\n  - zz_base\n")
    (conf / "experiment" / "zz_alone.yaml").write_text("# @package _global_\nseed: 3\n")
    monkeypatch.setattr(importlib.resources, "files", lambda package: conf)
    listed = section(cli.help_text(width=10_000), "+experiment=NAME:")
    assert {"zz_base (sweep)", "zz_child (sweep)", "zz_alone"} <= set(listed)


def test_figures_callback_draws_a_finished_sweep(tmp_path):
    root = tmp_path / "sweep"
    r = efbench(
        "-m", "seed=0,1", "compressor.lam=0.01,0.1", "budget.iters=40", "progress=false",
        f"hydra.sweep.dir={root}", "hydra/callbacks=figures", "hydra.callbacks.figures.x=[iterations,bits]",
        cwd=tmp_path,
    )  # fmt: skip
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    for name in ("rel_gap_vs_iterations", "rel_gap_vs_bits"):
        png = root / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (root / "figures" / "rel_gap_vs_epochs.png").exists()
    assert f"figures in {root / 'figures'}: rel_gap_vs_iterations, rel_gap_vs_bits" in text
    assert f"results in {root}\n" in text  # the sweep's folder (each job's runs are below it)
    for line in text.splitlines():  # every line of the jobs says which job wrote it
        if "[efbench]" in line:
            assert "[efbench][INFO] - [job " in line, line


def test_figures_callback_refuses_an_unknown_axis_in_one_line(tmp_path):
    r = efbench(
        "-m", "seed=0", "hydra/callbacks=figures", "hydra.callbacks.figures.x=[fortnights]", cwd=tmp_path
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("efbench: error: hydra.callbacks.figures.x: unknown axis 'fortnights'")


@pytest.mark.parametrize("data_dir", ["data", "~/efbench-data", "/abs/cache"])
def test_data_dir_is_anchored_at_the_launch_directory(data_dir, tmp_path):
    cfg = cfg_of(f"data.dir='{data_dir}'")
    cli.anchor_data_dir(cfg, tmp_path)
    want = Path(data_dir).expanduser()
    assert cfg.data.dir == str(want if want.is_absolute() else tmp_path / want)


@pytest.mark.parametrize("env, want", [(None, "data"), ("/abs/cache", "/abs/cache"), ("rel", "rel")])
def test_efbench_data_dir_still_wins_and_is_anchored_too(env, want, tmp_path, monkeypatch):
    if env is None:
        monkeypatch.delenv("EFBENCH_DATA_DIR", raising=False)
    else:
        monkeypatch.setenv("EFBENCH_DATA_DIR", env)
    cfg = cfg_of()
    cli.anchor_data_dir(cfg, tmp_path)
    assert cfg.data.dir == str(tmp_path / want)  # an absolute ``want`` stays as it is


@pytest.mark.parametrize(
    "setting, key",
    [
        (["hydra.sweeper.max_runs=0"], "hydra.sweeper.max_runs"),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs"),
        (["+tune=stepsize", "tune.target=-1"], "tune.target"),
        (["seeds=[0,1]"], "seeds"),
    ],
)
def test_bad_sweeper_launcher_and_tune_settings_are_one_line(tmp_path, setting, key):
    """Refused before any job runs or anything is written: one line naming the key, exit 2."""
    r = efbench(
        "-m", "seed=0,1", "budget.iters=5", "progress=false", *setting, "hydra.sweep.dir=sw", cwd=tmp_path
    )
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and lines == [lines[0]] and lines[0].startswith(f"efbench: error: {key}:"), lines
    assert not (tmp_path / "sw").exists()


def test_efbench_patches_nothing_in_hydra_and_its_sweeper_is_found_without_importing_it():
    """Hydra's plugin scan finds the efbench sweeper by itself (no edit of
    ``hydra_plugins.__path__``), and importing the CLI leaves Hydra's functions as they are."""
    code = (
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "found = [c.__name__ for c in Plugins.instance().discover(Sweeper)]\n"
        "import hydra._internal.utils as u\n"
        "before = dict(vars(u))\n"
        "import efbench.app.cli\n"
        "changed = [k for k, v in vars(u).items() if before.get(k) is not v]\n"
        "print(found, changed)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['BasicSweeper', 'EfbenchSweeper'] []"


def test_hydra_full_error_set_by_the_user_gives_hydras_traceback(tmp_path):
    r = subprocess.run(
        [str(EXE), "nosuchkey=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert r.returncode == 1 and "Traceback" in r.stderr and "nosuchkey" in r.stderr
    r = subprocess.run([str(EXE), "nosuchkey=1"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nosuchkey" in r.stderr


def test_the_one_private_hydra_class_used_is_checked_on_the_supported_hydra():
    """The efbench sweeper (hydra_plugins/efbench_sweeper) is the one place that builds on a
    private Hydra class (BasicSweeper, whose job list it groups); pyproject.toml pins hydra-core
    to the releases it is tested on. A new Hydra release: run the sweep tests, then widen both."""
    import hydra
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from hydra_plugins.efbench_sweeper.efbench_sweeper import EfbenchSweeper

    assert hydra.__version__.startswith("1.3.") and issubclass(EfbenchSweeper, BasicSweeper)
    for name in ("split_arguments", "setup", "sweep"):
        assert callable(getattr(BasicSweeper, name))
