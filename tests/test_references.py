"""Every method family against a plain numpy reference written from its paper's algorithm box
(tests/references/, one module per family; the pattern of scikit-learn's tests/test_sag.py):
the same data, the same seed, 20-50 rounds side by side; the iterates agree to rounding at
every step (each side runs on its own state) and the bits each worker sent and the server
broadcast are equal. The EC-SGD / L-SVRG reference is tests/reference.py (test_engine.py),
EF21, CLAG and LAG's is in test_threepc.py, CHOCO-SGD's in test_choco_async.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_problem
from references import (
    asynchronous,
    decentralized,
    diana,
    doublesqueeze,
    efsignsgd,
    fednl,
    gd,
    local,
    marina,
    memsgd,
    plain,
    threepc,
)

from efbench.core import compressors
from efbench.core.participation import Participation
from efbench.core.stepsize import Schedule
from efbench.core.topology import mixing_matrix
from efbench.methods.asynchronous import AsyncECSGD, AsyncQSGD, AsyncSGD
from efbench.methods.base import (
    DCDPSGD,
    DIANA,
    DPSGD,
    CompressedGD,
    DeepSqueeze,
    DoubleSqueeze,
    EFSignSGD,
    MemSGD,
    Uncompressed,
)
from efbench.methods.fednl import FedNL
from efbench.methods.local import GradSkip, LocalSGD, Scaffnew
from efbench.methods.marina import MARINA, VRMARINA
from efbench.methods.threepc import EF21, EF21BC, EF21HB, ThreePC

RTOL, ATOL = 1e-12, 1e-14
STEPS = 30
FULL = {"kind": "full"}


def sgd(batch=1):
    return {"kind": "sgd", "sampling": "uniform", "batch": batch}


@pytest.fixture(scope="module")
def problem():
    p = small_problem(n=4, m=20, d=6, l2=0.05, seed=2)
    return p, np.linspace(-0.5, 0.5, p.d)


def package(method, p, x0, gamma, steps=STEPS, seed=0, more=()):
    """efbench's run: x^0..x^K, each round's bits up and down, and the state's ``more`` fields."""
    rng = np.random.default_rng(seed)
    state = method.init(p, x0.copy(), rng)
    trace = plain.Trace(state.x)
    for k in range(steps):
        state, rnd = method.step(p, state, gamma(k) if callable(gamma) else gamma, rng)
        extra = {key: rnd.calls if key == "calls" else getattr(state, key) for key in more}
        trace.record(state.x, rnd.bits_up.tolist(), int(rnd.bits_down), **extra)
    return trace


class CountsDiffer(AssertionError):
    """The iterates agree, the bits or oracle calls charged do not."""


def assert_same(ours, ref):
    """x^k to rounding at every k and every recorded state field after every round; then the
    bits (up, down) and oracle calls exactly (:class:`CountsDiffer` if not)."""
    assert len(ours.x) == len(ref.x)
    for k, (a, b) in enumerate(zip(ours.x, ref.x, strict=True)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"x^{k}")
    counts = {"bits_up": (ours.bits_up, ref.bits_up), "bits_down": (ours.bits_down, ref.bits_down)}
    for key, values in ref.more.items():
        if key == "calls":
            counts[key] = ([c.tolist() for c in ours.more[key]], [c.tolist() for c in values])
            continue
        for k, (a, b) in enumerate(zip(ours.more[key], values, strict=True)):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"{key} after round {k + 1}")
    for key, (a, b) in counts.items():
        for k, (got, want) in enumerate(zip(a, b, strict=True)):
            if got != want:
                raise CountsDiffer(f"{key} of round {k + 1}: efbench {got}, reference {want}")


# ---- GD / SGD, CGD --------------------------------------------------------------------
@pytest.mark.parametrize("batch", [None, 2])
def test_gd_sgd(problem, batch):
    p, x0 = problem
    est = FULL if batch is None else sgd(batch)
    ours = package(Uncompressed(name="gd", estimator=est), p, x0, 4.0, seed=1)
    assert_same(ours, gd.gd(p.A, p.y, p.l2, x0, 4.0, STEPS, np.random.default_rng(1), batch))


