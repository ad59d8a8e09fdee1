"""Bad input, as a user types it: one line naming the key and what it allows, exit code 2,
no traceback, and a completed result in the same run directory left byte for byte.

The lines go through the ``efbench`` console script's own function in this process (Hydra
parses, composes and reports as it does in a shell; a process each would cost a minute
of interpreter start-up); a few go through the installed command end to end."""

import contextlib
import io
import re
import shutil
import signal
import sys
from types import SimpleNamespace

import pytest
from test_cli import cfg_of, efbench

from efbench.app import entry
from efbench.run.results import SUMMARY, TRACE
from efbench.run.runner import run

# (command line, the key the error must name)
BAD = [
    ("budget.iters=2.5", "budget.iters"),
    ("dataset=a9a dataset.libsvm_name=/etc/passwd", "dataset.libsvm_name"),
    ("dataset=a9a dataset.libsvm_name=../a9a", "dataset.libsvm_name"),
    ("stepsize=decreasing stepsize.base=true", "stepsize.base"),
    ("stepsize=constant stepsize.gamma=true", "stepsize.gamma"),
    ("method=d_psgd network.collective=allreduce", "network.collective"),
    ("budget.iters=0", "budget.iters"),
    ("budget.iters=-5", "budget.iters"),
    ("budget.iters=abc", "budget.iters"),
    ("budget.bits=0", "budget.bits"),
    ("budget.bits=-1", "budget.bits"),
    ("budget.epochs=abc", "budget.epochs"),
    ("budget.iters=null", "budget"),
    ("bits.index_bits=maybe", "bits.index_bits"),
    ("bits.index_bits=1", "bits.index_bits"),
    ("bits.float_bits=8", "bits.float_bits"),
    ("bits.float_bits=abc", "bits.float_bits"),
    ("diverge_factor=-1", "diverge_factor"),
    ("diverge_factor=0.5", "diverge_factor"),
    ("log_every=abc", "log_every"),
    ("log_every=0", "log_every"),
    ("log_every=2.5", "log_every"),
    ("log_per_decade=0", "log_per_decade"),
    ("log_per_decade=-3", "log_per_decade"),
    ("seed=-1", "seed"),
    ("seed=1.5", "seed"),
    ("seed=abc", "seed"),
    ("seeds=[]", "seeds"),
    ("seeds=abc", "seeds"),
    ("seeds=[1,1]", "seeds"),
    ("seeds=[-1]", "seeds"),
    ("+foo=1", "foo"),
    ("foo=1", "foo"),
    ("+method.bar=2", "method.bar"),
    ("+compressor.zz=1", "compressor.zz"),
    ("+stepsize.gamma=0.1", "stepsize.gamma"),
    ("dataset=nonexistent", "dataset"),
    ("method=nonexistent", "method"),
    ("compressor=nope", "compressor"),
    ("sampling=nope", "sampling"),
    ("engine=fast", "engine"),
    ("progress=maybe", "progress"),
    ("budget.iters==3", "budget.iters"),
    ("method=ef_signsgd compressor=topk", "compressor"),
    ("method=diana compressor=topk", "compressor"),
    ("method=ef21 compressor=randk compressor.scaled=true", "compressor"),
    ("topology=torus", "topology"),
    ("participation=nice", "participation"),
    ("participation=nice participation.size=50 method=ef21", "participation.size"),
    ("participation=independent participation.p=1.5 method=ef21", "participation.p"),
    ("participation.kind=some", "participation.kind"),
    ("network=moon", "network"),
    ("network.server=fast", "network.server"),
    ("network.alpha=-1", "network.alpha"),
    ("network.beta_up=0", "network.beta_up"),
    ("network.collective=gossip", "network.collective"),
    ("network.c_grad=fast", "network.c_grad"),
    ("sampling.batch=0", "sampling.batch"),
    ("sampling.batch=1000", "sampling.batch"),
    ("dataset.n_workers=0", "dataset.n_workers"),
    ("dataset.n_workers=1000", "dataset.n_workers"),
    ("dataset.m=0", "dataset.m"),
    ("dataset.m=2.5", "dataset.m"),
    ("dataset=synthetic dataset.synthetic.density=0", "dataset.synthetic.density"),
    ("dataset=synthetic dataset.synthetic.rows=-1", "dataset.synthetic.rows"),
    ("dataset=synthetic dataset.n_workers=100", "dataset.n_workers"),
    ("dataset.x0=middle", "dataset.x0"),
    ("x0=middle", "x0"),
    ("problem.l2=-1", "problem.l2"),
    ("problem.l2_mode=weird", "problem.l2_mode"),
    ("data.split=random", "data.split"),
    ("data.alpha=0", "data.alpha"),
    ("data.seed=-2", "data.seed"),
    ("stepsize=constant stepsize.gamma=-0.1", "stepsize.gamma"),
    ("stepsize=constant stepsize.gamma=abc", "stepsize.gamma"),
    ("stepsize.multiplier=0", "stepsize.multiplier"),
    ("stepsize=decreasing stepsize.decay=exp", "stepsize.decay"),
    ("stepsize=decreasing stepsize.k0=0", "stepsize.k0"),
    ("stepsize.rule=magic", "stepsize.rule"),
    ("compressor=topk compressor.k=0", "compressor.k"),
    ("compressor=topk compressor.k=2.5", "compressor.k"),
    ("compressor.lam=-1", "compressor.lam"),
    ("compressor=randk compressor.scaled=maybe", "compressor.scaled"),
    ("compressor=qsgd compressor.s=0", "compressor.s"),
    ("method=ec_lsvrg method.estimator.p=0", "method.estimator.p"),
    ("method=ec_lsvrg method.estimator.p=1.5", "method.estimator.p"),
    ("method=ec_lsvrg method.estimator.coin=maybe", "method.estimator.coin"),
    ("method.ec_form=weird", "method.ec_form"),
    ("method=lag method.zeta=-1", "method.zeta"),
    ("method=diana compressor=randk compressor.scaled=true method.alpha=2", "method.alpha"),
    ("method=deep_squeeze method.eta=0", "method.eta"),
    ("data.mirror=123", "data.mirror"),
    ("engine=numba method=ef21 compressor=topk", "engine"),
    ("engine=numba compressor=randk", "engine"),
    ("engine=numba sampling.batch=2", "engine"),
    ("engine=numba dataset=counterexample method=ec_gd compressor=topk", "engine"),
    ("compressor=topk compressor.k=1000", "compressor.k"),
    ("dataset=synthetic dataset.synthetic.features=5 compressor=randk compressor.k=6", "compressor.k"),
]


