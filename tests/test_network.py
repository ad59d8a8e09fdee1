"""Simulated network time (SPEC.md section 8): the alpha-beta formulas on hand-computed
rounds, the per-round counts both engines keep, and re-timing a finished run."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from test_cli import cfg_of, efbench

from efbench.analysis.collect import collect, profile
from efbench.config.build import build_method
from efbench.core.network import COUNTS, Profile, simulated_time
from efbench.engine.loop import Limits, execute
from efbench.errors import ConfigError
from efbench.run.runner import build_setup, prepare_run, run

# Two rounds of n = 4 workers. Round 1: messages of 100, 200, 0 and 50 bits, a 64-bit
# broadcast, the slowest worker made 3 oracle calls. Round 2: every worker lazy, no
# broadcast, 0 calls (a round that costs nothing).
N = 4
ROUNDS = dict(
    rounds_up=1,
    bits_up_round_max=200,
    bits_up_round_min=0,
    bits_link_round_max=100,  # gossip: a node's message to one neighbour
    calls_round_max=3,
    bits_up_mean=350 / 4,
    bits_down=64,
    rounds_down=1,
)
PROF_LAN = dict(alpha=1.3e-4, beta_up=1.4e9, beta_down=1.4e9, beta_server=1.4e9, c_grad=1e-6)
PROF = dict(alpha=0.01, beta_up=100.0, beta_down=1000.0, beta_server=50.0, c_grad=0.5)


@pytest.mark.parametrize(
    "collective, options, seconds",
    [
        # compute 0.5 x 3; latency up and down; max_i b_i / beta_up; b_down / beta_down
        ("ps", {}, 1.5 + 0.01 + 0.01 + 200 / 100 + 64 / 1000),
        # the server's one link carries every message in and n copies of the broadcast
        ("ps", {"server": "shared"}, 1.5 + 0.01 + 0.01 + 350 / 50 + 4 * 64 / 50),
        # ring all-reduce of D = 200 bits: 2 (n - 1) alpha + 2 (n - 1) / n D / beta
        ("allreduce", {}, 1.5 + 2 * 3 * 0.01 + 2 * 3 / 4 * 200 / 100),
        # ring all-gather: (n - 1) alpha + (sum_j b_j - min_j b_j) / beta
        ("allgather", {}, 1.5 + 3 * 0.01 + (350 - 0) / 100),
        # gossip on a link per neighbour: the largest one-link message
        ("gossip", {}, 1.5 + 0.01 + 100 / 100),
        # gossip on one link per node: deg_i x message, as the method counts its bits
        ("gossip", {"links": "shared"}, 1.5 + 0.01 + 200 / 100),
    ],
)
def test_simulated_time_of_hand_computed_rounds(collective, options, seconds):
    prof = Profile(**PROF, **options)
    assert simulated_time(prof, collective, N, ROUNDS) == pytest.approx(seconds, rel=1e-14)


def test_profiles_of_the_slides_and_overrides():
    assert (profile("lan").alpha, profile("lan").beta_up) == (1.3e-4, 1.4e9)
    assert (profile("lan_high_latency").alpha, profile("lan_high_latency").beta_up) == (0.02, 1.4e9)
    assert (profile("wan_slow").alpha, profile("wan_slow").beta_up) == (0.02, 5e6)
    assert profile("datacenter").beta_up == 2.5e10 and profile("datacenter").alpha == 5e-6
    assert profile("mobile").beta_up < profile("mobile").beta_down
    p = Profile.from_config({"alpha": 0.5, "beta_up": None})
    assert p.beta_up == math.inf and p.beta_server == math.inf  # null: infinite bandwidth


def _replayed_counts(method, problem, x0, seed, gamma, steps):
    """The per-round counts of ``steps`` rounds, from the method's own Round records."""
    rng = np.random.default_rng(seed)
    state = method.init(problem, x0, rng)
    want = dict.fromkeys((*COUNTS, "rounds_down", "bits_down"), 0.0)
    for _ in range(steps):
        state, rnd = method.step(problem, state, gamma, rng)
        link = rnd.bits_up if rnd.link_bits is None else rnd.link_bits
        want["rounds_up"] += bool(np.any(rnd.bits_up > 0))
        want["bits_up_round_max"] += rnd.bits_up.max()
        want["bits_up_round_min"] += rnd.bits_up.min()
        want["bits_link_round_max"] += np.max(link)
        want["calls_round_max"] += np.max(rnd.calls)
        want["rounds_down"] += rnd.bits_down > 0
        want["bits_down"] += rnd.bits_down
    return want


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=clag", "compressor=topk", "compressor.k=2", "method.zeta=2.0"],  # lazy workers
        ["method=ec_lsvrg", "compressor=ht", "engine=numpy"],  # refreshes: m + 2 calls
        ["method=ec_lsvrg", "compressor=topk", "engine=numba"],  # the compiled step's counts
        ["method=d_psgd", "dataset.n_workers=5"],  # gossip on a ring: 2 copies per node
        ["method=diana", "compressor=qsgd"],
    ],
)
def test_engine_keeps_each_rounds_counts(overrides):
    cfg = cfg_of(*overrides, "budget.iters=40")
    setup = build_setup(cfg)
    spec = prepare_run(cfg, setup)
    lim = Limits(40, np.inf, np.inf, 40, 1e6)
    out = execute(setup.problem, setup.fstar, setup.xstar, [spec], lim, cfg.engine)[0]
    fresh = build_method(cfg, setup.problem.d)
    want = _replayed_counts(fresh, setup.problem, spec.x0, spec.seed, spec.schedule(0), 40)
    got = out.rows[-1]
    for key, value in want.items():
        assert got[key] == value, key
    if "compressor=ht" in overrides:  # messages of different sizes
        assert got["bits_up_round_min"] < got["bits_up_round_max"]
    if "method=clag" in overrides:
        assert 0 < got["rounds_up"] < 40 or got["bits_up_round_min"] == 0  # some lazy rounds
    if "method=d_psgd" in overrides:  # ring: every node sends its model to 2 neighbours
        assert got["bits_up_round_max"] == 2 * got["bits_link_round_max"] == 2 * 40 * 32 * setup.problem.d