CGD_CASES = {
    "topk_full": (compressors.TopK(k=2), plain.TopK(2), "scaled", None),
    "rand2_sgd": (compressors.RandK(k=2, scaled=True), plain.RandK(2, scaled=True), "plain", 1),
    "natural_scaled": (compressors.Natural(), plain.Natural(), "scaled", 1),
    "natural_plain": (compressors.Natural(), plain.Natural(), "plain", 1),
}


@pytest.mark.parametrize("case", CGD_CASES)
def test_cgd(problem, case):
    comp, C, form, batch = CGD_CASES[case]
    p, x0 = problem
    est = FULL if batch is None else sgd(batch)
    ours = package(CompressedGD(name="cgd", estimator=est, compressor=comp, ec_form=form), p, x0, 2.0, seed=3)
    ref = gd.cgd(p.A, p.y, p.l2, C, form, x0, 2.0, STEPS, np.random.default_rng(3), batch)
    assert_same(ours, ref)


# ---- DIANA ----------------------------------------------------------------------------
DIANA_CASES = {
    "rand2_full_default_alpha": (
        compressors.RandK(k=2, scaled=True),
        plain.RandK(2, scaled=True),
        None,
        None,
    ),
    "natural_sgd_alpha": (compressors.Natural(), plain.Natural(), 0.5, 2),
}


@pytest.mark.parametrize("case", DIANA_CASES)
def test_diana(problem, case):
    comp, Q, alpha, batch = DIANA_CASES[case]
    p, x0 = problem
    est = FULL if batch is None else sgd(batch)
    ours = package(DIANA(name="diana", estimator=est, compressor=comp, alpha=alpha), p, x0, 2.0, seed=4)
    a = 1.0 / (1.0 + (p.d / 2 - 1.0)) if alpha is None else alpha  # 1/(1 + omega), omega = d/k - 1
    ref = diana.diana(p.A, p.y, p.l2, Q, a, x0, 2.0, STEPS, np.random.default_rng(4), batch)
    assert_same(ours, ref)


# ---- Mem-SGD, EF-signSGD, DoubleSqueeze -------------------------------------------------
@pytest.mark.parametrize(
    "comp, C", [(compressors.TopK(k=2), plain.TopK(2)), (compressors.RandK(k=3), plain.RandK(3))]
)
def test_mem_sgd(problem, comp, C):
    p, x0 = problem
    a, b = 0.5, 10.0
    method = MemSGD(name="mem", estimator=sgd(), compressor=comp, a=a, b=b)
    schedule = method.schedule(Schedule(1.0, ""), p.constants())
    ours = package(method, p, x0, schedule, seed=5, more=("x_avg",))
    eta = lambda t: a / (p.l2 * (b + t))  # noqa: E731 - mu = l2 for the logistic loss
    ref = memsgd.mem_sgd(p.A, p.y, p.l2, C, b, x0, eta, STEPS, np.random.default_rng(5))
    assert_same(ours, ref)


def test_ef_signsgd(problem):
    p, x0 = problem
    ours = package(EFSignSGD(name="efs", estimator=sgd()), p, x0, 1.0, seed=6)
    assert_same(ours, efsignsgd.ef_signsgd(p.A, p.y, p.l2, x0, 1.0, STEPS, np.random.default_rng(6)))


@pytest.mark.parametrize(
    "comp, C", [(compressors.TopK(k=2), plain.TopK(2)), (compressors.RandK(k=3), plain.RandK(3))]
)
def test_double_squeeze(problem, comp, C):
    p, x0 = problem
    ours = package(DoubleSqueeze(name="ds", estimator=sgd(), compressor=comp), p, x0, 2.0, seed=7)
    ref = doublesqueeze.double_squeeze(p.A, p.y, p.l2, C, x0, 2.0, STEPS, np.random.default_rng(7))
    assert_same(ours, ref)


# ---- D-PSGD, DCD-PSGD, DeepSqueeze ------------------------------------------------------
def graph(topology, n):
    """The graph's W: the ring written out by hand (and checked against efbench's), or the
    complete graph's 11^T/n."""
    W = plain.ring(n) if topology == "ring" else np.full((n, n), 1.0 / n)
    np.testing.assert_allclose(mixing_matrix(topology, n), W, rtol=1e-15)
    return W


