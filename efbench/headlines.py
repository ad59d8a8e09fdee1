"""``efbench-headlines``: each seed paper's headline experiment, run, drawn and reported.

Every headline is a set of experiment configs (``conf/experiment/hl_*.yaml``, one per arm,
runnable by hand with ``efbench -m '+experiment=glob(hl_<name>_*)'``). This command runs
them through the ``efbench`` command itself, collects the runs, draws the figures and
writes ``report.md``, whose paragraphs are computed from the measured curves (targets,
first-passage iterations, bits and simulated times, ratios), never written in advance:

* ``squeeze``: centralized SGD (ring all-reduce), QSGD-style SGD and DoubleSqueeze against
  D-PSGD, DCD-PSGD (2- and 4-bit QSGD) and DeepSqueeze (1-bit) on a ring, against
  iterations and against simulated time under the slides' three networks;
* ``memsgd``: Mem-SGD with Top-1 and Rand-1 against QSGD (2 bits) and SGD, against bits;
* ``3pc``: EF21, LAG and CLAG against bits, and CLAG's (K, zeta) grid as a heatmap;
* ``sign``: signSGD, EF-signSGD and stochastic sign SGD against bits, and the three-worker
  counterexample (CGD + Top1 diverges, error feedback converges).

Each comparison reads the seed-median curves (:func:`efbench.paper.median_curve`) at a target
every arm compared reaches: twice the worst final value among the arms that did not
diverge.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from efbench.network import Profile
from efbench.paper import first_reach, median_curve, parse_run_options
from efbench.plots import plot_curves, save
from efbench.sweep import collect, profile, retime

HEADLINES = ("squeeze", "memsgd", "3pc", "sign")
PROFILES = ("lan", "lan_high_latency", "wan_slow")  # the slides' three networks
# (iterations, log interval) of the quick variant; the full one uses the configs' own
QUICK = {"squeeze": (2000, 20), "memsgd": (5000, 50), "3pc": (1000, 10), "sign": (3000, 30)}
SWEEPS = {  # headline: (experiment, seeded) multiruns
    "squeeze": [("glob(hl_squeeze_*)", True)],
    "memsgd": [("glob(hl_memsgd_*)", True)],
    "3pc": [("glob(hl_3pc_*)", False), ("hl_grid_clag", False)],
    "sign": [("glob(hl_sign_*)", True), ("hl_counterexample", False)],
}


def run_sweep(exp: str, folder: Path, overrides: list[str], jobs: int) -> int:
    cmd = [sys.executable, "-m", "efbench", "-m", f"+experiment={exp}", "progress=false"]
    cmd += [f"hydra.sweep.dir={folder}", *overrides]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    print("+ efbench", " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, check=False).returncode


def run_headline(name: str, out: Path, quick: bool, seeds: int, jobs: int, overrides: list[str]) -> None:
    for i, (exp, seeded) in enumerate(SWEEPS[name]):
        extra = []
        if quick and exp != "hl_counterexample":
            iters, every = QUICK[name]
            extra += [f"budget.iters={iters}", f"log_every={every}"]
        if seeded:
            extra.append("seed=" + ",".join(str(s) for s in range(seeds)))
        run_sweep(exp, out / name / str(i), [*extra, *overrides], jobs)


def arms(trace: pd.DataFrame) -> pd.Series:
    """Each row's arm: the experiment config's name after ``hl_<headline>_`` in its run folder."""
    found = trace["run"].astype(str).str.extract(r"experiment=hl_[a-z0-9]+_([a-z0-9_]+)", expand=False)
    return found.fillna(trace.get("label", trace["run"]).astype(str))


def load(out: Path, name: str, part: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trace (with each row's ``arm``) and the runs of one of a headline's sweeps."""
    folder = out / name / str(part)
    if not folder.is_dir():
        return pd.DataFrame(), pd.DataFrame()
    trace, runs = collect(folder)
    if not trace.empty:
        trace["arm"] = arms(trace)
    return trace, runs


def retimed(trace: pd.DataFrame, runs: pd.DataFrame, network: str | Profile) -> pd.DataFrame:
    """The trace with ``time_sim`` under another network (:func:`efbench.sweep.retime`, in
    memory: the runs are read once)."""
    owner = runs.set_index("run").loc[trace["run"]].reset_index()
    return trace.assign(time_sim=retime(trace, owner, network))


def target_of(trace: pd.DataFrame, x: str, by: str = "arm", y: str = "rel_gap") -> float:
    """Twice the worst final seed-median value of the arms that did not diverge."""
    finals = []
    for _, sub in trace.groupby(by):
        if (sub.groupby("run")["status"].first() == "diverged").any():
            continue
        finals.append(median_curve(sub, x, y)[1][-1])
    return 2 * max(finals) if finals else math.nan


