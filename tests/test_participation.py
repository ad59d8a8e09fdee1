"""Partial participation samplings: the participants and their probabilities p_i."""

import numpy as np
import pytest

from efbench.core.participation import Participation
from efbench.errors import ConfigError


def test_full_draws_nothing_and_takes_everyone():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert Participation().draw(rng, 7).all()
    assert rng.bit_generator.state == state  # full participation leaves the run's draws as they were
    assert Participation().probability(7) == 1.0


def test_nice_sampling_takes_exactly_tau_each_uniformly():
    part, rng, n = Participation("nice", size=3), np.random.default_rng(1), 8
    masks = np.array([part.draw(rng, n) for _ in range(20000)])
    assert (masks.sum(axis=1) == 3).all()
    np.testing.assert_allclose(masks.mean(axis=0), part.probability(n), atol=0.015)
    assert part.probability(n) == 3 / 8


def test_independent_sampling_has_probability_p_per_worker():
    part, rng, n = Participation("independent", p=0.3), np.random.default_rng(2), 6
    masks = np.array([part.draw(rng, n) for _ in range(20000)])
    np.testing.assert_allclose(masks.mean(axis=0), 0.3, atol=0.015)
    counts = masks.sum(axis=1)
    assert counts.min() == 0 and counts.max() >= 5  # independent: any number, none included
    # independence: the pair frequency is the product of the marginals
    assert np.mean(masks[:, 0] & masks[:, 1]) == pytest.approx(0.09, abs=0.01)


@pytest.mark.parametrize(
    ("part", "key"),
    [
        (Participation("nice", size=0), "participation.size"),
        (Participation("nice", size=9), "participation.size"),
        (Participation("independent", p=0.0), "participation.p"),
        (Participation("some"), "participation.kind"),
    ],
)
def test_bad_settings_name_their_key(part, key):
    with pytest.raises(ConfigError) as exc:
        part.check(8)
    assert exc.value.key == key


def test_keys_added_later_keep_the_hash_of_earlier_results_at_their_neutral_value():
    """participation=full and the l2 regularizer hash as configs without those keys (results
    from before they existed resume); any other value is a different run."""
    from omegaconf import OmegaConf, open_dict
    from test_cli import cfg_of

    from efbench.config.identity import config_hash

    cfg = cfg_of("method=ef21")
    older = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(older):
        del older["participation"]
        del older.problem["regularizer"]
        del older.problem["lam_nc"]
    assert config_hash(cfg) == config_hash(older)
    assert config_hash(cfg_of("method=ef21", "participation=nice")) != config_hash(cfg)
    assert config_hash(cfg_of("method=ef21", "problem.regularizer=nonconvex")) != config_hash(cfg)