@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_dpsgd(problem, topology):
    p, x0 = problem
    ours = package(DPSGD(name="d", estimator=sgd(), topology=topology), p, x0, 2.0, seed=8, more=("X",))
    W = graph(topology, p.n)
    assert_same(ours, decentralized.dpsgd(p.A, p.y, p.l2, W, x0, 2.0, STEPS, np.random.default_rng(8)))


@pytest.mark.parametrize(
    "comp, C",
    [
        (compressors.RandK(k=3, scaled=True), plain.RandK(3, scaled=True)),
        (compressors.Natural(), plain.Natural()),
    ],
)
def test_dcd_psgd(problem, comp, C):
    p, x0 = problem
    method = DCDPSGD(name="dcd", estimator=sgd(), topology="ring", compressor=comp)
    ours = package(method, p, x0, 1.0, seed=9, more=("X",))
    ref = decentralized.dcd_psgd(
        p.A, p.y, p.l2, C, graph("ring", p.n), x0, 1.0, STEPS, np.random.default_rng(9)
    )
    assert_same(ours, ref)


@pytest.mark.parametrize(
    "comp, C", [(compressors.TopK(k=3), plain.TopK(3)), (compressors.RandK(k=2), plain.RandK(2))]
)
def test_deep_squeeze(problem, comp, C):
    p, x0 = problem
    method = DeepSqueeze(name="deep", estimator=sgd(), topology="ring", compressor=comp, eta=0.3)
    ours = package(method, p, x0, 2.0, seed=10, more=("X",))
    W = graph("ring", p.n)
    ref = decentralized.deep_squeeze(p.A, p.y, p.l2, C, W, 0.3, x0, 2.0, STEPS, np.random.default_rng(10))
    assert_same(ours, ref)


# ---- 3PC: 3PCv1..v5, EF21-PP, EF21-BC, EF21-HB ------------------------------------------
THREEPC_CASES = {
    "3pcv1_top2": (dict(mechanism="3pcv1"), compressors.TopK(k=2), lambda: threepc.v1(plain.TopK(2))),
    "3pcv1_rand2": (dict(mechanism="3pcv1"), compressors.RandK(k=2), lambda: threepc.v1(plain.RandK(2))),
    "3pcv2_top1": (
        dict(mechanism="3pcv2", k2=2),
        compressors.TopK(k=1),
        lambda: threepc.v2(plain.TopK(1), 2),
    ),
    "3pcv2_rand3": (
        dict(mechanism="3pcv2", k2=1),
        compressors.RandK(k=3),
        lambda: threepc.v2(plain.RandK(3), 1),
    ),
    "3pcv3_ef21": (
        dict(mechanism="3pcv3", inner="ef21"),
        compressors.RandK(k=2),
        lambda: threepc.v3(plain.RandK(2), threepc.ef21(plain.RandK(2))),
    ),
    "3pcv3_lag": (
        dict(mechanism="3pcv3", inner="lag", zeta=2.0),
        compressors.TopK(k=1),
        lambda: threepc.v3(plain.TopK(1), threepc.lag(2.0)),
    ),
    "3pcv4_rand2": (
        dict(mechanism="3pcv4", k2=1),
        compressors.RandK(k=2),
        lambda: threepc.v4(plain.RandK(2), 1),
    ),
    "3pcv5_top1": (
        dict(mechanism="3pcv5", p=0.3),
        compressors.TopK(k=1),
        lambda: threepc.v5(plain.TopK(1), 0.3),
    ),
    "3pcv5_rand2": (
        dict(mechanism="3pcv5", p=0.3),
        compressors.RandK(k=2),
        lambda: threepc.v5(plain.RandK(2), 0.3),
    ),
}


@pytest.mark.parametrize("case", THREEPC_CASES)
def test_threepc_mechanisms(problem, case):
    settings, comp, mech = THREEPC_CASES[case]
    p, x0 = problem
    ours = package(ThreePC(name="3pc", compressor=comp, **settings), p, x0, 4.0, seed=11)
    ref = threepc.three_pc(p.A, p.y, p.l2, mech(), x0, 4.0, STEPS, np.random.default_rng(11))
    assert_same(ours, ref)