def passage(trace: pd.DataFrame, x: str, target: float, by: str = "arm") -> dict[str, float]:
    """Per arm, the first x at which its seed-median curve reaches ``target`` (inf: never)."""
    return {arm: first_reach(median_curve(sub, x), target) for arm, sub in trace.groupby(by)}


TARGETS = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3)  # rel. gaps at which bits are compared


def passage_table(trace: pd.DataFrame, x: str, by: str = "arm") -> pd.DataFrame:
    """x needed by each arm's seed-median curve to reach each of TARGETS (inf: never)."""
    return pd.DataFrame(
        {arm: {t: first_reach(median_curve(sub, x), t) for t in TARGETS} for arm, sub in trace.groupby(by)}
    ).T


def shown(table: pd.DataFrame, what: str) -> str:
    """A passage table as markdown: one column per target, 'never' where not reached."""
    cells = table.map(fmt)
    cells.columns = [f"{what} to {t:g}" for t in table.columns]
    return cells.to_markdown()


def tightest(table: pd.DataFrame, arms: tuple[str, ...]) -> float:
    """The smallest target every one of ``arms`` reaches (nan: none)."""
    rows = table.loc[[a for a in arms if a in table.index]]
    reached = [t for t in table.columns if len(rows) == len(arms) and np.isfinite(rows[t]).all()]
    return min(reached) if reached else math.nan


def bits_section(trace: pd.DataFrame, out: Path, stem: str, title: str) -> tuple[pd.DataFrame, list[str]]:
    """Draw the arms against bits (log x) and tabulate the bits each needs to each target."""
    save(plot_curves(trace, x="bits_up_mean", hue="arm", title=title, logx=True), out / stem)
    bits = passage_table(trace, "bits_up_mean")
    return bits, ["Bits per worker to reach a relative gap:", "", shown(bits, "bits"), ""]


def status_of(trace: pd.DataFrame, by: str = "arm") -> dict[str, str]:
    return {
        arm: ",".join(sorted(set(sub.groupby("run")["status"].first()))) for arm, sub in trace.groupby(by)
    }


def fmt(v: float, unit: str = "") -> str:
    return "never" if not math.isfinite(v) else f"{v:.3g}{unit}"


