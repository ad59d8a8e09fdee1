"""MARINA, VR-MARINA and PP-MARINA (Gorbunov et al. 2021): efbench.methods.marina."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import small_problem, trajectory
from test_cli import cfg_of, efbench

from efbench.config.schema import validate
from efbench.core.compressors import Identity, Natural, RandK, TopK, sparse_bits
from efbench.core.participation import Participation
from efbench.errors import ConfigError
from efbench.methods.base import Uncompressed
from efbench.methods.marina import MARINA, VRMARINA
from efbench.problems.logistic import solve

N, M, D = 4, 25, 6
RAND2 = {"compressor": RandK(k=2, scaled=True)}
NICE2 = Participation("nice", 2)
MINIBATCH = {"kind": "sgd", "sampling": "uniform", "batch": 3}


@pytest.fixture(scope="module")
def setup():
    p = small_problem(n=N, m=M, d=D, l2=0.05, seed=2)
    xs = solve(p)
    return p, p.loss(xs), p.constants()


def variant(name: str, **kw) -> MARINA:
    if name == "vr":
        return VRMARINA(name="vr_marina", estimator=MINIBATCH, **kw)
    if name == "pp":
        return MARINA(name="marina", participation=NICE2, **kw)
    return MARINA(name="marina", **kw)


@pytest.mark.parametrize("p_sync", [0.05, 0.5])
def test_identity_compressor_keeps_the_exact_gradient_so_it_is_gd(setup, p_sync):
    """Q = identity: g^{k+1} = g^k + grad f(x^{k+1}) - grad f(x^k) = grad f(x^{k+1}), whatever
    the coins, so MARINA's trajectory is GD's (to rounding)."""
    p, _, c = setup
    gamma = 0.9 / c["L"]
    gd = trajectory(Uncompressed(name="gd"), p, gamma, 60)[0]
    xs, _, state = trajectory(MARINA(name="marina", compressor=Identity(), p=p_sync), p, gamma, 60, seed=4)
    assert 0 < state.syncs < state.coins  # both kinds of round were taken
    np.testing.assert_allclose(xs, gd, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(state.g, p.grad(xs[-2]), rtol=1e-10, atol=1e-13)


def test_sync_probability_one_is_gd_bit_for_bit(setup):
    p, _, c = setup
    gamma = 0.9 / c["L"]
    gd, gd_rounds, _ = trajectory(Uncompressed(name="gd"), p, gamma, 30)
    xs, rounds, _ = trajectory(MARINA(name="marina", p=1.0, **RAND2), p, gamma, 30)
    assert np.array_equal(xs, gd)
    assert all(r.bits_up.tolist() == [32 * D] * N for r in rounds)


@pytest.mark.parametrize("name", ["marina", "pp", "vr"])
def test_estimator_error_moves_by_zero_mean_noise(setup, name):
    """E[g^{k+1} - grad f(x^{k+1}) | past] = g^k - grad f(x^k) on a compressed round: Monte
    Carlo over the compressor's (and PP's sample, VR's minibatch) draws at one fixed state."""
    p, _, c = setup
    method = variant(name, p=0.05, **RAND2)
    _, _, state = trajectory(method, p, 0.5 * method.theory(c, (0, ""))[0], 15, seed=3)
    if name == "pp":  # a sampled worker that sat out the last round recomputes grad f_i(x^k)
        assert not state.fresh.all()
    before = state.g - p.grad(state.x_prev)
    at = p.grad(state.x)
    saved = {k: getattr(state, k).copy() for k in ("g", "prev", "fresh")}
    rng = np.random.default_rng(7)
    draws = 4000
    noise = np.empty((draws, D))
    for t in range(draws):
        for k, v in saved.items():
            setattr(state, k, v.copy())
        method.compressed_round(p, state, rng)
        noise[t] = state.g - at - before
    se = noise.std(axis=0) / math.sqrt(draws)
    assert np.all(se > 1e-6)  # the noise is there ...
    assert np.all(np.abs(noise.mean(axis=0)) < 5 * se)  # ... with mean zero


@pytest.mark.parametrize(
    "name, comp",
    [
        ("marina", RandK(k=2, scaled=True)),
        ("marina", Natural()),
        ("pp", Natural()),
        ("vr", RandK(k=2, scaled=True)),
    ],
)
def test_converges_to_the_optimum_at_the_theory_stepsize(setup, name, comp):
    p, fs, c = setup
    method = variant(name, compressor=comp)
    gamma = method.theory(c, (1.0 / c["L"], "1/L"))[0]
    xs, _, _ = trajectory(method, p, gamma, 2500)
    assert p.loss(xs[-1]) - fs < 1e-10