@pytest.mark.parametrize(
    "comp, C", [(compressors.TopK(k=2), plain.TopK(2)), (compressors.RandK(k=2), plain.RandK(2))]
)
def test_ef21_pp(problem, comp, C):
    p, x0 = problem
    method = EF21(name="ef21", compressor=comp, participation=Participation(kind="nice", size=2))
    ours = package(method, p, x0, 4.0, seed=12)
    ref = threepc.three_pc(p.A, p.y, p.l2, threepc.ef21(C), x0, 4.0, STEPS, np.random.default_rng(12), nice=2)
    assert_same(ours, ref)


@pytest.mark.parametrize("down_k", [None, 2])
def test_ef21_bc(problem, down_k):
    """C_w = Rand-2; C_M = Top-2, or with ``down_k`` null the same Rand-2 (drawing after the workers)."""
    p, x0 = problem
    method = EF21BC(name="bc", compressor=compressors.RandK(k=2), down_k=down_k)
    ours = package(method, p, x0, 4.0, seed=13)
    server = plain.RandK(2) if down_k is None else plain.TopK(2)
    mech = threepc.ef21(plain.RandK(2))
    ref = threepc.three_pc(p.A, p.y, p.l2, mech, x0, 4.0, STEPS, np.random.default_rng(13), server=server)
    assert_same(ours, ref)


def test_ef21_hb(problem):
    p, x0 = problem
    ours = package(EF21HB(name="hb", compressor=compressors.RandK(k=2), eta=0.6), p, x0, 2.0, seed=14)
    mech = threepc.ef21(plain.RandK(2))
    ref = threepc.three_pc(p.A, p.y, p.l2, mech, x0, 2.0, STEPS, np.random.default_rng(14), eta=0.6)
    assert_same(ours, ref)


# ---- MARINA, PP-MARINA, VR-MARINA ---------------------------------------------------------
MARINA_CASES = {
    "marina_rand2": (dict(), compressors.RandK(k=2, scaled=True), plain.RandK(2, scaled=True), None, None),
    "marina_natural": (dict(), compressors.Natural(), plain.Natural(), None, None),
    "pp_marina_rand2": (
        dict(participation=Participation(kind="nice", size=2)),
        compressors.RandK(k=2, scaled=True),
        plain.RandK(2, scaled=True),
        2,
        None,
    ),
    "vr_marina_rand2": (
        dict(estimator=sgd(3)),
        compressors.RandK(k=2, scaled=True),
        plain.RandK(2, scaled=True),
        None,
        3,
    ),
}


@pytest.mark.parametrize("case", MARINA_CASES)
def test_marina(problem, case):
    settings, comp, Q, r, batch = MARINA_CASES[case]
    p, x0 = problem
    cls = MARINA if batch is None else VRMARINA
    ours = package(cls(name="marina", compressor=comp, p=0.3, **settings), p, x0, 2.0, seed=15)
    ref = marina.marina(p.A, p.y, p.l2, Q, 0.3, x0, 2.0, STEPS, np.random.default_rng(15), r=r, batch=batch)
    assert_same(ours, ref)


# ---- Local-SGD, Scaffnew, GradSkip ----------------------------------------------------------
@pytest.mark.parametrize("batch", [None, 2])
def test_local_sgd(problem, batch):
    p, x0 = problem
    est = FULL if batch is None else sgd(batch)
    method = LocalSGD(name="l", estimator=est, local_steps=3, server_stepsize=0.7)
    ours = package(method, p, x0, 2.0, seed=16)
    assert_same(
        ours, local.local_sgd(p.A, p.y, p.l2, 3, 0.7, x0, 2.0, STEPS, np.random.default_rng(16), batch)
    )


@pytest.mark.parametrize("batch", [None, 2])
def test_scaffnew(problem, batch):
    p, x0 = problem
    est = FULL if batch is None else sgd(batch)
    ours = package(Scaffnew(name="s", estimator=est, p=0.3), p, x0, 4.0, seed=17, more=("X", "h"))
    assert_same(ours, local.scaffnew(p.A, p.y, p.l2, 0.3, x0, 4.0, STEPS, np.random.default_rng(17), batch))