def ratio(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return "n/a"
    return f"{a / b:.3g}x"


# ---- the headlines ------------------------------------------------------------------------------


def squeeze(out: Path) -> list[str]:
    trace, runs = load(out, "squeeze", 0)
    if trace.empty:
        return ["(not run)"]
    timed = {p: retimed(trace, runs, p) for p in PROFILES}
    gossip = set(runs.loc[runs["collective"] == "gossip", "run"])
    both = pd.concat([t.assign(network=p) for p, t in timed.items()], ignore_index=True)
    title = "SGD vs squeezed and decentralized (a9a, ring, n = 20)"
    save(plot_curves(trace, x="step", hue="arm", title=title, ytop=10), out / "squeeze_vs_iterations")
    save(
        plot_curves(both, x="time_sim", panel="network", hue="arm", logx=True, ytop=10),
        out / "squeeze_vs_time",
    )
    target = target_of(trace, "step")
    status = status_of(trace)
    its = passage(trace, "step", target)
    secs = {p: passage(t, "time_sim", target) for p, t in timed.items()}
    rows = []
    for arm in sorted(its):
        sub = trace[trace.arm == arm]
        rows.append(
            {
                "arm": arm,
                "status": status[arm],
                "collective": "gossip" if sub["run"].iloc[0] in gossip else "central",
                "final rel. gap": median_curve(sub, "step")[1][-1],
                "iterations to target": its[arm],
                **{f"seconds on {p}": secs[p][arm] for p in PROFILES},
            }
        )
    table = pd.DataFrame(rows)
    lines = [
        f"Target: rel. gap {target:.3g} (twice the worst final value of the arms that did not diverge).",
        "",
        table.to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    central = table[table.collective == "central"]
    decentral = table[table.collective == "gossip"]
    for p in PROFILES:
        col = f"seconds on {p}"
        c = central.loc[central[col].idxmin()] if central[col].notna().any() else None
        d = decentral.loc[decentral[col].idxmin()] if decentral[col].notna().any() else None
        if c is None or d is None or not (math.isfinite(c[col]) or math.isfinite(d[col])):
            lines.append(f"- {p}: no arm reached the target.")
            continue
        verdict = "decentralization wins" if d[col] < c[col] else "centralized wins"
        lines.append(
            f"- {p}: fastest centralized {c.arm} {fmt(c[col], ' s')}, fastest decentralized {d.arm} "
            f"{fmt(d[col], ' s')}: {verdict} ({ratio(max(c[col], d[col]), min(c[col], d[col]))})."
        )
    for p in PROFILES:  # what decides: the same runs re-timed with the latency term alone
        prof = profile(p)
        latency_only = retimed(
            trace, runs, replace(prof, beta_up=math.inf, beta_down=math.inf, beta_server=math.inf, c_grad=0.0)
        )
        full, lat = timed[p].groupby("arm")["time_sim"].max(), latency_only.groupby("arm")["time_sim"].max()
        share = (lat / full).dropna()
        lines.append(
            f"- {p}: latency is {share.min():.0%} to {share.max():.0%} of each arm's simulated time "
            f"(one gossip round pays alpha once, a parameter-server round twice, a ring all-reduce "
            f"2 (n - 1) times)."
        )
    wins = {}
    for p in PROFILES:
        col = f"seconds on {p}"
        if central[col].notna().any() and decentral[col].notna().any():
            wins[p] = decentral[col].min() < central[col].min()
    claims = [wins[p] for p in ("lan_high_latency", "wan_slow") if p in wins]
    said = "holds" if claims and all(claims) else "does not hold" if claims else "cannot be read"
    lines += [
        "",
        f"The slides' claim that decentralization wins at high latency and low bandwidth {said} here; "
        f"it wins on {sum(wins.values())} of the {len(wins)} networks "
        f"({', '.join(p for p, w in wins.items() if w) or 'none'}).",
    ]
    for arm in ("dcd_psgd_2bit", "dcd_psgd_4bit", "deep_squeeze"):
        if arm in status:
            final = table.set_index("arm").loc[arm, "final rel. gap"]
            lines.append(f"- {arm}: {status[arm]}, final rel. gap {final:.3g}.")
    return lines


def memsgd(out: Path) -> list[str]:
    trace, _ = load(out, "memsgd", 0)
    if trace.empty:
        return ["(not run)"]
    save(
        plot_curves(trace, x="step", hue="arm", title="Mem-SGD vs QSGD vs SGD"), out / "memsgd_vs_iterations"
    )
    bits, lines = bits_section(trace, out, "memsgd_vs_bits", "Mem-SGD vs QSGD vs SGD")
    t = tightest(bits, ("qsgd", "topk", "randk"))
    if math.isfinite(t):
        q, top, rnd = bits.loc["qsgd", t], bits.loc["topk", t], bits.loc["randk", t]
        lines.append(
            f"At rel. gap {t:g}, the tightest all three reach, QSGD (2 bits a coordinate) needs "
            f"{ratio(q, top)} the bits of Mem-SGD with Top-1 and {ratio(q, rnd)} those of Mem-SGD with "
            "Rand-1."
        )
    per_round = {
        arm: sub["bits_up_mean"].iloc[-1] / sub["step"].iloc[-1]
        for arm, sub in trace.sort_values("step").groupby("arm")
        if sub["step"].iloc[-1] > 0
    }
    if "qsgd" in per_round and "topk" in per_round:
        lines.append(
            f"Per round a QSGD message is {per_round['qsgd']:.4g} bits and a Top-1 message "
            f"{per_round['topk']:.4g} ({ratio(per_round['qsgd'], per_round['topk'])}); the rest of the "
            "ratio above is the rounds each needs. The poster reports about 100x fewer bits than QSGD for "
            "Top-k with memory on its larger datasets, where the dense message is longer."
        )
    return lines


def three_pc(out: Path) -> list[str]:
    trace, _ = load(out, "3pc", 0)
    grid, _ = load(out, "3pc", 1)
    lines: list[str] = []
    if not trace.empty:
        bits, text = bits_section(trace, out, "3pc_vs_bits", "EF21 vs LAG vs CLAG")
        lines += text
        t = tightest(bits, tuple(bits.index))
        if math.isfinite(t):
            best = bits[t].idxmin()
            lines.append(f"Fewest bits to rel. gap {t:g}: {best} ({fmt(bits.loc[best, t])}).")
    if not grid.empty:
        grid["cell"] = list(zip(grid["compressor.k"], grid["method.zeta"], strict=True))
        target = target_of(grid, "bits_up_mean", by="cell")
        bits = passage(grid, "bits_up_mean", target, by="cell")
        ks = sorted({k for k, _ in bits})
        zetas = sorted({z for _, z in bits})
        M = np.array([[bits.get((k, z), math.nan) for z in zetas] for k in ks], dtype=float)
        heatmap(M, ks, zetas, target, out / "3pc_clag_grid")
        (k_best, z_best) = min(bits, key=bits.get)
        ef21 = {k: bits.get((k, 0), math.nan) for k in ks}
        lines += [
            "",
            f"CLAG grid (bits per worker to rel. gap {target:.3g}; zeta = 0 is EF21):",
            "",
            pd.DataFrame(M, index=[f"K={k}" for k in ks], columns=[f"zeta={z:g}" for z in zetas]).to_markdown(
                floatfmt=".3g"
            ),
            "",
            f"Fewest bits at K = {k_best}, zeta = {z_best:g}: {fmt(bits[(k_best, z_best)])}"
            + (
                " (EF21 itself)."
                if z_best == 0
                else f", {ratio(ef21.get(k_best, math.nan), bits[(k_best, z_best)])} fewer than EF21 with "
                "the same K."
            ),
        ]
    return lines or ["(not run)"]


def heatmap(M: np.ndarray, ks: list, zetas: list, target: float, stem: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(1.2 * len(zetas) + 2, 0.8 * len(ks) + 1.6))
    finite = M[np.isfinite(M)]
    norm = LogNorm(finite.min(), finite.max()) if finite.size else None
    im = ax.imshow(np.where(np.isfinite(M), M, np.nan), cmap="viridis_r", norm=norm, aspect="auto")
    for i in range(len(ks)):
        for j in range(len(zetas)):
            ax.text(
                j,
                i,
                fmt(M[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="w" if np.isfinite(M[i, j]) else "k",
            )
    ax.set_xticks(range(len(zetas)), [f"{z:g}" for z in zetas])
    ax.set_yticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel(r"CLAG trigger $\zeta$ (0 = EF21)")
    ax.set_ylabel("TopK K")
    ax.set_title(f"bits per worker to rel. gap {target:.2g}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save(fig, stem)


def sign(out: Path) -> list[str]:
    trace, _ = load(out, "sign", 0)
    cx, _ = load(out, "sign", 1)
    lines: list[str] = []
    if not trace.empty:
        status = status_of(trace)
        lines += bits_section(trace, out, "sign_vs_bits", "sign-based methods")[1]
        for arm in sorted(status):
            final = median_curve(trace[trace.arm == arm], "step")[1][-1]
            lines.append(f"- {arm}: {status[arm]}, final rel. gap {final:.3g}.")
    if not cx.empty:
        save(plot_curves(cx, x="step", hue="method", title="counterexample: Top1"), out / "counterexample")
        lines.append("")
        for method, sub in cx.groupby("method"):
            last = sub.sort_values("step").iloc[-1]
            lines.append(
                f"- counterexample, {method} + Top1: {last['status']} at step {int(last['step'])}, "
                f"f - f* = {last['gap']:.3g}."
            )
    return lines or ["(not run)"]


SECTIONS = {
    "squeeze": ("DoubleSqueeze, DCD-PSGD and DeepSqueeze: iterations and simulated time", squeeze),
    "memsgd": ("Sparsified SGD with memory: bits", memsgd),
    "3pc": ("3PC: EF21, LAG and CLAG", three_pc),
    "sign": ("Sign-based methods and the counterexample", sign),
}


def write_report(out: Path, names: list[str], runtime: float | None, quick: bool) -> Path:
    took = "report redrawn from earlier runs" if runtime is None else f"runtime {runtime:.0f} s"
    lines = [
        "# efbench: the seed papers' headline experiments",
        "",
        f"Variant: {'quick' if quick else 'full'}; {took}. Every number below is read off the runs "
        "in this folder (seed-median curves).",
    ]
    for name in names:
        title, fn = SECTIONS[name]
        lines += ["", f"## {title}", "", *fn(out)]
    lines += ["", "## Figures", "", *[f"- `{p.name}`" for p in sorted(out.glob("*.png"))], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    """Run the seed papers' headline experiments; write figures and report.md into --out."""
    ap = argparse.ArgumentParser(prog="efbench-headlines", description=main.__doc__)
    ap.add_argument("--out", default="headlines", help="output folder (default: ./headlines)")
    ap.add_argument("--only", nargs="+", default=list(HEADLINES), choices=HEADLINES)
    ap.add_argument("--quick", action="store_true", help="short runs, 2 seeds")
    ap.add_argument("--seeds", type=int, help="seeds per arm (default: 2 quick, 3 full)")
    args, out = parse_run_options(ap, argv)
    t0 = time.perf_counter()
    if not args.report_only:
        seeds = args.seeds or (2 if args.quick else 3)
        for name in args.only:
            run_headline(name, out, args.quick, seeds, args.jobs, args.overrides)
    runtime = None if args.report_only else time.perf_counter() - t0
    print(write_report(out, args.only, runtime, args.quick))


if __name__ == "__main__":
    main()