END_TO_END = ("budget.iters==3", "+foo=1", "compressor=nope", "method=diana compressor=topk")


def efbench_in_process(*args: str) -> SimpleNamespace:
    """``efbench *args`` through its console-script function, in this process."""
    out, err, argv, term = io.StringIO(), io.StringIO(), sys.argv, signal.getsignal(signal.SIGTERM)
    sys.argv, code = ["efbench", *args], 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry.efbench()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, term)  # a run's handler stays with the run
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every bad command line launched into a copy of a completed run."""
    root = tmp_path_factory.mktemp("bad")
    template = root / "template"
    run(cfg_of("budget.iters=20"), template)
    found = {}
    for i, (line, _) in enumerate(BAD):
        out = root / f"case{i}"
        shutil.copytree(template, out)
        args = ("progress=false", *line.split(), f"hydra.run.dir={out}")
        found[line] = (efbench_in_process(*args), out, template)
    for i, line in enumerate(END_TO_END):
        out = root / f"command{i}"
        shutil.copytree(template, out)
        r = efbench("progress=false", *line.split(), f"hydra.run.dir={out}", cwd=root)
        found["$ " + line] = (r, out, template)
    return found


def check(outcomes, line, key):
    r, out, template = outcomes[line]
    text = r.stdout + r.stderr
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert r.returncode == 2, text
    assert "Traceback" not in text and len(errors) == 1, text
    assert f"error: {key}" in errors[0] and "(allowed: " in errors[0] or key in errors[0], errors[0]
    for name in (SUMMARY, TRACE):
        assert (out / name).read_bytes() == (template / name).read_bytes()
    return text, errors[0]


def test_the_table_is_large():
    assert len(BAD) >= 60 and set(END_TO_END) <= {line for line, _ in BAD}


@pytest.mark.parametrize("line", END_TO_END)
def test_the_installed_command_says_the_same(outcomes, line):
    check(outcomes, "$ " + line, dict(BAD)[line])
    ours, theirs = (outcomes[k][0] for k in (line, "$ " + line))
    assert said(theirs) == said(ours)


def said(r: SimpleNamespace) -> str:
    return re.sub(r"^\[[\d\-: ,]+\]", "", (r.stdout + r.stderr).strip())  # a log line's time


@pytest.mark.parametrize("line, key", BAD)
def test_bad_input_is_one_line_before_anything_else(outcomes, line, key):
    text, error = check(outcomes, line, key)
    assert [ln for ln in text.splitlines() if ln.strip()] == [error]  # nothing printed before
    assert error.split("error: ", 1)[1].startswith(key)


def test_data_dir_that_is_a_file_names_the_key(tmp_path):
    from efbench.errors import ConfigError
    from efbench.problems.datasets import load_libsvm

    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"data\.dir: .* is not a directory"):
        load_libsvm("w8a", tmp_path / "f")