@pytest.mark.parametrize("q", [0.6, None])
def test_gradskip(problem, q):
    """q = 0.6 for every worker, or the paper's q_i = min(1, (1 - mu/L_i)/(1 - p^2)), L_i the
    largest eigenvalue of worker i's data Hessian bound A_i^T A_i / (4 m) plus l2."""
    p, x0 = problem
    ours = package(
        GradSkip(name="g", estimator=FULL, p=0.3, q=q), p, x0, 4.0, seed=18, more=("X", "h", "calls")
    )
    if q is None:
        L = [np.linalg.eigvalsh(A_i.T @ A_i / (4 * p.m))[-1] + p.l2 for A_i in p.A]
        q = [min(1.0, (1.0 - p.l2 / L_i) / (1.0 - 0.3**2)) for L_i in L]
        assert max(q) < 1
    ref = local.gradskip(
        p.A, p.y, p.l2, 0.3, np.broadcast_to(q, p.n), x0, 4.0, STEPS, np.random.default_rng(18)
    )
    assert_same(ours, ref)


# ---- FedNL ----------------------------------------------------------------------------------
FEDNL_CASES = {
    "top8_alpha_theory_option1": (dict(hessian_compressor="topk", hessian_k=8, alpha=None, option=1), 8),
    "top8_alpha_half_option2": (dict(hessian_compressor="topk", hessian_k=8, alpha=0.5, option=2), 8),
    "rank1_option1": (dict(hessian_compressor="rankr", rank=1, option=1), 1),
    "rank2_option2": (dict(hessian_compressor="rankr", rank=2, alpha=0.7, option=2), 2),
}


@pytest.mark.parametrize("case", FEDNL_CASES)
def test_fednl(problem, case):
    settings, k = FEDNL_CASES[case]
    p, x0 = problem
    method = FedNL(name="fednl", **settings)
    ours = package(method, p, x0, 1.0, steps=20)
    if settings["hessian_compressor"] == "topk":
        compress = lambda D: fednl.top_k(D, k)  # noqa: E731
        delta = k / p.d**2
    else:
        compress = lambda D: fednl.rank_r(D, k)  # noqa: E731
        delta = k / p.d
    alpha = 1.0 - np.sqrt(1.0 - delta) if settings.get("alpha", 1.0) is None else settings.get("alpha", 1.0)
    ref = fednl.fednl(p.A, p.y, p.l2, compress, alpha, settings["option"], x0, 20)
    assert_same(ours, ref)


# ---- asynchronous SGD, QSGD, EC-SGD ---------------------------------------------------------
ASYNC_CASES = {
    "sgd_fixed_full": (AsyncSGD, dict(estimator=FULL), [1.0] * 4, None, None, "scaled"),
    "sgd_hetero_batch2": (
        AsyncSGD,
        dict(estimator=sgd(2), times="heterogeneous", spread=1.0),
        [1, 2, 3, 4],
        2,
        None,
        "scaled",
    ),
    "sgd_random": (AsyncSGD, dict(estimator=sgd(), times="random"), None, 1, None, "scaled"),
    "qsgd_natural_scaled": (
        AsyncQSGD,
        dict(estimator=sgd(), compressor=compressors.Natural()),
        [1.0] * 4,
        1,
        plain.Natural(),
        "scaled",
    ),
    "qsgd_rand2_random": (
        AsyncQSGD,
        dict(
            estimator=sgd(), times="random", compressor=compressors.RandK(k=2, scaled=True), ec_form="plain"
        ),
        None,
        1,
        plain.RandK(2, scaled=True),
        "plain",
    ),
    "ec_top2_hetero": (
        AsyncECSGD,
        dict(
            estimator=sgd(),
            times="heterogeneous",
            durations=[1.0, 0.5, 0.25, 1.5],
            compressor=compressors.TopK(k=2),
        ),
        [1.0, 0.5, 0.25, 1.5],
        1,
        plain.TopK(2),
        "scaled",
    ),
    "ec_rand2_random_plain": (
        AsyncECSGD,
        dict(estimator=sgd(), times="random", compressor=compressors.RandK(k=2), ec_form="plain"),
        None,
        1,
        plain.RandK(2),
        "plain",
    ),
}


@pytest.mark.parametrize("case", ASYNC_CASES)
def test_async(problem, case):
    cls, settings, taus, batch, C, form = ASYNC_CASES[case]
    p, x0 = problem
    ours = package(cls(name="a", **settings), p, x0, 1.0, steps=50, seed=19)
    ref = asynchronous.async_sgd(
        p.A, p.y, p.l2, taus, x0, 1.0, 50, np.random.default_rng(19), batch, C, form, ec=cls is AsyncECSGD
    )
    assert_same(ours, ref)
