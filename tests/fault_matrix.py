"""The fault matrix of issue 21, run by hand (not a test: it takes a minute and kills
processes): each fault is caused on a real launch of the installed ``efbench`` and the table
says what was kept. ``python tests/fault_matrix.py [--tmpfs]`` (``--tmpfs``: also a 60 kB
tmpfs disk, as root). Needs the LIBSVM mirror (EFBENCH_DATA_MIRROR or ../shared/data)."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from efbench.engine.signals import started_by

EXE = str(Path(sys.executable).with_name("efbench"))
BASE = ["budget.iters=60", "log_every=20", "progress=false"]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def kept(before: dict[str, bytes], path: Path) -> str:
    after = tree(path)
    same = sum(after.get(k) == v for k, v in before.items())
    return f"{same}/{len(before)} files byte for byte"


def efbench(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, **kw)


def started(args: list[str], cwd: Path, until: str, timeout: float = 60) -> tuple[subprocess.Popen, Path]:
    log = cwd / f"log-{time.monotonic_ns()}.txt"
    proc = subprocess.Popen([EXE, *args], cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while until not in log.read_text() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc, log


def relaunch_stopped(tmp: Path) -> tuple[str, str]:
    out = tmp / "run"
    efbench(*BASE, f"hydra.run.dir={out}", cwd=tmp)
    before = tree(out)
    proc, _ = started([f"hydra.run.dir={out}", "budget.iters=100000000", "progress=false"], tmp, "gamma0=")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    return (
        "completed run relaunched with more iterations, Ctrl-C",
        f"exit {code}; {kept(before, out)}; attempt.json: {(out / 'attempt.json').exists()}",
    )


def relaunch_refused(tmp: Path) -> tuple[str, str]:
    out = tmp / "run2"
    efbench(*BASE, f"hydra.run.dir={out}", cwd=tmp)
    before = tree(out)
    r = efbench(*BASE, "seed=-1", f"hydra.run.dir={out}", cwd=tmp)
    return (
        "completed run relaunched with a refused value",
        f"exit {r.returncode}; {kept(before, out)}; error.json: {(out / 'error.json').exists()}",
    )


def small_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def full_disk(tmp: Path) -> tuple[str, str]:
    r = subprocess.run(
        [EXE, "-m", "seed=0,1", "method=ec_sgd,ec_lsvrg", *BASE, f"hydra.sweep.dir={tmp / 'full'}"],
        cwd=tmp,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
    )
    text = r.stdout + r.stderr
    tally = next(
        (line.split("] ")[-1] for line in text.splitlines() if "sweep: " in line and " runs in " in line),
        "?",
    )
    return (
        "sweep onto a disk too small for results (40 kB file limit)",
        f"exit {r.returncode}; {tally}; computed before refusing: {'gamma0=' in text}",
    )


def tmpfs_disk(tmp: Path) -> tuple[str, str]:
    mnt = tmp / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60k", "tmpfs", str(mnt)]).returncode:
        return "sweep onto a 60 kB tmpfs", "not run (mount refused)"
    try:
        r = efbench(
            "-m", "seed=0,1", "method=ec_sgd,ec_lsvrg", *BASE, f"hydra.sweep.dir={mnt / 's'}", cwd=tmp
        )
        text = r.stdout + r.stderr
        tally = next((line.split("] ")[-1] for line in text.splitlines() if " runs in " in line), "?")
        return "sweep onto a 60 kB tmpfs", f"exit {r.returncode}; {tally}; traceback: {'Traceback' in text}"
    finally:
        subprocess.run(["umount", str(mnt)])


def unwritable_folder(tmp: Path) -> tuple[str, str]:
    root = tmp / "bad"
    (root / "budget.iters=60,log_every=20,seed=1" / "summary.json").mkdir(parents=True)  # where a result goes
    r = efbench("-m", "seed=0,1,2", *BASE, f"hydra.sweep.dir={root}", cwd=tmp)
    written = sorted(p.parent.name for p in root.glob("*/summary.json") if p.is_file())
    tally = next(
        (line.split("] ")[-1] for line in (r.stdout + r.stderr).splitlines() if " runs in " in line), "?"
    )
    return (
        "batched sweep, one run folder unwritable",
        f"exit {r.returncode}; written: {', '.join(written)}; {tally}",
    )


def killed_launcher(tmp: Path, after: float) -> tuple[str, str]:
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.batch=false",
        "seed=0,1,2",
    ]
    proc = subprocess.Popen(
        [EXE, *args, "budget.iters=100000000", "progress=false", f"hydra.sweep.dir={tmp / f'k{after}'}"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not started_by(proc.pid) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(after)
    n = len(started_by(proc.pid))
    proc.kill()
    proc.wait()
    t0 = time.time()
    while started_by(proc.pid) and time.time() - t0 < 20:
        time.sleep(0.1)
    left = started_by(proc.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return (
        f"joblib sweep SIGKILLed {after:g} s after its workers appeared",
        f"{n} processes; {len(left)} left after {time.time() - t0:.1f} s",
    )


def corrupted_cache(tmp: Path, kind: str) -> tuple[str, str]:
    data = tmp / f"data-{kind}"
    args = ["dataset=a1a", *BASE, f"data.dir={data}"]
    efbench(*args, f"hydra.run.dir={tmp / ('c0' + kind)}", cwd=tmp)
    files = {
        "dataset npz": data / "a1a.npz",
        "x*": next(data.glob("cache/xstar-*")),
        "spectra": next(data.glob("cache/spectra-*")),
    }
    target = files[kind]
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    r = efbench(*args, f"hydra.run.dir={tmp / ('c1' + kind)}", cwd=tmp)
    fresh = (tmp / ("c0" + kind) / "summary.json").read_text()
    again = (tmp / ("c1" + kind) / "summary.json").read_text()
    import json

    same = json.loads(fresh)["constants"]["f_star"] == json.loads(again)["constants"]["f_star"]
    warnings = sum("WARNING" in line for line in (r.stdout + r.stderr).splitlines())
    return f"truncated {kind} cache", f"exit {r.returncode}; {warnings} warning(s); f* as fresh: {same}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tmpfs", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("EFBENCH_DATA_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cases = [relaunch_stopped, relaunch_refused, full_disk, unwritable_folder]
        cases += [lambda t, a=a: killed_launcher(t, a) for a in (0.0, 0.5, 2.0)]
        cases += [lambda t, k=k: corrupted_cache(t, k) for k in ("dataset npz", "x*", "spectra")]
        cases += [tmpfs_disk] if args.tmpfs else []
        print("| fault | what was kept |\n|---|---|")
        for case in cases:
            fault, outcome = case(tmp)
            print(f"| {fault} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
