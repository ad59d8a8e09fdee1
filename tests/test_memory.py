"""The error-feedback memory (efbench.methods.memory) and the methods that must use it."""

import numpy as np
import pytest
from conftest import small_problem, trajectory

from efbench.core.compressors import HardThreshold, RandK, Sign, TopK
from efbench.methods.asynchronous import AsyncECSGD
from efbench.methods.base import DeepSqueeze, DoubleSqueeze, EFSignSGD, ErrorCompensated, MemSGD
from efbench.methods.memory import ErrorFeedback

SGD = {"kind": "sgd", "sampling": "uniform", "batch": 1}
N, D = 4, 9


def _draw(seed: int, rows: int = N) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.normal(size=(rows, D)), g.normal(size=(rows, D)) * 10.0 ** g.integers(-3, 2, size=(rows, 1))


@pytest.mark.parametrize("rows", [N, 1])
@pytest.mark.parametrize("comp", [HardThreshold(lam=0.3), RandK(k=3, scaled=True)], ids=["ht", "randk"])
def test_the_memory_keeps_what_was_not_sent(comp, rows):
    """e_{k+1} = e_k + c - v exactly, v = C(e_k + c) (plain) or gamma C((e_k + c)/gamma)
    (scaled), the same draws as C alone; over K rounds sum_k v_k = sum_k c_k - e_K."""
    gamma = 0.2
    messages = {}
    for form in ("plain", "scaled"):
        ef = ErrorFeedback(comp, form)
        e = ef.init(rows, D)
        assert e.shape == (rows, D) and not e.any()
        rng, replay = np.random.default_rng(1), np.random.default_rng(1)
        sent, added = np.zeros((rows, D)), np.zeros((rows, D))
        for k in range(6):
            c = _draw(k, rows)[1]
            u = e + c
            v, msg = ef.update(e, c, gamma, rng)
            np.testing.assert_array_equal(e, u - v)
            if form == "plain":
                np.testing.assert_array_equal(v, comp(u, replay).values)
            else:
                np.testing.assert_allclose(v, gamma * comp(u / gamma, replay).values, rtol=1e-14, atol=0)
            assert v is msg.values and msg.bits.shape == (rows,)
            sent += v
            added += c
        np.testing.assert_allclose(sent, added - e, rtol=1e-12, atol=1e-12)
        messages[form] = sent
    if isinstance(comp, HardThreshold):  # lambda in x units or in gradient units: not the same map
        assert not np.allclose(messages["plain"], messages["scaled"])


@pytest.mark.parametrize("form", ["plain", "scaled"])
@pytest.mark.parametrize("comp", [TopK(k=1), TopK(k=4), Sign()], ids=["top1", "top4", "sign"])
def test_a_contractive_compressor_shrinks_the_memory(comp, form):
    """||e_{k+1}||^2 <= (1 - delta) ||e_k + c||^2 for a (deterministic) contractive C, row by row."""
    delta = comp.contraction(D)
    ef = ErrorFeedback(comp, form)
    rng = np.random.default_rng(0)
    for seed in range(200):
        e, c = _draw(seed)
        u = e + c
        ef.update(e, c, 0.1, rng)
        after, before = np.sum(e * e, axis=1), np.sum(u * u, axis=1)
        assert np.all(after <= (1 - delta) * before * (1 + 1e-12)), seed
        assert np.all(after > 0)  # something was held back


EF_METHODS = {
    "ec": (lambda: ErrorCompensated(name="ec", estimator=SGD, compressor=TopK(k=2)), ["scaled", (N, D)]),
    "ec_plain": (
        lambda: ErrorCompensated(name="ec", estimator=SGD, compressor=TopK(k=2), ec_form="plain"),
        ["plain", (N, D)],
    ),
    "memsgd": (lambda: MemSGD(name="mem", estimator=SGD, compressor=TopK(k=2)), ["plain", (N, D)]),
    "efsign": (lambda: EFSignSGD(name="efs", estimator=SGD), ["plain", (N, D)]),
    "doublesqueeze": (
        lambda: DoubleSqueeze(name="ds", estimator=SGD, compressor=TopK(k=2)),
        ["scaled", (N, D), "scaled", (1, D)],  # the workers', then the server's memory
    ),
    "deepsqueeze": (  # models are compressed: plain whatever ec_form says
        lambda: DeepSqueeze(name="deep", estimator=SGD, compressor=TopK(k=2), ec_form="scaled"),
        ["plain", (N, D)],
    ),
    "async_ec": (lambda: AsyncECSGD(name="a", estimator=SGD, compressor=TopK(k=2)), ["scaled", (1, D)]),
}


@pytest.mark.parametrize("name", sorted(EF_METHODS))
def test_every_error_feedback_method_goes_through_the_memory(name, monkeypatch):
    """Each step calls ErrorFeedback.update (in the form and on the rows listed), and the
    memory it updates is the state's ``e``; with update broken, the step fails."""
    make, per_step = EF_METHODS[name]
    p = small_problem(n=N, m=20, d=D, seed=3)
    plain = trajectory(make(), p, 0.3, 5)[0]
    calls = []
    update = ErrorFeedback.update

    def spy(self, e, correction, gamma, rng):
        calls.append(self.ec_form)
        calls.append(e.shape)
        return update(self, e, correction, gamma, rng)

    monkeypatch.setattr(ErrorFeedback, "update", spy)
    xs, _, state = trajectory(make(), p, 0.3, 5)
    assert calls == per_step * 5
    np.testing.assert_array_equal(xs, plain)
    assert state.e.shape == (N, D) and state.e.any()

    def broken(self, e, correction, gamma, rng):
        raise RuntimeError("memory bypassed")

    monkeypatch.setattr(ErrorFeedback, "update", broken)
    method = make()
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="memory bypassed"):
        method.step(p, method.init(p, np.zeros(D), rng), 0.3, rng)
