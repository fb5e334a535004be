"""The peer registry: names, options, seeds, and errors a user can cause."""

from __future__ import annotations

import pytest

from metarec.errors import ConfigError
from metarec.models.base import ScoringModel
from metarec.peers import PEERS, MeLU, make_peer


def test_every_name_builds_an_unfitted_scoring_model() -> None:
    assert set(PEERS) == {"popularity", "bias", "knn", "als", "melu-1", "melu-5"}
    for name in PEERS:
        model = make_peer(name, seed=7)
        assert isinstance(model, ScoringModel)
        assert model.name == name and model.seed == 7  # type: ignore[attr-defined]


def test_melu_defaults_are_the_papers() -> None:
    # MeLU's options.py: inner 1 (or 5), lr 5e-5, local_lr 5e-6, batch_size 32, num_epoch 20
    for name, steps in (("melu-1", 1), ("melu-5", 5)):
        model = make_peer(name)
        assert isinstance(model, MeLU)
        assert (model.local_steps, model.global_lr, model.local_lr) == (steps, 5e-5, 5e-6)
        assert (model.batch_size, model.epochs, model.embedding_dim) == (32, 20, 32)
        assert model.predicts_ratings


def test_unknown_name_and_option_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown peer 'melu'.*'melu-1'"):
        make_peer("melu")
    with pytest.raises(ConfigError, match=r"unknown peer \['als'\]"):  # was unhashable
        make_peer(["als"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['factor'\].*'factors'"):
        make_peer("als", factor=3)
    # the registry fixes MeLU's local steps per name; melu-1 cannot be turned into melu-3
    with pytest.raises(ConfigError, match="local_steps"):
        make_peer("melu-1", local_steps=3)


@pytest.mark.parametrize(
    "name, option, value",
    [("als", "factors", 0), ("als", "regularization", -1.0), ("knn", "damping", -1.0),
     ("bias", "user_damping", float("nan")), ("melu-5", "epochs", 0),
     # counts int() cut (0.5 iterations trained nothing, a batch of 0.5 divided by
     # zero), text a comparison refused with a TypeError, infinity
     ("als", "iterations", 0.5), ("als", "factors", 2.5), ("melu-1", "batch_size", 0.5),
     ("melu-1", "min_ratings", "13"), ("melu-1", "max_ratings", None),
     ("melu-1", "min_updates", "5"), ("melu-1", "threads", 0), ("melu-1", "first_order", "no"),
     ("knn", "damping", float("inf")), ("als", "regularization", float("inf"))],
)  # fmt: skip
def test_bad_option_values_name_the_option(name: str, option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{name}: option {option} must be"):
        make_peer(name, **{option: value})


@pytest.mark.parametrize("seed", ["x", -1, 1.5, True, None])
@pytest.mark.parametrize("name", sorted(PEERS))
def test_a_seed_numpy_cannot_take_is_refused_when_the_peer_is_made(name: str, seed: object) -> None:
    # taken before, and met only at fit (or never: popularity, bias and knn draw nothing)
    with pytest.raises(ConfigError, match=rf"{name}: seed: must be a whole number >= 0, got "):
        make_peer(name, seed=seed)  # type: ignore[arg-type]


def test_make_ranker_refuses_unknown_kinds_and_options_by_name() -> None:
    from metarec.errors import ConfigError
    from metarec.models.persist import make_ranker

    with pytest.raises(ConfigError, match=r"unknown ranker 'nope'; expected one of"):
        make_ranker("nope")
    with pytest.raises(ConfigError, match=r"ranker 'episodic': unknown option\(s\) \['foo'\]"):
        make_ranker("episodic", foo=1)