def test_exact_bits_of_sync_and_compressed_rounds(setup):
    """Round 0 and sync rounds: n dense messages of 32 d bits; compressed rounds with RandK,
    K = 2 on d = 6: K (32 + ceil(log2 6)) = 70 bits (= the bitmap's 6 + 2 * 32); broadcast
    32 d; m oracle calls per worker."""
    p = setup[0]
    assert sparse_bits(np.array([2]), D, 32, True).tolist() == [2 * (32 + 3)] == [6 + 2 * 32]
    method = MARINA(name="marina", p=0.5, **RAND2)
    rng = np.random.default_rng(0)
    state = method.init(p, np.zeros(D), rng)
    seen = set()
    for k in range(20):
        before = state.syncs
        state, rnd = method.step(p, state, 0.1, rng)
        dense = k == 0 or state.syncs > before
        seen.add(dense)
        assert rnd.bits_up.tolist() == [192 if dense else 70] * N
        assert rnd.nnz.tolist() == [D if dense else 2] * N
        assert rnd.bits_down == 192 and rnd.calls == M
    assert seen == {True, False}


def test_vr_marina_oracle_calls(setup):
    """VR-MARINA: 2 b' sample gradients on a compressed round, m on round 0 and sync rounds."""
    p = setup[0]
    method = variant("vr", p=0.3, **RAND2)
    rng = np.random.default_rng(1)
    state = method.init(p, np.zeros(D), rng)
    seen = set()
    for k in range(30):
        before = state.syncs
        state, rnd = method.step(p, state, 0.1, rng)
        dense = k == 0 or state.syncs > before
        seen.add(dense)
        assert rnd.calls == (M if dense else 2 * 3)
        assert rnd.bits_up.tolist() == [192 if dense else 70] * N
    assert seen == {True, False}


def test_pp_marina_sends_from_exactly_r_workers(setup):
    """Compressed rounds: r = 2 workers send 70 bits, the other n - r send and compute
    nothing; a sender that sat out the previous round evaluates two gradients (2 m calls).
    Sync rounds: every worker sends its dense gradient."""
    p = setup[0]
    method = variant("pp", p=0.2, **RAND2)
    rng = np.random.default_rng(2)
    state = method.init(p, np.zeros(D), rng)
    last = np.ones(N, dtype=bool)  # who evaluated grad f_i at the previous point
    compressed = 0
    for k in range(60):
        before = state.syncs
        state, rnd = method.step(p, state, 0.1, rng)
        if k == 0 or state.syncs > before:
            assert rnd.bits_up.tolist() == [192] * N and rnd.skipped == 0
            last = np.ones(N, dtype=bool)
            continue
        compressed += 1
        sent = rnd.bits_up > 0
        assert sent.sum() == 2 and rnd.skipped == N - 2
        assert rnd.bits_up[sent].tolist() == [70, 70] and rnd.nnz[~sent].tolist() == [0, 0]
        np.testing.assert_array_equal(rnd.calls, np.where(sent, np.where(last, M, 2 * M), 0))
        last = sent
    assert compressed > 30