def test_collective_follows_the_method_and_can_be_chosen(tmp_path):
    for overrides, collective in (
        (["method=sgd"], "allreduce"),
        (["method=ec_sgd_us"], "ps"),
        (["method=ec_sgd_us", "network.collective=allgather"], "allgather"),
        (["method=d_psgd"], "gossip"),
    ):
        s = run(cfg_of(*overrides, "budget.iters=5"), tmp_path / collective / str(len(overrides)))
        assert s["collective"] == collective
    # a decentralized method gossips whatever collective is set: setting one is refused, not ignored
    with pytest.raises(ConfigError, match="network.collective: method 'd_psgd' gossips"):
        run(cfg_of("method=d_psgd", "network.collective=allgather", "budget.iters=5"), tmp_path / "no")


def test_a_finished_run_is_retimed_under_another_profile(tmp_path):
    """collect(network=...) gives the time a run made under that profile records."""
    for name in ("lan", "wan_slow"):
        run(cfg_of("method=clag", "compressor=topk", f"network={name}", "budget.iters=300"), tmp_path / name)
    lan, _ = collect(tmp_path / "lan")
    slow, _ = collect(tmp_path / "wan_slow")
    retimed, _ = collect(tmp_path / "lan", network="wan_slow")
    assert not np.allclose(lan["time_sim"], slow["time_sim"])
    np.testing.assert_allclose(retimed["time_sim"], slow["time_sim"], rtol=1e-12)
    custom, _ = collect(tmp_path / "lan", network=Profile(alpha=1.0))  # latency only
    np.testing.assert_array_equal(custom["time_sim"], custom["rounds_up"] + custom["rounds_down"])


def test_collect_and_figures_take_a_network_from_the_command_line(tmp_path):
    run(cfg_of("budget.iters=50"), tmp_path / "r")
    res = efbench("--help", cwd=tmp_path)  # the group is listed
    section = res.stdout[res.stdout.index("\nnetwork:") :]
    for name in ("datacenter", "lan", "lan_high_latency", "mobile", "wan_slow"):
        assert re.search(rf"\n  {name}\*? ", section), name  # * marks the default
    from efbench.analysis.collect import main as collect_main
    from efbench.analysis.plots import main as figures_main

    collect_main([str(tmp_path), "--network", "mobile", "-o", str(tmp_path / "all")])
    trace = pd.read_parquet(tmp_path / "all_trace.parquet")
    assert trace["time_sim"].iloc[-1] > 50 * 2 * 0.04  # 40 ms each way, 50 rounds
    figures_main([str(tmp_path), "--x", "time_sim", "--network", "wan_slow", "--out", str(tmp_path / "fig")])
    assert (tmp_path / "fig" / "rel_gap_vs_time_sim.png").is_file()
    with pytest.raises(SystemExit, match="network.*no profile 'moon'"):
        collect_main([str(tmp_path), "--network", "moon"])


def test_measured_compute_time_is_the_runs_own_rate(tmp_path):
    """c_grad=measured: the run's stepping seconds per oracle call, applied to every round
    and recorded, so re-timing under another network keeps it."""
    s = run(cfg_of("network.c_grad=measured", "budget.iters=200"), tmp_path / "m")
    calls = s["final"]["epochs"] * s["config"]["dataset"]["m"] * s["n_workers"]
    assert s["c_grad_measured"] == pytest.approx(s["step_time"] / calls, rel=1e-12)
    trace, runs = collect(tmp_path / "m")
    measured = Profile(**{**PROF_LAN, "c_grad": s["c_grad_measured"]})
    want = simulated_time(
        measured,
        "ps",
        s["n_workers"],
        {c: trace[c] for c in [*COUNTS, "bits_up_mean", "bits_down", "rounds_down"]},
    )
    np.testing.assert_allclose(trace["time_sim"], want, rtol=1e-12)
    again, _ = collect(tmp_path / "m", network=Profile(**{**PROF_LAN, "c_grad": "measured"}))
    np.testing.assert_allclose(again["time_sim"], trace["time_sim"], rtol=1e-12)
    run(cfg_of("budget.iters=5"), tmp_path / "p")
    with pytest.raises(ConfigError, match="network.c_grad.*no measured c_grad"):
        collect(tmp_path / "p", network=Profile(c_grad="measured"))


def test_unbiased_compressors_record_their_omega(tmp_path):
    s = run(cfg_of("method=diana", "compressor=stochastic_sign", "budget.iters=5"), tmp_path)
    assert s["compressor_omega"] == 30 - 1  # breast cancer: d = 30