def test_theory_stepsizes_on_hand_computed_constants():
    """RandK K = 1 scaled on d = 4: omega = 3, default p = 1/(1 + omega) = 1/4.
    MARINA: (1-p) omega/(p n) = (3/4) 3 / (5/4) = 1.8          -> 1/(2 + 3 sqrt(1.8));
    PP, r = 2: p = (2/5)/4 = 0.1, (1-p)(1+omega)/(p r) = 18     -> 1/(2 + 3 sqrt(18));
    VR, b' = 2, m = 10: p = min(1/4, 2/12) = 1/6, (1-p)/(p n) = 1,
    omega L_tilde^2 + (1+omega) L_US^2/b' = 27 + 72            -> 1/(2 + sqrt(99))."""
    c = {"L": 2.0, "L_tilde": 3.0, "L_US": 6.0, "L_IS": 4.0, "d": 4, "n": 5, "m": 10}
    q = {"compressor": RandK(k=1, scaled=True)}
    base = (0.5, "1/L")
    assert MARINA(name="m", **q).theory(c, base)[0] == pytest.approx(1 / (2 + 3 * math.sqrt(1.8)))
    pp = MARINA(name="m", participation=Participation("nice", 2), **q).theory(c, base)
    assert pp[0] == pytest.approx(1 / (2 + 3 * math.sqrt(18))) and "r=2" in pp[1]
    vr = VRMARINA(name="v", estimator={"kind": "sgd", "batch": 2}, **q).theory(c, base)
    assert vr[0] == pytest.approx(1 / (2 + math.sqrt(99))) and "L_US^2/b" in vr[1]
    importance = {"kind": "sgd", "sampling": "importance", "batch": 2}  # L_IS: 27 + 4 * 16 / 2
    assert VRMARINA(name="v", estimator=importance, **q).theory(c, base)[0] == pytest.approx(
        1 / (2 + math.sqrt(59))
    )
    assert MARINA(name="m", p=1.0, **q).theory(c, base)[0] == pytest.approx(1 / 2)  # always sync: GD
    assert MARINA(name="m", compressor=Identity()).theory(c, base)[0] == pytest.approx(1 / 2)  # p = 1


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda: MARINA(name="m", p=0.0, **RAND2), "method.p"),
        (lambda: MARINA(name="m", p=1.5, **RAND2), "method.p"),
        (lambda: MARINA(name="m", p=-0.2, **RAND2), "method.p"),
        (lambda: MARINA(name="m", compressor=TopK(k=1)), "compressor"),
        (lambda: MARINA(name="m", compressor=RandK(k=1)), "compressor"),  # unscaled: biased
        (
            lambda: MARINA(name="m", participation=Participation("independent", p=0.5), **RAND2),
            "participation",
        ),
        (lambda: MARINA(name="m", estimator=MINIBATCH, **RAND2), "method.estimator.kind"),
        (lambda: VRMARINA(name="v", estimator=MINIBATCH, participation=NICE2, **RAND2), "participation"),
        (lambda: VRMARINA(name="v", **RAND2), "method.estimator.kind"),
    ],
)
def test_bad_settings_name_their_key(make, key):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.key == key


RANDK = ["compressor=randk", "compressor.scaled=true"]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["method=marina", *RANDK, "method.p=1.5"], "method.p"),
        (["method=marina", *RANDK, "method.p=0"], "method.p"),
        (["method=marina", "compressor=topk"], "compressor"),
        (["method=marina", *RANDK, "participation=independent"], "participation"),
        (["method=vr_marina", *RANDK, "participation=nice", "participation.size=2"], "participation"),
    ],
)
def test_schema_refuses_bad_configs(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(cfg_of(*overrides), {})
    assert err.value.key == key


def test_installed_efbench_runs_the_three_variants_on_a9a(tmp_path, mirror):
    env = {"EFBENCH_DATA_MIRROR": str(mirror), "EFBENCH_DATA_DIR": str(tmp_path / "data")}
    common = ["dataset=a9a", "dataset.m=400", "compressor=randk", "compressor.k=10", "compressor.scaled=true"]
    common += ["budget.iters=200", "log_every=50", "progress=false"]
    runs = {
        "marina": ["method=marina"],
        "vr_marina": ["method=vr_marina", "sampling.batch=16"],
        "pp_marina": ["method=marina", "participation=nice", "participation.size=5"],
    }
    rules = {
        "marina": "1/(L + L_tilde sqrt((1-p) omega/(p n)))",
        "vr_marina": "1/(L + sqrt((1-p)/(p n) (omega L_tilde^2 + (1+omega) L_US^2/b)))",
        "pp_marina": "1/(L + L_tilde sqrt((1-p)(1+omega)/(p r)))",
    }
    omega = 123 / 10 - 1
    for label, args in runs.items():
        out = tmp_path / label
        r = efbench(*common, *args, f"hydra.run.dir={out}", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        s = json.loads((out / "summary.json").read_text())
        assert s["status"] == "completed" and s["steps"] == 200
        assert s["stepsize_formula"].startswith(rules[label]) and rules[label] in r.stderr + r.stdout
        assert s["constants"]["omega"] == pytest.approx(omega)
        tr = pd.read_parquet(out / "trace.parquet")
        assert tr["step"].tolist() == [0, 50, 100, 150, 200] and tr["gap"].iloc[-1] < tr["gap"].iloc[0]
        assert tr["sync_frac"].iloc[-1] < 0.5 and tr["bits_down"].iloc[-1] == 200 * 32 * 123
        assert tr["bits_up_mean"].iloc[-1] < 0.5 * 200 * 32 * 123  # mostly 10 coordinates a round
    pp = json.loads((tmp_path / "pp_marina" / "summary.json").read_text())["constants"]["p"]
    assert pp == pytest.approx(5 / 20 / (1 + omega))


def test_bad_cli_setting_is_one_line(tmp_path):
    r = efbench("method=marina", "compressor=topk", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    text = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2 and len(text) == 1 and "efbench: error: compressor: " in text[0]
